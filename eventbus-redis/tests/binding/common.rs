//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use eventbus_core::transport::Delivery;
use eventbus_redis::cloudevents::{EventBuilder, EventBuilderV10};
use eventbus_redis::{Client, Consumer, ConsumerOptions, RedisConfig};
use testkit::RedisServer;

pub fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server")
}

pub async fn client(url: &str) -> Client {
    Client::connect(RedisConfig::from_url(url).expect("url"))
        .await
        .expect("connect")
}

/// `url` plus query options (`"mode=pubsub"`).
pub fn with(url: &str, query: &str) -> String {
    if query.is_empty() {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// A structured CloudEvent, as cloudevents-sdk writes it.
pub fn event(ty: &str, data: serde_json::Value) -> Vec<u8> {
    let e = EventBuilderV10::new()
        .id(uuid::Uuid::now_v7().to_string())
        .ty(ty)
        .source("/tests")
        .time(chrono::Utc::now())
        .data("application/json", data)
        .build()
        .expect("valid event");
    serde_json::to_vec(&e).expect("serialize")
}

/// The `data` of an entry's CloudEvent.
pub fn data(entry: &Delivery) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&entry.payload).expect("entry is JSON");
    v["data"].clone()
}

pub fn fast_opts() -> ConsumerOptions {
    let mut o = ConsumerOptions::default();
    o.block = Duration::from_millis(500);
    o.busy_block = Duration::from_millis(20);
    o.retry_poll = Duration::from_millis(100);
    o.types_poll = Duration::from_millis(100);
    o
}

/// Reads until `n` entries arrived (or panics after `within`).
pub async fn read_n(c: &Consumer, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "got {} of {n} entries: {:?}",
            out.len(),
            out.iter()
                .map(|e: &Delivery| e.event_type.clone())
                .collect::<Vec<_>>()
        );
        out.extend(c.read(n - out.len()).await.expect("read"));
    }
    out
}

/// Reads for `d` and returns whatever arrived.
pub async fn read_for(c: &Consumer, d: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        out.extend(c.read(100).await.expect("read"));
    }
    out
}

/// The number of entries pending (delivered, not acked) in `group` on `stream`.
pub fn pending(server: &RedisServer, stream: &str, group: &str) -> u64 {
    let reply = server.cmd(&["XPENDING", stream, group]).expect("XPENDING");
    reply
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("unexpected XPENDING reply {reply:?}"))
}
