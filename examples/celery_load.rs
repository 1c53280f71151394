//! Load test of eventbus as a Celery worker on Redis, against a raw
//! `redis`-crate loop and a real Python Celery worker, on the same no-op
//! task, in the same run.
//!
//! ```text
//! cargo run --release -p examples --example celery_load --features redis -- \
//!     [--url redis://127.0.0.1:PORT] [--tasks N] [--py-tasks N] [--rate R] [--py-rate R] \
//!     [--latency-secs S] [--py-latency-secs S] [--rounds K] [--prefetch P] \
//!     [--only raw,raw-batch,raw-kombu,eventbus,eventbus-c32,python] [--phases]
//! ```
//!
//! Without `--url` it starts a private `redis-server` on a free loopback
//! port (never 6379) and stops it at the end; a given `--url` must be a
//! scratch server: the Python worker uses kombu's own `unacked` keys, and
//! the queues `bench`, `bench_py`, `raw.bench`, `stage.bench`,
//! `stage.bench_py`, the hashes `raw.unacked*` and the counter
//! `peer:noop:done` are emptied.
//!
//! The task is a Celery protocol 2 JSON message with `args = [seq,
//! sent_at_us]`, written by `bus.publish` / `bus.publish_batch` of the
//! tuple struct [`NoopTask`] (the bytes `app.send_task("noop_task",
//! args=(seq, sent_at_us), queue="bench")` writes). Every side decodes it
//! into the same `NoopTask` and only counts it:
//! - `raw`: one connection looping `BRPOP` + decode (the kombu JSON
//!   envelope, the base64 body, `[args, kwargs, embed]`, `args` into
//!   `NoopTask`); no acknowledgement bookkeeping: the baseline, a worker
//!   loop written by hand (one round trip a task).
//! - `raw-batch` (reference): the same with `RPOP key 128` (`BRPOP` when
//!   the queue is empty).
//! - `raw-kombu` (reference): `raw-batch` plus the Redis work kombu's
//!   channel does around each task, pipelined from the client: `HSET
//!   unacked` + `ZADD unacked_index` for the batch before running it,
//!   `ZREM` + `HDEL` after (not atomic, as kombu's is not; keys of its own).
//! - `eventbus`, `eventbus-c32`: a `Bus` with one typed handler of
//!   `NoopTask` (default `CeleryOptions`; handler concurrency 16, the
//!   default, or 32): the kombu-compatible pop (a Lua script registering
//!   each message in `unacked` / `unacked_index`), the CloudEvent, the typed
//!   decode, the handler, the ack (`ZREM` + `HDEL`).
//! - `python`: `celery -A celery_peer worker -P prefork -c 2` (testkit's
//!   peer app) running its `noop` task, which `INCR`s `peer:noop:done`
//!   (the queue is filled with tasks named `noop`, same args).
//!
//! Throughput: N tasks are written to a staging list while the worker is
//! up and idle, then `RENAME`d onto its queue (one atomic step: the whole
//! backlog appears at once and wakes the blocked worker); the time is from
//! the `RENAME` until all N ran and, for the Celery workers, `unacked` is
//! empty again (every task acknowledged). Latency: tasks published one at
//! a time, paced at R/s, to an idle worker; the latency is the handler's
//! clock minus `sent_at_us` (same process, same clock). The Python task
//! does not report a time: its latency is the arrival of the keyspace
//! notification of its `INCR` (`notify-keyspace-events K$`, set for the
//! run) minus the send time of the task of the same rank (the queue is
//! FIFO; two pool processes may swap neighbours).
//!
//! Sides take turns inside every round, the order reversing from round to
//! round (the machine may be shared); each figure is the median over the
//! rounds, and each ratio the median of the per-round ratios. It also
//! prints the CPU time per task of this process, of `redis-server` and of
//! the Python worker's processes while draining. `--phases` times instead
//! the client's decode steps on one task message (raw decode;
//! `TaskMessage::parse`; the CloudEvent the transport builds and the bus's
//! typed decode of it).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use eventbus::celery::CeleryOptions;
use eventbus::{Bus, Context, Event, HandlerDef};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The benchmark's task: `args = [seq, sent_at_us]`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("noop_task", celery, queue = "bench")]
struct NoopTask(pub u64, pub u64);

/// The same arguments for the Python peer's `noop` task.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("noop", celery, queue = "bench_py")]
struct NoopPy(pub u64, pub u64);

