//! End-to-end load test of eventbus on Redis, against raw `redis`-crate loops
//! doing the same Redis work on the same payload bytes, in the same run.
//!
//! ```text
//! cargo run --release --example loadgen --features redis -- \
//!     [--url redis://127.0.0.1:PORT] [--events N] [--rate R] [--rounds K] \
//!     [--latency-secs S] [--concurrency C] [--only SCENARIO,...] \
//!     [--payload tick,order] [--side raw|eventbus]
//! ```
//!
//! Payloads (`--payload`, both by default, one table each):
//! - `tick`: `{id, seq, sent_ns}`, 97 bytes of data;
//! - `order`: an order of realistic shape, about 300 bytes of data: strings,
//!   floats, a list of two line items (objects).
//!
//! The raw loops do the work a hand-written service does with the same
//! struct: every raw publisher serializes it with serde into a structured
//! CloudEvent (a counter for the id, the time read once per pipeline, as
//! `publish_batch` reads it once per batch), and every raw consumer decodes
//! each message into the same typed struct the eventbus handler receives
//! (`serde_json` of the CloudEvent's `data` member, the attributes skipped).
//! The comparison charges eventbus only for what it does beyond that: the
//! attributes checked, the envelope, the handler dispatch, the
//! acknowledgement bookkeeping.
//!
//! Without `--url` it starts a private `redis-server` on a free loopback port
//! (never 6379) and stops it at the end. Every key it writes carries a
//! `loadgen` prefix unique to the run and is deleted afterwards.
//!
//! Scenarios (raw loop and eventbus alternate inside every round, the order
//! flipping from round to round, because the machine may be shared; each
//! figure is the median over the rounds):
//! - `e2e`: publish N typed events with `bus.publish_batch` (100 per call)
//!   while one typed handler consumes them, until all are handled and acked;
//!   raw: pipelined `XADD` (100 per pipeline) while a consumer task loops
//!   `XREADGROUP COUNT 256 BLOCK` + `XACK` of what it read.
//! - `publish-batch`, `publish-concurrent`: `bus.publish_batch` of 100, and 64
//!   tasks calling `bus.publish` one event at a time; raw: pipelined `XADD`.
//! - `publish-concurrent-ref`: the 64 tasks again, against 64 raw tasks each
//!   sending one `XADD` at a time on a multiplexed connection.
//! - `pubsub-publish`, `pubsub-concurrent`, `pubsub-concurrent-ref`: the same
//!   in `?mode=pubsub`; raw: pipelined `PUBLISH`, or 64 tasks of `PUBLISH`.
//! - `pubsub-deliver`: pub/sub publish (100 per call) to a typed handler;
//!   every event that does not reach the handler is counted as lost; raw: a
//!   redis-rs subscriber counting messages.
//! - `latency`: `bus.publish` paced at R events/s to a typed handler; the
//!   publish→handle latency is the handler's clock minus a timestamp the
//!   publisher put in the payload (same process, same clock); raw: `XADD`
//!   paced the same, consumer blocked in `XREADGROUP`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use eventbus::{Bus, Context, Event, HandlerDef};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[path = "common/measure.rs"]
#[allow(dead_code)]
mod measure;
use measure::{Lat, median, ms, process_cpu_ns, rate};

/// An event a scenario sends: it carries the time it was handed to the
/// publisher, which the consumer subtracts from its own clock.
trait Payload: Event + Clone + std::fmt::Debug {
    /// Its `--payload` name.
    const KEY: &'static str;
    fn make(seq: u64) -> Self;
    fn sent_ns(&self) -> u64;
}

/// The small payload: an id, a sequence number and the send time.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("loadgen_tick")]
struct Tick {
    id: uuid::Uuid,
    seq: u64,
    /// Unix time in ns when the publisher created the event.
    sent_ns: u64,
}

impl Payload for Tick {
    const KEY: &'static str = "tick";

    fn make(seq: u64) -> Self {
        Tick {
            id: id_of(seq),
            seq,
            sent_ns: now_ns(),
        }
    }

    fn sent_ns(&self) -> u64 {
        self.sent_ns
    }
}

/// The payload of realistic shape (about 300 bytes of JSON): strings, floats
/// and a list of two objects, as an order service would publish.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("loadgen_order")]
struct Order {
    id: uuid::Uuid,
    seq: u64,
    /// Unix time in ns when the publisher created the event.
    sent_ns: u64,
    customer: String,
    status: String,
    currency: String,
    total: f64,
    items: Vec<LineItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct LineItem {
    sku: String,
    name: String,
    quantity: u32,
    unit_price: f64,
}

impl Payload for Order {
    const KEY: &'static str = "order";

    fn make(seq: u64) -> Self {
        Order {
            id: id_of(seq),
            seq,
            sent_ns: now_ns(),
            customer: format!("cus_{:08x}", seq.wrapping_mul(2_654_435_761) as u32),
            status: "paid".to_owned(),
            currency: "EUR".to_owned(),
            total: 129.97,
            items: vec![
                LineItem {
                    sku: "SKU-1042-BLK-42".to_owned(),
                    name: "Trail running shoe, black".to_owned(),
                    quantity: 1,
                    unit_price: 99.99,
                },
                LineItem {
                    sku: "SKU-2210-WHT-M".to_owned(),
                    name: "Merino socks (2 pairs)".to_owned(),
                    quantity: 2,
                    unit_price: 14.99,
                },
            ],
        }
    }

