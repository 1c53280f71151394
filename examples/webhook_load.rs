//! Load test of the webhook hub (`eventbus::http::webhooks::Hub`): fan-out
//! deliveries to 1, 10 and 100 fast sinks against a raw reqwest loop posting
//! the same signed bodies with the same concurrency, in the same run.
//!
//! ```text
//! cargo run --release -p examples --example webhook_load -- \
//!     [--deliveries N] [--rounds K] [--sinks 1,10,100] [--side raw|eventbus] [--no-publish] \
//!     [--url redis://HOST:PORT]   # with --features redis: one --sinks value per run, a fresh
//!                                 # database and --no-publish (every bus of the run writes the
//!                                 # one stream of the event type, so a second bus's events
//!                                 # reach the first one's subscriptions too)
//! ```
//!
//! The sinks are axum receivers on loopback, on a tokio runtime of their own
//! (threads `sink`), answering `200` at once to every `POST` (and to the
//! `OPTIONS` handshake of the verification of intent) and counting the
//! requests; the hub, its subscriptions API and the raw loop run on another
//! runtime (threads `client`), so that the CPU time per delivery of each
//! side is measured apart from the sinks'.
//!
//! Per scenario (S sinks): a bus on `memory://`, a [`Hub`] with a
//! `MemoryStore` and a `SinkPolicy` allowing `127.0.0.0/8`, one subscription
//! per sink made through `POST /subscriptions` (structured mode, default
//! options: 4 deliveries in flight per subscription), every one `active`
//! (the `OPTIONS` handshake answered) before the first round. Each round
//! has N/S events per sink (N deliveries in all, default 20,000):
//! - eventbus: `bus.publish_batch` of the N/S events, timed until every sink
//!   counted every one;
//! - raw: the same number of events encoded beforehand by `Bus::encode`
//!   (the same structured CloudEvent bytes the hub sends), posted to every
//!   sink by 4 tasks per sink on one `reqwest::Client` (built by the same
//!   `SinkPolicy`), each request signed when it is sent with
//!   `eventbus_http::signature::Signer` and the sink's secret
//!   (`webhook-id` / `webhook-timestamp` / `webhook-signature`), as the hub
//!   does; timed the same way, until every sink counted every event.
//!
//! Checks: every sink counts exactly N/S requests per run (and still N/S a
//! little later: no duplicates), the raw side gets `200` for every request,
//! and the first request of each sink in each run carries a valid Standard
//! Webhooks signature of its body. Latency per request is measured where both
//! sides can be seen alike, at the sink: the time between two requests on one
//! keep-alive connection (the request's round trip plus the sender's
//! turnaround before it uses the connection again); the raw side's
//! client-side latency is printed too.
//!
//! Publish path: with 0, 10 and 100 active subscriptions (the sinks idle),
//! `publish_batch` of 100 events is timed alone, 9 times, then the
//! deliveries are awaited before the next batch; the median per event.
//!
//! Raw and eventbus alternate inside every round, the order flipping from
//! round to round; each figure is the median over the rounds, the ratio the
//! median of the per-round ratios.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventbus::http::signature::{Secret, Signer};
use eventbus::http::webhooks::{Hub, HubOptions, MemoryStore};
use eventbus::{Bus, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The event, as the bus knows it (the payload of `examples/http_load.rs`).
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

impl ReviewCreated {
    fn fresh() -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            model_name: "Review".into(),
            rating: 4,
            title: "Good value for the price".into(),
        }
    }
}

const SERVICE: &str = "webhook_load";
const STRUCTURED: &str = "application/cloudevents+json";
/// Deliveries in flight per sink, both sides (the hub's default).
const PER_SINK: usize = 4;
const PUBLISH_BATCH: usize = 100;
const PUBLISH_REPS: usize = 9;

#[path = "common/measure.rs"]
#[allow(dead_code)]
mod measure;
use measure::{Lat, median, ms, threads_cpu_ns};

// ---- measurement ----------------------------------------------------------

/// One measurement of one side in one round.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Deliveries per second.
    rate: f64,
    /// At the sink: between two requests on one connection.
    cycle: Option<Lat>,
    /// Raw only: send → response, at the client.
    client: Option<Lat>,
    /// CPU per delivery of the client threads (hub or raw loop) and of the
    /// sinks' threads, in ns.
    cpu: (f64, f64),
}

