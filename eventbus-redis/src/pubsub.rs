//! Pub/sub mode: fire-and-forget, at-most-once.
//!
//! Channel = `[prefix:]type`; payload = CloudEvent JSON or the bare data
//! JSON, per channel (see [`Codec`](crate::Codec): by default each channel
//! keeps the format it carries). A consumer is live when it is created: its
//! `SUBSCRIBE` (or `PSUBSCRIBE`) is confirmed by the server before
//! [`Client::consumer`](crate::Client::consumer) returns. A subscriber task
//! reads the dedicated pub/sub connection into a bounded buffer; when `read`
//! falls behind and the buffer is full, messages are dropped — never
//! silently: each drop is counted in [`ConsumerStats::dropped`] and logged.
//! The task reconnects and resubscribes with backoff; messages published
//! while it is disconnected are lost (that is what at-most-once means), and
//! each reconnect is counted.
//!
//! A bare payload is handed out wrapped into a CloudEvent of the channel's
//! type; the consumer keeps the bytes as received, which is what a dead
//! letter records and a replay publishes again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::client::{Client, source_of};
use crate::codec;
use crate::consumer::{
    ConsumerOptions, ConsumerStats, Entry, EntryId, dead_type, default_consumer_name,
};
use crate::error::{Error, Result};
use crate::scripts;
use eventbus_core::transport::{DeadLetterInfo, DeliveryId, Topics};

/// The `stream` index of pub/sub entry ids.
const PUBSUB_STREAM: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    released: AtomicU64,
}

/// A channel a consumer received messages on, shared by all its messages.
struct Channel {
    name: String,
    /// Its event type.
    ty: Arc<str>,
    /// The formats seen on it by this consumer ([`BARE`], [`STRUCTURED`]).
    seen: AtomicU8,
}

const BARE: u8 = 1;
const STRUCTURED: u8 = 2;

struct Message {
    channel: Arc<Channel>,
    payload: Vec<u8>,
}

/// An entry handed out, as the consumer keeps it until it is settled.
#[derive(Clone)]
struct Held {
    entry: Entry,
    /// The channel it was received on.
    channel: Arc<Channel>,
    /// The bytes as received, when the entry's payload is a wrapping of them.
    original: Option<Bytes>,
}

/// What the pub/sub consumers of one client have received on each channel
/// (by event type): bare JSON, CloudEvents JSON, or both. Publishing with
/// `codec=auto` reads it: a channel that carried bare JSON stays bare.
#[derive(Debug, Default)]
pub(crate) struct ChannelFormats {
    /// Whether any channel carried bare JSON: until one did, a publish
    /// looks nothing up.
    any_bare: AtomicBool,
    seen: RwLock<HashMap<Box<str>, Seen>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// [`BARE`] | [`STRUCTURED`].
    formats: u8,
    /// The "carries both" warning was logged.
    warned_both: bool,
    /// The "no message seen yet, publishing CloudEvents" warning was logged.
    warned_guess: bool,
}

/// How many channels a client remembers the formats of (a pattern
/// subscription may see any number of channel names).
const MAX_CHANNELS: usize = 10_000;

impl ChannelFormats {
    /// Whether the channel of `event_type` carried bare JSON.
    pub(crate) fn carries_bare(&self, event_type: &str) -> bool {
        self.any_bare.load(Ordering::Acquire)
            && self
                .seen
                .read()
                .expect("not poisoned")
                .get(event_type)
                .is_some_and(|s| s.formats & BARE != 0)
    }

    /// Records that the channel of `event_type` carried `format`; true the
    /// first time it is known to carry both formats.
    fn record(&self, event_type: &str, format: u8) -> bool {
        let mut seen = self.seen.write().expect("not poisoned");
        if format == BARE {
            self.any_bare.store(true, Ordering::Release);
        }
        let len = seen.len();
        let s = match seen.get_mut(event_type) {
            Some(s) => s,
            None if len < MAX_CHANNELS => seen.entry(event_type.into()).or_default(),
            None => return false,
        };
        s.formats |= format;
        let both = s.formats == BARE | STRUCTURED && !s.warned_both;
        s.warned_both |= both;
        both
    }

