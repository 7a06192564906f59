package proctest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kstate-dev/kstate/pkg/placement"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
	"github.com/kstate-dev/kstate/statestore"
)

const (
	modulePath = "github.com/kstate-dev/kstate"

	// StartTimeout bounds how long a process may take to become ready
	// (race-built binaries start slowly on a busy machine).
	StartTimeout = 30 * time.Second
	// StopTimeout bounds a graceful stop in cleanups before it becomes a SIGKILL.
	StopTimeout = 15 * time.Second
	// bindAttempts is how many free ports a start tries: a port found free
	// can be taken by another process before ours binds it.
	bindAttempts = 5
	// PollEvery is the interval of every wait-for-a-condition loop.
	PollEvery = 20 * time.Millisecond
)

// Paths of the binaries TestMain builds.
var (
	AgentBin   string
	CounterBin string
)

// Main builds the agent and the counter function with the race detector
// into a temporary folder, runs the tests and removes the folder. Call it
// from TestMain: func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }.
func Main(m *testing.M) int {
	root, err := RepoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "proctest: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "kstate-proctest-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "proctest: temp dir for the binaries: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(root, dir); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: %v\n", err)
		return 1
	}
	AgentBin = filepath.Join(dir, "kstate-agent")
	CounterBin = filepath.Join(dir, "counter")
	return m.Run()
}

// RepoRoot walks up from the working directory (go test runs in the
// package's folder) to the go.mod of the kstate module.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if line, _, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(line) == "module "+modulePath {
				return dir, nil
			}
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of module %s above %s", modulePath, wd)
		}
	}
}

// buildBinaries builds the agent and the counter function, with the race
// detector, into dir.
func buildBinaries(root, dir string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, serr := os.Stat(gobin); serr != nil {
			return fmt.Errorf("building the binaries under test: the go command is not on PATH (%v)", err)
		}
	}
	cmd := exec.Command(gobin, "build", "-race", "-o", dir+string(filepath.Separator),
		"./cmd/kstate-agent", "./examples/counter/cmd/counter")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build -race ./cmd/kstate-agent ./examples/counter/cmd/counter in %s failed: %v\n%s", root, err, out)
	}
	return nil
}

// ---- processes ----

// LockedBuffer is a bytes.Buffer safe for a writer goroutine (exec's, or a
// server's log) and the test reading it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a child process owned by one test. Its Stdout and Stderr are
// captured, checked for race reports and printed if the test fails.
type Process struct {
	t      *testing.T
	name   string
	Cmd    *exec.Cmd
	Stdout LockedBuffer
	Stderr LockedBuffer
	done   chan struct{} // closed when the process has exited
}

// StartProcess starts bin with the base environment plus env. The process
// is stopped (SIGCONT, then SIGTERM, then SIGKILL) when the test ends.
func StartProcess(t *testing.T, name, bin string, env []string) *Process {
	t.Helper()
	p := &Process{t: t, name: name, done: make(chan struct{})}
	p.Cmd = exec.Command(bin)
	p.Cmd.Env = append(baseEnv(), env...)
	p.Cmd.Stdout = &p.Stdout
	p.Cmd.Stderr = &p.Stderr
	p.Cmd.SysProcAttr = sysProcAttr()
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	go func() {
		_ = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.Running() {
			// It may have been left stopped by a failed test.
			_ = p.Cmd.Process.Signal(syscall.SIGCONT)
			_ = p.Cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(StopTimeout):
				t.Errorf("%s ignored SIGTERM for %v; killing it", name, StopTimeout)
				p.Kill()
			}
		}
		if strings.Contains(p.Stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race (see its Stderr below)", name)
		}
		if t.Failed() {
			t.Logf("---- %s (pid %d) Stderr ----\n%s", name, p.Cmd.Process.Pid, p.Stderr.String())
			if out := p.Stdout.String(); out != "" {
				t.Logf("---- %s Stdout ----\n%s", name, out)
			}
		}
	})
	return p
}

// baseEnv is the test's environment without any KSTATE_* or K_SINK setting,
// so only what a test sets reaches the processes. The race runtime's exit
// delay (1s by default, for reports still being written) is cut to 50ms, as
// every test stops several processes; a GORACE of the caller still wins.
func baseEnv() []string {
	out := []string{"GORACE=atexit_sleep_ms=50 " + os.Getenv("GORACE")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KSTATE_") || strings.HasPrefix(kv, "K_SINK=") || strings.HasPrefix(kv, "GORACE=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("sending %v to %s: %v", sig, p.name, err)
	}
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *Process) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitCode is the exit status of an exited process (-1 if a signal ended it).
func (p *Process) ExitCode() int { return p.Cmd.ProcessState.ExitCode() }

