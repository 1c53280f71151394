//! Groups that compete on pub/sub: a lease per group, handed over at an
//! exact point of the message order.
//!
//! Pub/sub gives every subscriber every message, so the subscribers of one
//! group cannot share them the way a Streams consumer group does, and legacy
//! payloads carry no id they could be told apart by (each subscriber wraps
//! them with an id of its own). Instead one subscriber of a group at a time
//! holds the group's lease, `{P}:lease:<group>` (`SET NX PX`, renewed), and
//! handles the group's messages; the others stand by and take the lease over
//! when it expires (the holder died) or is released (it stopped).
//!
//! Which subscriber handles a message is decided by the message stream
//! itself, not by clocks: every acquisition and renewal publishes a marker
//! naming the holder on the group's control channel
//! `[prefix:]eventbus.lease.<group>`, atomically with the `SET` (one Lua
//! script), and every subscriber of the group listens on it on the same
//! connection as its event channels. Redis sends the messages of one server
//! to all its subscribers in one order, so each subscriber sees every event
//! after the same latest marker, and only the subscriber that marker names
//! handles it: no message is handled by two subscribers, whatever the
//! timing, and legacy payloads need no id. As a second guard a holder stops
//! handling when its own lease may have expired (it could not renew it for a
//! lease time), so a holder cut off from Redis never overlaps with the next.
//!
//! What it does not do: share the work (one instance of the group handles
//! at a time; a queue that must spread over instances belongs on Streams),
//! and make pub/sub durable. Messages a holder received and had not finished
//! when it died are lost, and so are those published between its death and
//! the takeover (at most the lease time plus the renew interval, 4 s by
//! default; a stopping holder releases the lease and a standby takes over
//! within a round trip). That is pub/sub's at-most-once; a bridge into
//! Streams (`eventbus`'s `BusBuilder::bridge`) has the same window and then
//! keeps what it appended. On Redis Cluster the order is one node's: the
//! guarantee holds for subscribers of one node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Script;
use std::sync::LazyLock;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Result;

/// The type (and, with the channel prefix, the channel) of a group's lease
/// markers: `eventbus.lease.<group>`.
pub(crate) const CONTROL_PREFIX: &str = "eventbus.lease.";

/// The control type of `group`.
pub(crate) fn control_type(group: &str) -> String {
    format!("{CONTROL_PREFIX}{group}")
}

/// Whether a delivery's type is a lease marker (of any group), never an event.
pub(crate) fn is_control(event_type: &str) -> bool {
    event_type.starts_with(CONTROL_PREFIX)
}

/// How long a pub/sub group's lease lasts and how often it is renewed (and
/// a standby tries to take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// The lease's time to live: a holder that died is replaced this long
    /// after its last renewal at most (plus `renew_every`). Default 3 s.
    pub ttl: Duration,
    /// How often the holder renews and a standby tries to acquire. Default 1 s;
    /// keep it well below `ttl`.
    pub renew_every: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
        }
    }
}

impl LeaseOptions {
    /// Options with this time to live, renewed three times per `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
        }
    }
}

/// Renews the lease if `ARGV[1]` holds it, takes it if no one does, and then
/// publishes the marker; returns 1, or 0 when another holds it.
///
/// KEYS[1] = the lease key; ARGV = holder, ttl ms, control channel, marker.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return 0
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#,
    )
});

/// Deletes the lease if `ARGV[1]` holds it and publishes the release marker.
///
/// KEYS[1] = the lease key; ARGV = holder, control channel, release marker.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#,
    )
});

/// A marker: a structured CloudEvent (so no reader wraps it) naming the
/// holder, empty when released.
fn marker(control: &str, me: &str, holder: &str) -> String {
    serde_json::json!({
        "specversion": "1.0",
        "type": control,
        "source": "/eventbus/lease",
        "id": me,
        "data": { "holder": holder },
    })
    .to_string()
}

/// The holder a marker names (`""` when released); `None` if it is not one.
/// A marker a reader wrapped as bare data (it never should: it is a
/// CloudEvent) is read through the wrapping.
pub(crate) fn holder_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Marker {
        data: serde_json::Value,
    }
    let data = serde_json::from_slice::<Marker>(payload).ok()?.data;
    let holder = match data.get("holder") {
        Some(h) => h,
        None => data.get("data")?.get("holder")?,
    };
    holder.as_str().map(str::to_owned)
}

