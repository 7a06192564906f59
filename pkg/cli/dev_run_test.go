package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kstate-dev/kstate/pkg/dev"
)

// send against a real dev run: the event reaches the counter through the
// router and an agent, the reply shows the serving replica, and sending the
// same event id again is answered as a duplicate.
func TestSendAgainstDev(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- dev.Run(ctx, dev.Options{Example: "counter", Addr: addr, Replicas: 2, Slots: 64,
			Ready: func(a string) { ready <- a }}, io.Discard, zap.NewNop().Sugar())
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dev: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev not ready within 30s")
	}
	p := &Params{NewClients: func(string) (*Clients, error) { return nil, fmt.Errorf("no cluster in this test") }}
	send := func(mode string) string {
		out, _, err := runCommand(t, p, "send", "counter", "--url", "http://"+addr, "--key-spec", "ce:partitionkey",
			"--mode", mode, "--key", "alice", "--type", "counter.add", "--id", "ev-1", "--data", `{"by": 5}`)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := send("binary")
	for _, want := range []string{`"count": 5`, "dev-"} {
		if !strings.Contains(first, want) {
			t.Errorf("first send output lacks %q:\n%s", want, first)
		}
	}
	again := send("structured")
	if !strings.Contains(again, `"count": 5`) || !regexp.MustCompile(`(?m)^Duplicate:\s+yes$`).MatchString(again) {
		t.Errorf("redelivery output should show count 5 and the duplicate header:\n%s", again)
	}
}
