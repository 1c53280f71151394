//! `memory://`: the in-process transport.
//!
//! Same semantics as the durable transports (groups, competing subscribers,
//! at-least-once with redelivery of what a subscriber left unacknowledged,
//! delayed retries, dead-letter queue, scheduled messages, one claim per
//! schedule tick), but nothing survives the process. Time is tokio's, so
//! tests can run schedules and retries on a paused clock.
//!
//! `memory://` gives a private instance per bus; `memory://name` shares one
//! instance, by name, between the buses of a process.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Capabilities, DeadLetter, DeadLetterInfo, Delivery, DeliveryId, EventType, GroupSpec,
    GroupStats, Outgoing, Subscriber, Topics, Transport,
};
use crate::error::{Error, Result};
use eventbus_core::feed::{Cursor, Feed, FeedEntry, FeedError, FeedPage};

/// How many published events the feed of a memory transport keeps unless
/// told otherwise (`memory://?retain=N`).
pub const DEFAULT_FEED_RETENTION: usize = 10_000;

/// The last `retain` events published, numbered from 1.
struct Log {
    entries: VecDeque<Msg>,
    /// The number of the first entry kept.
    first: u64,
    retain: usize,
}

impl Log {
    fn new(retain: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 1,
            retain,
        }
    }

    fn push(&mut self, msg: &Msg) {
        if self.retain == 0 {
            return;
        }
        if self.entries.len() == self.retain {
            self.entries.pop_front();
            self.first += 1;
        }
        self.entries.push_back(msg.clone());
    }

    /// The number the next entry gets.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Where a read after `after` starts, as an index into `entries`.
    fn start(&self, after: Option<&Cursor>) -> std::result::Result<usize, FeedError> {
        let Some(cursor) = after else {
            return Ok(0);
        };
        let n: u64 = cursor.as_str().parse().map_err(|_| {
            FeedError::InvalidCursor(format!(
                "`{}` is not a cursor of this feed (the memory transport's cursors are event numbers, like `42`)",
                eventbus_core::escape::Escaped(cursor.as_str())
            ))
        })?;
        if n >= self.end() {
            return Err(FeedError::InvalidCursor(format!(
                "cursor `{n}` is ahead of this feed, which has {} events: it was issued by another process (the memory transport keeps nothing across restarts)",
                self.end() - 1
            )));
        }
        if n + 1 < self.first {
            return Err(FeedError::Expired {
                cursor: cursor.clone(),
                earliest: Cursor::new((self.first - 1).to_string()),
            });
        }
        Ok((n + 1 - self.first) as usize)
    }
}

impl MemoryTransport {
    /// Whether an entry of `topics` is after the one `after` names.
    fn has_after(
        &self,
        after: Option<&Cursor>,
        topics: &Topics,
    ) -> std::result::Result<bool, FeedError> {
        let log = self.shared.log.lock();
        let start = log.start(after)?;
        Ok(log
            .entries
            .range(start..)
            .any(|m| topics.contains(&m.event_type)))
    }
}

impl Feed for MemoryTransport {
    fn read<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        limit: usize,
    ) -> BoxFuture<'a, std::result::Result<FeedPage, FeedError>> {
        let page = (|| {
            let log = self.shared.log.lock();
            let start = log.start(after)?;
            let mut entries = Vec::new();
            for (i, msg) in log.entries.range(start..).enumerate() {
                if entries.len() >= limit {
                    break;
                }
                if topics.contains(&msg.event_type) {
                    entries.push(FeedEntry {
                        cursor: Cursor::new((log.first + (start + i) as u64).to_string()),
                        event_type: msg.event_type.clone(),
                        payload: msg.payload.clone(),
                    });
                }
            }
            let next = match entries.last() {
                Some(last) => Some(last.cursor.clone()),
                None => after.cloned(),
            };
            Ok(FeedPage { entries, next })
        })();
        Box::pin(std::future::ready(page))
    }

    fn wait<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<(), FeedError>> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            loop {
                let notified = self.shared.log_wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.has_after(after, topics)? {
                    return Ok(());
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(());
                }
            }
        })
    }
}

/// The in-process transport. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("MemoryTransport")
            .field("groups", &st.groups.len())
            .field("dead_letters", &st.dead.len())
            .finish()
    }
}

