//! Webhooks: a hub on the memory bus serving the subscriptions API, and
//! three local receivers subscribing through it.
//!
//! ```text
//! cargo run --example webhooks
//! ```
//!
//! - `signed` answers the OPTIONS handshake and checks every delivery's
//!   Standard Webhooks signature with the secret the API returned.
//! - `flaky` answers 500 twice to each event, then 200: the hub retries on
//!   its (shortened) schedule, keeping the `webhook-id`.
//! - `gone` answers 410: the hub disables the subscription.
//!
//! It prints one line per step, reads the attempts back through
//! `GET /subscriptions/{id}/attempts`, and exits 0. `examples/tests/webhooks_example.rs`
//! runs [`run`] and checks its [`Report`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use eventbus::Bus;
use eventbus::http::guard::SinkPolicy;
use eventbus::http::signature::Secret;
use eventbus::http::webhooks::{Hub, HubOptions, MemoryStore};
use serde_json::{Value, json};

#[path = "reviews/events.rs"]
#[allow(dead_code)]
pub mod events;
use events::ReviewCreated;

/// How many events the demo publishes.
pub const EVENTS: usize = 3;

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step, as printed.
    pub lines: Vec<String>,
    /// Deliveries to `signed` whose signature verified.
    pub signed_verified: usize,
    /// Deliveries to `signed` whose signature did not.
    pub signed_rejected: usize,
    /// The outcomes of the attempts at `flaky` for its first event, in order
    /// (`retrying`, `retrying`, `delivered`).
    pub flaky_outcomes: Vec<String>,
    /// Events `flaky` finally took (a 200).
    pub flaky_delivered: usize,
    /// The state of the `gone` subscription at the end (`disabled`).
    pub gone_state: String,
    /// Why it was disabled.
    pub gone_reason: String,
    /// The outcome of its one attempt (`gone`).
    pub gone_outcome: String,
}

/// What a receiver does with a delivery.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// 200 when the signature verifies, 401 otherwise.
    Verify,
    /// 500 to the first two attempts of each event, then 200.
    FailTwice,
    /// 410.
    Gone,
}

/// One local receiver.
#[derive(Debug, Clone)]
struct Receiver {
    behaviour: Behaviour,
    /// The secret to verify with, once the API returned it.
    secret: Arc<Mutex<Option<Secret>>>,
    /// Deliveries per `webhook-id`.
    seen: Arc<Mutex<HashMap<String, u32>>>,
    verified: Arc<Mutex<(usize, usize)>>,
}

async fn receive(
    State(r): State<Receiver>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::OPTIONS {
        // The CloudEvents webhook handshake: any origin may deliver here.
        return (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response();
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut seen = r.seen.lock().unwrap();
        let n = seen.entry(id).or_default();
        *n += 1;
        *n
    };
    match r.behaviour {
        Behaviour::Verify => {
            let secret = r.secret.lock().unwrap().clone();
            let ok = secret.is_some_and(|s| eventbus::http::verify(&headers, &body, &s).is_ok());
            let mut counts = r.verified.lock().unwrap();
            if ok {
                counts.0 += 1;
                StatusCode::OK
            } else {
                counts.1 += 1;
                StatusCode::UNAUTHORIZED
            }
        }
        Behaviour::FailTwice if n <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailTwice => StatusCode::OK,
        Behaviour::Gone => StatusCode::GONE,
    }
    .into_response()
}

/// Serves `router` on a free loopback port; its base URL.
async fn serve(router: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}"))
}

async fn receiver(behaviour: Behaviour) -> anyhow::Result<(String, Receiver)> {
    let r = Receiver {
        behaviour,
        secret: Arc::default(),
        seen: Arc::default(),
        verified: Arc::default(),
    };
    let app = axum::Router::new().fallback(receive).with_state(r.clone());
    Ok((serve(app).await?, r))
}

