package statestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of RedisOptions.
const (
	DefaultHotSetSize   = 10000
	DefaultChunkRecords = 512
	DefaultChunkBytes   = 4 << 20
	DefaultBatchKeys    = 512
)

// watchRetry is how long WatchHandoffs waits before receiving again after
// an error, so a Redis that is down does not make it spin.
const watchRetry = 250 * time.Millisecond

// RedisOptions tunes a Redis store. Zero values take the defaults.
type RedisOptions struct {
	// HotSetSize caps each slot's hot-set index (DefaultHotSetSize).
	HotSetSize int
	// ChunkRecords and ChunkBytes cap one flush script call; larger batches
	// are split into chunks sent in one pipeline. Each chunk is atomic and
	// fenced on its own. A single record larger than ChunkBytes goes alone.
	ChunkRecords int
	ChunkBytes   int
	// BatchKeys caps the slots of one batch script call (AcquireAll,
	// RenewAll, ReleaseAll, HotKeysAll; DefaultBatchKeys). Redis runs a
	// script to its end before it serves anyone else, so this bounds how
	// long one call holds other clients up: 512 renewals take about a
	// millisecond. The calls of one operation go in one pipeline.
	BatchKeys int
	// ClientName is set on every connection (CLIENT SETNAME), e.g. the pod
	// name, so CLIENT LIST shows who is connected.
	ClientName string
	// MinIdleConns keeps this many connections open and idle (per node on
	// Cluster), dialed in the background from the start. A new connection
	// costs a dial and two round trips before its first command, so a burst
	// of concurrent calls on a cold pool (a pod that just started and takes
	// over slots) pays that on every call. 0 keeps none.
	MinIdleConns int
	// Lazy skips the connect check: NewRedis then fails only for a bad URL,
	// and the first operation connects (scripts load through EVALSHA's EVAL
	// fallback). The agent uses it so an unreachable Redis keeps it unready
	// instead of crash-looping.
	Lazy bool
}

// Redis is the Store on Redis (single node, Sentinel or Cluster). The key
// layout and the scripts are described in the package documentation.
type Redis struct {
	c    redis.UniversalClient
	opts RedisOptions

	closed    atomic.Bool
	closeOnce sync.Once
	// done ends WatchHandoffs goroutines when the store is closed.
	done   context.Context
	finish context.CancelFunc

	// mixNodes makes batches ignore which Redis Cluster node serves each
	// key, so tests can exercise the per-slot retry of keys a batch's node
	// refused (status 2), which otherwise needs a resharding cluster.
	mixNodes bool
}

var _ Store = (*Redis)(nil)

// NewRedis connects to the store URL (see ParseURL), checks that it answers
// and loads the scripts. Errors reaching it wrap ErrUnavailable.
func NewRedis(ctx context.Context, url string, opts RedisOptions) (*Redis, error) {
	o, kind, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if opts.HotSetSize <= 0 {
		opts.HotSetSize = DefaultHotSetSize
	}
	if opts.ChunkRecords <= 0 {
		opts.ChunkRecords = DefaultChunkRecords
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = DefaultChunkBytes
	}
	if opts.BatchKeys <= 0 {
		opts.BatchKeys = DefaultBatchKeys
	}
	o.ClientName = opts.ClientName
	o.MinIdleConns = opts.MinIdleConns
	// go-redis labels each new connection with its library name and version
	// (CLIENT SETINFO), one more round trip per connection for a label
	// nothing reads; CLIENT LIST still shows ClientName.
	o.DisableIndentity = true
	// Without this a context deadline does not bound a blocked read.
	o.ContextTimeoutEnabled = true

	var c redis.UniversalClient
	switch kind {
	case cluster:
		c = redis.NewClusterClient(o.Cluster())
	case sentinel:
		c = redis.NewFailoverClient(o.Failover())
	default:
		c = redis.NewClient(o.Simple())
	}
	r := &Redis{c: c, opts: opts}
	r.done, r.finish = context.WithCancel(context.Background())
	if opts.Lazy {
		return r, nil
	}

	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, r.fail("connect to "+Redacted(url), err)
	}
	for _, s := range allScripts {
		if err := s.Load(ctx, c).Err(); err != nil {
			c.Close()
			return nil, r.fail("load scripts into "+Redacted(url), err)
		}
	}
	return r, nil
}

// allScripts are loaded by NewRedis; the rest of the time EVALSHA's EVAL
// fallback reloads them.
var allScripts = []*redis.Script{
	acquireScript, renewScript, releaseScript, releaseForScript, flushScript,
	acquireAllScript, renewAllScript, releaseAllScript, hotKeysAllScript,
}

// Client returns the underlying go-redis client (for diagnostics and tests).
func (r *Redis) Client() redis.UniversalClient { return r.c }

func slotPrefix(s SlotRef) string {
	return "kstate:{" + s.Space + "/" + strconv.FormatUint(uint64(s.Slot), 10) + "}:"
}

func entityPrefix(s SlotRef) string { return slotPrefix(s) + "e:" }
func leaseKey(s SlotRef) string     { return slotPrefix(s) + "lease" }
func hotKey(s SlotRef) string       { return slotPrefix(s) + "hot" }
func markerKey(space string) string { return "kstate:{" + space + "}:marker" }
func handoffChannel(holder string) string {
	return "kstate:handoff:" + holder
}