const SERVICE: &str = "celery_load";
const QUEUE: &str = "bench";
const PY_QUEUE: &str = "bench_py";
/// The raw loops' queue (the `raw.` key prefix of their publisher).
const RAW_QUEUE: &str = "raw.bench";
const RAW_PREFIX: &str = "raw.";
const STAGE_PREFIX: &str = "stage.";
/// What the Python `noop` task INCRs.
const PY_DONE: &str = "peer:noop:done";
const FILL_BATCH: usize = 1000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[path = "common/measure.rs"]
#[allow(dead_code)]
mod measure;
use measure::{Lat, median, process_cpu_ns, rate};

// ---- measurement ----------------------------------------------------------

/// What a handler (or a raw consumer) saw: how many tasks, and their latencies.
#[derive(Debug)]
struct Probe {
    seen: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
    lat_us: Mutex<Vec<u64>>,
}

impl Probe {
    fn new() -> Arc<Self> {
        Arc::new(Probe {
            seen: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: Notify::new(),
            lat_us: Mutex::new(Vec::new()),
        })
    }

    /// Starts counting anew, to `target`; latencies are kept if `latency`.
    fn reset(&self, target: usize, latency: bool) {
        let mut lat = self.lat_us.lock().expect("not poisoned");
        lat.clear();
        if latency {
            lat.reserve(target);
        }
        self.seen.store(0, Ordering::Release);
        self.target.store(target, Ordering::Release);
    }

    fn hit(&self, sent_us: u64, latency: bool) {
        if latency {
            let now = now_us();
            self.lat_us
                .lock()
                .expect("not poisoned")
                .push(now.saturating_sub(sent_us));
        }
        if self.seen.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::Acquire)
    }

    async fn wait(&self, what: &str) -> anyhow::Result<()> {
        let deadline = Duration::from_secs(120);
        let target = self.target.load(Ordering::Acquire);
        tokio::time::timeout(deadline, async {
            loop {
                let notified = self.done.notified();
                if self.seen() >= target {
                    return;
                }
                notified.await;
            }
        })
        .await
        .with_context(|| {
            format!(
                "{what}: only {} of {target} tasks ran after {deadline:?}",
                self.seen()
            )
        })
    }

    fn latency(&self) -> Option<Lat> {
        let mut v = std::mem::take(&mut *self.lat_us.lock().expect("not poisoned"));
        Lat::of(&mut v)
    }
}

/// Whether the handler records latencies (the paced runs) or only counts.
#[derive(Debug)]
struct Timing(std::sync::atomic::AtomicBool);

/// The one typed handler: counts the task (and its latency when paced).
async fn on_noop(task: NoopTask, ctx: Context) {
    let latency = ctx.state::<Timing>().0.load(Ordering::Relaxed);
    ctx.state::<Arc<Probe>>().hit(task.1, latency);
}

/// One measurement of one side in one round.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Tasks per second, draining a pre-filled queue.
    rate: f64,
    /// Paced, publish → handler.
    lat: Option<Lat>,
    /// CPU per task while draining, ns: this process, redis-server, the Python worker.
    cpu: (f64, f64, f64),
}

/// CPU time used so far by the processes of group `pgid` (the Celery
/// worker and its pool), in ns (`/proc/<pid>/stat`, clock ticks of 10 ms).
fn group_cpu_ns(pgid: u32) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
        .filter_map(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After `pid (comm)`: state ppid pgrp ..., utime and stime 11th and 12th.
            if f.get(2)?.parse::<u32>().ok()? != pgid {
                return None;
            }
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum::<u64>()
        * 10_000_000
}

/// CPU counters at the start of a timed drain.
struct CpuMark {
    ours: u64,
    redis: u64,
    python: u64,
}

impl CpuMark {
    async fn now(env: &Env) -> anyhow::Result<Self> {
        let mut conn = env.conn.clone();
        Ok(CpuMark {
            ours: process_cpu_ns(),
            redis: measure::redis_cpu_ns(&mut conn).await?,
            python: env.python_pid.map_or(0, group_cpu_ns),
        })
    }

    async fn per_task(&self, env: &Env, n: usize) -> anyhow::Result<(f64, f64, f64)> {
        let end = CpuMark::now(env).await?;
        let n = n as f64;
        Ok((
            end.ours.saturating_sub(self.ours) as f64 / n,
            end.redis.saturating_sub(self.redis) as f64 / n,
            end.python.saturating_sub(self.python) as f64 / n,
        ))
    }
}

// ---- the raw decode ---------------------------------------------------------

/// The parts of kombu's envelope a raw worker needs.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
    #[serde(borrow)]
    headers: EnvelopeHeaders<'a>,
    #[serde(borrow)]
    properties: EnvelopeProperties<'a>,
}

