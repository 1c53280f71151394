//! One bus over several transports (routes and bridges) and what a group
//! may be on a transport (competing, broadcast), on `memory://` instances:
//! publishing by type, a group split over two transports, a global group
//! that sees each event once, dead letters listed and replayed across
//! transports, bridges once across instances, and the start-up refusals
//! with their sentences. (On Redis, with real processes: `tests/redis/migration.rs`.)

use std::sync::Arc;
use std::time::Duration;

use eventbus::transport::memory::MemoryTransport;
use eventbus::transport::{Capabilities, DeadLetter, GroupSpec, Outgoing, Subscriber, Transport};
use eventbus::{Bus, BusBuilder, CloudEvent, Context, Event, HandlerDef, RetryPolicy};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A legacy event (on the "legacy" transport in these tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mr.review_created")]
struct ReviewCreated {
    id: u32,
}

/// Another legacy event, routed by the same prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mr.review_deleted")]
struct ReviewDeleted {
    id: u32,
}

/// A task-queue job (on the default transport).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mr.send_short_message")]
struct SendShortMessage {
    n: u32,
}

/// The new name of a user event whose old name still arrives elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mr.id_user_changed", aliases = ["mr.sso_user_changed"])]
struct IdUserChanged {
    n: u32,
}

type Seen = Arc<Mutex<Vec<u32>>>;

fn sorted(seen: &Seen) -> Vec<u32> {
    let mut v = seen.lock().clone();
    v.sort_unstable();
    v
}

/// A fresh name for a shared `memory://` instance.
fn memory_url(what: &str) -> String {
    format!("memory://routes-{what}-{:08x}", fastrand::u32(..))
}

fn builder() -> BusBuilder {
    Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        })
}

fn recorder<E>(name: &'static str, seen: &Seen, n: fn(&E) -> u32) -> HandlerDef
where
    E: Event + eventbus::HandlerArg,
{
    let seen = seen.clone();
    HandlerDef::new(name, move |e: E| {
        seen.lock().push(n(&e));
        async {}
    })
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn events_are_published_on_the_transport_of_their_type() {
    let legacy = MemoryTransport::new();
    let jobs = MemoryTransport::new();
    let (reviews, sent) = (Seen::default(), Seen::default());
    let bus = builder()
        .route_transport(["mr.review_*"], legacy.clone())
        .transport(jobs.clone())
        .handler(recorder("on_review", &reviews, |e: &ReviewCreated| e.id))
        .handler(recorder("send", &sent, |e: &SendShortMessage| e.n).group("mr_sms_queue"))
        .build()
        .await
        .unwrap();
    // Declared where their types live, before anything runs.
    bus.publish(ReviewCreated { id: 1 }).await.unwrap();
    bus.publish_batch((0..3).map(|n| SendShortMessage { n }))
        .await
        .unwrap();
    assert_eq!(legacy.pending("svc.on_review"), 1);
    assert_eq!(jobs.pending("svc.on_review"), 0);
    assert_eq!(jobs.pending("mr_sms_queue"), 3);
    assert_eq!(legacy.pending("mr_sms_queue"), 0);

    // A batch of two types is split between the transports.
    bus.publish_encoded(&[
        bus.encode(&ReviewCreated { id: 2 }).unwrap().1,
        bus.encode(&SendShortMessage { n: 3 }).unwrap().1,
    ])
    .await
    .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    until("everything handled", || {
        reviews.lock().len() == 2 && sent.lock().len() == 4
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&reviews), [1, 2]);
    assert_eq!(sorted(&sent), [0, 1, 2, 3]);
    assert!(legacy.is_idle() && jobs.is_idle());
}

#[tokio::test]
async fn a_group_whose_types_live_on_two_transports_reads_both() {
    let legacy = MemoryTransport::new();
    let seen = Seen::default();
    let bus = builder()
        .route_transport(["mr.sso_user_changed"], legacy.clone())
        .handler(recorder("on_user", &seen, |e: &IdUserChanged| e.n))
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(IdUserChanged { n: 1 }).await.unwrap();
    // The old name, as another producer still writes it on the legacy transport.
    let old = br#"{"specversion":"1.0","id":"o-2","source":"/sso","type":"mr.sso_user_changed","data":{"n":2}}"#;
    legacy
        .publish(&[Outgoing {
            event_type: "mr.sso_user_changed".into(),
            payload: bytes::Bytes::from_static(old),
        }])
        .await
        .unwrap();
    until("both handled", || seen.lock().len() == 2).await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&seen), [1, 2]);
}

