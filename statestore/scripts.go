package statestore

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only code that writes leases and records.
// Each per-slot script touches the keys of one slot only (one hash tag), so
// it runs atomically on one Redis Cluster node. The batch scripts at the end
// serve many slots in one call; see the note above them.
//
// Conventions shared by all of them:
//   - Time is the store's: redis.call('TIME'), in unix milliseconds. An
//     agent's clock never decides whether a lease is live.
//   - Numbers are written with string.format('%d'): Lua 5.1 numbers are
//     doubles, and tostring() would switch to exponent notation for large
//     values. Epoch comparisons are string comparisons against what was
//     written this way, so they are exact.
//   - Lease replies are {status, holder, addr, epoch, acquired_ms,
//     expires_ms}; missing fields come back as '' or '0' (HMGET gives false
//     for them, which Redis would turn into a nil reply).

// luaNow is prepended to scripts that need the store's time.
const luaNow = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lease(l)
  return {0, l[1] or '', l[2] or '', l[3] or '0', l[4] or '0', l[5] or '0'}
end
`

// acquireScript: KEYS[1] lease, KEYS[2..] entity keys to read once granted
// (AcquireWith; none for Acquire); ARGV holder, addr, ttl_ms, and
// optionally a handoff request and the channel prefix the holder's name
// completes: then a live lease of another holder also gets the request
// published on its channel, so asking for a handoff costs no round trip of
// its own. Returns the lease reply, and when granted one HGETALL reply per
// entity key after it.
var acquireScript = redis.NewScript(luaNow + `
local l = redis.call('HMGET', KEYS[1], 'holder', 'addr', 'epoch', 'acq', 'exp')
local now = nowms()
-- A live lease of another holder wins; the caller learns who holds it so it
-- can ask for a handoff or answer 421.
if l[1] and l[1] ~= '' and l[1] ~= ARGV[1] and (tonumber(l[5]) or 0) > now then
  if ARGV[4] and ARGV[4] ~= '' then
    redis.call('PUBLISH', ARGV[5] .. l[1], ARGV[4])
  end
  return lease(l)
end
-- Free, expired or our own: always a new epoch, so everything written under
-- the previous one (by a crashed holder, or by our own earlier incarnation)
-- is fenced from now on.
local epoch = string.format('%d', (tonumber(l[3]) or 0) + 1)
local acq = string.format('%d', now)
local exp = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'addr', ARGV[2], 'epoch', epoch, 'acq', acq, 'exp', exp)
-- AcquireWith's entities, read only once granted: they share the lease's
-- hash tag, so on Redis Cluster the grant and the reads are one step on one
-- node, even while the slot migrates.
local out = {1, ARGV[1], ARGV[2], epoch, acq, exp}
for i = 2, #KEYS do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
end
return out
`)

// renewScript: KEYS[1] lease; ARGV holder, epoch, ttl_ms.
var renewScript = redis.NewScript(luaNow + `
local l = redis.call('HMGET', KEYS[1], 'holder', 'addr', 'epoch', 'acq', 'exp')
-- Expiry is not checked: a lease that expired but that nobody took over
-- still has our epoch, and any takeover would have raised it.
if l[1] ~= ARGV[1] or l[3] ~= ARGV[2] then
  return lease(l)
end
local exp = string.format('%d', nowms() + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'exp', exp)
return {1, l[1], l[2], l[3], l[4], exp}
`)

// releaseScript: KEYS[1] lease; ARGV holder, epoch. Returns 1 if released.
var releaseScript = redis.NewScript(`
local l = redis.call('HMGET', KEYS[1], 'holder', 'epoch')
-- A stale lease must not free its successor's.
if l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then
  return 0
