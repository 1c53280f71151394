//! Load test of the HTTP endpoints of eventbus (`eventbus::http::router`)
//! over Redis Streams, against raw axum handlers doing the same HTTP and
//! Redis work on the same payload bytes, in the same run.
//!
//! ```text
//! cargo run --release -p examples --example http_load --features redis -- \
//!     [--url redis://127.0.0.1:PORT] [--events N] [--pull-events M] [--rounds K] \
//!     [--clients C] [--readers R] [--only ingest,pull,pull-concurrent] [--side raw|eventbus]
//! ```
//!
//! Without `--url` it starts a private `redis-server` on a free loopback port
//! (never 6379) and stops it at the end. Every key it writes carries an
//! `httpload` prefix unique to the run and is deleted afterwards.
//!
//! The servers run on a tokio runtime of their own (threads `server`), the
//! load on another (threads `client`), so that the CPU time per event of the
//! server side is measured apart from the client's; the client is the same
//! for both sides.
//!
//! Scenarios (raw and eventbus alternate inside every round, the order
//! flipping from round to round, because the machine may be shared; each
//! figure is the median over the rounds, the ratio the median of the
//! per-round ratios):
//! - `ingest`: C keep-alive clients (one shared `reqwest::Client`) each
//!   `POST /events` one structured CloudEvent (`application/cloudevents+json`,
//!   a fresh id each) at a time, N requests in all, every answer checked to
//!   be `202`; eventbus: the router of a bus without handlers, Redis Streams
//!   behind; raw: an axum handler that reads the body, parses it with
//!   `serde_json::from_slice` into a struct of the attributes and
//!   `data: Box<RawValue>`, checks `specversion` and the required attributes,
//!   then `XADD <stream> * cloud_event <body>` on a multiplexed connection
//!   and answers `202`. Afterwards each stream must hold exactly N entries.
//! - `pull`: one reader pages through a stream of M entries, 1000 per
//!   request, until an empty page; eventbus: `GET /events?types=T&limit=1000
//!   &after=<feed-cursor>`; raw: an axum handler doing `XRANGE <stream>
//!   (<after> + COUNT 1000` and answering the JSON array of the stored
//!   payloads with the last id in `feed-cursor` (the same HTTP shape). The
//!   client parses every page into its events (`Vec<&RawValue>`) and counts
//!   them: exactly M, or the run fails.
//! - `pull-concurrent`: R readers (default 4) do the same at once, each the
//!   whole stream; events/s counts every reader's events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventbus::{Bus, Event};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The event of both scenarios, as the bus knows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = "reviews")]
struct ReviewCreated {
    /// The review.
    #[event(subject)]
    id: uuid::Uuid,
    model_name: String,
    rating: u8,
    title: String,
}

const SERVICE: &str = "http_load";
const PAGE: usize = 1000;
const STRUCTURED: &str = "application/cloudevents+json";
const BATCH_TYPE: &str = "application/cloudevents-batch+json";
const CURSOR_HEADER: &str = "feed-cursor";

/// The body of every ingest request; `{ID}` and `{DATA_ID}` are replaced by
/// fresh UUIDs (36 characters each, stamped in place).
const TEMPLATE: &str = concat!(
    r#"{"specversion":"1.0","id":"{ID_________________________________}","#,
    r#""source":"/reviews","type":"review_created","#,
    r#""subject":"{DATA_ID____________________________}","#,
    r#""time":"2026-12-02T10:15:30.123456Z","datacontenttype":"application/json","#,
    r#""data":{"id":"{DATA_ID____________________________}","model_name":"Review","#,
    r#""rating":4,"title":"Good value for the price"}}"#,
);

/// The payload template and where its UUIDs go.
#[derive(Clone)]
struct Payload {
    template: Vec<u8>,
    id_at: usize,
    data_id_at: Vec<usize>,
}

