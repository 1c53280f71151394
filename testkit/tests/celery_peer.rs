//! The Celery peer itself (testkit/python/celery_peer.py): a real Celery
//! worker runs what the peer's client sends, returns results through the
//! backend, and a task whose worker was killed mid-run comes back, once,
//! through kombu's restore of `unacked`.
//!
//! Kombu 5.7's restore, measured with visibility 2 s, prefork, 2 cores: a
//! worker sweeps `unacked_index` for deliveries older than the visibility
//! timeout once when it starts (`on_poll_init`) and then only on every 10th
//! call of a 10 s timer, i.e. every 100 s. A worker started right after the
//! kill (before the 2 s had passed) picked the task up 100 s later (106 s
//! after the kill, its 5 s sleep included); one started 3 s after the kill
//! took it at once, 0.4 s after it started. The tests below use both fast
//! paths (a start after the timeout; a 1 s sweep), with a deadline that
//! still covers kombu's 100 s one.
//!
//! The sweep goes by the time of delivery alone, running or not: a task
//! that runs longer than the visibility timeout is restored while it runs
//! and delivered again (with a 1 s sweep, the second worker ran its own
//! 5 s task twice). So the second workers here do not sleep.

use std::time::{Duration, Instant};

use testkit::{CeleryWorker, CeleryWorkerOptions, RedisServer, celery_peer};

/// Longer than kombu's slowest sweep (100 s), plus the task's own sleep.
const RESTORED: Duration = Duration::from_secs(150);

