//! Streams mode: a global consumer (`Topics::All`) reads every stream of the
//! prefix, however it was written: streams only other producers write (a
//! raw `XADD` with redis-cli, a Python service with redis-py), never named
//! in `{P}:types`, on a single server and on a cluster. A stream it finds
//! later is read from the group's start on (nothing written since is
//! missed), never from its older history.

use std::time::{Duration, SystemTime};

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::StartFrom;
use serde_json::json;
use testkit::{RedisCluster, RedisServer};

/// `XADD {eventbus}:stream:<ty> * <field> <value>`, as any producer can.
fn xadd(server: &RedisServer, ty: &str, field: &str, value: &str) {
    let key = format!("{{eventbus}}:stream:{ty}");
    server.cmd(&["XADD", &key, "*", field, value]).unwrap();
}

/// A structured CloudEvent as another service writes it.
fn foreign_event(ty: &str, id: &str) -> String {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/sso",
        "type": ty,
        "datacontenttype": "application/json",
        "data": {"data": {"id": "7"}, "action": "update"}
    })
    .to_string()
}

fn sorted_types(got: &[eventbus_core::transport::Delivery]) -> Vec<String> {
    let mut types: Vec<String> = got.iter().map(|e| e.event_type.to_string()).collect();
    types.sort();
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_consumer_reads_streams_only_other_producers_write() {
    let server = server();
    let client = client(&server.url()).await;
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    // A key of the pattern that is not a stream is passed over.
    server
        .cmd(&["SET", "{eventbus}:stream:not_a_stream", "x"])
        .unwrap();
    xadd(
        &server,
        "sso_user_changed",
        "cloud_event",
        &foreign_event("sso_user_changed", "a1"),
    );
    xadd(&server, "record_change", "data", r#"{"id": "9"}"#);
    let got = read_n(&all, 2, Duration::from_secs(10)).await;
    assert_eq!(sorted_types(&got), ["record_change", "sso_user_changed"]);
    let sso = got
        .iter()
        .find(|e| &*e.event_type == "sso_user_changed")
        .unwrap();
    assert_eq!(data(sso), json!({"data": {"id": "7"}, "action": "update"}));
    let record = got
        .iter()
        .find(|e| &*e.event_type == "record_change")
        .unwrap();
    assert_eq!(data(record), json!({"id": "9"}), "bare data, wrapped");
    assert_eq!(
        server.cmd(&["SCARD", "{eventbus}:types"]).unwrap(),
        "0",
        "no eventbus publisher named these types"
    );
    all.ack(&got.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    // Still reading: later entries of both arrive.
    xadd(
        &server,
        "sso_user_changed",
        "cloud_event",
        &foreign_event("sso_user_changed", "a2"),
    );
    let more = read_n(&all, 1, Duration::from_secs(10)).await;
    assert_eq!(&*more[0].event_type, "sso_user_changed");
}

/// A key of the pattern that is not a stream, even one named in
/// `{eventbus}:types`, neither stops a global consumer nor is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_the_pattern_that_are_not_streams_are_passed_over() {
    let server = server();
    let client = client(&server.url()).await;
    server
        .cmd(&["SET", "{eventbus}:stream:early", "x"])
        .unwrap();
    server.cmd(&["SADD", "{eventbus}:types", "early"]).unwrap();
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    server.cmd(&["SET", "{eventbus}:stream:late", "x"]).unwrap();
    server.cmd(&["SADD", "{eventbus}:types", "late"]).unwrap();
    xadd(&server, "fine", "data", r#""ok""#);
    let got = read_n(&all, 1, Duration::from_secs(10)).await;
    assert_eq!(&*got[0].event_type, "fine");
    assert!(read_for(&all, Duration::from_millis(500)).await.is_empty());
    for key in ["{eventbus}:stream:early", "{eventbus}:stream:late"] {
        assert_eq!(
            server.cmd(&["TYPE", key]).unwrap(),
            "string",
            "left as it was"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_found_later_is_read_from_the_groups_start_not_its_history() {
    let server = server();
    let client = client(&server.url()).await;
    // History written before the group: not for it.
    xadd(&server, "old", "data", r#""before""#);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Written after the group's start time, before the consumer exists (as
    // between `declare` and `subscribe`): for it.
    xadd(&server, "old", "data", r#""after the start""#);

    let mut opts = fast_opts();
    opts.start = StartFrom::Since(since);
    let all = client.consumer("audit", Topics::All, opts).await.unwrap();
    // A stream first written once the consumer runs: found at a later
    // look, read from the group's start on, so its first entries are there.
    xadd(&server, "fresh", "data", r#""first""#);
    xadd(&server, "fresh", "data", r#""second""#);
    let got = read_n(&all, 3, Duration::from_secs(10)).await;
    let mut seen: Vec<(String, serde_json::Value)> = got
        .iter()
        .map(|e| (e.event_type.to_string(), data(e)))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("fresh".to_owned(), json!("first")),
            ("fresh".to_owned(), json!("second")),
            ("old".to_owned(), json!("after the start")),
        ]
    );
    let later = read_for(&all, Duration::from_millis(500)).await;
    assert!(later.is_empty(), "no history: {later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_global_consumer_skips_history_and_misses_nothing_new() {
    let server = server();
    let client = client(&server.url()).await;
    xadd(&server, "known", "data", r#""history""#);
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    xadd(&server, "known", "data", r#""new""#);
    xadd(&server, "unknown_until_now", "data", r#""new too""#);
    let got = read_n(&all, 2, Duration::from_secs(10)).await;
    let mut seen: Vec<String> = got
        .iter()
        .map(|e| data(e).as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["new", "new too"]);
    assert!(read_for(&all, Duration::from_millis(500)).await.is_empty());
}

/// What a Python service does: `xadd` a structured CloudEvent to the
/// stream of its type with redis-py, and nothing else.
const PY_XADD: &str = r#"
import json, sys, uuid, datetime
import redis
port, ty = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(host="127.0.0.1", port=port)
event = {
    "specversion": "1.0",
    "id": str(uuid.uuid4()),
    "source": "/sso",
    "type": ty,
    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "datacontenttype": "application/json",
    "data": {"data": {"id": "7"}, "action": "update"},
}
print(r.xadd("{eventbus}:stream:" + ty, {"cloud_event": json.dumps(event)}).decode())
"#;

/// Runs [`PY_XADD`] against `port`; returns the entry id.
pub fn python_xadd(port: u16, ty: &str) -> String {
    let out = testkit::python()
        .args(["-c", PY_XADD, &port.to_string(), ty])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python could not XADD: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_consumer_reads_what_a_python_service_xadds() {
    let server = server();
    let client = client(&server.url()).await;
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    let id = python_xadd(server.port(), "sso_user_changed");
    let got = read_n(&all, 1, Duration::from_secs(10)).await;
    assert_eq!(&*got[0].event_type, "sso_user_changed");
    assert_eq!(
        data(&got[0]),
        json!({"data": {"id": "7"}, "action": "update"})
    );
    let xpending = server
        .cmd(&["XPENDING", "{eventbus}:stream:sso_user_changed", "audit"])
        .unwrap();
    assert!(xpending.contains(&id), "{xpending}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_consumer_on_a_cluster_reads_streams_only_other_producers_write() {
    let cluster = RedisCluster::start(3).unwrap();
    let client = client(&cluster.url()).await;
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    // Written on whichever node holds the prefix's hash slot.
    let written = cluster.nodes().iter().any(|node| {
        node.cmd(&[
            "XADD",
            "{eventbus}:stream:sso_user_changed",
            "*",
            "cloud_event",
            &foreign_event("sso_user_changed", "c1"),
        ])
        .is_ok()
    });
    assert!(written, "one node holds the slot");
    let got = read_n(&all, 1, Duration::from_secs(10)).await;
    assert_eq!(&*got[0].event_type, "sso_user_changed");
}