    fn sent_ns(&self) -> u64 {
        self.sent_ns
    }
}

fn id_of(seq: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0191_d3c4_0000_7000_8000_0000_0000_0000 | u128::from(seq))
}

/// What a raw consumer reads out of a structured CloudEvent: its `data`,
/// into the handler's struct (serde skips the attributes).
#[derive(Deserialize)]
struct Data<P> {
    data: P,
}

/// The raw consumers' decode: the same struct the handler gets.
fn raw_decode<P: Payload>(bytes: &[u8]) -> Option<P> {
    serde_json::from_slice::<Data<P>>(bytes)
        .ok()
        .map(|d| d.data)
}

/// What a raw publisher writes: a structured CloudEvent of the same struct,
/// with an id and the time (eventbus's attributes, without its checks).
#[derive(Serialize)]
struct RawCloudEvent<'a, P> {
    specversion: &'static str,
    id: uuid::Uuid,
    source: &'static str,
    #[serde(rename = "type")]
    ty: &'static str,
    datacontenttype: &'static str,
    time: &'a str,
    data: &'a P,
}

/// The raw publishers' encode: `P::make(seq)` into a CloudEvent, by serde.
fn raw_encode<P: Payload>(seq: u64, time: &str, buf: &mut Vec<u8>) {
    buf.clear();
    let event = RawCloudEvent {
        specversion: "1.0",
        // A counter, not a fresh UUIDv7 (eventbus makes one per event): the
        // cheapest unique id, in the raw side's favour.
        id: id_of(seq),
        source: SERVICE,
        ty: P::TYPE,
        datacontenttype: "application/json",
        time,
        data: &P::make(seq),
    };
    serde_json::to_writer(&mut *buf, &event).expect("serializes");
}

/// The `time` attribute of a raw publisher (read once per pipeline, as
/// `publish_batch` reads the clock once per batch).
fn raw_time() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

const BATCH: usize = 100;
const CONCURRENT: usize = 64;
const SERVICE: &str = "loadgen";
const GROUP: &str = "loadgen.on_event";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---- measurement ----------------------------------------------------------

/// What a handler (or a raw consumer) saw: how many events, and their latencies.
struct Probe {
    seen: AtomicUsize,
    target: usize,
    done: Notify,
    /// Unix ns of the last event seen.
    last_ns: AtomicU64,
    lat_ns: Mutex<Vec<u64>>,
}

impl Probe {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Probe {
            seen: AtomicUsize::new(0),
            target,
            done: Notify::new(),
            last_ns: AtomicU64::new(0),
            lat_ns: Mutex::new(Vec::with_capacity(target)),
        })
    }

    fn hit(&self, sent_ns: u64) {
        let now = now_ns();
        self.lat_ns
            .lock()
            .expect("not poisoned")
            .push(now.saturating_sub(sent_ns));
        self.last_ns.store(now, Ordering::Relaxed);
        if self.seen.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            self.done.notify_one();
        }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::Acquire)
    }

    fn latency(&self) -> Option<Lat> {
        let mut v = std::mem::take(&mut *self.lat_ns.lock().expect("not poisoned"));
        Lat::of(&mut v)
    }
}

/// The one typed handler of every consuming scenario.
async fn on_event<P: Payload>(event: P, ctx: Context) {
    ctx.state::<Arc<Probe>>().hit(event.sent_ns());
    std::hint::black_box(event);
}

/// One measurement of one side (raw or eventbus) in one round.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Events per second.
    rate: f64,
    /// Publish -> handle, ns.
    lat: Option<Lat>,
    /// Events that never arrived (pub/sub delivery).
    lost: Option<usize>,
    /// CPU time per event of this process and of redis-server, in ns.
    cpu: (f64, f64),
}

/// CPU time used so far by redis-server, in ns.
async fn server_cpu_ns(raw: &redis::Client) -> anyhow::Result<u64> {
    let mut conn = raw.get_multiplexed_async_connection().await?;
    measure::redis_cpu_ns(&mut conn).await
}

// ---- the environment -------------------------------------------------------

struct Env<P> {
    url: String,
    raw: redis::Client,
    run_id: String,
    next: AtomicUsize,
    concurrency: Option<u32>,
    _payload: std::marker::PhantomData<fn() -> P>,
}

