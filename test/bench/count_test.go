package bench

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/Shopify/toxiproxy/v2/toxics"
)

// countToxicType is the toxiproxy toxic type of commandCount.
const countToxicType = "kstate_bench_count"

func init() { toxics.Register(countToxicType, new(commandCount)) }

// commandCount is a toxic for the client-to-Redis stream that counts the
// commands clients send, by kind, and passes the bytes on unchanged. INFO
// commandstats also counts the commands a script runs inside Redis; this
// counts what crosses the network: an EVALSHA is one command.
type commandCount struct {
	Counter string `json:"counter"` // name in the counters registry
}

// NewState implements toxics.StatefulToxic: the bytes of a command not yet
// complete, per connection.
func (t *commandCount) NewState() any { return new(respStream) }

// Pipe implements toxics.Toxic.
func (t *commandCount) Pipe(stub *toxics.ToxicStub) {
	st, _ := stub.State.(*respStream)
	if st == nil {
		st = new(respStream)
	}
	c := countsFor(t.Counter)
	for {
		select {
		case <-stub.Interrupt:
			return
		case ch := <-stub.Input:
			if ch == nil {
				stub.Close()
				return
			}
			st.feed(ch.Data, c)
			stub.Output <- ch
		}
	}
}

// cmdCounts are commands counted by kind.
type cmdCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

var (
	countsMu sync.Mutex
	counts   = map[string]*cmdCounts{}
)

func countsFor(name string) *cmdCounts {
	countsMu.Lock()
	defer countsMu.Unlock()
	c := counts[name]
	if c == nil {
		c = &cmdCounts{n: map[string]int64{}}
		counts[name] = c
	}
	return c
}

func (c *cmdCounts) add(kind string) {
	c.mu.Lock()
	c.n[kind]++
	c.mu.Unlock()
}

// snapshot returns the counts so far.
func (c *cmdCounts) snapshot() commandsByKind {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(commandsByKind, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// commandsByKind counts Redis commands by the kind classify gives them.
type commandsByKind map[string]int64

// Kinds of commands.
const (
	kindFlush  = "flush (EVALSHA)"
	kindLease  = "lease acquire/renew/release (EVALSHA)"
	kindMarker = "store marker check"
	kindLoad   = "entity load (HGETALL)"
	kindGetSet = "GET/SET"
	kindConn   = "connection setup"
)

func (c commandsByKind) minus(o commandsByKind) commandsByKind {
	out := commandsByKind{}
	for k, v := range c {
		if d := v - o[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (c commandsByKind) plus(o commandsByKind) commandsByKind {
	out := commandsByKind{}
	for k, v := range c {
		out[k] += v
	}
	for k, v := range o {
		out[k] += v
	}
	return out
}

func (c commandsByKind) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// per formats the counts per request, largest first.
func (c commandsByKind) per(requests int) string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range c {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || all[i].v == all[j].v && all[i].k < all[j].k })
	var parts []string
	for _, x := range all {
		parts = append(parts, fmt.Sprintf("%s %d (%.4f/request)", x.k, x.v, float64(x.v)/float64(requests)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// respStream parses the RESP commands of one connection as they arrive.
type respStream struct{ buf []byte }

func (s *respStream) feed(data []byte, c *cmdCounts) {
	s.buf = append(s.buf, data...)
	for len(s.buf) > 0 {
		n, kind, ok := parseCommand(s.buf)
		if !ok {
			break
		}
		if kind != "" {
			c.add(kind)
		}
		s.buf = s.buf[n:]
	}
	if len(s.buf) == 0 {
		s.buf = nil
	} else if cap(s.buf) > 4*len(s.buf)+4096 {
		s.buf = append([]byte(nil), s.buf...)
	}
}

// parseCommand parses one command, a RESP array of bulk strings, at the
// start of b: the bytes it takes and its kind. ok is false when b holds
// only part of a command. Bytes that are not a command are skipped up to
// the next '*' with kind "".
func parseCommand(b []byte) (n int, kind string, ok bool) {
	if b[0] != '*' {
		if i := bytes.IndexByte(b, '*'); i > 0 {
			return i, "", true
		}
		return len(b), "", true
	}
	argc, p, ok := readInt(b, 1)
	if !ok {
		return 0, "", false
	}
	var args []string
	for i := 0; i < argc; i++ {
		if p >= len(b) {
			return 0, "", false
		}
		if b[p] != '$' {
			return p, "", true
		}
		l, q, ok := readInt(b, p+1)
		if !ok || q+l+2 > len(b) {
			return 0, "", false
		}
		if i < 5 {
			args = append(args, string(b[q:q+l]))
		}
		p = q + l + 2
	}
	return p, classify(args), true
}

// readInt reads a decimal number ended by CRLF at b[i:], and returns it
// and the index after the CRLF.
func readInt(b []byte, i int) (int, int, bool) {
	end := bytes.Index(b[i:], []byte("\r\n"))
	if end < 0 {
		return 0, 0, false
	}
	v, err := strconv.Atoi(string(b[i : i+end]))
	if err != nil {
		return 0, i + end + 2, true
	}
	return v, i + end + 2, true
}

// classify names the kind of a command from its first arguments, using
// the store's key layout (statestore: kstate:{space/slot}:lease, :hot,
// kstate:{space}:marker).
func classify(args []string) string {
	if len(args) == 0 {
		return "empty"
	}
	name := strings.ToUpper(args[0])
	switch name {
	case "EVALSHA", "EVAL":
		if len(args) < 4 {
			return name + " (other)"
		}
		switch key := args[3]; {
		case args[2] == "1" && strings.HasSuffix(key, ":lease"):
			// Per slot or a batch of them (statestore's *All scripts route
			// by their first key).
			return kindLease
		case args[2] == "1" && strings.HasSuffix(key, ":hot"):
			return "hot-set read (EVALSHA)"
		case strings.HasSuffix(key, ":lease") && len(args) > 4 && strings.HasSuffix(args[4], ":hot"):
			return kindFlush
		case strings.HasSuffix(key, ":marker"):
			return kindMarker
		}
		return name + " (other)"
	case "HGETALL":
		return kindLoad
	case "GET", "SET", "SETNX":
		if len(args) > 1 && strings.HasSuffix(args[1], ":marker") {
			return kindMarker
		}
		return kindGetSet
	case "ZREVRANGE":
		return "hot-set read (ZREVRANGE)"
	case "HELLO", "CLIENT", "PING", "SELECT", "AUTH":
		return kindConn
	}
	return name
}
