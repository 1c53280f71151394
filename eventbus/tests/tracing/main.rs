//! Trace context with OpenTelemetry (feature `opentelemetry`): spans
//! recorded by an in-memory exporter. One trace across two processes
//! through a real redis-server (this binary re-executes itself as the
//! consumer, which prints the spans it recorded as JSON lines), one through
//! the outbox relay (SQLite), and events without a context starting traces
//! of their own.
#![cfg(all(feature = "redis", feature = "opentelemetry", feature = "sqlite"))]

use std::io::BufRead;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use eventbus::outbox::{self, Database, Relay, RelayOptions};
use eventbus::testing::TestBus;
use eventbus::trace::ProcessParent;
use eventbus::{Bus, Context, Event, HandlerDef, RetryPolicy};
use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("tracing_test.ping")]
struct Ping {
    n: u32,
}

/// The exporter of this process: every span of every test (each test picks
/// its own by trace or event id).
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static OTEL: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    OTEL.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("eventbus-tests");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        (exporter, provider)
    })
}

fn spans() -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    let _ = provider.force_flush();
    exporter.get_finished_spans().expect("spans")
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// A span as the child prints it.
fn to_json(span: &SpanData) -> Value {
    json!({
        "name": span.name,
        "kind": format!("{:?}", span.span_kind),
        "status": format!("{:?}", span.status),
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": span.parent_span_id.to_string(),
        "attributes": span.attributes.iter()
            .map(|kv| (kv.key.to_string(), Value::String(kv.value.to_string())))
            .collect::<serde_json::Map<_, _>>(),
        "events": span.events.iter().map(|e| e.name.to_string()).collect::<Vec<_>>(),
        "links": span.links.iter()
            .map(|l| l.span_context.trace_id().to_string())
            .collect::<Vec<_>>(),
    })
}

/// The trace and span id of `span`, as lowercase hex.
fn ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    assert!(sc.is_valid(), "the span is recorded by OpenTelemetry");
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