// ---- the sinks --------------------------------------------------------------

/// What every sink of a scenario shares: the count of the run.
#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    /// `done` is notified when `total` reaches it.
    target: AtomicUsize,
    done: tokio::sync::Notify,
}

struct Sink {
    tally: Arc<Tally>,
    count: AtomicUsize,
    /// Per connection (the peer's address), the last request's arrival.
    last: Mutex<HashMap<SocketAddr, Instant>>,
    cycles: Mutex<Vec<u64>>,
    /// The first request of the run: headers and body, to check its
    /// signature afterwards.
    first: Mutex<Option<(HeaderMap, Bytes)>>,
}

impl Sink {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.last.lock().unwrap().clear();
        self.cycles.lock().unwrap().clear();
        *self.first.lock().unwrap() = None;
    }
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::OPTIONS {
        return (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response();
    }
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let now = Instant::now();
    if let Some(before) = sink.last.lock().unwrap().insert(peer, now) {
        sink.cycles
            .lock()
            .unwrap()
            .push(now.duration_since(before).as_nanos() as u64);
    }
    if sink.count.fetch_add(1, Ordering::SeqCst) == 0 {
        *sink.first.lock().unwrap() = Some((headers, body));
    }
    let total = sink.tally.total.fetch_add(1, Ordering::SeqCst) + 1;
    if total == sink.tally.target.load(Ordering::SeqCst) {
        sink.tally.done.notify_one();
    }
    StatusCode::OK.into_response()
}

async fn listen(app: axum::Router) -> anyhow::Result<String> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("webhook_load: a server on {addr} stopped: {e}");
        }
    });
    Ok(format!("http://{addr}/hook"))
}

