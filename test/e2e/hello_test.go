//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// helloKsvc is a stock Knative Service (no kstate). The 6s window (the
// smallest Knative allows) makes it scale to zero soon after its last request.
func helloKsvc(name string) string {
	return `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: ` + name + `
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: "6s"
    spec:
      containers:
      - image: dev.local/kstate-e2e/hello:v1
`
}

func TestHelloServiceIsReadyAndAnswers(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	host, took := applyKsvc(t, ns, "hello", helloKsvc("hello"))
	t.Logf("ksvc hello Ready in %s at http://%s", took.Round(time.Millisecond), host)

	start := time.Now()
	out := mustRequest(t, "GET", host, "/", "", nil)
	t.Logf("first answer in %s: %q", time.Since(start).Round(time.Millisecond), out)
	if !strings.HasPrefix(out, "hello from hello-00001 ") {
		t.Fatalf("answer %q, want it to start with %q", out, "hello from hello-00001 ")
	}
}

func TestHelloScalesToZeroAndBack(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	host, took := applyKsvc(t, ns, "hello", helloKsvc("hello"))
	t.Logf("ksvc hello Ready in %s", took.Round(time.Millisecond))
	mustRequest(t, "GET", host, "/", "", nil)

	gone := waitScaledToZero(t, ns, "hello", 4*time.Minute)
	t.Logf("scaled to zero %s after the last request", gone.Round(time.Second))

	start := time.Now()
	out := mustRequest(t, "GET", host, "/", "", nil)
	cold := time.Since(start)
	t.Logf("answered from zero in %s: %q", cold.Round(time.Millisecond), out)
	if !strings.HasPrefix(out, "hello from hello-00001 ") {
		t.Fatalf("answer %q, want it to start with %q", out, "hello from hello-00001 ")
	}
	if n := podCount(t, ns, "hello"); n == 0 {
		t.Fatalf("answered but the service has no pod")
	}
}
