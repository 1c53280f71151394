//! Streams mode: durable, consumer groups, at-least-once.
//!
//! A consumer reads with `XREADGROUP ... BLOCK` on a connection of its own
//! (never the shared one, which other callers must keep using), so an idle
//! consumer wakes the moment an entry arrives. Entries stay pending until
//! acked; delayed retries wait in a per-group zset while staying pending, and
//! come back through `XCLAIM`, which bumps Redis's delivery count, so a
//! poison message that crashes every consumer still ends in the DLQ.
//!
//! Each consumer that reads shows it is alive (see [`liveness`](crate::liveness)):
//! the entries of a consumer whose heartbeat stopped are taken over within
//! seconds, those of a live one never; `claim_idle` is the fallback for
//! consumers without heartbeats. A consumer of `Topics::All` finds streams
//! through `{P}:types` and by scanning for `{P}:stream:*`, so it also reads
//! the streams only other producers write.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::Value;

use crate::client::{Client, source_of};
use crate::codec;
use crate::config::Layout;
use crate::conn::{self, Conn};
use crate::consumer::{
    ConsumerOptions, ConsumerStats, Entry, EntryId, StartFrom, dead_type, default_consumer_name,
};
use crate::error::{Error, Result};
use crate::keys::hash_slot;
use crate::liveness::Liveness;
use crate::scripts;
use eventbus_core::transport::{DeadLetterInfo, DeliveryId, Topics};

#[derive(Debug, Clone)]
enum SlotKind {
    /// A per-type stream: every entry is of this type.
    Type(Arc<str>),
    /// The django-layout stream: the type is in `event_type`.
    Django,
    /// The group's replay stream: the type is in `type`.
    Replay,
}

#[derive(Debug)]
struct Slot {
    key: String,
    kind: SlotKind,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    by_key: HashMap<String, u32>,
    /// The slots `XREADGROUP` reads (all of them, in order).
    read: Vec<u32>,
}

impl Table {
    fn add(&mut self, key: String, kind: SlotKind, read: bool) -> u32 {
        if let Some(&i) = self.by_key.get(&key) {
            if read && !self.read.contains(&i) {
                self.read.push(i);
            }
            return i;
        }
        let i = self.slots.len() as u32;
        self.by_key.insert(key.clone(), i);
        self.slots.push(Slot { key, kind });
        if read {
            self.read.push(i);
        }
        i
    }

    fn read_keys(&self) -> Vec<(u32, String)> {
        self.read
            .iter()
            .map(|&i| (i, self.slots[i as usize].key.clone()))
            .collect()
    }
}

struct Reader {
    conn: Option<Conn>,
    buffer: VecDeque<Entry>,
    /// Set while a blocking read is in flight, cleared when it completes: if
    /// the read was cancelled or failed, entries Redis delivered to us may
    /// never have arrived, so the next read first re-reads our pending history.
    need_history: bool,
    next_claim: Instant,
    next_types_poll: Instant,
    next_retry_poll: Instant,
    /// While the group has dead members: when to look for their entries next.
    next_dead_check: Instant,
    cursors: HashMap<u32, String>,
    interned: HashMap<Vec<u8>, Arc<str>>,
    /// A `Topics::All` consumer's sweep for streams.
    sweep: Sweep,
}

/// Where a `Topics::All` consumer's sweep of the keyspace for `{P}:stream:*`
/// keys is.
#[derive(Debug, Default)]
struct Sweep {
    /// The `SCAN` cursor (0: the next step starts a new sweep).
    cursor: u64,
    /// Keys of the pattern found not to be streams in this sweep (each is
    /// looked at once per sweep).
    not_streams: HashSet<String>,
    /// The sweep failed (e.g. a managed Redis that refuses `SCAN` or
    /// `CLUSTER GETKEYSINSLOT`) and that was logged: `{P}:types` only.
    warned: bool,
    /// Streams whose group could not be created (logged once), and when to
    /// try again.
    failed: HashMap<String, Instant>,
}

/// How long a stream whose group could not be created is left alone.
const RETRY_FAILED_STREAM: Duration = Duration::from_secs(60);

/// `SCAN` pages (of [`SCAN_COUNT`] keys) one look for new streams takes: a
/// keyspace of up to 8,000 keys is swept at every `types_poll`, a larger one
/// over several, so one look stays cheap however large the database.
const SCAN_PAGES_PER_POLL: usize = 8;
/// The `COUNT` of each `SCAN` page.
const SCAN_COUNT: usize = 1000;
/// The pages a consumer's first sweep may take (10 million keys).
const SCAN_PAGES_AT_START: usize = 10_000;

pub(crate) struct StreamConsumer {
    client: Client,
    group: String,
    name: String,
    all: bool,
    /// Django layout with `Topics::Types`: the wanted types.
    filter: Option<HashSet<String>>,
    opts: ConsumerOptions,
    retry_key: String,
    /// The group's liveness zset.
    alive_key: String,
    /// This consumer's heartbeat.
    liveness: Arc<Liveness>,
    /// `Topics::All`: where the group starts on a stream found later (see
    /// [`discovered_start`]).
    discover_from: String,
    table: RwLock<Table>,
    reader: tokio::sync::Mutex<Reader>,
    /// Entries handed out and not yet acked, retried or dead-lettered.
    outstanding: Mutex<HashSet<EntryId>>,
    /// Due times (epoch ms) of retries this consumer scheduled.
    local_dues: Mutex<BinaryHeap<Reverse<u64>>>,
    delivered: AtomicU64,
    reconnects: AtomicU64,
    reclaimed: AtomicU64,
}

pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn start_id(start: StartFrom) -> String {
    match start {
        StartFrom::Latest => "$".to_owned(),
        StartFrom::Earliest => "0".to_owned(),
        StartFrom::Since(t) => since_id(
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        ),
    }
}

/// The group position before the first entry at or after `ms` (entry ids
/// start with their Unix time in ms, so `<ms>-0` is the first such id).
fn since_id(ms: u64) -> String {
    format!("{}-{}", ms.saturating_sub(1), u64::MAX)
}

