//! What every consumer hands out, whatever the mode: eventbus-core's
//! [`Delivery`]s, acked, retried later or dead-lettered through the
//! [`Consumer`] that read them. A delivery id packs the Redis entry id (and
//! which of the consumer's streams it came from); it is only meaningful to
//! the consumer that handed it out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventbus_core::transport::{DeadLetterInfo, Delivery, DeliveryId};

use crate::error::Result;
use crate::pubsub::PubSubConsumer;
use crate::streams::StreamConsumer;

/// Where a consumer group starts when this consumer creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only events published after the group was created (`$`, default).
    #[default]
    Latest,
    /// Every event still in the stream (`0`).
    Earliest,
    /// Events published at or after this time (a group declared before the
    /// consumer started misses nothing published in between).
    Since(std::time::SystemTime),
}

/// Tuning of a consumer. With the defaults, the entries of a consumer that
/// died are taken over within seconds, and those of a live one never, however
/// long its handlers run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// Longest time `read` blocks in `XREADGROUP` waiting for new entries. An
    /// entry that arrives wakes it at once; this only bounds how long an idle
    /// `read` takes to return an empty batch.
    pub block: Duration,
    /// While entries handed out by this consumer are still unacked (so a
    /// handler may call `retry_later`), `read` blocks at most this long, which
    /// bounds how late a delayed retry fires.
    pub busy_block: Duration,
    /// How often this consumer shows it is alive (a background task sets
    /// its deadline in the group's `{P}:alive:<group>` zset, whether or not
    /// its handlers are busy), and how often it looks for the entries of
    /// dead consumers of its group while there are any.
    pub heartbeat_interval: Duration,
    /// A consumer whose last heartbeat is older than this is dead (SIGKILLed,
    /// crashed, or cut off from Redis that long): the group's other
    /// consumers take over its entries at once. With the defaults that
    /// happens 5 to 8 s after its death. A consumer that keeps its heartbeat
    /// keeps its entries, however long its handlers run. At least two
    /// intervals.
    pub heartbeat_timeout: Duration,
    /// The fallback for consumers that show no heartbeat (older versions of
    /// this crate): entries pending on one of them for longer than this are
    /// taken over (`XCLAIM`), as it is presumed dead. Keep it larger than
    /// the longest handler run of such consumers.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_interval: Duration,
    /// How often a consumer of `Topics::All` looks for new streams: the
    /// `{P}:types` set, and a step of a `SCAN` for `{P}:stream:*` (on a
    /// cluster, the keys of the configuration's hash slot), so streams that
    /// only other producers write are found too.
    pub types_poll: Duration,
    /// How often to look for delayed retries scheduled by other consumers of
    /// the group (own retries are tracked locally and fire on time).
    pub retry_poll: Duration,
    /// Where a group created by this consumer starts.
    pub start: StartFrom,
    /// The consumer name inside its group; default `<host>-<pid>-<random>`,
    /// unique per consumer.
    pub name: Option<String>,
    /// Pub/sub only: how many received messages wait for `read` before new
    /// ones are dropped (and counted in [`ConsumerStats::dropped`]).
    pub pubsub_buffer: usize,
    /// Pub/sub only: how many handed-out entries are kept for `retry_later`
    /// until they are acked; beyond it the oldest are released (counted).
    pub pubsub_hold: usize,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            block: Duration::from_secs(2),
            busy_block: Duration::from_millis(100),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            claim_idle: Duration::from_secs(60),
            claim_interval: Duration::from_secs(10),
            types_poll: Duration::from_secs(1),
            retry_poll: Duration::from_secs(1),
            start: StartFrom::Latest,
            name: None,
            pubsub_buffer: 1 << 16,
            pubsub_hold: 1 << 16,
        }
    }
}