// releasedChannel carries ReleaseFor's notices. It is not handoffChannel,
// so an agent of an older version, which watches only that one, never
// mistakes a notice for a request.
func releasedChannel(asker string) string {
	return "kstate:released:" + asker
}

// Load implements Store.
func (r *Redis) Load(ctx context.Context, slot SlotRef, keys []string) (map[string]*Record, error) {
	out, err := r.load(ctx, "load from slot "+slot.String(), []SlotRef{slot}, [][]string{keys})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// LoadAll implements Store: one pipeline of HGETALLs, which the cluster
// client splits by node.
func (r *Redis) LoadAll(ctx context.Context, slots []SlotRef, keys [][]string) ([]map[string]*Record, error) {
	if len(keys) != len(slots) {
		return nil, fmt.Errorf("statestore: load from %d slots: %d key lists, want one per slot", len(slots), len(keys))
	}
	return r.load(ctx, fmt.Sprintf("load from %d slots", len(slots)), slots, keys)
}

func (r *Redis) load(ctx context.Context, op string, slots []SlotRef, keys [][]string) ([]map[string]*Record, error) {
	out := make([]map[string]*Record, len(slots))
	n := 0
	for i, s := range slots {
		if err := r.check(s.Space); err != nil {
			return nil, err
		}
		out[i] = make(map[string]*Record, len(keys[i]))
		n += len(keys[i])
	}
	if n == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, 0, n)
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range slots {
			prefix := entityPrefix(s)
			for _, k := range keys[i] {
				cmds = append(cmds, p.HGetAll(ctx, prefix+k))
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.fail(op, err)
	}
	j := 0
	for i, s := range slots {
		for _, k := range keys[i] {
			m := cmds[j].Val()
			j++
			if len(m) == 0 {
				continue
			}
			rec, err := decodeRecord(k, m)
			if err != nil {
				return nil, fmt.Errorf("statestore: load from slot %s: %w", s, err)
			}
			out[i][k] = rec
		}
	}
	return out, nil
}

func decodeRecord(key string, m map[string]string) (*Record, error) {
	rec := &Record{Key: key}
	var err error
	if rec.Version, err = strconv.ParseUint(m["v"], 10, 64); err != nil {
		return nil, fmt.Errorf("entity %q: field v (version) is %q, want an unsigned integer", key, m["v"])
	}
	if s := m["s"]; s != "" {
		rec.State = []byte(s)
	}
	if d := m["d"]; d != "" {
		if err := json.Unmarshal([]byte(d), &rec.Dedup); err != nil {
			return nil, fmt.Errorf("entity %q: field d (dedup) is not a JSON list of events: %w", key, err)
		}
	}
	ms, err := strconv.ParseInt(m["a"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("entity %q: field a (last access) is %q, want unix milliseconds", key, m["a"])
	}
	rec.LastAccess = msTime(ms)
	return rec, nil
}

// Flush implements Store. A batch is split into chunks (RedisOptions) that
// go out in one pipeline; each chunk is one flushScript call, atomic and
// fenced on its own. When a chunk is fenced, the chunks before it may have
// been written: they landed while the lease was still current.
func (r *Redis) Flush(ctx context.Context, lease Lease, records []*Record) (FlushResult, error) {
	var res FlushResult
	if err := r.check(lease.Slot.Space); err != nil {
		return res, err
	}
	if err := validateLease(lease); err != nil {
		return res, err
	}
	if err := validateRecords(lease.Slot, records); err != nil {
		return res, err
	}
	chunks := r.chunks(records)
	calls := make([]scriptCall, len(chunks))
	for i, ch := range chunks {
		calls[i] = r.flushCall(lease, ch)
	}
	cmds := make([]*redis.Cmd, len(calls))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, fc := range calls {
			cmds[i] = flushScript.EvalSha(ctx, p, fc.keys, fc.args...)
		}
		return nil
	})
	op := "flush slot " + lease.Slot.String()
	// A reply error (NOSCRIPT) belongs to one command and is handled below;
	// any other error means the pipeline did not get through, and its
	// commands may not even carry it.
	var replyErr redis.Error
	if err != nil && !errors.As(err, &replyErr) {
		return res, r.fail(op, err)
	}
	for i, cmd := range cmds {
		// NOSCRIPT: Redis restarted or failed over since the script was
		// loaded. The chunk did not run, so running it again is safe; EVAL
		// also puts the script back in the cache.
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmd = flushScript.Eval(ctx, r.c, calls[i].keys, calls[i].args...)
		}
		reply, err := cmd.Slice()
		if err != nil {
			return res, r.fail(op, err)
		}
		status, err := replyInt(reply, 0)
		if err != nil {
			return res, fmt.Errorf("statestore: %s: %w", op, err)
		}
		if status == 0 {
			cur, err := leaseReply(lease.Slot, reply)
			if err != nil {
				return res, fmt.Errorf("statestore: %s: %w", op, err)
			}
			return res, &FencedError{Lease: lease, Current: cur}
		}
		for j := 1; j < len(reply); j++ {
			idx, err := replyInt(reply, j)
			if err != nil || idx < 1 || int(idx) > len(chunks[i]) {
				return res, fmt.Errorf("statestore: %s: bad rejected index %v in the script reply", op, reply[j])
			}
			res.Rejected = append(res.Rejected, chunks[i][idx-1].Key)
		}
	}
	return res, nil
}

