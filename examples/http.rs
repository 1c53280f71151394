//! CloudEvents over HTTP: the reviews service's bus behind `POST /events`
//! (ingest, the three content modes of the HTTP binding), `GET /events`
//! (a stateless pull feed) and `GET /events/stream` (Server-Sent Events),
//! and the webhook subscriptions API (`/subscriptions`) with its hub.
//!
//! ```text
//! cargo run --example http                                     # memory transport, 127.0.0.1:8080
//! EVENTBUS_WEBHOOK_ALLOW=127.0.0.0/8 cargo run --example http   # webhooks to local receivers too
//! EVENTBUS_URL=redis://127.0.0.1:6379 EVENTBUS_HTTP_ADDR=0.0.0.0:9000 \
//!     cargo run --example http --features redis                # Redis Streams behind
//! ```
//!
//! It serves until SIGINT/SIGTERM; a handler prints every `review_created`
//! it gets, whichever way it came in. The README's "HTTP" section has the
//! curl lines; `examples/tests/http_example.rs` runs [`serve`] and makes
//! the same requests.

use std::net::SocketAddr;

use eventbus::http::guard::SinkPolicy;
use eventbus::http::webhooks::{Hub, HubOptions, MemoryStore};
use eventbus::{Bus, Context, handler};

#[path = "reviews/events.rs"]
#[allow(dead_code)]
pub mod events;
use events::ReviewCreated;

/// Prints each review created (published here, posted to `/events`, or
/// from another service on the same transport).
#[handler]
async fn print_review_created(event: ReviewCreated, ctx: Context) -> anyhow::Result<()> {
    println!(
        "handled review_created {} from {} (id {})",
        event.id,
        ctx.source(),
        ctx.id()
    );
    Ok(())
}

/// The address to listen on: `EVENTBUS_HTTP_ADDR`, default `127.0.0.1:8080`.
pub fn addr_from_env() -> anyhow::Result<SocketAddr> {
    let text = std::env::var("EVENTBUS_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "EVENTBUS_HTTP_ADDR=`{text}` is not an address to listen on; write `host:port`, like `127.0.0.1:8080`"
        )
    })
}

/// Runs the bus's handlers and the webhook hub (delivering only where
/// `sinks` allows), and serves the HTTP endpoints and the subscriptions API
/// on `listener` until `shutdown` completes; then stops taking requests,
/// stops the hub and drains the handlers.
///
/// The subscriptions live in memory: they go with the process.
pub async fn serve(
    bus: Bus,
    listener: tokio::net::TcpListener,
    sinks: SinkPolicy,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut running = bus.spawn();
    running.ready().await?;
    let hub = Hub::new(&bus, MemoryStore::new(), sinks, HubOptions::default())?;
    let stop = tokio_util::sync::CancellationToken::new();
    let delivering = tokio::spawn({
        let hub = hub.clone();
        let stop = stop.clone();
        async move { hub.run(stop).await }
    });
    let app = axum::Router::new().merge(eventbus::http::Http::new(&bus).webhooks(hub).router());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    stop.cancel();
    delivering.await??;
    running.shutdown().await?;
    served?;
    Ok(())
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = addr_from_env()?;
    let bus = Bus::builder().service("reviews").connect_env().await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; set EVENTBUS_HTTP_ADDR to a free address")
    })?;
    // Sinks must be global addresses, or in EVENTBUS_WEBHOOK_ALLOW's ranges.
    let sinks = SinkPolicy::from_env()?;
    println!(
        "eventbus http example: {} transport, listening on http://{addr} (POST /events, GET /events, GET /events/stream, /subscriptions); Ctrl-C stops it",
        bus.transport().name()
    );
    serve(bus, listener, sinks, stop_signal()).await
}
