//! The one validator, end to end on `memory://`: one payload per rule (the
//! shared corpus) reaches a typed handler and a global one; each gets the
//! same verdict, with a reason that names what failed, is short and has no
//! raw control character; CloudEvents 0.3 is read as 1.0; a hostile `type`
//! never forges a log line.

#[path = "../common/validation_corpus.rs"]
mod corpus;

use std::sync::Arc;

use bytes::Bytes;
use eventbus::testing::TestBus;
use eventbus::transport::Outgoing;
use eventbus::{Bus, CloudEvent, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("validation.probe")]
struct Probe {
    run: String,
    n: u32,
}

#[derive(Default)]
struct Seen {
    typed: Mutex<Vec<u32>>,
    global: Mutex<Vec<CloudEvent>>,
}

fn builder(seen: &Arc<Seen>) -> eventbus::BusBuilder {
    let (a, b) = (seen.clone(), seen.clone());
    Bus::builder()
        .service("validation")
        .without_registered()
        .handler(HandlerDef::new("typed", move |p: Probe| {
            let seen = a.clone();
            async move { seen.typed.lock().push(p.n) }
        }))
        .handler(HandlerDef::new("audit", move |e: CloudEvent| {
            let seen = b.clone();
            async move { seen.global.lock().push(e) }
        }))
}

async fn publish_raw(test: &TestBus, event_type: &str, payload: &[u8]) {
    test.bus()
        .publish_encoded(&[Outgoing {
            event_type: event_type.to_owned().into(),
            payload: Bytes::copy_from_slice(payload),
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn every_rule_gives_the_same_verdict_to_typed_and_global_handlers() {
    let seen = Arc::new(Seen::default());
    let test = TestBus::start(builder(&seen)).await.unwrap();
    let mut cases = corpus::cases("mem");
    cases.extend(corpus::python_cases("mem"));
    for case in &cases {
        publish_raw(&test, corpus::TYPE, &case.payload).await;
    }
    // And what the bus itself writes, on the fast path.
    test.bus()
        .publish(Probe {
            run: "mem".into(),
            n: 99,
        })
        .await
        .unwrap();
    test.settle().await;
    let dead = test.dead_letters().await.unwrap();
    let mut typed = seen.typed.lock().clone();
    assert!(typed.contains(&99), "{typed:?}");
    typed.retain(|&n| n != 99);
    let global: Vec<CloudEvent> = seen.global.lock().clone();
    assert_eq!(global.len(), cases.len() - count_rejected(&cases) + 1);
    let all: Vec<&corpus::Case> = cases.iter().collect();
    corpus::check(
        &all,
        &dead,
        &typed,
        &global,
        ["validation.typed", "validation.audit"],
    );
    test.stop().await.unwrap();
}

fn count_rejected(cases: &[corpus::Case]) -> usize {
    cases
        .iter()
        .filter(|c| matches!(c.expect, corpus::Expect::Rejected(_)))
        .count()
}

/// A `type` with a newline and a NUL, a handler error with a newline: the
/// log lines that print them (the dead letter, the retry warning) escape
/// them, so no line is forged and no NUL goes out raw.
#[tokio::test(flavor = "current_thread")]
async fn hostile_text_never_forges_a_log_line() {
    let (log, _guard) = corpus::LogBuf::capture();
    let seen = Arc::new(Seen::default());
    let test = TestBus::start(
        builder(&seen).handler(
            HandlerDef::new("fails", |_: Probe| async {
                Err::<(), _>("bad\nERROR forged by the handler\0")
            })
            .retries(1),
        ),
    )
    .await
    .unwrap();
    let hostile = "evil\n2026-01-01T00:00:00Z  INFO forged: all good\0";
    let payload = format!(
        r#"{{"specversion":"1.0","id":"h-1","type":"{}","source":"/x","data":{{}}}}"#,
        hostile.replace('\n', "\\n").replace('\0', "\\u0000")
    );
    publish_raw(&test, hostile, payload.as_bytes()).await;
    publish_raw(
        &test,
        hostile,
        b"not json\n2026-01-01T00:00:00Z  INFO forged\0",
    )
    .await;
    test.bus()
        .publish(Probe {
            run: "log".into(),
            n: 1,
        })
        .await
        .unwrap();
    test.settle().await;
    let dead = test.dead_letters().await.unwrap();
    assert!(
        dead.iter().any(|d| d
            .error
            .contains("attribute `type` contains the control character U+000A")),
        "{dead:#?}"
    );
    test.stop().await.unwrap();
    let out = String::from_utf8(log.bytes()).unwrap();
    assert!(
        out.contains(r"evil\n2026-01-01T00:00:00Z  INFO forged: all good\0"),
        "{out}"
    );
    assert!(out.contains(r"bad\nERROR forged by the handler\0"), "{out}");
    log.assert_escaped(&["2026-01-01T00:00:00Z", "ERROR forged"]);
}