/// Identifies an entry inside a consumer: for Streams the stream (an index
/// into the consumer's streams) and the entry id (`ms-seq`); for pub/sub a
/// sequence number. Travels as a [`DeliveryId`] (its 128 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EntryId {
    pub(crate) stream: u32,
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl EntryId {
    pub(crate) fn parse(stream: u32, id: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(id).ok()?;
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            stream,
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Packs the id into 128 bits; [`EntryId::from_bits`] unpacks it. The
    /// layout is not a stable format.
    pub(crate) fn to_bits(self) -> u128 {
        // ms < 2^48 until the year 10889; at most 2^16 streams per consumer.
        (u128::from(self.ms & 0xFFFF_FFFF_FFFF) << 80)
            | (u128::from(self.stream & 0xFFFF) << 64)
            | u128::from(self.seq)
    }

    /// The id packed by [`EntryId::to_bits`].
    pub(crate) fn from_bits(bits: u128) -> Self {
        EntryId {
            ms: (bits >> 80) as u64,
            stream: ((bits >> 64) & 0xFFFF) as u32,
            seq: bits as u64,
        }
    }

    pub(crate) fn of(id: DeliveryId) -> Self {
        Self::from_bits(id.0)
    }
}

/// `ms-seq`, as Redis writes stream ids.
impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry read by a consumer, before it is handed out as a [`Delivery`].
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: EntryId,
    /// The CloudEvents type (the stream's or channel's type; in the django
    /// layout the `event_type` field).
    pub(crate) event_type: Arc<str>,
    /// Structured-mode CloudEvent JSON (legacy payloads already wrapped). Not
    /// validated: a malformed entry is handed out as it is, so the caller can
    /// dead-letter it with the reason.
    pub(crate) payload: Bytes,
    /// How many times the entry has been delivered, this time included
    /// (1 on first delivery; Redis counts it, so crashes count too).
    pub(crate) delivery_count: u32,
}

impl Entry {
    pub(crate) fn into_delivery(self) -> Delivery {
        Delivery {
            id: DeliveryId(self.id.to_bits()),
            event_type: self.event_type.into(),
            payload: self.payload,
            attempt: self.delivery_count.max(1),
        }
    }

    fn of(delivery: &Delivery) -> Self {
        Entry {
            id: EntryId::of(delivery.id),
            event_type: Arc::from(delivery.event_type.as_str()),
            payload: Bytes::clone(&delivery.payload),
            delivery_count: delivery.attempt,
        }
    }
}

/// Counters of a consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Entries handed out by `read`.
    pub delivered: u64,
    /// Pub/sub messages dropped because the buffer was full (never silent:
    /// each drop is counted here and logged).
    pub dropped: u64,
    /// Times the connection was lost and re-established.
    pub reconnects: u64,
    /// Streams: entries taken over from dead consumers. Pub/sub: held entries
    /// released without ack because more than `pubsub_hold` were outstanding.
    pub reclaimed_or_released: u64,
}

#[derive(Clone)]
pub(crate) enum Kind {
    Streams(Arc<StreamConsumer>),
    PubSub(Arc<PubSubConsumer>),
}

