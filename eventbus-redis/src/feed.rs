//! The Streams log read by position: eventbus-core's [`Feed`] for the HTTP
//! pull feed, without a consumer group or anything else per reader.
//!
//! A cursor is the stream entry id of the last event handed out and the
//! type (stream) it came from: `1733050000000-3~review_created` (a type
//! outside `[A-Za-z0-9._-]` is written as `x` and its hex). Several streams
//! are merged in `(entry id, type)` order. One pipeline reads the server
//! clock (`TIME`, in a script routed by key), then the streams (`XRANGE`),
//! then what was removed from them; an entry of the clock's millisecond is
//! held back until the millisecond is over, so that an entry written later
//! to another stream can never sort before a cursor already handed out
//! (stream ids are the server's clock, one sequence per stream).
//! A plain entry id (`1733050000000-3`) is accepted too, exclusive in every
//! stream. With the `django` layout the one stream is read and filtered by
//! its `event_type` field.
//!
//! Retention: when `maxlen` trimming (recorded in `{P}:trimmed`) or `XDEL`
//! (the stream's `max-deleted-entry-id`, Redis 7+) removed an entry after
//! the cursor, the read fails with [`FeedError::Expired`] and the earliest
//! cursor without a gap.
//!
//! Long polling blocks in `XREAD BLOCK` on a connection of its own (kept in
//! a small pool), and wakes as soon as an entry is added.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventbus_core::feed::{Cursor, Feed, FeedEntry, FeedError, FeedPage};
use eventbus_core::transport::{EventType, Topics};
use futures::future::BoxFuture;
use redis::Value;

use crate::client::{Client, source_of};
use crate::conn::Conn;
use crate::streams::{bulk_string, entries_of, for_each_field};
use crate::{Error, Layout, codec};

/// The server's clock, on the node of the stream key given (a cluster
/// routes a script by its keys; every key of one prefix is in one slot).
const CLOCK: &str = "return redis.call('TIME')";

/// The last id removed from each stream key: by `maxlen` trimming (the hash
/// of trimmed ids, the last key) or `XDEL` (`max-deleted-entry-id`); false
/// where none was.
const REMOVED: &str = r#"
local out = {}
local n = #KEYS - 1
local function later(a, b)
  if not a then return b end
  if not b then return a end
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am > bm or (am == bm and as > bs) then return a end
  return b