impl Payload {
    fn new() -> anyhow::Result<Self> {
        let template = TEMPLATE.as_bytes().to_vec();
        let find_all = |marker: &str| -> Vec<usize> {
            let m = marker.as_bytes();
            template
                .windows(m.len())
                .enumerate()
                .filter(|(_, w)| *w == m)
                .map(|(i, _)| i)
                .collect()
        };
        let ids = find_all("{ID_");
        let data_ids = find_all("{DATA_ID");
        ensure!(ids.len() == 1 && data_ids.len() == 2, "bad template");
        Ok(Payload {
            template,
            id_at: ids[0],
            data_id_at: data_ids,
        })
    }

    /// The payload with fresh UUIDs.
    fn fresh(&self) -> Vec<u8> {
        let mut buf = self.template.clone();
        uuid::Uuid::now_v7()
            .hyphenated()
            .encode_lower(&mut buf[self.id_at..self.id_at + 36]);
        let data_id = uuid::Uuid::now_v7();
        for &at in &self.data_id_at {
            data_id.hyphenated().encode_lower(&mut buf[at..at + 36]);
        }
        buf
    }
}

#[path = "common/measure.rs"]
#[allow(dead_code)]
mod measure;
use measure::{Lat, median, ms, threads_cpu_ns};

// ---- measurement ----------------------------------------------------------

/// One measurement of one side (raw or eventbus) in one round.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Events per second.
    rate: f64,
    /// Per request.
    lat: Option<Lat>,
    /// CPU time per event of the server threads, of the client threads and
    /// of redis-server, in ns.
    cpu: (f64, f64, f64),
}

// ---- the raw service --------------------------------------------------------

/// What a careful raw service reads out of a structured CloudEvent.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawEvent {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    subject: Option<String>,
    time: Option<String>,
    datacontenttype: Option<String>,
    data: Option<Box<RawValue>>,
}

struct Raw {
    conn: redis::aio::MultiplexedConnection,
    ingest_key: String,
    pull_key: String,
}

fn raw_problem(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, detail.into()).into_response()
}

/// `POST /events`: parse, check, `XADD`, 202.
async fn raw_ingest(State(raw): State<Arc<Raw>>, headers: HeaderMap, body: Bytes) -> Response {
    let structured = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(STRUCTURED));
    if !structured {
        return raw_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "structured mode only");
    }
    let event: RawEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return raw_problem(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if event.specversion != "1.0"
        || event.id.is_empty()
        || event.source.is_empty()
        || event.ty.is_empty()
    {
        return raw_problem(StatusCode::BAD_REQUEST, "not a CloudEvent 1.0");
    }
    let mut conn = raw.conn.clone();
    let added: redis::RedisResult<String> = conn
        .xadd(&raw.ingest_key, "*", &[("cloud_event", &body[..])])
        .await;
    match added {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => raw_problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RawQuery {
    after: Option<String>,
    limit: Option<usize>,
    #[allow(dead_code)]
    types: Option<String>,
}

/// `GET /events`: `XRANGE (after + COUNT limit`, the payloads as a JSON
/// array, the last id in `feed-cursor`.
async fn raw_page(State(raw): State<Arc<Raw>>, Query(q): Query<RawQuery>) -> Response {
    let start = match q.after.as_deref() {
        None | Some("") => "-".to_owned(),
        Some(after) => format!("({after}"),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, PAGE);
    let mut conn = raw.conn.clone();
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
        .arg(&raw.pull_key)
        .arg(&start)
        .arg("+")
        .arg("COUNT")
        .arg(limit)
        .query_async(&mut conn)
        .await;
    let entries = match reply {
        Ok(redis::Value::Array(entries)) => entries,
        Ok(other) => {
            return raw_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unexpected {other:?}"),
            );
        }
        Err(e) => return raw_problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut body = Vec::with_capacity(entries.len() * 320 + 2);
    body.push(b'[');
    let mut last = None;
    for entry in entries {
        let redis::Value::Array(mut pair) = entry else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop().expect("len 2");
        let id = pair.pop().expect("len 2");
        let redis::Value::Array(fields) = fields else {
            continue;
        };
        let mut it = fields.into_iter();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            if let (redis::Value::BulkString(n), redis::Value::BulkString(v)) = (&name, &value)
                && n == b"cloud_event"
            {
                if body.len() > 1 {
                    body.push(b',');
                }
                body.extend_from_slice(v);
            }
        }
        last = Some(id);
    }
    body.push(b']');
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(BATCH_TYPE))],
        body,
    )
        .into_response();
    let next = match last {
        Some(redis::Value::BulkString(id)) => HeaderValue::from_bytes(&id).ok(),
        _ => q
            .after
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok()),
    };
    if let Some(next) = next {
        r.headers_mut().insert(CURSOR_HEADER, next);
    }
    r
}