/// Where a `Topics::All` group starts on a stream it finds after it was
/// created: at the group's own start, so it misses nothing written since
/// then — [`StartFrom::Since`] its time, or for [`StartFrom::Latest`] the
/// time the consumer was created (on the server's clock, which writes the
/// entry ids) — and never replays a foreign stream's older history (only
/// [`StartFrom::Earliest`] reads from `0`).
async fn discovered_start(client: &Client, start: StartFrom) -> Result<String> {
    Ok(match start {
        StartFrom::Latest => {
            let (secs, micros): (u64, u64) = client.run("TIME", &redis::cmd("TIME")).await?;
            since_id(secs * 1000 + micros / 1000)
        }
        other => start_id(other),
    })
}

/// Stream keys of the pattern `{P}:stream:*` not yet `known`: from a step of
/// `SCAN ... MATCH` (up to `pages` pages, continuing `sweep`), or on a
/// cluster from `CLUSTER GETKEYSINSLOT` on the master of the configuration's
/// hash slot (every key of one prefix lives in that slot, whoever wrote it).
/// Only keys of type `stream` are returned.
async fn find_streams(
    client: &Client,
    sweep: &mut Sweep,
    pages: usize,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let keys = client.keys();
    let mut found: Vec<String> = Vec::new();
    let utf8 = |raw: Vec<Vec<u8>>, found: &mut Vec<String>| {
        found.extend(
            raw.into_iter()
                .filter_map(|k| String::from_utf8(k).ok())
                .filter(|k| keys.type_of_stream(k).is_some_and(|t| !t.is_empty())),
        );
    };
    match client.conn() {
        Conn::Cluster(conn) => {
            use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
            let slot = hash_slot(keys.base());
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("GETKEYSINSLOT").arg(slot).arg(100_000);
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )));
            let reply = conn::retry(
                "CLUSTER GETKEYSINSLOT",
                client.options().reconnect_for,
                || {
                    let (mut conn, cmd, route) = (conn.clone(), cmd.clone(), route.clone());
                    async move { conn.route_command(cmd, route).await }
                },
            )
            .await?;
            let raw: Vec<Vec<u8>> = redis::from_redis_value(reply)
                .map_err(|e| Error::redis("CLUSTER GETKEYSINSLOT", e.into()))?;
            sweep.not_streams.clear();
            utf8(raw, &mut found);
        }
        Conn::Single(_) => {
            let pattern = keys.stream_pattern();
            for _ in 0..pages {
                if sweep.cursor == 0 {
                    sweep.not_streams.clear();
                }
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(sweep.cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let (next, raw): (u64, Vec<Vec<u8>>) = client.run("SCAN", &cmd).await?;
                utf8(raw, &mut found);
                sweep.cursor = next;
                if next == 0 {
                    break;
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found.retain(|k| !known(k) && !sweep.not_streams.contains(k));
    if found.is_empty() {
        return Ok(found);
    }
    let mut pipe = redis::pipe();
    for key in &found {
        pipe.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = client.run_pipe("TYPE", &pipe).await?;
    let mut streams = Vec::with_capacity(found.len());
    for (key, ty) in found.into_iter().zip(types) {
        if ty == "stream" {
            streams.push(key);
        } else {
            sweep.not_streams.insert(key);
        }
    }
    Ok(streams)
}

/// Every per-type stream key (`{P}:stream:*`, found by one whole sweep),
/// for a reader of every type that keeps no sweep of its own.
pub(crate) async fn all_streams(client: &Client) -> Result<Vec<String>> {
    let mut sweep = Sweep::default();
    find_streams(client, &mut sweep, usize::MAX, |_| false).await
}

/// The stream keys of the types registered in `{P}:types`, but for keys of
/// another type (a stream not written yet is created with its group).
async fn registered_streams(client: &Client, types: &[String]) -> Result<Vec<String>> {
    let keys = client.keys();
    let streams: Vec<String> = types.iter().map(|t| keys.stream(t)).collect();
    if streams.is_empty() {
        return Ok(streams);
    }
    let mut pipe = redis::pipe();
    for key in &streams {
        pipe.cmd("TYPE").arg(key);
    }
    let kinds: Vec<String> = client.run_pipe("TYPE", &pipe).await?;
    Ok(streams
        .into_iter()
        .zip(kinds)
        .filter_map(|(key, kind)| match kind.as_str() {
            "stream" | "none" => Some(key),
            _ => {
                tracing::warn!(stream = %eventbus_core::escape::Escaped(&key), kind, "not a stream; a global consumer does not read it");
                None
            }
        })
        .collect())
}

impl StreamConsumer {
    pub(crate) async fn new(
        client: Client,
        group: &str,
        types: Topics,
        opts: ConsumerOptions,
    ) -> Result<Self> {
        let keys = client.keys().clone();
        let mut table = Table::default();
        table.add(keys.replay(group), SlotKind::Replay, true);
        let all = types == Topics::All;
        let mut filter = None;
        let mut sweep = Sweep::default();
        match client.config().layout() {
            Layout::PerType => {
                let list = match types {
                    Topics::Types(list) => list.iter().map(|t| keys.stream(t)).collect(),
                    Topics::All => {
                        let known: Vec<String> = client
                            .run("SMEMBERS", redis::cmd("SMEMBERS").arg(keys.types()))
                            .await?;
                        let mut list = registered_streams(&client, &known).await?;
                        match find_streams(&client, &mut sweep, SCAN_PAGES_AT_START, |_| false)
                            .await
                        {
                            Ok(found) => list.extend(found),
                            Err(Error::Redis { source, .. }) if conn::is_transient(&source) => {
                                tracing::debug!(error = %source, "looking for streams failed; again at the next poll");
                            }
                            Err(e) => {
                                sweep.warned = true;
                                tracing::warn!(error = %e, "cannot look for streams by key pattern; a global consumer reads only the types eventbus publishers registered in {}", keys.types());
                            }
                        }
                        list.sort();
                        list.dedup();
                        list
                    }
                };
                for key in list {
                    let ty = keys.type_of_stream(&key).unwrap_or_default();
                    table.add(key.clone(), SlotKind::Type(Arc::from(ty)), true);
                }
            }
            Layout::Django { stream } => {
                table.add(stream.clone(), SlotKind::Django, true);
                if let Topics::Types(list) = types {
                    filter = Some(list.into_iter().collect());
                }
            }
        }
        let name = match &opts.name {
            Some(n) => {
                crate::keys::check_name("consumer name", n)?;
                n.clone()
            }
            None => default_consumer_name(),
        };
        let now = Instant::now();
        let discover_from = if all {
            discovered_start(&client, opts.start).await?
        } else {
            String::new()
        };
        let liveness = Arc::new(Liveness::new(
            keys.alive(group),
            name.clone(),
            opts.heartbeat_interval,
            opts.heartbeat_timeout,
        ));
        let consumer = StreamConsumer {
            retry_key: keys.retry(group),
            alive_key: keys.alive(group),
            liveness,
            discover_from,
            group: group.to_owned(),
            name,
            all,
            filter,
            reader: tokio::sync::Mutex::new(Reader {
                conn: None,
                buffer: VecDeque::new(),
                // A name given explicitly may own entries from an earlier run.
                need_history: opts.name.is_some(),
                next_claim: now,
                next_types_poll: now + opts.types_poll,
                next_retry_poll: now,
                next_dead_check: now,
                cursors: HashMap::new(),
                interned: HashMap::new(),
                sweep,
            }),
            opts,
            table: RwLock::new(table),
            client,
            outstanding: Mutex::new(HashSet::new()),
            local_dues: Mutex::new(BinaryHeap::new()),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
        };
        let replay = consumer.client.keys().replay(group);
        let streams: Vec<String> = consumer
            .table()
            .read_keys()
            .into_iter()
            .map(|(_, k)| k)
            .filter(|k| *k != replay)
            .collect();
        consumer
            .ensure_groups(&streams, &start_id(consumer.opts.start))
            .await?;
        consumer.ensure_groups(&[replay], "0").await?;
        tracing::debug!(group, consumer = %consumer.name, streams = streams.len(), "stream consumer ready");
        Ok(consumer)
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: 0,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            reclaimed_or_released: self.reclaimed.load(Ordering::Relaxed),
        }
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().expect("not poisoned")
    }

    /// `XGROUP CREATE key group id MKSTREAM` on each key, in one round trip;
    /// an existing group is fine.
    async fn ensure_groups(&self, keys: &[String], id: &str) -> Result<()> {
        match self
            .ensure_groups_each(keys, id)
            .await?
            .into_iter()
            .flatten()
            .next()
        {
            Some(e) => Err(Error::redis("XGROUP CREATE", e)),
            None => Ok(()),
        }
    }

    /// `XGROUP CREATE` on each key, in one round trip: the error of each key
    /// where it failed (an existing group is fine).
    async fn ensure_groups_each(
        &self,
        keys: &[String],
        id: &str,
    ) -> Result<Vec<Option<redis::RedisError>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&self.group)
                .arg(id)
                .arg("MKSTREAM");
        }
        pipe.ignore_errors();
        let results: Vec<redis::RedisResult<Value>> =
            self.client.run_pipe("XGROUP CREATE", &pipe).await?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.err().filter(|e| {
                    e.code() != Some("BUSYGROUP") && !e.to_string().contains("BUSYGROUP")
                })
            })
            .collect())
    }

    pub(crate) async fn read(&self, max: usize) -> Result<Vec<Entry>> {
        let max = max.max(1);
        let mut rd = self.reader.lock().await;
        let started = Instant::now();
        let mut delay = Duration::from_millis(25);
        loop {
            if !rd.buffer.is_empty() {
                return Ok(self.hand_out(&mut rd, max));
            }
            match self.fill(&mut rd, max).await {
                Ok(()) => return Ok(self.hand_out(&mut rd, max)),
                Err(Failure::NoGroup) => {
                    tracing::warn!(group = %self.group, "consumer group or stream missing (Redis lost data?); recreating it at 0");
                    let keys: Vec<String> = self
                        .table()
                        .read_keys()
                        .into_iter()
                        .map(|(_, k)| k)
                        .collect();
                    self.ensure_groups(&keys, "0").await?;
                }
                Err(Failure::Transient(op, e))
                    if started.elapsed() < self.client.options().reconnect_for =>
                {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    rd.need_history = true;
                    let sleep = delay.mul_f64(0.5 + fastrand::f64());
                    tracing::warn!(op, error = %e, group = %self.group, "Redis unreachable; consumer retries in {sleep:?}");
                    tokio::time::sleep(sleep).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(Failure::Transient(op, e)) => return Err(Error::redis(op, e)),
                Err(Failure::Other(e)) => return Err(e),
            }
        }
    }

    fn hand_out(&self, rd: &mut Reader, max: usize) -> Vec<Entry> {
        hand_out(&mut rd.buffer, max, &self.outstanding, &self.delivered)
    }

    /// One round of: housekeeping, due retries, history, then a blocking read.
    /// Leaves entries (possibly none) in the buffer.
    async fn fill(&self, rd: &mut Reader, max: usize) -> Result<(), Failure> {
        // Alive before the first read: what it reads is never up for
        // takeover while this consumer lives.
        self.liveness.start(&self.client).await?;
        let now = Instant::now();
        if self.all && now >= rd.next_types_poll {
            self.refresh_types(rd).await?;
            rd.next_types_poll = now + self.opts.types_poll;
        }
        // A claim script moves entries to this consumer before its reply
        // arrives: if the read is cancelled meanwhile, the next one finds
        // them in the consumer's pending history (no one else would take
        // them from a live consumer).
        if self.liveness.peers_dead() && now >= rd.next_dead_check {
            let history = std::mem::replace(&mut rd.need_history, true);
            let more = self.reclaim_dead(rd, max).await?;
            rd.need_history = history;
            if more {
                // Took as many as asked for; more may be waiting.
                rd.next_dead_check = now;
            } else {
                // The dead members left owning nothing are gone from the
                // zset; the next heartbeat says whether more died.
                self.liveness.peers_handled();
                rd.next_dead_check = now + self.liveness.interval();
            }
            if !rd.buffer.is_empty() {
                return Ok(());
            }
        }
        if now >= rd.next_claim {
            let history = std::mem::replace(&mut rd.need_history, true);
            let more = self.reclaim(rd, max).await?;
            rd.need_history = history;
            if more {
                // Took as many as asked for; more may be waiting: look
                // again at the next read.
                rd.next_claim = now;
            } else {
                self.forget_dead_consumers().await;
                rd.next_claim = now + self.opts.claim_interval;
            }
            if !rd.buffer.is_empty() {
                return Ok(());
            }
        }
        let now_ms = epoch_ms(SystemTime::now());
        let local_due = {
            let mut dues = self.local_dues.lock().expect("not poisoned");
            let mut any = false;
            while dues.peek().is_some_and(|Reverse(d)| *d <= now_ms) {
                dues.pop();
                any = true;
            }
            any
        };
        if local_due || now >= rd.next_retry_poll {
            let history = std::mem::replace(&mut rd.need_history, true);
            self.claim_retries(rd, max, now_ms).await?;
            rd.need_history = history;
            rd.next_retry_poll = now + self.opts.retry_poll;
            if !rd.buffer.is_empty() {
                return Ok(());
            }
        }
        if rd.need_history {
            self.read_history(rd).await?;
            rd.need_history = false;
            if !rd.buffer.is_empty() {
                return Ok(());
            }
        }

        // Block until an entry arrives, but not past the next housekeeping.
        let mut block = self.opts.block;
        if !self.outstanding.lock().expect("not poisoned").is_empty() {
            block = block.min(self.opts.busy_block);
        }
        if let Some(Reverse(due)) = self.local_dues.lock().expect("not poisoned").peek() {
            block = block.min(Duration::from_millis(due.saturating_sub(now_ms)));
        }
        let later = |t: Instant| t.saturating_duration_since(now);
        block = block
            .min(later(rd.next_claim))
            .min(later(rd.next_retry_poll));
        if self.all {
            block = block.min(later(rd.next_types_poll));
        }
        if self.liveness.peers_dead() {
            block = block.min(later(rd.next_dead_check).max(self.liveness.interval()));
        }

        if rd.conn.is_none() {
            let timeout = self.opts.block + self.client.options().response_timeout;
            let conn = self
                .client
                .inner
                .connector
                .connect(timeout)
                .await
                .map_err(|e| match e {
                    Error::Connect {
                        source: Some(src), ..
                    } if conn::is_transient(&src) => Failure::Transient("connect", src),
                    other => Failure::Other(other),
                })?;
            rd.conn = Some(conn);
        }
        let streams = self.table().read_keys();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max);
        let block_ms = block.as_millis() as u64;
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS");
        for (_, key) in &streams {
            cmd.arg(key);
        }
        for _ in &streams {
            cmd.arg(">");
        }
        let mut conn = rd.conn.clone().expect("connected above");
        rd.need_history = true;
        let reply: Value = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| Failure::from_redis("XREADGROUP", e))?;
        rd.need_history = false;
        let mut skipped: HashMap<u32, Vec<String>> = HashMap::new();
        read_reply(
            &self.table(),
            self.filter.as_ref(),
            &mut rd.interned,
            reply,
            &mut rd.buffer,
            &mut skipped,
        );
        if !skipped.is_empty() {
            // Django layout: entries of types this group does not consume.
            let mut pipe = redis::pipe();
            {
                let table = self.table();
                for (idx, ids) in &skipped {
                    pipe.cmd("XACK")
                        .arg(&table.slots[*idx as usize].key)
                        .arg(&self.group)
                        .arg(ids)
                        .ignore();
                }
            }
            self.client
                .run_pipe::<()>("XACK", &pipe)
                .await
                .map_err(Failure::Other)?;
        }
        Ok(())
    }

    fn make_entry(&self, rd: &mut Reader, idx: u32, id: &[u8], fields: Value, count: u32) -> Made {
        make_entry(
            &self.table(),
            self.filter.as_ref(),
            &mut rd.interned,
            idx,
            id,
            fields,
            count,
        )
    }

    fn slot_for_key(&self, key: &str) -> u32 {
        if let Some(&i) = self.table().by_key.get(key) {
            return i;
        }
        let keys = self.client.keys();
        let kind = if keys.django_stream() == Some(key) {
            SlotKind::Django
        } else if let Some(t) = keys.type_of_stream(key) {
            SlotKind::Type(Arc::from(t))
        } else {
            SlotKind::Replay
        };
        self.table
            .write()
            .expect("not poisoned")
            .add(key.to_owned(), kind, false)
    }

    /// A [`Topics::All`] consumer: start reading the streams found since the
    /// last look (types registered in `{P}:types`, and a step of the sweep
    /// for `{P}:stream:*`), from [`discovered_start`].
    async fn refresh_types(&self, rd: &mut Reader) -> Result<(), Failure> {
        let keys = self.client.keys();
        let registered: Vec<String> = self
            .client
            .run("SMEMBERS", redis::cmd("SMEMBERS").arg(keys.types()))
            .await
            .map_err(Failure::Other)?;
        let now = Instant::now();
        rd.sweep.failed.retain(|_, retry_at| *retry_at > now);
        let mut new: Vec<String> = {
            let table = self.table();
            registered
                .iter()
                .map(|t| keys.stream(t))
                .filter(|k| !table.by_key.contains_key(k) && !rd.sweep.failed.contains_key(k))
                .collect()
        };
        if !rd.sweep.warned {
            let found = {
                let table = &self.table;
                let failed = rd.sweep.failed.clone();
                find_streams(&self.client, &mut rd.sweep, SCAN_PAGES_PER_POLL, |k| {
                    failed.contains_key(k)
                        || table.read().expect("not poisoned").by_key.contains_key(k)
                })
                .await
            };
            match found {
                Ok(found) => new.extend(found),
                Err(Error::Redis { source, .. }) if conn::is_transient(&source) => {
                    tracing::debug!(error = %source, "looking for new streams failed; again at the next poll");
                }
                Err(e) => {
                    rd.sweep.warned = true;
                    tracing::warn!(group = %self.group, error = %e, "cannot look for streams by key pattern; this global consumer reads only the types eventbus publishers registered in {}", keys.types());
                }
            }
        }
        new.sort();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let results = self
            .ensure_groups_each(&new, &self.discover_from)
            .await
            .map_err(Failure::from_error)?;
        let mut table = self.table.write().expect("not poisoned");
        let mut added = Vec::with_capacity(new.len());
        for (key, error) in new.into_iter().zip(results) {
            if let Some(e) = error {
                tracing::warn!(group = %self.group, stream = %eventbus_core::escape::Escaped(&key), error = %e, "cannot create the group on this stream; not reading it (tried again in {RETRY_FAILED_STREAM:?})");
                rd.sweep.failed.insert(key, now + RETRY_FAILED_STREAM);
                continue;
            }
            let ty = keys.type_of_stream(&key).unwrap_or_default();
            table.add(key.clone(), SlotKind::Type(Arc::from(ty)), true);
            added.push(key);
        }
        let new = added;
        tracing::debug!(group = %self.group, new = ?new, "consuming new streams");
        Ok(())
    }

    /// Takes over at most `max` entries of consumers of the group that are
    /// dead (liveness deadline passed), however short their idle time; true
    /// when it took `max` (more may be waiting).
    async fn reclaim_dead(&self, rd: &mut Reader, max: usize) -> Result<bool, Failure> {
        let streams = self.table().read_keys();
        let mut inv = scripts::RECLAIM_DEAD.prepare_invoke();
        inv.key(&self.alive_key).key(&self.retry_key);
        for (_, key) in &streams {
            inv.key(key);
        }
        inv.arg(&self.group).arg(&self.name).arg(max);
        let reply: Value = self
            .client
            .run_script("takeover script", &inv)
            .await
            .map_err(Failure::from_error)?;
        let Value::Array(mut parts) = reply else {
            return Ok(false);
        };
        if parts.len() != 2 {
            return Ok(false);
        }
        let Value::Array(claimed) = parts.pop().expect("len 2") else {
            return Ok(false);
        };
        let more = matches!(parts.pop(), Some(Value::Int(1)));
        for item in claimed {
            let Value::Array(mut f) = item else { continue };
            if f.len() != 5 {
                continue;
            }
            let Some((idx, key)) = value_u32(&f[0])
                .and_then(|i| streams.get((i as usize).checked_sub(1)?))
                .cloned()
            else {
                continue;
            };
            let count = value_u32(&f[3]).unwrap_or(2);
            let owner = bulk_string(std::mem::take(&mut f[4])).unwrap_or_default();
            let fields = std::mem::take(&mut f[2]);
            let Some(id) = bulk_bytes(std::mem::take(&mut f[1])) else {
                continue;
            };
            if let Made::Entry(e) = self.make_entry(rd, idx, &id, fields, count) {
                tracing::info!(group = %self.group, stream = %eventbus_core::escape::Escaped(&key), id = %e.id, delivery_count = count, dead_consumer = %eventbus_core::escape::Escaped(&owner), "took over an entry from a consumer whose heartbeat stopped");
                self.reclaimed.fetch_add(1, Ordering::Relaxed);
                rd.buffer.push_back(e);
            }
        }
        Ok(more)
    }

    /// Takes over at most `max` entries pending for longer than `claim_idle`
    /// on other consumers that show no heartbeat (the fallback for older
    /// versions); true when it took `max` (more may be waiting).
    async fn reclaim(&self, rd: &mut Reader, max: usize) -> Result<bool, Failure> {
        let idle_ms = self.opts.claim_idle.as_millis() as u64;
        let count = max.max(100);
        let mut taken = 0;
        let streams = self.table().read_keys();
        for (idx, key) in streams {
            if taken >= max {
                return Ok(true);
            }
            let start = rd.cursors.get(&idx).cloned().unwrap_or_else(|| "-".into());
            let mut inv = scripts::RECLAIM.prepare_invoke();
            inv.key(&key)
                .key(&self.retry_key)
                .key(&self.alive_key)
                .arg(&self.group)
                .arg(&self.name)
                .arg(idle_ms)
                .arg(&start)
                .arg(count)
                .arg(max - taken);
            let reply: Value = self
                .client
                .run_script("reclaim script", &inv)
                .await
                .map_err(Failure::from_error)?;
            let Value::Array(mut parts) = reply else {
                continue;
            };
            if parts.len() != 2 {
                continue;
            }
            let claimed = parts.pop().expect("len 2");
            match parts.pop().and_then(bulk_string) {
                Some(next) if next != "-" => {
                    rd.cursors.insert(idx, next);
                }
                _ => {
                    rd.cursors.remove(&idx);
                }
            }
            let Value::Array(claimed) = claimed else {
                continue;
            };
            for item in claimed {
                let Value::Array(mut f) = item else { continue };
                if f.len() != 3 {
                    continue;
                }
                let count = value_u32(&f[2]).unwrap_or(2);
                let fields = std::mem::take(&mut f[1]);
                let Some(id) = bulk_bytes(std::mem::take(&mut f[0])) else {
                    continue;
                };
                taken += 1;
                if let Made::Entry(e) = self.make_entry(rd, idx, &id, fields, count) {
                    tracing::info!(group = %self.group, stream = %eventbus_core::escape::Escaped(&key), id = %e.id, delivery_count = count, "took over an entry pending longer than claim_idle on a consumer without heartbeat");
                    self.reclaimed.fetch_add(1, Ordering::Relaxed);
                    rd.buffer.push_back(e);
                }
            }
        }
        Ok(taken >= max)
    }

    /// Deletes consumers of the group that own no pending entries and have
    /// been idle for long (their names are unique per process, so they would
    /// pile up). Atomic per stream: a consumer that owns anything is kept.
    async fn forget_dead_consumers(&self) {
        let idle = (self.opts.claim_idle * 10).max(Duration::from_secs(3600));
        let streams = self.table().read_keys();
        for (_, key) in streams {
            let mut inv = FORGET_CONSUMERS.prepare_invoke();
            inv.key(&key).arg(&self.group).arg(idle.as_millis() as u64);
            if let Err(e) = self
                .client
                .run_script::<i64>("forget-consumers script", &inv)
                .await
            {
                tracing::debug!(error = %e, "could not clean up idle consumers");
            }
        }
    }

    async fn claim_retries(&self, rd: &mut Reader, max: usize, now_ms: u64) -> Result<(), Failure> {
        let mut inv = scripts::CLAIM_RETRIES.prepare_invoke();
        inv.key(&self.retry_key)
            .arg(&self.group)
            .arg(&self.name)
            .arg(now_ms)
            .arg(max);
        let reply: Value = self
            .client
            .run_script("retry script", &inv)
            .await
            .map_err(Failure::from_error)?;
        let Value::Array(items) = reply else {
            return Ok(());
        };
        for item in items {
            let Value::Array(mut f) = item else { continue };
            if f.len() != 4 {
                continue;
            }
            let count = value_u32(&f[3]).unwrap_or(2);
            let fields = std::mem::take(&mut f[2]);
            let (Some(key), Some(id)) = (
                bulk_string(std::mem::take(&mut f[0])),
                bulk_bytes(std::mem::take(&mut f[1])),
            ) else {
                continue;
            };
            let idx = self.slot_for_key(&key);
            if let Made::Entry(e) = self.make_entry(rd, idx, &id, fields, count) {
                rd.buffer.push_back(e);
            }
        }
        Ok(())
    }

    /// Re-reads entries pending on this consumer that were delivered by a
    /// read whose reply never arrived (cancelled, connection lost).
    async fn read_history(&self, rd: &mut Reader) -> Result<(), Failure> {
        let streams = self.table().read_keys();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(10_000)
            .arg("STREAMS");
        for (_, key) in &streams {
            cmd.arg(key);
        }
        for _ in &streams {
            cmd.arg("0");
        }
        let reply: Value = self
            .client
            .run("XREADGROUP", &cmd)
            .await
            .map_err(Failure::from_error)?;
        let mut candidates = Vec::new();
        {
            let outstanding = self.outstanding.lock().expect("not poisoned");
            for (key, entries) in stream_replies(reply) {
                let Some(idx) = self.table().by_key.get(&key).copied() else {
                    continue;
                };
                for (id, fields) in entries {
                    match EntryId::parse(idx, &id) {
                        Some(eid) if !outstanding.contains(&eid) => {
                            candidates.push((idx, key.clone(), id, fields))
                        }
                        _ => {}
                    }
                }
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        // Delivery counts, and whether a retry is scheduled (then it is not lost).
        let mut pipe = redis::pipe();
        for (_, key, id, _) in &candidates {
            pipe.cmd("XPENDING")
                .arg(key)
                .arg(&self.group)
                .arg(&**id)
                .arg(&**id)
                .arg(1);
            let mut member = key.as_bytes().to_vec();
            member.push(b'\n');
            member.extend_from_slice(id);
            pipe.cmd("ZSCORE").arg(&self.retry_key).arg(member);
        }
        let replies: Vec<Value> = self
            .client
            .run_pipe("XPENDING", &pipe)
            .await
            .map_err(Failure::from_error)?;
        let mut replies = replies.into_iter();
        for (idx, _, id, fields) in candidates {
            let pending = replies.next().unwrap_or(Value::Nil);
            let scheduled = replies.next().unwrap_or(Value::Nil);
            if !matches!(scheduled, Value::Nil) {
                continue;
            }
            let count = match pending {
                Value::Array(rows) => rows.first().and_then(|row| match row {
                    Value::Array(r) if r.len() == 4 => value_u32(&r[3]),
                    _ => None,
                }),
                _ => None,
            }
            .unwrap_or(1);
            if matches!(fields, Value::Nil) {
                continue;
            }
            if let Made::Entry(e) = self.make_entry(rd, idx, &id, fields, count) {
                rd.buffer.push_back(e);
            }
        }
        Ok(())
    }

    pub(crate) async fn ack(&self, ids: &[DeliveryId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let pipe = self.per_stream_pipe(ids, |pipe, key, replay, ids| {
            pipe.cmd("XACK").arg(key).arg(&self.group).arg(ids).ignore();
            if replay {
                pipe.cmd("XDEL").arg(key).arg(ids).ignore();
            }
        })?;
        self.client.run_settle_pipe::<()>("XACK", &pipe).await?;
        settled(&self.outstanding, ids);
        Ok(())
    }

    /// Hands entries back to the group without acking them: they go to the
    /// group's retry zset as due now (a retry already scheduled keeps its
    /// time), so a consumer of the group takes them at its next retry poll.
    pub(crate) async fn release(&self, ids: &[DeliveryId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let pipe = self.per_stream_pipe(ids, |pipe, key, _, ids| {
            for id in ids {
                pipe.cmd("ZADD")
                    .arg(&self.retry_key)
                    .arg("NX")
                    .arg(0)
                    .arg(format!("{key}\n{id}"))
                    .ignore();
            }
        })?;
        self.client.run_pipe::<()>("ZADD", &pipe).await?;
        settled(&self.outstanding, ids);
        Ok(())
    }

    /// Hands back everything this consumer owns: entries read and not yet
    /// handed out, handed out and not settled, and entries Redis delivered
    /// to it by a read whose reply never arrived. A consumer of the group
    /// takes them over at its next retry poll.
    pub(crate) async fn close(&self) -> Result<u64> {
        let mut rd = self.reader.lock().await;
        rd.buffer.clear();
        let mut released = 0u64;
        let streams = self.table().read_keys();
        for (_, key) in streams {
            let mut inv = scripts::RELEASE_OWN.prepare_invoke();
            inv.key(&key)
                .key(&self.retry_key)
                .arg(&self.group)
                .arg(&self.name);
            let n: u64 = self.client.run_script("release script", &inv).await?;
            released += n;
        }
        self.outstanding.lock().expect("not poisoned").clear();
        self.reclaimed.fetch_add(released, Ordering::Relaxed);
        if released > 0 {
            tracing::info!(group = %self.group, consumer = %self.name, released, "handed unfinished entries back to the group");
        }
        Ok(released)
    }

    fn per_stream_pipe(
        &self,
        ids: &[DeliveryId],
        mut add: impl FnMut(&mut redis::Pipeline, &str, bool, &[StreamId]),
    ) -> Result<redis::Pipeline> {
        let mut by_stream: HashMap<u32, Vec<StreamId>> = HashMap::new();
        for id in ids {
            let id = EntryId::of(*id);
            by_stream.entry(id.stream).or_default().push(StreamId(id));
        }
        let table = self.table();
        let mut pipe = redis::pipe();
        for (idx, ids) in &by_stream {
            let slot = table.slots.get(*idx as usize).ok_or_else(|| {
                Error::Unsupported(format!(
                    "entry id {} was not handed out by this consumer",
                    ids[0]
                ))
            })?;
            add(
                &mut pipe,
                &slot.key,
                matches!(slot.kind, SlotKind::Replay),
                ids,
            );
        }
        Ok(pipe)
    }

    pub(crate) async fn retry_later(&self, id: EntryId, delay: Duration) -> Result<()> {
        let key = self
            .table()
            .slots
            .get(id.stream as usize)
            .map(|s| s.key.clone())
            .ok_or_else(|| {
                Error::Unsupported(format!("entry id {id} was not handed out by this consumer"))
            })?;
        let due = epoch_ms(SystemTime::now() + delay);
        let member = format!("{key}\n{id}");
        self.client
            .run::<()>(
                "ZADD",
                redis::cmd("ZADD").arg(&self.retry_key).arg(due).arg(member),
            )
            .await?;
        self.outstanding.lock().expect("not poisoned").remove(&id);
        self.local_dues
            .lock()
            .expect("not poisoned")
            .push(Reverse(due));
        Ok(())
    }

    pub(crate) async fn dead_letter(&self, entry: &Entry, info: &DeadLetterInfo) -> Result<String> {
        let (key, replay) = {
            let table = self.table();
            let slot = table.slots.get(entry.id.stream as usize).ok_or_else(|| {
                Error::Unsupported(format!(
                    "entry id {} was not handed out by this consumer",
                    entry.id
                ))
            })?;
            (slot.key.clone(), matches!(slot.kind, SlotKind::Replay))
        };
        let keys = self.client.keys();
        let mut inv = scripts::DEAD_LETTER.prepare_invoke();
        inv.key(keys.dlq())
            .key(&key)
            .key(&self.retry_key)
            .arg(&self.group)
            .arg(entry.id.to_string())
            .arg(dead_type(entry, info))
            .arg(&entry.payload[..])
            .arg(&info.handler)
            .arg(info.attempts)
            .arg(&info.error)
            .arg(codec::format_time(SystemTime::now()))
            .arg("1")
            .arg(if replay { "1" } else { "0" })
            .arg(&key)
            .arg(info.event_id.as_deref().unwrap_or(""));
        let id: String = self.client.run_script("dead-letter script", &inv).await?;
        self.outstanding
            .lock()
            .expect("not poisoned")
            .remove(&entry.id);
        tracing::warn!(group = %self.group, handler = %info.handler, event_type = %eventbus_core::escape::Escaped(&entry.event_type), attempts = info.attempts, error = %eventbus_core::escape::Escaped(&info.error), dlq_id = %id, "event dead-lettered");
        Ok(id)
    }
}

/// A consumer dropped can hand nothing out again: it is marked dead, so the
/// group's other consumers take over what it still owns at once.
impl Drop for StreamConsumer {
    fn drop(&mut self) {
        self.liveness.stop(&self.client);
    }
}

/// An entry id as a command argument (`ms-seq`), written without a `String`.
#[derive(Clone, Copy)]
struct StreamId(EntryId);

impl redis::ToRedisArgs for StreamId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self.0);
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

enum Made {
    Entry(Entry),
    /// Not for this consumer (django layout filter): ack it.
    Skip(String),
    Bad,
}

/// Why one `fill` round failed.
enum Failure {
    NoGroup,
    Transient(&'static str, redis::RedisError),
    Other(Error),
}

impl Failure {
    fn from_redis(op: &'static str, e: redis::RedisError) -> Self {
        if conn::is_nogroup(&e) {
            Failure::NoGroup
        } else if conn::is_transient(&e) {
            Failure::Transient(op, e)
        } else {
            Failure::Other(Error::redis(op, e))
        }
    }

    fn from_error(e: Error) -> Self {
        match e {
            Error::Redis { op, source } => Failure::from_redis(op, source),
            other => Failure::Other(other),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::from_error(e)
    }
}

static FORGET_CONSUMERS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and pending == 0 and idle and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    n = n + 1
  end
end
return n
"#,
    )
});

// ---- entries --------------------------------------------------------------

/// One entry of stream slot `idx` as the consumer hands it out (`Skip`: a
/// django-layout entry of a type `filter` leaves out; `Bad`: an unparseable
/// id). `interned` keeps the type names read from entries, one `Arc` each.
fn make_entry(
    table: &Table,
    filter: Option<&HashSet<String>>,
    interned: &mut HashMap<Vec<u8>, Arc<str>>,
    idx: u32,
    id: &[u8],
    fields: Value,
    count: u32,
) -> Made {
    let Some(entry_id) = EntryId::parse(idx, id) else {
        tracing::warn!(id = %String::from_utf8_lossy(id), "ignoring stream entry with an unparseable id");
        return Made::Bad;
    };
    let kind = table.slots[idx as usize].kind.clone();
    let mut cloud_event: Option<Vec<u8>> = None;
    let mut data: Option<Vec<u8>> = None;
    let mut ty: Option<Vec<u8>> = None;
    let type_field: &[u8] = match kind {
        SlotKind::Django => b"event_type",
        _ => b"type",
    };
    for_each_field(fields, |name, value| {
        if name == b"cloud_event" {
            cloud_event = Some(value);
        } else if name == b"data" {
            data = Some(value);
        } else if name == type_field {
            ty = Some(value);
        }
    });
    let event_type: Arc<str> = match kind {
        SlotKind::Type(t) => t,
        SlotKind::Django | SlotKind::Replay => {
            let raw = ty.unwrap_or_default();
            if let Some(filter) = filter
                && matches!(kind, SlotKind::Django)
                && !filter.contains(&*String::from_utf8_lossy(&raw))
            {
                return Made::Skip(entry_id.to_string());
            }
            match interned.get(&raw) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(&*String::from_utf8_lossy(&raw));
                    if interned.len() < 10_000 {
                        interned.insert(raw, t.clone());
                    }
                    t
                }
            }
        }
    };
    let payload = match (cloud_event, data) {
        (Some(ce), _) => Bytes::from(ce),
        (None, Some(d)) => {
            // The same id and time at every delivery of the entry.
            let key = table.slots[idx as usize].key.clone();
            let wrapped = match codec::entry_event_id(&key, &String::from_utf8_lossy(id)) {
                Some((eid, time)) => {
                    codec::wrap_legacy_as(&event_type, &source_of(&event_type), &d, eid, time)
                }
                None => codec::wrap_legacy(&event_type, &source_of(&event_type), &d),
            };
            wrapped.unwrap_or_else(|| Bytes::from(d))
        }
        (None, None) => {
            tracing::warn!(id = %entry_id, event_type = %eventbus_core::escape::Escaped(&event_type), "stream entry has neither `cloud_event` nor `data`");
            Bytes::new()
        }
    };
    Made::Entry(Entry {
        id: entry_id,
        event_type,
        payload,
        delivery_count: count,
    })
}

