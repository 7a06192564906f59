package redistest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// EnvRequire makes a missing redis-server a test failure instead of a skip.
	EnvRequire = "KSTATE_REQUIRE_REDIS"
	// EnvURL names a running server that Shared returns instead of starting one.
	EnvURL = "KSTATE_TEST_REDIS_URL"

	// readyTimeout bounds how long a starting server may take to answer PING,
	// including replaying its append-only file.
	readyTimeout = 20 * time.Second
	// stopTimeout bounds a graceful shutdown before it becomes a SIGKILL.
	stopTimeout = 10 * time.Second
	// bindAttempts is how many ports Start tries: a free port found by
	// listening on :0 can be taken by another process before redis binds it.
	bindAttempts = 5
)

// errAddrInUse: redis-server exited because its port was taken.
var errAddrInUse = errors.New("address already in use")

// Option configures a Server.
type Option func(*Server)

// WithArgs appends redis-server command-line configuration, e.g.
// WithArgs("--requirepass", "secret").
func WithArgs(args ...string) Option {
	return func(s *Server) { s.extra = append(s.extra, args...) }
}

// Server is a redis-server process owned by one test.
type Server struct {
	tb    testing.TB
	bin   string
	dir   string // data directory: the append-only files live here
	log   string // log file, outside dir so Wipe keeps it for diagnostics
	extra []string

	mu   sync.Mutex
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a private redis-server and stops it when the test ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: binary(tb), dir: tb.TempDir()}
	s.log = filepath.Join(tb.TempDir(), "redis.log")
	for _, o := range opts {
		o(s)
	}
	// Registered after TempDir, so it runs before the directories are removed.
	tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.killLocked()
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range bindAttempts {
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: finding a free port: %v", err)
		}
		if err = s.startLocked(); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: starting redis-server: %v", err)
	}
	return s
}

// Shared returns the URL of the server named by KSTATE_TEST_REDIS_URL, or
// of a private server started for this test when it is unset. Tests that
// share a server must keep to their own UniqueSpace.
func Shared(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return Start(tb).URL()
}

// UniqueSpace returns an entity space no other test uses:
// "test-<random hex>/<test name>", with the test name reduced to characters
// that are safe in Redis keys and hash tags.
func UniqueSpace(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("redistest: random space id: %v", err)
	}
	name := []byte(tb.Name())
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			name[i] = '-'
		}
	}
	if len(name) > 80 {
		name = name[:80]
	}
	return "test-" + hex.EncodeToString(b[:]) + "/" + string(name)
}

// Addr returns host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrLocked()
}

// URL returns redis://127.0.0.1:PORT.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Kill ends the server with SIGKILL, as a crash would. Writes acknowledged
// before it survive a Restart (appendfsync always).
func (s *Server) Kill() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Stop shuts the server down gracefully (SIGTERM) and waits for it to exit.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
}

// Restart starts the server again on the same port and data directory, so
// the append-only file is replayed. A running server is stopped first.
// It returns once the server answers PING.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	s.restartLocked()
}

// Wipe simulates a store that comes back empty: it stops the server,
// deletes its data and starts it again on the same port.
func (s *Server) Wipe() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.tb.Fatalf("redistest: wiping %s: %v", s.dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			s.tb.Fatalf("redistest: wiping %s: %v", s.dir, err)
		}
	}
	s.restartLocked()
}

func (s *Server) restartLocked() {
	s.tb.Helper()
	// The port was ours a moment ago; redis binds with SO_REUSEADDR, so only
	// another process grabbing it in between makes this fail.
	var err error
	for range bindAttempts {
		if err = s.startLocked(); !errors.Is(err, errAddrInUse) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("redistest: restarting redis-server on port %d: %v", s.port, err)
	}
}

func (s *Server) addrLocked() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *Server) startLocked() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--logfile", s.log,
		"--daemonize", "no",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
	}
	cmd := exec.Command(s.bin, append(args, s.extra...)...)
	cmd.SysProcAttr = sysProcAttr()
	logStart := fileSize(s.log)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			out := logSince(s.log, logStart)
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("port %d: %w", s.port, errAddrInUse)
			}
			return fmt.Errorf("redis-server exited during startup; log:\n%s", out)
		default:
		}
		if ping(s.addrLocked()) {
			return nil
		}
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v; log:\n%s",
				s.port, readyTimeout, logSince(s.log, logStart))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

func (s *Server) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		s.cmd, s.done = nil, nil
		return nil
	case <-time.After(stopTimeout):
		s.killLocked()
		return fmt.Errorf("redis-server on port %d ignored SIGTERM for %v and was killed", s.port, stopTimeout)
	}
}

// ping reports whether addr answers PING. A server replaying its
// append-only file answers -LOADING, which is not ready yet; any other answer
// (PONG, or -NOAUTH when started with a password) is.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && !strings.HasPrefix(line, "-LOADING")
}

func binary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	msg := "redistest: redis-server not found on PATH (install it: apt-get install redis-server, or brew install redis)"
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("%s; %s=1 requires it", msg, EnvRequire)
	}
	tb.Skipf("%s; skipping (set %s=1 to fail instead)", msg, EnvRequire)
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns what the log gained after offset: the lines of this run.
func logSince(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return string(b[offset:])
}