// scriptCall is the keys and arguments of one script call.
type scriptCall struct {
	keys []string
	args []any
}

func (r *Redis) chunks(records []*Record) [][]*Record {
	if len(records) == 0 {
		// Still one call: an empty flush checks the fence.
		return [][]*Record{nil}
	}
	var out [][]*Record
	start, size := 0, 0
	for i, rec := range records {
		n := rec.Size()
		if i > start && (i-start >= r.opts.ChunkRecords || size+n > r.opts.ChunkBytes) {
			out = append(out, records[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(out, records[start:])
}

func (r *Redis) flushCall(lease Lease, records []*Record) scriptCall {
	prefix := entityPrefix(lease.Slot)
	keys := make([]string, 2, 2+len(records))
	keys[0], keys[1] = leaseKey(lease.Slot), hotKey(lease.Slot)
	args := make([]any, 4, 4+5*len(records))
	args[0] = lease.Holder
	args[1] = strconv.FormatUint(lease.Epoch, 10)
	args[2] = strconv.Itoa(r.opts.HotSetSize)
	args[3] = prefix
	for _, rec := range records {
		keys = append(keys, prefix+rec.Key)
		deleted, dedup, access := "0", "", "0"
		if rec.Deleted {
			deleted = "1"
		}
		if len(rec.Dedup) > 0 {
			// DedupEntry has only strings and bytes: Marshal cannot fail.
			b, _ := json.Marshal(rec.Dedup)
			dedup = string(b)
		}
		if ms := rec.LastAccess.UnixMilli(); !rec.LastAccess.IsZero() && ms > 0 {
			access = strconv.FormatInt(ms, 10)
		}
		args = append(args, deleted, strconv.FormatUint(rec.Version, 10), rec.State, dedup, access)
	}
	return scriptCall{keys: keys, args: args}
}

// HotKeys implements Store.
func (r *Redis) HotKeys(ctx context.Context, slot SlotRef, n int) ([]string, error) {
	if err := r.check(slot.Space); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	keys, err := r.c.ZRevRange(ctx, hotKey(slot), 0, int64(n-1)).Result()
	if err != nil {
		return nil, r.fail("hot keys of slot "+slot.String(), err)
	}
	return keys, nil
}

// Acquire implements Store.
func (r *Redis) Acquire(ctx context.Context, slot SlotRef, holder, addr string, ttl time.Duration) (Lease, error) {
	if err := r.check(slot.Space); err != nil {
		return Lease{}, err
	}
	if err := validateTTL("acquire", slot, holder, ttl); err != nil {
		return Lease{}, err
	}
	op := "acquire slot " + slot.String()
	reply, err := acquireScript.Run(ctx, r.c, []string{leaseKey(slot)}, holder, addr, ttl.Milliseconds()).Slice()
	if err != nil {
		return Lease{}, r.fail(op, err)
	}
	l, granted, err := leaseStatus(slot, reply)
	if err != nil {
		return Lease{}, fmt.Errorf("statestore: %s: %w", op, err)
	}
	if !granted {
		return Lease{}, &HeldError{Lease: l}
	}
	return l, nil
}

// evalAll runs script once per calls[i] in one pipelined round trip. Every
// error belongs to its own command: a reply error, or a network error, which
// on Redis Cluster fails only the commands sent to that node while the
// others have their replies. NOSCRIPT (the script cache was lost to a
// restart or failover) is retried with EVAL, which also reloads it, in one
// more round trip.
//
// With nodes (from batches), calls[i] goes to nodes[i] itself rather than
// through the cluster client, one pipeline per node, all at once. A node
// client does not follow MOVED or ASK: a batch declares only its first key,
// so a redirect of that key says nothing about the others, and following an
// ASK would run them all in ASKING mode on the target node, which would
// then read keys of its other importing slots as absent although they still
// live on the source. The caller retries the keys of such a batch one by
// one (see redirected).
func (r *Redis) evalAll(ctx context.Context, script *redis.Script, calls []scriptCall, nodes []*redis.Client) []*redis.Cmd {
	if nodes == nil {
		return evalOn(ctx, r.c, script, calls)
	}
	cmds := make([]*redis.Cmd, len(calls))
	byNode := map[*redis.Client][]int{}
	for i, n := range nodes {
		byNode[n] = append(byNode[n], i)
	}
	var wg sync.WaitGroup
	for n, idx := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := make([]scriptCall, len(idx))
			for j, i := range idx {
				sub[j] = calls[i]
			}
			for j, c := range evalOn(ctx, n, script, sub) {
				cmds[idx[j]] = c
			}
		}()
	}
	wg.Wait()
	return cmds
}

// pipeliner is a client evalOn can send through: the cluster client, or one
// node's client.
type pipeliner interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// evalOn is evalAll through one client.
func evalOn(ctx context.Context, c pipeliner, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 0 {
		return cmds
	}
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	ownErrors(cmds, err)
	var again []int
	for i := range calls {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return cmds
	}
	retried := make([]*redis.Cmd, len(again))
	_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j, i := range again {
			retried[j] = script.Eval(ctx, p, calls[i].keys, calls[i].args...)
		}
		return nil
	})
	ownErrors(retried, err)
	for j, i := range again {
		cmds[i] = retried[j]
	}
	return cmds
}