// terminate sends SIGTERM and waits up to d for the process to exit, then
// returns its exit code and how long it took. A process still running after
// d is killed and the test fails.
func (p *Process) Terminate(d time.Duration) (int, time.Duration) {
	p.t.Helper()
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	if !p.Wait(d) {
		p.Kill()
		p.t.Fatalf("%s did not exit within %v of SIGTERM; killed it", p.name, d)
	}
	return p.ExitCode(), time.Since(start)
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// ---- ports ----

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// exitedOnBind reports whether p exited because a port was taken.
func exitedOnBind(p *Process) bool {
	return !p.Running() && strings.Contains(p.Stderr.String(), "address already in use")
}

// ---- the counter function ----

// Counter is a counter-function process.
type Counter struct {
	*Process
	Addr string
}

// StartCounter starts the counter function on a free loopback port and
// returns once it reports SERVING on gRPC health.
func StartCounter(t *testing.T) *Counter {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := FreeAddr(t)
		p := StartProcess(t, "counter@"+addr, CounterBin, []string{"KSTATE_FUNCTION_ADDR=" + addr})
		err := waitServing(p, addr)
		if err == nil {
			return &Counter{Process: p, Addr: addr}
		}
		if exitedOnBind(p) && attempt < bindAttempts {
			continue
		}
		t.Fatalf("counter function on %s: %v\nstderr:\n%s", addr, err, p.Stderr.String())
	}
}

// waitServing polls the function's gRPC health until it reports SERVING.
// Each poll dials afresh: one connection would back off for a second after
// the first refused dial.
func waitServing(p *Process, addr string) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		if !p.Running() {
			return fmt.Errorf("exited with status %d before serving", p.ExitCode())
		}
		status, err := healthCheck(addr)
		if err == nil && status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not SERVING within %v (last: %v, %v)", StartTimeout, status, err)
		}
		time.Sleep(PollEvery)
	}
}

func healthCheck(addr string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), err
}

// ---- the agent ----

// AgentConfig is what a test sets for one agent process. Env holds any
// further KSTATE_* settings (they win over the defaults below).
type AgentConfig struct {
	Pod      string
	Space    string
	StoreURL string
	Function string // the function's address
	Env      map[string]string
}

// agent is a kstate-agent process.
type Agent struct {
	*Process
	Cfg       AgentConfig
	Addr      string // serving address, also advertised as KSTATE_POD_ADDR
	AdminAddr string
	URL       string // http://Addr/
	admin     adminv1.AdminClient
}

// StartAgent starts a kstate-agent on free loopback ports and returns once
// GET /.kstate/readyz answers 200.
func StartAgent(t *testing.T, cfg AgentConfig) *Agent {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a := &Agent{Cfg: cfg, Addr: FreeAddr(t), AdminAddr: FreeAddr(t)}
		a.URL = "http://" + a.Addr + "/"
		a.Process = StartProcess(t, "agent "+cfg.Pod+"@"+a.Addr, AgentBin, AgentEnv(cfg, a.Addr, a.AdminAddr))
		err := a.WaitReady()
		if err == nil {
			a.DialAdmin(t)
			return a
		}
		if exitedOnBind(a.Process) && attempt < bindAttempts {
			continue
		}
		t.Fatalf("agent %s on %s: %v\nstderr:\n%s", cfg.Pod, a.Addr, err, a.Stderr.String())
	}
}

// AgentEnv is the environment of an agent serving on addr and admin.
func AgentEnv(cfg AgentConfig, addr, admin string) []string {
	settings := map[string]string{
		"KSTATE_POD_NAME":      cfg.Pod,
		"KSTATE_ADDR":          addr,
		"KSTATE_POD_ADDR":      addr,
		"KSTATE_ADMIN_ADDR":    admin,
		"KSTATE_FUNCTION_ADDR": cfg.Function,
		"KSTATE_SPACE":         cfg.Space,
		"KSTATE_STORE_URL":     cfg.StoreURL,
		"KSTATE_FLUSH_TIMEOUT": "2s",
		"KSTATE_DRAIN_TIMEOUT": "20s",
	}
	for k, v := range cfg.Env {
		settings[k] = v
	}
	env := make([]string, 0, len(settings))
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

func (a *Agent) WaitReady() error {
	deadline := time.Now().Add(StartTimeout)
	for {
		if !a.Running() {
			return fmt.Errorf("exited with status %d before it was ready", a.ExitCode())
		}
		status, body, err := a.Readyz()
		if err == nil && status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v (last: %d %q, %v)", StartTimeout, status, body, err)
		}
		time.Sleep(PollEvery)
	}
}

