//! The migration recipe end to end, with real processes on a real
//! `redis-server`: a group on pub/sub run by two worker processes (each job
//! once: the group's lease; the survivor takes over when the holder is
//! SIGKILLed), a task queue on Streams routed next to the legacy catalogue
//! on pub/sub (`EVENTBUS_ROUTES`), the bridge of legacy pub/sub messages
//! into Streams (`EVENTBUS_BRIDGES`) with two instances fed by redis-py,
//! and the configuration errors of those variables.
//!
//! The workers are this test binary run again with `MIGRATION_CHILD` set
//! (see [`child_process`]); they append what they handled to a log file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use eventbus::{Bus, Context, Event, HandlerDef};
use serde::{Deserialize, Serialize};

/// A legacy event: Django publishes `{"id": "..."}` on its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mig_review_created")]
struct ReviewCreated {
    id: String,
}

/// A job of the `mig_sms_send_queue` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mig_send_short_message")]
struct SendShortMessage {
    n: u32,
}

const CHILD_ENV: &str = "MIGRATION_CHILD";
const URL_ENV: &str = "MIGRATION_URL";
const LOG_ENV: &str = "MIGRATION_LOG";

/// The values of the `<what> <value>` lines of a log.
fn values(path: &Path, what: &str) -> Vec<String> {
    let prefix = format!("{what} ");
    read_log(path)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Not a test of its own: the body of the worker processes. Without
/// `MIGRATION_CHILD` it returns at once.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = PathBuf::from(std::env::var(LOG_ENV).expect("MIGRATION_LOG"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let jobs = {
            let log = log.clone();
            HandlerDef::new("send_short_message", move |job: SendShortMessage| {
                let log = log.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    log_line(&log, format!("job {}", job.n));
                }
            })
            .group("mig_sms_send_queue")
            .concurrency(4)
        };
        let reviews = {
            let log = log.clone();
            HandlerDef::new(
                "on_review_created",
                move |r: ReviewCreated, ctx: Context| {
                    let log = log.clone();
                    async move { log_line(&log, format!("review {} {}", r.id, ctx.id())) }
                },
            )
        };
        let builder = Bus::builder()
            .service("mig")
            .without_registered()
            .retry_policy(fast_retries());
        let bus = match mode.as_str() {
            // A worker of the queue on `MIGRATION_URL` (pub/sub).
            "pubsub-worker" => {
                let url = std::env::var(URL_ENV).expect("MIGRATION_URL");
                builder.handler(jobs).connect(&url).await
            }
            // The queue and the legacy handler, configured by the environment
            // (EVENTBUS_URL, EVENTBUS_ROUTES or EVENTBUS_BRIDGES).
            "env-worker" => builder.handler(jobs).handler(reviews).connect_env().await,
            // Only builds from the environment, and logs the outcome.
            "env-check" => {
                match builder.handler(jobs).handler(reviews).connect_env().await {
                    Ok(_) => log_line(&log, "built".into()),
                    Err(e) => log_line(&log, format!("error {e}")),
                }
                return;
            }
            other => panic!("unknown child mode {other}"),
        };
        let bus = bus.unwrap();
        let mut running = bus.spawn();
        running.ready().await.unwrap();
        log_line(&log, "ready".into());
        // Runs until killed.
        std::future::pending::<()>().await;
    });
}

/// Runs this test binary again as a worker in `mode` with `env`.
fn spawn_child(mode: &str, log: &Path, env: &[(&str, &str)]) -> KillOnDrop {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "--exact",
        "migration::child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .env(LOG_ENV, log)
    .env_remove("EVENTBUS_URL")
    .env_remove("EVENTBUS_ROUTES")
    .env_remove("EVENTBUS_BRIDGES")
    .env("RUST_BACKTRACE", "0")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().expect("spawn the child process"))
}

/// How many times each value was handled, over all logs.
fn counts(logs: &[&Path], what: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for log in logs {
        for v in values(log, what) {
            let key = v.split(' ').next().unwrap_or_default().to_owned();
            *out.entry(key).or_insert(0) += 1;
        }
    }
    out
}