struct Shared {
    state: Mutex<State>,
    /// What was published, for the feed (lock order: `state`, then `log`).
    log: Mutex<Log>,
    /// Wakes feed readers waiting for what comes after the log's end.
    log_wake: Notify,
    /// Wakes the timer task when an earlier deadline was added (or on drop).
    timer: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.timer.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// Groups subscribed to each type.
    by_type: HashMap<String, Vec<Arc<Group>>>,
    /// Groups subscribed to every type.
    all: Vec<Arc<Group>>,
    groups: HashMap<String, Arc<Group>>,
    /// The live subscribers of each broadcast group: each has a queue of its
    /// own, unregistered when it goes away.
    broadcast: HashMap<String, Vec<Arc<Group>>>,
    /// Scheduled publishes and delayed retries, by due time.
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    dead: BTreeMap<u64, DeadLetter>,
    dead_seq: u64,
    ticks: HashSet<(String, u64)>,
    timer_task: bool,
}

struct Timer {
    due: Instant,
    seq: u64,
    what: TimerKind,
}

enum TimerKind {
    Publish(Outgoing),
    Retry {
        group: Arc<Group>,
        payload: Msg,
        attempt: u32,
    },
}

/// A message waiting in (or handed out from) a group: its type and bytes.
#[derive(Clone)]
struct Msg {
    event_type: EventType,
    payload: Bytes,
    /// When it was published (for [`Transport::group_stats`]).
    queued: Instant,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct Group {
    name: String,
    handler: String,
    /// Handed out, not yet settled. Lock order: `in_flight`, then `queue`
    /// (publishers take only `queue`, acks only `in_flight`, so the two
    /// sides of a busy group rarely wait for each other).
    in_flight: Mutex<InFlight>,
    queue: Mutex<GroupQueue>,
    notify: Notify,
}

#[derive(Default)]
struct GroupQueue {
    ready: VecDeque<(Msg, u32)>,
    /// Retries waiting for their delay.
    delayed: usize,
}

#[derive(Default)]
struct InFlight {
    /// id -> (payload, attempt, subscriber).
    map: HashMap<u64, (Msg, u32, u64), std::hash::BuildHasherDefault<IdHasher>>,
    next_id: u64,
}

impl InFlight {
    /// Removes a delivery that subscriber `me` holds.
    fn take(&mut self, id: DeliveryId, me: u64) -> Option<(Msg, u32)> {
        let id = id.0 as u64;
        match self.map.get(&id) {
            Some((_, _, owner)) if *owner == me => self.map.remove(&id).map(|(p, a, _)| (p, a)),
            _ => None,
        }
    }
}

/// Delivery ids are sequence numbers: they need no hashing, only spreading.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Group {
    fn push(&self, payload: Msg, attempt: u32) {
        self.queue.lock().ready.push_back((payload, attempt));
        self.notify.notify_one();
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Shared>>> {
    static NAMED: std::sync::OnceLock<Mutex<HashMap<String, Weak<Shared>>>> =
        std::sync::OnceLock::new();
    NAMED.get_or_init(Default::default)
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A new, private instance.
    pub fn new() -> Self {
        Self::with_retention(DEFAULT_FEED_RETENTION)
    }

    /// A new, private instance whose [feed](Transport::feed) keeps the last
    /// `events` published (0: no feed).
    pub fn with_retention(events: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                log: Mutex::new(Log::new(events)),
                log_wake: Notify::new(),
                timer: Arc::new(Notify::new()),
            }),
        }
    }

    /// The process-wide instance called `name`, created on first use.
    pub fn named(name: &str) -> Self {
        Self::named_with_retention(name, DEFAULT_FEED_RETENTION)
    }

    /// [`MemoryTransport::named`], created (on first use) with a feed that
    /// keeps the last `events` published.
    fn named_with_retention(name: &str, events: usize) -> Self {
        let mut named = registry().lock();
        if let Some(shared) = named.get(name).and_then(Weak::upgrade) {
            return Self { shared };
        }
        let t = Self::with_retention(events);
        named.insert(name.to_owned(), Arc::downgrade(&t.shared));
        t
    }

    /// Opens `memory://` (private) or `memory://name` (shared by name);
    /// `?retain=N` sets how many published events the feed keeps (default
    /// 10,000; `retain=0`: no feed).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("memory://").ok_or_else(|| {
            Error::Config(format!(
                "`{url}` is not a memory URL; write `memory://` or `memory://name`"
            ))
        })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut retain = DEFAULT_FEED_RETENTION;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("retain", n)) => {
                    retain = n.parse().map_err(|_| {
                        Error::Config(format!(
                            "`{url}`: `retain={n}` must be a number of events, like `retain=100000`"
                        ))
                    })?;
                }
                _ => {
                    return Err(Error::Config(format!(
                        "`{url}`: unknown option `{pair}`; a memory URL takes only `retain=N`, as in `memory://orders?retain=100000`"
                    )));
                }
            }
        }
        let name = rest.trim_end_matches('/');
        if name.contains(['/', '?', '#']) {
            return Err(Error::Config(format!(
                "`{url}`: a memory URL takes only an optional instance name, as in `memory://orders`"
            )));
        }
        Ok(if name.is_empty() {
            Self::with_retention(retain)
        } else {
            Self::named_with_retention(name, retain)
        })
    }

    /// True when no message is queued, being handled, or waiting for a retry
    /// (scheduled publishes not yet due do not count).
    pub fn is_idle(&self) -> bool {
        let st = self.shared.state.lock();
        st.groups.values().all(|g| {
            let f = g.in_flight.lock();
            let q = g.queue.lock();
            q.ready.is_empty() && f.map.is_empty() && q.delayed == 0
        })
    }

    /// Messages waiting in `group` (ready, in flight, delayed).
    pub fn pending(&self, group: &str) -> usize {
        let st = self.shared.state.lock();
        st.groups.get(group).map_or(0, |g| {
            let f = g.in_flight.lock();
            let q = g.queue.lock();
            q.ready.len() + f.map.len() + q.delayed
        })
    }

    fn group(&self, spec: &GroupSpec) -> Arc<Group> {
        let mut st = self.shared.state.lock();
        if !spec.broadcast
            && let Some(g) = st.groups.get(&spec.group)
        {
            return g.clone();
        }
        let g = Arc::new(Group {
            name: spec.group.clone(),
            handler: spec.handler.clone(),
            in_flight: Mutex::new(InFlight::default()),
            queue: Mutex::new(GroupQueue::default()),
            notify: Notify::new(),
        });
        match &spec.topics {
            Topics::All => st.all.push(g.clone()),
            Topics::Types(types) => {
                for t in types {
                    st.by_type.entry(t.clone()).or_default().push(g.clone());
                }
            }
        }
        if spec.broadcast {
            st.broadcast
                .entry(spec.group.clone())
                .or_default()
                .push(g.clone());
        } else {
            st.groups.insert(spec.group.clone(), g.clone());
        }
        g
    }

    /// Unregisters the queue of a broadcast subscriber that went away.
    fn forget(&self, group: &Arc<Group>) {
        let mut st = self.shared.state.lock();
        let st = &mut *st;
        st.all.retain(|g| !Arc::ptr_eq(g, group));
        for groups in st.by_type.values_mut() {
            groups.retain(|g| !Arc::ptr_eq(g, group));
        }
        st.by_type.retain(|_, groups| !groups.is_empty());
        if let Some(subs) = st.broadcast.get_mut(&group.name) {
            subs.retain(|g| !Arc::ptr_eq(g, group));
            if subs.is_empty() {
                st.broadcast.remove(&group.name);
            }
        }
    }

    fn route(shared: &Shared, st: &State, message: &Outgoing) {
        let msg = Msg {
            event_type: EventType::from(&message.event_type),
            payload: message.payload.clone(),
            queued: Instant::now(),
        };
        shared.log.lock().push(&msg);
        if let Some(groups) = st.by_type.get(&*message.event_type) {
            for g in groups {
                g.push(msg.clone(), 1);
            }
        }
        for g in &st.all {
            g.push(msg.clone(), 1);
        }
    }

    fn add_timer(&self, due: Instant, what: TimerKind) {
        let mut st = self.shared.state.lock();
        st.timer_seq += 1;
        let seq = st.timer_seq;
        let earliest = st.timers.peek().is_none_or(|Reverse(t)| due < t.due);
        st.timers.push(Reverse(Timer { due, seq, what }));
        if !st.timer_task {
            st.timer_task = true;
            tokio::spawn(timer_loop(
                Arc::downgrade(&self.shared),
                self.shared.timer.clone(),
            ));
        } else if earliest {
            self.shared.timer.notify_one();
        }
    }
}