// readyz returns the Answer of GET /.kstate/readyz.
func (a *Agent) Readyz() (int, string, error) {
	resp, err := HTTPClient.Get("http://" + a.Addr + "/.kstate/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (a *Agent) DialAdmin(t *testing.T) {
	t.Helper()
	conn, err := grpc.NewClient(a.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("admin client for %s: %v", a.AdminAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	a.admin = adminv1.NewAdminClient(conn)
}

// stats calls the admin API's Stats.
func (a *Agent) Stats(t *testing.T) *adminv1.StatsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.admin.Stats(ctx, &adminv1.StatsRequest{})
	if err != nil {
		t.Fatalf("admin Stats of agent %s: %v", a.Cfg.Pod, err)
	}
	return st
}

// flush calls the admin API's Flush: it returns once every dirty entity
// landed (or was dropped because its slot was fenced).
func (a *Agent) Flush(t *testing.T) *adminv1.FlushResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := a.admin.Flush(ctx, &adminv1.FlushRequest{})
	if err != nil {
		t.Fatalf("admin Flush of agent %s: %v", a.Cfg.Pod, err)
	}
	return resp
}

// ---- HTTP ----

var HTTPClient = &http.Client{
	Timeout: 20 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	},
}

// Answer is an HTTP response read whole.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a Answer) String() string { return fmt.Sprintf("%d %s", a.Status, bytes.TrimSpace(a.Body)) }

func Do(req *http.Request) (Answer, error) {
	resp, err := HTTPClient.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, err
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// add sends POST / with the key in Kstate-Key and {"by": by}.
func Add(url, key string, by int64) (Answer, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(fmt.Sprintf(`{"by":%d}`, by)))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Kstate-Key", key)
	return Do(req)
}

// read sends GET / with the key in Kstate-Key.
func Read(url, key string) (Answer, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Kstate-Key", key)
	return Do(req)
}

// CounterReply is the counter's reply body.
type CounterReply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// ReplyCount decodes a 2xx counter reply for key.
func ReplyCount(ans Answer, key string) (int64, error) {
	if ans.Status/100 != 2 {
		return 0, fmt.Errorf("Answer %s, want 2xx", ans)
	}
	var r CounterReply
	if err := json.Unmarshal(ans.Body, &r); err != nil {
		return 0, fmt.Errorf("reply %q is not the counter's JSON: %v", ans.Body, err)
	}
	if r.Key != key {
		return 0, fmt.Errorf("reply %q names key %q, want %q", ans.Body, r.Key, key)
	}
	return r.Count, nil
}

// ReadCount reads key's count through an agent.
func ReadCount(t *testing.T, url, key string) int64 {
	t.Helper()
	ans, err := Read(url, key)
	if err != nil {
		t.Fatalf("GET %s (key %q): %v", url, key, err)
	}
	n, err := ReplyCount(ans, key)
	if err != nil {
		t.Fatalf("GET %s (key %q): %v", url, key, err)
	}
	return n
}

// ErrorMessage returns the "error" field of a JSON error body, or the whole
// body when it is not one (so a failure shows what came back).
func ErrorMessage(body []byte) string {
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		return "(not a JSON {\"error\": ...} body) " + string(body)
	}
	return *e.Error
}

// ---- the store, read directly ----

// OpenStore connects to Redis through the state store API, as an agent does.
func OpenStore(t *testing.T, url string) *statestore.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := statestore.NewRedis(ctx, url, statestore.RedisOptions{})
	if err != nil {
		t.Fatalf("connecting to the store %s: %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// StoredCounts reads the counts of keys from the store: one pipelined Load
// per slot, keys mapped to slots with placement.SlotOf. A key with no record
// is absent from the result.
func StoredCounts(t *testing.T, s statestore.Store, space string, slots int, keys []string) map[string]int64 {
	t.Helper()
	out, err := LoadCounts(s, space, slots, keys)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// LoadCounts is StoredCounts for goroutines other than the test's.
func LoadCounts(s statestore.Store, space string, slots int, keys []string) (map[string]int64, error) {
	bySlot := map[uint32][]string{}
	for _, k := range keys {
		n := placement.SlotOf(k, slots)
		bySlot[n] = append(bySlot[n], k)
	}
	out := make(map[string]int64, len(keys))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n, ks := range bySlot {
		recs, err := s.Load(ctx, statestore.SlotRef{Space: space, Slot: n}, ks)
		if err != nil {
			return nil, fmt.Errorf("loading slot %d of %s: %w", n, space, err)
		}
		for k, r := range recs {
			var st struct {
				Count *int64 `json:"count"`
			}
			if err := json.Unmarshal(r.State, &st); err != nil || st.Count == nil {
				return nil, fmt.Errorf("key %q: stored state %q is not {\"count\":N} (%v)", k, r.State, err)
			}
			out[k] = *st.Count
		}
	}
	return out, nil
}

// ---- waiting and counting ----

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(PollEvery)
	}
}

// Tally counts acknowledged increments per key from many goroutines.
type Tally struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *Tally) Add(key string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[key] += n
}

func (c *Tally) Snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// KeysOf returns the keys of m, sorted.
func KeysOf(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// GrepLines returns the lines of s that contain substr.
func GrepLines(s, substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}
