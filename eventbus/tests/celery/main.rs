//! Celery interop against real Celery 5.7 (kombu 5.7, the pinned Python
//! peers) on a private redis-server: Django's `send_task` reaching typed
//! Rust handlers, Python workers running tasks sent from Rust (directly and
//! through the outbox), one queue served by both kinds at once, killed
//! workers of either kind whose task is restored and run by the survivor,
//! `eta`, `expires`, dead letters, and results read by `AsyncResult.get()`.
#![cfg(all(feature = "redis", feature = "sqlite"))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::celery::CeleryOptions;
use eventbus::outbox::{self, RelayOptions};
use eventbus::{Bus, Context, Event, HandlerDef, RetryPolicy};
use serde::{Deserialize, Serialize};
use testkit::{
    CeleryPool, CeleryWorker, CeleryWorkerOptions, DEADLINE, RedisServer, celery_peer, wait_until,
    wait_until_async,
};

/// Django's `send_task("send_short_message", args=(instance.id,), queue="sms_send_queue")`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_short_message", celery, queue = "sms_send_queue")]
struct SendShortMessage(i64);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_email_task", celery)]
struct SendEmailTask(i64);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_notification", celery)]
struct SendNotification(i64);

/// A task the Python peer runs (`notify_from_rust(*args, **kwargs)`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("notify_from_rust", celery, queue = "py_tasks")]
struct NotifyFromRust(i64);

/// A task with keyword arguments, whose result Rust stores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("add", celery, queue = "math", result)]
struct Add {
    x: i64,
    y: i64,
}

/// A task Rust runs on a queue of its own (dead letters, eta, expiry).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rust_job", celery, queue = "rust_jobs")]
struct RustJob(i64);

/// One run of a Rust handler: `(task, arg, task id, attempt, when)`.
type Run = (String, i64, String, u32, chrono::DateTime<chrono::Utc>);

/// What the Rust handlers ran.
#[derive(Default, Clone)]
struct Ran(Arc<Mutex<Vec<Run>>>);

impl Ran {
    fn record(&self, ctx: &Context, arg: i64) {
        self.0.lock().unwrap().push((
            ctx.event_type().to_owned(),
            arg,
            ctx.id().to_owned(),
            ctx.attempt(),
            chrono::Utc::now(),
        ));
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn all(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }
}

async fn on_sms(task: SendShortMessage, ctx: Context) {
    ctx.state::<Ran>().record(&ctx, task.0);
}
async fn on_email(task: SendEmailTask, ctx: Context) {
    ctx.state::<Ran>().record(&ctx, task.0);
}
async fn on_notification(task: SendNotification, ctx: Context) {
    ctx.state::<Ran>().record(&ctx, task.0);
}
async fn on_job(task: RustJob, ctx: Context) {
    ctx.state::<Ran>().record(&ctx, task.0);
}
async fn on_add(task: Add, ctx: Context) -> Result<(), String> {
    if task.x < 0 {
        return Err(format!(
            "cannot add {} and {}: x is negative",
            task.x, task.y
        ));
    }
    let sum = task.x + task.y;
    if let Some(celery) = ctx.bus().celery() {
        celery.set_result(ctx.id(), serde_json::json!({ "sum": sum }));
    }
    ctx.state::<Ran>().record(&ctx, sum);
    Ok(())
}

fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server (apt-get install -y redis-server)")
}

fn options(visibility: Duration) -> CeleryOptions {
    CeleryOptions {
        visibility_timeout: visibility,
        block: Duration::from_millis(200),
        ..CeleryOptions::default()
    }
}

/// A bus on `url` running `handlers`, recording into the returned [`Ran`].
async fn start_bus(url: &str, handlers: Vec<HandlerDef>, celery: CeleryOptions) -> (Bus, Ran) {
    let ran = Ran::default();
    let mut b = Bus::builder()
        .service("celery-tests")
        .without_registered()
        .state(ran.clone())
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })
        .celery_options(celery);
    for h in handlers {
        b = b.handler(h);
    }
    (b.connect(url).await.expect("connect the bus"), ran)
}

