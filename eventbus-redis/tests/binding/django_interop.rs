//! Interop with Python services: the django-broadcaster stream layout, and
//! structured events read back by the Python `cloudevents` SDK.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use eventbus_core::transport::Topics;
use serde_json::json;

fn only(t: &[&str]) -> Topics {
    Topics::Types(t.iter().map(|s| s.to_string()).collect())
}

/// An entry exactly as django-broadcaster's `RedisStreamBackend.publish`
/// writes it (`json.dumps` of `OutboxEvent.to_cloud_event()`, `isoformat()`
/// timestamps).
fn django_entry(id: &str, ty: &str, data: &str) -> Vec<String> {
    let ce = format!(
        r#"{{"specversion": "1.0", "type": "{ty}", "source": "reviews", "id": "{id}", "time": "2025-06-01T12:30:00.123456+00:00", "datacontenttype": "application/json", "data": {data}}}"#
    );
    vec![
        "XADD".into(),
        "events".into(),
        "MAXLEN".into(),
        "~".into(),
        "10000".into(),
        "*".into(),
        "event_id".into(),
        id.into(),
        "event_type".into(),
        ty.into(),
        "source".into(),
        "reviews".into(),
        "timestamp".into(),
        "2025-06-01T12:30:00.123456+00:00".into(),
        "cloud_event".into(),
        ce,
    ]
}