    /// True once per type, for a type whose channel carried nothing this
    /// client received: a publish then guesses (CloudEvents JSON).
    pub(crate) fn first_guess(&self, event_type: &str) -> bool {
        let mut seen = self.seen.write().expect("not poisoned");
        let len = seen.len();
        let s = match seen.get_mut(event_type) {
            Some(s) => s,
            None if len < MAX_CHANNELS => seen.entry(event_type.into()).or_default(),
            None => return false,
        };
        let guess = s.formats == 0 && !s.warned_guess;
        s.warned_guess |= guess;
        guess
    }
}

/// The entries handed out and not settled, by sequence number: numbers are
/// given in order, so the entries are a queue with holes where settled ones
/// were (no tree to keep, no node to allocate per message).
#[derive(Default)]
struct HeldRing {
    /// The number of `slots[0]`.
    front: u64,
    slots: std::collections::VecDeque<Option<Held>>,
    /// Entries held (slots that are not holes).
    live: usize,
}

impl HeldRing {
    fn insert(&mut self, held: Held) {
        let seq = held.entry.id.seq;
        if self.slots.is_empty() {
            self.front = seq;
        }
        // Numbers only grow; one below the queue (never given) is not kept.
        let Some(at) = seq.checked_sub(self.front) else {
            return;
        };
        let at = at as usize;
        while self.slots.len() < at {
            self.slots.push_back(None);
        }
        if at == self.slots.len() {
            self.slots.push_back(Some(held));
            self.live += 1;
        } else if self.slots[at].replace(held).is_none() {
            self.live += 1;
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Held> {
        let at = usize::try_from(seq.checked_sub(self.front)?).ok()?;
        let held = self.slots.get_mut(at)?.take()?;
        self.live -= 1;
        self.trim();
        Some(held)
    }

    /// Releases the oldest entries beyond `max`; returns how many.
    fn bound(&mut self, max: usize) -> u64 {
        let mut released = 0;
        while self.live > max {
            if let Some(Some(_)) = self.slots.pop_front() {
                self.live -= 1;
                released += 1;
            }
            self.front += 1;
        }
        self.trim();
        released
    }

    /// Drops the holes at the front.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.front += 1;
        }
        if self.slots.is_empty() {
            self.live = 0;
        }
    }
}