// redirected reports whether a batch sent to a node client was refused
// because the node does not serve its first (declared) key as the slot map
// said: MOVED, ASK, or TRYAGAIN while that slot migrates. Then none of the
// batch ran, and each of its keys is retried with its per-slot script,
// which the cluster client routes by itself.
func redirected(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") || redis.HasErrorPrefix(err, "TRYAGAIN")
}

// ownErrors makes sure each command of a failed pipeline carries an error:
// go-redis sets it on the commands a failure touched, and a command with
// neither a reply nor an error gets the pipeline's, so that nothing reads
// as answered that was not.
func ownErrors(cmds []*redis.Cmd, err error) {
	if err == nil {
		return
	}
	for _, c := range cmds {
		if c.Err() == nil && c.Val() == nil {
			c.SetErr(err)
		}
	}
}

// admit validates the items of a batch operation: errs[i] is set for the
// ones that cannot be sent, and the others are returned.
func (r *Redis) admit(n int, slot func(int) SlotRef, validate func(int) error, errs []error) []int {
	var items []int
	for i := 0; i < n; i++ {
		if err := r.check(slot(i).Space); err != nil {
			errs[i] = err
			continue
		}
		if err := validate(i); err != nil {
			errs[i] = err
			continue
		}
		items = append(items, i)
	}
	return items
}

// batches splits items (indexes into the caller's slices) into the calls
// of a batch script: at most BatchKeys each and, on Redis Cluster, only
// keys that one node serves, by the client's slot map. A map that is out of
// date costs a per-slot retry of the keys it misplaced (status 2), not an
// error. On Redis Cluster it also returns the node client of each batch,
// for evalAll (nil otherwise, and in the mixNodes test mode).
func (r *Redis) batches(ctx context.Context, items []int, key func(int) string) ([][]int, []*redis.Client, error) {
	groups := [][]int{items}
	var groupNodes []*redis.Client
	if cc, ok := r.c.(*redis.ClusterClient); ok && !r.mixNodes {
		groups = nil
		byNode := map[*redis.Client]int{}
		for _, i := range items {
			node, err := cc.MasterForKey(ctx, key(i))
			if err != nil {
				return nil, nil, err
			}
			g, ok := byNode[node]
			if !ok {
				g = len(groups)
				byNode[node] = g
				groups = append(groups, nil)
				groupNodes = append(groupNodes, node)
			}
			groups[g] = append(groups[g], i)
		}
	}
	var out [][]int
	var nodes []*redis.Client
	for gi, g := range groups {
		for len(g) > 0 {
			b := g[:min(len(g), r.opts.BatchKeys)]
			g = g[len(b):]
			out = append(out, b)
			if groupNodes != nil {
				nodes = append(nodes, groupNodes[gi])
			}
		}
	}
	return out, nodes, nil
}

// leaseOp is one of the batched lease operations, for runLeaseOp.
type leaseOp struct {
	name  string // "acquire", "renew" or "release", for errors
	slot  func(i int) SlotRef
	batch *redis.Script
	fixed []any             // the batch script's arguments before the per-slot ones
	per   func(i int) []any // slot i's arguments to the batch script, after its lease key
	// head is how many values a batch reply starts with (shared by its
	// slots), and expand turns slot i's short answer v into the row the
	// per-slot script would have answered.
	head   int
	expand func(i int, head []any, v any) []any
	// one is the per-slot script, for the slots a batch's node refused;
	// oneArgs are its arguments (its only key is the lease).
	one     *redis.Script
	oneArgs func(i int) []any
}

// runLeaseOp runs op for items (indexes into the caller's slices) and sets
// rows[i] to slot i's reply row ({status, ...}, as the per-slot script
// answers) or errs[i]. The batches go in one pipeline; the slots their
// nodes refused are retried with the per-slot script, which the cluster
// client routes by itself (following MOVED and ASK), in one more.
func (r *Redis) runLeaseOp(ctx context.Context, op leaseOp, items []int, rows [][]any, errs []error) {
	fail := func(i int, err error) { errs[i] = r.fail(op.name+" slot "+op.slot(i).String(), err) }
	key := func(i int) string { return leaseKey(op.slot(i)) }
	batches, nodes, err := r.batches(ctx, items, key)
	if err != nil {
		for _, i := range items {
			fail(i, err)
		}
		return
	}
	calls := make([]scriptCall, len(batches))
	for b, items := range batches {
		args := append([]any(nil), op.fixed...)
		for _, i := range items {
			args = append(append(args, key(i)), op.per(i)...)
		}
		calls[b] = scriptCall{keys: []string{key(items[0])}, args: args}
	}
	cmds := r.evalAll(ctx, op.batch, calls, nodes)
	var away []int
	for b, items := range batches {
		reply, err := cmds[b].Slice()
		if nodes != nil && redirected(err) {
			// The node no longer serves the batch's first key: nothing
			// ran; each slot goes to the node that serves it now.
			away = append(away, items...)
			continue
		}
		if err == nil && len(reply) != op.head+len(items) {
			err = fmt.Errorf("batch reply has %d values for %d slots", len(reply), len(items))
		}
		if err != nil {
			for _, i := range items {
				fail(i, err)
			}
			continue
		}
		head := reply[:op.head]
		for j, i := range items {
			v := reply[op.head+j]
			if row, ok := v.([]any); ok { // a whole lease reply: fenced, or held by another
				rows[i] = row
				continue
			}
			if status, ok := v.(int64); ok && status == 2 {
				away = append(away, i)
				continue
			}
			rows[i] = op.expand(i, head, v)
		}
	}
	if len(away) == 0 {
		return
	}
	calls = calls[:0]
	for _, i := range away {
		calls = append(calls, scriptCall{keys: []string{key(i)}, args: op.oneArgs(i)})
	}
	cmds = r.evalAll(ctx, op.one, calls, nil)
	for j, i := range away {
		v, err := cmds[j].Result()
		if err != nil {
			fail(i, err)
			continue
		}
		switch v := v.(type) {
		case []any:
			rows[i] = v
		case int64: // releaseScript's status
			rows[i] = []any{v}
		}
	}
}

