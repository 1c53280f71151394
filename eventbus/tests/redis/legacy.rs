//! Interop with existing (Python/Django) services through the bus, against
//! a real `redis-server` per test: bare-JSON pub/sub (`?mode=pubsub&codec=legacy`)
//! in both directions, including a deprecated legacy channel reaching the
//! handler of its replacement, and the django-broadcaster stream layout.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::support::*;
use eventbus::{Bus, CloudEvent, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Triggered when the review is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated {
    id: Uuid,
}

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_approved", deprecated = "use moderate_action", replaced_by = ModerateAction)]
struct ReviewApproved {
    id: Uuid,
}

/// Triggered when a moderator acts (status 1 approved, 2 rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action")]
struct ModerateAction {
    action_id: Option<Uuid>,
    status: u8,
    model_name: String,
    id: Uuid,
}

impl From<ReviewApproved> for ModerateAction {
    fn from(old: ReviewApproved) -> Self {
        ModerateAction {
            action_id: None,
            status: 1,
            model_name: "Review".into(),
            id: old.id,
        }
    }
}

/// (handler, CloudEvents type as received, detail)
type Log = Arc<Mutex<Vec<(&'static str, String, String)>>>;

fn count(log: &Log, handler: &str) -> usize {
    log.lock().iter().filter(|(h, _, _)| *h == handler).count()
}

fn of(log: &Log, handler: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = log
        .lock()
        .iter()
        .filter(|(h, _, _)| *h == handler)
        .map(|(_, t, d)| (t.clone(), d.clone()))
        .collect();
    v.sort();
    v
}

fn handlers(log: &Log) -> Vec<HandlerDef> {
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    vec![
        HandlerDef::new(
            "on_review_created",
            move |e: ReviewCreated, ctx: Context| {
                let log = a.clone();
                async move {
                    log.lock().push((
                        "on_review_created",
                        ctx.event_type().to_owned(),
                        format!("{} from {}", e.id, ctx.source()),
                    ));
                }
            },
        )
        .retries(0),
        HandlerDef::new(
            "on_moderate_action",
            move |e: ModerateAction, ctx: Context| {
                let log = b.clone();
                async move {
                    log.lock().push((
                        "on_moderate_action",
                        ctx.event_type().to_owned(),
                        format!("{} status {} {}", e.id, e.status, e.model_name),
                    ));
                }
            },
        ),
        HandlerDef::new(
            "legacy_on_review_approved",
            move |e: ReviewApproved, ctx: Context| {
                let log = c.clone();
                async move {
                    log.lock().push((
                        "legacy_on_review_approved",
                        ctx.event_type().to_owned(),
                        e.id.to_string(),
                    ));
                }
            },
        ),
    ]
}

async fn legacy_bus(url: &str, log: &Log) -> Bus {
    let mut builder = Bus::builder()
        .service("reviews")
        .without_registered()
        .retry_policy(fast_retries());
    for h in handlers(log) {
        builder = builder.handler(h);
    }
    builder.connect(url).await.unwrap()
}

/// Waits until every channel has at least `n` subscribers (pub/sub delivers
/// only to those connected when the message is published).
async fn wait_for_subscribers(server: &testkit::RedisServer, channels: &[(&str, u64)]) {
    wait_until("the bus subscribed to its channels", || {
        channels.iter().all(|(ch, n)| {
            let reply = server.cmd(&["PUBSUB", "NUMSUB", ch]).unwrap();
            reply
                .lines()
                .nth(1)
                .and_then(|c| c.parse::<u64>().ok())
                .is_some_and(|c| c >= *n)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_publish_of_bare_json_reaches_the_typed_handlers() {
    let server = server();
    let log = Log::default();
    let bus = legacy_bus(&with(&server.url(), "mode=pubsub&codec=legacy"), &log).await;
    assert_eq!(bus.transport().name(), "redis-pubsub");
    let mut running = bus.spawn();
    // Every subscription live, the pub/sub groups' leases taken (the
    // channel subscriptions alone come a moment before the lease).
    running.ready().await.unwrap();
    // review_approved: the old handler, and the new one through replaced_by.
    wait_for_subscribers(
        &server,
        &[
            ("review_created", 1),
            ("review_approved", 2),
            ("moderate_action", 1),
        ],
    )
    .await;

    // What a Python service does today.
    let (created, approved) = (Uuid::now_v7(), Uuid::now_v7());
    let receivers = server
        .cmd(&[
            "PUBLISH",
            "review_created",
            &format!(r#"{{"id": "{created}"}}"#),
        ])
        .unwrap();
    assert_eq!(receivers, "1");
    server
        .cmd(&[
            "PUBLISH",
            "review_approved",
            &format!(r#"{{"id": "{approved}"}}"#),
        ])
        .unwrap();
    let action = Uuid::now_v7();
    server
        .cmd(&[
            "PUBLISH",
            "moderate_action",
            &format!(
                r#"{{"action_id": "{action}", "status": 2, "model_name": "Review", "id": "{created}"}}"#
            ),
        ])
        .unwrap();
    wait_until("every legacy message handled", || {
        count(&log, "on_review_created") >= 1
            && count(&log, "on_moderate_action") >= 2
            && count(&log, "legacy_on_review_approved") >= 1
    })
    .await;
    running.shutdown().await.unwrap();

    assert_eq!(
        of(&log, "on_review_created"),
        [(
            "review_created".to_owned(),
            format!("{created} from /redis/review_created")
        )],
        "wrapped into a CloudEvent of the channel's type"
    );
    assert_eq!(
        of(&log, "on_moderate_action"),
        {
            let mut v = vec![
                (
                    "moderate_action".to_owned(),
                    format!("{created} status 2 Review"),
                ),
                (
                    "review_approved".to_owned(),
                    format!("{approved} status 1 Review"),
                ),
            ];
            v.sort();
            v
        },
        "the deprecated channel reached the ModerateAction handler through From<ReviewApproved>"
    );
    assert_eq!(
        of(&log, "legacy_on_review_approved"),
        [("review_approved".to_owned(), approved.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_legacy_payloads_go_to_the_dlq_with_the_reason() {
    let server = server();
    let log = Log::default();
    let bus = legacy_bus(&with(&server.url(), "mode=pubsub&codec=legacy"), &log).await;
    let mut running = bus.spawn();
    // Every subscription live, the pub/sub groups' leases taken (the
    // channel subscriptions alone come a moment before the lease).
    running.ready().await.unwrap();
    wait_for_subscribers(&server, &[("review_created", 1)]).await;
    server
        .cmd(&["PUBLISH", "review_created", "not json"])
        .unwrap();
    server
        .cmd(&["PUBLISH", "review_created", r#"{"id": 5}"#])
        .unwrap();
    let good = Uuid::now_v7();
    server
        .cmd(&[
            "PUBLISH",
            "review_created",
            &format!(r#"{{"id": "{good}"}}"#),
        ])
        .unwrap();
    wait_until_async("both bad payloads dead-lettered", || async {
        bus.dead_letters(10).await.unwrap().len() >= 2
    })
    .await;
    wait_until("the good one handled", || {
        count(&log, "on_review_created") >= 1
    })
    .await;
    running.shutdown().await.unwrap();
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| (d.group.as_str(), d.error.as_str()))
        .collect();
    assert!(
        dead.iter()
            .any(|d| d.payload == "not json" && d.error.contains("message is not JSON")),
        "{reasons:?}"
    );
    assert!(
        dead.iter().any(|d| d.error.contains("data.id")),
        "{reasons:?}"
    );
    assert!(
        dead.iter().all(|d| d.group == "reviews.on_review_created"),
        "{reasons:?}"
    );
}

/// A raw `SUBSCRIBE` connection, as a Python subscriber would hold.
struct RawSubscriber {
    reader: BufReader<TcpStream>,
}

impl RawSubscriber {
    fn connect(port: u16, channel: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        write!(
            writer,
            "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
            channel.len()
        )
        .unwrap();
        let mut sub = RawSubscriber {
            reader: BufReader::new(stream),
        };
        let confirm = sub.next_push();
        assert_eq!(confirm[0], b"subscribe");
        sub
    }

    /// The next push message as its parts (`message`, channel, payload).
    fn next_push(&mut self) -> Vec<Vec<u8>> {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let n: usize = line
            .trim_end()
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected an array, got {line:?}"));
        (0..n)
            .map(|_| {
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if let Some(int) = line.strip_prefix(':') {
                    return int.as_bytes().to_vec();
                }
                let len: usize = line
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("expected a bulk string, got {line:?}"));
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(len);
                buf
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_publishes_bare_json_that_legacy_subscribers_read() {
    let server = server();
    let log = Log::default();
    let bus = legacy_bus(&with(&server.url(), "mode=pubsub&codec=legacy"), &log).await;
    let mut running = bus.spawn();
    // Every subscription live, the pub/sub groups' leases taken (the
    // channel subscriptions alone come a moment before the lease).
    running.ready().await.unwrap();
    wait_for_subscribers(&server, &[("review_created", 1)]).await;
    let port = server.port();
    let python = tokio::task::spawn_blocking(move || {
        let mut sub = RawSubscriber::connect(port, "review_created");
        sub.next_push()
    });
    wait_for_subscribers(&server, &[("review_created", 2)]).await;

    let id = Uuid::now_v7();
    bus.publish(ReviewCreated { id }).await.unwrap();
    let msg = python.await.unwrap();
    assert_eq!(msg[0], b"message");
    assert_eq!(msg[1], b"review_created", "channel = event type, no prefix");
    assert_eq!(
        String::from_utf8(msg[2].clone()).unwrap(),
        format!(r#"{{"id":"{id}"}}"#),
        "the bare data JSON, byte-compatible with the Python services"
    );
    // And our own handler got it back as a typed event.
    wait_until("the bus handled its own event", || {
        count(&log, "on_review_created") >= 1
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(
        of(&log, "on_review_created"),
        [(
            "review_created".to_owned(),
            format!("{id} from /redis/review_created")
        )]
    );
}

/// An entry exactly as django-broadcaster's `RedisStreamBackend.publish`
/// writes it.
fn django_xadd(id: &str, ty: &str, data: &str) -> Vec<String> {
    let time = "2025-06-01T12:30:00.123456+00:00";
    let ce = format!(
        r#"{{"specversion": "1.0", "type": "{ty}", "source": "reviews", "id": "{id}", "time": "{time}", "datacontenttype": "application/json", "data": {data}}}"#
    );
    [
        "XADD",
        "events",
        "MAXLEN",
        "~",
        "10000",
        "*",
        "event_id",
        id,
        "event_type",
        ty,
        "source",
        "reviews",
        "timestamp",
        time,
        "cloud_event",
        &ce,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_django_broadcaster_layout_round_trips_through_the_bus() {
    let server = server();
    let log = Log::default();
    let global = log.clone();
    let mut builder = Bus::builder()
        .service("reviews")
        .without_registered()
        .handler(HandlerDef::new(
            "audit",
            move |e: CloudEvent, ctx: Context| {
                let log = global.clone();
                async move {
                    use eventbus::cloudevents::AttributesReader;
                    log.lock()
                        .push(("audit", ctx.event_type().to_owned(), e.id().to_owned()));
                }
            },
        ));
    for h in handlers(&log) {
        builder = builder.handler(h);
    }
    let bus = builder
        .connect(&with(&server.url(), "layout=django&stream=events"))
        .await
        .unwrap();
    let mut running = bus.spawn();
    // Every subscription live, the pub/sub groups' leases taken (the
    // channel subscriptions alone come a moment before the lease).
    running.ready().await.unwrap();

    // Django writes two events of different types into `events`.
    let review = Uuid::now_v7();
    let (id_1, id_2) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    for (id, ty, data) in [
        (&id_1, "review_created", format!(r#"{{"id": "{review}"}}"#)),
        (
            &id_2,
            "moderate_action",
            format!(
                r#"{{"action_id": null, "status": 1, "model_name": "Review", "id": "{review}"}}"#
            ),
        ),
    ] {
        let args = django_xadd(id, ty, &data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.cmd(&args).unwrap();
    }
    // And we publish one into the same layout.
    let ours = Uuid::now_v7();
    bus.publish(ReviewCreated { id: ours }).await.unwrap();

    wait_until("both handlers and audit saw their events", || {
        count(&log, "on_review_created") >= 2
            && count(&log, "on_moderate_action") >= 1
            && count(&log, "audit") >= 3
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(of(&log, "on_review_created"), {
        let mut v = vec![
            (
                "review_created".to_owned(),
                format!("{review} from reviews"),
            ),
            ("review_created".to_owned(), format!("{ours} from /reviews")),
        ];
        v.sort();
        v
    });
    assert_eq!(
        of(&log, "on_moderate_action"),
        [(
            "moderate_action".to_owned(),
            format!("{review} status 1 Review")
        )]
    );
    let audited: Vec<String> = of(&log, "audit").into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        audited,
        ["moderate_action", "review_created", "review_created"]
    );
    assert!(of(&log, "audit").iter().any(|(_, id)| *id == id_1));

    // What we wrote is what django-broadcaster writes.
    let raw = server
        .cmd(&["XREVRANGE", "events", "+", "-", "COUNT", "1"])
        .unwrap();
    let f: Vec<&str> = raw.lines().skip(1).collect();
    assert_eq!(
        [f[0], f[2], f[3], f[4], f[5], f[6], f[8]],
        [
            "event_id",
            "event_type",
            "review_created",
            "source",
            "/reviews",
            "timestamp",
            "cloud_event"
        ]
    );
    let ce: serde_json::Value = serde_json::from_str(f[9]).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], f[1]);
    assert_eq!(ce["time"], f[7]);
    assert_eq!(ce["type"], "review_created");
    assert_eq!(ce["data"], serde_json::json!({ "id": ours }));
    // Every group acked every entry: filtered ones included.
    for group in [
        "reviews.on_review_created",
        "reviews.on_moderate_action",
        "reviews.legacy_on_review_approved",
        "reviews.audit",
    ] {
        assert_eq!(pending(&server, "events", group), 0, "{group}");
    }
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_the_legacy_codec_carry_bare_data() {
    let server = server();
    let log = Log::default();
    let bus = legacy_bus(&with(&server.url(), "codec=legacy"), &log).await;
    assert_eq!(bus.transport().name(), "redis-streams");
    let mut running = bus.spawn();
    // Every subscription live, the pub/sub groups' leases taken (the
    // channel subscriptions alone come a moment before the lease).
    running.ready().await.unwrap();
    let (ours, theirs) = (Uuid::now_v7(), Uuid::now_v7());
    bus.publish(ReviewCreated { id: ours }).await.unwrap();
    // A legacy producer appending bare data to the same stream.
    server
        .cmd(&[
            "XADD",
            &stream_key("review_created"),
            "*",
            "data",
            &format!(r#"{{"id": "{theirs}"}}"#),
        ])
        .unwrap();
    wait_until("both handled", || count(&log, "on_review_created") >= 2).await;
    running.shutdown().await.unwrap();
    let raw = server
        .cmd(&[
            "XRANGE",
            &stream_key("review_created"),
            "-",
            "+",
            "COUNT",
            "1",
        ])
        .unwrap();
    let fields: Vec<&str> = raw.lines().skip(1).collect();
    assert_eq!(fields, ["data".to_owned(), format!(r#"{{"id":"{ours}"}}"#)]);
    assert_eq!(of(&log, "on_review_created"), {
        let mut v = vec![
            (
                "review_created".to_owned(),
                format!("{ours} from /redis/review_created"),
            ),
            (
                "review_created".to_owned(),
                format!("{theirs} from /redis/review_created"),
            ),
        ];
        v.sort();
        v
    });
}
