//! Trace context without OpenTelemetry: an event published from inside a
//! handler continues the trace of the event it handles (same trace id, a
//! fresh span id, the `tracestate` kept); one published elsewhere carries
//! none; a malformed `traceparent` is ignored, never a dead-letter reason;
//! [`ProcessParent`] decides what a handler's publishes continue.

use std::sync::Arc;

use bytes::Bytes;
use eventbus::cloudevents::AttributesWriter;
use eventbus::testing::TestBus;
use eventbus::trace::{ProcessParent, TraceContext};
use eventbus::transport::Outgoing;
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("trace.ping")]
struct Ping {
    n: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("trace.pong")]
struct Pong {
    n: u32,
}

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

type Seen = Arc<Mutex<Vec<(u32, Option<TraceContext>)>>>;

/// A bus whose `trace.ping` handler publishes a `trace.pong` (as a typed
/// event and, for n >= 100, as a CloudEvent with a traceparent of its own),
/// and whose `trace.pong` handler records the trace context it got.
async fn chain(parent: ProcessParent, seen: &Seen) -> TestBus {
    let relay = HandlerDef::new("relay", |ping: Ping, ctx: Context| async move {
        if ping.n >= 100 {
            let mut event = eventbus::CloudEvent::default();
            event.set_type("trace.pong");
            event.set_source("/other");
            event.set_id("own");
            event.set_data("application/json", serde_json::json!({ "n": ping.n }));
            event.set_extension("traceparent", PARENT.replace("b7ad", "c7ad"));
            return ctx.bus().publish_cloudevent(&event).await;
        }
        ctx.bus().publish(Pong { n: ping.n }).await
    });
    let record = {
        let seen = seen.clone();
        HandlerDef::new("record", move |pong: Pong, ctx: Context| {
            let seen = seen.clone();
            async move {
                seen.lock().push((pong.n, ctx.envelope().trace_context()));
            }
        })
    };
    TestBus::start(
        Bus::builder()
            .without_registered()
            .process_parent(parent)
            .handler(relay)
            .handler(record),
    )
    .await
    .unwrap()
}

async fn publish_ping(test: &TestBus, n: u32, extensions: &str) {
    let payload = format!(
        r#"{{"specversion":"1.0","id":"p-{n}","type":"trace.ping","source":"/t"{extensions},"data":{{"n":{n}}}}}"#
    );
    test.bus()
        .publish_encoded(&[Outgoing {
            event_type: "trace.ping".into(),
            payload: Bytes::from(payload),
        }])
        .await
        .unwrap();
}

fn by_n(seen: &Seen, n: u32) -> Option<TraceContext> {
    let seen = seen.lock();
    let found: Vec<_> = seen.iter().filter(|(m, _)| *m == n).collect();
    assert_eq!(found.len(), 1, "pong {n} handled once: {seen:?}");
    found[0].1.clone()
}

#[tokio::test]
async fn a_handler_s_publishes_continue_the_trace_of_its_event() {
    let seen = Seen::default();
    let test = chain(ProcessParent::Parent, &seen).await;
    let parent = TraceContext::parse(PARENT, Some("congo=t61rcWkgMzE")).unwrap();
    publish_ping(
        &test,
        1,
        &format!(r#","traceparent":"{PARENT}","tracestate":"congo=t61rcWkgMzE""#),
    )
    .await;
    publish_ping(&test, 2, "").await;
    publish_ping(&test, 3, r#","traceparent":"00-not-a-trace""#).await;
    publish_ping(
        &test,
        4,
        &format!(r#","traceparent":"{}""#, PARENT.to_uppercase()),
    )
    .await;
    publish_ping(&test, 100, &format!(r#","traceparent":"{PARENT}""#)).await;
    test.bus().publish(Pong { n: 5 }).await.unwrap();
    test.settle().await;

    let child = by_n(&seen, 1).expect("the follow-up carries the trace");
    assert_eq!(child.trace_id, parent.trace_id);
    assert_ne!(child.span_id, parent.span_id, "a fresh span id");
    assert_eq!(child.flags, parent.flags);
    assert_eq!(child.state, parent.state);
    // No context, a malformed one, one in upper case: the follow-up has none.
    assert_eq!(by_n(&seen, 2), None);
    assert_eq!(by_n(&seen, 3), None);
    assert_eq!(by_n(&seen, 4), None);
    // Published outside any handler.
    assert_eq!(by_n(&seen, 5), None);
    // A CloudEvent with a traceparent of its own keeps it.
    let own = by_n(&seen, 100).unwrap();
    assert_eq!(own.traceparent(), PARENT.replace("b7ad", "c7ad"));
    // The malformed contexts were not a reason to dead-letter anything.
    assert!(test.dead_letters().await.unwrap().is_empty());
    test.stop().await.unwrap();
}

#[tokio::test]
async fn process_parent_link_starts_a_new_trace_and_none_carries_no_trace() {
    let parent = TraceContext::parse(PARENT, None).unwrap();
    for (mode, expect_trace) in [(ProcessParent::Link, true), (ProcessParent::None, false)] {
        let seen = Seen::default();
        let test = chain(mode, &seen).await;
        publish_ping(&test, 1, &format!(r#","traceparent":"{PARENT}""#)).await;
        test.settle().await;
        let got = by_n(&seen, 1);
        assert_eq!(got.is_some(), expect_trace, "{mode:?}: {got:?}");
        if let Some(tc) = got {
            assert_ne!(tc.trace_id, parent.trace_id, "{mode:?}: a trace of its own");
        }
        test.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_spawned_task_keeps_the_trace_through_scope() {
    let seen = Seen::default();
    let spawner = HandlerDef::new("spawner", |ping: Ping, ctx: Context| async move {
        let bus = ctx.bus().clone();
        let task = tokio::spawn(eventbus::trace::scope(
            eventbus::trace::current(),
            async move { bus.publish(Pong { n: ping.n }).await },
        ));
        task.await.expect("the task ran")
    });
    let record = {
        let seen = seen.clone();
        HandlerDef::new("record", move |pong: Pong, ctx: Context| {
            let seen = seen.clone();
            async move {
                seen.lock().push((pong.n, ctx.envelope().trace_context()));
            }
        })
    };
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .handler(spawner)
            .handler(record),
    )
    .await
    .unwrap();
    publish_ping(&test, 1, &format!(r#","traceparent":"{PARENT}""#)).await;
    test.settle().await;
    let got = by_n(&seen, 1).expect("carried into the task");
    assert_eq!(got.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    test.stop().await.unwrap();
}