// RenewAll implements Store: a few script calls in one round trip however
// many leases (see RedisOptions.BatchKeys). A renewed lease is the
// caller's with the new Expires.
func (r *Redis) RenewAll(ctx context.Context, leases []Lease, ttl time.Duration) ([]Lease, []error) {
	renewed := make([]Lease, len(leases))
	errs := make([]error, len(leases))
	rows := make([][]any, len(leases))
	slot := func(i int) SlotRef { return leases[i].Slot }
	epoch := func(i int) string { return strconv.FormatUint(leases[i].Epoch, 10) }
	ms := ttl.Milliseconds()
	items := r.admit(len(leases), slot, func(i int) error { return validateTTL("renew", leases[i].Slot, leases[i].Holder, ttl) }, errs)
	r.runLeaseOp(ctx, leaseOp{
		name: "renew", slot: slot,
		batch: renewAllScript, fixed: []any{ms},
		per:  func(i int) []any { return []any{leases[i].Holder, epoch(i)} },
		head: 1,
		expand: func(i int, head []any, v any) []any {
			l := leases[i]
			return []any{v, l.Holder, l.Addr, epoch(i), strconv.FormatInt(max(l.Acquired.UnixMilli(), 0), 10), head[0]}
		},
		one: renewScript, oneArgs: func(i int) []any { return []any{leases[i].Holder, epoch(i), ms} },
	}, items, rows, errs)
	for _, i := range items {
		if errs[i] != nil {
			continue
		}
		cur, ok, err := leaseStatus(leases[i].Slot, rows[i])
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("statestore: renew slot %s: %w", leases[i].Slot, err)
		case !ok:
			errs[i] = &FencedError{Lease: leases[i], Current: cur}
		default:
			renewed[i] = cur
		}
	}
	return renewed, errs
}

// AcquireAll implements Store, batched as RenewAll.
func (r *Redis) AcquireAll(ctx context.Context, slots []SlotRef, holder, addr string, ttl time.Duration) ([]Lease, []error) {
	leases := make([]Lease, len(slots))
	errs := make([]error, len(slots))
	rows := make([][]any, len(slots))
	slot := func(i int) SlotRef { return slots[i] }
	args := []any{holder, addr, ttl.Milliseconds()}
	items := r.admit(len(slots), slot, func(i int) error { return validateTTL("acquire", slots[i], holder, ttl) }, errs)
	r.runLeaseOp(ctx, leaseOp{
		name: "acquire", slot: slot,
		batch: acquireAllScript, fixed: args,
		per:  func(int) []any { return nil },
		head: 2,
		expand: func(_ int, head []any, epoch any) []any {
			return []any{int64(1), holder, addr, epoch, head[0], head[1]}
		},
		one: acquireScript, oneArgs: func(int) []any { return args },
	}, items, rows, errs)
	for _, i := range items {
		if errs[i] != nil {
			continue
		}
		l, granted, err := leaseStatus(slots[i], rows[i])
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("statestore: acquire slot %s: %w", slots[i], err)
		case !granted:
			errs[i] = &HeldError{Lease: l}
		default:
			leases[i] = l
		}
	}
	return leases, errs
}

// ReleaseAll implements Store, batched as RenewAll.
func (r *Redis) ReleaseAll(ctx context.Context, leases []Lease) []error {
	errs := make([]error, len(leases))
	rows := make([][]any, len(leases))
	slot := func(i int) SlotRef { return leases[i].Slot }
	epoch := func(i int) string { return strconv.FormatUint(leases[i].Epoch, 10) }
	items := r.admit(len(leases), slot, func(i int) error { return validateLease(leases[i]) }, errs)
	r.runLeaseOp(ctx, leaseOp{
		name: "release", slot: slot,
		batch:  releaseAllScript,
		per:    func(i int) []any { return []any{leases[i].Holder, epoch(i)} },
		expand: func(_ int, _ []any, status any) []any { return []any{status} },
		one:    releaseScript, oneArgs: func(i int) []any { return []any{leases[i].Holder, epoch(i)} },
	}, items, rows, errs)
	for _, i := range items {
		// Status 0 (not current) is no error: Release's rule.
		if _, err := replyInt(rows[i], 0); errs[i] == nil && err != nil {
			errs[i] = fmt.Errorf("statestore: release slot %s: %w", leases[i].Slot, err)
		}
	}
	return errs
}

