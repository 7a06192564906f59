//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The cluster's layout; hack/cluster/lib.sh sets the same defaults.
var (
	clusterDir  = envOr("KSTATE_CLUSTER_DIR", "/var/lib/kstate-cluster")
	kubeconfig  = envOr("KUBECONFIG", filepath.Join(clusterDir, "kubeconfig"))
	kubectlPath = envOr("KSTATE_E2E_KUBECTL", filepath.Join(clusterDir, "bin", "kubectl"))
	nodeIP      = envOr("KSTATE_E2E_NODE_IP", "10.200.0.1")
	ingressAddr = envOr("KSTATE_E2E_INGRESS", nodeIP+":80")
	keep        = os.Getenv("KSTATE_E2E_KEEP") == "1"
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func TestMain(m *testing.M) {
	if _, err := os.Stat(kubeconfig); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no cluster: %v\nBring it up with hack/cluster/up.sh (or run hack/cluster/e2e.sh).\n", err)
		os.Exit(1)
	}
	out, err := exec.Command(kubectlPath, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the cluster's apiserver is not ready: %v\n%s\nBring it up with hack/cluster/up.sh.\n", err, out)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// kubectl runs the cluster's kubectl with stdin and returns its stdout.
func kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kubectlPath, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// namespace creates a namespace for one test and deletes it when the test
// ends (unless KSTATE_E2E_KEEP=1). On failure it logs what the namespace
// holds and the logs of its pods.
func namespace(t *testing.T) string {
	t.Helper()
	short := strings.ToLower(strings.TrimPrefix(t.Name(), "Test"))
	if len(short) > 40 {
		short = short[:40]
	}
	name := fmt.Sprintf("e2e-%s-%04x", short, rand.IntN(1<<16))
	mustKubectl(t, "", "create", "namespace", name)
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, name)
		}
		if keep {
			t.Logf("KSTATE_E2E_KEEP=1: namespace %s kept", name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := kubectl(ctx, "", "delete", "namespace", name, "--wait=false"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return name
}

func dump(t *testing.T, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := kubectl(ctx, "", "-n", ns, "get", "ksvc,revision,route,kingress,pa,sks,deploy,pods,svc,endpoints", "-o", "wide")
	t.Logf("namespace %s:\n%s", ns, out)
	out, _ = kubectl(ctx, "", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
	t.Logf("events in %s:\n%s", ns, out)
	pods, _ := kubectl(ctx, "", "-n", ns, "get", "pods", "-o", "name")
	for _, p := range strings.Fields(pods) {
		out, _ := kubectl(ctx, "", "-n", ns, "logs", p, "--all-containers", "--tail=40")
		t.Logf("logs of %s:\n%s", p, out)
	}
}

// applyKsvc applies a Knative Service and waits until it is Ready; it
// returns the host of its URL and how long it took.
func applyKsvc(t *testing.T, ns, name, yaml string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	// Knative's webhook picks up a config-features change a moment after it
	// is made; retry a denied apply for a few seconds.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := kubectl(ctx, yaml, "-n", ns, "apply", "-f", "-")
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 15*time.Second || !strings.Contains(err.Error(), "denied the request") {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	mustKubectl(t, "", "-n", ns, "wait", "--for=condition=Ready", "ksvc/"+name, "--timeout=180s")
	took := time.Since(start)
	url := strings.TrimSpace(mustKubectl(t, "", "-n", ns, "get", "ksvc", name, "-o", "jsonpath={.status.url}"))
	host := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
	if host == "" {
		t.Fatalf("ksvc %s/%s is Ready but has no URL", ns, name)
	}
	return host, took
}

// httpClient keeps up to 100 idle connections to the ingress (Go's default
// keeps 2), so the load of the concurrent tests and benchmarks reuses
// connections instead of opening one a request.
var httpClient = &http.Client{Timeout: 60 * time.Second, Transport: func() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 100
	return tr
}()}

// request sends one request through the test ingress with the given Host.
func request(method, host, path, body string, hdr map[string]string) (int, string, error) {
	code, out, _, err := requestHeaders(method, host, path, body, hdr)
	return code, out, err
}

// requestHeaders is request that also returns the answer's headers.
func requestHeaders(method, host, path, body string, hdr map[string]string) (int, string, http.Header, error) {
	req, err := http.NewRequest(method, "http://"+ingressAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

// mustRequest retries transport errors and 5xx answers for up to 30s (the
// route can be Ready a moment before kube-proxy has the Service's rules) and
// fails the test if no 2xx comes.
func mustRequest(t *testing.T, method, host, path, body string, hdr map[string]string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, err := request(method, host, path, body, hdr)
		if err == nil && code/100 == 2 {
			return out
		}
		if time.Now().After(deadline) || (err == nil && code/100 == 4) {
			t.Fatalf("%s http://%s%s: code %d, body %q, error %v", method, host, path, code, out, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// podCount returns the number of pods (Terminating ones included) of a
// Knative Service.
func podCount(t *testing.T, ns, svc string) int {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "pods", "-l", "serving.knative.dev/service="+svc, "-o", "name")
	return len(strings.Fields(out))
}

// waitScaledToZero waits until a Service has no pods at all.
func waitScaledToZero(t *testing.T, ns, svc string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for podCount(t, ns, svc) != 0 {
		if time.Since(start) > timeout {
			t.Fatalf("%s/%s still has pods after %s", ns, svc, timeout)
		}
		time.Sleep(2 * time.Second)
	}
	return time.Since(start)
}
