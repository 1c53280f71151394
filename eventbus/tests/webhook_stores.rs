//! The durable webhook subscription stores: the store contract on every
//! store (memory, Redis, PostgreSQL, SQLite), two instances sharing one
//! Redis, and hubs restarted on the same store (the retry schedule goes on,
//! nothing is verified again).
#![cfg(feature = "http")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use eventbus::webhooks::{
    ATTEMPTS_KEPT, Attempt, Hub, HubOptions, MemoryStore, Outcome, Status, Subscription,
    SubscriptionStore,
};
use eventbus::{Bus, Event};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("order_placed", source = "orders")]
struct OrderPlaced {
    #[event(subject)]
    id: String,
    n: u32,
}

// ---------------------------------------------------------------- contract

/// A subscription with most fields set (from JSON: fields added later
/// default, as they do when a store reads what an older version wrote).
fn subscription(id: &str) -> Subscription {
    serde_json::from_value(json!({
        "id": id,
        "sink": format!("https://example.com/hooks/{id}"),
        "method": "PUT",
        "mode": "binary",
        "types": ["order_placed"],
        "headers": {"x-tenant": "t1"},
        "credential": "token",
        "secrets": [{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
        "rate_per_minute": 60,
        "status": {"state": "pending"},
        "created_ms": 1_700_000_000_000_u64,
    }))
    .unwrap()
}

fn attempt(n: u32) -> Attempt {
    Attempt {
        event_id: format!("event-{n}"),
        event_type: "order_placed".into(),
        attempt: n,
        at_ms: 1_700_000_000_000 + u64::from(n),
        status: Some(500),
        duration_ms: 3,
        response: "down".into(),
        outcome: Outcome::Retrying,
        next_ms: Some(1_700_000_005_000),
    }
}

/// What every [`SubscriptionStore`] does.
async fn contract(store: &dyn SubscriptionStore) {
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(store.get("01-a").await.unwrap(), None);

    let mut a = subscription("01-a");
    let b = subscription("02-b");
    store.put(&b).await.unwrap();
    store.put(&a).await.unwrap();
    assert_eq!(store.get("01-a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.list().await.unwrap(), vec![a.clone(), b.clone()]);

    // put replaces.
    a.status = Status::Active;
    a.last_success_ms = Some(1_700_000_001_000);
    store.put(&a).await.unwrap();
    assert_eq!(store.get("01-a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.list().await.unwrap(), vec![a.clone(), b.clone()]);

    // Attempts: newest first, per subscription, limited.
    for n in 1..=3 {
        store.record("01-a", &attempt(n)).await.unwrap();
    }
    let got = store.attempts("01-a", 10).await.unwrap();
    assert_eq!(got, vec![attempt(3), attempt(2), attempt(1)]);
    assert_eq!(
        store.attempts("01-a", 2).await.unwrap(),
        vec![attempt(3), attempt(2)]
    );
    assert!(store.attempts("01-a", 0).await.unwrap().is_empty());
    assert!(store.attempts("02-b", 10).await.unwrap().is_empty());

    // The cap: the newest ATTEMPTS_KEPT stay.
    let total = ATTEMPTS_KEPT as u32 + 5;
    for n in 1..=total {
        store.record("02-b", &attempt(n)).await.unwrap();
    }
    let kept = store.attempts("02-b", usize::MAX).await.unwrap();
    assert_eq!(kept.len(), ATTEMPTS_KEPT);
    assert_eq!(kept[0], attempt(total));
    assert_eq!(kept[ATTEMPTS_KEPT - 1], attempt(6));
    assert_eq!(store.attempts("01-a", 10).await.unwrap().len(), 3);

    // Delete takes the attempts with it.
    assert!(store.delete("01-a").await.unwrap());
    assert_eq!(store.get("01-a").await.unwrap(), None);
    assert!(store.attempts("01-a", 10).await.unwrap().is_empty());
    assert!(!store.delete("01-a").await.unwrap());
    assert_eq!(store.list().await.unwrap(), vec![b.clone()]);
    assert_eq!(
        store.attempts("02-b", 1).await.unwrap(),
        vec![attempt(total)]
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let server = redis_server();
    let store = eventbus::webhooks::RedisStore::connect(&server.url())
        .await
        .unwrap();
    assert_eq!(store.key(), "{eventbus}:webhooks");
    contract(&store).await;
    // Nothing else is left behind: the hash and b's attempts.
    let keys = server.cmd(&["KEYS", "*"]).unwrap();
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["{eventbus}:webhooks", "{eventbus}:webhooks:attempts:02-b"]
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let server = testkit::PostgresServer::shared().expect("PostgreSQL for the tests");
    let url = server.create_database().expect("a database");
    let db = eventbus::outbox::Database::connect(&url).await.unwrap();
    let store = eventbus::webhooks::SqlStore::new(&db);
    store.migrate().await.unwrap();
    // Idempotent, also concurrently.
    let (x, y) = tokio::join!(store.migrate(), store.migrate());
    x.unwrap();
    y.unwrap();
    contract(&store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let db = eventbus::outbox::Database::connect(&url).await.unwrap();
    let store = eventbus::webhooks::SqlStore::new(&db);
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    contract(&store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_store_that_was_not_migrated_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let db = eventbus::outbox::Database::connect(&url).await.unwrap();
    let e = eventbus::webhooks::SqlStore::new(&db)
        .list()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("SqlStore::migrate()"), "{e}");
}

// ---------------------------------------------------------------- hubs

#[cfg(feature = "redis")]
fn redis_server() -> testkit::RedisServer {
    testkit::RedisServer::start().expect("start redis-server (apt-get install -y redis-server)")
}

/// What a receiver got: method and headers.
type Got = Arc<Mutex<Vec<(Method, HeaderMap)>>>;

#[derive(Clone)]
struct Sink {
    got: Got,
    /// The first this many POSTs answer 500.
    fail_first: usize,
}

async fn receive(State(sink): State<Sink>, method: Method, headers: HeaderMap) -> Response {
    let n = {
        let mut got = sink.got.lock();
        let n = got.iter().filter(|(m, _)| *m == Method::POST).count();
        got.push((method.clone(), headers));
        n
    };
    if method == Method::OPTIONS {
        return (StatusCode::OK, [("webhook-allowed-origin", "*")]).into_response();
    }
    if n < sink.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn sink(fail_first: usize) -> (String, Got) {
    let got: Got = Arc::default();
    let app = axum::Router::new().fallback(receive).with_state(Sink {
        got: got.clone(),
        fail_first,
    });
    (serve(app).await, got)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn count(got: &Got, method: Method) -> usize {
    got.lock().iter().filter(|(m, _)| *m == method).count()
}

/// The `webhook-id`s of the POSTs, in arrival order.
fn post_ids(got: &Got) -> Vec<String> {
    got.lock()
        .iter()
        .filter(|(m, _)| *m == Method::POST)
        .map(|(_, h)| h["webhook-id"].to_str().unwrap().to_owned())
        .collect()
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One instance of the service: a bus, its hub on `store`, its router.
struct Instance {
    base: String,
    bus: Bus,
    hub: Hub,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Instance {
    async fn start(url: &str, store: impl SubscriptionStore, schedule: Vec<Duration>) -> Self {
        let bus = Bus::builder()
            .service("stores-test")
            .without_registered()
            .event::<OrderPlaced>()
            .connect(url)
            .await
            .unwrap();
        let policy = eventbus::http::guard::SinkPolicy::new()
            .allow("127.0.0.0/8")
            .unwrap()
            .timeout(Duration::from_secs(5));
        let options = HubOptions {
            schedule,
            jitter: 0.0,
            refresh: Duration::from_millis(100),
            ..HubOptions::default()
        };
        let hub = Hub::new(&bus, store, policy, options).unwrap();
        let stop = CancellationToken::new();
        tokio::spawn({
            let (hub, stop) = (hub.clone(), stop.clone());
            async move { hub.run(stop).await }
        });
        let base = serve(
            eventbus::http::Http::new(&bus)
                .webhooks(hub.clone())
                .router(),
        )
        .await;
        Self {
            base,
            bus,
            hub,
            stop,
            client: reqwest::Client::new(),
        }
    }

    async fn subscribe(&self, sink: &str) -> String {
        let r = self
            .client
            .post(format!("{}/subscriptions", self.base))
            .json(&json!({"sink": sink, "types": ["order_placed"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    async fn state(&self, id: &str) -> String {
        let v: Value = self
            .client
            .get(format!("{}/subscriptions/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["status"]["state"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait_active(&self, id: &str) {
        eventually("the subscription to be active", async || {
            self.state(id).await == "active"
        })
        .await;
    }

    async fn publish(&self, n: u32) {
        self.bus
            .publish(OrderPlaced {
                id: format!("o-{n}"),
                n,
            })
            .await
            .unwrap();
    }

    /// Stops the hub's workers and drops the bus.
    async fn stop(self) {
        self.stop.cancel();
        // The workers see the token at their next read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(self.bus);
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_deliver_each_event_once() {
    let server = redis_server();
    let url = server.url();
    let schedule = vec![Duration::from_millis(200); 3];
    let a = Instance::start(
        &url,
        eventbus::webhooks::RedisStore::connect(&url).await.unwrap(),
        schedule.clone(),
    )
    .await;
    let b = Instance::start(
        &url,
        eventbus::webhooks::RedisStore::connect(&url).await.unwrap(),
        schedule,
    )
    .await;
    let (sink_url, got) = sink(0).await;

    let id = a.subscribe(&sink_url).await;
    a.wait_active(&id).await;
    // Instance B sees what was made through A.
    b.wait_active(&id).await;
    // Both workers subscribed to the group (the queue was declared at
    // subscription, so nothing published from here on is lost either way).
    tokio::time::sleep(Duration::from_millis(500)).await;

    for n in 0..50 {
        if n % 2 == 0 {
            a.publish(n).await
        } else {
            b.publish(n).await
        }
    }
    eventually("50 deliveries", async || count(&got, Method::POST) >= 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = post_ids(&got);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 50, "a delivery went out twice: {ids:?}");
    assert_eq!(unique.len(), 50);

    // B's worker delivers a subscription made through A on its own: with A's
    // hub stopped, what A's bus publishes still arrives, once.
    a.stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 50..60 {
        a.publish(n).await;
    }
    eventually("60 deliveries", async || count(&got, Method::POST) >= 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = post_ids(&got);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 60, "{ids:?}");
    assert_eq!(unique.len(), 60);
    // One verification, by the instance the subscription was made through.
    assert_eq!(count(&got, Method::OPTIONS), 1);
    eventually("60 recorded attempts", async || {
        b.hub.store().attempts(&id, 1000).await.unwrap().len() >= 60
    })
    .await;
    let attempts = b.hub.store().attempts(&id, 1000).await.unwrap();
    assert_eq!(attempts.len(), 60);
    assert!(attempts.iter().all(|t| t.outcome == Outcome::Delivered));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_schedule_continues_the_retries() {
    let server = redis_server();
    let url = server.url();
    // The first retry is due 2 s after the first failure: long enough to
    // stop the first instance before it.
    let schedule = vec![
        Duration::from_secs(2),
        Duration::from_millis(300),
        Duration::from_millis(300),
    ];
    let first = Instance::start(
        &url,
        eventbus::webhooks::RedisStore::connect(&url).await.unwrap(),
        schedule.clone(),
    )
    .await;
    // Fails twice, then takes it.
    let (sink_url, got) = sink(2).await;
    let id = first.subscribe(&sink_url).await;
    first.wait_active(&id).await;
    first.publish(1).await;
    let store = eventbus::webhooks::RedisStore::connect(&url).await.unwrap();
    eventually("the first attempt", async || {
        !store.attempts(&id, 10).await.unwrap().is_empty()
    })
    .await;
    first.stop().await;
    assert_eq!(count(&got, Method::POST), 1);

    let second = Instance::start(&url, store.clone(), schedule).await;
    eventually("the delivery", async || {
        store
            .attempts(&id, 10)
            .await
            .unwrap()
            .first()
            .is_some_and(|t| t.outcome == Outcome::Delivered)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let attempts = store.attempts(&id, 10).await.unwrap();
    let numbers: Vec<(u32, Outcome)> = attempts
        .iter()
        .rev()
        .map(|t| (t.attempt, t.outcome))
        .collect();
    assert_eq!(
        numbers,
        [
            (1, Outcome::Retrying),
            (2, Outcome::Retrying),
            (3, Outcome::Delivered)
        ],
        "{attempts:?}"
    );
    assert!(attempts.iter().all(|t| t.event_id == attempts[0].event_id));
    // Three requests of one event, one verification (before the restart).
    let ids = post_ids(&got);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|i| *i == attempts[0].event_id));
    assert_eq!(count(&got, Method::OPTIONS), 1);
    assert_eq!(second.state(&id).await, "active");
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_delivers_to_its_subscriptions_without_verifying_again() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("app.db").display());
    let open = async || {
        let db = eventbus::outbox::Database::connect(&db_url).await.unwrap();
        let store = eventbus::webhooks::SqlStore::new(db);
        store.migrate().await.unwrap();
        store
    };
    let schedule = vec![Duration::from_millis(200); 3];
    let (sink_url, got) = sink(0).await;

    let first = Instance::start("memory://", open().await, schedule.clone()).await;
    let id = first.subscribe(&sink_url).await;
    first.wait_active(&id).await;
    first.publish(1).await;
    eventually("the first delivery", async || {
        count(&got, Method::POST) == 1
    })
    .await;
    first.stop().await;

    // A new process: a new bus, hub and pool on the same database file.
    let second = Instance::start("memory://", open().await, schedule).await;
    assert_eq!(second.state(&id).await, "active");
    // Its worker starts from the store, not from an API call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.publish(2).await;
    eventually("the delivery after the restart", async || {
        count(&got, Method::POST) == 2
    })
    .await;
    assert_eq!(count(&got, Method::OPTIONS), 1, "verified again");
    // Recorded once the answer is in.
    eventually("two recorded attempts", async || {
        second.hub.store().attempts(&id, 10).await.unwrap().len() == 2
    })
    .await;
    let attempts = second.hub.store().attempts(&id, 10).await.unwrap();
    assert!(attempts.iter().all(|t| t.outcome == Outcome::Delivered));
}
