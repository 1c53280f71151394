//! Takeover by liveness on Redis Streams, with real processes: a worker
//! holding jobs is SIGKILLed and a survivor running with the default
//! options takes its jobs over within seconds (the time is printed); a live
//! worker whose handler runs longer than both the takeover time and
//! `claim_idle` keeps its jobs (none is handled twice).
//!
//! The workers are this test binary run again with `EVENTBUS_LIVENESS_CHILD`
//! set (see [`child_process`]); they append what they do to a log file the
//! test reads.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("liveness.job")]
struct Job {
    n: u32,
}

const CHILD_ENV: &str = "EVENTBUS_LIVENESS_CHILD";
const URL_ENV: &str = "EVENTBUS_LIVENESS_URL";
const LOG_ENV: &str = "EVENTBUS_LIVENESS_LOG";

/// How long the slow worker's handler runs: longer than a takeover by
/// liveness takes (about 5 to 8 s with the defaults) and than the
/// `claim_idle` of [`SHORT_IDLE`].
const SLOW: Duration = Duration::from_secs(12);

/// URL options under which, without liveness, a job pending for 2 s would
/// be taken over (looked for every 200 ms).
const SHORT_IDLE: &str = "claim_idle_ms=2000&claim_interval_ms=200";

/// The upper bound asserted on a takeover with the defaults: about 5 to 8 s
/// is expected; this leaves room for a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(25);

/// The numbers of every `<what> <n> <attempt>` line of the log.
fn logged(path: &Path, what: &str) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(what)?.trim().split(' ').next()?.parse().ok())
        .collect()
}

/// Not a test of its own: the body of the child processes. Without
/// `EVENTBUS_LIVENESS_CHILD` it returns at once.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).expect("EVENTBUS_LIVENESS_URL");
    let log = PathBuf::from(std::env::var(LOG_ENV).expect("EVENTBUS_LIVENESS_LOG"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let run_for = match mode.as_str() {
            // Takes 8 jobs at once and never finishes one.
            "stuck-worker" => Duration::from_secs(3600),
            // Takes 8 jobs at once and finishes each after `SLOW`.
            "slow-worker" => SLOW,
            other => panic!("unknown child mode {other}"),
        };
        let handler = HandlerDef::new("work", move |job: Job, ctx: Context| {
            let log = log.clone();
            async move {
                log_line(&log, format!("started {} {}", job.n, ctx.attempt()));
                tokio::time::sleep(run_for).await;
                log_line(&log, format!("handled {} {}", job.n, ctx.attempt()));
            }
        })
        .concurrency(8);
        // Default options: the handler timeout (30 s) is longer than `SLOW`.
        Bus::builder()
            .service("svc")
            .without_registered()
            .handler(handler)
            .connect(&url)
            .await
            .unwrap()
            .run()
            .await
            .unwrap();
    });
}

/// Runs this test binary again as a child process in `mode`.
fn spawn_child(mode: &str, url: &str, log: &Path) -> KillOnDrop {
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "liveness::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env(URL_ENV, url)
        .env(LOG_ENV, log)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child process");
    KillOnDrop(child)
}

type Seen = Arc<Mutex<Vec<(u32, u32)>>>;

/// A survivor's handler: records `(n, attempt)`.
fn recorder(seen: &Seen) -> HandlerDef {
    let seen = seen.clone();
    HandlerDef::new("work", move |job: Job, ctx: Context| {
        let seen = seen.clone();
        async move { seen.lock().push((job.n, ctx.attempt())) }
    })
    .concurrency(8)
}

/// A bus of the same service and group as the workers (built, so the group
/// exists, and not running).
async fn survivor(url: &str, seen: &Seen) -> Bus {
    Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder(seen))
        .connect(url)
        .await
        .unwrap()
}

/// Publishes `n` jobs (the group exists: `bus` declared it), then starts a
/// worker in `mode` and waits until it started every one, so it holds them
/// all (delivered and not acked).
async fn hand_jobs_to_a_worker(
    bus: &Bus,
    mode: &str,
    url: &str,
    server: &testkit::RedisServer,
    log: &Path,
    n: u32,
) -> KillOnDrop {
    bus.publish_batch((0..n).map(|n| Job { n })).await.unwrap();
    let worker = spawn_child(mode, url, log);
    wait_until("the worker started every job", || {
        logged(log, "started").len() == n as usize
    })
    .await;
    assert_eq!(
        pending(server, &stream_key("liveness.job"), "svc.work"),
        u64::from(n)
    );
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_jobs_are_taken_over_within_seconds_with_the_defaults() {
    const N: u32 = 8;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let url = server.url(); // every option at its default

    let survived = Seen::default();
    let survivor = survivor(&url, &survived).await;
    let mut worker = hand_jobs_to_a_worker(&survivor, "stuck-worker", &url, &server, &log, N).await;

    // The survivor runs (and finds the worker alive) before the worker dies.
    let running = survivor.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        survived.lock().is_empty(),
        "nothing taken from a live worker"
    );
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();
    let killed = Instant::now();

    // A deadline of its own, past the bound, so a slow takeover still
    // prints how long it took.
    let deadline = killed + Duration::from_secs(120);
    while survived.lock().len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "the dead worker's jobs were not taken over within 120 s: {:?}",
            survived.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    println!("takeover of a SIGKILLed worker's {N} jobs with the default options: {took:.1?}");
    wait_until("the survivor acked every job", || {
        pending(&server, &stream_key("liveness.job"), "svc.work") == 0
    })
    .await;
    running.shutdown().await.unwrap();

    let mut got = survived.lock().clone();
    got.sort();
    assert_eq!(
        got,
        (0..N).map(|n| (n, 2)).collect::<Vec<_>>(),
        "each job taken over once, as its second attempt"
    );
    assert!(
        took < TAKEOVER_BOUND,
        "takeover took {took:?}, more than {TAKEOVER_BOUND:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_with_a_slow_handler_keeps_its_jobs() {
    const N: u32 = 4;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    // Both sides would take a job pending for 2 s over by idle time alone.
    let url = with(&server.url(), SHORT_IDLE);

    let survived = Seen::default();
    let other = survivor(&url, &survived).await;
    let _worker = hand_jobs_to_a_worker(&other, "slow-worker", &url, &server, &log, N).await;
    let started = Instant::now();
    let running = other.spawn();

    wait_until("the slow worker finished every job", || {
        logged(&log, "handled").len() == N as usize
    })
    .await;
    assert!(
        started.elapsed() >= SLOW - Duration::from_secs(2),
        "the survivor ran next to the slow handlers for most of their run"
    );
    wait_until("the slow worker acked every job", || {
        pending(&server, &stream_key("liveness.job"), "svc.work") == 0
    })
    .await;
    // Room for a takeover that should not happen to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.unwrap();

    assert_eq!(
        survived.lock().clone(),
        [],
        "nothing was taken from the live worker"
    );
    let started: BTreeSet<u32> = logged(&log, "started").into_iter().collect();
    assert_eq!(
        logged(&log, "started").len(),
        N as usize,
        "each job started once"
    );
    assert_eq!(started, (0..N).collect(), "by the worker that held it");
}
