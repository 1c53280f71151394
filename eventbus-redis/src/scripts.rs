//! The Lua scripts. Each one is atomic on the server, names every key it
//! touches through `KEYS[1]` (and derives the others from the same hash tag),
//! so it runs on one hash slot of a cluster as on a single server.

use std::sync::LazyLock;

use redis::Script;

/// Claims a group's due retries: removes them from the retry zset and
/// `XCLAIM`s them to this consumer (bumping the delivery count), returning
/// `{stream, id, fields, delivery_count}` for each.
///
/// KEYS[1] = retry zset; ARGV = group, consumer, now_ms, limit.
pub(crate) static CLAIM_RETRIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local nl = string.find(m, '\n', 1, true)
  if nl then
    local stream = string.sub(m, 1, nl - 1)
    local id = string.sub(m, nl + 1)
    local ok, c = pcall(redis.call, 'XCLAIM', stream, ARGV[1], ARGV[2], 0, id)
    if ok and c[1] and c[1][2] then
      local p = redis.call('XPENDING', stream, ARGV[1], id, id, 1)
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = {stream, c[1][1], c[1][2], n}
    end
  end
end
return out
"#,
    )
});

/// The server's clock in ms, for scripts that compare liveness deadlines
/// (one clock for every consumer, however far their hosts' clocks drift).
const NOW_MS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Shows that a consumer is alive: sets its deadline in the group's liveness
/// zset to now + `ttl_ms` (server time), drops members dead for over an
/// hour (whatever they still own is then taken over by idle time), and
/// returns how many other members are dead (deadline passed): then the
/// consumer looks for their entries.
///
/// KEYS[1] = liveness zset; ARGV = consumer, ttl_ms.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}{}",
        r#"
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - 3600000))
return redis.call('ZCOUNT', KEYS[1], '-inf', now)
"#
    ))
});

/// Marks a consumer dead now (its process is dropping it): the group's
/// other consumers take over what it still owns at their next look, without
/// waiting for its deadline. A consumer not in the zset stays out of it.
///
/// KEYS[1] = liveness zset; ARGV = consumer.
pub(crate) static MARK_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}{}",
        r#"
return redis.call('ZADD', KEYS[1], 'XX', now_ms(), ARGV[1])
"#
    ))
});

/// Takes over up to `limit` entries pending on consumers whose liveness
/// deadline has passed (dead: killed, crashed, cut off), however short their
/// idle time, skipping entries that wait for a scheduled retry (those come
/// back through the retry zset). A dead consumer left owning nothing this
/// scan can take is removed from the zset. Atomic: two survivors never take
/// the same entry, and a consumer that is alive is never touched.
///
/// KEYS[1] = liveness zset, KEYS[2] = retry zset, KEYS[3..] = the streams
/// this consumer reads; ARGV = group, consumer, limit.
/// Returns `{more (0/1), {{stream index (1 = KEYS[3]), id, fields,
/// delivery_count, dead consumer}, ...}}`; `more` when the limit stopped it.
pub(crate) static RECLAIM_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}{}",
        r#"
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, 50)
local limit = tonumber(ARGV[3])
local out = {}
local more = false
for _, d in ipairs(dead) do
  if d ~= ARGV[2] then
    for i = 3, #KEYS do
      local start = '-'
      while not more do
        local ok, pend = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[1], start, '+', 100, d)
        if not ok or #pend == 0 then break end
        for _, p in ipairs(pend) do
          if not redis.call('ZSCORE', KEYS[2], KEYS[i] .. '\n' .. p[1]) then
            if #out >= limit then
              more = true
              break
            end
            local c = redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, p[1])
            if c[1] and c[1][2] then
              out[#out + 1] = {i - 2, c[1][1], c[1][2], p[4] + 1, d}
            end
          end
        end
        if #pend < 100 then break end
        start = '(' .. pend[#pend][1]
      end
      if more then break end
    end
    if more then break end
    redis.call('ZREM', KEYS[1], d)
  end
end
return {more and 1 or 0, out}
"#
    ))
});