/// Starts `n` sinks; runs on the sink runtime.
async fn start_sinks(n: usize, tally: Arc<Tally>) -> anyhow::Result<Vec<(String, Arc<Sink>)>> {
    let mut sinks = Vec::with_capacity(n);
    for _ in 0..n {
        let sink = Arc::new(Sink {
            tally: tally.clone(),
            count: AtomicUsize::new(0),
            last: Mutex::default(),
            cycles: Mutex::default(),
            first: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(sink.clone());
        sinks.push((listen(app).await?, sink));
    }
    Ok(sinks)
}

// ---- a scenario's environment -------------------------------------------------

struct Subscribed {
    url: String,
    sink: Arc<Sink>,
    signer: Arc<Signer>,
    secret: Secret,
}

struct Env {
    bus: Bus,
    stop: CancellationToken,
    tally: Arc<Tally>,
    subs: Vec<Subscribed>,
    /// The raw side's client, built by the same policy as the hub's.
    raw: reqwest::Client,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn policy() -> anyhow::Result<eventbus::http::guard::SinkPolicy> {
    // Loopback sinks: allow-listed (the guard refuses them otherwise).
    Ok(eventbus::http::guard::SinkPolicy::new()
        .allow("127.0.0.0/8")?
        .timeout(Duration::from_secs(30)))
}

impl Env {
    async fn start(
        sinks: usize,
        sink_rt: &tokio::runtime::Handle,
        url: &str,
    ) -> anyhow::Result<Env> {
        let bus = Bus::builder()
            .service(SERVICE)
            .without_registered()
            .event::<ReviewCreated>()
            .connect(url)
            .await?;
        let hub = Hub::new(&bus, MemoryStore::new(), policy()?, HubOptions::default())?;
        let stop = CancellationToken::new();
        tokio::spawn({
            let (hub, stop) = (hub.clone(), stop.clone());
            async move { hub.run(stop).await }
        });
        let api = listen(eventbus::http::Http::new(&bus).webhooks(hub).router()).await?;
        let api = api.trim_end_matches("/hook").to_owned();
        let tally = Arc::new(Tally::default());
        let started = sink_rt.spawn(start_sinks(sinks, tally.clone())).await??;
        let http = reqwest::Client::new();
        let mut pending = Vec::new();
        for (url, sink) in started {
            let r = http
                .post(format!("{api}/subscriptions"))
                .json(&json!({"sink": url, "types": [ReviewCreated::TYPE]}))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await?;
            ensure!(status == 201, "POST /subscriptions: {status} {body}");
            let secret: Secret = body["secret"]
                .as_str()
                .context("no secret in the subscription")?
                .parse()?;
            let id = body["id"].as_str().context("no id")?.to_owned();
            pending.push((id, url, sink, secret));
        }
        // Every subscription verified (the OPTIONS handshake) before the run.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut subs = Vec::new();
        for (id, url, sink, secret) in pending {
            loop {
                let s: Value = http
                    .get(format!("{api}/subscriptions/{id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                match s["status"]["state"].as_str() {
                    Some("active") => break,
                    Some("pending") if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    _ => bail!("subscription {id} of {url} is not active: {s}"),
                }
            }
            let handshakes = sink.count.load(Ordering::SeqCst);
            ensure!(
                handshakes == 0,
                "{url}: {handshakes} POSTs before any event"
            );
            subs.push(Subscribed {
                url,
                sink,
                signer: Arc::new(Signer::new(secret.clone())),
                secret,
            });
        }
        Ok(Env {
            bus,
            stop,
            tally,
            subs,
            raw: policy()?.client()?,
        })
    }

    fn reset(&self, per_sink: usize) {
        for s in &self.subs {
            s.sink.reset();
        }
        self.tally.total.store(0, Ordering::SeqCst);
        self.tally
            .target
            .store(per_sink * self.subs.len(), Ordering::SeqCst);
    }

    async fn wait_all(&self) -> anyhow::Result<()> {
        let target = self.tally.target.load(Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(300), async {
            while self.tally.total.load(Ordering::SeqCst) < target {
                self.tally.done.notified().await;
            }
        })
        .await
        .with_context(|| {
            format!(
                "timed out: the sinks counted {} of {target} deliveries",
                self.tally.total.load(Ordering::SeqCst)
            )
        })
    }

    /// Every sink got exactly `per_sink` requests (still, a moment later),
    /// and its first one is signed with its secret.
    async fn check(&self, per_sink: usize) -> anyhow::Result<Option<Lat>> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut cycles = Vec::new();
        for s in &self.subs {
            let got = s.sink.count.load(Ordering::SeqCst);
            ensure!(got == per_sink, "{}: {got} requests of {per_sink}", s.url);
            let first = s.sink.first.lock().unwrap().take();
            let (headers, body) = first.with_context(|| format!("{}: no request", s.url))?;
            eventbus::http::verify(&headers, &body, &s.secret)
                .with_context(|| format!("{}: a bad signature", s.url))?;
            let ct = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
            ensure!(
                ct == Some(STRUCTURED.as_bytes()),
                "{}: content-type {ct:?}",
                s.url
            );
            cycles.extend(s.sink.cycles.lock().unwrap().drain(..));
        }
        Ok(Lat::of(&mut cycles))
    }

    /// The hub: `publish_batch` of `per_sink` events, until every sink has them.
    async fn eventbus(&self, per_sink: usize) -> anyhow::Result<Sample> {
        self.reset(per_sink);
        let events: Vec<ReviewCreated> = (0..per_sink).map(|_| ReviewCreated::fresh()).collect();
        let start = Instant::now();
        self.bus.publish_batch(events).await?;
        self.wait_all().await?;
        let took = start.elapsed();
        let cycle = self.check(per_sink).await?;
        Ok(Sample {
            rate: (per_sink * self.subs.len()) as f64 / took.as_secs_f64(),
            cycle,
            ..Sample::default()
        })
    }

    /// The raw loop: the same bytes, signed per request, 4 in flight per sink.
    async fn raw(&self, per_sink: usize) -> anyhow::Result<Sample> {
        self.reset(per_sink);
        let mut bodies = Vec::with_capacity(per_sink);
        for _ in 0..per_sink {
            let (id, message) = self.bus.encode(&ReviewCreated::fresh())?;
            bodies.push((id.to_string(), message.payload));
        }
        let bodies = Arc::new(bodies);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for s in &self.subs {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..PER_SINK {
                let (http, url, signer) = (self.raw.clone(), s.url.clone(), s.signer.clone());
                let (next, bodies) = (next.clone(), bodies.clone());
                tasks.spawn(async move {
                    let mut lat = Vec::with_capacity(bodies.len() / PER_SINK + 1);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, body)) = bodies.get(i) else {
                            break;
                        };
                        let t0 = Instant::now();
                        let mut headers = signer.sign(id, SystemTime::now(), body)?;
                        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(STRUCTURED));
                        let r = http
                            .post(&url)
                            .headers(headers)
                            .body(body.clone())
                            .send()
                            .await?;
                        let status = r.status();
                        let text = r.text().await?;
                        ensure!(status == StatusCode::OK, "POST {url}: {status} {text}");
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    Ok::<_, anyhow::Error>(lat)
                });
            }
        }
        self.wait_all().await?;
        let took = start.elapsed();
        let mut lat = Vec::new();
        while let Some(r) = tasks.join_next().await {
            lat.extend(r??);
        }
        ensure!(
            lat.len() == per_sink * self.subs.len(),
            "raw: {} answers",
            lat.len()
        );
        let cycle = self.check(per_sink).await?;
        Ok(Sample {
            rate: (per_sink * self.subs.len()) as f64 / took.as_secs_f64(),
            cycle,
            client: Lat::of(&mut lat),
            ..Sample::default()
        })
    }

    /// `publish_batch` of 100 events timed alone, the sinks idle: the median
    /// per event over 9 batches, each batch's deliveries awaited after it.
    async fn publish_path(&self) -> anyhow::Result<f64> {
        let mut per_event = Vec::new();
        for _ in 0..PUBLISH_REPS {
            self.reset(PUBLISH_BATCH);
            let events: Vec<ReviewCreated> =
                (0..PUBLISH_BATCH).map(|_| ReviewCreated::fresh()).collect();
            let start = Instant::now();
            self.bus.publish_batch(events).await?;
            per_event.push(start.elapsed().as_nanos() as f64 / PUBLISH_BATCH as f64);
            if !self.subs.is_empty() {
                self.wait_all().await?;
                self.check(PUBLISH_BATCH).await?;
            }
        }
        Ok(median(per_event))
    }
}