async fn timer_loop(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        let Some(s) = shared.upgrade() else { return };
        let next_due = {
            let mut st = s.state.lock();
            let now = Instant::now();
            while st.timers.peek().is_some_and(|Reverse(t)| t.due <= now) {
                let Some(Reverse(timer)) = st.timers.pop() else {
                    break;
                };
                match timer.what {
                    TimerKind::Publish(msg) => MemoryTransport::route(&s, &st, &msg),
                    TimerKind::Retry {
                        group,
                        payload,
                        attempt,
                    } => {
                        {
                            let mut q = group.queue.lock();
                            q.delayed -= 1;
                            q.ready.push_back((payload, attempt));
                        }
                        group.notify.notify_one();
                    }
                }
            }
            st.timers.peek().map(|Reverse(t)| t.due)
        };
        s.log_wake.notify_waiters();
        drop(s);
        match next_due {
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Groups compete; a broadcast group gives each subscriber a queue of its own.
    fn capabilities(&self) -> Capabilities {
        Capabilities::COMPETING.with_broadcast(true)
    }

    fn feed(&self) -> Option<&dyn Feed> {
        (self.shared.log.lock().retain > 0).then_some(self as &dyn Feed)
    }

    /// Lag: waiting and delayed retries; pending: handed out; the oldest of
    /// either, since it was published.
    fn group_stats<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> Option<BoxFuture<'a, Result<GroupStats>>> {
        let g = self.shared.state.lock().groups.get(&group.group).cloned();
        let stats = g.map_or_else(
            || GroupStats::new(0, 0, Duration::ZERO),
            |g| {
                let f = g.in_flight.lock();
                let q = g.queue.lock();
                let oldest = q
                    .ready
                    .iter()
                    .map(|(m, _)| m.queued)
                    .chain(f.map.values().map(|(m, _, _)| m.queued))
                    .min();
                GroupStats::new(
                    (q.ready.len() + q.delayed) as u64,
                    f.map.len() as u64,
                    oldest.map_or(Duration::ZERO, |t| t.elapsed()),
                )
            },
        );
        Some(Box::pin(std::future::ready(Ok(stats))))
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(
            self.publish_now(batch).unwrap_or(Ok(())),
        ))
    }

    fn publish_now(&self, batch: &[Outgoing]) -> Option<Result<()>> {
        let st = self.shared.state.lock();
        for message in batch {
            Self::route(&self.shared, &st, message);
        }
        drop(st);
        self.shared.log_wake.notify_waiters();
        Some(Ok(()))
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        let delay = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if delay.is_zero() {
            let st = self.shared.state.lock();
            Self::route(&self.shared, &st, &message);
            drop(st);
            self.shared.log_wake.notify_waiters();
        } else {
            self.add_timer(Instant::now() + delay, TimerKind::Publish(message));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        // A broadcast group keeps nothing before its subscribers come.
        if !group.broadcast {
            self.group(group);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe<'a>(&'a self, spec: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        let group = self.group(spec);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let sub: Box<dyn Subscriber> = Box::new(MemorySubscriber {
            transport: self.clone(),
            group,
            me: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            private: spec.broadcast,
        });
        Box::pin(std::future::ready(Ok(sub)))
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        let mut st = self.shared.state.lock();
        let claimed = st.ticks.insert((schedule.to_owned(), tick_ms));
        if st.ticks.len() > 10_000 {
            // Ticks are claimed in time order; old ones are never asked again.
            let keep = tick_ms.saturating_sub(86_400_000);
            st.ticks.retain(|(_, t)| *t >= keep);
        }
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        let st = self.shared.state.lock();
        let list = st.dead.values().take(limit).cloned().collect();
        Box::pin(std::future::ready(Ok(list)))
    }

    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut st = self.shared.state.lock();
        let removed = dead_letter_id
            .parse::<u64>()
            .ok()
            .and_then(|id| st.dead.remove(&id))
            .is_some();
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut st = self.shared.state.lock();
        let found = dead_letter_id.parse::<u64>().ok().and_then(|id| {
            let group = &st.dead.get(&id)?.group;
            // A broadcast group's dead letter goes to its live subscribers.
            let groups = match st.groups.get(group) {
                Some(g) => vec![g.clone()],
                None => st.broadcast.get(group).cloned()?,
            };
            Some((groups, st.dead.remove(&id)?))
        });
        Box::pin(std::future::ready(Ok(match found {
            Some((groups, dl)) => {
                let event_type = dl
                    .event_type
                    .map_or(EventType::from_static(""), EventType::from);
                let msg = Msg {
                    event_type,
                    payload: dl.payload,
                    queued: Instant::now(),
                };
                for group in groups {
                    group.push(msg.clone(), 1);
                }
                true
            }
            None => false,
        })))
    }
}