/// Waits until `pred` holds of the spans recorded so far.
async fn wait_for(what: &str, pred: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = spans();
        if pred(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; recorded: {:#?}",
            all.iter()
                .map(|s| (&s.name, attr(s, "messaging.system")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn process_spans_of<'a>(all: &'a [SpanData], event_id: &str) -> Vec<&'a SpanData> {
    all.iter()
        .filter(|s| attr(s, "cloudevents.event_id").as_deref() == Some(event_id))
        .collect()
}

const CHILD_REDIS: &str = "EVENTBUS_TRACING_TEST_REDIS";
const NO_PARENT: &str = "0000000000000000";

/// Not a test: the consumer process of
/// `one_trace_across_two_processes_through_redis`. Handles pings (n = 3
/// fails on its first attempt), then prints the spans it recorded.
#[tokio::test]
#[ignore = "run by one_trace_across_two_processes_through_redis as its child"]
async fn child_consumer() {
    let Ok(url) = std::env::var(CHILD_REDIS) else {
        return;
    };
    exporter();
    let handler = HandlerDef::new("consume", |ping: Ping, ctx: Context| async move {
        if ping.n == 3 && ctx.attempt() == 1 {
            return Err("the first attempt fails");
        }
        Ok(())
    });
    let bus = Bus::builder()
        .service("tracing-child")
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(50),
        })
        .handler(handler)
        .connect(&url)
        .await
        .expect("connect");
    let mut running = bus.spawn();
    running.ready().await.expect("ready");
    println!("READY");
    // Pings 1 and 2 once, ping 3 twice.
    let all = wait_for("four process spans", |all| {
        all.iter()
            .filter(|s| s.name == "process tracing_test.ping")
            .count()
            >= 4
    })
    .await;
    for span in &all {
        println!("SPAN {}", to_json(span));
    }
    println!("DONE");
    running.shutdown().await.expect("shutdown");
}

/// The publisher here, the consumer in a child process, a redis-server
/// between: the child's `process` span is in the publisher's trace, its
/// parent the span that published; an event published outside any span
/// starts a trace of its own there; a failed attempt and its retry are two
/// spans of the same trace.
#[tokio::test]
async fn one_trace_across_two_processes_through_redis() {
    exporter();
    let redis = testkit::RedisServer::start().expect("start redis-server");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_consumer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_REDIS, redis.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the child consumer");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |prefix: &str| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the child printed no {prefix}"));
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim().to_owned();
        }
    };
    next_line("READY");

    let bus = Bus::builder()
        .service("tracing-parent")
        .without_registered()
        .connect(&redis.url())
        .await
        .expect("connect");
    let checkout = tracing::info_span!("checkout");
    let (trace_id, span_id) = ids(&checkout);
    // Published inside the span: encoded there.
    async {
        bus.publish(Ping { n: 1 }).await.unwrap();
        bus.publish(Ping { n: 3 }).await.unwrap();
    }
    .instrument(checkout.clone())
    .await;
    // Outside any span: no trace context.
    bus.publish(Ping { n: 2 }).await.unwrap();
    drop(checkout);

    let mut spans = Vec::new();
    loop {
        let line = next_line("");
        if line.starts_with("DONE") {
            break;
        }
        if let Some(json) = line.strip_prefix("SPAN ") {
            spans.push(serde_json::from_str::<Value>(json).expect("a span as JSON"));
        }
    }
    let _ = child.wait();
    let process: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "process tracing_test.ping")
        .collect();
    let of_n = |n: u32| -> Vec<&Value> {
        // The event ids are not known here: the trace tells them apart,
        // and for the untraced ping its being the only root.
        process
            .iter()
            .copied()
            .filter(|s| match n {
                2 => s["trace_id"] != trace_id.as_str(),
                _ => s["trace_id"] == trace_id.as_str(),
            })
            .collect()
    };
    let traced = of_n(1);
    assert_eq!(traced.len(), 3, "ping 1 once, ping 3 twice: {process:#?}");
    for span in &traced {
        assert_eq!(span["parent_span_id"], span_id.as_str(), "{span:#}");
        assert_eq!(span["kind"], "Consumer", "{span:#}");
        let a = &span["attributes"];
        assert_eq!(a["messaging.system"], "redis", "{span:#}");
        assert_eq!(a["messaging.operation.type"], "process", "{span:#}");
        assert_eq!(a["messaging.consumer.group.name"], "tracing-child.consume");
        assert_eq!(a["cloudevents.event_type"], "tracing_test.ping");
        assert_eq!(a["cloudevents.event_source"], "/tracing-parent");
        assert_eq!(a["messaging.message.id"], a["cloudevents.event_id"]);
    }
    let failed: Vec<_> = traced
        .iter()
        .filter(|s| s["attributes"]["error.type"] == "handler_error")
        .collect();
    assert_eq!(failed.len(), 1, "ping 3's first attempt: {traced:#?}");
    assert_eq!(failed[0]["attributes"]["attempt"], "1");
    assert!(
        failed[0]["status"].as_str().unwrap().starts_with("Error"),
        "{:#}",
        failed[0]
    );
    assert_eq!(failed[0]["events"], json!(["eventbus.retry"]));
    let acked = traced
        .iter()
        .filter(|s| s["events"] == json!(["eventbus.ack"]))
        .count();
    assert_eq!(acked, 2, "{traced:#?}");

    let untraced = of_n(2);
    assert_eq!(untraced.len(), 1, "{process:#?}");
    assert_eq!(untraced[0]["parent_span_id"], NO_PARENT, "a root");
}

/// The outbox captures the trace context when the row is written: the relay,
/// later and outside any span, sends it; the consumer's span is in the
/// trace of the span that wrote the row, and the relay's send span links to
/// it.
#[tokio::test]
async fn the_outbox_relay_continues_the_trace_of_the_writer() {
    exporter();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let Database::Sqlite(pool) = Database::connect(&url).await.expect("open") else {
        unreachable!()
    };
    outbox::migrate(&pool).await.expect("migrate");
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .handler(HandlerDef::new("outboxed", |_: Ping| async {})),
    )
    .await
    .unwrap();
    let order = tracing::info_span!("place order");
    let (trace_id, span_id) = ids(&order);
    let id = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let id = test
            .bus()
            .outbox()
            .publish(&mut *tx, Ping { n: 10 })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }
    .instrument(order.clone())
    .await;
    drop(order);
    let relay = Relay::new(test.bus().clone(), RelayOptions::new(&pool));
    assert_eq!(relay.run_once().await.unwrap().published, 1);
    test.settle().await;

    let id = id.to_string();
    let all = wait_for("the outboxed event's process span", |all| {
        !process_spans_of(all, &id).is_empty()
    })
    .await;
    let process = process_spans_of(&all, &id);
    assert_eq!(process.len(), 1);
    assert_eq!(process[0].span_context.trace_id().to_string(), trace_id);
    assert_eq!(process[0].parent_span_id.to_string(), span_id);
    assert_eq!(process[0].span_kind, SpanKind::Consumer);
    let send: Vec<_> = all
        .iter()
        .filter(|s| {
            s.name == "send"
                && s.links
                    .iter()
                    .any(|l| l.span_context.trace_id().to_string() == trace_id)
        })
        .collect();
    assert_eq!(send.len(), 1, "the relay's send span links the row's trace");
    assert_eq!(send[0].span_kind, SpanKind::Producer);
    assert_ne!(send[0].span_context.trace_id().to_string(), trace_id);
    test.stop().await.unwrap();
}

