//! Liveness of Streams consumers: who may take over whose entries.
//!
//! Each consumer that reads shows it is alive: a background task sets its
//! deadline in the group's zset `{P}:alive:<group>` (member = consumer name,
//! score = now + [`heartbeat_timeout`], on the server's clock) every
//! [`heartbeat_interval`], whether or not its handlers are busy. The group's
//! other consumers then know three kinds of owners of a pending entry:
//!
//! - **alive** (deadline ahead): its entries are never taken over, however
//!   long a handler runs;
//! - **dead** (deadline passed: SIGKILLed, crashed, cut off from Redis for
//!   longer than the timeout, or dropped): its entries are taken over at
//!   once, without waiting for `claim_idle`;
//! - **unknown** (not in the zset: a consumer of an older version without
//!   heartbeats, or one dead for over an hour): `claim_idle` decides, as it
//!   always did.
//!
//! The heartbeat's reply says whether the group has dead members; only then
//! does the reader run the takeover script, so a healthy group pays one
//! small script per consumer and interval. Every key involved carries the
//! configuration's hash tag, so the scripts run on a cluster as on one server.
//!
//! [`heartbeat_timeout`]: crate::ConsumerOptions::heartbeat_timeout
//! [`heartbeat_interval`]: crate::ConsumerOptions::heartbeat_interval

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::client::Client;
use crate::error::Result;
use crate::scripts;

/// The heartbeat of one consumer.
pub(crate) struct Liveness {
    key: String,
    name: String,
    interval: Duration,
    timeout: Duration,
    /// The last heartbeat saw members of the group whose deadline passed.
    peers_dead: AtomicBool,
    /// The heartbeat task, once the consumer first read.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Liveness {
    /// The liveness of consumer `name` in the zset `key`. A timeout shorter
    /// than two intervals is raised to two intervals (one late heartbeat
    /// must not make a consumer look dead).
    pub(crate) fn new(key: String, name: String, interval: Duration, timeout: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(10));
        let floor = interval * 2;
        if timeout < floor {
            tracing::warn!(
                ?timeout,
                ?interval,
                "heartbeat_timeout is shorter than two heartbeat intervals; using {floor:?}"
            );
        }
        Liveness {
            key,
            name,
            interval,
            timeout: timeout.max(floor),
            peers_dead: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    /// How often the consumer looks for dead members while there are any.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether the last heartbeat saw dead members in the group.
    pub(crate) fn peers_dead(&self) -> bool {
        self.peers_dead.load(Ordering::Relaxed)
    }

    /// After a takeover pass that left nothing to take: the next heartbeat
    /// says again whether any member is dead.
    pub(crate) fn peers_handled(&self) {
        self.peers_dead.store(false, Ordering::Relaxed);
    }

    /// Registers the consumer as alive (before it first reads, so what it
    /// reads is never up for takeover while it lives) and starts the
    /// heartbeat task. A no-op once started.
    pub(crate) async fn start(self: &Arc<Self>, client: &Client) -> Result<()> {
        if self.task.lock().expect("not poisoned").is_some() {
            return Ok(());
        }
        let dead = self.beat_with_retries(client).await?;
        self.peers_dead.store(dead > 0, Ordering::Relaxed);
        let me = Arc::clone(self);
        let client = client.clone();
        let task = tokio::spawn(async move { me.run(client).await });
        *self.task.lock().expect("not poisoned") = Some(task);
        Ok(())
    }

    async fn beat_with_retries(&self, client: &Client) -> Result<u64> {
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(&self.key)
            .arg(&self.name)
            .arg(self.timeout.as_millis() as u64);
        client.run_script("heartbeat script", &inv).await
    }

    /// One heartbeat, one attempt (the next interval is the retry).
    async fn beat(&self, client: &Client) -> redis::RedisResult<u64> {
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(&self.key)
            .arg(&self.name)
            .arg(self.timeout.as_millis() as u64);
        let mut conn = client.conn();
        inv.invoke_async(&mut conn).await
    }

    async fn run(&self, client: Client) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: start() just beat
        let mut last_ok = Instant::now();
        let mut warned = false;
        loop {
            tick.tick().await;
            match tokio::time::timeout(self.timeout, self.beat(&client)).await {
                Ok(Ok(dead)) => {
                    self.peers_dead.store(dead > 0, Ordering::Relaxed);
                    if warned {
                        tracing::info!(consumer = %self.name, "heartbeats reach Redis again");
                    }
                    last_ok = Instant::now();
                    warned = false;
                }
                result => {
                    let error = match result {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no reply".to_owned(),
                    };
                    if !warned && last_ok.elapsed() >= self.timeout {
                        warned = true;
                        tracing::warn!(consumer = %self.name, %error, "this consumer could not show it is alive for {:?}: the other consumers of its group may take over its entries", self.timeout);
                    } else {
                        tracing::debug!(consumer = %self.name, %error, "heartbeat failed");
                    }
                }
            }
        }
    }

    /// The consumer is gone (dropped): stops the heartbeat and marks it
    /// dead now, so the group's other consumers take over what it still
    /// owns at their next look instead of after its deadline.
    pub(crate) fn stop(&self, client: &Client) {
        let Some(task) = self.task.lock().expect("not poisoned").take() else {
            return;
        };
        task.abort();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the deadline passes by itself
        };
        let (client, key, name) = (client.clone(), self.key.clone(), self.name.clone());
        runtime.spawn(async move {
            let mut inv = scripts::MARK_DEAD.prepare_invoke();
            inv.key(&key).arg(&name);
            let mut conn = client.conn();
            if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                tracing::debug!(consumer = %name, error = %e, "could not mark a dropped consumer dead; its deadline passes by itself");
            }
        });
    }
}
