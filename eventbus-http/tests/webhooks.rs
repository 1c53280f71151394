//! The webhook hub end to end: real axum receivers on loopback, real
//! reqwest, the memory bus: a fast, a failing-then-recovering, a 410, a 429,
//! a slow (past the timeout) and a refusing sink at once; WebSub's form
//! protocol with its challenge and `X-Hub-Signature`; filters; attempts;
//! recovery of dead-lettered deliveries; secret rotation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventbus::{Bus, Event};
use eventbus_http::webhooks::{Hub, HubOptions, MemoryStore};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = "reviews")]
struct ReviewCreated {
    #[event(subject)]
    id: String,
    n: u32,
}

/// What a receiver got: method, headers, body.
type Got = Arc<Mutex<Vec<(Method, HeaderMap, Bytes)>>>;

#[derive(Clone)]
struct Sink {
    got: Got,
    /// The answer to the n-th POST (0-based); the last one repeats.
    answers: Arc<Vec<(u16, Option<&'static str>)>>,
    delay: Duration,
    handshake: bool,
    /// `WebHook-Allowed-Rate` of the handshake.
    rate: Option<&'static str>,
}

async fn receive(
    State(sink): State<Sink>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST && method != Method::PUT {
        sink.got
            .lock()
            .push((method.clone(), headers.clone(), body.clone()));
    }
    if method == Method::OPTIONS {
        return if sink.handshake {
            let mut r = (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response();
            if let Some(rate) = sink.rate {
                r.headers_mut()
                    .insert("webhook-allowed-rate", rate.parse().unwrap());
            }
            r
        } else {
            StatusCode::FORBIDDEN.into_response()
        };
    }
    if method == Method::GET {
        // WebSub's verification: echo the challenge.
        return q
            .get("hub.challenge")
            .cloned()
            .unwrap_or_default()
            .into_response();
    }
    let n = {
        let mut got = sink.got.lock();
        let n = got
            .iter()
            .filter(|(m, _, _)| *m == Method::POST || *m == Method::PUT)
            .count();
        got.push((method, headers, body));
        n
    };
    tokio::time::sleep(sink.delay).await;
    let (status, retry_after) = sink.answers[n.min(sink.answers.len() - 1)];
    let mut r = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

async fn sink(
    answers: Vec<(u16, Option<&'static str>)>,
    delay: Duration,
    handshake: bool,
) -> (String, Got) {
    sink_with_rate(answers, delay, handshake, None).await
}

async fn sink_with_rate(
    answers: Vec<(u16, Option<&'static str>)>,
    delay: Duration,
    handshake: bool,
    rate: Option<&'static str>,
) -> (String, Got) {
    let got: Got = Arc::default();
    let state = Sink {
        got: got.clone(),
        answers: Arc::new(answers),
        delay,
        handshake,
        rate,
    };
    let app = axum::Router::new().fallback(receive).with_state(state);
    (serve(app).await, got)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Service {
    base: String,
    bus: Bus,
    client: reqwest::Client,
}

impl Service {
    async fn start() -> (Self, tokio_util::sync::CancellationToken) {
        Self::start_on("memory://").await
    }

    async fn start_on(url: &str) -> (Self, tokio_util::sync::CancellationToken) {
        let bus = Bus::builder()
            .service("hub-test")
            .without_registered()
            .event::<ReviewCreated>()
            .connect(url)
            .await
            .unwrap();
        // Loopback receivers: allow-listed (the guard refuses them otherwise).
        let policy = eventbus_http::guard::SinkPolicy::new()
            .allow("127.0.0.0/8")
            .unwrap()
            .timeout(Duration::from_millis(700));
        let options = HubOptions {
            schedule: vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(300),
            ],
            jitter: 0.0,
            refresh: Duration::from_millis(100),
            ..HubOptions::default()
        };
        let hub = Hub::new(&bus, MemoryStore::new(), policy, options).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let hub = hub.clone();
            let stop = stop.clone();
            async move { hub.run(stop).await }
        });
        let base = serve(eventbus_http::Http::new(&bus).webhooks(hub).router()).await;
        (
            Self {
                base,
                bus,
                client: reqwest::Client::new(),
            },
            stop,
        )
    }

    async fn subscribe(&self, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}/subscriptions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.get(&format!("/subscriptions/{id}")).await;
            if s["status"]["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "subscription {id} never became {state}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn posts(got: &Got) -> Vec<(HeaderMap, Value)> {
    got.lock()
        .iter()
        .filter(|(m, _, _)| *m == Method::POST)
        .map(|(_, h, b)| (h.clone(), serde_json::from_slice(b).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_gets_its_deliveries_whatever_the_others_do() {
    let (svc, _stop) = Service::start().await;
    let (fast, fast_got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let (flaky, flaky_got) = sink(
        vec![(500, None), (503, None), (200, None)],
        Duration::ZERO,
        true,
    )
    .await;
    let (gone, gone_got) = sink(vec![(410, None)], Duration::ZERO, true).await;
    let (limited, limited_got) =
        sink(vec![(429, Some("1")), (200, None)], Duration::ZERO, true).await;
    let (slow, slow_got) = sink(vec![(200, None)], Duration::from_secs(2), true).await;
    let (refusing, refusing_got) = sink(vec![(200, None)], Duration::ZERO, false).await;

    let mut subs = HashMap::new();
    for (name, url) in [
        ("fast", &fast),
        ("flaky", &flaky),
        ("gone", &gone),
        ("limited", &limited),
        ("slow", &slow),
        ("refusing", &refusing),
    ] {
        let s = svc
            .subscribe(json!({"sink": url, "types": ["review_created"]}))
            .await;
        assert!(s["secret"].as_str().unwrap().starts_with("whsec_"), "{s}");
        assert_eq!(s["status"]["state"], "pending");
        subs.insert(name, s);
    }
    for name in ["fast", "flaky", "gone", "limited", "slow"] {
        svc.wait_state(subs[name]["id"].as_str().unwrap(), "active")
            .await;
    }
    let refused = svc
        .wait_state(subs["refusing"]["id"].as_str().unwrap(), "refused")
        .await;
    assert!(
        refused["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("403"),
        "{refused}"
    );

    let published = Instant::now();
    for n in 0..3 {
        svc.bus
            .publish(ReviewCreated {
                id: format!("r-{n}"),
                n,
            })
            .await
            .unwrap();
    }

    // The fast sink gets everything, signed, while the others retry.
    eventually("the fast sink's 3 deliveries", || {
        posts(&fast_got).len() == 3
    })
    .await;
    let fast_took = published.elapsed();
    let secret: eventbus_http::signature::Secret =
        subs["fast"]["secret"].as_str().unwrap().parse().unwrap();
    for (headers, event) in posts(&fast_got) {
        assert_eq!(headers["webhook-id"], event["id"].as_str().unwrap());
        assert_eq!(headers["content-type"], "application/cloudevents+json");
        let body = serde_json::to_vec(&event).unwrap();
        let raw = fast_got
            .lock()
            .iter()
            .find(|(m, h, _)| *m == Method::POST && h["webhook-id"] == headers["webhook-id"])
            .unwrap()
            .2
            .clone();
        eventbus_http::verify(&headers, &raw, &secret)
            .expect("a valid Standard Webhooks signature");
        let _ = body;
    }
    assert_eq!(
        posts(&fast_got)
            .iter()
            .map(|(_, e)| e["data"]["n"].as_u64().unwrap())
            .collect::<Vec<_>>()
            .len(),
        3
    );

    // The flaky sink: two failures then success for the first event; the
    // retries keep the webhook-id.
    eventually("the flaky sink's deliveries", || {
        posts(&flaky_got)
            .iter()
            .map(|(h, _)| h["webhook-id"].clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 3
            && flaky_got.lock().len() >= 5
    })
    .await;
    let flaky_id = subs["flaky"]["id"].as_str().unwrap();
    let attempts = svc
        .get(&format!("/subscriptions/{flaky_id}/attempts"))
        .await;
    let outcomes: Vec<&str> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"retrying") && outcomes.contains(&"delivered"),
        "{attempts}"
    );
    // Every attempt of one event carries its webhook-id and the same body.
    let mut by_id: HashMap<String, Vec<Bytes>> = HashMap::new();
    for (m, h, b) in flaky_got.lock().iter() {
        if *m == Method::POST {
            by_id
                .entry(h["webhook-id"].to_str().unwrap().to_owned())
                .or_default()
                .push(b.clone());
        }
    }
    assert_eq!(by_id.len(), 3);
    assert!(
        by_id.values().any(|v| v.len() >= 2),
        "some event was retried: {by_id:?}"
    );
    for bodies in by_id.values() {
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "a retry sends the same body"
        );
    }

    // 410: disabled at once, the operational event published on the bus.
    let gone_id = subs["gone"]["id"].as_str().unwrap();
    let disabled = svc.wait_state(gone_id, "disabled").await;
    assert!(
        disabled["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{disabled}"
    );
    let feed = svc.get("/events?types=eventbus.webhook.disabled").await;
    assert_eq!(feed.as_array().unwrap().len(), 1, "{feed}");
    assert_eq!(feed[0]["data"]["subscription"], gone_id);
    // Those in flight when the 410 came (up to the concurrency), then nothing.
    let sent = posts(&gone_got).len();
    assert!((1..=4).contains(&sent), "{sent}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posts(&gone_got).len(), sent, "nothing more after the 410");

    // 429 with Retry-After: 1 — tried again after a second, then delivered.
    let limited_id = subs["limited"]["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while posts(&limited_got).len() < 4 {
        let attempts = svc
            .get(&format!("/subscriptions/{limited_id}/attempts?limit=1000"))
            .await;
        assert!(
            Instant::now() < deadline,
            "the limited sink got {} requests: {attempts}",
            posts(&limited_got).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let retried = loop {
        let attempts = svc
            .get(&format!("/subscriptions/{limited_id}/attempts?limit=1000"))
            .await;
        let delivered = attempts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "delivered")
            .count();
        if delivered == 3 {
            break attempts
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["status"] == 429)
                .cloned()
                .expect("the 429 attempt");
        }
        assert!(Instant::now() < deadline, "{attempts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let next = retried["next_ms"].as_u64().unwrap() - retried["at_ms"].as_u64().unwrap();
    assert!(next >= 1000, "Retry-After honoured: {retried}");

    // The slow sink times out every time: after the schedule, dead-lettered.
    let slow_id = subs["slow"]["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempts = svc
            .get(&format!("/subscriptions/{slow_id}/attempts?limit=1000"))
            .await;
        let dead = attempts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "dead_lettered")
            .count();
        if dead == 3 {
            let a = &attempts[0];
            assert!(
                a["response"]
                    .as_str()
                    .unwrap()
                    .contains("did not answer in time"),
                "{a}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow sink's deliveries were never dead-lettered: {attempts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fast_took < Duration::from_secs(2),
        "the fast sink waited for the slow one ({fast_took:?})"
    );
    assert_eq!(posts(&slow_got).len(), 3 * 4, "4 attempts of each event");

    // Recover re-sends the dead-lettered deliveries.
    let r = svc
        .client
        .post(format!("{}/subscriptions/{slow_id}/recover", svc.base))
        .json(&json!({"since": "2026-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["replayed"], 3, "{replayed}");
    eventually("the recovered deliveries", || posts(&slow_got).len() > 12).await;

    assert!(
        refusing_got
            .lock()
            .iter()
            .all(|(m, _, _)| *m == Method::OPTIONS),
        "no delivery to a sink that refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websub_subscribe_verify_sign_and_unsubscribe() {
    let (svc, _stop) = Service::start().await;
    let (callback, got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let form = format!(
        "hub.mode=subscribe&hub.topic=review_created&hub.callback={}&hub.secret=s3cret&hub.lease_seconds=3600",
        percent_encoding::utf8_percent_encode(&callback, percent_encoding::NON_ALPHANUMERIC)
    );
    let r = svc
        .client
        .post(format!("{}/subscriptions", svc.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let list = svc.get("/subscriptions").await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    svc.wait_state(&id, "active").await;
    let challenge = got
        .lock()
        .iter()
        .find(|(m, _, _)| *m == Method::GET)
        .is_some();
    assert!(challenge, "verified with a GET challenge");

    svc.bus
        .publish(ReviewCreated {
            id: "r-1".into(),
            n: 1,
        })
        .await
        .unwrap();
    eventually("the WebSub delivery", || posts(&got).len() == 1).await;
    let (headers, body) = {
        let g = got.lock();
        let (_, h, b) = g.iter().find(|(m, _, _)| *m == Method::POST).unwrap();
        (h.clone(), b.clone())
    };
    eventbus_http::signature::verify_hub_signature(&headers, &body, "s3cret")
        .expect("X-Hub-Signature");

    // Renewing keeps one subscription.
    let r = svc
        .client
        .post(format!("{}/subscriptions", svc.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.replace("hub.mode=subscribe", "hub.mode=unsubscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.get("/subscriptions").await.as_array().unwrap().len() == 1 {
        assert!(Instant::now() < deadline, "never unsubscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_rotation_and_bad_requests() {
    let (svc, _stop) = Service::start().await;
    let (url, got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let s = svc
        .subscribe(json!({
            "sink": url,
            "filters": [{"all": [{"prefix": {"type": "review"}}, {"not": {"exact": {"subject": "skip"}}}]}],
            "protocolsettings": {"method": "PUT", "headers": {"x-tenant": "acme"}},
            "config": {"mode": "binary", "signature": "ed25519"},
            "sinkcredential": {"accesstoken": "tok"}
        }))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert!(
        s.get("sinkcredential").is_none() && !s.to_string().contains("tok"),
        "write-only: {s}"
    );
    svc.wait_state(&id, "active").await;
    for subject in ["a", "skip", "b"] {
        svc.bus
            .publish(ReviewCreated {
                id: subject.into(),
                n: 0,
            })
            .await
            .unwrap();
    }
    eventually("two filtered deliveries", || {
        got.lock()
            .iter()
            .filter(|(m, _, _)| *m == Method::PUT)
            .count()
            == 2
    })
    .await;
    {
        let g = got.lock();
        let puts: Vec<_> = g.iter().filter(|(m, _, _)| *m == Method::PUT).collect();
        for (_, h, _) in &puts {
            assert_eq!(h["ce-type"], "review_created");
            assert_eq!(h["x-tenant"], "acme");
            assert_eq!(h["authorization"], "Bearer tok");
        }
        let subjects: Vec<_> = puts
            .iter()
            .map(|(_, h, _)| h["ce-subject"].to_str().unwrap().to_owned())
            .collect();
        let mut subjects = subjects;
        // Up to 4 in flight at once: the order of arrival is not the publish order.
        subjects.sort();
        assert_eq!(subjects, ["a", "b"]);
    }

    // Rotation: the next delivery carries both signatures.
    let old: eventbus_http::signature::Secret = s["secret"].as_str().unwrap().parse().unwrap();
    let r = svc
        .client
        .post(format!("{}/subscriptions/{id}/rotate", svc.base))
        .json(&json!({"grace": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new: eventbus_http::signature::Secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    svc.bus
        .publish(ReviewCreated {
            id: "c".into(),
            n: 0,
        })
        .await
        .unwrap();
    eventually("the delivery after rotation", || {
        got.lock()
            .iter()
            .filter(|(m, _, _)| *m == Method::PUT)
            .count()
            == 3
    })
    .await;
    let (h, b) = {
        let g = got.lock();
        let (_, h, b) = g.iter().rfind(|(m, _, _)| *m == Method::PUT).unwrap();
        (h.clone(), b.clone())
    };
    eventbus_http::verify(&h, &b, &new).expect("signed with the new secret");
    let public: eventbus_http::signature::PublicKey =
        s["config"]["public_key"].as_str().unwrap().parse().unwrap();
    eventbus_http::signature::verify_ed25519(&h, &b, &public)
        .expect("and with the ed25519 key (v1a)");
    eventbus_http::verify(&h, &b, &old).expect("and with the old one during the grace period");

    for (body, needle) in [
        (json!({"sink": "ftp://x/"}), "http:// or https://"),
        (json!({"sink": "http://u:p@x/"}), "credentials"),
        (
            json!({"sink": "http://x/", "filters": [{"exact": {}}]}),
            "names no attribute",
        ),
        (
            json!({"sink": "http://x/", "filters": [{"sql": "x"}]}),
            "not valid JSON",
        ),
        (json!({"sink": "http://x/", "protocol": "MQTT"}), "MQTT"),
        (
            json!({"sink": "http://x/", "config": {"secret": "nope"}}),
            "config.secret",
        ),
    ] {
        let r = svc
            .client
            .post(format!("{}/subscriptions", svc.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let p: Value = r.json().await.unwrap();
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{body}: {p}"
        );
    }
    let r = svc
        .client
        .get(format!("{}/subscriptions/nope", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = svc
        .client
        .delete(format!("{}/subscriptions/{id}", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// A sink that allowed 120 requests a minute in its handshake gets them
/// spaced by half a second, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowed_rate_of_the_handshake_is_kept() {
    let (svc, _stop) = Service::start().await;
    let (url, got) = sink_with_rate(vec![(200, None)], Duration::ZERO, true, Some("120")).await;
    let s = svc
        .subscribe(json!({"sink": url, "types": ["review_created"]}))
        .await;
    let active = svc.wait_state(s["id"].as_str().unwrap(), "active").await;
    assert_eq!(active["config"]["rate_per_minute"], 120, "{active}");
    for n in 0..3 {
        svc.bus
            .publish(ReviewCreated {
                id: format!("r-{n}"),
                n,
            })
            .await
            .unwrap();
    }
    eventually("3 deliveries", || posts(&got).len() == 3).await;
    let id = s["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts = svc.get(&format!("/subscriptions/{id}/attempts")).await;
    let mut at: Vec<u64> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["at_ms"].as_u64().unwrap())
        .collect();
    at.sort();
    assert_eq!(at.len(), 3, "{attempts}");
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= 450,
            "spaced by the allowed rate: {at:?} {attempts}"
        );
    }
}

/// A sink that fails every delivery for longer than `disable_after` (five
/// days by default, shortened here) is disabled, and the operational event
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_too_long_is_disabled() {
    let bus = Bus::builder()
        .service("hub-test")
        .without_registered()
        .event::<ReviewCreated>()
        .connect("memory://")
        .await
        .unwrap();
    let policy = eventbus_http::guard::SinkPolicy::new()
        .allow("127.0.0.0/8")
        .unwrap();
    let options = HubOptions {
        schedule: vec![Duration::from_millis(100); 50],
        jitter: 0.0,
        refresh: Duration::from_millis(100),
        disable_after: Duration::from_millis(600),
        ..HubOptions::default()
    };
    let hub = Hub::new(&bus, MemoryStore::new(), policy, options).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let hub = hub.clone();
        let stop = stop.clone();
        async move { hub.run(stop).await }
    });
    let svc = Service {
        base: serve(eventbus_http::Http::new(&bus).webhooks(hub).router()).await,
        bus,
        client: reqwest::Client::new(),
    };
    let (url, got) = sink(vec![(500, None)], Duration::ZERO, true).await;
    let s = svc
        .subscribe(json!({"sink": url, "types": ["review_created"]}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    svc.wait_state(&id, "active").await;
    svc.bus
        .publish(ReviewCreated {
            id: "r".into(),
            n: 0,
        })
        .await
        .unwrap();
    let disabled = svc.wait_state(&id, "disabled").await;
    let reason = disabled["status"]["reason"].as_str().unwrap();
    assert!(reason.contains("every delivery failed for"), "{reason}");
    assert!(disabled.get("failing_since").is_some(), "{disabled}");
    let feed = svc.get("/events?types=eventbus.webhook.disabled").await;
    assert_eq!(feed.as_array().unwrap().len(), 1, "{feed}");
    assert_eq!(feed[0]["data"]["reason"], reason);
    let tries = posts(&got).len();
    assert!(tries >= 2, "it was retried before giving up: {tries}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posts(&got).len(), tries, "no delivery once disabled");
    stop.cancel();
}

/// A WebSub lease that runs out without a renewal disables the
/// subscription; subscribing again renews it (verified again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websub_lease_runs_out_and_is_renewed() {
    let (svc, _stop) = Service::start().await;
    let (callback, got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let form = |lease: u32| {
        format!(
            "hub.mode=subscribe&hub.topic=review_created&hub.callback={}&hub.lease_seconds={lease}",
            percent_encoding::utf8_percent_encode(&callback, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let post = |body: String| {
        svc.client
            .post(format!("{}/subscriptions", svc.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(post(form(1)).await.unwrap().status(), 202);
    let id = svc.get("/subscriptions").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    svc.wait_state(&id, "active").await;
    let ended = svc.wait_state(&id, "disabled").await;
    assert!(
        ended["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("lease"),
        "{ended}"
    );
    // Renewal: the same callback and topic, one subscription, active again.
    assert_eq!(post(form(3600)).await.unwrap().status(), 202);
    svc.wait_state(&id, "active").await;
    assert_eq!(svc.get("/subscriptions").await.as_array().unwrap().len(), 1);
    let challenges = got
        .lock()
        .iter()
        .filter(|(m, _, _)| *m == Method::GET)
        .count();
    assert_eq!(
        challenges, 2,
        "verified at the subscription and at the renewal"
    );
}

/// On Redis Streams, a burst of events reaches a sink once each (by
/// `webhook-id`), with 4 deliveries in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_redis_is_delivered_once_each() {
    let redis = testkit::RedisServer::start().expect("redis-server");
    let (svc, _stop) = Service::start_on(&redis.url()).await;
    let (url, got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let s = svc
        .subscribe(json!({"sink": url, "types": ["review_created"]}))
        .await;
    svc.wait_state(s["id"].as_str().unwrap(), "active").await;
    let n = 2000;
    svc.bus
        .publish_batch((0..n).map(|i| ReviewCreated {
            id: format!("r-{i}"),
            n: i,
        }))
        .await
        .unwrap();
    let distinct = || {
        posts(&got)
            .iter()
            .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    eventually("every event delivered", || distinct() == n as usize).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = posts(&got).len();
    let attempts = svc
        .get(&format!(
            "/subscriptions/{}/attempts?limit=1000",
            s["id"].as_str().unwrap()
        ))
        .await;
    let again = attempts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["attempt"].as_u64() != Some(1))
        .count();
    assert_eq!(
        total, n as usize,
        "{} requests for {n} events ({again} of the last 1000 attempts were redeliveries)",
        total
    );
}

/// `eventbus.webhook.attempts` by outcome: a sink that fails once, then takes it.
#[test]
fn webhook_attempts_are_counted_by_outcome() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let bus = Bus::builder()
                .service("hub-test")
                .without_registered()
                .event::<ReviewCreated>()
                .connect("memory://")
                .await
                .unwrap();
            let policy = eventbus_http::guard::SinkPolicy::new()
                .allow("127.0.0.0/8")
                .unwrap();
            let options = HubOptions {
                schedule: vec![Duration::from_millis(50); 5],
                jitter: 0.0,
                refresh: Duration::from_millis(100),
                ..HubOptions::default()
            };
            let hub = Hub::new(&bus, MemoryStore::new(), policy, options).unwrap();
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn({
                let hub = hub.clone();
                let stop = stop.clone();
                async move { hub.run(stop).await }
            });
            let svc = Service {
                base: serve(eventbus_http::Http::new(&bus).webhooks(hub).router()).await,
                bus,
                client: reqwest::Client::new(),
            };
            let (url, got) = sink(vec![(500, None), (200, None)], Duration::ZERO, true).await;
            let s = svc
                .subscribe(json!({"sink": url, "types": ["review_created"]}))
                .await;
            let id = s["id"].as_str().unwrap().to_owned();
            svc.wait_state(&id, "active").await;
            svc.bus
                .publish(ReviewCreated {
                    id: "r".into(),
                    n: 0,
                })
                .await
                .unwrap();
            eventually("the retry is delivered", || posts(&got).len() >= 2).await;
            // The attempt is counted right after the answer.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        })
    });
    // A snapshot takes the values: read it once.
    let snapshot = snapshotter.snapshot().into_vec();
    let count = |outcome: &str| -> u64 {
        snapshot
            .iter()
            .find_map(|(k, _, _, v)| {
                let key = k.key();
                let hit = key.name() == eventbus_core::metrics::WEBHOOK_ATTEMPTS.name
                    && key
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
                    && key
                        .labels()
                        .any(|l| l.key() == "type" && l.value() == "review_created");
                match (hit, v) {
                    (true, DebugValue::Counter(n)) => Some(*n),
                    _ => None,
                }
            })
            .unwrap_or(0)
    };
    assert_eq!(count("retrying"), 1);
    assert_eq!(count("delivered"), 1);
    assert_eq!(count("dead_lettered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_carries_the_events_trace_context_as_its_traceparent_header() {
    let (svc, _stop) = Service::start().await;
    let (url, got) = sink(vec![(200, None)], Duration::ZERO, true).await;
    let s = svc
        .subscribe(json!({"sink": url, "types": ["review_created"]}))
        .await;
    svc.wait_state(s["id"].as_str().unwrap(), "active").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let event = eventbus::codec::decode_cloudevent(
        json!({
            "specversion": "1.0", "id": "traced-1", "source": "/test", "type": "review_created",
            "traceparent": traceparent, "tracestate": "vendor=1",
            "datacontenttype": "application/json", "data": {"id": "r-t", "n": 1}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    svc.bus.publish_cloudevent(&event).await.unwrap();
    eventually("the traced delivery", || !posts(&got).is_empty()).await;
    let (headers, body) = posts(&got).remove(0);
    assert_eq!(headers["traceparent"], traceparent);
    assert_eq!(headers["tracestate"], "vendor=1");
    assert_eq!(body["traceparent"], traceparent, "the event keeps its own");
}
