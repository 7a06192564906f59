package dev

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// --function runs a real function process per replica; dev serves through
// it and stops it.
func TestDevExternalFunction(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "counter")
	build := exec.Command("go", "build", "-o", bin, "github.com/kstate-dev/kstate/examples/counter/cmd/counter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the counter function: %v\n%s", err, out)
	}
	addr, stop := startDev(t, Options{Function: bin, Addr: freeAddr(t), Replicas: 2, Slots: 64})
	for i := 1; i <= 3; i++ {
		if _, r, err := add(http.DefaultClient, addr, "k"); err != nil || r.Count != int64(i) {
			t.Fatalf("request %d: %+v, %v", i, r, err)
		}
	}
	scaleTo(t, addr, 3)
	if _, r, err := add(http.DefaultClient, addr, "k"); err != nil || r.Count != 4 {
		t.Fatalf("after scaling: %+v, %v", r, err)
	}
	out, err := stop()
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, out)
	}
	// Every function process is gone.
	if ps, _ := exec.Command("pgrep", "-f", bin).Output(); len(strings.TrimSpace(string(ps))) > 0 {
		t.Errorf("function processes still running after dev stopped: %s", ps)
	}
}

func TestDevExternalFunctionThatExits(t *testing.T) {
	err := Run(context.Background(), Options{Function: "echo not a server; exit 3", Addr: freeAddr(t), Replicas: 1, Slots: 64}, io.Discard, zap.NewNop().Sugar())
	if err == nil || !strings.Contains(err.Error(), `--function "echo not a server; exit 3" exited before serving`) {
		t.Fatalf("got %v, want an error saying the function exited before serving", err)
	}
}
