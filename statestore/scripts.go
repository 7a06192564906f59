package statestore

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only code that writes leases and records.
// Each touches the keys of one slot only (one hash tag), so it runs
// atomically on one Redis Cluster node.
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

// acquireScript: KEYS[1] lease; ARGV holder, addr, ttl_ms.
var acquireScript = redis.NewScript(luaNow + `
local l = redis.call('HMGET', KEYS[1], 'holder', 'addr', 'epoch', 'acq', 'exp')
local now = nowms()
-- A live lease of another holder wins; the caller learns who holds it so it
-- can ask for a handoff or answer 421.
if l[1] and l[1] ~= '' and l[1] ~= ARGV[1] and (tonumber(l[5]) or 0) > now then
  return lease(l)
end
-- Free, expired or our own: always a new epoch, so everything written under
-- the previous one (by a crashed holder, or by our own earlier incarnation)
-- is fenced from now on.
local epoch = string.format('%d', (tonumber(l[3]) or 0) + 1)
local acq = string.format('%d', now)
local exp = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'addr', ARGV[2], 'epoch', epoch, 'acq', acq, 'exp', exp)
return {1, ARGV[1], ARGV[2], epoch, acq, exp}
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
