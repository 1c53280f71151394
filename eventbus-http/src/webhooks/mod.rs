//! Webhook subscriptions and fan-out delivery: a WebSub hub and the
//! CloudEvents Subscriptions API on the bus.
//!
//! - [`Hub`]: one durable queue (a consumer group of the bus) per
//!   subscription, so a slow or dead sink delays only its own deliveries;
//!   signed requests (Standard Webhooks `webhook-id` / `webhook-timestamp` /
//!   `webhook-signature`, WebSub's `X-Hub-Signature` when the subscriber gave
//!   `hub.secret`); the Standard Webhooks retry schedule with jitter,
//!   durable on a durable transport; `410 Gone` disables the subscription,
//!   `429` is retried after its `Retry-After`; every attempt is recorded.
//! - The subscriptions API, served by [`crate::Http::webhooks`]:
//!   `POST/GET /subscriptions`, `GET/PUT/DELETE /subscriptions/{id}`,
//!   `GET /subscriptions/{id}/attempts`, and WebSub's form protocol
//!   (`hub.mode=subscribe|unsubscribe`) on `POST /subscriptions`.
//! - Verification of intent before the first delivery: WebSub's
//!   `hub.challenge` echo, or the CloudEvents webhook `OPTIONS` handshake.
//! - [`Filter`]: the Subscriptions API's filter dialects.

mod api;
mod filter;
mod hub;
mod model;
mod sign;
mod store;
mod verify;

pub use filter::{Filter, attribute};
pub use hub::{DISABLED_EVENT, Hub, HubOptions, RESPONSE_KEPT, STANDARD_SCHEDULE};
pub use model::{
    Attempt, ContentMode, Method, Outcome, SigningSecret, Status, Subscription, WebSub,
};
pub use store::{ATTEMPTS_KEPT, MemoryStore, SubscriptionStore};

pub(crate) use api::routes;

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds as RFC 3339.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    eventbus_core::codec::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}