// ---- the environment -------------------------------------------------------

/// The servers, running on their own runtime.
struct Servers {
    /// `http://127.0.0.1:PORT/events` of the bus serving ingest, of the bus
    /// serving the feed, and of the raw service (both endpoints).
    ingest: String,
    pull: String,
    raw: String,
    /// The Redis keys behind them.
    ingest_stream: String,
    pull_stream: String,
    raw_ingest: String,
    raw_pull: String,
    _buses: Vec<Bus>,
}

async fn listen(app: axum::Router) -> anyhow::Result<String> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("http_load: a server on {addr} stopped: {e}");
        }
    });
    Ok(format!("http://{addr}/events"))
}

/// Starts the servers; runs on the server runtime.
async fn start_servers(url: String, run_id: String) -> anyhow::Result<Servers> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let bus = |prefix: String| {
        let url = format!("{url}{sep}prefix={prefix}&mode=streams");
        async move {
            Bus::builder()
                .service(SERVICE)
                .without_registered()
                .event::<ReviewCreated>()
                .connect(&url)
                .await
        }
    };
    let ingest_prefix = format!("{run_id}-ingest");
    let pull_prefix = format!("{run_id}-pull");
    let ingest_bus = bus(ingest_prefix.clone()).await?;
    let pull_bus = bus(pull_prefix.clone()).await?;
    let raw = Arc::new(Raw {
        conn: redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?,
        ingest_key: format!("{run_id}-raw-ingest"),
        pull_key: format!("{run_id}-raw-pull"),
    });
    let raw_app = axum::Router::new()
        .route("/events", axum::routing::post(raw_ingest).get(raw_page))
        .with_state(raw.clone());
    Ok(Servers {
        ingest: listen(eventbus::http::router(&ingest_bus)).await?,
        pull: listen(eventbus::http::router(&pull_bus)).await?,
        raw: listen(raw_app).await?,
        ingest_stream: format!("{{{ingest_prefix}}}:stream:{}", ReviewCreated::TYPE),
        pull_stream: format!("{{{pull_prefix}}}:stream:{}", ReviewCreated::TYPE),
        raw_ingest: raw.ingest_key.clone(),
        raw_pull: raw.pull_key.clone(),
        _buses: vec![ingest_bus, pull_bus],
    })
}

struct Env {
    servers: Servers,
    redis: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
    payload: Payload,
    run_id: String,
}

impl Env {
    async fn xlen(&self, key: &str) -> anyhow::Result<usize> {
        let mut conn = self.redis.clone();
        Ok(conn.xlen(key).await?)
    }