impl<P: Payload> Env<P> {
    fn unique(&self, what: &str) -> String {
        format!(
            "{}-{what}-{}",
            self.run_id,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `url` with `options` added to its query.
    fn url_with(&self, options: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{options}", self.url)
    }

    async fn bus(
        &self,
        prefix: &str,
        mode: &str,
        probe: Option<Arc<Probe>>,
    ) -> anyhow::Result<Bus> {
        let mut builder = Bus::builder().service(SERVICE).without_registered();
        if let Some(probe) = probe {
            let mut h = HandlerDef::new("on_event", on_event::<P>);
            if let Some(c) = self.concurrency {
                h = h.concurrency(c);
            }
            builder = builder.handler(h).state(probe);
        }
        let url = self.url_with(&format!("prefix={prefix}&mode={mode}"));
        Ok(builder.connect(&url).await?)
    }

    /// Deletes every key starting with `prefix` (and `{prefix}`).
    async fn cleanup(&self, prefix: &str) -> anyhow::Result<()> {
        let mut conn = self.raw.get_multiplexed_async_connection().await?;
        for pattern in [format!("{prefix}*"), format!("{{{prefix}}}*")] {
            let keys: Vec<String> = {
                let mut iter = conn.scan_match::<_, String>(pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = futures_next(&mut iter).await {
                    keys.push(k);
                }
                keys
            };
            for chunk in keys.chunks(500) {
                let _: () = conn.del(chunk).await?;
            }
        }
        Ok(())
    }
}

async fn futures_next<T>(iter: &mut redis::AsyncIter<'_, T>) -> Option<T>
where
    T: redis::FromRedisValue + Unpin + Send,
{
    iter.next_item().await.and_then(Result::ok)
}

fn field_bytes(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        _ => None,
    }
}

async fn wait_done(probe: &Probe, what: &str) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(120);
    tokio::time::timeout(deadline, probe.done.notified())
        .await
        .with_context(|| {
            format!(
                "{what}: only {} of {} events handled after {deadline:?}",
                probe.seen(),
                probe.target
            )
        })
}

/// Waits until the group has no pending entry on the stream (all acked).
async fn wait_acked(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(key)
            .arg(GROUP)
            .query_async(conn)
            .await?;
        let pending = match &summary {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => 0,
            },
            _ => 0,
        };
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{pending} entries still unacked after 30 s");
        }
        tokio::task::yield_now().await;
    }
}

// ---- scenarios ---------------------------------------------------------------

/// Streams end to end through the bus: publish_batch → typed handler → ack.
async fn bus_e2e<P: Payload>(env: &Env<P>, n: usize) -> anyhow::Result<Sample> {
    let prefix = env.unique("e2e");
    let probe = Probe::new(n);
    let bus = env.bus(&prefix, "streams", Some(probe.clone())).await?;
    let mut conn = env.raw.get_multiplexed_async_connection().await?;
    let mut running = bus.spawn();
    // Every subscription is live (and a pub/sub group holds its lease).
    running.ready().await?;
    let start = Instant::now();
    let mut seq = 0;
    while seq < n as u64 {
        let end = (seq + BATCH as u64).min(n as u64);
        bus.publish_batch((seq..end).map(P::make)).await?;
        seq = end;
    }
    wait_done(&probe, "eventbus e2e").await?;
    wait_acked(&mut conn, &format!("{{{prefix}}}:stream:{}", P::TYPE)).await?;
    let took = start.elapsed();
    running.shutdown().await?;
    env.cleanup(&prefix).await?;
    Ok(Sample {
        rate: rate(n, took),
        lat: probe.latency(),
        ..Sample::default()
    })
}

/// Raw: pipelined XADD while a consumer task loops XREADGROUP + XACK.
async fn raw_e2e<P: Payload>(env: &Env<P>, n: usize) -> anyhow::Result<Sample> {
    let key = env.unique("raw-e2e");
    let mut publ = env.raw.get_multiplexed_async_connection().await?;
    let mut cons = env.raw.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut publ)
        .await?;
    let probe = Probe::new(n);
    let start = Instant::now();
    let consumer = {
        let (key, probe) = (key.clone(), probe.clone());
        tokio::spawn(async move {
            let opts = redis::streams::StreamReadOptions::default()
                .group("g", "raw")
                .count(256)
                .block(1000);
            while probe.seen() < n {
                let reply: redis::streams::StreamReadReply =
                    cons.xread_options(&[&key], &[">"], &opts).await?;
                let mut ids = Vec::new();
                for k in &reply.keys {
                    for e in &k.ids {
                        if let Some(event) = e
                            .map
                            .get("cloud_event")
                            .and_then(field_bytes)
                            .and_then(raw_decode::<P>)
                        {
                            probe.hit(event.sent_ns());
                            std::hint::black_box(event);
                        }
                        ids.push(e.id.as_str());
                    }
                }
                if !ids.is_empty() {
                    let _: () = cons.xack(&key, "g", &ids).await?;
                }
            }
            Ok::<_, redis::RedisError>(())
        })
    };
    let mut buf = Vec::new();
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        let time = raw_time();
        for _ in 0..BATCH.min(n - sent) {
            raw_encode::<P>(sent as u64, &time, &mut buf);
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("cloud_event")
                .arg(&buf[..])
                .ignore();
            sent += 1;
        }
        pipe.query_async::<()>(&mut publ).await?;
    }
    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .context("raw e2e: consumer did not finish")???;
    let took = start.elapsed();
    let _: () = publ.del(&key).await?;
    Ok(Sample {
        rate: rate(n, took),
        lat: probe.latency(),
        ..Sample::default()
    })
}