end
for i = 1, n do
  local key = KEYS[i]
  local deleted = false
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' and info[j + 1] ~= '0-0' then deleted = info[j + 1] end
    end
    deleted = later(deleted, redis.call('HGET', KEYS[#KEYS], key))
  end
  out[i] = deleted
end
return out
"#;

/// How long discovered streams of a feed of every type are reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(1);

/// The longest single `XREAD BLOCK` of a feed of every type: streams that
/// appear meanwhile are found by the read after it.
const ALL_TYPES_BLOCK: Duration = Duration::from_secs(1);

/// The feed of a Streams client. See [the module docs](self).
pub(crate) struct StreamFeed {
    client: Client,
    /// Idle connections for blocking reads.
    blocking: parking_lot::Mutex<Vec<Conn>>,
    /// Streams of every type, and when they were found.
    discovered: parking_lot::Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl std::fmt::Debug for StreamFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFeed").finish_non_exhaustive()
    }
}

/// An entry id: milliseconds and sequence.
type Id = (u64, u64);

fn parse_id(text: &str) -> Option<Id> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A decoded cursor: an entry id and the type it was read from (`None`:
/// exclusive in every stream).
struct Position {
    id: Id,
    ty: Option<String>,
}

impl Position {
    fn parse(cursor: &Cursor) -> Result<Self, FeedError> {
        let text = cursor.as_str();
        let bad = || {
            FeedError::InvalidCursor(format!(
                "`{}` is not a cursor of this feed (Redis Streams cursors look like `1733050000000-0~review_created`)",
                eventbus_core::escape::Escaped(text)
            ))
        };
        let (id, ty) = match text.split_once('~') {
            Some((id, ty)) => (id, Some(decode_type(ty).ok_or_else(bad)?)),
            None => (text, None),
        };
        Ok(Self {
            id: parse_id(id).ok_or_else(bad)?,
            ty,
        })
    }

    /// Whether the entry `(id, ty)` comes after this position.
    fn before(&self, id: Id, ty: &str) -> bool {
        match &self.ty {
            Some(t) => (id, ty) > (self.id, t.as_str()),
            None => id > self.id,
        }
    }

    /// The `XRANGE` start of stream `ty`: inclusive where a tie with the
    /// cursor's id comes after it, exclusive otherwise.
    fn start(&self, ty: &str) -> String {
        let (ms, seq) = self.id;
        match &self.ty {
            Some(t) if ty > t.as_str() => format!("{ms}-{seq}"),
            _ => format!("({ms}-{seq}"),
        }
    }

    /// The `XREAD` id of stream `ty`: entries after it are after the cursor.
    fn read_after(&self, ty: &str) -> String {
        let (ms, seq) = self.id;
        match &self.ty {
            Some(t) if ty > t.as_str() => match (ms, seq) {
                (0, 0) => "0-0".to_owned(),
                (ms, 0) => format!("{}-{}", ms - 1, u64::MAX),
                (ms, seq) => format!("{ms}-{}", seq - 1),
            },
            _ => format!("{ms}-{seq}"),
        }
    }
}

fn safe_type(ty: &str) -> bool {
    !ty.is_empty()
        && !ty.starts_with('x')
        && ty
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn encode_cursor(id: Id, ty: Option<&str>) -> Cursor {
    let (ms, seq) = id;
    match ty {
        None => Cursor::new(format!("{ms}-{seq}")),
        Some(ty) if safe_type(ty) => Cursor::new(format!("{ms}-{seq}~{ty}")),
        Some(ty) => {
            let hex: String = ty.bytes().map(|b| format!("{b:02x}")).collect();
            Cursor::new(format!("{ms}-{seq}~x{hex}"))
        }
    }
}

fn decode_type(text: &str) -> Option<String> {
    match text.strip_prefix('x') {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        }
        None => safe_type(text).then(|| text.to_owned()),
    }
}

/// Where the entries of one read come from.
enum Source {
    /// Per-type streams: `(type, key)`, sorted by type.
    PerType(Vec<(String, String)>),
    /// The django layout's one stream, filtered by `event_type`.
    Django(String),
}

impl StreamFeed {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            blocking: parking_lot::Mutex::new(Vec::new()),
            discovered: parking_lot::Mutex::new(None),
        }
    }

    async fn source(&self, topics: &Topics) -> Result<Source, FeedError> {
        let keys = self.client.keys();
        if let Layout::Django { stream } = self.client.config().layout() {
            return Ok(Source::Django(stream.clone()));
        }
        let mut streams: Vec<(String, String)> = match topics {
            Topics::Types(types) => types.iter().map(|t| (t.clone(), keys.stream(t))).collect(),
            Topics::All => {
                let cached = self
                    .discovered
                    .lock()
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
                    .map(|(_, s)| s.clone());
                let found = match cached {
                    Some(found) => found,
                    None => {
                        let found = Arc::new(
                            crate::streams::all_streams(&self.client)
                                .await
                                .map_err(eventbus_core::Error::from)?,
                        );
                        *self.discovered.lock() = Some((Instant::now(), found.clone()));
                        found
                    }
                };
                found
                    .iter()
                    .filter_map(|k| Some((keys.type_of_stream(k)?.to_owned(), k.clone())))
                    .collect()
            }
        };
        streams.sort();
        streams.dedup();
        Ok(Source::PerType(streams))
    }

    async fn read_page(
        &self,
        after: Option<&Cursor>,
        topics: &Topics,
        limit: usize,
    ) -> Result<FeedPage, FeedError> {
        let pos = after.map(Position::parse).transpose()?;
        let limit = limit.max(1);
        let source = self.source(topics).await?;
        let (names, keys): (Vec<Option<&str>>, Vec<&str>) = match &source {
            Source::PerType(streams) => streams
                .iter()
                .map(|(t, k)| (Some(t.as_str()), k.as_str()))
                .unzip(),
            Source::Django(key) => (vec![None], vec![key.as_str()]),
        };
        if keys.is_empty() {
            return Ok(FeedPage {
                entries: Vec::new(),
                next: after.cloned(),
            });
        }
        // The django stream holds other types too: read further to fill a page.
        let count = match &source {
            Source::Django(_) if *topics != Topics::All => limit.saturating_mul(10).min(10_000),
            _ => limit,
        };
        // Only a merge of several streams can tie within a millisecond.
        let merging = match &source {
            Source::PerType(s) => s.len() > 1 || *topics == Topics::All,
            Source::Django(_) => false,
        };
        // One round trip, in this order: the clock before the reads (what
        // is served is older than any entry written after them), the
        // removal marks after them (a trim during the read is seen). The
        // entries come from plain XRANGEs: returning them through a script
        // cost Redis ~5 µs an entry.
        let mut pipe = redis::pipe();
        if merging {
            pipe.cmd("EVAL").arg(CLOCK).arg(1).arg(keys[0]);
        }
        for (name, key) in names.iter().zip(&keys) {
            let start = match (&pos, name) {
                (None, _) => "-".to_owned(),
                (Some(p), Some(ty)) => p.start(ty),
                (Some(p), None) => format!("({}-{}", p.id.0, p.id.1),
            };
            pipe.cmd("XRANGE")
                .arg(*key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count);
        }
        if pos.is_some() {
            pipe.cmd("EVAL")
                .arg(REMOVED)
                .arg(keys.len() + 1)
                .arg(&keys)
                .arg(self.client.keys().trimmed());
        }
        let mut replies: std::collections::VecDeque<Value> = self
            .client
            .run_pipe::<Vec<Value>>("feed read", &pipe)
            .await
            .map_err(eventbus_core::Error::from)?
            .into();
        let horizon = if merging {
            let Some(Value::Array(mut time)) = replies.pop_front() else {
                return Err(bad_reply());
            };
            if time.len() != 2 {
                return Err(bad_reply());
            }
            let micros: u64 = bulk_string(time.pop().expect("len 2"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad_reply)?;
            let secs: u64 = bulk_string(time.pop().expect("len 2"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad_reply)?;
            Some(secs * 1000 + micros / 1000)
        } else {
            None
        };
        let removed: Vec<Option<Id>> = if pos.is_some() {
            match replies.pop_back() {
                Some(Value::Array(marks)) if marks.len() == keys.len() => marks
                    .into_iter()
                    .map(|m| bulk_string(m).and_then(|s| parse_id(&s)))
                    .collect(),
                _ => return Err(bad_reply()),
            }
        } else {
            vec![None; keys.len()]
        };
        if replies.len() != keys.len() {
            return Err(bad_reply());
        }

        let mut merged: Vec<(Id, Option<EventType>, Bytes)> = Vec::new();
        // The django stream: how far it was read (entries of other types included).
        let mut scanned: Option<Id> = None;
        let mut expired: Option<Id> = None;
        for (((part, name), key), deleted) in
            replies.into_iter().zip(&names).zip(&keys).zip(removed)
        {
            let entries = entries_of(part);
            if let (Some(p), Some(d)) = (&pos, deleted)
                && p.before(d, name.unwrap_or(""))
            {
                expired = Some(expired.map_or(d, |e: Id| e.max(d)));
            }
            let ty: Option<EventType> = name.map(|n| EventType::from(n.to_owned()));
            for (raw_id, fields) in entries {
                let Some(id) = std::str::from_utf8(&raw_id).ok().and_then(parse_id) else {
                    continue;
                };
                if horizon.is_some_and(|h| id.0 >= h) {
                    break;
                }
                scanned = Some(id);
                let (payload, event_type) = payload_of(fields, ty.as_ref(), key, id);
                if name.is_none() && !event_type.as_deref().is_some_and(|t| topics.contains(t)) {
                    continue;
                }
                merged.push((id, event_type.or_else(|| ty.clone()), payload));
            }
        }
        if let (Some(p), Some(earliest)) = (after, expired) {
            return Err(FeedError::Expired {
                cursor: p.clone(),
                earliest: encode_cursor(earliest, None),
            });
        }
        merged.sort_by(|a, b| {
            (a.0, a.1.as_deref().unwrap_or("")).cmp(&(b.0, b.1.as_deref().unwrap_or("")))
        });
        merged.truncate(limit);
        let django = matches!(source, Source::Django(_));
        let entries: Vec<FeedEntry> = merged
            .into_iter()
            .map(|(id, ty, payload)| FeedEntry {
                cursor: if django {
                    encode_cursor(id, None)
                } else {
                    encode_cursor(id, ty.as_deref())
                },
                event_type: ty.unwrap_or_else(|| EventType::from_static("")),
                payload,
            })
            .collect();
        let next = match (entries.last(), django, scanned) {
            // Past the other types' entries the page skipped.
            (_, true, Some(id)) if entries.len() < limit => Some(encode_cursor(id, None)),
            (Some(last), _, _) => Some(last.cursor.clone()),
            (None, _, _) => after.cloned(),
        };
        Ok(FeedPage { entries, next })
    }

    async fn wait_for(
        &self,
        after: Option<&Cursor>,
        topics: &Topics,
        timeout: Duration,
    ) -> Result<(), FeedError> {
        let pos = after.map(Position::parse).transpose()?;
        let source = self.source(topics).await?;
        let (names, keys): (Vec<Option<&str>>, Vec<&str>) = match &source {
            Source::PerType(streams) => streams
                .iter()
                .map(|(t, k)| (Some(t.as_str()), k.as_str()))
                .unzip(),
            Source::Django(key) => (vec![None], vec![key.as_str()]),
        };
        let block = match topics {
            Topics::All => timeout.min(ALL_TYPES_BLOCK),
            Topics::Types(_) => timeout,
        };
        if keys.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&keys);
        for name in &names {
            cmd.arg(match (&pos, name) {
                (None, _) => "0-0".to_owned(),
                (Some(p), Some(ty)) => p.read_after(ty),
                (Some(p), None) => format!("{}-{}", p.id.0, p.id.1),
            });
        }
        let mut lease = self.blocking_conn(block).await?;
        let reply: Result<Value, redis::RedisError> = cmd
            .query_async(lease.conn.as_mut().expect("held until dropped"))
            .await;
        match reply {
            Ok(_) => {
                lease.done = true;
                Ok(())
            }
            Err(e) => Err(FeedError::Transport(Error::redis("XREAD", e).into())),
        }
    }

    /// A connection for one blocking read of up to `block`.
    async fn blocking_conn(&self, block: Duration) -> Result<Lease<'_>, FeedError> {
        let pooled = self.blocking.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let timeout = block + self.client.options().response_timeout;
                self.client
                    .inner
                    .connector
                    .connect(timeout.max(ALL_TYPES_BLOCK * 61))
                    .await
                    .map_err(eventbus_core::Error::from)?
            }
        };
        Ok(Lease {
            feed: self,
            conn: Some(conn),
            done: false,
        })
    }
}