/// Reclaims up to `limit` entries pending for longer than `min_idle` on
/// other consumers that do not show they are alive (the fallback for
/// consumers without heartbeats, e.g. of older versions, and for dead ones),
/// skipping entries that wait for a scheduled retry. A consumer whose
/// liveness deadline has not passed keeps its entries however long its
/// handler runs. Pages through the pending list (`count` at a time)
/// with a cursor. The limit keeps a consumer from taking more than it is
/// about to hand out: an entry claimed and left waiting in its buffer would
/// look dead again to the other consumers, and each takeover counts as a
/// delivery.
///
/// KEYS[1] = stream, KEYS[2] = retry zset, KEYS[3] = liveness zset;
/// ARGV = group, consumer, min_idle_ms, start (`-` or `(id`), count, limit.
/// Returns `{next_start, {{id, fields, delivery_count}, ...}}`; `next_start`
/// is `-` when the scan reached the end.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}{}",
        r#"
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local limit = tonumber(ARGV[6])
local now = now_ms()
local alive = {}
local function is_alive(c)
  if alive[c] == nil then
    local ok, s = pcall(redis.call, 'ZSCORE', KEYS[3], c)
    alive[c] = (ok and s and tonumber(s) > now) or false
  end
  return alive[c]
end
local out = {}
local last = nil
local full = false
for _, p in ipairs(pend) do
  if #out >= limit then
    full = true
    break
  end
  last = p[1]
  if p[2] ~= ARGV[2] and not is_alive(p[2]) and not redis.call('ZSCORE', KEYS[2], KEYS[1] .. '\n' .. p[1]) then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1])
    if c[1] and c[1][2] then
      out[#out + 1] = {c[1][1], c[1][2], p[4] + 1}
    end
  end
end
local nxt = '-'
if (full or #pend == tonumber(ARGV[5])) and last then nxt = '(' .. last end
return {nxt, out}
"#
    ))
});

/// Adds an entry to the dead-letter stream and, for Streams entries, acks it
/// (and drops a scheduled retry of it) in the same atomic step. Replayed
/// entries are also deleted from their replay stream.
///
/// KEYS[1] = dlq, KEYS[2] = source stream (or the dlq again for pub/sub),
/// KEYS[3] = retry zset (or the dlq again);
/// ARGV = group, entry id, type, payload, handler, attempts, error, time,
/// ack (`1`/`0`), delete (`1`/`0`), source name, CloudEvents id (or empty).
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local dlq_id = redis.call('XADD', KEYS[1], '*', 'type', ARGV[3], 'id', ARGV[2], 'event_id', ARGV[12], 'stream', ARGV[11], 'group', ARGV[1], 'handler', ARGV[5], 'attempts', ARGV[6], 'error', ARGV[7], 'time', ARGV[8], 'payload', ARGV[4])
if ARGV[9] == '1' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[3], KEYS[2] .. '\n' .. ARGV[2])
end
if ARGV[10] == '1' then
  redis.call('XDEL', KEYS[2], ARGV[2])
end
return dlq_id
"#,
    )
});

/// Moves one dead letter to the replay stream of its group (creating the
/// group there if needed) and deletes it from the DLQ.
///
/// KEYS[1] = dlq; ARGV = dlq id, key base (`{eventbus}`).
/// Returns the group, or false when the id is not in the DLQ.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return false end
local f = e[1][2]
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
if not h['group'] or not h['type'] or not h['payload'] then return false end
local key = ARGV[2] .. ':replay:' .. h['group']
redis.pcall('XGROUP', 'CREATE', key, h['group'], '0', 'MKSTREAM')
redis.call('XADD', key, '*', 'type', h['type'], 'cloud_event', h['payload'], 'id', h['id'] or '', 'dlq_id', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return h['group']
"#,
    )
});

/// Moves due scheduled events to their stream (`XADD`) or channel
/// (`PUBLISH`) and removes them from the schedule, atomically, so any number
/// of instances can run it: each event is moved exactly once.
///
/// A member is length-prefixed parts `<n>:<bytes>`: uid, kind (`x` stream /
/// `p` channel), target, then field/value pairs (`x`) or the payload (`p`).
///
/// KEYS[1] = schedule zset; ARGV = now_ms, limit.
/// Returns `{moved, next_due_ms or false}`.
pub(crate) static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function parts(m)
  local out = {}
  local pos = 1
  while pos <= #m do
    local c = string.find(m, ':', pos, true)
    if not c then return nil end
    local n = tonumber(string.sub(m, pos, c - 1))
    if not n then return nil end
    out[#out + 1] = string.sub(m, c + 1, c + n)
    pos = c + n + 1
  end
  return out
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, m in ipairs(due) do
  local p = parts(m)
  if p and p[2] == 'x' and #p >= 5 then
    local args = {p[3], '*'}
    for i = 4, #p do args[#args + 1] = p[i] end
    redis.call('XADD', unpack(args))
    moved = moved + 1
  elseif p and p[2] == 'p' and #p >= 4 then
    redis.call('PUBLISH', p[3], p[4])
    moved = moved + 1
  else
    redis.log(redis.LOG_WARNING, 'eventbus: dropping malformed schedule member')
  end
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then return {moved, nxt[2]} end
return {moved, false}
"#,
    )
});