// HotKeysAll implements Store. The batch script answers only for the slots
// that have keys, so the reply is as small as the data, and a space with
// few written slots costs little to preload.
func (r *Redis) HotKeysAll(ctx context.Context, slots []SlotRef, n int) ([][]string, error) {
	out := make([][]string, len(slots))
	if n <= 0 || len(slots) == 0 {
		return out, nil
	}
	items := make([]int, len(slots))
	for i, s := range slots {
		if err := r.check(s.Space); err != nil {
			return nil, err
		}
		items[i] = i
	}
	op := fmt.Sprintf("hot keys of %d slots", len(slots))
	key := func(i int) string { return hotKey(slots[i]) }
	batches, nodes, err := r.batches(ctx, items, key)
	if err != nil {
		return nil, r.fail(op, err)
	}
	calls := make([]scriptCall, len(batches))
	for b, items := range batches {
		args := []any{n}
		for _, i := range items {
			args = append(args, key(i))
		}
		calls[b] = scriptCall{keys: []string{key(items[0])}, args: args}
	}
	cmds := r.evalAll(ctx, hotKeysAllScript, calls, nodes)
	var away []int
	for b, items := range batches {
		reply, err := cmds[b].Slice()
		if nodes != nil && redirected(err) {
			away = append(away, items...) // as in runLeaseOp
			continue
		}
		if err != nil {
			return nil, r.fail(op, err)
		}
		at := func(v any) (int, error) {
			p, ok := v.(int64)
			if !ok || p < 1 || int(p) > len(items) {
				return 0, fmt.Errorf("statestore: %s: bad position %v in the script reply", op, v)
			}
			return items[p-1], nil
		}
		far, _ := reply[0].([]any)
		for _, v := range far {
			i, err := at(v)
			if err != nil {
				return nil, err
			}
			away = append(away, i)
		}
		for j := 1; j+1 < len(reply); j += 2 {
			i, err := at(reply[j])
			if err != nil {
				return nil, err
			}
			members, _ := reply[j+1].([]any)
			keys := make([]string, 0, len(members))
			for _, m := range members {
				s, ok := m.(string)
				if !ok {
					return nil, fmt.Errorf("statestore: %s: hot-set member %v is %T, want a string", op, m, m)
				}
				keys = append(keys, s)
			}
			out[i] = keys
		}
	}
	if len(away) == 0 {
		return out, nil
	}
	// Slots the batch's node refused: read them one by one, which the
	// cluster client routes by itself.
	zcmds := make([]*redis.StringSliceCmd, len(away))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j, i := range away {
			zcmds[j] = p.ZRevRange(ctx, key(i), 0, int64(n-1))
		}
		return nil
	})
	if err != nil {
		return nil, r.fail(op, err)
	}
	for j, i := range away {
		out[i] = zcmds[j].Val()
	}
	return out, nil
}

// AcquireWith implements Store: one call of acquireScript with the entity keys declared, which
// publishes the request itself when the slot is held and, only when it
// grants the lease, reads the entities in the same call. The entity keys
// are declared keys of the script and share the lease key's hash tag, so
// on Redis Cluster the grant and the reads are one atomic step on the node
// that serves the slot, also while the slot migrates (an ASK-redirected
// call reads on the target what it grants on the target; Redis answers
// TRYAGAIN, which wraps ErrUnavailable, while the keys are split between
// the nodes).
func (r *Redis) AcquireWith(ctx context.Context, slot SlotRef, holder, addr string, ttl time.Duration, opts AcquireOptions) (Lease, map[string]*Record, error) {
	if err := r.check(slot.Space); err != nil {
		return Lease{}, nil, err
	}
	if err := validateTTL("acquire", slot, holder, ttl); err != nil {
		return Lease{}, nil, err
	}
	op := "acquire slot " + slot.String()
	keys := make([]string, 1, 1+len(opts.Load))
	keys[0] = leaseKey(slot)
	prefix := entityPrefix(slot)
	for _, k := range opts.Load {
		keys = append(keys, prefix+k)
	}
	args := []any{holder, addr, ttl.Milliseconds(), "", handoffChannel("")}
	if opts.AskHolder {
		// HandoffRequest has only strings and numbers: Marshal cannot fail.
		b, _ := json.Marshal(HandoffRequest{Slot: slot, Asker: holder, AskerAddr: addr})
		args[3] = b
	}
	// Run is EVALSHA, and EVAL when the script cache was lost (NOSCRIPT).
	reply, err := acquireScript.Run(ctx, r.c, keys, args...).Slice()
	if err != nil {
		return Lease{}, nil, r.fail(op, err)
	}
	if len(reply) < 6 {
		return Lease{}, nil, fmt.Errorf("statestore: %s: lease reply has %d elements, want 6", op, len(reply))
	}
	l, granted, err := leaseStatus(slot, reply[:6])
	if err != nil {
		return Lease{}, nil, fmt.Errorf("statestore: %s: %w", op, err)
	}
	if !granted {
		return Lease{}, nil, &HeldError{Lease: l}
	}
	loads := reply[6:]
	if len(loads) != len(opts.Load) {
		return l, nil, fmt.Errorf("statestore: load from slot %s: script returned %d entities, want %d", slot, len(loads), len(opts.Load))
	}
	recs := make(map[string]*Record, len(opts.Load))
	for i, v := range loads {
		m, err := hashReply(v)
		if err != nil {
			return l, nil, fmt.Errorf("statestore: load from slot %s: entity %q: %w", slot, opts.Load[i], err)
		}
		if len(m) == 0 {
			continue
		}
		rec, err := decodeRecord(opts.Load[i], m)
		if err != nil {
			return l, nil, fmt.Errorf("statestore: load from slot %s: %w", slot, err)
		}
		recs[opts.Load[i]] = rec
	}
	return l, recs, nil
}

