//! Reading a transport's log by position: the seam behind eventbus-http's
//! pull feed and Server-Sent Events.
//!
//! A [`Feed`] hands out what was published, in order, from a [`Cursor`]: the
//! transport's own position (a Redis stream entry id, the memory transport's
//! sequence, an outbox row id), opaque to clients. Reading keeps no state on
//! the server: no consumer group, nothing per client; a client that comes
//! back with the last cursor it saw gets what came after it.
//!
//! Rules every implementation keeps:
//! - a cursor is *exclusive*: a read after `c` never returns the entry at `c`;
//! - cursors are *monotonic*: each entry's cursor sorts after the previous
//!   one's in the order the feed returns them, across all the types it
//!   merges, and an entry published later never appears before a cursor
//!   already handed out;
//! - a cursor whose successors were dropped by retention fails with
//!   [`FeedError::Expired`], naming the earliest cursor that still works,
//!   never by silently skipping events.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::transport::{EventType, Topics};

/// A position in a feed: after the entry it names. Opaque to clients; only
/// the feed that issued it reads it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a feed's position text. Only URL-safe, printable ASCII is kept
    /// as it is by clients (a cursor travels in a query string, a header
    /// and an SSE `id:` line), so a feed uses `[A-Za-z0-9._~-]` only.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text a client sends back.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event read from a feed.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    /// Its position: a read after it returns what follows it.
    pub cursor: Cursor,
    /// The CloudEvents type it was published as.
    pub event_type: EventType,
    /// The structured-mode CloudEvent, as published.
    pub payload: Bytes,
}

/// A page of a feed.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    /// The entries, in feed order.
    pub entries: Vec<FeedEntry>,
    /// Where the next read starts: the last entry's cursor, or the cursor
    /// asked for when the page is empty (`None` only when the feed is empty
    /// and no cursor was given).
    pub next: Option<Cursor>,
}

/// Why a feed read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The cursor was not issued by this feed.
    #[error("{0}")]
    InvalidCursor(String),
    /// Entries after the cursor were dropped by the feed's retention.
    #[error(
        "cursor `{cursor}` is older than what the feed retains; resume from `{earliest}` (the earliest valid cursor) or from the start"
    )]
    Expired {
        /// The cursor asked for.
        cursor: Cursor,
        /// The earliest cursor a read can start after without a gap.
        earliest: Cursor,
    },
    /// The request asks for what this feed cannot serve (types that live on
    /// transports without a log, or on several transports at once).
    #[error("{0}")]
    Unsupported(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] crate::Error),
}

/// A transport's log, read by position. See [the module docs](self).
pub trait Feed: Send + Sync {
    /// Up to `limit` entries of `topics` after `after` (from the earliest
    /// retained entry when `None`), in feed order.
    fn read<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        limit: usize,
    ) -> BoxFuture<'a, Result<FeedPage, FeedError>>;

    /// Waits, up to `timeout`, until an entry of `topics` after `after` may
    /// be there; returns at once if one is. Wakes as soon as one is
    /// published (no polling interval between the publish and the wake). A
    /// spurious wake is allowed: the caller reads and waits again.
    fn wait<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), FeedError>>;
}

impl<F: Feed + ?Sized> Feed for std::sync::Arc<F> {
    fn read<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        limit: usize,
    ) -> BoxFuture<'a, Result<FeedPage, FeedError>> {
        (**self).read(after, topics, limit)
    }

    fn wait<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), FeedError>> {
        (**self).wait(after, topics, timeout)
    }
}