fn peer_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CELERY_PEER_BROKER", url.to_owned()),
        ("CELERY_PEER_BACKEND", url.to_owned()),
    ]
}

fn peer(url: &str, args: &[&str]) -> String {
    let env = peer_env(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    celery_peer(args, &env).unwrap_or_else(|e| panic!("celery_peer {args:?}: {e}"))
}

/// The records of the Python peer's tasks.
fn python_ran(redis: &RedisServer) -> Vec<serde_json::Value> {
    let out = redis
        .cmd(&["LRANGE", "peer:ran", "0", "-1"])
        .expect("LRANGE");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

fn python_worker(
    url: &str,
    queues: &[&str],
    tweak: impl FnOnce(&mut CeleryWorkerOptions),
) -> CeleryWorker {
    let mut opts = CeleryWorkerOptions {
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        pool: CeleryPool::Solo,
        backend: Some(url.to_owned()),
        ..CeleryWorkerOptions::new(url)
    };
    tweak(&mut opts);
    let mut w = CeleryWorker::start(&opts).expect("start a Celery worker");
    w.wait_ready(Duration::from_secs(90))
        .expect("the Celery worker is ready");
    w
}

fn llen(redis: &RedisServer, key: &str) -> usize {
    redis
        .cmd(&["LLEN", key])
        .expect("LLEN")
        .parse()
        .unwrap_or(0)
}

fn hlen(redis: &RedisServer, key: &str) -> usize {
    redis
        .cmd(&["HLEN", key])
        .expect("HLEN")
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_send_task_reaches_the_typed_rust_handlers() {
    let redis = server();
    let url = redis.url();
    let (bus, ran) = start_bus(
        &url,
        vec![
            HandlerDef::new("send_short_message", on_sms),
            HandlerDef::new("send_email_task", on_email),
            HandlerDef::new("send_notification", on_notification),
        ],
        options(Duration::from_secs(3600)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();

    let sms = peer(
        &url,
        &[
            "send",
            "send_short_message",
            "[42]",
            "--queue",
            "sms_send_queue",
        ],
    );
    let email = peer(&url, &["send", "send_email_task", "[43]"]);
    let note = peer(&url, &["send", "send_notification", "[44]"]);
    wait_until("the three tasks ran", || ran.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await.unwrap();

    let got: BTreeMap<String, (i64, String, u32)> = ran
        .all()
        .into_iter()
        .map(|(t, a, id, n, _)| (t, (a, id, n)))
        .collect();
    assert_eq!(ran.len(), 3, "each task once: {:?}", ran.all());
    assert_eq!(got["send_short_message"], (42, sms.trim().to_owned(), 1));
    assert_eq!(got["send_email_task"], (43, email.trim().to_owned(), 1));
    assert_eq!(got["send_notification"], (44, note.trim().to_owned(), 1));
    // Acknowledged: nothing left unacknowledged or queued.
    assert_eq!(hlen(&redis, "unacked"), 0);
    assert_eq!(llen(&redis, "celery") + llen(&redis, "sms_send_queue"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_runs_tasks_sent_from_rust_and_from_the_outbox_after_commit() {
    let redis = server();
    let url = redis.url();
    let _worker = python_worker(&url, &["py_tasks"], |_| {});
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("app.db").display());
    let outbox::Database::Sqlite(pool) = outbox::Database::connect(&db_url).await.unwrap() else {
        unreachable!()
    };
    outbox::migrate(&pool).await.unwrap();
    let bus = Bus::builder()
        .service("celery-tests")
        .without_registered()
        .outbox_relay(RelayOptions::new(&pool))
        .connect(&url)
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();

    // Directly.
    bus.publish(NotifyFromRust(7)).await.unwrap();
    // Through the outbox: rolled back, then committed.
    let mut tx = pool.begin().await.unwrap();
    bus.outbox()
        .send_task(&mut *tx, NotifyFromRust(8))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let committed = bus
        .outbox()
        .send_task(&mut *tx, NotifyFromRust(9))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Not a Celery task: refused with the reason.
    let mut tx = pool.begin().await.unwrap();
    let err = bus
        .outbox()
        .send_task(&mut *tx, SendShortMessageNot(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a Celery task"), "{err}");
    drop(tx);

    wait_until("the Python worker ran both tasks", || {
        python_ran(&redis).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await.unwrap();
    let ran = python_ran(&redis);
    let args: BTreeSet<i64> = ran.iter().map(|r| r["args"][0].as_i64().unwrap()).collect();
    assert_eq!(
        args,
        BTreeSet::from([7, 9]),
        "7 sent, 9 committed, 8 rolled back: {ran:?}"
    );
    assert!(
        ran.iter()
            .all(|r| r["task"] == "notify_from_rust" && r["worker"] == "python")
    );
    let outboxed = ran.iter().find(|r| r["args"][0] == 9).unwrap();
    assert_eq!(
        outboxed["id"],
        committed.to_string(),
        "the task id is the event id"
    );
}

/// Not a Celery task (for the outbox's refusal).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("not_a_task")]
struct SendShortMessageNot(i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_queue_served_by_python_and_rust_runs_each_of_2000_tasks_once() {
    let redis = server();
    let url = redis.url();
    let _py = python_worker(&url, &["celery"], |o| {
        o.pool = CeleryPool::Prefork;
        o.concurrency = 2;
    });
    // Slow enough per task that Python gets its share.
    async fn slow_notification(task: SendNotification, ctx: Context) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        ctx.state::<Ran>().record(&ctx, task.0);
    }
    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("send_notification", slow_notification).concurrency(4)],
        CeleryOptions {
            prefetch: 8,
            ..options(Duration::from_secs(3600))
        },
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let celery = bus.celery().unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..2000i64 {
        sent.insert(
            celery
                .send_task("send_notification", &(i,), &serde_json::json!({}), "celery")
                .await
                .unwrap(),
        );
    }
    wait_until_async("all 2,000 tasks ran", || async {
        ran.len() + python_ran(&redis).len() >= 2000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await.unwrap();

    let rust_ids: Vec<String> = ran.all().into_iter().map(|r| r.2).collect();
    let py = python_ran(&redis);
    let py_ids: Vec<String> = py
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut all: Vec<&String> = rust_ids.iter().chain(&py_ids).collect();
    assert_eq!(
        all.len(),
        2000,
        "rust {} + python {}",
        rust_ids.len(),
        py_ids.len()
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000, "a task ran twice");
    assert_eq!(all.into_iter().cloned().collect::<BTreeSet<_>>(), sent);
    assert!(
        !rust_ids.is_empty() && !py_ids.is_empty(),
        "both served: rust {}, python {}",
        rust_ids.len(),
        py_ids.len()
    );
    assert_eq!(hlen(&redis, "unacked"), 0);
}

/// Not a test: the Rust worker process the kill tests SIGKILL (see `RustChild`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the kill tests as a child worker"]
async fn child_rust_worker() {
    let url = std::env::var("CELERY_CHILD_URL").expect("CELERY_CHILD_URL");
    async fn hang(task: SendShortMessage, ctx: Context) {
        let redis = ctx.state::<String>().clone();
        let client = eventbus_redis::Client::connect_url(&redis).await.unwrap();
        client
            .query::<()>(
                "RPUSH",
                eventbus_redis::redis::cmd("RPUSH")
                    .arg("rust:started")
                    .arg(ctx.id()),
            )
            .await
            .unwrap();
        println!("STARTED {} {}", task.0, ctx.id());
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let bus = Bus::builder()
        .service("celery-child")
        .without_registered()
        .state(url.clone())
        .handler(HandlerDef::new("send_short_message", hang))
        .handler_timeout(None)
        .celery_options(options(Duration::from_secs(2)))
        .connect(&url)
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    println!("READY");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

struct RustChild(
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
);

impl RustChild {
    fn spawn(url: &str) -> RustChild {
        let mut process = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "child_rust_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CELERY_CHILD_URL", url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn the child worker");
        let stdout = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut child = RustChild(process, stdout);
        child.wait_for("READY");
        child
    }

    fn wait_for(&mut self, prefix: &str) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.1.read_line(&mut line).expect("child stdout");
            assert!(n > 0, "the child exited before printing {prefix}");
            if let Some(at) = line.find(prefix) {
                return line[at..].trim().to_owned();
            }
        }
    }
}

impl Drop for RustChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_rust_worker_is_restored_and_run_by_a_python_worker() {
    let redis = server();
    let url = redis.url();
    let mut child = RustChild::spawn(&url);
    let id = peer(
        &url,
        &[
            "send",
            "send_short_message",
            "[42]",
            "--queue",
            "sms_send_queue",
        ],
    );
    let started = child.wait_for("STARTED");
    assert!(started.ends_with(id.trim()), "{started}");
    // A Python worker sweeping every second does not take the task while the
    // Rust worker is alive, however long it runs (its delivery time is kept
    // fresh), past the 2 s visibility timeout.
    let _py = python_worker(&url, &["sms_send_queue"], |o| {
        o.visibility_timeout = Duration::from_secs(2);
        o.restore_interval = Some(Duration::from_secs(1));
        o.restore_throttle = Some(1);
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        python_ran(&redis).is_empty(),
        "the Python worker ran a task the Rust worker holds"
    );
    assert_eq!(hlen(&redis, "unacked"), 1);

    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    wait_until("the Python worker ran the restored task", || {
        !python_ran(&redis).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ran = python_ran(&redis);
    assert_eq!(ran.len(), 1, "once: {ran:?}");
    assert_eq!(ran[0]["id"], id.trim());
    assert_eq!(ran[0]["args"], serde_json::json!([42]));
    assert_eq!(ran[0]["redelivered"], true);
    assert_eq!(hlen(&redis, "unacked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_python_worker_is_restored_and_run_by_a_rust_worker() {
    let redis = server();
    let url = redis.url();
    let mut py = python_worker(&url, &["sms_send_queue"], |o| {
        o.pool = CeleryPool::Prefork;
        o.sleep = Duration::from_secs(30);
        o.visibility_timeout = Duration::from_secs(2);
    });
    let id = peer(
        &url,
        &[
            "send",
            "send_short_message",
            "[42]",
            "--queue",
            "sms_send_queue",
        ],
    );
    wait_until("the Python worker took the task", || {
        hlen(&redis, "unacked") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    py.kill();
    assert_eq!(
        llen(&redis, "sms_send_queue"),
        0,
        "the task is held, not queued"
    );

    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("send_short_message", on_sms)],
        options(Duration::from_secs(2)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    wait_until("the Rust worker ran the restored task", || ran.len() >= 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.shutdown().await.unwrap();
    let all = ran.all();
    assert_eq!(all.len(), 1, "once: {all:?}");
    assert_eq!((all[0].1, all[0].2.as_str()), (42, id.trim()));
    assert_eq!(all[0].3, 2, "a redelivery is the second attempt");
    assert!(python_ran(&redis).is_empty());
    assert_eq!(hlen(&redis, "unacked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eta_expires_unknown_tasks_and_garbage() {
    let redis = server();
    let url = redis.url();
    // Sent before any worker runs: one expires before it is read.
    peer(
        &url,
        &[
            "send",
            "rust_job",
            "[1]",
            "--queue",
            "rust_jobs",
            "--expires",
            "1",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = chrono::Utc::now();
    peer(
        &url,
        &[
            "send",
            "rust_job",
            "[2]",
            "--queue",
            "rust_jobs",
            "--countdown",
            "3",
        ],
    );
    peer(
        &url,
        &["send", "no_such_task", "[3]", "--queue", "rust_jobs"],
    );
    redis
        .cmd(&["LPUSH", "rust_jobs", "{\"body\": \"not base64 \\u0007!\", \"headers\": {\"task\": \"rust_job\", \"id\": \"x\"}, \"properties\": {\"body_encoding\": \"base64\", \"delivery_tag\": \"t1\"}}"])
        .unwrap();
    redis
        .cmd(&["LPUSH", "rust_jobs", "garbage\u{1b}[31m"])
        .unwrap();
    peer(
        &url,
        &[
            "send",
            "rust_job",
            "[4]",
            "--queue",
            "rust_jobs",
            "--kwargs",
            "{\"extra\": 1}",
        ],
    );
    peer(&url, &["send", "rust_job", "[5]", "--queue", "rust_jobs"]);

    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("rust_job", on_job)],
        options(Duration::from_secs(3600)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let ready_at = chrono::Utc::now();
    wait_until("the due task and the eta task ran", || ran.len() >= 2).await;
    let dead = loop {
        let dead = bus.dead_letters(10).await.unwrap();
        if dead.len() >= 4 {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.unwrap();

    let all = ran.all();
    let mut args: Vec<i64> = all.iter().map(|r| r.1).collect();
    if ready_at + chrono::Duration::milliseconds(500) < sent + chrono::Duration::seconds(3) {
        assert_eq!(
            args,
            vec![5, 2],
            "5 at once, 2 at its eta, 1 expired: {all:?}"
        );
    } else {
        // The set-up (four Python processes) outlasted the countdown: both
        // were due when the worker started.
        args.sort_unstable();
        assert_eq!(args, vec![2, 5], "2 and 5 ran, 1 expired: {all:?}");
    }
    let eta_run = all.iter().find(|r| r.1 == 2).expect("2 ran").4;
    assert!(
        eta_run >= sent + chrono::Duration::milliseconds(2950),
        "ran at {eta_run}, sent at {sent}"
    );
    let reasons: Vec<String> = dead.iter().map(|d| d.error.clone()).collect();
    let has = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    assert!(
        has("no handler for Celery task `no_such_task` on queue `rust_jobs`"),
        "{reasons:#?}"
    );
    assert!(has("its base64 body does not decode"), "{reasons:#?}");
    assert!(
        has("the message is not a kombu message (JSON)"),
        "{reasons:#?}"
    );
    assert!(
        has(
            "task `rust_job` takes one argument; the message has 1 positional and 1 keyword arguments"
        ),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().all(|r| !r.chars().any(|c| c.is_control())),
        "no raw control characters: {reasons:#?}"
    );
    let unknown = dead
        .iter()
        .find(|d| d.error.contains("no_such_task"))
        .unwrap();
    assert_eq!(unknown.event_type.as_deref(), Some("no_such_task"));
    // The payload is the message as received: replaying it puts it back.
    assert!(String::from_utf8_lossy(&unknown.payload).contains("\"task\": \"no_such_task\""));
    assert!(bus.replay_dead_letter(&unknown.id).await.unwrap());
    assert_eq!(llen(&redis, "rust_jobs"), 1);
    assert_eq!(hlen(&redis, "unacked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_written_by_rust_is_read_by_async_result_get() {
    let redis = server();
    let url = redis.url();
    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("add", on_add).retries(1)],
        options(Duration::from_secs(3600)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let by_position = peer(&url, &["send", "add", "[2, 3]", "--queue", "math"]);
    let by_name = peer(
        &url,
        &[
            "send",
            "add",
            "[]",
            "--queue",
            "math",
            "--kwargs",
            "{\"x\": 10, \"y\": 5}",
        ],
    );
    let got = peer(&url, &["get", by_position.trim(), "--timeout", "30"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got).unwrap(),
        serde_json::json!({"sum": 5})
    );
    let got = peer(&url, &["get", by_name.trim(), "--timeout", "30"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got).unwrap(),
        serde_json::json!({"sum": 15})
    );
    // Sent from Rust, read from Rust.
    let id = bus
        .celery()
        .unwrap()
        .send_task("add", &(20, 22), &serde_json::json!({}), "math")
        .await
        .unwrap();
    wait_until("three sums", || ran.len() >= 3).await;
    wait_until_async("the result is stored", || async {
        bus.celery().unwrap().result(&id).await.unwrap().is_some()
    })
    .await;
    let meta = bus.celery().unwrap().result(&id).await.unwrap().unwrap();
    assert_eq!(
        (meta["status"].as_str(), &meta["result"]),
        (Some("SUCCESS"), &serde_json::json!({"sum": 42}))
    );
    // A task that ends in the dead-letter queue is a FAILURE: `get()` raises.
    let failing = peer(&url, &["send", "add", "[-1, 1]", "--queue", "math"]);
    let env = peer_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let raised = celery_peer(&["get", failing.trim(), "--timeout", "60"], &env)
        .expect_err("get() raises for a failed task");
    assert!(
        raised
            .to_string()
            .contains("cannot add -1 and 1: x is negative"),
        "{raised}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_new_message_with_retries_and_eta_and_shutdown_gives_back_what_was_read_ahead()
{
    let redis = server();
    let url = redis.url();
    async fn flaky(task: RustJob, ctx: Context) -> eventbus::Result<()> {
        ctx.state::<Ran>().record(&ctx, task.0);
        if ctx.attempt() == 1 {
            return Err(eventbus::Error::Config("first attempt fails".into()));
        }
        Ok(())
    }
    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("rust_job", flaky)],
        options(Duration::from_secs(3600)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    let id = peer(&url, &["send", "rust_job", "[7]", "--queue", "rust_jobs"]);
    wait_until("two attempts", || ran.len() >= 2).await;
    let all = ran.all();
    assert_eq!((all[0].2.as_str(), all[0].3), (id.trim(), 1));
    assert_eq!(
        (all[1].2.as_str(), all[1].3),
        (id.trim(), 2),
        "the same task id, retries + 1"
    );
    running.shutdown().await.unwrap();
    assert_eq!(hlen(&redis, "unacked"), 0);

    // Read ahead, not run: back on the queue at shutdown.
    async fn slow(task: RustJob, ctx: Context) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ctx.state::<Ran>().record(&ctx, task.0);
    }
    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("rust_job", slow).concurrency(1)],
        options(Duration::from_secs(3600)),
    )
    .await;
    for i in 0..20 {
        peer(
            &url,
            &[
                "send",
                "rust_job",
                &format!("[{i}]"),
                "--queue",
                "rust_jobs",
            ],
        );
    }
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    wait_until("one ran", || ran.len() >= 1).await;
    let begun = Instant::now();
    running.shutdown().await.unwrap();
    assert!(begun.elapsed() < DEADLINE);
    let done = ran.len();
    assert_eq!(hlen(&redis, "unacked"), 0, "nothing left unacknowledged");
    assert_eq!(
        llen(&redis, "rust_jobs"),
        20 - done,
        "the rest is back on the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_dead_reader_left_in_its_hand_off_list_is_given_back() {
    let redis = server();
    let url = redis.url();
    // A Rust reader's blocking read moved a task to its hand-off list, and
    // the process died before registering it (its deadline long passed).
    let (bus, _) = start_bus(&url, vec![], options(Duration::from_secs(3600))).await;
    let id = bus
        .celery()
        .unwrap()
        .send_task("rust_job", &(11,), &serde_json::json!({}), "rust_jobs")
        .await
        .unwrap();
    let handoff = "_eventbus.celery.handoff.eventbus-dead@host.rust_jobs";
    redis
        .cmd(&["LMOVE", "rust_jobs", handoff, "RIGHT", "LEFT"])
        .unwrap();
    redis
        .cmd(&["HSET", "_eventbus.celery.handoffs", handoff, "1 rust_jobs"])
        .unwrap();

    let (bus, ran) = start_bus(
        &url,
        vec![HandlerDef::new("rust_job", on_job)],
        options(Duration::from_secs(3600)),
    )
    .await;
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    wait_until("the handed-off task ran", || ran.len() >= 1).await;
    running.shutdown().await.unwrap();
    let all = ran.all();
    assert_eq!(
        (all.len(), all[0].1, all[0].2.as_str()),
        (1, 11, id.as_str())
    );
    assert_eq!(llen(&redis, handoff), 0);
    let left = redis.cmd(&["HKEYS", "_eventbus.celery.handoffs"]).unwrap();
    assert!(!left.contains("eventbus-dead"), "{left}");
    assert_eq!(hlen(&redis, "unacked"), 0);
}