end
-- The epoch stays: the next Acquire must fence everything written under it.
redis.call('HDEL', KEYS[1], 'holder', 'addr', 'acq', 'exp')
return 1
`)

// flushScript writes one chunk of a slot's records.
//
//	KEYS[1] lease, KEYS[2] hot set, KEYS[3..] entity keys
//	ARGV[1] holder, ARGV[2] epoch, ARGV[3] hot-set size, ARGV[4] entity key
//	prefix, then per record (KEYS[3+i]) five values at ARGV[5+5i..]:
//	deleted ('1'/'0'), version, state, dedup JSON, last access ms ('0': now).
//
// Returns {1, rejected record indexes (1-based)...} or, when fenced, the
// stored lease with status 0 and nothing written.
var flushScript = redis.NewScript(luaNow + `
local l = redis.call('HMGET', KEYS[1], 'holder', 'addr', 'epoch', 'acq', 'exp')
-- The fence: a holder whose epoch was superseded (takeover after expiry,
-- handoff, release) must not write. Expiry alone does not fence, as in renew.
if l[1] ~= ARGV[1] or l[3] ~= ARGV[2] then
  return lease(l)
end
-- Versions are compared as decimal strings (longer is larger), exact for
-- the whole uint64 range where Lua's doubles are not.
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local prefix = #ARGV[4]
local out = {1}
local now
for i = 3, #KEYS do
  local key, a = KEYS[i], 5 + (i - 3) * 5
  local v = ARGV[a + 1]
  local stored = redis.call('HGET', key, 'v')
  if stored and newer(stored, v) then
    out[#out + 1] = i - 2
  else
    local member = string.sub(key, prefix + 1)
    if ARGV[a] == '1' then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], member)
    else
      local at = ARGV[a + 4]
      if at == '0' then
        now = now or string.format('%d', nowms())
        at = now
      end
      redis.call('HSET', key, 's', ARGV[a + 2], 'v', v, 'd', ARGV[a + 3], 'a', at)
      redis.call('ZADD', KEYS[2], at, member)
    end
  end
end
-- Keep the hottest entries only: the hot set is a preload hint, and an
-- unbounded one would grow with every key ever written.
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
return out
`)

// releaseForScript is releaseScript for a handoff: when it frees the lease
// it also publishes the asker's notice, in the same call, so the asker
// learns at once that it can take the slot.
//
//	KEYS[1] lease; ARGV holder, epoch, channel, message.
//
// Returns 1 if released (and published), 0 if the lease was not current.
var releaseForScript = redis.NewScript(`
local l = redis.call('HMGET', KEYS[1], 'holder', 'epoch')
if l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], 'holder', 'addr', 'acq', 'exp')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// The batch scripts below do for many slots in one call what the per-slot
// scripts above do for one, so a renewal
// round of 4,096 leases is a few commands rather than 4,096. Every slot has
// its own hash tag, so a batch spans Redis Cluster hash slots, which Redis
// allows only this way:
//
//   - KEYS[1] only routes the call (it is the batch's first key); the keys
//     themselves are in ARGV. Redis Cluster refuses a command whose
//     declared keys span hash slots (CROSSSLOT), but lets a script without
//     a shebang line (Redis 7's "#!lua") touch undeclared keys of any slot
//     the node serves; Redis 6 does the same. Outside Cluster mode every key
//     is local.
//   - The caller groups the keys by the node that serves them. A key the
//     node does not serve after all (the cluster was resharding since the
//     client read the slot map) is refused at its first read, which
//     redis.pcall turns into status 2 for that key alone; nothing is
//     written to it, and the caller retries it with the per-slot script.
//     The call goes to that node itself, not following redirects: if the
//     node redirects KEYS[1] (MOVED, ASK), nothing ran, and the caller
//     retries every key of the batch that way. (Following an ASK would run
//     the whole script in ASKING mode on the target, which would read keys
//     of its other importing slots as absent.)
//   - Each key gets exactly what its per-slot script would do, with the
//     same checks; the whole batch is one atomic step, as each per-slot
//     call is. The replies are shorter (see each script).
//
// A proxy that routes commands by their declared keys (twemproxy, Envoy's
// Redis proxy) cannot carry these scripts; kstate talks to Redis, Sentinel
// or Cluster directly.

