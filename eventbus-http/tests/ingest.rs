//! `POST /events` against real peers: the router served by axum on a
//! loopback port over a running bus, requests from reqwest and from the
//! Python CloudEvents SDK (with requests), events received by a handler of
//! the bus, and Redis Streams for "202 only once the transport has it".

mod support;

#[path = "../../eventbus/tests/common/validation_corpus.rs"]
mod corpus;

use std::time::{Duration, Instant};

use bytes::Bytes;
use eventbus::cloudevents::event::ExtensionValue;
use eventbus::cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use eventbus::transport::Outgoing;
use eventbus::{Bus, CloudEvent};
use eventbus_http::{Mode, SendError};
use support::{Gate, Recorder, problem, serve_bus};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

fn event_json(id: &str, ty: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","type":"{ty}","source":"/tests","data":{{"id":"{id}"}}}}"#
    )
}

fn ext(event: &CloudEvent, name: &str) -> Option<String> {
    event.extension(name).map(|v| match v {
        ExtensionValue::String(s) => s.clone(),
        other => panic!("extension {name} is {other:?}, expected a string"),
    })
}

#[tokio::test]
async fn binary_mode_with_an_extension_and_percent_encoded_values() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let response = reqwest::Client::new()
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("CE-ID", "bin-1")
        .header("Ce-Type", "review_created")
        .header("ce-source", "/reviews")
        .header("ce-subject", "Euro%20%E2%82%AC%20%F0%9F%98%80")
        .header("ce-time", "2026-11-27T11:01:30Z")
        .header("ce-tenant", "caf%C3%A9%20%22quoted%22%20100%25")
        .header("ce-count", "7")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"id": "0190f3f5-1c2b-7e3a-9d4e-5f6a7b8c9d0e"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let event = rec.next().await;
    assert_eq!(event.id(), "bin-1");
    assert_eq!(event.ty(), "review_created");
    assert_eq!(event.source().as_str(), "/reviews");
    assert_eq!(event.subject(), Some("Euro € 😀"));
    assert_eq!(
        event.time().map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-11-27T11:01:30+00:00")
    );
    assert_eq!(
        event.datacontenttype(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        ext(&event, "tenant").as_deref(),
        Some("café \"quoted\" 100%")
    );
    // A header cannot say it was a number: extension values stay strings.
    assert_eq!(ext(&event, "count").as_deref(), Some("7"));
    assert_eq!(
        event.data(),
        Some(&Data::Json(
            serde_json::json!({"id": "0190f3f5-1c2b-7e3a-9d4e-5f6a7b8c9d0e"})
        ))
    );
    rec.stop().await;
}

#[tokio::test]
async fn binary_mode_text_binary_and_empty_bodies() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let client = reqwest::Client::new();
    let post = |id: &str, ct: Option<&str>, body: &'static [u8]| {
        let mut r = client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "blob")
            .header("ce-source", "/tests");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.body(body).send()
    };
    assert_eq!(
        post("t", Some("text/plain"), b"hello\nworld")
            .await
            .unwrap()
            .status(),
        202
    );
    let e = rec.next().await;
    assert_eq!(e.data(), Some(&Data::String("hello\nworld".into())));
    assert_eq!(
        post("b", Some("application/octet-stream"), b"\x00\x01\xff")
            .await
            .unwrap()
            .status(),
        202
    );
    let e = rec.next().await;
    assert_eq!(e.data(), Some(&Data::Binary(vec![0, 1, 255])));
    assert_eq!(post("e", None, b"").await.unwrap().status(), 202);
    let e = rec.next().await;
    assert_eq!((e.id(), e.data()), ("e", None));
    rec.stop().await;
}

#[tokio::test]
async fn structured_mode() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let body = r#"{"specversion":"1.0","id":"st-1","type":"review_created","source":"/reviews","subject":"Euro € 😀","myext":"a b%","flag":true,"data":{"id":"x"}}"#;
    let response = reqwest::Client::new()
        .post(&url)
        .header(
            "content-type",
            "Application/CloudEvents+JSON; charset=UTF-8",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let event = rec.next().await;
    assert_eq!(event.id(), "st-1");
    assert_eq!(event.subject(), Some("Euro € 😀"));
    assert_eq!(ext(&event, "myext").as_deref(), Some("a b%"));
    assert_eq!(
        event.extension("flag"),
        Some(&ExtensionValue::Boolean(true))
    );
    assert_eq!(
        event.data(),
        Some(&Data::Json(serde_json::json!({"id": "x"})))
    );
    rec.stop().await;
}