#[tokio::test]
async fn django_layout_round_trip() {
    let server = server();
    let url = with(&server.url(), "layout=django&stream=events");
    let client = client(&url).await;
    let created = client
        .consumer("rust.on_created", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    let everything = client
        .consumer("rust.audit", Topics::All, fast_opts())
        .await
        .unwrap();

    // Python writes two events of different types.
    for (id, ty) in [
        ("0b9f6c1e-0000-4000-8000-000000000001", "moderate_action"),
        ("0b9f6c1e-0000-4000-8000-000000000002", "review_created"),
    ] {
        let args = django_entry(id, ty, r#"{"id": "42"}"#);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.cmd(&args).unwrap();
    }
    let got = read_n(&created, 1, Duration::from_secs(5)).await;
    assert_eq!(&*got[0].event_type, "review_created");
    let ce = eventbus_redis::codec::decode_event(&got[0].payload).unwrap();
    use eventbus_redis::cloudevents::AttributesReader;
    assert_eq!(ce.id(), "0b9f6c1e-0000-4000-8000-000000000002");
    assert_eq!(ce.source().as_str(), "reviews");
    assert_eq!(data(&got[0]), json!({"id": "42"}));
    created.ack(&[got[0].id]).await.unwrap();
    assert!(
        read_for(&created, Duration::from_millis(300))
            .await
            .is_empty(),
        "filtered by event_type"
    );
    // The filtered entry was acked for this group, not left pending.
    assert_eq!(pending(&server, "events", "rust.on_created"), 0);

    let all = read_n(&everything, 2, Duration::from_secs(5)).await;
    let types: Vec<&str> = all.iter().map(|e| &*e.event_type).collect();
    assert_eq!(types, ["moderate_action", "review_created"]);

    // We publish into the same layout.
    let ours = event("review_created", json!({"id": "from-rust"}));
    client.publish_one("review_created", &ours).await.unwrap();
    let got = read_n(&created, 1, Duration::from_secs(5)).await;
    assert_eq!(&got[0].payload[..], &ours[..]);
    let sent: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    let raw = server
        .cmd(&["XREVRANGE", "events", "+", "-", "COUNT", "1"])
        .unwrap();
    let f: Vec<&str> = raw.lines().skip(1).collect();
    assert_eq!(f[0], "event_id");
    assert_eq!(f[1], sent["id"]);
    assert_eq!(
        &f[2..6],
        ["event_type", "review_created", "source", "/tests"]
    );
    assert_eq!(f[6], "timestamp");
    assert_eq!(f[7], sent["time"]);
    assert_eq!(f[8], "cloud_event");
    assert_eq!(f[9].as_bytes(), &ours[..]);

    // Scheduled events land in the same layout.
    client
        .publish_at("review_created", &ours, std::time::SystemTime::now())
        .await
        .unwrap();
    client.move_due(10).await.unwrap();
    let got = read_n(&created, 1, Duration::from_secs(5)).await;
    assert_eq!(&got[0].payload[..], &ours[..]);
    // Keys share the slot of `events`.
    assert_eq!(client.keys().dlq(), "{events}:eventbus:dlq");
}

const PY_READ: &str = r#"
import json, sys
raw = sys.stdin.buffer.read()
try:
    from cloudevents.core.formats.json import JSONFormat  # cloudevents >= 2
    e = JSONFormat().read(None, raw)
    out = {"type": e.get_type(), "source": e.get_source(), "id": e.get_id(), "data": e.get_data(),
           "time": e.get_time().isoformat() if e.get_time() else None}
except ImportError:
    from cloudevents.http import from_json  # cloudevents 1.x
    e = from_json(raw)
    out = {"type": e["type"], "source": e["source"], "id": e["id"], "data": e.data,
           "time": e["time"] if "time" in e else None}
print(json.dumps(out))
"#;

fn python_read(payload: &[u8]) -> serde_json::Value {
    let mut child = testkit::python()
        .args(["-c", PY_READ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python could not read {}: {}",
        String::from_utf8_lossy(payload),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn python_cloudevents_sdk_reads_what_we_write() {
    let server = server();
    // A CloudEvent as cloudevents-sdk (Rust) writes it, through a stream.
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    let ours = event("review_created", json!({"id": "abc"}));
    client.publish_one("review_created", &ours).await.unwrap();
    let raw = server
        .cmd(&["XRANGE", "{eventbus}:stream:review_created", "-", "+"])
        .unwrap();
    let on_wire = raw.lines().nth(2).unwrap().to_owned();
    let py = python_read(on_wire.as_bytes());
    assert_eq!(py["type"], "review_created");
    assert_eq!(py["source"], "/tests");
    assert_eq!(py["data"], json!({"id": "abc"}));
    read_n(&consumer, 1, Duration::from_secs(5)).await;

    // A legacy payload wrapped by us.
    let pubsub = crate::common::client(&with(&server.url(), "mode=pubsub")).await;
    let sub = pubsub
        .consumer("g", only(&["review_approved"]), fast_opts())
        .await
        .unwrap();
    server
        .cmd(&["PUBLISH", "review_approved", r#"{"id": "5"}"#])
        .unwrap();
    let got = read_n(&sub, 1, Duration::from_secs(5)).await;
    let py = python_read(&got[0].payload);
    assert_eq!(py["type"], "review_approved");
    assert_eq!(py["source"], "/redis/review_approved");
    assert_eq!(py["data"], json!({"id": "5"}));
    assert!(py["time"].is_string());
}

/// A Django service's pub/sub side, with redis-py: publishes `publish` (if
/// any) on `channel`, then prints what it receives there as JSON lines
/// (`{"raw": <the message as text>, "id": json.loads(msg)["id"]}`), `count`
/// of them. Prints `subscribed` once its subscription is confirmed.
const PY_PUBSUB: &str = r#"
import json, sys, redis
url, channel, publish, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = redis.Redis.from_url(url)
p = r.pubsub()
p.subscribe(channel)
assert p.get_message(timeout=5)["type"] == "subscribe"
print("subscribed", flush=True)
if publish:
    r.publish(channel, publish)
seen = 0
while seen < count:
    m = p.get_message(timeout=10)
    if m is None:
        sys.exit("no message within 10 s")
    if m["type"] != "message":
        continue
    raw = m["data"].decode()
    print(json.dumps({"raw": raw, "id": json.loads(raw)["id"]}), flush=True)
    seen += 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_subscriber_gets_bare_json_from_pubsub_alone() {
    // Regression: with `?mode=pubsub` alone (enough to receive from
    // Django), Rust published CloudEvent envelopes on the legacy channels,
    // so `json.loads(msg)["id"]` in Django silently got the CloudEvent id.
    use std::io::{BufRead, BufReader};
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer(
            "rust.on_review_created",
            only(&["review_created"]),
            fast_opts(),
        )
        .await
        .unwrap();
    let mut django = testkit::python()
        .args([
            "-c",
            PY_PUBSUB,
            &server.url(),
            "review_created",
            r#"{"id": "from-django"}"#,
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Python's lines, as they come.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = BufReader::new(django.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(15), lines.recv())
            .await
            .expect("python printed a line within 15 s")
            .expect("python's output is open")
    };
    assert_eq!(next_line().await, "subscribed");

    // The channel carried bare JSON from Django; the Rust service got it.
    let got = read_n(&consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(data(&got[0]), json!({"id": "from-django"}));
    // Django's own message, as Django's subscriber read it.
    let own: serde_json::Value = serde_json::from_str(&next_line().await).unwrap();
    assert_eq!(own["id"], "from-django");

    // The Rust service publishes a CloudEvent (as the bus does) whose id is
    // not the payload's: Django reads the bare data, and the payload's id.
    let ours = event("review_created", json!({"id": "from-rust"}));
    client.publish_one("review_created", &ours).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&next_line().await).unwrap();
    assert_eq!(
        seen["raw"], r#"{"id":"from-rust"}"#,
        "bare JSON on the wire"
    );
    assert_eq!(
        seen["id"], "from-rust",
        "json.loads(msg)[\"id\"] is the payload's id"
    );
    let out = django.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python subscriber failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