/// `bus.publish_batch` of 100, one call at a time (`concurrent` = false), or
/// `CONCURRENT` tasks each calling `bus.publish` for one event at a time.
async fn bus_publish<P: Payload>(
    env: &Env<P>,
    n: usize,
    mode: &str,
    concurrent: bool,
) -> anyhow::Result<Sample> {
    let prefix = env.unique("pub");
    let bus = env.bus(&prefix, mode, None).await?;
    // The first publish of a type registers it; keep that out of the timing.
    bus.publish(P::make(0)).await?;
    let start = Instant::now();
    if concurrent {
        let per = n / CONCURRENT;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..CONCURRENT {
            let bus = bus.clone();
            tasks.spawn(async move {
                for i in 0..per {
                    bus.publish(P::make((t * per + i) as u64)).await?;
                }
                Ok::<_, eventbus::Error>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    } else {
        let mut seq = 0;
        while seq < n as u64 {
            let end = (seq + BATCH as u64).min(n as u64);
            bus.publish_batch((seq..end).map(P::make)).await?;
            seq = end;
        }
    }
    let took = start.elapsed();
    let n = if concurrent {
        n / CONCURRENT * CONCURRENT
    } else {
        n
    };
    env.cleanup(&prefix).await?;
    Ok(Sample {
        rate: rate(n, took),
        ..Sample::default()
    })
}

/// Raw pipelined XADD (or PUBLISH), 100 per pipeline.
async fn raw_publish<P: Payload>(env: &Env<P>, n: usize, command: &str) -> anyhow::Result<Sample> {
    let key = env.unique("raw-pub");
    let mut conn = env.raw.get_multiplexed_async_connection().await?;
    let mut buf = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        let time = raw_time();
        for _ in 0..BATCH.min(n - sent) {
            raw_encode::<P>(sent as u64, &time, &mut buf);
            match command {
                "XADD" => pipe
                    .cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("cloud_event")
                    .arg(&buf[..])
                    .ignore(),
                _ => pipe.cmd("PUBLISH").arg(&key).arg(&buf[..]).ignore(),
            };
            sent += 1;
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let took = start.elapsed();
    let _: () = conn.del(&key).await?;
    Ok(Sample {
        rate: rate(n, took),
        ..Sample::default()
    })
}

/// Raw: `CONCURRENT` tasks, each sending one XADD (or PUBLISH) at a time on
/// a shared multiplexed connection (which pipelines them on the wire).
async fn raw_concurrent<P: Payload>(
    env: &Env<P>,
    n: usize,
    command: &'static str,
) -> anyhow::Result<Sample> {
    let key = env.unique("raw-tasks");
    let conn = env.raw.get_multiplexed_async_connection().await?;
    let per = n / CONCURRENT;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..CONCURRENT {
        let (mut conn, key) = (conn.clone(), key.clone());
        tasks.spawn(async move {
            let mut buf = Vec::new();
            for i in 0..per {
                raw_encode::<P>((t * per + i) as u64, &raw_time(), &mut buf);
                if command == "XADD" {
                    let _: String = conn.xadd(&key, "*", &[("cloud_event", &buf[..])]).await?;
                } else {
                    let _: i64 = conn.publish(&key, &buf[..]).await?;
                }
            }
            Ok::<_, redis::RedisError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let took = start.elapsed();
    let mut conn = conn;
    let _: () = conn.del(&key).await?;
    Ok(Sample {
        rate: rate(per * CONCURRENT, took),
        ..Sample::default()
    })
}

/// Waits until `channel` has a subscriber.
async fn wait_subscribed<P: Payload>(env: &Env<P>, channel: &str) -> anyhow::Result<()> {
    let mut conn = env.raw.get_multiplexed_async_connection().await?;
    let start = Instant::now();
    loop {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        if n > 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("nobody subscribed to {channel} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `probe` saw every event, or saw nothing new for a while.
async fn wait_quiet(probe: &Probe) {
    let mut last = probe.seen();
    loop {
        tokio::select! {
            _ = probe.done.notified() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let now = probe.seen();
                if now == last {
                    return;
                }
                last = now;
            }
        }
    }
}

fn delivery_sample(probe: &Probe, n: usize, start_ns: u64) -> Sample {
    let seen = probe.seen();
    let last = probe.last_ns.load(Ordering::Relaxed);
    let took = Duration::from_nanos(last.saturating_sub(start_ns));
    Sample {
        rate: rate(seen, took),
        lat: probe.latency(),
        lost: Some(n - seen.min(n)),
        ..Sample::default()
    }
}

/// Pub/sub: publish_batch to a typed handler; counts what never arrived.
async fn bus_pubsub_deliver<P: Payload>(env: &Env<P>, n: usize) -> anyhow::Result<Sample> {
    let prefix = env.unique("ps");
    let probe = Probe::new(n);
    let bus = env.bus(&prefix, "pubsub", Some(probe.clone())).await?;
    let mut running = bus.spawn();
    // Subscribed, and the group's lease taken: a pub/sub group handles what
    // is published after its lease marker (see `eventbus_redis::lease`).
    running.ready().await?;
    wait_subscribed(env, &format!("{prefix}:{}", P::TYPE)).await?;
    let start_ns = now_ns();
    let mut seq = 0;
    while seq < n as u64 {
        let end = (seq + BATCH as u64).min(n as u64);
        bus.publish_batch((seq..end).map(P::make)).await?;
        seq = end;
    }
    wait_quiet(&probe).await;
    running.shutdown().await?;
    Ok(delivery_sample(&probe, n, start_ns))
}

/// Raw pub/sub: pipelined PUBLISH to a redis-rs subscriber that counts.
async fn raw_pubsub_deliver<P: Payload>(env: &Env<P>, n: usize) -> anyhow::Result<Sample> {
    use futures::StreamExt;
    let channel = env.unique("raw-ps");
    let probe = Probe::new(n);
    let mut ps = env.raw.get_async_pubsub().await?;
    ps.subscribe(&channel).await?;
    let sub = {
        let probe = probe.clone();
        tokio::spawn(async move {
            let mut stream = ps.on_message();
            while let Some(msg) = stream.next().await {
                if let Some(event) = raw_decode::<P>(msg.get_payload_bytes()) {
                    probe.hit(event.sent_ns());
                    std::hint::black_box(event);
                }
                if probe.seen() >= n {
                    break;
                }
            }
        })
    };
    let mut conn = env.raw.get_multiplexed_async_connection().await?;
    let mut buf = Vec::new();
    let start_ns = now_ns();
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        let time = raw_time();
        for _ in 0..BATCH.min(n - sent) {
            raw_encode::<P>(sent as u64, &time, &mut buf);
            pipe.cmd("PUBLISH").arg(&channel).arg(&buf[..]).ignore();
            sent += 1;
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    wait_quiet(&probe).await;
    sub.abort();
    Ok(delivery_sample(&probe, n, start_ns))
}

/// Paced `bus.publish` at `rate`/s to a typed handler on Streams.
async fn bus_latency<P: Payload>(env: &Env<P>, n: usize, rate: u64) -> anyhow::Result<Sample> {
    let prefix = env.unique("lat");
    let probe = Probe::new(n);
    let bus = env.bus(&prefix, "streams", Some(probe.clone())).await?;
    let mut running = bus.spawn();
    // Every subscription is live (and a pub/sub group holds its lease).
    running.ready().await?;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + period * i as u32).await;
        bus.publish(P::make(i as u64)).await?;
    }
    wait_done(&probe, "eventbus latency").await?;
    let took = start.elapsed();
    running.shutdown().await?;
    env.cleanup(&prefix).await?;
    Ok(Sample {
        rate: self::rate(n, took),
        lat: probe.latency(),
        ..Sample::default()
    })
}

/// Raw: paced single XADD; a consumer blocked in XREADGROUP acks what it reads.
async fn raw_latency<P: Payload>(env: &Env<P>, n: usize, rate: u64) -> anyhow::Result<Sample> {
    let key = env.unique("raw-lat");
    let mut publ = env.raw.get_multiplexed_async_connection().await?;
    let mut cons = env.raw.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut publ)
        .await?;
    let probe = Probe::new(n);
    let consumer = {
        let (key, probe) = (key.clone(), probe.clone());
        tokio::spawn(async move {
            let opts = redis::streams::StreamReadOptions::default()
                .group("g", "raw")
                .count(256)
                .block(1000);
            while probe.seen() < n {
                let reply: redis::streams::StreamReadReply =
                    cons.xread_options(&[&key], &[">"], &opts).await?;
                let mut ids = Vec::new();
                for k in &reply.keys {
                    for e in &k.ids {
                        if let Some(event) = e
                            .map
                            .get("cloud_event")
                            .and_then(field_bytes)
                            .and_then(raw_decode::<P>)
                        {
                            probe.hit(event.sent_ns());
                            std::hint::black_box(event);
                        }
                        ids.push(e.id.as_str());
                    }
                }
                if !ids.is_empty() {
                    let _: () = cons.xack(&key, "g", &ids).await?;
                }
            }
            Ok::<_, redis::RedisError>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut buf = Vec::new();
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + period * i as u32).await;
        raw_encode::<P>(i as u64, &raw_time(), &mut buf);
        let _: String = publ.xadd(&key, "*", &[("cloud_event", &buf[..])]).await?;
    }
    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .context("raw latency: consumer did not finish")???;
    let took = start.elapsed();
    let _: () = publ.del(&key).await?;
    Ok(Sample {
        rate: self::rate(n, took),
        lat: probe.latency(),
        ..Sample::default()
    })
}

// ---- driver ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    E2e,
    PublishBatch,
    PublishConcurrent,
    PublishConcurrentRef,
    PubSubPublish,
    PubSubConcurrent,
    PubSubConcurrentRef,
    PubSubDeliver,
    Latency,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::E2e,
        Scenario::PublishBatch,
        Scenario::PublishConcurrent,
        Scenario::PublishConcurrentRef,
        Scenario::PubSubPublish,
        Scenario::PubSubConcurrent,
        Scenario::PubSubConcurrentRef,
        Scenario::PubSubDeliver,
        Scenario::Latency,
    ];

    fn key(self) -> &'static str {
        match self {
            Scenario::E2e => "e2e",
            Scenario::PublishBatch => "publish-batch",
            Scenario::PublishConcurrent => "publish-concurrent",
            Scenario::PublishConcurrentRef => "publish-concurrent-ref",
            Scenario::PubSubPublish => "pubsub-publish",
            Scenario::PubSubConcurrent => "pubsub-concurrent",
            Scenario::PubSubConcurrentRef => "pubsub-concurrent-ref",
            Scenario::PubSubDeliver => "pubsub-deliver",
            Scenario::Latency => "latency",
        }
    }

    fn title(self, rate: u64) -> String {
        match self {
            Scenario::E2e => "1 streams e2e: publish_batch -> handler -> ack".into(),
            Scenario::PublishBatch => "2 streams publish_batch (100/call)".into(),
            Scenario::PublishConcurrent => format!("2 streams {CONCURRENT} tasks x bus.publish"),
            Scenario::PublishConcurrentRef => {
                format!("  (ref) same, vs {CONCURRENT} tasks x raw XADD")
            }
            Scenario::PubSubPublish => "3 pub/sub publish_batch (100/call)".into(),
            Scenario::PubSubConcurrent => format!("3 pub/sub {CONCURRENT} tasks x bus.publish"),
            Scenario::PubSubConcurrentRef => {
                format!("  (ref) same, vs {CONCURRENT} tasks x raw PUBLISH")
            }
            Scenario::PubSubDeliver => "3 pub/sub delivery to a handler".into(),
            Scenario::Latency => format!("4 streams paced {rate}/s publish -> handle"),
        }
    }

    fn baseline(self) -> &'static str {
        match self {
            Scenario::E2e => "XADD pipelined + XREADGROUP + XACK",
            Scenario::PublishBatch | Scenario::PublishConcurrent => "XADD pipelined (100)",
            Scenario::PublishConcurrentRef => "64 tasks x XADD, multiplexed conn",
            Scenario::PubSubConcurrentRef => "64 tasks x PUBLISH, multiplexed conn",
            Scenario::PubSubPublish | Scenario::PubSubConcurrent => "PUBLISH pipelined (100)",
            Scenario::PubSubDeliver => "PUBLISH -> redis-rs subscriber",
            Scenario::Latency => "paced XADD -> XREADGROUP BLOCK",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Scenario::Latency => "p99 <= 2 ms",
            Scenario::PubSubDeliver => ">= 0.90x, p99 <= 2x raw, 0 lost",
            // One event per call cannot batch like a pipelining loop; shown
            // for what coalescing concurrent callers achieves (the issue's
            // targets are for `publish_batch`; see the `(ref)` rows).
            Scenario::PublishConcurrent | Scenario::PubSubConcurrent => "(no target)",
            Scenario::PublishConcurrentRef | Scenario::PubSubConcurrentRef => "",
            _ => ">= 0.95x",
        }
    }

    /// Whether the medians meet [`Scenario::target`].
    fn met(self, ratio: f64, ours: &Sample, raw: &Sample) -> bool {
        match self {
            Scenario::Latency => ours.lat.is_some_and(|l| l.p99 <= 2_000_000),
            Scenario::PubSubDeliver => {
                ratio >= 0.9
                    && ours.lost == Some(0)
                    && matches!((ours.lat, raw.lat), (Some(o), Some(r)) if o.p99 <= 2 * r.p99)
            }
            _ => ratio >= 0.95,
        }
    }

    /// Events per run.
    fn events(self, opts: &Opts) -> usize {
        match self {
            Scenario::Latency => opts.latency_events(),
            _ => opts.events,
        }
    }

    async fn run<P: Payload>(self, env: &Env<P>, opts: &Opts, raw: bool) -> anyhow::Result<Sample> {
        let n = opts.events;
        match (self, raw) {
            (Scenario::E2e, true) => raw_e2e(env, n).await,
            (Scenario::E2e, false) => bus_e2e(env, n).await,
            (Scenario::PublishBatch | Scenario::PublishConcurrent, true) => {
                raw_publish(env, n, "XADD").await
            }
            (Scenario::PublishBatch, false) => bus_publish(env, n, "streams", false).await,
            (Scenario::PublishConcurrent | Scenario::PublishConcurrentRef, false) => {
                bus_publish(env, n, "streams", true).await
            }
            (Scenario::PublishConcurrentRef, true) => raw_concurrent(env, n, "XADD").await,
            (Scenario::PubSubConcurrentRef, true) => raw_concurrent(env, n, "PUBLISH").await,
            (Scenario::PubSubPublish | Scenario::PubSubConcurrent, true) => {
                raw_publish(env, n, "PUBLISH").await
            }
            (Scenario::PubSubPublish, false) => bus_publish(env, n, "pubsub", false).await,
            (Scenario::PubSubConcurrent | Scenario::PubSubConcurrentRef, false) => {
                bus_publish(env, n, "pubsub", true).await
            }
            (Scenario::PubSubDeliver, true) => raw_pubsub_deliver(env, n).await,
            (Scenario::PubSubDeliver, false) => bus_pubsub_deliver(env, n).await,
            (Scenario::Latency, true) => raw_latency(env, opts.latency_events(), opts.rate).await,
            (Scenario::Latency, false) => bus_latency(env, opts.latency_events(), opts.rate).await,
        }
    }
}

#[derive(Debug)]
struct Opts {
    url: Option<String>,
    events: usize,
    rate: u64,
    rounds: usize,
    latency_secs: f64,
    concurrency: Option<u32>,
    only: Vec<Scenario>,
    /// `tick`, `order`, or both (one table each).
    payloads: Vec<&'static str>,
    /// Run only one side (for profiling): `Some(true)` raw, `Some(false)` eventbus.
    side: Option<bool>,
}

impl Opts {
    fn latency_events(&self) -> usize {
        ((self.rate as f64 * self.latency_secs) as usize).max(1)
    }

    fn parse() -> anyhow::Result<Opts> {
        let mut o = Opts {
            url: None,
            // A round of 100,000 publishes lasts ~0.15 s: too short to average out
            // scheduling noise on a shared machine.
            events: 300_000,
            rate: 1_000,
            rounds: 5,
            latency_secs: 3.0,
            concurrency: None,
            only: Scenario::ALL.to_vec(),
            payloads: vec![Tick::KEY, Order::KEY],
            side: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--url" => o.url = Some(value()?),
                "--events" => o.events = value()?.parse().context("--events N")?,
                "--rate" => o.rate = value()?.parse().context("--rate R")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds K")?,
                "--latency-secs" => {
                    o.latency_secs = value()?.parse().context("--latency-secs S")?
                }
                "--concurrency" => {
                    o.concurrency = Some(value()?.parse().context("--concurrency C")?)
                }
                "--only" => {
                    let list = value()?;
                    o.only = list
                        .split(',')
                        .map(|k| {
                            Scenario::ALL
                                .into_iter()
                                .find(|s| s.key() == k.trim())
                                .with_context(|| {
                                    let keys: Vec<_> =
                                        Scenario::ALL.iter().map(|s| s.key()).collect();
                                    format!("unknown scenario `{k}`; one of {}", keys.join(", "))
                                })
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--payload" => {
                    o.payloads = value()?
                        .split(',')
                        .map(|k| match k.trim() {
                            Tick::KEY => Ok(Tick::KEY),
                            Order::KEY => Ok(Order::KEY),
                            other => {
                                bail!("unknown payload `{other}`; tick or order (or tick,order)")
                            }
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--side" => {
                    o.side = match value()?.as_str() {
                        "raw" => Some(true),
                        "eventbus" => Some(false),
                        other => bail!("--side raw|eventbus, not `{other}`"),
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: loadgen [--url redis://HOST:PORT] [--events N] [--rate R] [--rounds K] [--latency-secs S] [--concurrency C] [--only e2e,publish-batch,...] [--payload tick,order] [--side raw|eventbus (profiling)]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument `{other}` (try --help)"),
            }
        }
        if o.events < CONCURRENT || o.rate == 0 || o.rounds == 0 {
            bail!("--events must be at least {CONCURRENT}, --rate and --rounds at least 1");
        }
        Ok(o)
    }
}

fn lat_cell(l: Option<Lat>) -> String {
    match l {
        Some(l) => format!("{}/{}/{}", ms(l.p50), ms(l.p99), ms(l.max)),
        None => "-".into(),
    }
}

/// The median of each figure over the rounds.
fn summarize(samples: &[Sample]) -> Sample {
    Sample {
        rate: median(samples.iter().map(|s| s.rate).collect()),
        lat: Lat::median_of(samples.iter().map(|s| s.lat)),
        lost: samples.iter().filter_map(|s| s.lost).max(),
        cpu: (
            median(samples.iter().map(|s| s.cpu.0).collect()),
            median(samples.iter().map(|s| s.cpu.1).collect()),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse()?;
    let mut _server = None;
    let url = match &opts.url {
        Some(u) => u.clone(),
        None => {
            let server = testkit::RedisServer::start().context(
                "cannot start a private redis-server (give --url, or install redis-server)",
            )?;
            let url = server.url();
            _server = Some(server);
            url
        }
    };
    for (i, payload) in opts.payloads.iter().enumerate() {
        if i > 0 {
            println!();
        }
        match *payload {
            Tick::KEY => measure_payload::<Tick>(&opts, &url).await?,
            _ => measure_payload::<Order>(&opts, &url).await?,
        }
    }
    Ok(())
}

/// Every scenario of `opts` with payload `P`: the rounds, then the table.
async fn measure_payload<P: Payload>(opts: &Opts, url: &str) -> anyhow::Result<()> {
    let raw = redis::Client::open(url)?;
    // The bytes eventbus writes for a `P`; raw loops stamp the same bytes.
    let encoder = Bus::builder()
        .service(SERVICE)
        .without_registered()
        .connect("memory://")
        .await?;
    let encoded = encoder.encode(&P::make(0))?.1.payload;
    let data_len = serde_json::to_vec(&P::make(0))?.len();
    // The raw consumers must read what the handler reads, and what the raw
    // publishers write.
    raw_decode::<P>(&encoded).context("the raw decode cannot read eventbus's payload")?;
    let mut raw_bytes = Vec::new();
    raw_encode::<P>(0, &raw_time(), &mut raw_bytes);
    raw_decode::<P>(&raw_bytes).context("the raw decode cannot read the raw payload")?;
    let env = Env::<P> {
        url: url.to_owned(),
        raw,
        run_id: format!("loadgen{}{}", std::process::id(), P::KEY),
        next: AtomicUsize::new(0),
        concurrency: opts.concurrency,
        _payload: std::marker::PhantomData,
    };

    println!(
        "eventbus loadgen, payload `{}` ({} bytes of data; as a structured CloudEvent {} bytes by eventbus, {} by the raw publishers): {} (redis {}), {} events per throughput round, {} events at {}/s per latency round, {} rounds, handler concurrency {}",
        P::KEY,
        data_len,
        encoded.len(),
        raw_bytes.len(),
        eventbus::transport::redact(url),
        if opts.url.is_some() {
            "given"
        } else {
            "private, started here"
        },
        opts.events,
        opts.latency_events(),
        opts.rate,
        opts.rounds,
        opts.concurrency.map_or_else(
            || format!("{} (default)", eventbus::DEFAULT_CONCURRENCY),
            |c| c.to_string()
        ),
    );

    let mut results: BTreeMap<Scenario, (Vec<Sample>, Vec<Sample>)> = BTreeMap::new();
    for round in 0..opts.rounds {
        let mut line = format!("round {}/{}:", round + 1, opts.rounds);
        for &s in &opts.only {
            // Alternate which side goes first, so slow drifts of a shared
            // machine do not favour either.
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            let mut pair = (Sample::default(), Sample::default());
            for raw in order {
                if opts.side.is_some_and(|side| side != raw) {
                    continue;
                }
                let (client0, server0) = (process_cpu_ns(), server_cpu_ns(&env.raw).await?);
                let mut sample = s.run(&env, opts, raw).await.with_context(|| {
                    format!("{} ({})", s.key(), if raw { "raw" } else { "eventbus" })
                })?;
                let (client1, server1) = (process_cpu_ns(), server_cpu_ns(&env.raw).await?);
                let n = s.events(opts) as f64;
                sample.cpu = (
                    client1.saturating_sub(client0) as f64 / n,
                    server1.saturating_sub(server0) as f64 / n,
                );
                if raw {
                    pair.0 = sample;
                } else {
                    pair.1 = sample;
                }
            }
            let _ = write!(line, " {} {:.2}x", s.key(), pair.1.rate / pair.0.rate);
            let e = results.entry(s).or_default();
            e.0.push(pair.0);
            e.1.push(pair.1);
        }
        println!("{line}");
    }

    println!();
    println!(
        "payload `{}`: median of {} rounds; raw and eventbus interleaved in each round, ratio = median of the per-round ratios (shared machine: rounds vary)",
        P::KEY,
        opts.rounds
    );
    println!(
        "{:<46} {:>10} {:>10} {:>6}  {:<38} {:<22} {:<22} {:<34}",
        "scenario",
        "eventbus/s",
        "raw/s",
        "ratio",
        "target",
        "eventbus p50/p99/max",
        "raw p50/p99/max",
        "raw baseline (decodes the same struct)",
    );
    let mut cpu_lines = Vec::new();
    for (s, (raw, ours)) in &results {
        let (r, o) = (summarize(raw), summarize(ours));
        let ratio = median(raw.iter().zip(ours).map(|(r, o)| o.rate / r.rate).collect());
        let target = match (s.target(), s.met(ratio, &o, &r)) {
            ("", _) => "(reference)".to_owned(),
            (t @ "(no target)", _) => t.to_owned(),
            (t, true) => format!("{t} ok"),
            (t, false) => format!("{t} MISS"),
        };
        let mut ours_lat = lat_cell(o.lat);
        if let Some(lost) = o.lost {
            let _ = write!(ours_lat, " lost {lost}");
        }
        let mut raw_lat = lat_cell(r.lat);
        if let Some(lost) = r.lost {
            let _ = write!(raw_lat, " lost {lost}");
        }
        println!(
            "{:<46} {:>10.0} {:>10.0} {:>5.2}x  {:<38} {:<22} {:<22} {:<34}",
            s.title(opts.rate),
            o.rate,
            r.rate,
            ratio,
            target,
            ours_lat,
            raw_lat,
            s.baseline(),
        );
        if *s == Scenario::Latency {
            // Mostly the idle cost of pacing (timers, wakeups), not per event.
            continue;
        }
        cpu_lines.push(format!(
            "{:<46} {:>8.2} {:>8.2} {:>7.2}x {:>8.2} {:>8.2}",
            s.title(opts.rate),
            o.cpu.0 / 1e3,
            r.cpu.0 / 1e3,
            o.cpu.0 / r.cpu.0,
            o.cpu.1 / 1e3,
            r.cpu.1 / 1e3,
        ));
    }
    println!(
        "latencies in ms, publish -> handle under the scenario's load (handler clock minus a timestamp taken by the publisher, same process); \"lost\" = events that never reached the handler (worst round)"
    );
    println!();
    println!(
        "CPU per event, us (median; this process = publisher + consumer, redis = redis-server):"
    );
    println!(
        "{:<46} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "ours", "raw", "ours/raw", "redis(o)", "redis(r)"
    );
    for line in cpu_lines {
        println!("{line}");
    }
    Ok(())
}