/// One subscriber's part in its group's lease: tries to hold it, renews it
/// while held, releases it on [`Lease::release`]. The renew task stops when
/// the lease is dropped.
pub(crate) struct Lease {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    client: Client,
    group: String,
    me: String,
    key: String,
    channel: String,
    acquire_marker: String,
    release_marker: String,
    opts: LeaseOptions,
    /// Until when this subscriber may act as the holder: the start of its
    /// last successful renewal plus the lease time, less a margin for clock
    /// rates. `None` while another holds the lease.
    valid_until: std::sync::Mutex<Option<Instant>>,
    /// Wakes the renew task (a release marker was seen: try at once).
    wake: Notify,
    held: AtomicBool,
}

impl Lease {
    /// Joins the lease of `group` as `me`: tries to take it once (so a first
    /// subscriber holds it when this returns) and starts renewing.
    pub(crate) async fn join(
        client: Client,
        group: &str,
        me: String,
        opts: LeaseOptions,
    ) -> Result<Self> {
        let control = control_type(group);
        let state = Arc::new(State {
            key: client.keys().lease(group),
            channel: client.keys().channel(&control),
            acquire_marker: marker(&control, &me, &me),
            release_marker: marker(&control, &me, ""),
            client,
            group: group.to_owned(),
            me,
            opts,
            valid_until: std::sync::Mutex::new(None),
            wake: Notify::new(),
            held: AtomicBool::new(false),
        });
        state.try_acquire().await?;
        let task = tokio::spawn(renew_loop(state.clone()));
        Ok(Self { state, task })
    }

    /// This subscriber's name in the lease (what markers name).
    pub(crate) fn me(&self) -> &str {
        &self.state.me
    }

    /// Whether this subscriber may be the holder now (its lease cannot have
    /// expired). Whether it is, the markers say.
    pub(crate) fn may_hold(&self) -> bool {
        self.state
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// A release marker was seen: try to take the lease now.
    pub(crate) fn released(&self) {
        self.state.wake.notify_one();
    }

    /// Gives the lease up (if held), so a standby takes it over at once.
    pub(crate) async fn release(&self) -> Result<()> {
        self.task.abort();
        *self
            .state
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let s = &self.state;
        let mut inv = RELEASE.prepare_invoke();
        inv.key(&s.key)
            .arg(&s.me)
            .arg(&s.channel)
            .arg(&s.release_marker);
        let released: i64 = s.client.run_script("lease release script", &inv).await?;
        if released == 1 {
            tracing::info!(group = %s.group, holder = %s.me, "pub/sub group lease released");
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    async fn try_acquire(&self) -> Result<bool> {
        let started = Instant::now();
        let mut inv = ACQUIRE.prepare_invoke();
        inv.key(&self.key)
            .arg(&self.me)
            .arg(self.opts.ttl.as_millis() as u64)
            .arg(&self.channel)
            .arg(&self.acquire_marker);
        let got: i64 = self.client.run_script("lease script", &inv).await?;
        let held = got == 1;
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            held.then(|| started + self.opts.ttl - self.opts.ttl / 5);
        let was = self.held.swap(held, Ordering::Relaxed);
        if held && !was {
            tracing::info!(group = %self.group, holder = %self.me, "this instance holds the pub/sub group's lease and handles its events");
        } else if was && !held {
            tracing::warn!(group = %self.group, holder = %self.me, "lost the pub/sub group's lease (could not renew it in time); another instance handles its events");
        }
        Ok(held)
    }
}

async fn renew_loop(state: Arc<State>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.opts.renew_every) => {}
            _ = state.wake.notified() => {}
        }
        if let Err(e) = state.try_acquire().await {
            tracing::warn!(group = %state.group, "cannot renew or take the pub/sub group's lease: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_holder() {
        let m = marker("eventbus.lease.g", "me", "me");
        assert_eq!(holder_of(m.as_bytes()).as_deref(), Some("me"));
        assert!(
            crate::client::looks_structured(m.as_bytes()),
            "never wrapped"
        );
        let r = marker("eventbus.lease.g", "me", "");
        assert_eq!(holder_of(r.as_bytes()).as_deref(), Some(""));
        assert_eq!(holder_of(b"{\"id\":1}"), None);
        let wrapped =
            format!(r#"{{"specversion":"1.0","type":"t","source":"/s","id":"1","data":{m}}}"#);
        assert_eq!(holder_of(wrapped.as_bytes()).as_deref(), Some("me"));
        assert!(is_control(&control_type("sms_send_queue")));
        assert!(!is_control("send_short_message"));
    }
}
