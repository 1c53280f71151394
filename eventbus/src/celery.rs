//! Celery task queues (feature `redis`): event types declared
//! `#[event("send_email_task", celery, queue = "emails")]` travel as Celery
//! task messages in kombu's Redis queues, so that Django code's
//! `send_task` reaches a Rust `#[handler]` and a Rust `publish` (or an
//! outbox insert) reaches a Python Celery worker.
//!
//! On a bus whose `EVENTBUS_URL` is Redis, every Celery task of the
//! registry is routed to an [`eventbus_redis::celery::CeleryTransport`] on
//! that server (`EVENTBUS_CELERY_URL` or [`BusBuilder::celery`](crate::BusBuilder::celery)
//! name another broker). On `memory://` they stay in the process, as any
//! event. See the transport for the semantics (acknowledgement, restore,
//! `eta`, `expires`, results).
//!
//! ```no_run
//! # async fn demo() -> eventbus::Result<()> {
//! use eventbus::Event;
//! use serde::{Deserialize, Serialize};
//!
//! /// Sends the SMS of a message row (Django's `send_short_message` task).
//! #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
//! #[event("send_short_message", celery, queue = "sms_send_queue")]
//! pub struct SendShortMessage(pub i64);
//!
//! #[eventbus::handler]
//! async fn send_short_message(task: SendShortMessage) -> eventbus::Result<()> {
//!     println!("sending SMS {}", task.0);
//!     Ok(())
//! }
//!
//! let bus = eventbus::Bus::builder().connect("redis://127.0.0.1:6379/0").await?;
//! bus.publish(SendShortMessage(42)).await?; // app.send_task("send_short_message", args=(42,), queue="sms_send_queue")
//! # Ok(()) }
//! ```

use std::time::Duration;

pub use eventbus_redis::celery::{CeleryOptions, CeleryTransport, Shape, TaskSpec};

use crate::error::{Error, Result};

/// The environment variable naming the Celery broker when it is not `EVENTBUS_URL`.
pub const URL_ENV: &str = "EVENTBUS_CELERY_URL";
/// The environment variable with the visibility timeout, in seconds, of
/// the Python workers (`broker_transport_options={"visibility_timeout": ...}`).
pub const VISIBILITY_ENV: &str = "EVENTBUS_CELERY_VISIBILITY_TIMEOUT";

/// The Celery tasks among `events`: each type and its aliases, on its queue.
pub(crate) fn tasks<'a>(events: impl Iterator<Item = &'a crate::EventInfo>) -> Vec<TaskSpec> {
    let mut out = Vec::new();
    for info in events {
        let Some(task) = info.task else { continue };
        let schema = (info.schema)();
        for name in std::iter::once(info.type_name).chain(info.aliases.iter().copied()) {
            out.push(TaskSpec::new(name, task.queue, &schema).with_result(task.store_result));
        }
    }
    out
}

/// Whether `url` names a Redis server Celery can use as its broker.
pub(crate) fn is_broker(url: &str) -> bool {
    matches!(
        url.split_once("://").map(|(s, _)| s),
        Some("redis" | "rediss")
    )
}

/// The options from the environment over `base`.
pub(crate) fn options_from_env(mut base: CeleryOptions) -> Result<CeleryOptions> {
    if let Ok(v) = std::env::var(VISIBILITY_ENV) {
        let v = v.trim();
        if !v.is_empty() {
            let secs: f64 = v.parse().ok().filter(|s: &f64| *s >= 1.0).ok_or_else(|| {
                Error::Config(format!(
                    "{VISIBILITY_ENV}={v:?} is not a number of seconds of at least 1 (kombu's visibility_timeout, e.g. 3600)"
                ))
            })?;
            base.visibility_timeout = Duration::from_secs_f64(secs);
        }
    }
    Ok(base)
}