/// The subscriptions API of the hub, over HTTP.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn subscribe(&self, sink: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .post(format!("{}/subscriptions", self.base))
            .json(&json!({ "sink": sink, "types": ["review_created"] }))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == StatusCode::CREATED,
            "POST /subscriptions answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(r.json().await?)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "GET {path} answered {}",
            r.status()
        );
        Ok(r.json().await?)
    }

    /// The subscription once `done` holds of it.
    async fn wait(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(path).await?;
            if done(&v) {
                return Ok(v);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs the demo: subscribe, verify, publish, retry, disable; what it saw.
pub async fn run() -> anyhow::Result<Report> {
    let mut report = Report::default();
    let bus = Bus::builder()
        .service("reviews")
        .without_registered()
        .event::<ReviewCreated>()
        .connect("memory://")
        .await?;
    // The receivers are on loopback, which the SSRF guard refuses unless
    // allow-listed (EVENTBUS_WEBHOOK_ALLOW=127.0.0.0/8 does the same).
    let policy = SinkPolicy::new()
        .allow("127.0.0.0/8")?
        .timeout(Duration::from_secs(2));
    let options = HubOptions {
        // Seconds, not the Standard Webhooks' hours.
        schedule: vec![Duration::from_millis(200), Duration::from_millis(400)],
        jitter: 0.0,
        refresh: Duration::from_millis(100),
        ..HubOptions::default()
    };
    let hub = Hub::new(&bus, MemoryStore::new(), policy, options)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let delivering = tokio::spawn({
        let hub = hub.clone();
        let stop = stop.clone();
        async move { hub.run(stop).await }
    });
    let base = serve(eventbus::http::Http::new(&bus).webhooks(hub).router()).await?;
    report.say(format!(
        "hub: the subscriptions API on {base}/subscriptions"
    ));
    let api = Api {
        base,
        client: reqwest::Client::new(),
    };

    let (signed_url, signed) = receiver(Behaviour::Verify).await?;
    let (flaky_url, flaky) = receiver(Behaviour::FailTwice).await?;
    let (gone_url, _gone) = receiver(Behaviour::Gone).await?;
    let mut ids = HashMap::new();
    for (name, url) in [
        ("signed", &signed_url),
        ("flaky", &flaky_url),
        ("gone", &gone_url),
    ] {
        let sub = api.subscribe(url).await?;
        let id = sub["id"]
            .as_str()
            .context("the subscription has no id")?
            .to_owned();
        if name == "signed" {
            let secret: Secret = sub["secret"]
                .as_str()
                .context("no secret returned at creation")?
                .parse()?;
            *signed.secret.lock().unwrap() = Some(secret);
        }
        let active = api
            .wait(
                &format!("/subscriptions/{id}"),
                "the OPTIONS handshake",
                |s| s["status"]["state"] != "pending",
            )
            .await?;
        anyhow::ensure!(
            active["status"]["state"] == "active",
            "{name} was not verified: {}",
            active["status"]
        );
        report.say(format!(
            "subscription {id} to {name} ({url}): verified by the OPTIONS handshake, active"
        ));
        ids.insert(name, id);
    }

    for _ in 0..EVENTS {
        bus.publish(ReviewCreated {
            id: uuid::Uuid::now_v7(),
        })
        .await?;
    }
    report.say(format!("published {EVENTS} review_created events"));

    let attempts = |name: &str| format!("/subscriptions/{}/attempts", ids[name]);
    // signed: every delivery carries a signature the receiver verified.
    api.wait(&attempts("signed"), "the signed deliveries", |a| {
        count(a, "delivered") == EVENTS
    })
    .await?;
    (report.signed_verified, report.signed_rejected) = *signed.verified.lock().unwrap();
    report.say(format!(
        "signed: {} deliveries signed and verified with eventbus::http::verify ({} rejected)",
        report.signed_verified, report.signed_rejected
    ));

    // flaky: two failures then a success per event, on the short schedule.
    let list = api
        .wait(&attempts("flaky"), "the retried deliveries", |a| {
            count(a, "delivered") == EVENTS
        })
        .await?;
    let mut list: Vec<&Value> = list.as_array().into_iter().flatten().collect();
    list.sort_by_key(|a| (a["at_ms"].as_u64(), a["attempt"].as_u64()));
    let first = list
        .first()
        .and_then(|a| a["event_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let of_first: Vec<&&Value> = list
        .iter()
        .filter(|a| a["event_id"] == first.as_str())
        .collect();
    report.flaky_outcomes = of_first
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    report.flaky_delivered = flaky
        .seen
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 2)
        .count();
    let steps: Vec<String> = of_first
        .iter()
        .map(|a| {
            format!(
                "#{} {} {}",
                a["attempt"],
                a["status"],
                a["outcome"].as_str().unwrap_or_default()
            )
        })
        .collect();
    report.say(format!(
        "flaky: event {first} failed and was retried: {}; {} of {EVENTS} events delivered in the end",
        steps.join(", "),
        report.flaky_delivered
    ));

    // gone: the first 410 disables the subscription.
    let sub = api
        .wait(
            &format!("/subscriptions/{}", ids["gone"]),
            "the 410 to disable it",
            |s| s["status"]["state"] == "disabled",
        )
        .await?;
    report.gone_state = sub["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    report.gone_reason = sub["status"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let list = api.get(&attempts("gone")).await?;
    report.gone_outcome = list
        .as_array()
        .and_then(|l| l.last())
        .and_then(|a| a["outcome"].as_str())
        .unwrap_or_default()
        .to_owned();
    report.say(format!(
        "gone: subscription {} disabled ({}); its attempt: {}",
        ids["gone"], report.gone_reason, report.gone_outcome
    ));

    stop.cancel();
    delivering.await??;
    Ok(report)
}

impl Report {
    /// Prints `line` and keeps it.
    fn say(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }
}

/// How many attempts in the list `a` had `outcome`.
fn count(a: &Value, outcome: &str) -> usize {
    a.as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["outcome"] == outcome)
        .count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    run().await?;
    Ok(())
}