/// The entries of one `XREADGROUP` reply into `buffer`, in order; the ids of
/// entries `filter` leaves out into `skipped` (per slot, to be acked). What
/// the consumer does with every reply, and what [`__bench`] measures.
fn read_reply(
    table: &Table,
    filter: Option<&HashSet<String>>,
    interned: &mut HashMap<Vec<u8>, Arc<str>>,
    reply: Value,
    buffer: &mut VecDeque<Entry>,
    skipped: &mut HashMap<u32, Vec<String>>,
) {
    for (key, entries) in stream_replies(reply) {
        let Some(idx) = table.by_key.get(&key).copied() else {
            continue;
        };
        for (id, fields) in entries {
            match make_entry(table, filter, interned, idx, &id, fields, 1) {
                Made::Entry(e) => buffer.push_back(e),
                Made::Skip(id) => skipped.entry(idx).or_default().push(id),
                Made::Bad => {}
            }
        }
    }
}

/// Up to `max` entries of `buffer`, now outstanding (until acked, retried or
/// dead-lettered) and counted as delivered.
fn hand_out(
    buffer: &mut VecDeque<Entry>,
    max: usize,
    outstanding: &Mutex<HashSet<EntryId>>,
    delivered: &AtomicU64,
) -> Vec<Entry> {
    let n = max.min(buffer.len());
    let out: Vec<Entry> = buffer.drain(..n).collect();
    if !out.is_empty() {
        let mut outstanding = outstanding.lock().expect("not poisoned");
        outstanding.extend(out.iter().map(|e| e.id));
        delivered.fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    out
}

/// Entries settled (acked or handed back): no longer outstanding.
fn settled(outstanding: &Mutex<HashSet<EntryId>>, ids: &[DeliveryId]) {
    let mut outstanding = outstanding.lock().expect("not poisoned");
    for id in ids {
        outstanding.remove(&EntryId::of(*id));
    }
}

// ---- reply parsing -------------------------------------------------------

pub(crate) fn bulk_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(crate) fn bulk_string(v: Value) -> Option<String> {
    bulk_bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(crate) fn value_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Int(i) => u32::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Calls `f(name, value)` for each field of a stream entry (RESP2 flat
/// array or RESP3 map).
pub(crate) fn for_each_field(fields: Value, mut f: impl FnMut(&[u8], Vec<u8>)) {
    match fields {
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Some(k), Some(v)) = (bulk_bytes(k), bulk_bytes(v)) {
                    f(&k, v);
                }
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let (Some(k), Some(v)) = (bulk_bytes(k), bulk_bytes(v)) {
                    f(&k, v);
                }
            }
        }
        _ => {}
    }
}