pub(crate) struct PubSubConsumer {
    client: Client,
    group: String,
    name: String,
    opts: ConsumerOptions,
    rx: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    /// Entries handed out, kept for `retry_later` and `dead_letter` until acked.
    held: Mutex<HeldRing>,
    /// Entries whose retry is due (or will be), sent by timer tasks.
    retries_tx: mpsc::UnboundedSender<Held>,
    retries_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Held>>,
    next_seq: AtomicU64,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PubSubConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Subscription {
    Channels(Vec<String>),
    Pattern(String),
}

async fn subscribe(client: &Client, sub: &Subscription) -> Result<redis::aio::PubSub> {
    let mut ps = client.inner.connector.pubsub().await?;
    match sub {
        Subscription::Channels(chs) => ps
            .subscribe(chs)
            .await
            .map_err(|e| Error::redis("SUBSCRIBE", e))?,
        Subscription::Pattern(p) => ps
            .psubscribe(p)
            .await
            .map_err(|e| Error::redis("PSUBSCRIBE", e))?,
    }
    Ok(ps)
}

impl PubSubConsumer {
    pub(crate) async fn new(
        client: Client,
        group: &str,
        types: Topics,
        opts: ConsumerOptions,
    ) -> Result<Self> {
        let keys = client.keys();
        if matches!(&types, Topics::Types(list) if list.is_empty()) {
            return Err(Error::Unsupported(
                "a pub/sub consumer needs at least one event type, or Topics::All".into(),
            ));
        }
        let sub = match &types {
            Topics::Types(list) => {
                Subscription::Channels(list.iter().map(|t| keys.channel(t)).collect())
            }
            Topics::All => Subscription::Pattern(keys.channel_pattern()),
        };
        // Subscribe before returning: `subscribe` waits for the server's
        // confirmation of every channel (or the pattern), so whatever is
        // published from now on arrives.
        let first = subscribe(&client, &sub).await?;
        let (tx, rx) = mpsc::channel(opts.pubsub_buffer.max(1));
        let (retries_tx, retries_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run_subscriber(
            client.clone(),
            sub,
            first,
            tx,
            counters.clone(),
        ));
        Ok(PubSubConsumer {
            name: opts.name.clone().unwrap_or_else(default_consumer_name),
            client,
            group: group.to_owned(),
            opts,
            rx: tokio::sync::Mutex::new(rx),
            held: Mutex::new(HeldRing::default()),
            retries_tx,
            retries_rx: tokio::sync::Mutex::new(retries_rx),
            next_seq: AtomicU64::new(1),
            counters,
            task,
        })
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            reclaimed_or_released: self.counters.released.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn read(&self, max: usize) -> Result<Vec<Entry>> {
        let max = max.max(1);
        let mut out = Vec::new();
        {
            let mut retries = self.retries_rx.lock().await;
            self.due_retries(&mut retries, max, &mut out);
        }
        if out.is_empty() {
            let mut rx = self.rx.lock().await;
            let mut retries = self.retries_rx.lock().await;
            let mut batch = Vec::new();
            tokio::select! {
                n = rx.recv_many(&mut batch, max) => {
                    if n == 0 {
                        return Err(Error::Unsupported("the pub/sub subscriber stopped".into()));
                    }
                }
                Some(e) = retries.recv() => out.push(self.again(e)),
                _ = tokio::time::sleep(self.opts.block) => {}
            }
            out.extend(batch.into_iter().map(|m| self.held_of(m)));
        }
        Ok(self.hand_out(out))
    }

    /// What is buffered now, up to `max` entries, without waiting (empty
    /// when another read holds the buffer).
    pub(crate) fn read_now(&self, max: usize) -> Vec<Entry> {
        let max = max.max(1);
        let mut out = Vec::new();
        if let Ok(mut retries) = self.retries_rx.try_lock() {
            self.due_retries(&mut retries, max, &mut out);
        }
        if out.is_empty()
            && let Ok(mut rx) = self.rx.try_lock()
        {
            while out.len() < max {
                match rx.try_recv() {
                    Ok(m) => out.push(self.held_of(m)),
                    Err(_) => break,
                }
            }
        }
        self.hand_out(out)
    }

    fn due_retries(
        &self,
        retries: &mut mpsc::UnboundedReceiver<Held>,
        max: usize,
        out: &mut Vec<Held>,
    ) {
        while out.len() < max {
            match retries.try_recv() {
                Ok(e) => out.push(self.again(e)),
                Err(_) => break,
            }
        }
    }

    /// A retry handed out again, under a new sequence number (the held
    /// entries are kept in the order of their numbers).
    fn again(&self, mut held: Held) -> Held {
        held.entry.id.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        held
    }

    fn held_of(&self, m: Message) -> Held {
        let received = Bytes::from(m.payload);
        let (payload, original) = self.structured(&m.channel, received);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        Held {
            entry: Entry {
                id: EntryId {
                    stream: PUBSUB_STREAM,
                    ms: 0,
                    seq,
                },
                event_type: m.channel.ty.clone(),
                payload,
                delivery_count: 1,
            },
            channel: m.channel,
            original,
        }
    }

    /// Keeps what is handed out for `retry_later` and `dead_letter` (up to
    /// `pubsub_hold` entries), counted as delivered.
    fn hand_out(&self, out: Vec<Held>) -> Vec<Entry> {
        if out.is_empty() {
            return Vec::new();
        }
        self.counters
            .delivered
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        let mut held = self.held.lock().expect("not poisoned");
        let entries = out
            .into_iter()
            .map(|h| {
                let entry = h.entry.clone();
                held.insert(h);
                entry
            })
            .collect();
        let released = held.bound(self.opts.pubsub_hold.max(1));
        if released > 0 {
            self.counters
                .released
                .fetch_add(released, Ordering::Relaxed);
        }
        entries
    }

    /// The structured CloudEvent of a message received on `channel`, and
    /// the bytes as received when it had to be wrapped. Records the
    /// channel's format (bare JSON or CloudEvents JSON) for publishing.
    fn structured(&self, channel: &Channel, received: Bytes) -> (Bytes, Option<Bytes>) {
        // What every CloudEvents writer we know of starts with; anything
        // else is probed (a CloudEvent, bare JSON, or not JSON at all).
        let (payload, original, format) =
            if received.starts_with(b"{\"specversion\":") || codec::is_structured(&received) {
                (received, None, STRUCTURED)
            } else {
                match codec::wrap_legacy(&channel.ty, &source_of(&channel.name), &received) {
                    Some(wrapped) => (wrapped, Some(received), BARE),
                    // Not JSON: handed out as it is, for the worker to dead-letter.
                    None => return (received, None),
                }
            };
        if channel.seen.fetch_or(format, Ordering::Relaxed) & format == 0
            && self.client.inner.formats.record(&channel.ty, format)
        {
            let publishes = if self.client.publishes_bare(&channel.ty) {
                "bare JSON"
            } else {
                "CloudEvents JSON"
            };
            tracing::warn!(
                channel = %eventbus_core::escape::Escaped(&channel.name),
                "pub/sub channel `{}` carries both bare JSON and CloudEvents JSON: its publishers disagree, and readers of bare JSON (`json.loads(msg)[\"id\"]`) get the CloudEvents' envelopes; this service publishes {publishes} on it ({})",
                eventbus_core::escape::Escaped(&channel.name),
                self.client.codec_reason(&channel.ty),
            );
        }
        (payload, original)
    }

    pub(crate) fn ack(&self, ids: &[DeliveryId]) {
        let mut held = self.held.lock().expect("not poisoned");
        for id in ids {
            held.remove(EntryId::of(*id).seq);
        }
    }

    /// Forgets the entries held for `retry_later`; returns how many.
    pub(crate) fn close(&self) -> u64 {
        let mut held = self.held.lock().expect("not poisoned");
        let n = held.live as u64;
        *held = HeldRing::default();
        n
    }

    pub(crate) fn retry_later(&self, id: EntryId, delay: Duration) -> Result<()> {
        let entry = self
            .held
            .lock()
            .expect("not poisoned")
            .remove(id.seq)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "pub/sub entry {id} is no longer held (acked, or released because more than `pubsub_hold` entries were outstanding)"
                ))
            })?;
        let tx = self.retries_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut retry = entry;
            retry.entry.delivery_count += 1;
            let _ = tx.send(retry);
        });
        Ok(())
    }

    /// Records the entry in the DLQ with the bytes as received (not their
    /// wrapping) and the channel it came on.
    pub(crate) async fn dead_letter(&self, entry: &Entry, info: &DeadLetterInfo) -> Result<String> {
        let held = self.held.lock().expect("not poisoned").remove(entry.id.seq);
        let dlq = self.client.keys().dlq();
        // An entry no longer held (released past `pubsub_hold`): its
        // wrapping, on the channel of its type.
        let (channel, payload) = match held {
            Some(h) => (
                h.channel.name.clone(),
                h.original.unwrap_or_else(|| entry.payload.clone()),
            ),
            None => (
                self.client.keys().channel(&entry.event_type),
                entry.payload.clone(),
            ),
        };
        let mut inv = scripts::DEAD_LETTER.prepare_invoke();
        inv.key(&dlq)
            .key(&dlq)
            .key(&dlq)
            .arg(&self.group)
            .arg(entry.id.to_string())
            .arg(dead_type(entry, info))
            .arg(&payload[..])
            .arg(&info.handler)
            .arg(info.attempts)
            .arg(&info.error)
            .arg(codec::format_time(SystemTime::now()))
            .arg("0")
            .arg("0")
            .arg(&channel)
            .arg(info.event_id.as_deref().unwrap_or(""));
        let id: String = self.client.run_script("dead-letter script", &inv).await?;
        tracing::warn!(group = %self.group, handler = %info.handler, event_type = %eventbus_core::escape::Escaped(&entry.event_type), error = %eventbus_core::escape::Escaped(&info.error), dlq_id = %id, "event dead-lettered");
        Ok(id)
    }
}

