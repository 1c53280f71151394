//! What a handler's `Context` reads: the envelope the worker built while it
//! decoded the event, never the bytes again (so its accessors cannot panic),
//! and what the dead-letter queue records of an event the handler never saw.

use std::sync::Arc;

use bytes::Bytes;
use eventbus::cloudevents::event::ExtensionValue;
use eventbus::testing::TestBus;
use eventbus::transport::Outgoing;
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ctx.note")]
struct Note {
    n: u32,
}

/// What a handler saw through its context.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    n: u32,
    id: String,
    event_type: String,
    source: String,
    subject: Option<String>,
    time: bool,
    traceparent: Option<ExtensionValue>,
    raw_len: usize,
}

fn recorder(seen: &Arc<Mutex<Vec<Seen>>>) -> HandlerDef {
    let seen = seen.clone();
    HandlerDef::new("rec", move |note: Note, ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock().push(Seen {
                n: note.n,
                id: ctx.id().to_owned(),
                event_type: ctx.event_type().to_owned(),
                source: ctx.source().to_owned(),
                subject: ctx.subject().map(str::to_owned),
                time: ctx.time().is_some(),
                traceparent: ctx.extension("traceparent").cloned(),
                raw_len: ctx.raw().len(),
            });
        }
    })
}

async fn publish_raw(test: &TestBus, payload: &str) {
    test.bus()
        .publish_encoded(&[Outgoing {
            event_type: "ctx.note".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }])
        .await
        .unwrap();
}

/// The envelope holds what the decode read: escaped values (copied out of
/// the message), extensions, the time, and the bytes as received.
#[tokio::test]
async fn the_context_reads_escaped_attributes_and_extensions_from_the_envelope() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let test = TestBus::start(Bus::builder().without_registered().handler(recorder(&seen)))
        .await
        .unwrap();
    // Another SDK's member order, an escaped source, an extension.
    let payload = r#"{"data":{"n":7},"id":"e-1","source":"\/reviews\u0020eu","type":"ctx.note","specversion":"1.0","subject":"s","time":"2026-12-01T09:00:00+01:00","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
    publish_raw(&test, payload).await;
    test.bus().publish(Note { n: 8 }).await.unwrap();
    test.settle().await;
    let mut seen = seen.lock().clone();
    seen.sort_by_key(|s| s.n);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0],
        Seen {
            n: 7,
            id: "e-1".into(),
            event_type: "ctx.note".into(),
            source: "/reviews eu".into(),
            subject: Some("s".into()),
            time: true,
            traceparent: Some(ExtensionValue::String(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
            )),
            raw_len: payload.len(),
        }
    );
    // The bus's own layout (the fast path): the same facts.
    assert_eq!(seen[1].event_type, "ctx.note");
    assert!(uuid::Uuid::parse_str(&seen[1].id).is_ok());
    assert!(seen[1].time);
    assert_eq!(seen[1].traceparent, None);
    test.stop().await.unwrap();
}

/// Regression: a message with a member twice was accepted by the typed
/// decoder (the last `id` won) and rejected by the general parser that
/// `ctx.id()` ran again, so `ctx.id()` panicked inside the handler: it ran
/// on every attempt and was dead-lettered as "handler panicked". Now it is
/// read once: the handler never runs, and the dead letter says why.
#[tokio::test]
async fn a_duplicate_member_is_dead_lettered_once_and_never_reaches_the_handler() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let test = TestBus::start(Bus::builder().without_registered().handler(recorder(&seen)))
        .await
        .unwrap();
    for payload in [
        r#"{"specversion":"1.0","id":"a","id":"b","type":"ctx.note","source":"/x","data":{"n":1}}"#,
        r#"{"specversion":"1.0","id":"a","type":"ctx.note","source":"/x","data":{"n":1},"data":{"n":2}}"#,
        r#"{"specversion":"1.0","id":"a","type":"ctx.note","source":"/x","ext":"1","ext":"2","data":{"n":1}}"#,
    ] {
        publish_raw(&test, payload).await;
    }
    test.bus().publish(Note { n: 9 }).await.unwrap();
    test.settle().await;
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1, "only the valid event was handled: {seen:?}");
    assert_eq!(seen[0].n, 9);
    let dead = test.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 3);
    for (d, member) in dead.iter().zip(["id", "data", "ext"]) {
        assert_eq!(d.attempts, 1, "not retried: {d:?}");
        assert!(
            d.error.contains(&format!("duplicate attribute `{member}`")),
            "{:?}",
            d.error
        );
        assert!(!d.error.contains("panicked"), "{:?}", d.error);
        assert_eq!(
            d.event_type.as_deref(),
            Some("ctx.note"),
            "from the delivery"
        );
    }
    test.stop().await.unwrap();
}

/// A dead letter carries the event's type and id from the envelope when the
/// handler failed, and from what can be read when the data did not fit.
#[tokio::test(start_paused = true)]
async fn dead_letters_carry_the_event_type_and_id() {
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .handler(HandlerDef::new("fails", |_: Note| async { Err::<(), _>("no") }).retries(0)),
    )
    .await
    .unwrap();
    let (id, message) = test.bus().encode(&Note { n: 1 }).unwrap();
    test.bus().publish_encoded(&[message]).await.unwrap();
    publish_raw(
        &test,
        r#"{"specversion":"1.0","id":"bad-data","type":"ctx.note","source":"/x","data":{"n":"one"}}"#,
    )
    .await;
    // A broken envelope whose type and id are readable keeps them too.
    publish_raw(
        &test,
        r#"{"specversion":"1.0","id":"bad-source","type":"ctx.note","source":"","data":{"n":2}}"#,
    )
    .await;
    test.settle().await;
    let mut dead = test.dead_letters().await.unwrap();
    let broken = dead
        .iter()
        .position(|d| d.error.contains("source"))
        .map(|i| dead.remove(i))
        .expect("the empty source is dead-lettered");
    assert_eq!(broken.event_id.as_deref(), Some("bad-source"), "{broken:?}");
    assert_eq!(broken.event_type.as_deref(), Some("ctx.note"));
    // The handler's failure first, then the data that did not fit.
    dead.sort_by_key(|d| d.error.contains("data.n"));
    dead.reverse();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].event_id.as_deref(), Some("bad-data"));
    assert!(dead[0].error.contains("data.n"), "{:?}", dead[0].error);
    assert_eq!(dead[1].event_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(dead[1].error, "no");
    for d in &dead {
        assert_eq!(d.event_type.as_deref(), Some("ctx.note"));
    }
    test.stop().await.unwrap();
}