/// A stream entry as Redis returns it: id and fields.
pub(crate) type RawEntry = (Vec<u8>, Value);

/// `[(id, fields)]` of an `XRANGE`-style reply.
pub(crate) fn entries_of(v: Value) -> Vec<RawEntry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(mut pair) if pair.len() == 2 => {
                let fields = pair.pop().expect("len 2");
                let id = bulk_bytes(pair.pop().expect("len 2"))?;
                Some((id, fields))
            }
            _ => None,
        })
        .collect()
}

/// `[(stream key, entries)]` of an `XREADGROUP` reply (nil on timeout).
fn stream_replies(v: Value) -> Vec<(String, Vec<RawEntry>)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = entries_of(pair.pop().expect("len 2"));
                    let key = bulk_string(pair.pop().expect("len 2"))?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .into_iter()
            .filter_map(|(k, v)| Some((bulk_string(k)?, entries_of(v))))
            .collect(),
        _ => Vec::new(),
    }
}

/// Not an API: the consumer's decoding of an `XREADGROUP` reply, without a
/// connection, for `eventbus`'s instruction-count bench
/// (`eventbus/benches/delivery_instructions.rs`). It runs the functions a
/// [`Consumer`](crate::Consumer) of per-type streams runs on each reply, so
/// the bench cannot drift from it.
#[doc(hidden)]
pub mod __bench {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use redis::Value;