// ---- driver ---------------------------------------------------------------------

#[derive(Debug)]
struct Opts {
    deliveries: usize,
    rounds: usize,
    sinks: Vec<usize>,
    side: Option<bool>,
    publish: bool,
    /// The bus's transport (`memory://` unless `--redis` or `--url`).
    url: String,
}

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let mut o = Opts {
            deliveries: 20_000,
            rounds: 3,
            sinks: vec![1, 10, 100],
            side: None,
            publish: true,
            url: "memory://".to_owned(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--deliveries" => o.deliveries = value()?.parse().context("--deliveries N")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds K")?,
                "--sinks" => {
                    o.sinks = value()?
                        .split(',')
                        .map(|s| s.trim().parse::<usize>().context("--sinks 1,10,100"))
                        .collect::<anyhow::Result<_>>()?;
                }
                "--side" => {
                    o.side = match value()?.as_str() {
                        "raw" => Some(true),
                        "eventbus" => Some(false),
                        other => bail!("--side raw|eventbus, not `{other}`"),
                    }
                }
                "--no-publish" => o.publish = false,
                "--url" => o.url = value()?,
                "-h" | "--help" => {
                    println!(
                        "usage: webhook_load [--deliveries N] [--rounds K] [--sinks 1,10,100] [--side raw|eventbus (profiling)] [--no-publish] [--url redis://HOST:PORT (default memory://; the example needs --features redis for it)]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument `{other}` (try --help)"),
            }
        }
        ensure!(
            o.rounds > 0 && !o.sinks.is_empty() && o.sinks.iter().all(|s| *s > 0),
            "--rounds and every --sinks count must be at least 1"
        );
        for &s in &o.sinks {
            ensure!(
                o.deliveries >= s,
                "--deliveries {} is fewer than one event per sink for {s} sinks",
                o.deliveries
            );
        }
        Ok(o)
    }
}

