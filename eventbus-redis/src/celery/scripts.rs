//! The Lua scripts of the Celery transport: each keeps kombu's Redis layout
//! (the queue lists, the `unacked` hash of `[message, exchange,
//! routing_key]` by delivery tag, the `unacked_index` zset of delivery
//! times) consistent in one atomic step, so that a Python worker's
//! `restore_visible` and ours see the same state whatever dies when.

use std::sync::LazyLock;

use redis::Script;

/// Registers one popped message as unacknowledged (kombu's `QoS.append`).
const TAKE: &str = r#"
-- kombu's and eventbus's messages end with `"properties": {...,
-- "delivery_info": {"exchange": "...", "routing_key": "..."}, ...,
-- "delivery_tag": "..."}`: read those from the last 512 bytes; anything
-- else (other order, escapes, not JSON) takes the full decode below.
local function take(m, q, now, out)
  local tag, ex, rk
  local p = string.find(m, '"delivery_info"', math.max(1, #m - 512), true)
  if p then
    ex, rk = string.match(m, '^"delivery_info"%s*:%s*{%s*"exchange"%s*:%s*"([^"\\]*)"%s*,%s*"routing_key"%s*:%s*"([^"\\]*)"%s*}', p)
    local d = string.find(m, '"delivery_tag"', p, true)
    if d then tag = string.match(m, '^"delivery_tag"%s*:%s*"([^"\\]*)"%s*}%s*}%s*$', d) end
  end
  local entry
  if tag and tag ~= '' and ex and rk then
    entry = '[' .. m .. ',"' .. ex .. '","' .. rk .. '"]'
  else
    tag, ex, rk = nil, nil, nil
    local ok, msg = pcall(cjson.decode, m)
    if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
      local p = msg.properties
      if type(p.delivery_tag) == 'string' and p.delivery_tag ~= '' then tag = p.delivery_tag end
      local di = p.delivery_info
      if type(di) == 'table' then
        if type(di.exchange) == 'string' then ex = di.exchange end
        if type(di.routing_key) == 'string' then rk = di.routing_key end
      end
    end
    if not tag then tag = 'eventbus-' .. redis.sha1hex(m) end
    if ok and type(msg) == 'table' then
      entry = '[' .. m .. ',' .. cjson.encode(ex or '') .. ',' .. cjson.encode(rk or q) .. ']'
    else
      -- Not JSON: kept as a JSON string, so that the hash stays readable.
      entry = cjson.encode({m, ex or '', rk or q})
    end
  end
  redis.call('ZADD', KEYS[2], now, tag)
  redis.call('HSET', KEYS[1], tag, entry)
  out[#out + 1] = tag
  out[#out + 1] = m
end
"#;

/// Pops up to `max` messages: first what a blocking `BLMOVE` left in this
/// reader's hand-off list, then the queue's lists in priority order; each
/// is registered as unacknowledged in the same step, so none is ever
/// outside both the queue and the `unacked` hash.
///
/// KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3] = hand-off list,
/// KEYS[4..] = the queue's lists (priority 0 first); ARGV = now (seconds), max.
/// Returns `tag, message, tag, message, ...`.
pub(crate) static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{TAKE}{}",
        r#"
local max = tonumber(ARGV[2])
local now = ARGV[1]
local out = {}
local n = 0
while n < max do
  local m = redis.call('RPOP', KEYS[3])
  if not m then break end
  take(m, KEYS[4], now, out)
  n = n + 1
end
for i = 4, #KEYS do
  while n < max do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    take(m, KEYS[i], now, out)
    n = n + 1
  end
end
return out
"#
    ))
});

/// Puts an unacknowledged message back on its queue (kombu's
/// `restore_by_tag`): removes it from both indices, marks it `redelivered`,
/// and pushes it where kombu would (the exchange's binding table, or the
/// routing key for the default exchange; the list of its priority), at the
/// consuming end (`RPUSH`) unless `leftmost`.
///
/// KEYS[1] = unacked, KEYS[2] = unacked_index; ARGV = tag, leftmost (0/1),
/// global key prefix. Returns 1 if it was restored, 0 if it was not there.
pub(crate) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if not p then return 0 end
local ok, e = pcall(cjson.decode, p)
if not ok or type(e) ~= 'table' then return 0 end
local m, ex, rk = e[1], e[2] or '', e[3] or ''
if type(ex) ~= 'string' then ex = '' end
if type(rk) ~= 'string' then rk = '' end
local queues = {}
if ex == '' then
  queues[1] = rk
else
  local sep = string.char(6, 22)
  for _, member in ipairs(redis.call('SMEMBERS', ARGV[3] .. '_kombu.binding.' .. ex)) do
    local a = string.find(member, sep, 1, true)
    if a then
      local b = string.find(member, sep, a + 2, true)
      if b and string.sub(member, 1, a - 1) == rk then
        queues[#queues + 1] = string.sub(member, b + 2)
      end
    end
  end
  if #queues == 0 then queues[1] = rk end
end
local payload, pri = m, 0
if type(m) == 'table' then
  if type(m.headers) == 'table' then m.headers.redelivered = true end
  if type(m.properties) == 'table' then
    if type(m.properties.delivery_info) == 'table' then
      m.properties.delivery_info.redelivered = true
    end
    pri = tonumber(m.properties.priority) or 0
  end
  payload = cjson.encode(m)
end
local step = 0
for _, s in ipairs({0, 3, 6, 9}) do if pri >= s then step = s end end
for _, q in ipairs(queues) do
  local key = ARGV[3] .. q
  if step > 0 then key = key .. string.char(6, 22) .. step end
  if ARGV[2] == '1' then
    redis.call('LPUSH', key, payload)
  else
    redis.call('RPUSH', key, payload)
  end
end
return 1
"#,
    )
});

/// Replaces an unacknowledged message by its next run (Celery's
/// `Task.retry`): pushes `message` on the queue and forgets the tag, only
/// if the tag is still unacknowledged (not restored meanwhile).
///
/// KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3] = queue list;
/// ARGV = tag, message. Returns 1, or 0 when the tag was gone.
pub(crate) static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
"#,
    )
});

/// Moves an unacknowledged message to the dead-letter stream, only if the
/// tag is still unacknowledged.
///
/// KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3] = DLQ stream;
/// ARGV = tag, then field, value pairs. Returns the entry id, or false.
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', unpack(fields))
"#,
    )
});

/// Gives back what dead readers left in their hand-off lists: each
/// hand-off whose deadline (ms, server time) passed is moved, in order,
/// back to the consuming end of its queue, and forgotten.
///
/// KEYS[1] = the hand-offs hash (hand-off key -> "deadline_ms queue_key").
/// Returns how many messages were given back.
pub(crate) static SWEEP_HANDOFFS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local moved = 0
for i = 1, #all, 2 do
  local h, v = all[i], all[i + 1]
  local sp = string.find(v, ' ', 1, true)
  if sp and tonumber(string.sub(v, 1, sp - 1)) < now then
    local q = string.sub(v, sp + 1)
    while redis.call('LMOVE', h, q, 'RIGHT', 'RIGHT') do moved = moved + 1 end
    redis.call('HDEL', KEYS[1], h)
  end
end
return moved
"#,
    )
});

/// Keeps this reader's hand-off alive: deadline = server time + ttl_ms.
///
/// KEYS[1] = the hand-offs hash; ARGV = hand-off key, queue key, ttl_ms.
pub(crate) static HANDOFF_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
return 1
"#,
    )
});

/// Releases kombu's `unacked_mutex` if this caller still holds it.
///
/// KEYS[1] = mutex; ARGV = token.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});
