//! The transport contract (`eventbus::testing::conformance`) on this
//! crate's [`RedisTransport`]: Streams, pub/sub (`?mode=pubsub`,
//! at-most-once, groups competing through a lease, broadcast) and a 3-node Redis Cluster
//! (`redis+cluster://`), against servers started by testkit on free
//! loopback ports.
//!
//! The scenarios of one binary share a server (and a cluster): each holds
//! it while it runs, and the last one to finish stops it.

use std::sync::{Arc, Mutex, Weak};

use eventbus::testing::conformance::{Connect, Features};
use eventbus::transport::Transport;
use eventbus_redis::RedisTransport;
use testkit::{RedisCluster, RedisServer};

/// On every connection: a lost subscriber's deliveries are taken over after
/// 5 s (the default, 60 s, would make the at-least-once scenario slow), and
/// looked for every 100 ms.
const OPTIONS: &str = "claim_idle_ms=5000&claim_interval_ms=100";

/// The value in `slot` while someone holds it, else a fresh one from `start`.
fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = slot.upgrade() {
        return value;
    }
    let value = Arc::new(start());
    *slot = Arc::downgrade(&value);
    value
}

/// `url` plus `query`.
fn with(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Connections to `url`, holding `server` for as long as the scenario runs.
fn connect_holding<S: Send + Sync + 'static>(server: Arc<S>, url: String) -> impl Connect {
    move || {
        let _running = &server;
        let url = url.clone();
        async move {
            let transport = RedisTransport::connect(&url).await?;
            Ok(Arc::new(transport) as Arc<dyn Transport>)
        }
    }
}

/// Connections to the shared `redis-server`, with `query` (a mode).
fn server(query: &str) -> impl Connect {
    static SERVER: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let server = shared(&SERVER, || {
        RedisServer::start().expect("start redis-server (apt-get install -y redis-server)")
    });
    let url = with(&with(&server.url(), OPTIONS), query);
    connect_holding(server, url)
}

/// Connections to the shared 3-node Redis Cluster.
fn cluster() -> impl Connect {
    static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let cluster = shared(&CLUSTER, || {
        RedisCluster::start(3).expect("start a 3-node Redis Cluster (redis-server, redis-cli)")
    });
    let url = with(&cluster.url(), OPTIONS);
    assert!(url.starts_with("redis+cluster://"), "{url}");
    connect_holding(cluster, url)
}

/// Redis Streams (the default mode): durable, competing consumers.
mod streams {
    use super::*;
    eventbus::conformance_tests!(Features::durable(), server("mode=streams"));
}

/// Pub/sub: fire-and-forget; one instance of a group at a time handles its
/// events (the lease), a broadcast group's every instance gets every event.
mod pubsub {
    use super::*;
    eventbus::conformance_tests!(Features::at_most_once(), server("mode=pubsub"));
}

/// Streams on a Redis Cluster.
mod cluster {
    use super::*;
    eventbus::conformance_tests!(Features::durable(), cluster());
}