/// Claims one tick of a recurring schedule: succeeds only for a tick later
/// than the last one claimed, so each tick fires once across instances and a
/// late instance cannot fire an old tick again.
///
/// KEYS[1] = tick key; ARGV = tick_ms. Returns 1 or 0.
pub(crate) static CLAIM_TICK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// Trims a stream to about `maxlen` entries, but never past an entry that a
/// consumer group has not read yet or has read and not acked.
///
/// Records the id of the last entry trimmed in the hash KEYS[2] (for the
/// pull feed, which tells a reader whose cursor fell into the trimmed part).
///
/// KEYS[1] = stream, KEYS[2] = the trimmed-ids hash; ARGV = maxlen.
/// Returns `{length before, entries trimmed, group that held trimming back or ''}`.
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local len = redis.call('XLEN', KEYS[1])
local maxlen = tonumber(ARGV[1])
if len <= maxlen then return {len, 0, ''} end
local function parse(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen + 1)
local limit = r[#r][1]
local blocker = ''
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local name, pending, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end
  end
  local keep = ld
  if pending and pending > 0 then
    local s = redis.call('XPENDING', KEYS[1], name)
    if s[2] and less(s[2], keep) then keep = s[2] end
  end
  if less(keep, limit) then
    limit = keep
    blocker = name
  end
end
if limit ~= '0-0' then
  local last = redis.call('XREVRANGE', KEYS[1], '(' .. limit, '-', 'COUNT', 1)
  if #last > 0 then redis.call('HSET', KEYS[2], KEYS[1], last[1][1]) end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', limit)
return {len, trimmed, blocker}
"#,
    )
});

/// Hands back every entry pending on one consumer of a stream (a consumer
/// that is shutting down): each goes to the group's retry zset as due at
/// once (score 0), unless a retry of it is scheduled already (that one
/// keeps its time), so a consumer of the group takes it at its next retry
/// poll, whether or not this one is still alive. The delivery count is not
/// bumped by the handback itself (the taker's `XCLAIM` bumps it).
///
/// KEYS[1] = stream, KEYS[2] = retry zset; ARGV = group, consumer.
/// Returns the count.
pub(crate) static RELEASE_OWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local start = '-'
while true do
  local pend = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 1000, ARGV[2])
  if #pend == 0 then break end
  for _, p in ipairs(pend) do
    redis.call('ZADD', KEYS[2], 'NX', 0, KEYS[1] .. '\n' .. p[1])
  end
  n = n + #pend
  if #pend < 1000 then break end
  start = '(' .. pend[#pend][1]
end
return n
"#,
    )
});

/// The backlog of one group on one stream, for `Transport::group_stats`.
///
/// KEYS[1] = stream; ARGV[1] = group. Returns `{lag, pending, age of the
/// oldest unsettled entry in ms}` (`-1` for a lag Redis cannot tell), or
/// `{0, 0, 0}` when the stream or the group does not exist.
pub(crate) static GROUP_STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return {0, 0, 0} end
local function ms(id)
  return tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1))
end
for _, g in ipairs(groups) do
  local name, pending, lag, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'lag' then lag = g[i + 1]
    elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end
  end
  if name == ARGV[1] then
    if not lag then lag = -1 end
    local oldest
    if pending and pending > 0 then
      oldest = redis.call('XPENDING', KEYS[1], name)[2]
    elseif lag ~= 0 then
      local next = redis.call('XRANGE', KEYS[1], '(' .. ld, '+', 'COUNT', 1)
      if #next > 0 then oldest = next[1][1] end
    end
    local age = 0
    if oldest then
      local t = redis.call('TIME')
      age = math.max(0, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ms(oldest))
    end
    return {lag, pending or 0, age}
  end
end
return {0, 0, 0}
"#,
    )
});