/// Reads entries of a group (Streams) or a set of channels (pub/sub).
///
/// Cheap to clone; clones share one reader, so one task can `read` while
/// others `ack`, `retry_later` and `dead_letter` concurrently.
#[derive(Clone)]
pub struct Consumer {
    pub(crate) kind: Kind,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Up to `max` entries (sometimes an empty batch after blocking for
    /// [`ConsumerOptions::block`]). Entries stay pending until acked.
    ///
    /// Cancel-safe: entries read by a cancelled call are handed out again by
    /// a later one.
    pub async fn read(&self, max: usize) -> Result<Vec<Delivery>> {
        let entries = match &self.kind {
            Kind::Streams(c) => c.read(max).await?,
            Kind::PubSub(c) => c.read(max).await?,
        };
        Ok(entries.into_iter().map(Entry::into_delivery).collect())
    }

    /// What is ready now, without waiting or a round trip: the pub/sub
    /// messages already received (up to `max`, handed out as [`Consumer::read`]
    /// does); always empty on Streams, whose entries are read from Redis.
    pub fn read_now(&self, max: usize) -> Vec<Delivery> {
        match &self.kind {
            Kind::Streams(_) => Vec::new(),
            Kind::PubSub(c) => c
                .read_now(max)
                .into_iter()
                .map(Entry::into_delivery)
                .collect(),
        }
    }

    /// Acknowledges at once when that needs no round trip (pub/sub, where it
    /// only releases the entries kept for `retry_later`); false on Streams:
    /// use [`Consumer::ack`].
    pub fn ack_now(&self, ids: &[DeliveryId]) -> bool {
        match &self.kind {
            Kind::Streams(_) => false,
            Kind::PubSub(c) => {
                c.ack(ids);
                true
            }
        }
    }

    /// Acknowledges handled entries, in one round trip (a no-op on Redis for
    /// pub/sub, where it only releases the entries kept for `retry_later`).
    pub async fn ack(&self, ids: &[DeliveryId]) -> Result<()> {
        match &self.kind {
            Kind::Streams(c) => c.ack(ids).await,
            Kind::PubSub(c) => {
                c.ack(ids);
                Ok(())
            }
        }
    }

    /// Gives entries back without acking them (e.g. at shutdown, for
    /// entries whose handler did not finish): on Streams they go to the
    /// group's retry zset as due now, so a consumer of the group takes them
    /// at its next retry poll (`retry_poll`), bumping their delivery count.
    /// Pub/sub: forgets them.
    pub async fn release(&self, ids: &[DeliveryId]) -> Result<()> {
        match &self.kind {
            Kind::Streams(c) => c.release(ids).await,
            Kind::PubSub(c) => {
                c.ack(ids);
                Ok(())
            }
        }
    }

    /// Leaves the group cleanly (call it once the entries handed out are
    /// settled): on Streams, every entry still pending on this consumer —
    /// read ahead and not handed out, handed out and not acked, or delivered
    /// by a read that was cancelled before its reply arrived — is handed
    /// back (as due now in the group's retry zset), so a consumer of the
    /// group takes it at its next retry poll (`retry_poll`). Entries waiting
    /// for a scheduled retry come back when due, as always. Returns how many
    /// entries were handed back. Pub/sub: forgets the entries it holds.
    ///
    /// Reading after `close` is allowed (the consumer stays a member of its
    /// group); what it then reads it owns again.
    pub async fn close(&self) -> Result<u64> {
        match &self.kind {
            Kind::Streams(c) => c.close().await,
            Kind::PubSub(c) => Ok(c.close()),
        }
    }

    /// Hands the entry out again after `delay`, with its delivery count
    /// bumped; other entries keep flowing meanwhile. On Streams the entry
    /// stays pending in Redis and any consumer of the group may take it when
    /// due, so the retry survives this process.
    pub async fn retry_later(&self, id: DeliveryId, delay: Duration) -> Result<()> {
        let id = EntryId::of(id);
        match &self.kind {
            Kind::Streams(c) => c.retry_later(id, delay).await,
            Kind::PubSub(c) => c.retry_later(id, delay),
        }
    }

    /// Moves the delivery to the dead-letter stream (and acks it),
    /// atomically; returns its id in the DLQ. The record keeps the event's
    /// type (from `info`, else the delivery's), its id when known, the
    /// stream or channel it came from, and the payload as received.
    pub async fn dead_letter(&self, delivery: &Delivery, info: &DeadLetterInfo) -> Result<String> {
        let entry = Entry::of(delivery);
        match &self.kind {
            Kind::Streams(c) => c.dead_letter(&entry, info).await,
            Kind::PubSub(c) => c.dead_letter(&entry, info).await,
        }
    }

    /// The consumer group (for pub/sub: the name given, for the DLQ records).
    pub fn group(&self) -> &str {
        match &self.kind {
            Kind::Streams(c) => c.group(),
            Kind::PubSub(c) => c.group(),
        }
    }

    /// This consumer's name inside the group.
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Streams(c) => c.name(),
            Kind::PubSub(c) => c.name(),
        }
    }

    /// Counters (drops, reconnects, reclaimed entries).
    pub fn stats(&self) -> ConsumerStats {
        match &self.kind {
            Kind::Streams(c) => c.stats(),
            Kind::PubSub(c) => c.stats(),
        }
    }
}

/// The type a dead letter is recorded under: what the worker read from the
/// message, else the stream's or channel's.
pub(crate) fn dead_type<'a>(entry: &'a Entry, info: &'a DeadLetterInfo) -> &'a str {
    if info.event_type.is_empty() {
        &entry.event_type
    } else {
        &info.event_type
    }
}

pub(crate) fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}