/// A blocking connection in use: back to the pool once its read completed,
/// dropped with the read (a cancelled request) otherwise.
struct Lease<'a> {
    feed: &'a StreamFeed,
    conn: Option<Conn>,
    done: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.done
            && let Some(conn) = self.conn.take()
        {
            let mut pool = self.feed.blocking.lock();
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
    }
}

fn bad_reply() -> FeedError {
    FeedError::Transport(eventbus_core::Error::Transport {
        transport: "redis-streams",
        message: "unexpected reply to the feed read script".to_owned(),
        source: None,
    })
}

/// The structured CloudEvent an entry holds, and its `event_type` field
/// (the django layout's).
fn payload_of(
    fields: Value,
    ty: Option<&EventType>,
    key: &str,
    entry_id: Id,
) -> (Bytes, Option<EventType>) {
    let mut cloud_event = None;
    let mut data = None;
    let mut event_type = None;
    for_each_field(fields, |name, value| match name {
        b"cloud_event" => cloud_event = Some(value),
        b"data" => data = Some(value),
        b"event_type" if ty.is_none() => {
            event_type = Some(EventType::from(
                String::from_utf8_lossy(&value).into_owned(),
            ))
        }
        _ => {}
    });
    let ty_name = ty
        .map(|t| t.as_str().to_owned())
        .or_else(|| event_type.as_ref().map(|t| t.as_str().to_owned()))
        .unwrap_or_default();
    let payload = match (cloud_event, data) {
        (Some(ce), _) => Bytes::from(ce),
        // The id and time the consumers give the entry too.
        (None, Some(d)) => {
            match codec::entry_event_id(key, &format!("{}-{}", entry_id.0, entry_id.1)) {
                Some((id, time)) => {
                    codec::wrap_legacy_as(&ty_name, &source_of(&ty_name), &d, id, time)
                }
                None => codec::wrap_legacy(&ty_name, &source_of(&ty_name), &d),
            }
            .unwrap_or_else(|| Bytes::from(d))
        }
        (None, None) => Bytes::new(),
    };
    (payload, event_type)
}

