//! `GET /events` (a page of the pull feed) and `GET /events/stream` (the
//! same feed as Server-Sent Events).
//!
//! The feed is the transport's own log ([`Feed`]): nothing is kept per
//! client. A page is `application/cloudevents-batch+json`; each event in it
//! carries its position as the extension attribute `feedcursor`, and the
//! position to continue from is also in the `Feed-Cursor` header and a
//! `Link: <...>; rel="next"` (the last event's `feedcursor`, or the cursor
//! asked for when the page is empty), as in the HTTP Feeds convention where
//! a client continues from the last event it saw.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use eventbus_core::codec::Attributes;
use eventbus_core::escape::Escaped;
use eventbus_core::feed::{Cursor, Feed, FeedEntry, FeedError};
use eventbus_core::transport::Topics;
use serde::Deserialize;

/// The name of the extension attribute that carries an event's position.
pub const CURSOR_ATTRIBUTE: &str = "feedcursor";

/// The response header with the cursor to continue from.
pub const CURSOR_HEADER: &str = "feed-cursor";

/// The page size when `limit=` is not given.
const DEFAULT_LIMIT: usize = 100;

/// How far a compacted page looks ahead for later events of a subject.
const COMPACT_SCAN: usize = 100_000;

/// The query of both endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct FeedQuery {
    after: Option<String>,
    types: Option<String>,
    limit: Option<String>,
    wait: Option<String>,
    compact: Option<String>,
}

/// What a request asks for, checked.
struct Ask {
    after: Option<Cursor>,
    topics: Topics,
    limit: usize,
    wait: Duration,
    compact: bool,
}

/// An error answer (`application/problem+json`, as the ingest's).
fn problem(status: StatusCode, detail: impl AsRef<str>) -> Response {
    crate::ingest::problem(status, detail.as_ref())
}

