package chaos

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// writers watches Redis through MONITOR and checks, for every entity write
// the flush script makes, the lease it ran under: no epoch of a slot has two
// holders, and no entity is written under an older epoch than a write
// before it. It reconnects when Redis restarts; writes in the gap are not
// seen (none can be judged wrong for that).
//
// It relies on Redis feeding the script call to MONITOR before the
// commands the script runs ("[0 lua]" lines), as redis-server 7.0 does;
// a script command it cannot attribute is counted and fails the check.
type writers struct {
	addr string
	stop chan struct{}
	done chan struct{}

	mu           sync.Mutex
	conn         net.Conn
	holders      map[string]map[uint64]string // lease key -> epoch -> holder
	lastEpoch    map[string]uint64            // entity key -> epoch of its last write
	writes       int
	unattributed int
	violations   []string
}

// flushCall is the script call whose writes are being read.
type flushCall struct {
	lease  string
	holder string
	epoch  uint64
}

func watchWriters(t *testing.T, addr string) *writers {
	w := &writers{addr: addr, stop: make(chan struct{}), done: make(chan struct{}),
		holders: map[string]map[uint64]string{}, lastEpoch: map[string]uint64{}}
	ready := make(chan struct{})
	go w.run(ready)
	<-ready
	t.Cleanup(w.close)
	return w
}

func (w *writers) close() {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	w.mu.Lock()
	if w.conn != nil {
		w.conn.Close()
	}
	w.mu.Unlock()
	<-w.done
}

func (w *writers) run(ready chan struct{}) {
	defer close(w.done)
	first := true
	for {
		select {
		case <-w.stop:
			if first {
				close(ready)
			}
			return
		default:
		}
		conn, err := net.DialTimeout("tcp", w.addr, time.Second)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // Redis is down: try again
			continue
		}
		w.mu.Lock()
		w.conn = conn
		w.mu.Unlock()
		r := bufio.NewReaderSize(conn, 1<<20)
		if _, err := conn.Write([]byte("MONITOR\r\n")); err == nil {
			if line, err := r.ReadString('\n'); err == nil && strings.HasPrefix(line, "+OK") {
				if first {
					first = false
					close(ready)
				}
				w.read(r)
			}
		}
		conn.Close()
	}
}

// read consumes MONITOR lines until the connection ends.
func (w *writers) read(r *bufio.Reader) {
	var cur *flushCall
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n")
		// <time> [<db> <client>] "cmd" "arg"...
		open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
		if open < 0 || end < open {
			continue
		}
		client, args := line[open+1:end], unquote(line[end+1:])
		if len(args) == 0 {
			continue
		}
		if !strings.HasSuffix(client, " lua") {
			cur = parseFlush(args)
			continue
		}
		cmd := strings.ToUpper(args[0])
		if (cmd != "HSET" && cmd != "DEL") || len(args) < 2 || !strings.Contains(args[1], ":e:") {
			continue
		}
		w.mu.Lock()
		if cur == nil {
			w.unattributed++
		} else {
			w.record(cur, args[1])
		}
		w.mu.Unlock()
	}
}

// parseFlush returns the lease of a flush script call (EVAL or EVALSHA
// with the slot's lease and hot-set keys first, holder and epoch as the
// first arguments), or nil for any other command.
func parseFlush(args []string) *flushCall {
	cmd := strings.ToLower(args[0])
	if (cmd != "evalsha" && cmd != "eval") || len(args) < 3 {
		return nil
	}
	nkeys, err := strconv.Atoi(args[2])
	if err != nil || nkeys < 2 || len(args) < 3+nkeys+2 {
		return nil
	}
	keys, argv := args[3:3+nkeys], args[3+nkeys:]
	if !strings.HasSuffix(keys[0], ":lease") || !strings.HasSuffix(keys[1], ":hot") {
		return nil
	}
	epoch, err := strconv.ParseUint(argv[1], 10, 64)
	if err != nil {
		return nil
	}
	return &flushCall{lease: keys[0], holder: argv[0], epoch: epoch}
}

func (w *writers) record(c *flushCall, entity string) {
	w.writes++
	byEpoch := w.holders[c.lease]
	if byEpoch == nil {
		byEpoch = map[uint64]string{}
		w.holders[c.lease] = byEpoch
	}
	if h, ok := byEpoch[c.epoch]; ok && h != c.holder {
		w.violations = append(w.violations, fmt.Sprintf("%s epoch %d written by %s and by %s", c.lease, c.epoch, h, c.holder))
	}
	byEpoch[c.epoch] = c.holder
	if last := w.lastEpoch[entity]; c.epoch < last {
		w.violations = append(w.violations, fmt.Sprintf("%s written by %s under epoch %d after a write under epoch %d", entity, c.holder, c.epoch, last))
	}
	w.lastEpoch[entity] = max(w.lastEpoch[entity], c.epoch)
}

// unquote splits MONITOR's argument list: double-quoted strings with
// backslash escapes (\", \\, \n, \r, \t, \a, \b, \xHH).
func unquote(s string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] != '"' {
			continue
		}
		var b strings.Builder
		for i++; i < len(s) && s[i] != '"'; i++ {
			if s[i] != '\\' || i+1 >= len(s) {
				b.WriteByte(s[i])
				continue
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'x':
				if i+2 < len(s) {
					if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
						b.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				b.WriteByte('x')
			default:
				b.WriteByte(s[i])
			}
		}
		out = append(out, b.String())
	}
	return out
}

// report returns what was seen.
func (w *writers) report() (writes, unattributed int, violations []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.unattributed, append([]string(nil), w.violations...)
}
