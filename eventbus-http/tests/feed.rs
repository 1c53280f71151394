//! The pull feed (`GET /events`) and its SSE stream (`GET /events/stream`),
//! served on loopback over the memory transport and a private redis-server.

use std::time::{Duration, Instant};

use eventbus::{Bus, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = "reviews")]
struct ReviewCreated {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action", source = "reviews")]
struct ModerateAction {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("record_change", source = "reviews")]
struct RecordChange {
    #[event(subject)]
    id: String,
    version: u32,
}

/// Serves `router` on a free loopback port until the test ends.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn open(url: &str) -> Bus {
    Bus::builder()
        .service("feed-test")
        .without_registered()
        .event::<ReviewCreated>()
        .event::<ModerateAction>()
        .event::<RecordChange>()
        .connect(url)
        .await
        .expect("connect the bus")
}

struct Page {
    status: u16,
    events: Vec<Value>,
    cursor: Option<String>,
    body: Value,
}

async fn get(base: &str, query: &str) -> Page {
    let r = reqwest::get(format!("{base}/events?{query}"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cursor = r
        .headers()
        .get("feed-cursor")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 200 {
        assert_eq!(
            r.headers()["content-type"],
            "application/cloudevents-batch+json"
        );
    }
    let body: Value = r.json().await.unwrap();
    let events = body.as_array().cloned().unwrap_or_default();
    Page {
        status,
        events,
        cursor,
        body,
    }
}

fn ns(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect()
}

/// Every page, in order, across the types asked for, each event carrying its
/// cursor; the last event's cursor is the header's.
///
/// `exact`: across types too. Redis Streams order events of different types
/// by entry id (the server's millisecond clock), then type: two published
/// within one millisecond come in type order.
async fn pages_in_order(base: &str, bus: &Bus, exact: bool) {
    for n in 0..10u32 {
        if n % 2 == 0 {
            bus.publish(ReviewCreated { n }).await.unwrap();
        } else {
            bus.publish(ModerateAction { n }).await.unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let p = get(
            base,
            &format!("types=review_created,moderate_action&limit=3&after={after}"),
        )
        .await;
        assert_eq!(p.status, 200, "{}", p.body);
        if p.events.is_empty() {
            assert_eq!(
                p.cursor.as_deref(),
                Some(after.as_str()),
                "an empty page keeps the cursor"
            );
            break;
        }
        assert!(p.events.len() <= 3);
        let last = p.events.last().unwrap()["feedcursor"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(p.cursor.as_deref(), Some(last.as_str()));
        seen.extend(ns(&p.events));
        after = last;
        pages += 1;
    }
    if exact {
        assert_eq!(
            seen,
            (0..10).collect::<Vec<u64>>(),
            "in publish order, once each"
        );
    } else {
        let of = |odd: u64| {
            seen.iter()
                .copied()
                .filter(|n| n % 2 == odd)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of(0),
            vec![0, 2, 4, 6, 8],
            "each type in publish order: {seen:?}"
        );
        assert_eq!(
            of(1),
            vec![1, 3, 5, 7, 9],
            "each type in publish order: {seen:?}"
        );
        assert_eq!(seen.len(), 10, "once each: {seen:?}");
    }
    assert_eq!(pages, 4);

    // One type only.
    let p = get(base, "types=moderate_action&limit=100").await;
    assert_eq!(ns(&p.events), vec![1, 3, 5, 7, 9]);
    for e in &p.events {
        assert_eq!(e["type"], "moderate_action");
        assert_eq!(e["specversion"], "1.0");
    }
}

/// `wait=` returns as soon as an event is published, not at the deadline.
async fn long_poll_wakes(base: &str, bus: &Bus) {
    let head = get(base, "types=review_created&limit=1000").await;
    let after = head.cursor.unwrap_or_default();
    let url = format!("{base}/events?types=review_created&wait=20s&after={after}");
    let poll = tokio::spawn(async move {
        let r = reqwest::get(url).await.unwrap();
        let at = Instant::now();
        (r.json::<Value>().await.unwrap(), at)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    bus.publish(ReviewCreated { n: 777 }).await.unwrap();
    let (body, answered) = poll.await.unwrap();
    let latency = answered.saturating_duration_since(sent);
    eprintln!("long poll answered {latency:?} after the publish");
    assert_eq!(ns(body.as_array().unwrap()), vec![777]);
    assert!(
        latency < Duration::from_secs(5),
        "the long poll waited for its deadline ({latency:?}) instead of waking on the publish"
    );
}

/// Reads an SSE stream until `n` events arrived: (id, data) pairs.
async fn sse(
    base: &str,
    query: &str,
    last_event_id: Option<&str>,
    n: usize,
) -> Vec<(String, Value)> {
    let mut req = reqwest::Client::new().get(format!("{base}/events/stream?{query}"));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline.into(), r.chunk())
            .await
            .expect("SSE events in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                out.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

async fn sse_resumes(base: &str, bus: &Bus) {
    let start = get(base, "types=moderate_action&limit=1000")
        .await
        .cursor
        .unwrap();
    for n in 100..103 {
        bus.publish(ModerateAction { n }).await.unwrap();
    }
    let first = sse(
        base,
        &format!("types=moderate_action&after={start}"),
        None,
        2,
    )
    .await;
    assert_eq!(
        first
            .iter()
            .map(|(_, e)| e["data"]["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![100, 101]
    );
    // Reconnect as a browser would: Last-Event-ID = the last id seen.
    let resume = first[1].0.clone();
    let bus2 = bus.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        bus2.publish(ModerateAction { n: 103 }).await.unwrap();
    });
    let rest = sse(base, "types=moderate_action", Some(&resume), 2).await;
    publisher.await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|(_, e)| e["data"]["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![102, 103],
        "resumed after the last id, then followed a live publish"
    );
}

async fn compaction(base: &str, bus: &Bus) {
    for (id, version) in [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)] {
        bus.publish(RecordChange {
            id: id.into(),
            version,
        })
        .await
        .unwrap();
    }
    let p = get(base, "types=record_change&compact=subject").await;
    let got: Vec<(String, u64)> = p
        .events
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap().to_owned(),
                e["data"]["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("c".into(), 1), ("b".into(), 2), ("a".into(), 3)],
        "the latest event of each subject, in feed order"
    );
    // Paged: two per page, still only the latest of each.
    let p1 = get(base, "types=record_change&compact=subject&limit=2").await;
    assert_eq!(p1.events.len(), 2);
    let p2 = get(
        base,
        &format!(
            "types=record_change&compact=subject&limit=2&after={}",
            p1.cursor.unwrap()
        ),
    )
    .await;
    assert_eq!(p2.events.len(), 1);
    assert_eq!(p2.events[0]["subject"], "a");
    // Then follow new ones.
    bus.publish(RecordChange {
        id: "b".into(),
        version: 3,
    })
    .await
    .unwrap();
    let p3 = get(
        base,
        &format!(
            "types=record_change&compact=subject&after={}",
            p2.cursor.unwrap()
        ),
    )
    .await;
    assert_eq!(p3.events.len(), 1);
    assert_eq!(p3.events[0]["data"]["version"], 3);
}

async fn bad_requests(base: &str) {
    for (query, needle) in [
        ("limit=0", "limit=0"),
        ("limit=lots", "limit=lots"),
        ("wait=soon", "wait=soon"),
        ("compact=type", "compact=type"),
        ("types=,", "types="),
        ("after=not-a-cursor", "not-a-cursor"),
    ] {
        let p = get(base, query).await;
        assert_eq!(p.status, 400, "{query}: {}", p.body);
        let detail = p.body["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{query}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_feed() {
    let bus = open("memory://").await;
    let base = serve(eventbus::http::router(&bus)).await;
    pages_in_order(&base, &bus, true).await;
    long_poll_wakes(&base, &bus).await;
    sse_resumes(&base, &bus).await;
    compaction(&base, &bus).await;
    bad_requests(&base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_feed_expired_cursor() {
    let bus = open("memory://?retain=3").await;
    let base = serve(eventbus::http::router(&bus)).await;
    bus.publish(ReviewCreated { n: 0 }).await.unwrap();
    let early = get(&base, "").await.cursor.unwrap();
    for n in 1..6 {
        bus.publish(ReviewCreated { n }).await.unwrap();
    }
    let p = get(&base, &format!("after={early}")).await;
    assert_eq!(p.status, 410, "{}", p.body);
    let earliest = p.body["earliest"].as_str().unwrap().to_owned();
    assert_eq!(p.cursor.as_deref(), Some(earliest.as_str()));
    assert!(
        p.body["detail"]
            .as_str()
            .unwrap()
            .contains("older than what the feed retains")
    );
    let p = get(&base, &format!("after={earliest}")).await;
    assert_eq!(
        ns(&p.events),
        vec![3, 4, 5],
        "everything retained, from the earliest valid cursor"
    );
    // The SSE stream refuses the expired cursor before it starts.
    let r = reqwest::Client::new()
        .get(format!("{base}/events/stream"))
        .header("Last-Event-ID", &early)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_and_feedless_transports() {
    let bus = open("memory://").await;
    let base = serve(
        eventbus::http::Http::new(&bus)
            .bearer_token("s3cret")
            .router(),
    )
    .await;
    let r = reqwest::get(format!("{base}/events")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = reqwest::Client::new()
        .get(format!("{base}/events"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let redis = testkit::RedisServer::start().expect("start redis-server");
    let pubsub = open(&format!("{}?mode=pubsub", redis.url())).await;
    let base = serve(eventbus::http::router(&pubsub)).await;
    let p = get(&base, "").await;
    assert_eq!(p.status, 501);
    assert!(
        p.body["detail"].as_str().unwrap().contains("keeps no log"),
        "{}",
        p.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_feed() {
    let redis = testkit::RedisServer::start().expect("start redis-server");
    let bus = open(&redis.url()).await;
    let base = serve(eventbus::http::router(&bus)).await;
    pages_in_order(&base, &bus, false).await;
    long_poll_wakes(&base, &bus).await;
    sse_resumes(&base, &bus).await;
    compaction(&base, &bus).await;
    bad_requests(&base).await;

    // Every type, merged across the streams in (entry id, type) order.
    let all = get(&base, "limit=1000").await;
    assert_eq!(all.status, 200);
    let cursors: Vec<&str> = all
        .events
        .iter()
        .map(|e| e["feedcursor"].as_str().unwrap())
        .collect();
    assert!(all.events.len() >= 20, "{}", all.events.len());
    let key = |c: &str| {
        let (id, ty) = c.split_once('~').unwrap();
        let (ms, seq) = id.split_once('-').unwrap();
        (
            ms.parse::<u64>().unwrap(),
            seq.parse::<u64>().unwrap(),
            ty.to_owned(),
        )
    };
    assert!(
        cursors.windows(2).all(|w| key(w[0]) < key(w[1])),
        "monotonic cursors"
    );

    // A restarted service (a new bus and router on the same Redis) resumes from a cursor.
    let mid = cursors[cursors.len() / 2].to_owned();
    let expected = all.events.len() - cursors.len() / 2 - 1;
    drop(bus);
    let bus2 = open(&redis.url()).await;
    let base2 = serve(eventbus::http::router(&bus2)).await;
    let rest = get(&base2, &format!("limit=1000&after={mid}")).await;
    assert_eq!(rest.events.len(), expected);
    assert_eq!(rest.events[0], all.events[cursors.len() / 2 + 1]);

    // Trimmed by retention: 410 with the earliest valid cursor.
    let first = cursors[0].to_owned();
    let trimmer = eventbus_redis::Client::connect_url(&format!("{}?maxlen=2", redis.url()))
        .await
        .unwrap();
    let report = trimmer.trim().await.unwrap();
    assert!(report.iter().any(|r| r.trimmed > 0), "{report:?}");
    let p = get(&base2, &format!("types=review_created&after={first}")).await;
    assert_eq!(p.status, 410, "{}", p.body);
    let earliest = p.body["earliest"].as_str().unwrap();
    let p = get(&base2, &format!("types=review_created&after={earliest}")).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.events.len(), 2, "the two entries kept");
}

/// A bus that routes types to several transports reads the feed of the one
/// the asked types live on, and names the transports when they span two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_bus_reads_the_feed_of_the_types_transport() {
    let bus = Bus::builder()
        .service("feed-test")
        .without_registered()
        .event::<ReviewCreated>()
        .event::<ModerateAction>()
        .route(["moderate_action"], "memory://feed-test-moderation")
        .connect("memory://feed-test-main")
        .await
        .unwrap();
    let base = serve(eventbus::http::router(&bus)).await;
    bus.publish(ReviewCreated { n: 1 }).await.unwrap();
    bus.publish(ModerateAction { n: 2 }).await.unwrap();
    assert_eq!(
        ns(&get(&base, "types=review_created").await.events),
        vec![1]
    );
    assert_eq!(
        ns(&get(&base, "types=moderate_action").await.events),
        vec![2]
    );
    let p = get(&base, "types=review_created,moderate_action").await;
    assert_eq!(p.status, 400, "{}", p.body);
    let detail = p.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("several transports") && detail.contains("memory://feed-test-moderation"),
        "{detail}"
    );
}

/// What another program wrote to a stream is served as stored when it is a
/// JSON object (with its cursor added), and left out when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_entries_are_served_as_stored_or_left_out() {
    let redis = testkit::RedisServer::start().expect("start redis-server");
    let bus = open(&redis.url()).await;
    let base = serve(eventbus::http::router(&bus)).await;
    let stream = "{eventbus}:stream:foreign_thing";
    redis
        .cmd(&["XADD", stream, "*", "cloud_event", "not json {"])
        .unwrap();
    let odd = r#"{"specversion":"1.0","id":"f-1","source":"/py","type":"foreign_thing","data":{"note":"\"feedcursor\" is just text here"}}"#;
    redis
        .cmd(&["XADD", stream, "*", "cloud_event", odd])
        .unwrap();
    // A legacy producer's bare data: wrapped, with the id every reader gives it.
    redis
        .cmd(&["XADD", stream, "*", "data", r#"{"id":5}"#])
        .unwrap();
    let p = get(&base, "types=foreign_thing").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.events.len(), 2, "{}", p.body);
    assert_eq!(p.events[0]["id"], "f-1");
    assert!(p.events[0]["feedcursor"].is_string(), "{}", p.events[0]);
    assert_eq!(p.events[1]["data"], serde_json::json!({"id": 5}));
    let again = get(&base, "types=foreign_thing").await;
    assert_eq!(
        again.events[1]["id"], p.events[1]["id"],
        "the same id at every read"
    );
}
