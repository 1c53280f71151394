#![allow(dead_code)]
//! Shared by the `redis_*` end-to-end tests: throwaway `redis-server`s from
//! testkit (free loopback ports, never 6379), a Redis transport tuned for
//! tests, and testkit's condition waits with generous deadlines (the tests
//! never assert on timing).

use std::time::Duration;

use eventbus::RetryPolicy;
use eventbus::transport::redis::RedisTransport;
use eventbus_redis::{ConsumerOptions, RedisConfig};
#[allow(unused_imports)] // not every test binary uses every wait
pub use testkit::{DEADLINE, wait_until, wait_until_async};
use testkit::{RedisOptions, RedisServer};

/// A fresh `redis-server` (no persistence).
pub fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server (apt-get install -y redis-server)")
}

/// A fresh `redis-server` with the append-only file on.
pub fn durable_server() -> RedisServer {
    RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..Default::default()
    })
    .expect("start redis-server (apt-get install -y redis-server)")
}

/// `url` plus query options (`"mode=pubsub"`).
pub fn with(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// Consumer options for tests: a dead consumer's entries are taken over
/// after `claim_idle` (looked for every 100 ms), new types and foreign
/// retries are looked for every 100 ms.
pub fn fast_options(claim_idle: Duration) -> ConsumerOptions {
    let mut o = ConsumerOptions::default();
    o.block = Duration::from_millis(500);
    o.busy_block = Duration::from_millis(20);
    o.claim_idle = claim_idle;
    o.claim_interval = Duration::from_millis(100);
    o.types_poll = Duration::from_millis(100);
    o.retry_poll = Duration::from_millis(100);
    o
}

/// A Redis transport on `url` with [`fast_options`].
pub async fn fast_transport(url: &str, claim_idle: Duration) -> RedisTransport {
    let config = RedisConfig::from_url(url).expect("a valid Redis URL");
    RedisTransport::with_options(config, fast_options(claim_idle))
        .await
        .expect("connect to the test redis-server")
}

/// Short retry backoff: 50 ms doubling up to 400 ms (with jitter).
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
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

/// `{eventbus}:stream:<type>`: the stream the binding writes events of `ty` to.
pub fn stream_key(ty: &str) -> String {
    format!("{{eventbus}}:stream:{ty}")
}

/// A child process of a test, killed (SIGKILL) when the test ends first.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends one line to a log file shared between a test and its child
/// processes (one `write` per line, so a process killed mid-way leaves whole
/// lines).
pub fn log_line(path: &std::path::Path, line: String) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the child log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write the child log");
}

/// The lines of such a log (none when it does not exist yet).
pub fn read_log(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