#[derive(Deserialize)]
struct EnvelopeHeaders<'a> {
    #[serde(borrow)]
    task: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EnvelopeProperties<'a> {
    #[serde(borrow)]
    body_encoding: Cow<'a, str>,
    #[serde(borrow)]
    delivery_tag: Cow<'a, str>,
}

const fn base64_table() -> [u8; 256] {
    let mut t = [0xff_u8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static BASE64: [u8; 256] = base64_table();

/// Standard base64 (padded) into `out`.
fn base64_decode(input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let input = match input {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        all => all,
    };
    out.reserve(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in input {
        let v = BASE64[c as usize];
        if v == 0xff {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(())
}

/// A Celery protocol 2 message of `task` into the handler's type, as a
/// raw worker would: envelope, base64 body, `[args, kwargs, embed]`.
fn decode_task(raw: &[u8], task: &str, buf: &mut Vec<u8>) -> anyhow::Result<NoopTask> {
    decode_tagged(raw, task, buf).map(|(t, _)| t)
}

/// [`decode_task`], and the message's delivery tag.
fn decode_tagged<'a>(
    raw: &'a [u8],
    task: &str,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(NoopTask, Cow<'a, str>)> {
    let env: Envelope<'_> = serde_json::from_slice(raw).context("not a kombu envelope")?;
    if env.headers.task != task || env.properties.body_encoding != "base64" {
        bail!("not a base64 `{task}` message");
    }
    base64_decode(env.body.as_bytes(), buf).context("bad base64 body")?;
    let (args, _kwargs, _embed): (NoopTask, serde::de::IgnoredAny, serde::de::IgnoredAny) =
        serde_json::from_slice(buf).context("body is not [args, kwargs, embed]")?;
    Ok((args, env.properties.delivery_tag))
}

// ---- the environment -------------------------------------------------------

struct Env {
    url: String,
    raw: redis::Client,
    conn: redis::aio::MultiplexedConnection,
    /// Writes the staging lists (`stage.` prefix).
    stage: Bus,
    /// Publishes to the raw loops' queue (`raw.` prefix).
    raw_pub: Bus,
    /// Publishes to the real queues (no prefix).
    main_pub: Bus,
    python_pid: Option<u32>,
    opts: Opts,
}

async fn publisher(url: &str, prefix: &str) -> anyhow::Result<Bus> {
    Ok(Bus::builder()
        .service(SERVICE)
        .without_registered()
        .celery_options(CeleryOptions {
            key_prefix: prefix.to_owned(),
            ..CeleryOptions::default()
        })
        .connect(url)
        .await?)
}

impl Env {
    /// A connection for blocking reads (no response timeout).
    async fn blocking_conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(self
            .raw
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Writes `n` tasks (`python`: named `noop`) to the staging list of
    /// `queue`; returns its key.
    async fn fill(&self, n: usize, python: bool) -> anyhow::Result<String> {
        let queue = if python { PY_QUEUE } else { QUEUE };
        let key = format!("{STAGE_PREFIX}{queue}");
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
        let mut seq = 0;
        while seq < n as u64 {
            let end = (seq + FILL_BATCH as u64).min(n as u64);
            let sent = now_us();
            if python {
                self.stage
                    .publish_batch((seq..end).map(|i| NoopPy(i, sent)))
                    .await?;
            } else {
                self.stage
                    .publish_batch((seq..end).map(|i| NoopTask(i, sent)))
                    .await?;
            }
            seq = end;
        }
        let len: usize = redis::cmd("LLEN").arg(&key).query_async(&mut conn).await?;
        if len != n {
            bail!("the staging list {key} holds {len} tasks, not {n}");
        }
        Ok(key)
    }

    /// Moves the staging list onto `queue`: the backlog appears at once.
    async fn release(&self, stage: &str, queue: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("RENAME")
            .arg(stage)
            .arg(queue)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Waits until kombu's `unacked` hash is empty (every task acknowledged).
    async fn wait_acked(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let start = Instant::now();
        loop {
            let n: usize = redis::cmd("HLEN")
                .arg("unacked")
                .query_async(&mut conn)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{n} tasks still unacknowledged after 60 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Publishes `n` tasks one at a time at `rate`/s; returns their send times.
    async fn paced(&self, to: &Bus, n: usize, rate: u64, python: bool) -> anyhow::Result<Vec<u64>> {
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(n);
        for i in 0..n {
            tokio::time::sleep_until(start + period * i as u32).await;
            let t = now_us();
            sent.push(t);
            if python {
                to.publish(NoopPy(i as u64, t)).await?;
            } else {
                to.publish(NoopTask(i as u64, t)).await?;
            }
        }
        Ok(sent)
    }

    async fn del(&self, keys: &[&str]) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        Ok(())
    }
}

// ---- the sides ---------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Raw,
    RawBatch,
    RawKombu,
    Eventbus,
    Eventbus32,
    Python,
}

impl Side {
    const ALL: [Side; 6] = [
        Side::Raw,
        Side::RawBatch,
        Side::RawKombu,
        Side::Eventbus,
        Side::Eventbus32,
        Side::Python,
    ];

    fn key(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::RawBatch => "raw-batch",
            Side::RawKombu => "raw-kombu",
            Side::Eventbus => "eventbus",
            Side::Eventbus32 => "eventbus-c32",
            Side::Python => "python",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Side::Raw => "raw: 1 conn, BRPOP + decode, no ack",
            Side::RawBatch => "raw: 1 conn, RPOP 128 + decode, no ack",
            Side::RawKombu => "raw: RPOP 128 + kombu unacked/ack, pipelined",
            Side::Eventbus => "eventbus worker (defaults, concurrency 16)",
            Side::Eventbus32 => "eventbus worker, concurrency 32",
            Side::Python => "Python Celery, prefork -c 2",
        }
    }

    fn latency_tasks(self, o: &Opts) -> usize {
        match self {
            Side::Python => ((o.py_rate as f64 * o.py_latency_secs) as usize).max(1),
            _ => ((o.rate as f64 * o.latency_secs) as usize).max(1),
        }
    }

    async fn run(self, env: &Env) -> anyhow::Result<Sample> {
        match self {
            Side::Raw => raw(env, Pop::One).await,
            Side::RawBatch => raw(env, Pop::Batch).await,
            Side::RawKombu => raw(env, Pop::Kombu).await,
            Side::Eventbus => eventbus(env, None).await,
            Side::Eventbus32 => eventbus(env, Some(32)).await,
            Side::Python => python(env).await,
        }
    }
}

/// How a raw loop takes its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pop {
    /// `BRPOP`, one task a round trip.
    One,
    /// `RPOP key 128` (`BRPOP` when empty).
    Batch,
    /// `Batch`, then what kombu's Redis channel does around a task: `HSET
    /// unacked` + `ZADD unacked_index` (one pipeline per batch) before
    /// running it, `ZREM` + `HDEL` (one pipeline) after; not atomic (kombu's
    /// own is not either), in keys of its own.
    Kombu,
}

const RAW_UNACKED: &str = "raw.unacked";
const RAW_UNACKED_INDEX: &str = "raw.unacked_index";

/// The raw loop on one connection: pop, decode, count.
async fn raw_consume(
    mut conn: redis::aio::MultiplexedConnection,
    probe: Arc<Probe>,
    pop: Pop,
    latency: bool,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let target = probe.target.load(Ordering::Acquire);
    let mut seen = 0;
    while seen < target {
        let mut popped: Vec<Vec<u8>> = Vec::new();
        if pop != Pop::One {
            let v: Option<Vec<Vec<u8>>> = redis::cmd("RPOP")
                .arg(RAW_QUEUE)
                .arg(128)
                .query_async(&mut conn)
                .await?;
            popped = v.unwrap_or_default();
        }
        if popped.is_empty() {
            let v: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                .arg(RAW_QUEUE)
                .arg(1)
                .query_async(&mut conn)
                .await?;
            popped = v.map(|(_, m)| vec![m]).unwrap_or_default();
        }
        if pop == Pop::Kombu {
            let now = format!("{:.6}", now_us() as f64 / 1e6);
            let mut register = redis::pipe();
            let mut ack = redis::pipe();
            let mut tasks = Vec::with_capacity(popped.len());
            for m in &popped {
                let (task, tag) = decode_tagged(m, NoopTask::TYPE, &mut buf)?;
                let mut entry = Vec::with_capacity(m.len() + 16);
                entry.push(b'[');
                entry.extend_from_slice(m);
                entry.extend_from_slice(format!(",\"\",\"{QUEUE}\"]").as_bytes());
                register
                    .cmd("HSET")
                    .arg(RAW_UNACKED)
                    .arg(tag.as_ref())
                    .arg(entry)
                    .ignore()
                    .cmd("ZADD")
                    .arg(RAW_UNACKED_INDEX)
                    .arg(&now)
                    .arg(tag.as_ref())
                    .ignore();
                ack.cmd("ZREM")
                    .arg(RAW_UNACKED_INDEX)
                    .arg(tag.as_ref())
                    .ignore()
                    .cmd("HDEL")
                    .arg(RAW_UNACKED)
                    .arg(tag.as_ref())
                    .ignore();
                tasks.push(task);
            }
            register.query_async::<()>(&mut conn).await?;
            for task in tasks {
                probe.hit(task.1, latency);
                seen += 1;
            }
            ack.query_async::<()>(&mut conn).await?;
            continue;
        }
        for m in &popped {
            let task = decode_task(m, NoopTask::TYPE, &mut buf)?;
            probe.hit(task.1, latency);
            seen += 1;
        }
    }
    Ok(())
}

async fn raw(env: &Env, pop: Pop) -> anyhow::Result<Sample> {
    env.del(&[RAW_QUEUE, RAW_UNACKED, RAW_UNACKED_INDEX])
        .await?;
    let probe = Probe::new();
    // Throughput: the consumer is up, blocked, when the backlog appears.
    let n = env.opts.tasks;
    let stage = env.fill(n, false).await?;
    probe.reset(n, false);
    let consumer = tokio::spawn(raw_consume(
        env.blocking_conn().await?,
        probe.clone(),
        pop,
        false,
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = CpuMark::now(env).await?;
    let start = Instant::now();
    env.release(&stage, RAW_QUEUE).await?;
    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .context("raw drain: the consumer did not finish")???;
    let took = start.elapsed();
    let cpu = mark.per_task(env, n).await?;
    // Latency (of the plain loop only): paced publishes to the blocked consumer.
    let lat = if pop == Pop::One {
        let n = Side::Raw.latency_tasks(&env.opts);
        probe.reset(n, true);
        let consumer = tokio::spawn(raw_consume(
            env.blocking_conn().await?,
            probe.clone(),
            Pop::One,
            true,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        env.paced(&env.raw_pub, n, env.opts.rate, false).await?;
        tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .context("raw latency: the consumer did not finish")???;
        probe.latency()
    } else {
        None
    };
    Ok(Sample {
        rate: rate(n, took),
        lat,
        cpu,
    })
}

/// A bus with one `NoopTask` handler: drain, then paced.
async fn eventbus(env: &Env, concurrency: Option<u32>) -> anyhow::Result<Sample> {
    env.del(&[QUEUE]).await?;
    let probe = Probe::new();
    let mut handler = HandlerDef::new("noop_task", on_noop);
    if let Some(c) = concurrency {
        handler = handler.concurrency(c);
    }
    let celery = CeleryOptions {
        prefetch: env
            .opts
            .prefetch
            .unwrap_or(CeleryOptions::default().prefetch),
        ..CeleryOptions::default()
    };
    let bus = Bus::builder()
        .service(SERVICE)
        .without_registered()
        .handler(handler)
        .state(probe.clone())
        .state(Timing(false.into()))
        .celery_options(celery)
        .connect(&env.url)
        .await?;
    let n = env.opts.tasks;
    let stage = env.fill(n, false).await?;
    probe.reset(n, false);
    let mut running = bus.spawn();
    running.ready().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = CpuMark::now(env).await?;
    let start = Instant::now();
    env.release(&stage, QUEUE).await?;
    probe.wait("eventbus drain").await?;
    env.wait_acked().await?;
    let took = start.elapsed();
    let cpu = mark.per_task(env, n).await?;

    let ln = Side::Eventbus.latency_tasks(&env.opts);
    probe.reset(ln, true);
    bus.state::<Timing>().0.store(true, Ordering::Relaxed);
    env.paced(&env.main_pub, ln, env.opts.rate, false).await?;
    probe.wait("eventbus latency").await?;
    env.wait_acked().await?;
    let lat = probe.latency();
    running.shutdown().await?;
    wait_readers_gone(env).await?;
    Ok(Sample {
        rate: rate(n, took),
        lat,
        cpu,
    })
}

/// Waits until a stopped bus's queue reader has given back its hand-off
/// list (it may still be in a blocking read for up to a second).
async fn wait_readers_gone(env: &Env) -> anyhow::Result<()> {
    let mut conn = env.conn.clone();
    let start = Instant::now();
    loop {
        let n: usize = redis::cmd("HLEN")
            .arg("_eventbus.celery.handoffs")
            .query_async(&mut conn)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("a stopped bus's Celery reader is still registered after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python worker (already running on `bench_py`): drain, then paced.
async fn python(env: &Env) -> anyhow::Result<Sample> {
    let mut conn = env.conn.clone();
    env.del(&[PY_QUEUE, PY_DONE]).await?;
    let n = env.opts.py_tasks;
    let stage = env.fill(n, true).await?;
    let mark = CpuMark::now(env).await?;
    let start = Instant::now();
    env.release(&stage, PY_QUEUE).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: Option<usize> = redis::cmd("GET")
            .arg(PY_DONE)
            .query_async(&mut conn)
            .await?;
        if done.unwrap_or(0) >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("python drain: only {done:?} of {n} tasks ran after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    env.wait_acked().await?;
    let took = start.elapsed();
    let cpu = mark.per_task(env, n).await?;

    // Latency: the keyspace notifications of the task's INCR.
    let ln = Side::Python.latency_tasks(&env.opts);
    env.del(&[PY_DONE]).await?;
    let db = env.raw.get_connection_info().redis_settings().db();
    let mut pubsub = env.raw.get_async_pubsub().await?;
    pubsub
        .subscribe(format!("__keyspace@{db}__:{PY_DONE}"))
        .await?;
    let arrivals = tokio::spawn(async move {
        let mut at = Vec::with_capacity(ln);
        let mut stream = pubsub.on_message();
        while at.len() < ln {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(_)) => at.push(now_us()),
                _ => break,
            }
        }
        at
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = env.paced(&env.main_pub, ln, env.opts.py_rate, true).await?;
    let at = arrivals.await?;
    if at.len() < ln {
        bail!(
            "python latency: {} of {ln} task notifications arrived",
            at.len()
        );
    }
    env.wait_acked().await?;
    let mut lat: Vec<u64> = at
        .iter()
        .zip(&sent)
        .map(|(a, s)| a.saturating_sub(*s))
        .collect();
    Ok(Sample {
        rate: rate(n, took),
        lat: Lat::of(&mut lat),
        cpu,
    })
}

/// `--phases`: the client's per-task decode steps, timed on one task
/// message as `bus.publish` writes it (ns per task, single thread).
async fn phases(env: &Env) -> anyhow::Result<()> {
    use eventbus_redis::celery::{Shape, TaskMessage};
    use std::hint::black_box;
    let stage = env.fill(1, false).await?;
    let mut conn = env.conn.clone();
    let msg: Vec<u8> = redis::cmd("LINDEX")
        .arg(&stage)
        .arg(0)
        .query_async(&mut conn)
        .await?;
    env.del(&[&stage]).await?;
    const M: u32 = 200_000;
    fn time(mut f: impl FnMut()) -> f64 {
        let start = Instant::now();
        for _ in 0..M {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(M)
    }
    let mut buf = Vec::new();
    let raw = time(|| {
        black_box(decode_task(black_box(&msg), NoopTask::TYPE, &mut buf).expect("decodes"));
    });
    let parse = time(|| {
        let m = TaskMessage::parse(black_box(&msg)).expect("parses");
        black_box(m.data(Shape::Args).expect("args"));
    });
    // What the transport then builds for the bus (its `cloudevent()`, less
    // the clock), and the bus's typed decode of it.
    let m = TaskMessage::parse(&msg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = m.data(Shape::Args).map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = |v: &str| serde_json::to_string(v).expect("a string");
    let build_ce = || {
        format!(
            "{{\"specversion\":\"1.0\",\"id\":{},\"source\":{},\"type\":{},\"time\":{},\"datacontenttype\":\"application/json\",\"data\":{data}}}",
            s(&m.id),
            s(&format!("/celery/{QUEUE}")),
            s(&m.task),
            s("2026-12-02T10:00:00.000000Z"),
        )
    };
    let ce = build_ce();
    let build = time(|| {
        black_box(build_ce());
    });
    let decode = time(|| {
        black_box(eventbus::codec::decode::<NoopTask>(black_box(ce.as_bytes())).expect("decodes"));
    });
    println!(
        "client decode per task, ns ({}-byte message, {M} times each, one thread):",
        msg.len()
    );
    println!("  raw: envelope + base64 + [args, kwargs, embed] -> NoopTask   {raw:>8.0}");
    println!("  eventbus: TaskMessage::parse + data(Shape::Args)             {parse:>8.0}");
    println!("  eventbus: the CloudEvent for the bus (format, no clock)      {build:>8.0}");
    println!("  eventbus: codec::decode::<NoopTask> of that CloudEvent       {decode:>8.0}");
    println!(
        "  eventbus total / raw: {:.2}x",
        (parse + build + decode) / raw
    );
    Ok(())
}

// ---- the run -----------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    url: Option<String>,
    tasks: usize,
    py_tasks: usize,
    rate: u64,
    py_rate: u64,
    latency_secs: f64,
    py_latency_secs: f64,
    rounds: usize,
    prefetch: Option<usize>,
    only: Vec<Side>,
    phases: bool,
}

const USAGE: &str = "usage: celery_load [--url redis://HOST:PORT] [--tasks N] [--py-tasks N] [--rate R] [--py-rate R] [--latency-secs S] [--py-latency-secs S] [--rounds K] [--prefetch P] [--only raw,raw-batch,raw-kombu,eventbus,eventbus-c32,python] [--phases]";

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let mut o = Opts {
            url: None,
            tasks: 20_000,
            py_tasks: 5_000,
            rate: 2_000,
            py_rate: 200,
            latency_secs: 2.0,
            py_latency_secs: 3.0,
            rounds: 3,
            prefetch: None,
            only: Side::ALL.to_vec(),
            phases: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--url" => o.url = Some(value()?),
                "--tasks" => o.tasks = value()?.parse().context("--tasks N")?,
                "--py-tasks" => o.py_tasks = value()?.parse().context("--py-tasks N")?,
                "--rate" => o.rate = value()?.parse().context("--rate R")?,
                "--py-rate" => o.py_rate = value()?.parse().context("--py-rate R")?,
                "--latency-secs" => {
                    o.latency_secs = value()?.parse().context("--latency-secs S")?
                }
                "--py-latency-secs" => {
                    o.py_latency_secs = value()?.parse().context("--py-latency-secs S")?
                }
                "--rounds" => o.rounds = value()?.parse().context("--rounds K")?,
                "--prefetch" => o.prefetch = Some(value()?.parse().context("--prefetch P")?),
                "--only" => {
                    let list = value()?;
                    o.only = list
                        .split(',')
                        .map(|k| {
                            Side::ALL
                                .into_iter()
                                .find(|s| s.key() == k.trim())
                                .with_context(|| {
                                    let keys: Vec<_> = Side::ALL.iter().map(|s| s.key()).collect();
                                    format!("unknown side `{k}`; one of {}", keys.join(", "))
                                })
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--phases" => o.phases = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument `{other}` (try --help)"),
            }
        }
        if o.tasks == 0 || o.py_tasks == 0 || o.rate == 0 || o.py_rate == 0 || o.rounds == 0 {
            bail!("--tasks, --py-tasks, --rate, --py-rate and --rounds must be at least 1");
        }
        if o.phases {
            o.only.clear();
        }
        Ok(o)
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}

fn lat_cell(l: Option<Lat>) -> String {
    match l {
        Some(l) => format!("{}/{}/{}", ms(l.p50), ms(l.p90), ms(l.p99)),
        None => "-".into(),
    }
}

fn summarize(samples: &[Sample]) -> Sample {
    Sample {
        rate: median(samples.iter().map(|s| s.rate).collect()),
        lat: Lat::median_of(samples.iter().map(|s| s.lat)),
        cpu: (
            median(samples.iter().map(|s| s.cpu.0).collect()),
            median(samples.iter().map(|s| s.cpu.1).collect()),
            median(samples.iter().map(|s| s.cpu.2).collect()),
        ),
    }
}

/// The median over the rounds of `side`'s rate over `base`'s.
fn ratio(results: &BTreeMap<Side, Vec<Sample>>, side: Side, base: Side) -> Option<f64> {
    let (a, b) = (results.get(&side)?, results.get(&base)?);
    Some(median(
        a.iter().zip(b).map(|(a, b)| a.rate / b.rate).collect(),
    ))
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse()?;
    let started = Instant::now();
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
    let raw = redis::Client::open(url.as_str())?;
    let mut conn = raw.get_multiplexed_async_connection().await?;

    let mut worker = None;
    if opts.only.contains(&Side::Python) {
        let mut w = testkit::CeleryWorker::start(&testkit::CeleryWorkerOptions {
            queues: vec![PY_QUEUE.into()],
            concurrency: 2,
            pool: testkit::CeleryPool::Prefork,
            ..testkit::CeleryWorkerOptions::new(url.clone())
        })
        .context("cannot start the Python Celery worker (or leave it out: --only raw,eventbus)")?;
        w.wait_ready(Duration::from_secs(60))?;
        worker = Some(w);
    }
    // The Python task's latency comes from the keyspace notification of its INCR.
    let notify_before: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("K$")
        .query_async(&mut conn)
        .await?;

    let env = Env {
        url: url.clone(),
        raw,
        conn: conn.clone(),
        stage: publisher(&url, STAGE_PREFIX).await?,
        raw_pub: publisher(&url, RAW_PREFIX).await?,
        main_pub: publisher(&url, "").await?,
        python_pid: worker.as_ref().map(testkit::CeleryWorker::pid),
        opts: opts.clone(),
    };

    println!(
        "eventbus celery_load: {} (redis {}), {} tasks per drain ({} for Python), paced {}/s for {} s ({}/s for {} s for Python), {} rounds, eventbus prefetch {}",
        eventbus::transport::redact(&url),
        if opts.url.is_some() {
            "given"
        } else {
            "private, started here"
        },
        opts.tasks,
        opts.py_tasks,
        opts.rate,
        opts.latency_secs,
        opts.py_rate,
        opts.py_latency_secs,
        opts.rounds,
        opts.prefetch.map_or_else(
            || format!("{} (default)", CeleryOptions::default().prefetch),
            |p| p.to_string()
        ),
    );

    let mut results: BTreeMap<Side, Vec<Sample>> = BTreeMap::new();
    let outcome = async {
        if opts.phases {
            phases(&env).await?;
        }
        for round in 0..opts.rounds {
            if opts.only.is_empty() {
                break;
            }
            let mut order = opts.only.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut line = format!("round {}/{}:", round + 1, opts.rounds);
            for side in order {
                let s = side
                    .run(&env)
                    .await
                    .with_context(|| format!("{} (round {})", side.key(), round + 1))?;
                line.push_str(&format!(" {} {:.0}/s", side.key(), s.rate));
                results.entry(side).or_default().push(s);
            }
            println!("{line}");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;

    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(notify_before.get(1).map_or("", String::as_str))
        .query_async(&mut conn)
        .await;
    if let Some(mut w) = worker {
        w.stop(Duration::from_secs(10));
    }
    let _ = env
        .del(&[
            QUEUE,
            PY_QUEUE,
            RAW_QUEUE,
            PY_DONE,
            RAW_UNACKED,
            RAW_UNACKED_INDEX,
            &format!("{STAGE_PREFIX}{QUEUE}"),
            &format!("{STAGE_PREFIX}{PY_QUEUE}"),
        ])
        .await;
    outcome?;
    if results.is_empty() {
        return Ok(());
    }

    println!();
    println!(
        "median of {} rounds; sides interleaved in each round (order reversed every other round); ratios = median of the per-round ratios",
        opts.rounds
    );
    println!(
        "{:<46} {:>8} {:>7} {:>7} {:>7} {:>7}  {:<26} {:>6} {:>6} {:>7}",
        "side",
        "tasks/s",
        "vs raw",
        "vs batch",
        "vs kombu",
        "vs py",
        "p50/p90/p99 ms (paced)",
        "ours",
        "redis",
        "python",
    );
    for (&side, samples) in &results {
        let s = summarize(samples);
        let paced = match side {
            Side::Python => opts.py_rate,
            _ => opts.rate,
        };
        println!(
            "{:<46} {:>8.0} {:>7} {:>7} {:>7} {:>7}  {:<26} {:>6.2} {:>6.2} {:>7}",
            side.title(),
            s.rate,
            ratio_cell(ratio(&results, side, Side::Raw)),
            ratio_cell(ratio(&results, side, Side::RawBatch)),
            ratio_cell(ratio(&results, side, Side::RawKombu)),
            ratio_cell(ratio(&results, side, Side::Python)),
            if s.lat.is_some() {
                format!("{} @{paced}/s", lat_cell(s.lat))
            } else {
                "-".into()
            },
            s.cpu.0 / 1e3,
            s.cpu.1 / 1e3,
            if side == Side::Python {
                format!("{:.1}", s.cpu.2 / 1e3)
            } else {
                "-".into()
            },
        );
    }
    println!(
        "tasks/s: draining a pre-filled queue until every task ran (and, for the Celery workers, was acknowledged); vs X = median of the per-round ratios to raw (BRPOP), raw-batch, raw-kombu, Python; latency: paced publish -> handler (Python: -> the keyspace notification of its INCR); CPU in us per task while draining (ours = this process, redis = redis-server, python = the worker's processes)"
    );
    for (base, what) in [(Side::Raw, "raw BRPOP"), (Side::RawKombu, "raw-kombu")] {
        if let Some(r) = ratio(&results, Side::Eventbus, base) {
            println!(
                "eventbus (defaults) vs {what}: {r:.2}x (target >= 0.8x: {})",
                if r >= 0.8 { "met" } else { "MISSED" }
            );
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