    use super::{SlotKind, Table, hand_out, read_reply, settled};
    use crate::consumer::{Entry, EntryId};
    use eventbus_core::transport::{Delivery, DeliveryId};

    /// A stream consumer's reply decoding state: its streams, interned type
    /// names, read-ahead buffer and outstanding entries.
    #[derive(Debug, Default)]
    pub struct StreamReader {
        table: Table,
        interned: HashMap<Vec<u8>, std::sync::Arc<str>>,
        buffer: VecDeque<Entry>,
        outstanding: Mutex<HashSet<EntryId>>,
        delivered: AtomicU64,
    }

    impl StreamReader {
        /// A reader of per-type streams, given as `(stream key, event type)`.
        pub fn new<'a>(streams: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
            let mut reader = StreamReader::default();
            for (key, ty) in streams {
                reader
                    .table
                    .add(key.to_owned(), SlotKind::Type(ty.into()), true);
            }
            reader
        }

        /// What `Consumer::read` returns for an `XREADGROUP` reply: its
        /// entries as [`Delivery`]s, now outstanding.
        pub fn deliveries_of_reply(&mut self, reply: Value) -> Vec<Delivery> {
            let mut skipped = HashMap::new();
            read_reply(
                &self.table,
                None,
                &mut self.interned,
                reply,
                &mut self.buffer,
                &mut skipped,
            );
            hand_out(
                &mut self.buffer,
                usize::MAX,
                &self.outstanding,
                &self.delivered,
            )
            .into_iter()
            .map(Entry::into_delivery)
            .collect()
        }

        /// The bookkeeping of an ack once Redis answered: the entries are no
        /// longer outstanding.
        pub fn acked(&self, ids: &[DeliveryId]) {
            settled(&self.outstanding, ids);
        }
    }
}
