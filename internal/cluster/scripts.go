package cluster

import "github.com/redis/go-redis/v9"

// The Lua scripts run atomically on the Redis server. They use only plain
// string operations (no struct or cmsgpack), so miniredis runs them too.
// Redis 7 replicates script effects, so TIME inside a script is safe.

// claimScript returns a fresh enough entry, or takes the fetch claim of a
// key, or names the claim's holder:
//
//	KEYS: entry, lease, epoch
//	ARGV: token, lease ms, now, oldest acceptable fetch time
//	-> {1, entry} | {2, epoch} (claim taken) | {3, lease ms left}
//
// An entry is fresh enough when fetched at or after ARGV[4] and still fresh
// at ARGV[3]. The entry is a cache record (cache/codec.go): magic 'k' and
// version 1 in its first two bytes, fetched at and fresh until at the fixed
// offsets 8 and 16, each an int64 of Unix nanoseconds, big-endian. ARGV[3]
// and ARGV[4] are in the same form (8 bytes, see nanos), and cmp64 compares
// them byte by byte: exact to the nanosecond. (Lua's numbers are doubles,
// which hold today's Unix nanoseconds only to within 256 ns: reading the
// fields as numbers would make a replica take an entry fetched up to 128 ns
// before its forced refresh began as fresh enough, or the reverse.) Any
// other value (a foreign one, or too short) is no entry: the claim is taken,
// and the fill overwrites it. The script does not check the record's CRC:
// the replica does when it decodes, and takes the claim over (claimOver)
// when that fails.
var claimScript = redis.NewScript(`
-- cmp64 compares the int64 at byte i of a with the one that is b: -1, 0
-- or 1. Flipping the sign bit of the first byte orders two's complement
-- values as unsigned bytes.
local function cmp64(a, i, b)
  for k = 0, 7 do
    local x, y = string.byte(a, i + k), string.byte(b, 1 + k)
    if k == 0 then x, y = (x + 128) % 256, (y + 128) % 256 end
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end
local v = redis.call('GET', KEYS[1])
if v and string.len(v) >= 42 and string.byte(v, 1) == 107 and string.byte(v, 2) == 1 and
    string.len(ARGV[3]) == 8 and string.len(ARGV[4]) == 8 and
    cmp64(v, 9, ARGV[4]) >= 0 and cmp64(v, 17, ARGV[3]) > 0 then
  return {1, v}
end
local epoch = redis.call('GET', KEYS[3]) or '0'
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, epoch}
end
return {3, redis.call('PTTL', KEYS[2])}
`)

// fillScript ends a claim: it stores the value unless a purge moved the
// epoch since the claim (fencing: an answer fetched before a purge is
// never written back), releases the lease if it is still ours, and tells
// the waiters.
//
//	KEYS: value key, lease, epoch
//	ARGV: token, claim epoch, value ('' = none), px, channel, message, message if fenced
//	-> 1 stored (or nothing to store), 0 fenced
var fillScript = redis.NewScript(`
local ok = (redis.call('GET', KEYS[3]) or '0') == ARGV[2]
if ok and ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
if ok then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return 1
end
redis.call('PUBLISH', ARGV[5], ARGV[7])
return 0
`)

// renewScript extends a lease that is still ours.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// reserveScript is GCRA with reservation (x/time/rate's ReserveN
// semantics) on the server's clock, so replica clocks do not matter:
//
//	KEYS: theoretical arrival time (µs)
//	ARGV: µs per token, burst (tokens), longest wait µs
//	-> {1, wait µs} (token taken: send after wait) | {0, wait µs} (nothing taken)
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + interval
local wait = new - tonumber(ARGV[2]) * interval - now
if wait > tonumber(ARGV[3]) then
  return {0, wait}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
if wait < 0 then wait = 0 end
return {1, wait}
`)

// penaltyScript empties the bucket and pushes it d into the future (an
// upstream 429): the next reservation of any replica waits at least d.
//
//	KEYS: theoretical arrival time (µs)
//	ARGV: µs per token, burst, penalty µs
var penaltyScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[3]) + (tonumber(ARGV[2]) - 1) * tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < target then
  redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', math.ceil((target - now) / 1000) + 1000)
end
return 1
`)

// heartbeatScript records this replica as alive (or gone), forgets
// replicas silent for longer than the window, and reports how many are
// alive and the purge epoch:
//
//	KEYS: heartbeat sorted set, epoch
//	ARGV: replica id, window ms, '1' when leaving
//	-> {alive, epoch}
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
`)