/// Waits until `log` says its bus is ready.
async fn ready(log: &Path) {
    wait_until("the worker process is ready", || {
        read_log(log).iter().any(|l| l == "ready")
    })
    .await;
}

/// Lets late duplicates arrive before counting (they never should).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

fn numbers(range: std::ops::Range<u32>) -> BTreeMap<String, usize> {
    range.map(|n| (n.to_string(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_on_a_pubsub_group_handle_each_job_once_and_fail_over() {
    let server = server();
    let url = with(&server.url(), "mode=pubsub");
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let mut workers: Vec<KillOnDrop> = logs
        .iter()
        .map(|log| spawn_child("pubsub-worker", log, &[(URL_ENV, &url)]))
        .collect();
    for log in &logs {
        ready(log).await;
    }
    let publisher = Bus::builder()
        .service("django")
        .without_registered()
        .connect(&url)
        .await
        .unwrap();
    publisher
        .publish_batch((0..200).map(|n| SendShortMessage { n }))
        .await
        .unwrap();
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    wait_until("200 jobs handled", || {
        counts(&paths, "job").values().sum::<usize>() >= 200
    })
    .await;
    settle().await;
    assert_eq!(
        counts(&paths, "job"),
        numbers(0..200),
        "each job handled exactly once across the two processes (not 400)"
    );
    // One instance of the group at a time holds the lease and handles.
    let per_worker: Vec<usize> = logs.iter().map(|l| values(l, "job").len()).collect();
    let holder = per_worker
        .iter()
        .position(|&n| n == 200)
        .unwrap_or_else(|| {
            panic!("one process handled the group's jobs: {per_worker:?}");
        });
    let survivor = 1 - holder;

    // The holder dies: the survivor takes the group over.
    workers[holder].kill();
    let died = Instant::now();
    let mut probe = 1000;
    let deadline = Instant::now() + DEADLINE;
    loop {
        publisher
            .publish(SendShortMessage { n: probe })
            .await
            .unwrap();
        probe += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !values(&logs[survivor], "job")
            .iter()
            .all(|n| n.parse::<u32>().unwrap() < 1000)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the survivor never took over");
    }
    eprintln!(
        "the survivor took the pub/sub group over {:?} after the holder was SIGKILLed",
        died.elapsed()
    );
    publisher
        .publish_batch((2000..2100).map(|n| SendShortMessage { n }))
        .await
        .unwrap();
    wait_until("the survivor handled the next 100 jobs", || {
        values(&logs[survivor], "job")
            .iter()
            .filter(|n| n.parse::<u32>().unwrap() >= 2000)
            .count()
            >= 100
    })
    .await;
    settle().await;
    let after: BTreeMap<String, usize> = counts(&[&logs[survivor]], "job")
        .into_iter()
        .filter(|(n, _)| n.parse::<u32>().unwrap() >= 2000)
        .collect();
    assert_eq!(after, numbers(2000..2100), "each once, by the survivor");
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_task_queue_on_streams_next_to_legacy_pubsub_runs_each_job_once() {
    let server = server();
    let streams = server.url();
    let legacy = with(&server.url(), "mode=pubsub&codec=legacy");
    let routes = format!("mig_review_*={legacy}");
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let workers: Vec<KillOnDrop> = logs
        .iter()
        .map(|log| {
            spawn_child(
                "env-worker",
                log,
                &[("EVENTBUS_URL", &streams), ("EVENTBUS_ROUTES", &routes)],
            )
        })
        .collect();
    for log in &logs {
        ready(log).await;
    }
    // A Rust publisher routed the same way, in code.
    let publisher = Bus::builder()
        .service("web")
        .without_registered()
        .route(["mig_review_*"], legacy.clone())
        .connect(&streams)
        .await
        .unwrap();
    publisher
        .publish_batch((0..200).map(|n| SendShortMessage { n }))
        .await
        .unwrap();
    // Django publishes the legacy type as it always did.
    for i in 0..40 {
        let payload = format!(r#"{{"id": "r-{i}"}}"#);
        server
            .cmd(&["PUBLISH", "mig_review_created", &payload])
            .unwrap();
    }
    // So does the Rust publisher: bare JSON on the legacy channel.
    for i in 40..50 {
        publisher
            .publish(ReviewCreated {
                id: format!("r-{i}"),
            })
            .await
            .unwrap();
    }
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    wait_until("every job and review handled", || {
        counts(&paths, "job").values().sum::<usize>() >= 200
            && counts(&paths, "review").values().sum::<usize>() >= 50
    })
    .await;
    settle().await;
    assert_eq!(counts(&paths, "job"), numbers(0..200), "each job once");
    let per_worker: Vec<usize> = logs.iter().map(|l| values(l, "job").len()).collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "the queue on Streams spreads over both processes: {per_worker:?}"
    );
    let want: BTreeMap<String, usize> = (0..50).map(|i| (format!("r-{i}"), 1)).collect();
    assert_eq!(
        counts(&paths, "review"),
        want,
        "each legacy event once (the pub/sub group's lease)"
    );
    assert_eq!(
        server
            .cmd(&["XLEN", &stream_key("mig_send_short_message")])
            .unwrap(),
        "200",
        "the jobs went to their stream"
    );
    assert_eq!(
        server
            .cmd(&["EXISTS", &stream_key("mig_review_created")])
            .unwrap(),
        "0",
        "the legacy type stayed on pub/sub"
    );
    drop(workers);
}

/// Publishes `{"id": "<prefix>-<i>"}` on `channel` for each `i`, with redis-py.
fn python_publish(port: u16, channel: &str, prefix: &str, range: std::ops::Range<u32>) {
    let script = format!(
        "import json, redis\nr = redis.Redis(port={port})\nfor i in range({}, {}):\n    r.publish({channel:?}, json.dumps({{'id': '{prefix}-%d' % i}}))\n",
        range.start, range.end
    );
    let out = testkit::python()
        .args(["-c", &script])
        .output()
        .expect("python3 with the pinned redis-py");
    assert!(
        out.status.success(),
        "redis-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pid in a lease holder's name (`<host>-<pid>-<random>-<random>`).
fn holder_pid(server: &testkit::RedisServer, group: &str) -> Option<u32> {
    let holder = server
        .cmd(&["GET", &format!("{{eventbus}}:lease:{group}")])
        .ok()?;
    let parts: Vec<&str> = holder.rsplitn(4, '-').collect();
    parts.get(2)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_takes_each_legacy_message_into_streams_once_across_two_instances() {
    let server = server();
    let streams = server.url();
    let legacy = with(&server.url(), "mode=pubsub&codec=legacy");
    let bridges = format!("mig_review_created={legacy}");
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let mut workers: Vec<KillOnDrop> = logs
        .iter()
        .map(|log| {
            spawn_child(
                "env-worker",
                log,
                &[("EVENTBUS_URL", &streams), ("EVENTBUS_BRIDGES", &bridges)],
            )
        })
        .collect();
    for log in &logs {
        ready(log).await;
    }
    let stream = stream_key("mig_review_created");
    python_publish(server.port(), "mig_review_created", "b", 0..100);
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    wait_until("100 legacy events handled", || {
        counts(&paths, "review").values().sum::<usize>() >= 100
    })
    .await;
    settle().await;
    let want = |r: std::ops::Range<u32>| -> BTreeMap<String, usize> {
        r.map(|i| (format!("b-{i}"), 1)).collect()
    };
    assert_eq!(
        counts(&paths, "review"),
        want(0..100),
        "each legacy event handled exactly once across the two instances"
    );
    assert_eq!(
        server.cmd(&["XLEN", &stream]).unwrap(),
        "100",
        "each message appended to the stream once"
    );
    // One id per event: the one instance that bridged it made it up.
    let ids: std::collections::BTreeSet<String> = paths
        .iter()
        .flat_map(|p| values(p, "review"))
        .map(|v| v.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 100);

    // The instance that bridges dies: the other takes the bridge over.
    let group = "eventbus.bridge.mig_review_created";
    let pid = holder_pid(&server, group).expect("a bridge holds the lease");
    let holder = workers
        .iter()
        .position(|w| w.0.id() == pid)
        .expect("the holder is one of the workers");
    workers[holder].kill();
    let died = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    let mut probe = 1000;
    while holder_pid(&server, group).is_none_or(|p| p == pid) {
        assert!(Instant::now() < deadline, "the bridge was never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the bridge was taken over {:?} after its holder was SIGKILLed",
        died.elapsed()
    );
    // Published while no one held the lease: lost (pub/sub is at-most-once);
    // from the takeover on, bridged again.
    while values(&logs[1 - holder], "review")
        .iter()
        .all(|v| !v.starts_with("p-"))
    {
        python_publish(server.port(), "mig_review_created", "p", probe..probe + 1);
        probe += 1;
        assert!(
            Instant::now() < deadline,
            "nothing bridged after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = server
        .cmd(&["XLEN", &stream])
        .unwrap()
        .parse::<u64>()
        .unwrap();
    python_publish(server.port(), "mig_review_created", "c", 0..50);
    wait_until("the survivor bridged and handled 50 more", || {
        counts(&[&logs[1 - holder]], "review")
            .keys()
            .filter(|k| k.starts_with("c-"))
            .count()
            >= 50
    })
    .await;
    settle().await;
    let after: BTreeMap<String, usize> = counts(&[&logs[1 - holder]], "review")
        .into_iter()
        .filter(|(k, _)| k.starts_with("c-"))
        .collect();
    let want_c: BTreeMap<String, usize> = (0..50).map(|i| (format!("c-{i}"), 1)).collect();
    assert_eq!(after, want_c, "each once, bridged by the survivor");
    assert_eq!(
        server
            .cmd(&["XLEN", &stream])
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        before + 50,
        "each appended once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_variables_fail_with_one_sentence_and_no_password() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let streams = server.url();
    let legacy = with(&server.url(), "mode=pubsub&codec=legacy");
    let check = |n: usize, env: &[(&str, &str)]| {
        let log = dir.path().join(format!("{n}.log"));
        let mut child = spawn_child("env-check", &log, env);
        let status = child.0.wait().unwrap();
        assert!(status.success(), "the check process ran");
        read_log(&log).join("\n")
    };
    let cases: Vec<(Vec<(&str, String)>, String)> = vec![
        (
            vec![("EVENTBUS_ROUTES", "mig_review_*".to_owned())],
            "error EVENTBUS_ROUTES: `mig_review_*` (route 1) has no `=url`; write `types=url;types=url`, as in `review_*,moderate_action=redis://host:6379?mode=pubsub`".to_owned(),
        ),
        (
            vec![
                ("EVENTBUS_URL", streams.clone()),
                (
                    "EVENTBUS_ROUTES",
                    "mig_review_*=redis://:s3cret@127.0.0.1:9/0?mode=pubsub&codec=bogus".to_owned(),
                ),
            ],
            "error EVENTBUS_ROUTES: the route of `mig_review_*`: invalid Redis URL `redis://:***@127.0.0.1:9/0?mode=pubsub&codec=bogus`".to_owned(),
        ),
        (
            vec![
                ("EVENTBUS_URL", streams.clone()),
                ("EVENTBUS_BRIDGES", format!("mig_review_created={streams}")),
            ],
            format!(
                "error EVENTBUS_BRIDGES: `mig_review_created` is bridged from {streams} into the same transport"
            ),
        ),
        (
            vec![
                ("EVENTBUS_URL", streams.clone()),
                ("EVENTBUS_ROUTES", format!("mig_review_*={legacy}")),
                ("EVENTBUS_BRIDGES", format!("mig_review_created={legacy}")),
            ],
            format!(
                "error EVENTBUS_BRIDGES: `mig_review_created` is bridged from {legacy} into the same transport"
            ),
        ),
        (
            vec![
                ("EVENTBUS_URL", streams.clone()),
                ("EVENTBUS_ROUTES", "mig_review_*=redsi://:s3cret@h:6379".to_owned()),
            ],
            "error EVENTBUS_ROUTES: the route of `mig_review_*`: unknown transport `redsi://` in `redsi://:***@h:6379`; use `memory://` or `redis://host:6379`".to_owned(),
        ),
        (
            vec![
                ("EVENTBUS_URL", streams.clone()),
                ("EVENTBUS_ROUTES", format!("mig_send_*={legacy}")),
            ],
            "built".to_owned(),
        ),
    ];
    for (n, (env, want)) in cases.iter().enumerate() {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = check(n, &env);
        assert!(got.starts_with(want.as_str()), "case {n}: {got}");
        assert!(!got.contains("s3cret"), "case {n}: {got}");
        assert_eq!(got.lines().count(), 1, "one sentence: {got}");
    }
}

/// A moderator's decision, on the legacy channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mig_moderate_action")]
struct ModerateAction {
    id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_handler_on_a_routed_bus_sees_each_legacy_event_once() {
    let server = server();
    let legacy = with(&server.url(), "mode=pubsub&codec=legacy");
    let audit: std::sync::Arc<parking_lot::Mutex<Vec<String>>> = Default::default();
    let log = audit.clone();
    let bus = Bus::builder()
        .service("mig")
        .without_registered()
        .route(["mig_moderate_action"], legacy.clone())
        .bridge(["mig_review_created"], legacy.clone())
        .handler(HandlerDef::new("audit", move |e: eventbus::CloudEvent| {
            let ty = eventbus::cloudevents::AttributesReader::ty(&e).to_owned();
            log.lock().push(ty);
            async {}
        }))
        .connect(&server.url())
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    // Django publishes both legacy types; Rust publishes a job on Streams.
    server
        .cmd(&["PUBLISH", "mig_review_created", r#"{"id": "r-1"}"#])
        .unwrap();
    server
        .cmd(&["PUBLISH", "mig_moderate_action", r#"{"id": "m-1"}"#])
        .unwrap();
    bus.publish(SendShortMessage { n: 1 }).await.unwrap();
    wait_until("the audit saw the three events", || audit.lock().len() >= 3).await;
    settle().await;
    running.shutdown().await.unwrap();
    let mut seen = audit.lock().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "mig_moderate_action",
            "mig_review_created",
            "mig_send_short_message"
        ],
        "each once: the bridged event from Streams only, no lease markers"
    );
    assert_eq!(
        server
            .cmd(&["XLEN", &stream_key("mig_review_created")])
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_two_transports_on_one_server_are_listed_once_and_replayed_home() {
    let server = server();
    let legacy = with(&server.url(), "mode=pubsub&codec=legacy");
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handled: std::sync::Arc<parking_lot::Mutex<Vec<String>>> = Default::default();
    let handler = |name: &'static str| {
        let (refuse, handled) = (refuse.clone(), handled.clone());
        move |what: String| {
            let outcome = if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                Err(format!("{name} refused"))
            } else {
                handled.lock().push(what);
                Ok(())
            };
            async move { outcome }
        }
    };
    let on_moderation = handler("moderation");
    let on_job = handler("job");
    let bus = Bus::builder()
        .service("mig")
        .without_registered()
        .route(["mig_moderate_*"], legacy.clone())
        .handler(
            HandlerDef::new("on_moderation", move |m: ModerateAction| {
                on_moderation(m.id)
            })
            .retries(0),
        )
        .handler(
            HandlerDef::new("on_job", move |j: SendShortMessage| on_job(j.n.to_string()))
                .retries(0),
        )
        .connect(&server.url())
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    server
        .cmd(&["PUBLISH", "mig_moderate_action", r#"{"id": "m-1"}"#])
        .unwrap();
    bus.publish(SendShortMessage { n: 7 }).await.unwrap();
    wait_until_async("two dead letters", || async {
        bus.dead_letters(100).await.unwrap().len() >= 2
    })
    .await;
    // Both transports read `{eventbus}:dlq` on this server: each entry once.
    let dead = bus.dead_letters(100).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:dlq"]).unwrap(),
        "2",
        "one DLQ stream"
    );
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    for d in &dead {
        assert!(bus.replay_dead_letter(&d.id).await.unwrap(), "{d:?}");
    }
    wait_until("both replayed to their group and handled", || {
        handled.lock().len() >= 2
    })
    .await;
    running.shutdown().await.unwrap();
    let mut got = handled.lock().clone();
    got.sort();
    assert_eq!(got, ["7", "m-1"]);
    assert!(bus.dead_letters(100).await.unwrap().is_empty());
}