impl Feed for StreamFeed {
    fn read<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        limit: usize,
    ) -> BoxFuture<'a, Result<FeedPage, FeedError>> {
        Box::pin(self.read_page(after, topics, limit))
    }

    fn wait<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), FeedError>> {
        Box::pin(self.wait_for(after, topics, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor((1733050000000, 3), Some("review_created"));
        assert_eq!(c.as_str(), "1733050000000-3~review_created");
        let p = Position::parse(&c).unwrap();
        assert_eq!(p.id, (1733050000000, 3));
        assert_eq!(p.ty.as_deref(), Some("review_created"));

        let odd = encode_cursor((1, 0), Some("ü/x"));
        assert!(odd.as_str().starts_with("1-0~x"), "{odd}");
        assert_eq!(Position::parse(&odd).unwrap().ty.as_deref(), Some("ü/x"));
        assert!(
            odd.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        );

        assert!(Position::parse(&Cursor::new("nope")).is_err());
        assert!(Position::parse(&Cursor::new("1-0~x4")).is_err());
        assert!(Position::parse(&Cursor::new("1-0~a b")).is_err());
        assert!(Position::parse(&Cursor::new("5-1")).unwrap().ty.is_none());
    }

    #[test]
    fn ties_are_broken_by_type() {
        let p = Position::parse(&Cursor::new("10-0~b")).unwrap();
        assert!(!p.before((10, 0), "a"));
        assert!(!p.before((10, 0), "b"));
        assert!(p.before((10, 0), "c"));
        assert!(p.before((10, 1), "a"));
        assert_eq!(p.start("a"), "(10-0");
        assert_eq!(p.start("c"), "10-0");
        assert_eq!(p.read_after("c"), "9-18446744073709551615");
        assert_eq!(p.read_after("a"), "10-0");
    }
}
