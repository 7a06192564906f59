package dev

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDev runs dev until the returned stop is called; stop returns Run's
// error and output.
func startDev(t *testing.T, o Options) (addr string, stop func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	o.Ready = func(a string) { ready <- a }
	var out proctest.LockedBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, &out, testLogger(t)) }()
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("dev stopped before it was ready: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("dev not ready within 20s:\n%s", out.String())
	}
	return addr, func() (string, error) {
		cancel()
		err := <-done
		return out.String(), err
	}
}

func post(t *testing.T, addr, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(body))
	req.Header.Set("Kstate-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", key, resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b))
}

// The README's main command: counts are served, Ctrl-C flushes them, and a
// second run on the same Redis continues where the first stopped.
func TestDevCounterFlushesOnStopAndResumes(t *testing.T) {
	redis := redistest.Start(t)
	o := Options{Example: "counter", Addr: freeAddr(t), Redis: redis.URL(), FlushInterval: time.Hour, Replicas: 1, Slots: 256}
	addr, stop := startDev(t, o)
	for i := 0; i < 3; i++ {
		post(t, addr, "alice", `{"by": 5}`)
	}
	out, err := stop()
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, out)
	}
	if !strings.Contains(out, "the final flush wrote 1 dirty entities") {
		t.Fatalf("stop message does not report the final flush:\n%s", out)
	}
	addr, stop = startDev(t, o)
	defer stop()
	if got, want := post(t, addr, "alice", `{"by": 1}`), `{"key":"alice","count":16}`; got != want {
		t.Fatalf("after a restart: %s, want %s", got, want)
	}
}

// Zero setup: the embedded store needs nothing installed.
func TestDevEmbeddedStore(t *testing.T) {
	addr, stop := startDev(t, Options{Example: "counter", Addr: freeAddr(t), Replicas: 1, Slots: 256})
	if got, want := post(t, addr, "bob", ``), `{"key":"bob","count":1}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if out, err := stop(); err != nil || !strings.Contains(out, "embedded store") {
		t.Fatalf("dev: %v\n%s", err, out)
	}
}

func TestDevErrors(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"unknown example", Options{Example: "nope", Addr: "127.0.0.1:0"}, `--example: unknown example "nope": expected one of `},
		{"bad address", Options{Example: "counter", Addr: "8080"}, `--addr "8080": expected HOST:PORT`},
		{"bad key spec", Options{Example: "counter", Addr: "127.0.0.1:0", Key: "headr:x"}, `--key: key spec "headr:x"`},
		{"bad redis URL", Options{Example: "counter", Addr: "127.0.0.1:0", Redis: "http://x"}, `--redis: `},
		{"unreachable redis", Options{Example: "counter", Addr: "127.0.0.1:0", Redis: "redis://127.0.0.1:1"}, `cannot reach Redis`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.o, io.Discard, zap.NewNop().Sugar())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func testLogger(t *testing.T) *zap.SugaredLogger {
	if os.Getenv("KSTATE_DEV_TEST_LOG") == "" {
		return zap.NewNop().Sugar()
	}
	return zaptest.NewLogger(t).Sugar()
}
