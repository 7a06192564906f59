// Package statestore owns kstate's durable state: versioned entity records,
// per-slot leases with fencing epochs, the per-slot hot-set index and the
// store marker used to detect a reset.
//
// Invariants every implementation keeps (the contract suite in
// statestore/storetest checks them against Redis and the memory store):
//
//   - A slot's epoch never decreases, not even across Release. Acquire of a
//     free or expired lease sets epoch = previous epoch + 1.
//   - Flush writes a batch for one slot atomically (Redis: per chunk of up
//     to RedisOptions.ChunkRecords records, see below), and only while the
//     slot's lease still names the flushing holder at the flushing epoch.
//     Otherwise nothing is written and ErrFenced is returned: a late writer
//     is rejected, never merged.
//   - Within an accepted batch, a record whose version is lower than the
//     stored one is not written and is reported in FlushResult.Rejected.
//   - Lease expiry is judged by the store's clock (Redis TIME), so agents'
//     clock skew cannot make two holders.
//   - Every key of one slot shares one Redis Cluster hash tag
//     ({<space>/<slot>}), so each per-slot script touches one cluster slot.
//     The batch scripts of the *All methods touch many slots' keys, all of
//     one node, and do for each what its per-slot script does (below).
//
// # Leases
//
// A lease that expired but that nobody took over still fences correctly:
// any other writer must Acquire first, which raises the epoch. So Renew and
// Flush accept it, and Current returns it as stored (still naming its
// holder; Expires says it lapsed). Release clears the holder and keeps the
// epoch. Equal versions are written (a retried flush is idempotent). A
// tombstone removes the record and its version, so a later record of any
// version is accepted for that key.
//
// # Redis key layout
//
// With tag = {<space>/<slot>}, e.g. {default/cart/17}:
//
//	kstate:<tag>:e:<key>   HASH  s: state bytes, v: version (decimal),
//	                             d: JSON of []DedupEntry ("" when none),
//	                             a: last access, unix ms
//	kstate:<tag>:lease     HASH  holder, addr, epoch, acq (unix ms), exp (unix ms)
//	kstate:<tag>:hot       ZSET  entity keys scored by last access (unix ms),
//	                             trimmed to RedisOptions.HotSetSize by rank
//	kstate:{<space>}:marker STRING random id, see EnsureMarker
//	kstate:handoff:<holder> pub/sub channel of JSON HandoffRequests
//	kstate:released:<asker> pub/sub channel of ReleaseFor's notices (the
//	                        same JSON)
//
// A space must not contain '{' or '}'.
//
// # Scripts
//
// Acquire, Renew, Release and Flush are Lua scripts, loaded once by NewRedis
// and run with EVALSHA; when Redis answers NOSCRIPT (it restarted or failed
// over) they are sent again with EVAL. Inside them time is redis.call('TIME').
// AcquireWith is one acquireScript call too: it declares the entity
// keys it loads beside the lease key (one hash tag, so one cluster slot) and
// reads them inside the script, after the grant and only if granted, so the
// grant and the reads are one atomic step on one node, also while a slot
// migrates between Cluster nodes.
//
// AcquireAll, RenewAll, ReleaseAll and HotKeysAll run one batch script per
// RedisOptions.BatchKeys slots (512), all calls in one pipeline: a renewal
// round of 4,096 leases is 8 commands, not 4,096. On Redis Cluster the slots
// are first grouped by the node that serves them. A batch script passes its
// keys as arguments and declares only the first (Redis Cluster refuses
// declared keys of several hash slots, but lets a script without a shebang
// line touch any key its node serves); a key the node turns out not to
// serve is retried with the per-slot script. Each batch goes to its node's
// own client, which does not follow MOVED or ASK: a redirect of the first
// key sends every key of that batch to the per-slot retry, since following
// an ASK would run them all in ASKING mode on the importing node. scripts.go
// has the details.
// A proxy that routes by declared keys (twemproxy, Envoy) cannot carry them.
// Flush sends one script call per chunk of a batch (RedisOptions.ChunkRecords
// records or ChunkBytes bytes), all chunks in one pipelined round trip. Each
// chunk is atomic and checks the fence on its own: if a takeover lands
// between two chunks, the chunks before it were written (while the lease was
// current) and Flush returns ErrFenced for the rest. Load is one pipelined
// round trip of HGETALLs.
//
// # Handoff
//
// RequestHandoff publishes on the holder's channel, and so does Acquire
// through AcquireWith with AskHolder, from inside its script, when it finds
// the slot held: asking costs no round trip of its own. The holder answers
// with ReleaseFor, which releases the lease and, if it did, publishes a
// notice on the asker's released channel in the same script call.
// WatchHandoffs subscribes to both of a holder's channels and marks
// notices (HandoffRequest.Released). Pub/sub delivers at most once, only to
// a subscriber connected at that moment, so an asker repeats its request
// while it waits for the lease, and polls the lease in case the notice is
// lost.
//
// # Errors
//
// Failures to reach the store (connection refused or reset, timeouts, the
// caller's context ending, and the replies LOADING, BUSY, MASTERDOWN,
// CLUSTERDOWN, TRYAGAIN, READONLY, NOREPLICAS) wrap ErrUnavailable and keep
// the cause. A fenced Flush or Renew returns a *FencedError naming the
// current holder; a refused Acquire a *HeldError. After Close every method
// returns ErrClosed.
//
// # Store URL
//
// See ParseURL: redis://, rediss:// (TLS), redis+sentinel://h1,h2/master and
// redis+cluster://h1,h2. Passwords never appear in errors (Redacted).
//
// Redis must be durable (AOF, or a managed Redis with persistence). A Redis
// that comes back empty is detected by CheckMarker (ErrStoreReset).
//
// Memory is the same contract in process memory, for unit tests of the
// agent, with an injected clock.
package statestore
