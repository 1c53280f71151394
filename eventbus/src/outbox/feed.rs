//! The outbox read as a pull feed ([`Feed`]): every committed row, in an
//! order no later commit can fall behind.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventbus_core::feed::{Cursor, Feed, FeedEntry, FeedError, FeedPage};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::DropGuard;

use super::Database;
#[cfg(feature = "postgres")]
use super::postgres;
#[cfg(feature = "sqlite")]
use super::sqlite;
use crate::transport::{EventType, Topics};

/// A row's place in the feed: `(txid, seq)` on PostgreSQL, `(0, seq)` on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub txid: u64,
    pub seq: i64,
}

/// What one feed query returns.
#[derive(Debug, Default)]
pub(super) struct FeedRows {
    /// The highest position ever deleted from the table.
    pub horizon: Option<Position>,
    /// `(position, event_type, payload)`, in feed order.
    pub rows: Vec<(Position, String, String)>,
}

/// The outbox table as a [`Feed`]: see [`feed`].
#[derive(Debug, Clone)]
pub struct OutboxFeed {
    db: Database,
    poll: Duration,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    wake: Arc<Mutex<Option<Wake>>>,
}

/// The `LISTEN` task shared by the clones of one feed (PostgreSQL), stopped
/// when the last clone goes.
#[derive(Debug)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
struct Wake {
    notified: watch::Receiver<u64>,
    _stop: DropGuard,
}

/// The outbox of `db` as a pull [`Feed`] (what eventbus-http's pull feed and
/// SSE serve).
///
/// It serves every row of `eventbus_outbox` that is committed, whatever its
/// relay status (`pending`, `published` or `failed`): the relay publishes
/// rows out of order (backoff, per-key heads), so a feed of published rows
/// only could not keep its cursors monotonic. See the [module docs](super)
/// for the order, the cursors, retention and waiting.
pub fn feed(db: impl Into<Database>) -> OutboxFeed {
    let db = db.into();
    let poll = match &db {
        #[cfg(feature = "postgres")]
        Database::Postgres(_) => Duration::from_millis(200),
        #[cfg(feature = "sqlite")]
        Database::Sqlite(_) => Duration::from_millis(50),
    };
    OutboxFeed {
        db,
        poll,
        wake: Arc::new(Mutex::new(None)),
    }
}

impl OutboxFeed {
    /// How often [`Feed::wait`] looks at the table besides the `NOTIFY`
    /// wake-ups (default 200 ms on PostgreSQL, 50 ms on SQLite, which has no
    /// notifications).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval.max(Duration::from_millis(1));
        self
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn cursor(&self, p: Position) -> Cursor {
        match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => Cursor::new(format!("{}.{}", p.txid, p.seq)),
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => Cursor::new(p.seq.to_string()),
        }
    }

    fn position(&self, cursor: &Cursor) -> Result<Position, FeedError> {
        let text = cursor.as_str();
        let parsed = match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => text.split_once('.').and_then(|(txid, seq)| {
                Some(Position {
                    txid: digits(txid)?.parse().ok()?,
                    seq: digits(seq)?.parse().ok()?,
                })
            }),
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => digits(text)
                .and_then(|seq| seq.parse().ok())
                .map(|seq| Position { txid: 0, seq }),
        };
        parsed.ok_or_else(|| {
            FeedError::InvalidCursor(format!(
                "`{}` is not a cursor of this outbox feed; start without a cursor, or from one this feed returned",
                short(text)
            ))
        })
    }

    /// A receiver that changes on every `NOTIFY` of the outbox channel
    /// (PostgreSQL; the listener starts on first use), marked seen.
    fn notifications(&self) -> Option<watch::Receiver<u64>> {
        match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => {
                let mut wake = self.wake.lock();
                let wake = wake.get_or_insert_with(|| {
                    let (tx, rx) = watch::channel(0u64);
                    let token = tokio_util::sync::CancellationToken::new();
                    postgres::spawn_listener_with(
                        pool.clone(),
                        move || tx.send_modify(|n| *n = n.wrapping_add(1)),
                        token.clone(),
                    );
                    Wake {
                        notified: rx,
                        _stop: token.drop_guard(),
                    }
                });
                let mut rx = wake.notified.clone();
                rx.borrow_and_update();
                Some(rx)
            }
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => None,
        }
    }

    async fn read_page(
        &self,
        after: Option<&Cursor>,
        topics: &Topics,
        limit: usize,
    ) -> Result<FeedPage, FeedError> {
        let types = match topics {
            Topics::All => None,
            Topics::Types(types) => Some(types.as_slice()),
        };
        let position = after.map(|c| self.position(c)).transpose()?;
        if limit == 0 || types.is_some_and(<[String]>::is_empty) {
            return Ok(FeedPage {
                entries: Vec::new(),
                next: after.cloned(),
            });
        }
        let rows = match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => postgres::feed_read(pool, position, types, limit).await?,
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => sqlite::feed_read(pool, position, types, limit).await?,
        };
        if let (Some(cursor), Some(position), Some(horizon)) = (after, position, rows.horizon)
            && horizon > position
        {
            return Err(FeedError::Expired {
                cursor: cursor.clone(),
                earliest: self.cursor(horizon),
            });
        }
        let entries: Vec<FeedEntry> = rows
            .rows
            .into_iter()
            .map(|(position, event_type, payload)| FeedEntry {
                cursor: self.cursor(position),
                event_type: EventType::from(event_type),
                payload: Bytes::from(payload),
            })
            .collect();
        let next = entries
            .last()
            .map(|e| e.cursor.clone())
            .or_else(|| after.cloned());
        Ok(FeedPage { entries, next })
    }
}

/// `text` escaped and cut for a message.
fn short(text: &str) -> String {
    let escaped = eventbus_core::escape::escape(text);
    match escaped.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &escaped[..end]),
        None => escaped.into_owned(),
    }
}

/// `text` if it is a non-empty run of ASCII digits.
fn digits(text: &str) -> Option<&str> {
    (!text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
        .then_some(text)
}

impl Feed for OutboxFeed {
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
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            // Subscribed before looking, so that a row committed meanwhile wakes us.
            let mut notified = self.notifications();
            loop {
                match self.read_page(after, topics, 1).await {
                    Ok(page) if !page.entries.is_empty() => return Ok(()),
                    Ok(_) => {}
                    // The caller's read says so.
                    Err(FeedError::Expired { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(());
                }
                let nap = self.poll.min(deadline - now);
                match &mut notified {
                    Some(rx) => {
                        tokio::select! {
                            changed = rx.changed() => {
                                if changed.is_err() {
                                    // The listener is gone: poll.
                                    notified = None;
                                }
                            }
                            _ = tokio::time::sleep(nap) => {}
                        }
                    }
                    None => tokio::time::sleep(nap).await,
                }
            }
        })
    }
}