fn poll(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The records in `key`, one JSON object per line.
fn records(redis: &RedisServer, key: &str) -> Vec<String> {
    let all = redis.cmd(&["LRANGE", key, "0", "-1"]).unwrap();
    all.lines().map(str::to_owned).collect()
}

fn started(opts: &CeleryWorkerOptions) -> CeleryWorker {
    let mut worker = CeleryWorker::start(opts).unwrap();
    worker.wait_ready(testkit::DEADLINE).unwrap();
    worker
}

#[test]
fn a_python_worker_runs_what_the_peer_client_sends_and_returns_its_result() {
    let redis = RedisServer::start().unwrap();
    let backend = redis.url().replace("/0", "/1");
    let opts = CeleryWorkerOptions {
        backend: Some(backend.clone()),
        queues: vec!["sms_send_queue".into()],
        ..CeleryWorkerOptions::new(redis.url())
    };
    let worker = started(&opts);
    let broker = redis.url();
    let env = [
        ("CELERY_PEER_BROKER", broker.as_str()),
        ("CELERY_PEER_BACKEND", backend.as_str()),
    ];

    let out = celery_peer(
        &[
            "send",
            "send_short_message",
            "[42]",
            "--queue",
            "sms_send_queue",
        ],
        &env,
    )
    .unwrap();
    let id = out.trim();
    assert_eq!(id.len(), 36, "a task id: {out}");

    poll("the worker recorded the task", testkit::DEADLINE, || {
        !records(&redis, "peer:ran").is_empty()
    });
    let ran = records(&redis, "peer:ran");
    assert_eq!(ran.len(), 1, "{ran:?}");
    for part in [
        r#""task": "send_short_message""#.to_owned(),
        format!(r#""id": "{id}""#),
        r#""args": [42]"#.to_owned(),
        r#""kwargs": {}"#.to_owned(),
        r#""worker": "python""#.to_owned(),
        format!(r#""hostname": "{}""#, worker.hostname()),
        r#""retries": 0"#.to_owned(),
        r#""redelivered": false"#.to_owned(),
    ] {
        assert!(ran[0].contains(&part), "{part} in {}", ran[0]);
    }

    let result = celery_peer(&["get", id, "--timeout", "60"], &env).unwrap();
    assert_eq!(
        result.trim(),
        r#"{"ok": true, "task": "send_short_message"}"#
    );

    // Several at once, each id on its own line; and noop only counts.
    let out = celery_peer(
        &[
            "send",
            "noop",
            "[]",
            "--queue",
            "sms_send_queue",
            "--count",
            "3",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    let out = celery_peer(&["fill", "noop", "5", "--queue", "sms_send_queue"], &env).unwrap();
    assert_eq!(out.trim(), "5");
    poll("the worker ran the 8 noops", testkit::DEADLINE, || {
        redis.cmd(&["GET", "peer:noop:done"]).unwrap() == "8"
    });
    assert_eq!(records(&redis, "peer:ran").len(), 1);
}

/// Sends one task to a worker that sleeps 5 s in it, and kills the worker
/// (and its prefork child) once the task is in kombu's `unacked`.
fn killed_mid_task(redis: &RedisServer, opts: &CeleryWorkerOptions) -> (String, Instant) {
    let mut first = started(opts);
    let broker = redis.url();
    let out = celery_peer(
        &[
            "send",
            "send_short_message",
            "[7]",
            "--queue",
            "sms_send_queue",
        ],
        &[("CELERY_PEER_BROKER", &broker)],
    )
    .unwrap();
    let id = out.trim().to_owned();
    let received = format!("Task send_short_message[{id}] received");
    poll(
        "the first worker received the task",
        testkit::DEADLINE,
        || first.log().contains(&received),
    );
    assert_eq!(redis.cmd(&["HLEN", "unacked"]).unwrap(), "1");
    first.kill();
    let killed = Instant::now();
    assert!(!first.is_running());
    // Nothing ran it, nothing gave it back.
    assert!(records(redis, "peer:ran").is_empty());
    assert_eq!(redis.cmd(&["HLEN", "unacked"]).unwrap(), "1");
    assert_eq!(redis.cmd(&["LLEN", "sms_send_queue"]).unwrap(), "0");
    (id, killed)
}

fn assert_ran_once_by(redis: &RedisServer, id: &str, worker: &CeleryWorker) {
    poll("the second worker ran the restored task", RESTORED, || {
        !records(redis, "peer:ran").is_empty()
    });
    // Give a duplicate the time to show up (a sweep after the 2 s).
    std::thread::sleep(Duration::from_secs(4));
    let ran = records(redis, "peer:ran");
    assert_eq!(ran.len(), 1, "once: {ran:?}");
    for part in [
        format!(r#""id": "{id}""#),
        format!(r#""hostname": "{}""#, worker.hostname()),
        r#""args": [7]"#.to_owned(),
        r#""redelivered": true"#.to_owned(),
    ] {
        assert!(ran[0].contains(&part), "{part} in {}", ran[0]);
    }
    poll(
        "the restored task was acknowledged",
        testkit::DEADLINE,
        || redis.cmd(&["HLEN", "unacked"]).unwrap() == "0",
    );
}

#[test]
fn a_task_of_a_killed_worker_is_restored_by_the_next_worker_to_start() {
    let redis = RedisServer::start().unwrap();
    let opts = CeleryWorkerOptions {
        queues: vec!["sms_send_queue".into()],
        visibility_timeout: Duration::from_secs(2),
        sleep: Duration::from_secs(5),
        ..CeleryWorkerOptions::new(redis.url())
    };
    let (id, killed) = killed_mid_task(&redis, &opts);
    // Past the visibility timeout, so that the new worker's sweep at start
    // finds the delivery expired (before it, the next sweep is 100 s away).
    std::thread::sleep((killed + Duration::from_secs(3)).saturating_duration_since(Instant::now()));
    let second = started(&CeleryWorkerOptions {
        sleep: Duration::ZERO,
        ..opts
    });
    assert_ran_once_by(&redis, &id, &second);
}

#[test]
fn a_running_worker_restores_a_killed_workers_task_after_the_visibility_timeout() {
    let redis = RedisServer::start().unwrap();
    let opts = CeleryWorkerOptions {
        queues: vec!["sms_send_queue".into()],
        visibility_timeout: Duration::from_secs(2),
        sleep: Duration::from_secs(5),
        // A sweep every second rather than kombu's every 100 s.
        restore_interval: Some(Duration::from_secs(1)),
        restore_throttle: Some(1),
        ..CeleryWorkerOptions::new(redis.url())
    };
    let (id, _) = killed_mid_task(&redis, &opts);
    // Started at once: its first sweep is too early, a later one restores.
    let second = started(&CeleryWorkerOptions {
        sleep: Duration::ZERO,
        ..opts
    });
    assert_ran_once_by(&redis, &id, &second);
}

#[test]
fn a_stopped_worker_finishes_the_task_in_hand_first() {
    let redis = RedisServer::start().unwrap();
    let opts = CeleryWorkerOptions {
        queues: vec!["sms_send_queue".into()],
        pool: testkit::CeleryPool::Solo,
        sleep: Duration::from_secs(2),
        ..CeleryWorkerOptions::new(redis.url())
    };
    let mut worker = started(&opts);
    let broker = redis.url();
    let id = celery_peer(
        &[
            "send",
            "notify_from_rust",
            "[5]",
            "--kwargs",
            r#"{"to": "a@b.c"}"#,
            "--queue",
            "sms_send_queue",
        ],
        &[("CELERY_PEER_BROKER", &broker)],
    )
    .unwrap();
    let received = format!("Task notify_from_rust[{}] received", id.trim());
    poll("the worker received the task", testkit::DEADLINE, || {
        worker.log().contains(&received)
    });
    // Celery's warm shutdown: the task runs to its end and is acknowledged.
    worker.stop(testkit::DEADLINE);
    assert!(!worker.is_running());
    let ran = records(&redis, "peer:ran");
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(
        ran[0].contains(r#""args": [5], "kwargs": {"to": "a@b.c"}"#),
        "{}",
        ran[0]
    );
    assert!(worker.log().contains("Warm shutdown"), "{}", worker.log());
    assert_eq!(redis.cmd(&["HLEN", "unacked"]).unwrap(), "0");
    assert_eq!(redis.cmd(&["LLEN", "sms_send_queue"]).unwrap(), "0");
}
