//! What the ingest tests share: a bus whose global handler reports every
//! event it is given, the router served on a free loopback port, and a
//! transport whose publishes the test can hold or refuse (the memory
//! transport underneath; only the timing and the failure are the test's).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eventbus::transport::memory::MemoryTransport;
use eventbus::transport::{DeadLetter, GroupSpec, Outgoing, Subscriber, Transport};
use eventbus::{Bus, CloudEvent, HandlerDef, Running};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

/// How long a test waits for something that should happen at once.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running bus with a global handler that forwards what it is given.
pub struct Recorder {
    pub bus: Bus,
    pub running: Option<Running>,
    pub seen: mpsc::UnboundedReceiver<CloudEvent>,
}

impl Recorder {
    /// A bus on `memory://` (private), running.
    pub async fn memory() -> Self {
        Self::start(Bus::builder().transport(MemoryTransport::new())).await
    }

    /// `builder` (its transport chosen) with the recording handler, running.
    pub async fn start(builder: eventbus::BusBuilder) -> Self {
        let (builder, seen) = with_recorder(builder);
        let bus = builder.build().await.expect("build the bus");
        let running = Some(spawn(&bus).await);
        Self { bus, running, seen }
    }

    /// The next event the handler was given.
    pub async fn next(&mut self) -> CloudEvent {
        tokio::time::timeout(DEADLINE, self.seen.recv())
            .await
            .expect("an event reaches the handler in time")
            .expect("the handler is alive")
    }

    /// Nothing more reaches the handler for a moment.
    pub async fn assert_quiet(&mut self) {
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(300), self.seen.recv()).await
        {
            panic!("unexpected event {e}");
        }
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("the bus stops");
        }
    }
}

/// `builder` with a global handler `seen` forwarding every event to the
/// returned receiver.
pub fn with_recorder(
    builder: eventbus::BusBuilder,
) -> (eventbus::BusBuilder, mpsc::UnboundedReceiver<CloudEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = HandlerDef::new("seen", move |event: CloudEvent| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
        }
    });
    (
        builder
            .service("ingest-test")
            .without_registered()
            .handler(handler),
        rx,
    )
}

/// Starts `bus` with its handlers live.
pub async fn spawn(bus: &Bus) -> Running {
    let mut running = bus.spawn();
    running.ready().await.expect("the bus is ready");
    running
}

/// Serves `router` on 127.0.0.1 (a free port); returns `http://addr/events`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    format!("http://{addr}/events")
}

/// A transport whose publishes wait until the test opens the gate, or fail
/// while it says so; everything else is the memory transport's.
#[derive(Clone)]
pub struct Gate {
    inner: MemoryTransport,
    open: watch::Sender<bool>,
    fail: Arc<AtomicBool>,
    entered: Arc<AtomicUsize>,
}

impl Gate {
    /// An open gate on a private memory transport.
    pub fn new() -> Self {
        Self {
            inner: MemoryTransport::new(),
            open: watch::Sender::new(true),
            fail: Arc::new(AtomicBool::new(false)),
            entered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes wait from now on.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Waiting publishes go on.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Publishes fail (or succeed again).
    pub fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// How many publishes have started.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

impl Transport for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, eventbus::Result<()>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(eventbus::Error::transport(
                    "gate",
                    "the server is unreachable (the test said so)",
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                ));
            }
            self.inner.publish(batch).await
        })
    }

    fn publish_at(
        &self,
        message: Outgoing,
        at: std::time::SystemTime,
    ) -> BoxFuture<'_, eventbus::Result<()>> {
        self.inner.publish_at(message, at)
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, eventbus::Result<()>> {
        self.inner.declare(group)
    }

    fn subscribe<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> BoxFuture<'a, eventbus::Result<Box<dyn Subscriber>>> {
        self.inner.subscribe(group)
    }

    fn claim_tick<'a>(
        &'a self,
        schedule: &'a str,
        tick_ms: u64,
    ) -> BoxFuture<'a, eventbus::Result<bool>> {
        self.inner.claim_tick(schedule, tick_ms)
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, eventbus::Result<Vec<DeadLetter>>> {
        self.inner.dead_letters(limit)
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, eventbus::Result<bool>> {
        self.inner.replay(dead_letter_id)
    }
}

/// The router of `bus` with `settings`, served; its URL.
pub async fn serve_bus(
    bus: &Bus,
    settings: impl FnOnce(eventbus_http::Http) -> eventbus_http::Http,
) -> String {
    serve(settings(eventbus_http::Http::new(bus)).router()).await
}

/// A problem-details answer: status, `detail`, the whole body.
pub async fn problem(response: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    let detail = body["detail"].as_str().expect("a detail").to_owned();
    (status, detail, body)
}
