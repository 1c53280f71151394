//! The one validator on Redis, end to end against a real `redis-server`:
//! the shared corpus (one payload per rule, and CloudEvents 0.3 written by
//! the Python SDK) on Streams and on pub/sub, for a typed handler and a
//! global one, each dead letter checked for its reason; a hostile channel
//! name and `type` never forge a log line.

#[path = "../common/validation_corpus.rs"]
mod corpus;

use std::sync::Arc;

use bytes::Bytes;
use eventbus::transport::Outgoing;
use eventbus::{Bus, CloudEvent, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::support::*;

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

async fn bus(url: &str, seen: &Arc<Seen>) -> Bus {
    let (a, b) = (seen.clone(), seen.clone());
    Bus::builder()
        .service("validation")
        .without_registered()
        .event::<Probe>()
        .retry_policy(fast_retries())
        .handler(HandlerDef::new("typed", move |p: Probe| {
            let seen = a.clone();
            async move { seen.typed.lock().push(p.n) }
        }))
        .handler(HandlerDef::new("audit", move |e: CloudEvent| {
            let seen = b.clone();
            async move {
                if eventbus::cloudevents::AttributesReader::ty(&e) == corpus::TYPE {
                    seen.global.lock().push(e)
                }
            }
        }))
        .connect(url)
        .await
        .expect("connect")
}

/// Publishes every case (through the bus's raw publish: the bytes go on the
/// wire as they are), waits until each is handled or dead-lettered by both
/// groups, and checks the verdicts.
async fn run_corpus(url: &str, tag: &str) {
    let mut cases = corpus::cases(tag);
    cases.extend(corpus::python_cases(tag));
    // On Redis a payload without `specversion` is bare (legacy) data, which
    // the transport wraps into an event of its stream's or channel's type
    // (the legacy codec's contract): not a case here.
    let cases: Vec<&corpus::Case> = cases.iter().filter(|c| c.structured).collect();
    let seen = Arc::new(Seen::default());
    let bus = bus(url, &seen).await;
    let mut running = bus.spawn();
    running.ready().await.expect("the bus gets ready");
    for case in &cases {
        bus.publish_encoded(&[Outgoing {
            event_type: corpus::TYPE.into(),
            payload: Bytes::copy_from_slice(&case.payload),
        }])
        .await
        .unwrap();
    }
    let dead_expected: usize = cases
        .iter()
        .map(|c| match c.expect {
            corpus::Expect::Rejected(_) => 2,
            corpus::Expect::TypedRejected(_) => 1,
            corpus::Expect::Accepted(_) => 0,
        })
        .sum();
    let global_expected = cases
        .iter()
        .filter(|c| !matches!(c.expect, corpus::Expect::Rejected(_)))
        .count();
    let typed_expected = cases
        .iter()
        .filter(|c| matches!(c.expect, corpus::Expect::Accepted(_)))
        .count();
    wait_until_async("every case handled or dead-lettered", || async {
        bus.dead_letters(1000).await.unwrap().len() >= dead_expected
            && seen.global.lock().len() >= global_expected
            && seen.typed.lock().len() >= typed_expected
    })
    .await;
    running.shutdown().await.unwrap();
    let dead = bus.dead_letters(1000).await.unwrap();
    assert_eq!(dead.len(), dead_expected, "no more dead letters than cases");
    let typed = seen.typed.lock().clone();
    let global = seen.global.lock().clone();
    corpus::check(
        &cases,
        &dead,
        &typed,
        &global,
        ["validation.typed", "validation.audit"],
    );
}

#[tokio::test]
async fn every_rule_on_streams_typed_and_global() {
    let server = server();
    run_corpus(&server.url(), "streams").await;
}

#[tokio::test]
async fn every_rule_on_pubsub_typed_and_global() {
    let server = server();
    run_corpus(&with(&server.url(), "mode=pubsub"), "pubsub").await;
}

/// A foreign publisher's channel whose name, and the event's `type`, carry
/// a newline and a NUL: the pub/sub dead letter and the worker's log lines
/// print them escaped.
#[tokio::test(flavor = "current_thread")]
async fn a_hostile_type_on_pubsub_never_forges_a_log_line() {
    let (log, _guard) = corpus::LogBuf::capture();
    let server = server();
    let seen = Arc::new(Seen::default());
    let bus = bus(&with(&server.url(), "mode=pubsub"), &seen).await;
    let mut running = bus.spawn();
    running.ready().await.expect("the bus gets ready");
    let hostile = "evil\n2026-01-01T00:00:00Z  INFO forged: all good\0";
    let payload = format!(
        r#"{{"specversion":"1.0","id":"h-1","type":"{}","source":"/x","data":{{}}}}"#,
        hostile.replace('\n', "\\n").replace('\0', "\\u0000")
    );
    server.cmd(&["PUBLISH", hostile, &payload]).unwrap();
    wait_until_async("the hostile event dead-lettered", || async {
        !bus.dead_letters(10).await.unwrap().is_empty()
    })
    .await;
    running.shutdown().await.unwrap();
    let dead = bus.dead_letters(10).await.unwrap();
    assert!(
        dead[0]
            .error
            .contains("attribute `type` contains the control character U+000A"),
        "{dead:#?}"
    );
    let out = String::from_utf8(log.bytes()).unwrap();
    assert!(
        out.contains(r"evil\n2026-01-01T00:00:00Z  INFO forged: all good\0"),
        "{out}"
    );
    log.assert_escaped(&["2026-01-01T00:00:00Z"]);
}