/// Without a context the process span is a root; with
/// `ProcessParent::Link` it is a root linked to the event's context; what a
/// handler publishes continues the trace of its process span.
#[tokio::test]
async fn roots_links_and_follow_ups() {
    exporter();
    let follow_ups = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let recorded = follow_ups.clone();
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
    #[event("tracing_test.pong")]
    struct Pong {
        n: u32,
    }
    for (round, parent) in [ProcessParent::Parent, ProcessParent::Link]
        .into_iter()
        .enumerate()
    {
        let recorded = recorded.clone();
        let test = TestBus::start(
            Bus::builder()
                .without_registered()
                .process_parent(parent)
                .handler(HandlerDef::new(
                    "ping",
                    |ping: Ping, ctx: Context| async move {
                        ctx.bus().publish(Pong { n: ping.n }).await
                    },
                ))
                .handler(HandlerDef::new("pong", move |_: Pong, ctx: Context| {
                    let recorded = recorded.clone();
                    async move {
                        recorded
                            .lock()
                            .push((ctx.id().to_owned(), ctx.envelope().trace_context()));
                    }
                })),
        )
        .await
        .unwrap();
        // No span: no context.
        test.bus().publish(Ping { n: 1 }).await.unwrap();
        let publisher = tracing::info_span!("publisher");
        let (trace_id, span_id) = ids(&publisher);
        test.bus()
            .publish(Ping { n: 2 })
            .instrument(publisher.clone())
            .await
            .unwrap();
        drop(publisher);
        test.settle().await;
        let all = wait_for("the pings' and pongs' spans", |all| {
            all.iter()
                .filter(|s| s.name == "process tracing_test.pong")
                .count()
                >= 2 * (round + 1)
        })
        .await;
        let pings: Vec<&SpanData> = all
            .iter()
            .filter(|s| s.name == "process tracing_test.ping")
            .collect();
        // The untraced ping: a root without links, whatever the mode.
        let traced_ping = pings.iter().find(|s| match parent {
            ProcessParent::Parent => s.span_context.trace_id().to_string() == trace_id,
            _ => s
                .links
                .iter()
                .any(|l| l.span_context.trace_id().to_string() == trace_id),
        });
        let traced_ping = traced_ping.unwrap_or_else(|| panic!("{parent:?}: {pings:#?}"));
        match parent {
            ProcessParent::Parent => {
                assert_eq!(traced_ping.parent_span_id.to_string(), span_id);
                assert!(traced_ping.links.is_empty());
            }
            _ => {
                assert_eq!(traced_ping.parent_span_id.to_string(), NO_PARENT);
                assert_ne!(traced_ping.span_context.trace_id().to_string(), trace_id);
                assert_eq!(
                    traced_ping.links[0].span_context.span_id().to_string(),
                    span_id
                );
            }
        }
        // The pong it published: its context is the ping's process span.
        let ping_trace = traced_ping.span_context.trace_id().to_bytes();
        let ping_span = traced_ping.span_context.span_id().to_bytes();
        let pong = follow_ups
            .lock()
            .iter()
            .find(|(_, tc)| tc.as_ref().is_some_and(|tc| tc.trace_id == ping_trace))
            .cloned()
            .unwrap_or_else(|| panic!("{parent:?}: no pong in the ping's trace"));
        assert_eq!(pong.1.unwrap().span_id, ping_span, "{parent:?}");
        test.stop().await.unwrap();
        follow_ups.lock().clear();
        if parent == ProcessParent::Parent {
            let roots = pings
                .iter()
                .filter(|s| {
                    s.parent_span_id.to_string() == NO_PARENT
                        && s.links.is_empty()
                        && s.span_context.trace_id().to_string() != trace_id
                })
                .count();
            assert!(roots >= 1, "the untraced ping is a root: {pings:#?}");
        }
    }
}