fn unauthorized() -> Response {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs `Authorization: Bearer <token>` with the token the service was configured with",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn feed_error(e: FeedError) -> Response {
    match e {
        FeedError::Expired { cursor, earliest } => {
            let detail = FeedError::Expired {
                cursor,
                earliest: earliest.clone(),
            }
            .to_string();
            let mut members = serde_json::Map::new();
            members.insert("earliest".into(), earliest.as_str().into());
            let mut r = crate::ingest::problem_with(StatusCode::GONE, &detail, members);
            if let Ok(v) = HeaderValue::from_str(earliest.as_str()) {
                r.headers_mut().insert(CURSOR_HEADER, v);
            }
            r
        }
        FeedError::InvalidCursor(why) | FeedError::Unsupported(why) => {
            problem(StatusCode::BAD_REQUEST, why)
        }
        FeedError::Transport(e) => {
            tracing::warn!(error = %e.report(), "pull feed: the transport failed");
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the transport failed: {e}; try again"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        other => problem(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

fn no_feed(state: &crate::State) -> Response {
    problem(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "the `{}` transport keeps no log to read a feed from; route the types to Redis Streams or the memory transport, or give the router a feed (`Http::feed`, e.g. the outbox's)",
            state.config.transport.name()
        ),
    )
}

impl Ask {
    fn parse(
        q: FeedQuery,
        headers: &HeaderMap,
        state: &crate::State,
        sse: bool,
    ) -> Result<Self, String> {
        let bad = |m: String| Err(m);
        // SSE resumes from `Last-Event-ID` (what a browser's EventSource sends).
        let last_event_id = sse
            .then(|| headers.get("last-event-id"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let after = match last_event_id.or(q.after.as_deref()) {
            None | Some("") => None,
            Some(c) if c.bytes().all(|b| b.is_ascii_graphic()) && c.len() <= 1024 => {
                Some(Cursor::new(c))
            }
            Some(c) => {
                return bad(format!(
                    "`{}` is not a cursor of this feed: cursors are printable ASCII",
                    Escaped(c)
                ));
            }
        };
        let topics = match q.types.as_deref().map(str::trim) {
            None | Some("") => Topics::All,
            Some(list) => {
                let types: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                if types.is_empty() {
                    return bad("`types=` lists no type; write `types=review_created,moderate_action` or leave it out for every type".to_owned());
                }
                Topics::Types(types)
            }
        };
        let limit = match q.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT.min(state.config.max_limit),
            Some(n) => match n.parse::<usize>() {
                Ok(0) | Err(_) => {
                    return bad(format!(
                        "`limit={}` must be a number of events from 1 to {}",
                        Escaped(n),
                        state.config.max_limit
                    ));
                }
                Ok(n) => n.min(state.config.max_limit),
            },
        };
        let wait = match q.wait.as_deref() {
            None | Some("") => Duration::ZERO,
            Some(w) => {
                let parsed = w
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .or_else(|_| humantime::parse_duration(w));
                match parsed {
                    Ok(d) => d.min(state.config.max_wait),
                    Err(_) => {
                        return bad(format!(
                            "`wait={}` is not a duration; write seconds (`wait=30`) or a unit (`wait=30s`, `wait=500ms`)",
                            Escaped(w)
                        ));
                    }
                }
            }
        };
        let compact = match q.compact.as_deref() {
            None | Some("") => false,
            Some("subject") if !sse => true,
            Some("subject") => {
                return bad(
                    "`compact=subject` is for pages (`GET /events`), not for the stream".to_owned(),
                );
            }
            Some(other) => {
                return bad(format!(
                    "`compact={}` is not known; the feed compacts by `compact=subject`",
                    Escaped(other)
                ));
            }
        };
        Ok(Self {
            after,
            topics,
            limit,
            wait,
            compact,
        })
    }
}

/// `GET /events`.
pub(crate) async fn page(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let Some(feed) = state.feed() else {
        return no_feed(&state);
    };
    let ask = match Ask::parse(q, &headers, &state, false) {
        Ok(ask) => ask,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    let deadline = tokio::time::Instant::now() + ask.wait;
    loop {
        let read = if ask.compact {
            compacted(feed, &ask).await
        } else {
            feed.read(ask.after.as_ref(), &ask.topics, ask.limit)
                .await
                .map(|p| (p.entries, p.next))
        };
        let (entries, next) = match read {
            Ok(page) => page,
            Err(e) => return feed_error(e),
        };
        let now = tokio::time::Instant::now();
        if !entries.is_empty() || now >= deadline {
            return batch_response(&entries, next.as_ref(), &ask);
        }
        // Past other types' entries: wait after what was skipped.
        let wait_from = next.as_ref().or(ask.after.as_ref());
        if let Err(e) = feed.wait(wait_from, &ask.topics, deadline - now).await {
            return feed_error(e);
        }
    }
}

/// A page of the latest event of each subject: events later superseded (by
/// an event of the same subject further on, up to [`COMPACT_SCAN`] events
/// ahead) are left out; events without a subject are all kept.
async fn compacted(
    feed: &dyn Feed,
    ask: &Ask,
) -> Result<(Vec<FeedEntry>, Option<Cursor>), FeedError> {
    let mut scanned: Vec<(FeedEntry, Option<String>)> = Vec::new();
    let mut cursor = ask.after.clone();
    while scanned.len() < COMPACT_SCAN {
        let page = feed.read(cursor.as_ref(), &ask.topics, 1000).await?;
        if page.entries.is_empty() {
            break;
        }
        cursor = page.next;
        for e in page.entries {
            let subject = Attributes::parse(&e.payload)
                .ok()
                .and_then(|a| a.subject.map(|s| s.into_owned()));
            scanned.push((e, subject));
        }
    }
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (_, subject)) in scanned.iter().enumerate() {
        if let Some(s) = subject {
            last.insert(s, i);
        }
    }
    let keep: Vec<bool> = scanned
        .iter()
        .enumerate()
        .map(|(i, (_, s))| s.as_deref().is_none_or(|s| last[s] == i))
        .collect();
    let mut out = Vec::new();
    let mut next = ask.after.clone();
    for ((entry, _), keep) in scanned.into_iter().zip(keep) {
        if out.len() >= ask.limit {
            break;
        }
        next = Some(entry.cursor.clone());
        if keep {
            out.push(entry);
        }
    }
    if out.len() < ask.limit {
        // Everything scanned was looked at: continue after the last of it.
        next = cursor.or(next);
    }
    Ok((out, next))
}

/// Whether an entry can be served in a batch: one JSON object (the feed
/// hands out what was stored; whether it is a valid CloudEvent is for its
/// consumers, whose dead-letter queue takes what is not). `Some(true)` when
/// it has a `feedcursor` member of its own, which is then left as it is.
fn servable(payload: &[u8]) -> Option<bool> {
    let starts_an_object = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !starts_an_object || serde_json::from_slice::<&serde_json::value::RawValue>(payload).is_err()
    {
        return None;
    }
    static MEMBER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"feedcursor\""));
    if MEMBER.find(payload).is_none() {
        return Some(false);
    }
    // Only a member name counts (not a string in `data`).
    let own = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
        .map(|m| m.contains_key(CURSOR_ATTRIBUTE))
        .unwrap_or(true);
    Some(own)
}

/// The structured event with `"feedcursor": "<cursor>"` as its first member;
/// false when the payload is not a JSON object (never served).
fn with_cursor(entry: &FeedEntry, out: &mut BytesMut) -> bool {
    let Some(has_own) = servable(&entry.payload) else {
        return false;
    };
    let text = &entry.payload[..];
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    match start {
        Some(i) if text[i] == b'{' && !has_own => {
            out.put_slice(b"{\"");
            out.put_slice(CURSOR_ATTRIBUTE.as_bytes());
            out.put_slice(b"\":");
            // Cursors are URL-safe ASCII (what feeds issue): quoted as
            // they are; anything else is escaped as JSON.
            let cursor = entry.cursor.as_str();
            if cursor
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                out.put_u8(b'"');
                out.put_slice(cursor.as_bytes());
                out.put_u8(b'"');
            } else {
                out.put_slice(serde_json::to_string(cursor).unwrap_or_default().as_bytes());
            }
            let rest = &text[i + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            if !empty {
                out.put_u8(b',');
            }
            out.put_slice(rest);
        }
        _ => out.put_slice(text),
    }
    true
}

fn batch_response(entries: &[FeedEntry], next: Option<&Cursor>, ask: &Ask) -> Response {
    let mut body =
        BytesMut::with_capacity(entries.iter().map(|e| e.payload.len() + 48).sum::<usize>() + 2);
    body.put_u8(b'[');
    let mut first = true;
    for e in entries {
        let mark = body.len();
        if !first {
            body.put_u8(b',');
        }
        if with_cursor(e, &mut body) {
            first = false;
        } else {
            body.truncate(mark);
            tracing::warn!(
                cursor = %e.cursor,
                event_type = %Escaped(&e.event_type),
                "pull feed: skipping an entry that is not a JSON object (the consumer groups dead-letter it)"
            );
        }
    }
    body.put_u8(b']');
    let mut r = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents-batch+json"),
        )],
        Bytes::from(body),
    )
        .into_response();
    if let Some(next) = next
        && let Ok(v) = HeaderValue::from_str(next.as_str())
    {
        r.headers_mut().insert(CURSOR_HEADER, v);
        let mut link = format!("</events?after={}", next.as_str());
        if let Topics::Types(types) = &ask.topics {
            link.push_str("&types=");
            link.push_str(&types.join(","));
        }
        if ask.compact {
            link.push_str("&compact=subject");
        }
        link.push_str(">; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

/// `GET /events/stream`: Server-Sent Events, `id:` = cursor, one
/// structured CloudEvent per `data:`; resumes after `Last-Event-ID` (or
/// `after=`), keep-alive comments while idle.
pub(crate) async fn stream(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    if state.feed().is_none() {
        return no_feed(&state);
    }
    let ask = match Ask::parse(q, &headers, &state, true) {
        Ok(ask) => ask,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    // A cursor that is wrong or expired is an HTTP error, before the stream starts.
    let first = match state
        .feed()
        .expect("checked")
        .read(ask.after.as_ref(), &ask.topics, ask.limit)
        .await
    {
        Ok(page) => page,
        Err(e) => return feed_error(e),
    };
    let keep_alive = state.config.keep_alive;
    struct Tail {
        state: Arc<crate::State>,
        topics: Topics,
        cursor: Option<Cursor>,
        buffered: VecDeque<FeedEntry>,
        limit: usize,
        done: bool,
    }
    let tail = Tail {
        state,
        topics: ask.topics,
        cursor: first.next.clone(),
        buffered: first.entries.into(),
        limit: ask.limit,
        done: false,
    };
    let events = futures::stream::unfold(tail, move |mut t| async move {
        loop {
            if t.done {
                return None;
            }
            if let Some(entry) = t.buffered.pop_front() {
                let Ok(text) = std::str::from_utf8(&entry.payload) else {
                    continue;
                };
                if servable(&entry.payload).is_none() {
                    continue;
                }
                // One `data:` line: a compact JSON text has no raw newline.
                let data = if text.contains(['\n', '\r']) {
                    match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(v) => v.to_string(),
                        Err(_) => continue,
                    }
                } else {
                    text.to_owned()
                };
                let event = SseEvent::default().id(entry.cursor.as_str()).data(data);
                return Some((Ok::<_, std::convert::Infallible>(event), t));
            }
            let feed = t.state.feed().expect("checked at start");
            match feed.read(t.cursor.as_ref(), &t.topics, t.limit).await {
                Ok(page) if !page.entries.is_empty() => {
                    t.cursor = page.next;
                    t.buffered = page.entries.into();
                }
                Ok(page) => {
                    if page.next.is_some() {
                        t.cursor = page.next;
                    }
                    if let Err(e) = feed.wait(t.cursor.as_ref(), &t.topics, keep_alive).await {
                        t.done = true;
                        return Some((Ok(error_event(&e)), t));
                    }
                }
                Err(e) => {
                    t.done = true;
                    return Some((Ok(error_event(&e)), t));
                }
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

/// The last event of a stream that cannot go on (`event: error`).
fn error_event(e: &FeedError) -> SseEvent {
    let earliest = match e {
        FeedError::Expired { earliest, .. } => Some(earliest.as_str().to_owned()),
        _ => None,
    };
    let body = serde_json::json!({ "detail": e.to_string(), "earliest": earliest });
    SseEvent::default().event("error").data(body.to_string())
}