#[tokio::test]
async fn a_global_group_sees_each_event_once_from_the_transport_of_its_type() {
    let legacy = MemoryTransport::new();
    let jobs = MemoryTransport::new();
    let audit: Arc<Mutex<Vec<String>>> = Default::default();
    let log = audit.clone();
    let reviews = Seen::default();
    let bus = builder()
        .route_transport(["mr.review_deleted"], legacy.clone())
        .bridge(["mr.review_created"], "memory://")
        .transport(jobs.clone())
        .handler(HandlerDef::new("audit", move |e: CloudEvent| {
            log.lock()
                .push(eventbus::cloudevents::AttributesReader::ty(&e).to_owned());
            async {}
        }))
        .handler(recorder("on_review", &reviews, |e: &ReviewCreated| e.id))
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(ReviewCreated { id: 1 }).await.unwrap(); // bridged into `jobs`
    bus.publish(ReviewDeleted { id: 2 }).await.unwrap(); // on `legacy`
    bus.publish(SendShortMessage { n: 3 }).await.unwrap(); // on `jobs`
    until("the audit saw three events", || audit.lock().len() >= 3).await;
    until("the review was handled", || reviews.lock().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.shutdown().await.unwrap();
    let mut types = audit.lock().clone();
    types.sort();
    assert_eq!(
        types,
        [
            "mr.review_created",
            "mr.review_deleted",
            "mr.send_short_message"
        ],
        "each event once, the bridged one from its destination only"
    );
    assert_eq!(sorted(&reviews), [1]);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_across_transports() {
    let legacy = MemoryTransport::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (f1, f2) = (fail.clone(), fail.clone());
    let (reviews, sent) = (Seen::default(), Seen::default());
    let (r, s) = (reviews.clone(), sent.clone());
    let bus = builder()
        .route_transport(["mr.review_*"], legacy.clone())
        .handler(
            HandlerDef::new("on_review", move |e: ReviewCreated| {
                let result = if f1.load(std::sync::atomic::Ordering::SeqCst) {
                    Err("refused")
                } else {
                    r.lock().push(e.id);
                    Ok(())
                };
                async move { result }
            })
            .retries(0),
        )
        .handler(
            HandlerDef::new("send", move |e: SendShortMessage| {
                let result = if f2.load(std::sync::atomic::Ordering::SeqCst) {
                    Err("refused")
                } else {
                    s.lock().push(e.n);
                    Ok(())
                };
                async move { result }
            })
            .retries(0),
        )
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(ReviewCreated { id: 7 }).await.unwrap();
    bus.publish(SendShortMessage { n: 8 }).await.unwrap();
    let mut dead: Vec<DeadLetter> = Vec::new();
    for _ in 0..2000 {
        dead = bus.dead_letters(10).await.unwrap();
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    let mut groups: Vec<&str> = dead.iter().map(|d| d.group.as_str()).collect();
    groups.sort();
    assert_eq!(groups, ["svc.on_review", "svc.send"]);
    assert!(dead.iter().all(|d| d.id.contains('/')), "{dead:?}");
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    for d in &dead {
        assert!(bus.replay_dead_letter(&d.id).await.unwrap(), "{d:?}");
    }
    assert!(!bus.replay_dead_letter("9/1").await.unwrap());
    assert!(!bus.replay_dead_letter("not-an-id").await.unwrap());
    until("both replayed and handled", || {
        reviews.lock().len() == 1 && sent.lock().len() == 1
    })
    .await;
    running.shutdown().await.unwrap();
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bridge_appends_each_message_once_across_instances() {
    let (source, dest) = (memory_url("source"), memory_url("dest"));
    let (one, two) = (Seen::default(), Seen::default());
    let instance = |seen: &Seen| {
        builder()
            .bridge(["mr.review_created"], source.clone())
            .handler(recorder("on_review", seen, |e: &ReviewCreated| e.id))
            .connect(&dest)
    };
    let a = instance(&one).await.unwrap();
    let b = instance(&two).await.unwrap();
    assert!(
        a.groups().any(|g| g == "eventbus.bridge.mr.review_created"),
        "{a:?}"
    );
    let (mut ra, mut rb) = (a.spawn(), b.spawn());
    ra.ready().await.unwrap();
    rb.ready().await.unwrap();
    // The legacy producer publishes on the source only.
    let producer = Bus::builder()
        .service("django")
        .without_registered()
        .connect(&source)
        .await
        .unwrap();
    producer
        .publish_batch((0..100).map(|id| ReviewCreated { id }))
        .await
        .unwrap();
    until("100 reviews handled", || {
        one.lock().len() + two.lock().len() >= 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    let mut all = sorted(&one);
    all.extend(sorted(&two));
    all.sort_unstable();
    assert_eq!(
        all,
        (0..100).collect::<Vec<_>>(),
        "each review handled once"
    );
}

#[tokio::test]
async fn bridged_types_are_published_on_their_source() {
    let (source, dest) = (MemoryTransport::new(), MemoryTransport::new());
    let bus = builder()
        .route_transport(["mr.review_deleted"], source.clone())
        .bridge(["mr.review_created"], "memory://")
        .transport(dest.clone())
        .build()
        .await
        .unwrap();
    // The legacy consumers of the source see what Rust publishes.
    let legacy_reader = GroupSpec {
        group: "django".into(),
        handler: "django".into(),
        topics: eventbus::transport::Topics::Types(vec!["mr.review_deleted".into()]),
        handler_timeout: None,
        broadcast: false,
    };
    let sub = source.subscribe(&legacy_reader).await.unwrap();
    bus.publish(ReviewDeleted { id: 1 }).await.unwrap();
    let got = sub.next(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, "mr.review_deleted");
}

/// A transport that forwards everything to memory but reports other capabilities.
#[derive(Clone)]
struct Reporting {
    inner: MemoryTransport,
    capabilities: Capabilities,
}

impl Transport for Reporting {
    fn name(&self) -> &'static str {
        "reporting"
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, eventbus::Result<()>> {
        self.inner.publish(batch)
    }
    fn publish_at(
        &self,
        message: Outgoing,
        at: std::time::SystemTime,
    ) -> BoxFuture<'_, eventbus::Result<()>> {
        self.inner.publish_at(message, at)
    }
    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, eventbus::Result<()>> {
        self.inner.declare(group)
    }
    fn subscribe<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> BoxFuture<'a, eventbus::Result<Box<dyn Subscriber>>> {
        self.inner.subscribe(group)
    }
    fn claim_tick<'a>(
        &'a self,
        schedule: &'a str,
        tick_ms: u64,
    ) -> BoxFuture<'a, eventbus::Result<bool>> {
        self.inner.claim_tick(schedule, tick_ms)
    }
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, eventbus::Result<Vec<DeadLetter>>> {
        self.inner.dead_letters(limit)
    }
    fn replay<'a>(&'a self, id: &'a str) -> BoxFuture<'a, eventbus::Result<bool>> {
        self.inner.replay(id)
    }
}

fn no_competition() -> Reporting {
    Reporting {
        inner: MemoryTransport::new(),
        capabilities: Capabilities::BROADCAST_ONLY,
    }
}

fn no_broadcast() -> Reporting {
    Reporting {
        inner: MemoryTransport::new(),
        capabilities: Capabilities::COMPETING,
    }
}

async fn refusal(bus: &Bus) -> String {
    let mut running = bus.spawn();
    let refused = tokio::time::timeout(Duration::from_secs(30), running.ready())
        .await
        .expect("refused at start");
    refused.expect_err("refused").to_string()
}

#[tokio::test]
async fn a_group_that_cannot_compete_is_refused_at_start_with_what_to_do() {
    let bus = builder()
        .transport(no_competition())
        .handler(
            HandlerDef::new("send_short_message", |_: SendShortMessage| async {})
                .group("mr_sms_send_queue"),
        )
        .build()
        .await
        .unwrap();
    assert_eq!(
        refusal(&bus).await,
        "group `mr_sms_send_queue` (handler `send_short_message`) cannot compete on reporting, so every running instance would handle each `mr.send_short_message` event: route `mr.send_short_message` to a transport whose groups compete (e.g. `EVENTBUS_ROUTES='mr.send_short_message=redis://host:6379'` for Redis Streams, or `Bus::builder().route([..], url)`), or mark the handler `#[handler(broadcast)]` if every instance should handle each event"
    );

    // Broadcast: what it can do, it runs.
    let seen = Seen::default();
    let bus = builder()
        .transport(no_competition())
        .handler(recorder("everywhere", &seen, |e: &SendShortMessage| e.n).broadcast())
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(SendShortMessage { n: 1 }).await.unwrap();
    until("handled", || seen.lock().len() == 1).await;
    running.shutdown().await.unwrap();

    // Routed to a transport that competes, the same group runs.
    let bus = builder()
        .route_transport(["mr.send_short_message"], MemoryTransport::new())
        .transport(no_competition())
        .handler(
            HandlerDef::new("send_short_message", |_: SendShortMessage| async {})
                .group("mr_sms_send_queue"),
        )
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broadcast_handler_is_refused_where_it_cannot_broadcast() {
    let bus = builder()
        .transport(no_broadcast())
        .handler(HandlerDef::new("drop_cache", |_: ReviewDeleted| async {}).broadcast())
        .build()
        .await
        .unwrap();
    assert_eq!(
        refusal(&bus).await,
        "handler `drop_cache` is broadcast, but reporting gives each event of a group to one instance: route `mr.review_deleted` to a transport that broadcasts (e.g. `EVENTBUS_ROUTES='mr.review_deleted=redis://host:6379?mode=pubsub'`), or drop `broadcast` to have one instance handle each event"
    );
    // A bridge needs a source whose groups compete.
    let bus = builder()
        .bridge_transport(["mr.review_created"], no_competition())
        .build()
        .await
        .unwrap();
    let refused = refusal(&bus).await;
    assert!(
        refused.starts_with("cannot bridge `mr.review_created` from reporting (the reporting transport given in code): it cannot make a group's instances compete"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_broadcast_handler_reaches_every_instance() {
    let shared = memory_url("broadcast");
    let (one, two, queue) = (Seen::default(), Seen::default(), Seen::default());
    let instance = |seen: &Seen| {
        builder()
            .handler(recorder("drop_cache", seen, |e: &ReviewDeleted| e.id).broadcast())
            .handler(recorder("queue", &queue, |e: &ReviewDeleted| e.id))
            .connect(&shared)
    };
    let (a, b) = (instance(&one).await.unwrap(), instance(&two).await.unwrap());
    let (mut ra, mut rb) = (a.spawn(), b.spawn());
    ra.ready().await.unwrap();
    rb.ready().await.unwrap();
    a.publish_batch((0..20).map(|id| ReviewDeleted { id }))
        .await
        .unwrap();
    until("every instance handled every event", || {
        one.lock().len() == 20 && two.lock().len() == 20 && queue.lock().len() == 20
    })
    .await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    assert_eq!(sorted(&one), (0..20).collect::<Vec<_>>());
    assert_eq!(sorted(&two), (0..20).collect::<Vec<_>>());
    assert_eq!(
        sorted(&queue),
        (0..20).collect::<Vec<_>>(),
        "the group competes"
    );
}

#[tokio::test]
async fn routes_and_bridges_that_cannot_work_are_errors_when_the_bus_is_built() {
    let err = |b: BusBuilder| async move { b.build().await.unwrap_err().to_string() };
    assert_eq!(
        err(builder().route(["mr.re*view"], "memory://")).await,
        "Bus::builder(): `mr.re*view` has a `*` that is not at its end; a pattern is a type or a prefix followed by `*`, as in `review_*`; name event types, each optionally ending in `*`"
    );
    assert_eq!(
        err(builder().route(["mr.review_*"], "redis+nope://:s3cret@h")).await,
        "Bus::builder(): the route of `mr.review_*`: unknown transport `redis+nope://` in `redis+nope://:***@h`; use `memory://` or `redis://host:6379`"
    );
    let same = memory_url("same");
    let into_itself = builder()
        .bridge(["mr.review_created"], same.clone())
        .connect(&same)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        into_itself,
        format!(
            "Bus::builder(): `mr.review_created` is bridged from {same} into the same transport; route `mr.review_created` to the transport its handlers should read (e.g. Redis Streams) with EVENTBUS_ROUTES or Bus::builder().route(..), or set EVENTBUS_URL to it"
        )
    );
    assert_eq!(
        err(builder().bridge(["mr.nothing_*"], "memory://")).await,
        "Bus::builder(): the bridge pattern `mr.nothing_*` matches no event type this binary knows; name the types to bridge (a bridge subscribes to one channel per type)"
    );
    let twice = err(builder()
        .route(["mr.review_created"], "memory://")
        .route(["mr.review_created"], memory_url("other")))
    .await;
    assert!(twice.contains("is routed twice"), "{twice}");
}

#[tokio::test]
async fn handlers_see_their_context_through_a_route() {
    let legacy = MemoryTransport::new();
    let got: Arc<Mutex<Option<(String, u32)>>> = Default::default();
    let g = got.clone();
    let bus = builder()
        .route_transport(["mr.review_*"], legacy)
        .handler(HandlerDef::new(
            "ctx",
            move |e: ReviewCreated, ctx: Context| {
                *g.lock() = Some((ctx.event_type().to_owned(), e.id));
                async {}
            },
        ))
        .build()
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(ReviewCreated { id: 5 }).await.unwrap();
    until("handled", || got.lock().is_some()).await;
    running.shutdown().await.unwrap();
    assert_eq!(
        got.lock().clone(),
        Some(("mr.review_created".to_owned(), 5))
    );
}