fn lat_cell(l: Option<Lat>) -> String {
    match l {
        Some(l) => format!("{}/{}", ms(l.p50), ms(l.p99)),
        None => "-".into(),
    }
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse()?;
    let sink_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sink")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()?;
    let result = client_rt.block_on(run(&opts, sink_rt.handle()));
    client_rt.shutdown_timeout(Duration::from_secs(1));
    sink_rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(opts: &Opts, sink_rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
    println!(
        "eventbus webhook_load: {}, {} deliveries per side and round, sinks {:?}, {PER_SINK} in flight per sink, {} rounds",
        eventbus::transport::redact(&opts.url),
        opts.deliveries,
        opts.sinks,
        opts.rounds,
    );
    let mut results: BTreeMap<usize, (Vec<Sample>, Vec<Sample>)> = BTreeMap::new();
    let mut envs = Vec::new();
    for &s in &opts.sinks {
        envs.push((s, Env::start(s, sink_rt, &opts.url).await?));
    }
    if let Some((_, env)) = envs.first() {
        println!(
            "payload {} bytes",
            env.bus.encode(&ReviewCreated::fresh())?.1.payload.len()
        );
    }
    for round in 0..opts.rounds {
        let mut line = format!("round {}/{}:", round + 1, opts.rounds);
        for (sinks, env) in &envs {
            let per_sink = opts.deliveries / sinks;
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
                let (client0, sink0) = (threads_cpu_ns("client"), threads_cpu_ns("sink"));
                let mut sample = if raw {
                    env.raw(per_sink).await
                } else {
                    env.eventbus(per_sink).await
                }
                .with_context(|| {
                    format!("{sinks} sinks ({})", if raw { "raw" } else { "eventbus" })
                })?;
                let (client1, sink1) = (threads_cpu_ns("client"), threads_cpu_ns("sink"));
                let n = (per_sink * sinks) as f64;
                sample.cpu = (
                    client1.saturating_sub(client0) as f64 / n,
                    sink1.saturating_sub(sink0) as f64 / n,
                );
                if raw {
                    pair.0 = sample;
                } else {
                    pair.1 = sample;
                }
            }
            let _ = write!(line, " {sinks} sinks {:.2}x", pair.1.rate / pair.0.rate);
            let e = results.entry(*sinks).or_default();
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
        "{:<22} {:>11} {:>11} {:>6}  {:<13} {:<16} {:<16} {:<16}",
        "fan-out",
        "eventbus/s",
        "raw/s",
        "ratio",
        "target",
        "eventbus p50/p99",
        "raw p50/p99",
        "raw client p50/p99",
    );
    let mut cpu_lines = Vec::new();
    for (sinks, (raw, ours)) in &results {
        let ratio = median(raw.iter().zip(ours).map(|(r, o)| o.rate / r.rate).collect());
        let target = if ratio >= 0.8 {
            ">= 0.80x ok"
        } else {
            ">= 0.80x MISS"
        };
        let title = format!("{sinks} sink(s), {} each", opts.deliveries / sinks);
        println!(
            "{:<22} {:>11.0} {:>11.0} {:>5.2}x  {:<13} {:<16} {:<16} {:<16}",
            title,
            median(ours.iter().map(|s| s.rate).collect()),
            median(raw.iter().map(|s| s.rate).collect()),
            ratio,
            target,
            lat_cell(Lat::median_of(ours.iter().map(|s| s.cycle))),
            lat_cell(Lat::median_of(raw.iter().map(|s| s.cycle))),
            lat_cell(Lat::median_of(raw.iter().map(|s| s.client))),
        );
        cpu_lines.push(format!(
            "{:<22} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            title,
            median(ours.iter().map(|s| s.cpu.0).collect()) / 1e3,
            median(raw.iter().map(|s| s.cpu.0).collect()) / 1e3,
            median(ours.iter().map(|s| s.cpu.1).collect()) / 1e3,
            median(raw.iter().map(|s| s.cpu.1).collect()) / 1e3,
        ));
    }
    println!(
        "latencies in ms per request, at the sink: between two requests on one connection (round trip + the sender's turnaround); raw client: send -> response"
    );
    println!();
    println!(
        "CPU per delivery, us (median; client = the hub or the raw loop with its reqwest, sink = the receivers):"
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}",
        "fan-out", "hub", "raw", "sink", "raw"
    );
    for line in cpu_lines {
        println!("{line}");
    }

    if opts.publish && opts.side != Some(true) {
        println!();
        println!(
            "publish path: publish_batch of {PUBLISH_BATCH} alone, sinks idle, median of {PUBLISH_REPS} (ns per event):"
        );
        let none = Env::start(0, sink_rt, &opts.url).await?;
        let mut line = format!("  0 subscriptions: {:>8.0}", none.publish_path().await?);
        for (sinks, env) in &envs {
            let _ = write!(
                line,
                "   {sinks} subscriptions: {:>8.0}",
                env.publish_path().await?
            );
        }
        println!("{line}");
    }
    Ok(())
}
