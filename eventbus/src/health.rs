//! `/healthz`, `/readyz` and (feature `prometheus`) `/metrics`, as an axum
//! router to merge into a service's own (or `eventbus::http::router`'s),
//! or served on a listener of their own by [`serve`].
//!
//! - `GET /healthz`: 200 while the bus has not stopped (the process is alive
//!   and runs it), 503 once its run ended.
//! - `GET /readyz`: 200 when the transport answers a ping, every handler's
//!   subscription is live ([`Bus::is_ready`]) and no outbox relay of the bus
//!   is stuck (failing for longer than [`Health::relay_stuck_after`]);
//!   otherwise 503. Both bodies are JSON naming each check:
//!   `{"ready":false,"checks":{"transport":"ok","subscriptions":"starting","outbox":"ok"}}`.
//! - `GET /metrics`: the Prometheus text of the recorder installed by
//!   [`crate::metrics::prometheus::install`] (503 before one is).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::Bus;

/// The health endpoints of a bus, with their settings.
#[derive(Debug, Clone)]
pub struct Health {
    bus: Bus,
    ping_timeout: Duration,
    relay_stuck_after: Duration,
}

impl Health {
    /// Health of `bus`: a ping may take 2 s, a relay is stuck after 60 s of failures.
    pub fn new(bus: &Bus) -> Self {
        Self {
            bus: bus.clone(),
            ping_timeout: Duration::from_secs(2),
            relay_stuck_after: Duration::from_secs(60),
        }
    }

    /// How long `/readyz` waits for the transport's ping.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// How long an outbox relay may fail every round before `/readyz` says
    /// it is stuck.
    pub fn relay_stuck_after(mut self, after: Duration) -> Self {
        self.relay_stuck_after = after;
        self
    }

    /// The router: `/healthz`, `/readyz`, and with feature `prometheus`, `/metrics`.
    pub fn router(self) -> axum::Router {
        let router = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz));
        #[cfg(feature = "prometheus")]
        let router = router.route("/metrics", get(metrics));
        router.with_state(self)
    }

    /// The readiness checks: `(ready, {check: "ok" | why not})`.
    pub async fn check(&self) -> (bool, Map<String, Value>) {
        let mut checks = Map::new();
        let transport = self.bus.transport();
        let ping = match tokio::time::timeout(self.ping_timeout, transport.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "the {} transport did not answer within {:?}",
                transport.name(),
                self.ping_timeout
            ),
        };
        checks.insert("transport".into(), ping.into());
        let subscriptions = if self.bus.is_ready() {
            "ok"
        } else if self.bus.is_stopped() {
            "stopped"
        } else {
            "starting"
        };
        checks.insert("subscriptions".into(), subscriptions.into());
        let outbox = crate::metrics::relays_stuck(&self.bus, self.relay_stuck_after)
            .unwrap_or_else(|| "ok".to_owned());
        checks.insert("outbox".into(), outbox.into());
        let ready = checks.values().all(|v| v == "ok");
        (ready, checks)
    }
}

/// [`Health::router`] with the default settings.
pub fn router(bus: &Bus) -> axum::Router {
    Health::new(bus).router()
}

/// Serves [`router`] on `listener` until the bus is shut down, for services
/// without an HTTP server of their own.
pub async fn serve(bus: Bus, listener: tokio::net::TcpListener) -> crate::Result<()> {
    let stop = bus.clone();
    axum::serve(listener, router(&bus))
        .with_graceful_shutdown(async move { stop.shutdown_signal().await })
        .await
        .map_err(|e| crate::Error::Config(format!("the health listener failed: {e}")))
}

async fn healthz(State(health): State<Health>) -> Response {
    if health.bus.is_stopped() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"alive": false})),
        )
            .into_response()
    } else {
        Json(json!({"alive": true})).into_response()
    }
}

async fn readyz(State(health): State<Health>) -> Response {
    let (ready, checks) = health.check().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": checks}))).into_response()
}

#[cfg(feature = "prometheus")]
async fn metrics(State(_): State<Health>) -> Response {
    match crate::metrics::prometheus::handle() {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no Prometheus recorder: call eventbus::metrics::prometheus::install() first\n",
        )
            .into_response(),
    }
}
