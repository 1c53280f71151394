//! CloudEvents over HTTP for eventbus.
//!
//! - [`router`] / [`Http`]: an axum [`Router`](axum::Router) a service nests
//!   into its own app, serving
//!   - `POST /events`: ingest in the three content modes of the CloudEvents
//!     HTTP binding 1.0 (binary, structured, batch), checked by the bus's one
//!     validator, answered `202 Accepted` only once the transport accepted
//!     the event (durably, on a durable transport);
//!   - `GET /events`: a stateless pull feed, a page of events after a cursor
//!     as `application/cloudevents-batch+json`, with long polling (`wait=`)
//!     and compaction by subject (`compact=subject`);
//!   - `GET /events/stream`: the same feed as Server-Sent Events, resumed
//!     with `Last-Event-ID`;
//! - [`send`]: the egress client, for pushing a CloudEvent to someone else's
//!   endpoint in binary or structured mode, with the same header mapping;
//! - [`guard`]: the client for webhook sinks at untrusted URLs, which
//!   connects only to global (or allow-listed) addresses and never follows
//!   redirects;
//! - [`binding`]: that mapping itself (the binding's percent-encoding of
//!   header values, §3.1.3.2), usable on its own;
//! - [`signature`]: signed webhooks, Standard Webhooks (`webhook-signature`,
//!   HMAC-SHA256 or ed25519) and WebSub's `X-Hub-Signature`, with
//!   [`verify`] for Rust receivers.
//!
//! The crate depends on `eventbus-core` only: it reads and publishes through
//! the [`Transport`] seam and its [`Feed`].
//! Applications use it as `eventbus::http` (feature `http`), where
//! `eventbus::Bus` is a [`Source`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use eventbus_core::Transport;
use eventbus_core::feed::Feed;

pub mod binding;
mod feed;
pub mod guard;
mod ingest;
mod send;
pub mod signature;
pub mod webhooks;

pub use feed::{CURSOR_ATTRIBUTE, CURSOR_HEADER};
pub use send::{Mode, SendError, send, send_encoded, send_with};
pub use signature::verify;

/// What the router publishes to and reads from: an `eventbus::Bus`, or a
/// transport of its own.
pub trait Source {
    /// The transport events are published to (a bus's routing transport).
    fn transport(&self) -> Arc<dyn Transport>;

    /// The service's own endpoints to serve beside the CloudEvents ones
    /// (a bus's `/healthz`, `/readyz` and, with its feature, `/metrics`);
    /// none by default.
    fn extra_routes(&self) -> Option<axum::Router> {
        None
    }
}

impl Source for Arc<dyn Transport> {
    fn transport(&self) -> Arc<dyn Transport> {
        self.clone()
    }
}

/// The router with default settings: `Http::new(source).router()`.
pub fn router(source: &impl Source) -> axum::Router {
    Http::new(source).router()
}

/// Settings of the HTTP endpoints; [`Http::router`] builds the router.
#[derive(Clone)]
pub struct Http {
    transport: Arc<dyn Transport>,
    feed: Option<Arc<dyn Feed>>,
    max_body: usize,
    max_batch: usize,
    max_in_flight: usize,
    token: Option<Arc<str>>,
    /// The source's own routes ([`Source::extra_routes`]), merged as they are.
    extra: Option<axum::Router>,
    max_wait: Duration,
    max_limit: usize,
    keep_alive: Duration,
    hub: Option<webhooks::Hub>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("transport", &self.transport.name())
            .field("feed", &self.feed.is_some())
            .field("max_body", &self.max_body)
            .field("max_batch", &self.max_batch)
            .field("max_in_flight", &self.max_in_flight)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_wait", &self.max_wait)
            .field("max_limit", &self.max_limit)
            .field("keep_alive", &self.keep_alive)
            .field("webhooks", &self.hub.is_some())
            .finish()
    }
}

/// The default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Http {
    /// Endpoints publishing to (and reading the feed of) `source`'s transport.
    pub fn new(source: &impl Source) -> Self {
        Self {
            transport: source.transport(),
            feed: None,
            max_body: DEFAULT_MAX_BODY,
            max_batch: 1000,
            max_in_flight: 1024,
            token: None,
            extra: source.extra_routes(),
            max_wait: Duration::from_secs(60),
            max_limit: 1000,
            keep_alive: Duration::from_secs(15),
            hub: None,
        }
    }

    /// Serves the subscriptions API of `hub` (`/subscriptions`, WebSub's
    /// form protocol on the same `POST`); run the hub's deliveries with
    /// [`webhooks::Hub::run`].
    pub fn webhooks(mut self, hub: webhooks::Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Reads the pull feed from `feed` (an outbox's retained rows, say)
    /// instead of the transport's own log.
    pub fn feed(mut self, feed: impl Feed + 'static) -> Self {
        self.feed = Some(Arc::new(feed));
        self
    }

    /// The largest request body accepted (default 1 MiB); larger ones get
    /// `413 Payload Too Large`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The most events one batch request may carry (default 1000); more get
    /// `413 Payload Too Large`.
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// How many ingest requests may wait on the transport at once (default
    /// 1024); beyond that a request gets `429 Too Many Requests` with
    /// `Retry-After`, instead of queueing without bound.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }

    /// Requires `Authorization: Bearer <token>` on every endpoint; others
    /// get `401 Unauthorized`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        let token: String = token.into();
        self.token = Some(token.into());
        self
    }

    /// The longest `wait=` a pull request may ask for (default 60 s).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The largest page (`limit=`) of the pull feed (default 1000).
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max_limit = limit.max(1);
        self
    }

    /// How often an idle SSE stream sends a keep-alive comment (default 15 s).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// The router: `POST /events`, `GET /events`, `GET /events/stream`, and
    /// with [`Http::webhooks`] the subscriptions API (`501` without).
    pub fn router(self) -> axum::Router {
        let state = Arc::new(State {
            in_flight: Arc::new(tokio::sync::Semaphore::new(self.max_in_flight)),
            config: self,
        });
        let extra = state.config.extra.clone();
        let router = axum::Router::new()
            .route("/events", axum::routing::post(ingest::post).get(feed::page))
            .route("/events/stream", axum::routing::get(feed::stream))
            .merge(webhooks::routes())
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state);
        match extra {
            Some(extra) => router.merge(extra),
            None => router,
        }
    }
}

/// What the handlers share.
pub(crate) struct State {
    pub(crate) config: Http,
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
}

impl State {
    /// The feed the pull endpoints read: the configured one, else the
    /// transport's own.
    pub(crate) fn feed(&self) -> Option<&dyn Feed> {
        match &self.config.feed {
            Some(feed) => Some(&**feed),
            None => self.config.transport.feed(),
        }
    }

    /// Whether the request carries the bearer token (or none is required).
    pub(crate) fn authorized(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(token) = &self.config.token else {
            return true;
        };
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(given) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