// hashReply decodes a script's HGETALL reply, a flat list of fields and
// values, into the map HGETALL gives outside a script.
func hashReply(v any) (map[string]string, error) {
	flat, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("HGETALL reply is %T, want a list", v)
	}
	if len(flat)%2 != 0 {
		return nil, fmt.Errorf("HGETALL reply has %d elements, want field and value pairs", len(flat))
	}
	m := make(map[string]string, len(flat)/2)
	for j := 0; j < len(flat); j += 2 {
		f, ok1 := flat[j].(string)
		val, ok2 := flat[j+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("HGETALL reply has %T and %T, want strings", flat[j], flat[j+1])
		}
		m[f] = val
	}
	return m, nil
}

// Renew implements Store.
func (r *Redis) Renew(ctx context.Context, lease Lease, ttl time.Duration) (Lease, error) {
	if err := r.check(lease.Slot.Space); err != nil {
		return Lease{}, err
	}
	if err := validateTTL("renew", lease.Slot, lease.Holder, ttl); err != nil {
		return Lease{}, err
	}
	op := "renew slot " + lease.Slot.String()
	reply, err := renewScript.Run(ctx, r.c, []string{leaseKey(lease.Slot)},
		lease.Holder, strconv.FormatUint(lease.Epoch, 10), ttl.Milliseconds()).Slice()
	if err != nil {
		return Lease{}, r.fail(op, err)
	}
	l, ok, err := leaseStatus(lease.Slot, reply)
	if err != nil {
		return Lease{}, fmt.Errorf("statestore: %s: %w", op, err)
	}
	if !ok {
		return Lease{}, &FencedError{Lease: lease, Current: l}
	}
	return l, nil
}

// Release implements Store.
func (r *Redis) Release(ctx context.Context, lease Lease) error {
	if err := r.check(lease.Slot.Space); err != nil {
		return err
	}
	if err := validateLease(lease); err != nil {
		return err
	}
	err := releaseScript.Run(ctx, r.c, []string{leaseKey(lease.Slot)},
		lease.Holder, strconv.FormatUint(lease.Epoch, 10)).Err()
	return r.fail("release slot "+lease.Slot.String(), err)
}

// ReleaseFor implements Store: one script call releases the lease and, if
// it did, publishes the notice on the asker's released channel.
func (r *Redis) ReleaseFor(ctx context.Context, lease Lease, req HandoffRequest) error {
	if err := r.check(lease.Slot.Space); err != nil {
		return err
	}
	if err := validateLease(lease); err != nil {
		return err
	}
	if req.Asker == "" {
		return fmt.Errorf("statestore: release slot %s for a handoff: asker is empty", lease.Slot)
	}
	req.Slot = lease.Slot
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("statestore: release slot %s for %s: %w", lease.Slot, req.Asker, err)
	}
	err = releaseForScript.Run(ctx, r.c, []string{leaseKey(lease.Slot)},
		lease.Holder, strconv.FormatUint(lease.Epoch, 10), releasedChannel(req.Asker), b).Err()
	return r.fail("release slot "+lease.Slot.String()+" for "+req.Asker, err)
}

// Current implements Store. An expired lease that nobody took over is
// returned as stored, still naming its holder; Expires says it lapsed.
func (r *Redis) Current(ctx context.Context, slot SlotRef) (Lease, error) {
	if err := r.check(slot.Space); err != nil {
		return Lease{}, err
	}
	m, err := r.c.HGetAll(ctx, leaseKey(slot)).Result()
	if err != nil {
		return Lease{}, r.fail("read lease of slot "+slot.String(), err)
	}
	l, err := leaseReply(slot, []any{int64(0), m["holder"], m["addr"], m["epoch"], m["acq"], m["exp"]})
	if err != nil {
		return Lease{}, fmt.Errorf("statestore: read lease of slot %s: %w", slot, err)
	}
	return l, nil
}

// RequestHandoff implements Store. Pub/sub delivers at most once and only
// to holders listening at that moment, so an asker repeats its request
// while it waits for the lease.
func (r *Redis) RequestHandoff(ctx context.Context, req HandoffRequest, holder string) error {
	if err := r.check(req.Slot.Space); err != nil {
		return err
	}
	if holder == "" {
		return fmt.Errorf("statestore: handoff of slot %s: holder is empty", req.Slot)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("statestore: handoff of slot %s: %w", req.Slot, err)
	}
	return r.fail("request handoff of slot "+req.Slot.String()+" from "+holder,
		r.c.Publish(ctx, handoffChannel(holder), b).Err())
}