    async fn del(&self, key: &str) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let _: () = conn.del(key).await?;
        Ok(())
    }

    /// Writes `n` events (the same bytes the ingest posts) to `key` with
    /// pipelined `XADD`.
    async fn fill(&self, key: &str, n: usize) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let mut sent = 0;
        while sent < n {
            let mut pipe = redis::pipe();
            for _ in 0..PAGE.min(n - sent) {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("cloud_event")
                    .arg(self.payload.fresh())
                    .ignore();
                sent += 1;
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// Deletes every key of the run.
    async fn cleanup(&self) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        for pattern in [format!("{}*", self.run_id), format!("{{{}*", self.run_id)] {
            let keys: Vec<String> = {
                let mut iter = conn.scan_match::<_, String>(pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = iter.next_item().await {
                    keys.push(k?);
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

// ---- scenarios ---------------------------------------------------------------

/// `clients` tasks posting one event per request until `n` were accepted.
async fn ingest(
    env: &Env,
    url: &str,
    key: &str,
    n: usize,
    clients: usize,
) -> anyhow::Result<Sample> {
    env.del(key).await?;
    // One request first: connections and the type's registration stay out of the timing.
    post_one(&env.http, url, env.payload.fresh()).await?;
    let next = Arc::new(AtomicUsize::new(1));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, next) = (env.http.clone(), url.to_owned(), next.clone());
        let payload = env.payload.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(n / clients + 1);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let body = payload.fresh();
                let t0 = Instant::now();
                post_one(&http, &url, body).await?;
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let took = start.elapsed();
    let len = env.xlen(key).await?;
    ensure!(
        len == n,
        "{url}: {len} entries in {key} after {n} accepted requests"
    );
    env.del(key).await?;
    Ok(Sample {
        rate: lat.len() as f64 / took.as_secs_f64(),
        lat: Lat::of(&mut lat),
        ..Sample::default()
    })
}

async fn post_one(http: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let response = http
        .post(url)
        .header(header::CONTENT_TYPE, STRUCTURED)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let text = response.bytes().await?;
    if status != StatusCode::ACCEPTED {
        bail!("POST {url}: {status} {}", String::from_utf8_lossy(&text));
    }
    Ok(())
}

/// One reader paging through the whole feed; the events it counted and the
/// latency of each page.
async fn read_all(
    http: &reqwest::Client,
    url: &str,
    eventbus: bool,
) -> anyhow::Result<(usize, Vec<u64>)> {
    let mut after: Option<String> = None;
    let mut count = 0;
    let mut lat = Vec::new();
    loop {
        let mut request = http.get(url).query(&[("limit", PAGE.to_string())]);
        if eventbus {
            request = request.query(&[("types", ReviewCreated::TYPE)]);
        }
        if let Some(a) = &after {
            request = request.query(&[("after", a)]);
        }
        let t0 = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let next = response
            .headers()
            .get(CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        lat.push(t0.elapsed().as_nanos() as u64);
        if status != StatusCode::OK {
            bail!("GET {url}: {status} {}", String::from_utf8_lossy(&body));
        }
        let events: Vec<&RawValue> = serde_json::from_slice(&body)
            .with_context(|| format!("GET {url}: not a JSON array"))?;
        if events.is_empty() {
            return Ok((count, lat));
        }
        count += events.len();
        ensure!(next.is_some(), "GET {url}: no {CURSOR_HEADER} header");
        after = next;
    }
}

async fn pull(
    env: &Env,
    url: &str,
    n: usize,
    readers: usize,
    eventbus: bool,
) -> anyhow::Result<Sample> {
    // Warm the connections up.
    let _ = env
        .http
        .get(url)
        .query(&[("limit", "1")])
        .send()
        .await?
        .bytes()
        .await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        let (http, url) = (env.http.clone(), url.to_owned());
        tasks.spawn(async move { read_all(&http, &url, eventbus).await });
    }
    let mut lat = Vec::new();
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        let (count, l) = r??;
        ensure!(
            count == n,
            "GET {url}: a reader counted {count} events of {n}"
        );
        total += count;
        lat.extend(l);
    }
    let took = start.elapsed();
    Ok(Sample {
        rate: total as f64 / took.as_secs_f64(),
        lat: Lat::of(&mut lat),
        ..Sample::default()
    })
}

// ---- driver ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Ingest,
    Pull,
    PullConcurrent,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Ingest, Scenario::Pull, Scenario::PullConcurrent];

    fn key(self) -> &'static str {
        match self {
            Scenario::Ingest => "ingest",
            Scenario::Pull => "pull",
            Scenario::PullConcurrent => "pull-concurrent",
        }
    }

    fn title(self, opts: &Opts) -> String {
        match self {
            Scenario::Ingest => format!(
                "1 ingest: POST /events, {} clients, 1 event/request",
                opts.clients
            ),
            Scenario::Pull => format!("2 pull: GET /events, pages of {PAGE}, 1 reader"),
            Scenario::PullConcurrent => {
                format!(
                    "2 pull: GET /events, pages of {PAGE}, {} readers",
                    opts.readers
                )
            }
        }
    }

    fn baseline(self) -> &'static str {
        match self {
            Scenario::Ingest => "axum: serde_json struct + XADD",
            Scenario::Pull | Scenario::PullConcurrent => "axum: XRANGE COUNT 1000 -> [..]",
        }
    }

    /// Events per run.
    fn events(self, opts: &Opts) -> usize {
        match self {
            Scenario::Ingest => opts.events,
            Scenario::Pull => opts.pull_events,
            Scenario::PullConcurrent => opts.pull_events * opts.readers,
        }
    }

    async fn run(self, env: &Env, opts: &Opts, raw: bool) -> anyhow::Result<Sample> {
        let s = &env.servers;
        match (self, raw) {
            (Scenario::Ingest, false) => {
                ingest(env, &s.ingest, &s.ingest_stream, opts.events, opts.clients).await
            }
            (Scenario::Ingest, true) => {
                ingest(env, &s.raw, &s.raw_ingest, opts.events, opts.clients).await
            }
            (Scenario::Pull, false) => pull(env, &s.pull, opts.pull_events, 1, true).await,
            (Scenario::Pull, true) => pull(env, &s.raw, opts.pull_events, 1, false).await,
            (Scenario::PullConcurrent, false) => {
                pull(env, &s.pull, opts.pull_events, opts.readers, true).await
            }
            (Scenario::PullConcurrent, true) => {
                pull(env, &s.raw, opts.pull_events, opts.readers, false).await
            }
        }
    }
}