struct MemorySubscriber {
    transport: MemoryTransport,
    group: Arc<Group>,
    /// This subscriber's id, recorded with each delivery it is handed.
    me: u64,
    /// A broadcast subscriber: the group's queue is its own.
    private: bool,
}

impl MemorySubscriber {
    /// Hands out up to `max` waiting messages (into `out`); how many.
    fn take(&self, max: usize, out: &mut Vec<Delivery>) -> usize {
        let mut f = self.group.in_flight.lock();
        let mut q = self.group.queue.lock();
        let n = q.ready.len().min(max);
        for (msg, attempt) in q.ready.drain(..n) {
            let id = f.next_id;
            f.next_id += 1;
            f.map.insert(id, (msg.clone(), attempt, self.me));
            out.push(Delivery {
                id: DeliveryId(u128::from(id)),
                event_type: msg.event_type,
                payload: msg.payload,
                attempt,
            });
        }
        if n > 0 && !q.ready.is_empty() {
            // Let a competing subscriber take the rest.
            self.group.notify.notify_one();
        }
        n
    }
}

impl Subscriber for MemorySubscriber {
    fn settles_inline(&self) -> bool {
        true
    }

    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let max = max.max(1);
            loop {
                let notified = self.group.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let mut out = Vec::new();
                if self.take(max, &mut out) > 0 {
                    return Ok(out);
                }
                notified.await;
            }
        })
    }

    fn next_now(&self, max: usize, out: &mut Vec<Delivery>) -> usize {
        self.take(max, out)
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.ack_now(ids).unwrap_or(Ok(()))))
    }

    fn ack_now(&self, ids: &[DeliveryId]) -> Option<Result<()>> {
        let mut f = self.group.in_flight.lock();
        for id in ids {
            let id = id.0 as u64;
            if f.map
                .get(&id)
                .is_some_and(|(_, _, owner)| *owner == self.me)
            {
                f.map.remove(&id);
            }
        }
        Some(Ok(()))
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        let mut f = self.group.in_flight.lock();
        if let Some((payload, attempt)) = f.take(id, self.me) {
            // Moved while `in_flight` is held, so it is never in neither place.
            let mut q = self.group.queue.lock();
            if delay.is_zero() {
                q.ready.push_back((payload, attempt + 1));
                drop((q, f));
                self.group.notify.notify_one();
            } else {
                q.delayed += 1;
                drop((q, f));
                self.transport.add_timer(
                    Instant::now() + delay,
                    TimerKind::Retry {
                        group: self.group.clone(),
                        payload,
                        attempt: attempt + 1,
                    },
                );
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        let taken = self.group.in_flight.lock().take(delivery.id, self.me);
        if taken.is_some() {
            let mut st = self.transport.shared.state.lock();
            st.dead_seq += 1;
            let id = st.dead_seq;
            let dl = DeadLetter::new(
                id.to_string(),
                self.group.name.clone(),
                DeadLetterInfo {
                    handler: if info.handler.is_empty() {
                        self.group.handler.clone()
                    } else {
                        info.handler
                    },
                    ..info
                },
                SystemTime::now(),
                delivery.payload.clone(),
            );
            st.dead.insert(id, dl);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Drop for MemorySubscriber {
    fn drop(&mut self) {
        if self.private {
            // Nothing to hand back: no other subscriber shares this queue.
            self.transport.forget(&self.group);
            return;
        }
        // At-least-once: whatever this subscriber did not settle goes back.
        let mut f = self.group.in_flight.lock();
        let mine: Vec<u64> = f
            .map
            .iter()
            .filter(|(_, (_, _, owner))| *owner == self.me)
            .map(|(id, _)| *id)
            .collect();
        if mine.is_empty() {
            return;
        }
        let mut back: Vec<(u64, Msg, u32)> = mine
            .into_iter()
            .filter_map(|id| f.map.remove(&id).map(|(p, a, _)| (id, p, a)))
            .collect();
        back.sort_by_key(|(id, _, _)| Reverse(*id));
        let mut q = self.group.queue.lock();
        for (_, payload, attempt) in back {
            q.ready.push_front((payload, attempt + 1));
        }
        drop((q, f));
        self.group.notify.notify_one();
    }
}