// WatchHandoffs implements Store. It subscribes to the holder's handoff
// and released channels in one command and returns once the subscription
// is active, so messages published after it returns are delivered (unless
// the connection drops: go-redis then resubscribes, and messages published
// in between are lost, which the asker's repetition and its poll cover).
func (r *Redis) WatchHandoffs(ctx context.Context, holder string) (<-chan HandoffRequest, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if holder == "" {
		return nil, errors.New("statestore: watch handoffs: holder is empty")
	}
	released := releasedChannel(holder)
	ps := r.c.Subscribe(ctx, handoffChannel(holder), released)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, r.fail("watch handoffs of "+holder, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(r.done, cancel)
	// Closing the subscription is what unblocks a pending receive.
	context.AfterFunc(wctx, func() { ps.Close() })

	out := make(chan HandoffRequest, 16)
	go func() {
		defer close(out)
		defer stopOnClose()
		defer cancel()
		for {
			msg, err := ps.ReceiveMessage(wctx)
			if wctx.Err() != nil {
				return
			}
			if err != nil {
				select {
				case <-wctx.Done():
					return
				case <-time.After(watchRetry):
				}
				continue
			}
			var req HandoffRequest
			if json.Unmarshal([]byte(msg.Payload), &req) != nil {
				continue // not from RequestHandoff or ReleaseFor; nothing to do
			}
			// The channel, not the payload, says which it is.
			req.Released = msg.Channel == released
			select {
			case out <- req:
			case <-wctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// EnsureMarker implements Store.
func (r *Redis) EnsureMarker(ctx context.Context, space string) (string, bool, error) {
	if err := r.check(space); err != nil {
		return "", false, err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("statestore: marker id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	op := "ensure marker of space " + space
	created, err := r.c.SetNX(ctx, markerKey(space), id, 0).Result()
	if err != nil {
		return "", false, r.fail(op, err)
	}
	if created {
		return id, true, nil
	}
	cur, err := r.c.Get(ctx, markerKey(space)).Result()
	if err != nil {
		// Including redis.Nil: the marker vanished right after SETNX saw it.
		return "", false, r.fail(op, err)
	}
	return cur, false, nil
}

// CheckMarker implements Store.
func (r *Redis) CheckMarker(ctx context.Context, space, id string) error {
	if err := r.check(space); err != nil {
		return err
	}
	cur, err := r.c.Get(ctx, markerKey(space)).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: space %s: marker %s is missing", ErrStoreReset, space, id)
	}
	if err != nil {
		return r.fail("check marker of space "+space, err)
	}
	if cur != id {
		return fmt.Errorf("%w: space %s: marker is %s, want %s", ErrStoreReset, space, cur, id)
	}
	return nil
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return r.fail("ping", r.c.Ping(ctx).Err())
}

// Close implements Store. It ends every WatchHandoffs channel. Calls after
// the first return nil.
func (r *Redis) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.finish()
		err = r.c.Close()
	})
	return err
}

func (r *Redis) check(space string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return validateSpace(space)
}

// fail wraps err for op, adding ErrUnavailable when the store could not be
// reached (or the caller's context ended first: the outcome is unknown
// either way). It returns nil for a nil err.
func (r *Redis) fail(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.ErrClosed) && r.closed.Load():
		return fmt.Errorf("%w: %s", ErrClosed, op)
	case unavailable(err):
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	default:
		return fmt.Errorf("statestore: %s: %w", op, err)
	}
}

// unavailableReplies are Redis error replies that mean "not now" rather
// than "wrong request": loading the AOF after a restart, a failover in
// progress, a cluster reconfiguring, a script running too long.
var unavailableReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "NOREPLICAS"}

func unavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &ne):
		return true
	case errors.Is(err, redis.ErrClosed):
		// The store itself is open (fail checks that first): on Redis
		// Cluster, go-redis closes a node's client when the node leaves
		// the slot map, and a batch grouped for that node just before
		// meets it closed. The next try goes to the slot's new node.
		return true
	}
	for _, p := range unavailableReplies {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	// go-redis reports these with errors.New, not with exported values.
	msg := err.Error()
	return msg == "redis: connection pool timeout" || strings.HasPrefix(msg, "redis: all sentinels")
}

func replyInt(reply []any, i int) (int64, error) {
	if i >= len(reply) {
		return 0, fmt.Errorf("script reply has %d elements, want more than %d", len(reply), i)
	}
	switch v := reply[i].(type) {
	case int64:
		return v, nil
	case string:
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, fmt.Errorf("script reply element %d is %T, want an integer", i, reply[i])
}

// leaseStatus decodes {status, holder, addr, epoch, acq_ms, exp_ms}.
func leaseStatus(slot SlotRef, reply []any) (Lease, bool, error) {
	status, err := replyInt(reply, 0)
	if err != nil {
		return Lease{}, false, err
	}
	l, err := leaseReply(slot, reply)
	return l, status == 1, err
}

func leaseReply(slot SlotRef, reply []any) (Lease, error) {
	if len(reply) != 6 {
		return Lease{}, fmt.Errorf("lease reply has %d elements, want 6", len(reply))
	}
	l := Lease{Slot: slot}
	var ok bool
	if l.Holder, ok = reply[1].(string); !ok {
		return Lease{}, fmt.Errorf("lease reply: holder is %T, want a string", reply[1])
	}
	if l.Addr, ok = reply[2].(string); !ok {
		return Lease{}, fmt.Errorf("lease reply: addr is %T, want a string", reply[2])
	}
	var n [3]int64
	for i := range n {
		s, _ := reply[3+i].(string)
		if s == "" {
			continue // absent field, e.g. a slot never leased
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return Lease{}, fmt.Errorf("lease of slot %s: field %d is %q, want a non-negative integer", slot, 3+i, s)
		}
		n[i] = v
	}
	l.Epoch, l.Acquired, l.Expires = uint64(n[0]), msTime(n[1]), msTime(n[2])
	return l, nil
}

// msTime converts unix milliseconds, keeping 0 as the zero time.
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