#[derive(Debug)]
struct Opts {
    url: Option<String>,
    events: usize,
    pull_events: usize,
    rounds: usize,
    clients: usize,
    readers: usize,
    only: Vec<Scenario>,
    /// Run only one side (for profiling): `Some(true)` raw, `Some(false)` eventbus.
    side: Option<bool>,
}

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let mut o = Opts {
            url: None,
            events: 20_000,
            pull_events: 100_000,
            rounds: 3,
            clients: 64,
            readers: 4,
            only: Scenario::ALL.to_vec(),
            side: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--url" => o.url = Some(value()?),
                "--events" => o.events = value()?.parse().context("--events N")?,
                "--pull-events" => o.pull_events = value()?.parse().context("--pull-events M")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds K")?,
                "--clients" => o.clients = value()?.parse().context("--clients C")?,
                "--readers" => o.readers = value()?.parse().context("--readers R")?,
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
                "--side" => {
                    o.side = match value()?.as_str() {
                        "raw" => Some(true),
                        "eventbus" => Some(false),
                        other => bail!("--side raw|eventbus, not `{other}`"),
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: http_load [--url redis://HOST:PORT] [--events N] [--pull-events M] [--rounds K] [--clients C] [--readers R] [--only ingest,pull,pull-concurrent] [--side raw|eventbus (profiling)]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument `{other}` (try --help)"),
            }
        }
        if o.events == 0 || o.pull_events == 0 || o.rounds == 0 || o.clients == 0 || o.readers == 0
        {
            bail!("--events, --pull-events, --rounds, --clients and --readers must be at least 1");
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
        cpu: (
            median(samples.iter().map(|s| s.cpu.0).collect()),
            median(samples.iter().map(|s| s.cpu.1).collect()),
            median(samples.iter().map(|s| s.cpu.2).collect()),
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()?;
    let result = client_rt.block_on(run(&opts, server_rt.handle()));
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(opts: &Opts, server_rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
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
    let run_id = format!("httpload{}", std::process::id());
    let servers = server_rt
        .spawn(start_servers(url.clone(), run_id.clone()))
        .await??;
    let env = Env {
        servers,
        redis: redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .timeout(Duration::from_secs(60))
            .build()?,
        payload: Payload::new()?,
        run_id,
    };
    let outcome = measure(&env, opts, &url).await;
    env.cleanup().await?;
    outcome
}

async fn measure(env: &Env, opts: &Opts, url: &str) -> anyhow::Result<()> {
    if opts
        .only
        .iter()
        .any(|s| matches!(s, Scenario::Pull | Scenario::PullConcurrent))
    {
        env.fill(&env.servers.pull_stream, opts.pull_events).await?;
        env.fill(&env.servers.raw_pull, opts.pull_events).await?;
    }
    println!(
        "eventbus http_load: {} (redis {}), {} ingest requests per side and round ({} clients), feed of {} events ({} reader(s) in pull-concurrent), {} rounds, payload {} bytes",
        eventbus::transport::redact(url),
        if opts.url.is_some() {
            "given"
        } else {
            "private, started here"
        },
        opts.events,
        opts.clients,
        opts.pull_events,
        opts.readers,
        opts.rounds,
        env.payload.template.len(),
    );

    let mut redis = env.redis.clone();
    let mut results: BTreeMap<Scenario, (Vec<Sample>, Vec<Sample>)> = BTreeMap::new();
    for round in 0..opts.rounds {
        let mut line = format!("round {}/{}:", round + 1, opts.rounds);
        for &s in &opts.only {
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
                let (server0, client0, redis0) = (
                    threads_cpu_ns("server"),
                    threads_cpu_ns("client"),
                    measure::redis_cpu_ns(&mut redis).await?,
                );
                let mut sample = s.run(env, opts, raw).await.with_context(|| {
                    format!("{} ({})", s.key(), if raw { "raw" } else { "eventbus" })
                })?;
                let (server1, client1, redis1) = (
                    threads_cpu_ns("server"),
                    threads_cpu_ns("client"),
                    measure::redis_cpu_ns(&mut redis).await?,
                );
                let n = s.events(opts) as f64;
                sample.cpu = (
                    server1.saturating_sub(server0) as f64 / n,
                    client1.saturating_sub(client0) as f64 / n,
                    redis1.saturating_sub(redis0) as f64 / n,
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
        "median of {} rounds; raw and eventbus interleaved in each round, ratio = median of the per-round ratios (shared machine: rounds vary)",
        opts.rounds
    );
    println!(
        "{:<50} {:>10} {:>10} {:>6}  {:<12} {:<20} {:<20} {:<32}",
        "scenario",
        "eventbus/s",
        "raw/s",
        "ratio",
        "target",
        "eventbus p50/p99/max",
        "raw p50/p99/max",
        "raw baseline",
    );
    let mut cpu_lines = Vec::new();
    for (s, (raw, ours)) in &results {
        let (r, o) = (summarize(raw), summarize(ours));
        let ratio = median(raw.iter().zip(ours).map(|(r, o)| o.rate / r.rate).collect());
        let target = if ratio >= 0.8 {
            ">= 0.80x ok"
        } else {
            ">= 0.80x MISS"
        };
        println!(
            "{:<50} {:>10.0} {:>10.0} {:>5.2}x  {:<12} {:<20} {:<20} {:<32}",
            s.title(opts),
            o.rate,
            r.rate,
            ratio,
            target,
            lat_cell(o.lat),
            lat_cell(r.lat),
            s.baseline(),
        );
        cpu_lines.push(format!(
            "{:<50} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            s.title(opts),
            o.cpu.0 / 1e3,
            r.cpu.0 / 1e3,
            o.cpu.1 / 1e3,
            r.cpu.1 / 1e3,
            o.cpu.2 / 1e3,
            r.cpu.2 / 1e3,
        ));
    }
    println!(
        "latencies in ms, per request (ingest: one event; pull: one page), as the client sees them"
    );
    println!();
    println!(
        "CPU per event, us (median; server = the HTTP servers' runtime, client = the load's, redis = redis-server):"
    );
    println!(
        "{:<50} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "server", "raw", "client", "raw", "redis", "raw"
    );
    for line in cpu_lines {
        println!("{line}");
    }
    Ok(())
}