// acquireAllScript is acquireScript for many slots.
//
//	KEYS[1] routing only; ARGV holder, addr, ttl_ms, then the lease keys.
//
// Returns {acquired_ms, expires_ms, then per key: the new epoch (granted,
// to the holder and addr of ARGV at those times), the stored lease reply
// (status 0: held by another), or 2 (not served by this node)}. A granted
// lease is only its epoch, and a key is read for the fields its check
// needs only: this halves the script's time and the client's decoding.
var acquireAllScript = redis.NewScript(luaNow + `
local now = nowms()
local acq = string.format('%d', now)
local exp = string.format('%d', now + tonumber(ARGV[3]))
local out = {acq, exp}
for i = 4, #ARGV do
  local l = redis.pcall('HMGET', ARGV[i], 'holder', 'epoch', 'exp')
  if l.err then
    out[#out + 1] = 2
  elseif l[1] and l[1] ~= '' and l[1] ~= ARGV[1] and (tonumber(l[3]) or 0) > now then
    out[#out + 1] = lease(redis.call('HMGET', ARGV[i], 'holder', 'addr', 'epoch', 'acq', 'exp'))
  else
    local epoch = string.format('%d', (tonumber(l[2]) or 0) + 1)
    redis.call('HSET', ARGV[i], 'holder', ARGV[1], 'addr', ARGV[2], 'epoch', epoch, 'acq', acq, 'exp', exp)
    out[#out + 1] = epoch
  end
end
return out
`)

// renewAllScript is renewScript for many leases.
//
//	KEYS[1] routing only; ARGV ttl_ms, then per lease: key, holder, epoch.
//
// Returns {expires_ms, then per lease: 1 (renewed until expires_ms), the
// stored lease reply (status 0: fenced), or 2 (not served by this node)}.
// A renewed lease is the caller's with the new expiry: holder and epoch are
// what the check compared, and addr and acq change only with the epoch.
var renewAllScript = redis.NewScript(luaNow + `
local exp = string.format('%d', nowms() + tonumber(ARGV[1]))
local out = {exp}
for i = 2, #ARGV, 3 do
  local l = redis.pcall('HMGET', ARGV[i], 'holder', 'epoch')
  if l.err then
    out[#out + 1] = 2
  elseif l[1] ~= ARGV[i + 1] or l[2] ~= ARGV[i + 2] then
    out[#out + 1] = lease(redis.call('HMGET', ARGV[i], 'holder', 'addr', 'epoch', 'acq', 'exp'))
  else
    redis.call('HSET', ARGV[i], 'exp', exp)
    out[#out + 1] = 1
  end
end
return out
`)

// releaseAllScript is releaseScript for many leases.
//
//	KEYS[1] routing only; ARGV per lease: key, holder, epoch.
//
// Returns one status per lease: 1 (released), 0 (not current) or 2 (not
// served by this node).
var releaseAllScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV, 3 do
  local l = redis.pcall('HMGET', ARGV[i], 'holder', 'epoch')
  if l.err then
    out[#out + 1] = 2
  elseif l[1] ~= ARGV[i + 1] or l[2] ~= ARGV[i + 2] then
    out[#out + 1] = 0
  else
    redis.call('HDEL', ARGV[i], 'holder', 'addr', 'acq', 'exp')
    out[#out + 1] = 1
  end
end
return out
`)

// hotKeysAllScript reads many slots' hot sets and answers only for the
// ones that have keys: a space of 4,096 slots with data in a few of them
// costs one short reply, not 4,096 empty ones.
//
//	KEYS[1] routing only; ARGV n, then the hot-set keys.
//
// Returns {far, i, keys, j, keys, ...}: far lists the (1-based) positions
// of keys this node does not serve, then each non-empty set's position
// and its first n members, newest first.
var hotKeysAllScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local far, out = {}, {0}
for i = 2, #ARGV do
  local keys = redis.pcall('ZREVRANGE', ARGV[i], 0, n - 1)
  if keys.err then
    far[#far + 1] = i - 1
  elseif #keys > 0 then
    out[#out + 1] = i - 1
    out[#out + 1] = keys
  end
end
out[1] = far
return out
`)