#[tokio::test]
async fn batch_mode_publishes_every_event_in_one_call() {
    let gate = Gate::new();
    let mut rec = Recorder::start(Bus::builder().transport(gate.clone())).await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let before = gate.entered();
    let body = format!(
        "[{}, {},\n {}]",
        event_json("b-0", "a"),
        event_json("b-1", "b"),
        event_json("b-2", "a")
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", BATCH)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(gate.entered() - before, 1, "one publish for the batch");
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        ids.push(rec.next().await.id().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["b-0", "b-1", "b-2"]);

    // An empty batch publishes nothing.
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", BATCH)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    rec.assert_quiet().await;
    rec.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_invalid_event_publishes_none() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let bad = r#"{"specversion":"1.0","id":"bad-1","type":"a","source":""}"#;
    let body = format!("[{}, {bad}]", event_json("ok-0", "a"));
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", BATCH)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, detail, problem) = problem(response).await;
    assert_eq!(status, 400);
    let reason = eventbus::codec::Attributes::parse(bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert_eq!(detail, format!("event 1 of the batch: {reason}"));
    assert_eq!(problem["event_id"], "bad-1");
    assert_eq!(problem["event_type"], "a");
    // Nothing of it was published: the next event is the marker.
    let marker = reqwest::Client::new()
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("marker", "a"))
        .send()
        .await
        .unwrap();
    assert_eq!(marker.status(), 202);
    assert_eq!(rec.next().await.id(), "marker");
    rec.stop().await;
}

/// Every payload of the validator's corpus, POSTed in structured mode: a
/// 400 for exactly those the bus dead-letters, with exactly the reason the
/// dead letter carries; a 202 for the rest.
#[tokio::test]
async fn the_ingest_verdict_is_the_dead_letter_queues() {
    let rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h.max_body(4 << 20)).await;
    let client = reqwest::Client::new();
    let mut cases = corpus::cases("http");
    cases.extend(corpus::python_cases("http"));
    let mut rejected = Vec::new();
    for case in &cases {
        let response = client
            .post(&url)
            .header("content-type", STRUCTURED)
            .body(case.payload.clone())
            .send()
            .await
            .unwrap();
        match &case.expect {
            corpus::Expect::Rejected(why) => {
                let (status, detail, _) = problem(response).await;
                assert_eq!(status, 400, "{}", case.rule);
                corpus::check_reason(case.rule, &detail, why);
                rejected.push((case, detail));
            }
            _ => assert_eq!(response.status(), 202, "{}", case.rule),
        }
    }
    assert!(
        rejected.len() >= 20,
        "the corpus has {} invalid payloads",
        rejected.len()
    );
    // The same payloads straight onto the bus: the dead letters' reasons.
    for (case, _) in &rejected {
        rec.bus
            .publish_encoded(&[Outgoing {
                event_type: corpus::TYPE.into(),
                payload: Bytes::from(case.payload.clone()),
            }])
            .await
            .unwrap();
    }
    let deadline = Instant::now() + support::DEADLINE;
    let dead = loop {
        let dead = rec.bus.dead_letters(10_000).await.unwrap();
        if dead.len() >= rejected.len() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (case, detail) in &rejected {
        let letter = dead
            .iter()
            .find(|d| d.payload[..] == case.payload[..])
            .unwrap_or_else(|| panic!("{}: no dead letter", case.rule));
        assert_eq!(&letter.error, detail, "{}", case.rule);
    }
    rec.stop().await;
}

#[tokio::test]
async fn bad_requests_say_why() {
    let rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let client = reqwest::Client::new();
    let binary = |subject: &str| {
        client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-type", "t")
            .header("ce-source", "/s")
            .header("ce-subject", subject)
    };

    // An overlong encoding of a space.
    let (status, detail, _) = problem(binary("a%C0%A0b").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        detail.contains(
            "header `ce-subject` percent-decodes to bytes that are not UTF-8: `%C0%A0` at byte 1"
        ),
        "{detail}"
    );
    // A `%` that is not `%XX`.
    let (status, detail, _) = problem(binary("100%").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        detail.contains("`%` at byte 3 is not a percent-encoded byte"),
        "{detail}"
    );
    // The validator's words for what decodes to a control character.
    let (status, detail, _) = problem(binary("a%0Ab").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(detail.contains("U+000A"), "{detail}");
    // JSON by its Content-Type, not JSON in fact.
    let (status, detail, _) = problem(
        binary("s")
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        detail.contains("the body is not JSON, but Content-Type `application/json`"),
        "{detail}"
    );

    // A bare JSON body, as if it were an event: binary mode, and what it lacks.
    let (status, detail, _) = problem(
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(event_json("1", "t"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(detail.contains("no ce- headers"), "{detail}");
    assert!(detail.contains("application/cloudevents+json"), "{detail}");
    // Some ce- headers: the ones missing.
    let (status, detail, _) = problem(
        client
            .post(&url)
            .header("ce-id", "1")
            .header("ce-type", "t")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        detail.contains("no header `ce-specversion`, `ce-source`"),
        "{detail}"
    );
    // Not an array, as a batch.
    let (status, detail, _) = problem(
        client
            .post(&url)
            .header("content-type", BATCH)
            .body(event_json("1", "t"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(detail.contains("a batch is a JSON array"), "{detail}");
    rec.stop().await;
}

#[tokio::test]
async fn other_cloudevents_formats_are_415() {
    let rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    for ct in [
        "application/cloudevents+xml",
        "application/cloudevents-batch+protobuf",
        "application/cloudevents+avro; charset=utf-8",
    ] {
        let response = reqwest::Client::new()
            .post(&url)
            .header("content-type", ct)
            .body("<event/>")
            .send()
            .await
            .unwrap();
        let (status, detail, _) = problem(response).await;
        assert_eq!(status, 415, "{ct}");
        assert!(detail.contains(ct.split(';').next().unwrap()), "{detail}");
        assert!(detail.contains("application/cloudevents+json"), "{detail}");
    }
    rec.stop().await;
}

#[tokio::test]
async fn a_bearer_token_is_required_when_configured() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h.bearer_token("s3cret")).await;
    let client = reqwest::Client::new();
    let post = |auth: Option<&str>| {
        let mut r = client
            .post(&url)
            .header("content-type", STRUCTURED)
            .body(event_json("auth-1", "t"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [None, Some("Bearer wrong"), Some("Basic s3cret")] {
        let response = post(auth).await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{auth:?}"
        );
        let (status, detail, _) = problem(response).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(!detail.contains("s3cret"), "{detail}");
    }
    rec.assert_quiet().await;
    assert_eq!(post(Some("Bearer s3cret")).await.unwrap().status(), 202);
    assert_eq!(rec.next().await.id(), "auth-1");
    rec.stop().await;
}

/// Sends a raw HTTP/1.1 request with a chunked body of `chunks` and returns
/// the status line of the answer.
async fn chunked(url: &str, content_type: &str, chunks: &[&[u8]]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/events");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer (and close) before the whole body is sent.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn bodies_and_batches_over_the_limits_are_413() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h.max_body(1000).max_batch(2)).await;
    let client = reqwest::Client::new();
    let big = format!(
        r#"{{"specversion":"1.0","id":"big","type":"t","source":"/s","data":"{}"}}"#,
        "x".repeat(2000)
    );
    // With a Content-Length.
    let (status, detail, _) = problem(
        client
            .post(&url)
            .header("content-type", STRUCTURED)
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        detail.contains("larger than the limit of 1000 bytes"),
        "{detail}"
    );
    // Chunked, without one: counted as it arrives.
    let chunk = [b'x'; 400];
    let status = chunked(&url, STRUCTURED, &[&chunk, &chunk, &chunk, &chunk]).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Chunked and within the limit: taken.
    let event = event_json("chunked", "t");
    let (a, b) = event.as_bytes().split_at(20);
    let status = chunked(&url, STRUCTURED, &[a, b]).await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    assert_eq!(rec.next().await.id(), "chunked");
    // A batch of more events than allowed.
    let body = format!(
        "[{},{},{}]",
        event_json("1", "t"),
        event_json("2", "t"),
        event_json("3", "t")
    );
    let (status, detail, _) = problem(
        client
            .post(&url)
            .header("content-type", BATCH)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        detail.contains("the batch has 3 events, more than the limit of 2"),
        "{detail}"
    );
    rec.assert_quiet().await;
    rec.stop().await;
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_429_never_queued() {
    let gate = Gate::new();
    let mut rec = Recorder::start(Bus::builder().transport(gate.clone())).await;
    let url = serve_bus(&rec.bus, |h| h.max_in_flight(1)).await;
    gate.close();
    let before = gate.entered();
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .header("content-type", STRUCTURED)
                .body(event_json("held", "t"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let deadline = Instant::now() + support::DEADLINE;
    while gate.entered() == before {
        assert!(
            Instant::now() < deadline,
            "the first request reaches the transport"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("refused", "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let (status, detail, _) = problem(response).await;
    assert_eq!(status, 429);
    assert!(
        detail.contains("1 requests are already waiting on the transport"),
        "{detail}"
    );
    assert!(
        !first.is_finished(),
        "the first request waits for the transport"
    );
    gate.open();
    assert_eq!(first.await.unwrap(), 202);
    assert_eq!(rec.next().await.id(), "held");
    // The permit is back.
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("after", "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(rec.next().await.id(), "after");
    rec.assert_quiet().await;
    rec.stop().await;
}

#[tokio::test]
async fn a_transport_failure_is_503_with_retry_after() {
    let gate = Gate::new();
    let mut rec = Recorder::start(Bus::builder().transport(gate.clone())).await;
    let url = serve_bus(&rec.bus, |h| h).await;
    gate.fail(true);
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("lost", "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let (status, detail, _) = problem(response).await;
    assert_eq!(status, 503);
    assert!(
        detail.contains("gate transport: the server is unreachable (the test said so)"),
        "{detail}"
    );
    gate.fail(false);
    rec.assert_quiet().await;
    rec.stop().await;
}

/// The egress client against the ingest: both modes, the binding's
/// percent-encoding on the wire (seen by a plain axum route), and a
/// refusal as a `SendError` with the status and the answer's start.
#[tokio::test]
async fn send_speaks_the_same_binding() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let event = EventBuilderV10::new()
        .id("send-1")
        .ty("review_created")
        .source("/reviews")
        .subject("Euro € 😀")
        .extension("note", "100% \"sure\"")
        .extension("n", 42i64)
        .data("application/json", serde_json::json!({"id": 7}))
        .build()
        .unwrap();
    for mode in [Mode::Binary, Mode::Structured] {
        eventbus_http::send(&url, &event, mode).await.unwrap();
        let got = rec.next().await;
        assert_eq!(got.id(), "send-1", "{mode:?}");
        assert_eq!(got.subject(), Some("Euro € 😀"), "{mode:?}");
        assert_eq!(
            ext(&got, "note").as_deref(),
            Some("100% \"sure\""),
            "{mode:?}"
        );
        assert_eq!(
            got.data(),
            Some(&Data::Json(serde_json::json!({"id": 7}))),
            "{mode:?}"
        );
    }

    // What goes on the wire in binary mode.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let capture = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let _ = tx.send((headers, body));
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let capture_url = support::serve(capture).await;
    eventbus_http::send(&capture_url, &event, Mode::Binary)
        .await
        .unwrap();
    let (headers, body) = rx.recv().await.unwrap();
    assert_eq!(headers["ce-subject"], "Euro%20%E2%82%AC%20%F0%9F%98%80");
    assert_eq!(headers["ce-note"], "100%25%20%22sure%22");
    assert_eq!(headers["ce-n"], "42");
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"id": 7})
    );

    // Refused: the status and the start of the answer.
    let locked = serve_bus(&rec.bus, |h| h.bearer_token("t0ken")).await;
    let err = eventbus_http::send(&locked, &event, Mode::Structured)
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("POST {locked} answered 401 Unauthorized: ")),
        "{message}"
    );
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert!(matches!(err, SendError::Status { .. }));
    // Nobody listening.
    let err = eventbus_http::send("http://127.0.0.1:9/events", &event, Mode::Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Request { .. }), "{err}");
    rec.stop().await;
}

/// The Python CloudEvents SDK's own HTTP conversions, POSTed with requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_posts_binary_and_structured() {
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let script = r#"
import json, sys
import requests
from cloudevents.core.v1.event import CloudEvent
from cloudevents.core.bindings import http
from cloudevents.v1.http import CloudEvent as LegacyEvent, to_structured as legacy_structured, to_binary as legacy_binary

url = sys.argv[1]
def event(id):
    return CloudEvent(attributes={
        "id": id, "type": "py.created", "source": "/python",
        "subject": "Euro € 😀", "tenant": 'café "quoted" 100%',
    }, data={"n": 1, "text": "ü"})

out = {}
m = http.to_binary_event(event("py-binary"))
out["binary"] = requests.post(url, headers=m.headers, data=m.body).status_code
m = http.to_structured_event(event("py-structured"))
out["structured"] = requests.post(url, headers=m.headers, data=m.body).status_code
# The v1 API of the same package (structured; its binary mode does not
# percent-encode, so only ASCII values without `%` go that way).
legacy = LegacyEvent({"id": "py-legacy", "type": "py.created", "source": "/python",
                      "subject": "Euro € 😀", "tenant": "café"}, {"n": 2})
headers, body = legacy_structured(legacy)
out["legacy_structured"] = requests.post(url, headers=headers, data=body).status_code
legacy = LegacyEvent({"id": "py-legacy-binary", "type": "py.created", "source": "/python",
                      "subject": "plain ascii, with spaces"}, {"n": 3})
headers, body = legacy_binary(legacy)
out["legacy_binary"] = requests.post(url, headers=headers, data=body).status_code
print(json.dumps(out))
"#;
    let output = tokio::task::spawn_blocking(move || {
        testkit::python()
            .args(["-W", "ignore", "-c", script, &url])
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        statuses,
        serde_json::json!({"binary": 202, "structured": 202, "legacy_structured": 202, "legacy_binary": 202})
    );
    let mut seen = std::collections::HashMap::new();
    for _ in 0..4 {
        let e = rec.next().await;
        seen.insert(e.id().to_owned(), e);
    }
    for id in ["py-binary", "py-structured"] {
        let e = &seen[id];
        assert_eq!(e.ty(), "py.created", "{id}");
        assert_eq!(e.source().as_str(), "/python", "{id}");
        assert_eq!(e.subject(), Some("Euro € 😀"), "{id}");
        assert_eq!(
            ext(e, "tenant").as_deref(),
            Some("café \"quoted\" 100%"),
            "{id}"
        );
        assert!(e.time().is_some(), "{id}");
        assert_eq!(
            e.data(),
            Some(&Data::Json(serde_json::json!({"n": 1, "text": "ü"}))),
            "{id}"
        );
    }
    assert_eq!(seen["py-legacy"].subject(), Some("Euro € 😀"));
    assert_eq!(ext(&seen["py-legacy"], "tenant").as_deref(), Some("café"));
    assert_eq!(
        seen["py-legacy-binary"].subject(),
        Some("plain ascii, with spaces")
    );
    assert_eq!(
        seen["py-legacy-binary"].data(),
        Some(&Data::Json(serde_json::json!({"n": 3})))
    );
    rec.stop().await;
}

/// 202 means the event is in the stream; with Redis gone, no 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_only_once_redis_streams_has_it() {
    let mut server = testkit::RedisServer::start()
        .expect("start redis-server (apt-get install -y redis-server)");
    let bus = Bus::builder()
        .service("ingest-redis")
        .without_registered()
        .connect(&server.url())
        .await
        .unwrap();
    let url = serve_bus(&bus, |h| h).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let response = client
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("redis-1", "ingest_probe"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // At the 202 the entry is there already: no waiting.
    let range = server
        .cmd(&["XRANGE", "{eventbus}:stream:ingest_probe", "-", "+"])
        .unwrap();
    assert!(range.contains(r#""id":"redis-1""#), "{range}");

    server.stop();
    let started = Instant::now();
    let response = client
        .post(&url)
        .header("content-type", STRUCTURED)
        .body(event_json("redis-2", "ingest_probe"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let (status, detail, _) = problem(response).await;
    assert_eq!(status, 503, "{detail}");
    assert!(detail.contains("redis"), "{detail}");
    assert!(!detail.contains("password"), "{detail}");
    // Bounded by the client's reconnect budget (30 s), not forever.
    assert!(took < Duration::from_secs(90), "took {took:?}");
}

/// Trace context: binary mode carries it as `ce-traceparent`/`ce-tracestate`
/// (the generic extension mapping); a request's own `traceparent` header is
/// used for an event that has none (the event's own always wins; a malformed
/// header is ignored); egress sends the event's context as the hop's
/// `traceparent` too.
#[tokio::test]
async fn trace_context_in_binary_mode_and_the_hop_s_traceparent() {
    const A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const B: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut rec = Recorder::memory().await;
    let url = serve_bus(&rec.bus, |h| h).await;
    let client = reqwest::Client::new();
    let binary = |id: &str| {
        client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "review_created")
            .header("ce-source", "/reviews")
            .header("content-type", "application/json")
            .body("{}")
    };

    // ce-traceparent wins over the hop's header.
    let r = binary("t-1")
        .header("ce-traceparent", A)
        .header("ce-tracestate", "congo=t61rcWkgMzE")
        .header("traceparent", B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = rec.next().await;
    assert_eq!(ext(&got, "traceparent").as_deref(), Some(A));
    assert_eq!(
        ext(&got, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );

    // Binary without ce-traceparent: the hop's header.
    let r = binary("t-2")
        .header("traceparent", B)
        .header("tracestate", "rojo=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = rec.next().await;
    assert_eq!(got.id(), "t-2");
    assert_eq!(ext(&got, "traceparent").as_deref(), Some(B));
    assert_eq!(ext(&got, "tracestate").as_deref(), Some("rojo=1"));

    // Structured, without and with a traceparent attribute.
    for (id, body_trace, expect) in [("t-3", None, B), ("t-4", Some(A), A)] {
        let mut body: serde_json::Value =
            serde_json::from_str(&event_json(id, "review_created")).unwrap();
        if let Some(tp) = body_trace {
            body["traceparent"] = tp.into();
        }
        let r = client
            .post(&url)
            .header("content-type", STRUCTURED)
            .header("traceparent", B)
            .body(format!("  {body}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{id}");
        let got = rec.next().await;
        assert_eq!(got.id(), id);
        assert_eq!(ext(&got, "traceparent").as_deref(), Some(expect), "{id}");
        assert_eq!(ext(&got, "tracestate"), None, "{id}");
    }

    // A malformed header is ignored, never a reason to refuse the event.
    let r = binary("t-5")
        .header("traceparent", A.to_uppercase())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = rec.next().await;
    assert_eq!(got.id(), "t-5");
    assert_eq!(ext(&got, "traceparent"), None);

    // Egress: `ce-traceparent` in binary mode, and the hop's `traceparent`
    // header in both modes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let capture = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let _ = tx.send(headers);
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let capture_url = support::serve(capture).await;
    let event = EventBuilderV10::new()
        .id("send-t")
        .ty("review_created")
        .source("/reviews")
        .extension("traceparent", A)
        .extension("tracestate", "congo=t61rcWkgMzE")
        .data("application/json", serde_json::json!({"id": 7}))
        .build()
        .unwrap();
    for mode in [Mode::Binary, Mode::Structured] {
        eventbus_http::send(&capture_url, &event, mode)
            .await
            .unwrap();
        let headers = rx.recv().await.unwrap();
        assert_eq!(headers["traceparent"], A, "{mode:?}");
        assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE", "{mode:?}");
        if mode == Mode::Binary {
            assert_eq!(headers["ce-traceparent"], A);
            assert_eq!(headers["ce-tracestate"], "congo=t61rcWkgMzE");
        }
    }
    // Without a trace context, no header.
    let plain = EventBuilderV10::new()
        .id("send-u")
        .ty("review_created")
        .source("/reviews")
        .build()
        .unwrap();
    eventbus_http::send(&capture_url, &plain, Mode::Structured)
        .await
        .unwrap();
    assert!(!rx.recv().await.unwrap().contains_key("traceparent"));
    rec.stop().await;
}