async fn run_subscriber(
    client: Client,
    sub: Subscription,
    first: redis::aio::PubSub,
    tx: mpsc::Sender<Message>,
    counters: Arc<Counters>,
) {
    let mut conn = Some(first);
    let mut delay = Duration::from_millis(50);
    let mut last_drop_log: Option<Instant> = None;
    let mut drops_since_log = 0u64;
    // Channel name -> channel, allocated once per channel.
    let mut channels: HashMap<String, Arc<Channel>> = HashMap::new();
    loop {
        let ps = match conn.take() {
            Some(ps) => ps,
            None => match subscribe(&client, &sub).await {
                Ok(ps) => {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("pub/sub subscriber reconnected");
                    delay = Duration::from_millis(50);
                    ps
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pub/sub subscriber cannot reconnect; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            let name = msg.get_channel_name();
            let channel = match channels.get(name) {
                Some(c) => c.clone(),
                None => {
                    let ty = Arc::from(client.keys().type_of_channel(name));
                    let c = Arc::new(Channel {
                        name: name.to_owned(),
                        ty,
                        seen: AtomicU8::new(0),
                    });
                    // Bounded: a pattern subscription may see any channel name.
                    if channels.len() < MAX_CHANNELS {
                        channels.insert(name.to_owned(), c.clone());
                    }
                    c
                }
            };
            let m = Message {
                channel,
                payload: msg.get_payload_bytes().to_vec(),
            };
            match tx.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    drops_since_log += 1;
                    if last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(
                            dropped = drops_since_log,
                            total = counters.dropped.load(Ordering::Relaxed),
                            channel = %eventbus_core::escape::Escaped(&m.channel.name),
                            "pub/sub buffer full: dropping messages (consumer too slow; raise `pubsub_buffer` or use Streams)"
                        );
                        last_drop_log = Some(Instant::now());
                        drops_since_log = 0;
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if tx.is_closed() {
            return;
        }
        tracing::warn!(
            "pub/sub connection lost; reconnecting (messages published meanwhile are lost: at-most-once)"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64) -> Held {
        let channel = Arc::new(Channel {
            name: "review_created".into(),
            ty: Arc::from("review_created"),
            seen: AtomicU8::new(0),
        });
        Held {
            entry: Entry {
                id: EntryId {
                    stream: PUBSUB_STREAM,
                    ms: 0,
                    seq,
                },
                event_type: channel.ty.clone(),
                payload: Bytes::from(format!("{{\"n\":{seq}}}")),
                delivery_count: 1,
            },
            channel,
            original: None,
        }
    }

    #[test]
    fn held_entries_are_found_by_number_until_settled_and_the_oldest_go_past_the_bound() {
        let mut ring = HeldRing::default();
        for seq in 1..=5 {
            ring.insert(held(seq));
        }
        assert_eq!(ring.live, 5);
        // Settled out of order: a hole in the middle, then the front.
        assert_eq!(ring.remove(3).map(|h| h.entry.id.seq), Some(3));
        assert!(ring.remove(3).is_none(), "settled twice");
        assert_eq!(ring.remove(1).map(|h| h.entry.id.seq), Some(1));
        assert_eq!((ring.front, ring.live), (2, 3));
        // Beyond the bound the oldest held go (counted), holes are not counted.
        for seq in 6..=8 {
            ring.insert(held(seq));
        }
        assert_eq!(ring.bound(4), 2, "2 and 4 released");
        assert!(ring.remove(2).is_none() && ring.remove(4).is_none());
        assert_eq!(ring.live, 4);
        for seq in [5, 6, 7, 8] {
            assert_eq!(ring.remove(seq).map(|h| h.entry.id.seq), Some(seq));
        }
        assert_eq!((ring.live, ring.slots.len()), (0, 0));
        // Numbers never given, or below the queue, are not there.
        assert!(ring.remove(0).is_none() && ring.remove(100).is_none());
        // A gap in the numbers (a retry renumbered past others) is kept in order.
        ring.insert(held(20));
        ring.insert(held(23));
        assert_eq!(ring.live, 2);
        assert_eq!(ring.remove(23).map(|h| h.entry.id.seq), Some(23));
        assert_eq!(ring.remove(20).map(|h| h.entry.id.seq), Some(20));
        assert_eq!(ring.live, 0);
    }
}
