//! Failures on Redis Streams, against real `redis-server`s: a worker process
//! killed with SIGKILL mid-batch, a poison message that crashes every
//! process that takes it, a delayed event whose publisher exited, and Redis
//! restarted (append-only file on) during a run.
//!
//! The worker and publisher processes are this test binary run again with
//! `EVENTBUS_E2E_CHILD` set (see [`child_process`]), so no extra binary is
//! needed; they append what they handled to a log file the test reads.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::*;
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("crash.job")]
struct Job {
    n: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("crash.reminder")]
struct Reminder {
    id: u32,
}

/// URL options: entries pending on a dead consumer for 1 s are taken over
/// (looked for every 100 ms).
const CLAIM: &str = "claim_idle_ms=1000&claim_interval_ms=100";

const CHILD_ENV: &str = "EVENTBUS_E2E_CHILD";
const URL_ENV: &str = "EVENTBUS_E2E_URL";
const LOG_ENV: &str = "EVENTBUS_E2E_LOG";

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// `(n, attempt)` of every `handled <n> <attempt>` line.
fn handled(path: &Path) -> Vec<(u32, u32)> {
    read_log(path)
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("handled ")?.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// Not a test of its own: the body of the child processes. Without
/// `EVENTBUS_E2E_CHILD` it returns at once.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).expect("EVENTBUS_E2E_URL");
    let log = PathBuf::from(std::env::var(LOG_ENV).expect("EVENTBUS_E2E_LOG"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        match mode.as_str() {
            // A slow worker: 200 ms per job, 4 at a time.
            "slow-worker" => {
                let log = log.clone();
                let handler = HandlerDef::new("work", move |job: Job, ctx: Context| {
                    let log = log.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        log_line(&log, format!("handled {} {}", job.n, ctx.attempt()));
                    }
                })
                .concurrency(4);
                run_worker(&url, handler).await;
            }
            // Takes 8 jobs at once and never finishes one.
            "stuck-worker" => {
                let log = log.clone();
                let handler = HandlerDef::new("work", move |job: Job, ctx: Context| {
                    let log = log.clone();
                    async move {
                        log_line(&log, format!("started {} {}", job.n, ctx.attempt()));
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                })
                .concurrency(8);
                run_worker(&url, handler).await;
            }
            // Crashes the whole process on job 0; `retries = 2`.
            "crashing-worker" => {
                let log = log.clone();
                let handler = HandlerDef::new("work", move |job: Job, ctx: Context| {
                    let log = log.clone();
                    async move {
                        if job.n == 0 {
                            log_line(&log, format!("crashing on {} {}", job.n, ctx.attempt()));
                            // Dies like a crash: no drain, no ack (and,
                            // unlike `abort`, no core dump).
                            std::process::exit(134);
                        }
                        log_line(&log, format!("handled {} {}", job.n, ctx.attempt()));
                    }
                })
                .retries(2)
                .concurrency(1);
                run_worker(&url, handler).await;
            }
            // Schedules a reminder 1 s ahead and exits.
            "publisher" => {
                let bus = Bus::builder()
                    .service("publisher")
                    .without_registered()
                    .connect(&url)
                    .await
                    .unwrap();
                let at = SystemTime::now() + Duration::from_secs(1);
                bus.publish_at(Reminder { id: 42 }, at).await.unwrap();
                log_line(&log, format!("scheduled for {}", epoch_ms(at)));
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

async fn run_worker(url: &str, handler: HandlerDef) {
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(fast_retries())
        .handler(handler)
        .connect(url)
        .await
        .unwrap();
    bus.run().await.unwrap();
}

/// Runs this test binary again as a child process in `mode`.
fn spawn_child(mode: &str, url: &str, log: &Path) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "crash::child_process",
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
        .expect("spawn the child process")
}

type Seen = Arc<Mutex<Vec<(u32, u32)>>>;

fn job_recorder(seen: &Seen) -> HandlerDef {
    let seen = seen.clone();
    HandlerDef::new("work", move |job: Job, ctx: Context| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            seen.lock().push((job.n, ctx.attempt()));
        }
    })
    .concurrency(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    const N: u32 = 40;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let stream = stream_key("crash.job");

    // The survivor: same service and group, built (so the group exists)
    // but not running until the other worker is dead.
    let survived = Seen::default();
    let survivor = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(job_recorder(&survived))
        .connect(&with(&server.url(), CLAIM))
        .await
        .unwrap();

    let mut worker = KillOnDrop(spawn_child(
        "slow-worker",
        &with(&server.url(), CLAIM),
        &log,
    ));
    survivor
        .publish_batch((0..N).map(|n| Job { n }))
        .await
        .unwrap();
    wait_until("the worker process handled a few jobs", || {
        handled(&log).len() >= 6
    })
    .await;
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();
    let by_worker: BTreeSet<u32> = handled(&log).iter().map(|(n, _)| *n).collect();
    let stranded = pending(&server, &stream, "svc.work");
    assert!(
        stranded > 0,
        "the worker died with jobs in flight (delivered, not acked)"
    );
    assert!(by_worker.len() < N as usize, "killed mid-batch");

    let running = survivor.spawn();
    wait_until("every job handled and acked", || {
        let mut all = by_worker.clone();
        all.extend(survived.lock().iter().map(|(n, _)| *n));
        all.len() == N as usize && pending(&server, &stream, "svc.work") == 0
    })
    .await;
    running.shutdown().await.unwrap();

    let survived = survived.lock().clone();
    let taken_over: Vec<_> = survived.iter().filter(|(_, a)| *a > 1).collect();
    assert_eq!(
        taken_over.len() as u64,
        stranded,
        "each job the dead worker left pending was taken over once, as a new attempt: {survived:?}"
    );
    for n in 0..N {
        assert!(
            by_worker.contains(&n) || survived.iter().any(|(m, _)| *m == n),
            "job {n} was lost"
        );
    }
    assert!(survivor.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_that_crashes_every_worker_ends_in_the_dlq() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    // Declares the group, lists the DLQ; never runs.
    let observer = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(HandlerDef::new("work", |_: Job| async {}))
        .connect(&server.url())
        .await
        .unwrap();
    // Job 0 kills any process that handles it; the others keep flowing.
    observer
        .publish_batch((0..10).map(|n| Job { n }))
        .await
        .unwrap();

    let mut crashes = 0;
    let url = with(&server.url(), CLAIM);
    let mut worker = KillOnDrop(spawn_child("crashing-worker", &url, &log));
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if !observer.dead_letters(10).await.unwrap().is_empty() {
            break;
        }
        if let Some(status) = worker.0.try_wait().unwrap() {
            assert!(!status.success(), "the worker crashed");
            crashes += 1;
            worker = KillOnDrop(spawn_child("crashing-worker", &url, &log));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the poison message never reached the DLQ: {:?}",
            read_log(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("the other jobs are handled", || {
        let done: BTreeSet<u32> = handled(&log).iter().map(|(n, _)| *n).collect();
        done.len() == 9
    })
    .await;
    drop(worker);

    let dead = observer.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    let ce: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(ce["data"]["n"], 0);
    assert_eq!(d.group, "svc.work");
    assert_eq!(d.handler, "work");
    assert_eq!(
        d.attempts, 4,
        "delivered once more than the 3 attempts allowed"
    );
    assert!(
        d.error
            .contains("delivered 3 times without being acknowledged"),
        "{}",
        d.error
    );
    assert_eq!(
        crashes,
        3,
        "one crash per allowed attempt: {:?}",
        read_log(&log)
    );
    let crash_attempts: Vec<String> = read_log(&log)
        .into_iter()
        .filter(|l| l.starts_with("crashing on"))
        .collect();
    assert_eq!(
        crash_attempts,
        ["crashing on 0 1", "crashing on 0 2", "crashing on 0 3"]
    );
    let handled = handled(&log);
    assert!(
        handled.iter().all(|(n, _)| *n != 0),
        "the poison was never handled"
    );
    let mut done: Vec<u32> = handled.iter().map(|(n, _)| *n).collect();
    done.sort();
    done.dedup();
    assert_eq!(done, (1..10).collect::<Vec<_>>(), "the others kept flowing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_after_survives_its_publisher_exiting() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("publisher.log");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let consumer = Bus::builder()
        .service("reminders")
        .without_registered()
        .handler(HandlerDef::new("remind", move |r: Reminder| {
            let g = g.clone();
            async move {
                g.lock().push((r.id, epoch_ms(SystemTime::now())));
            }
        }))
        .connect(&server.url())
        .await
        .unwrap();
    // Another process schedules the event and exits; nothing of it is left
    // but what it wrote to Redis.
    let status = spawn_child("publisher", &server.url(), &log)
        .wait()
        .unwrap();
    assert!(status.success());
    let due: u64 = read_log(&log)
        .iter()
        .find_map(|l| l.strip_prefix("scheduled for ")?.parse().ok())
        .expect("the publisher logged the due time");
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "1");

    // Only now does any scheduler run: this bus moves the due event.
    let running = consumer.spawn();
    wait_until("the reminder is handled", || !got.lock().is_empty()).await;
    running.shutdown().await.unwrap();
    let got = got.lock().clone();
    assert_eq!(got.len(), 1, "once: {got:?}");
    assert_eq!(got[0].0, 42);
    assert!(got[0].1 >= due, "not before it was due: {got:?}, due {due}");
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_and_consumers_resume() {
    let mut server = durable_server();
    let seen = Seen::default();
    let s = seen.clone();
    let fail_once = Arc::new(Mutex::new(BTreeSet::new()));
    let f = fail_once.clone();
    let handler = HandlerDef::new("work", move |job: Job, ctx: Context| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            // Job 7 fails its first attempt: a retry that may be pending
            // across the restart.
            if job.n == 7 && f.lock().insert(job.n) {
                return Err("not yet");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.lock().push((job.n, ctx.attempt()));
            Ok(())
        }
    })
    .concurrency(2);
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(eventbus::RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(1),
        })
        .handler(handler)
        .handler(HandlerDef::new("remind", {
            let s = seen.clone();
            move |r: Reminder| {
                let s = s.clone();
                async move { s.lock().push((1000 + r.id, 1)) }
            }
        }))
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..100).map(|n| Job { n }))
        .await
        .unwrap();
    bus.publish_after(Reminder { id: 1 }, Duration::from_secs(2))
        .await
        .unwrap();
    wait_until("some jobs handled", || seen.lock().len() >= 10).await;

    // SHUTDOWN (flushes the append-only file) and start again on the same
    // port and data, while the bus keeps running.
    server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart redis-server");
        server
    })
    .await
    .unwrap();
    bus.publish_batch((100..120).map(|n| Job { n }))
        .await
        .unwrap();

    let done = |seen: &Seen| -> BTreeSet<u32> { seen.lock().iter().map(|(n, _)| *n).collect() };
    wait_until(
        "everything published before and after the restart is handled",
        || done(&seen).len() == 121,
    )
    .await;
    running.shutdown().await.unwrap();
    let expected: BTreeSet<u32> = (0..120).chain([1001]).collect();
    assert_eq!(done(&seen), expected);
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(pending(&server, &stream_key("crash.job"), "svc.work"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_share_a_dead_workers_jobs_without_false_dead_letters() {
    const N: u32 = 8;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let stream = stream_key("crash.job");
    let survived = Seen::default();
    // Two survivors taking one job at a time (300 ms each), `retries = 1`:
    // a job delivered a third time would be dead-lettered unhandled.
    let survivor = || {
        let seen = survived.clone();
        let url = server.url();
        async move {
            Bus::builder()
                .service("svc")
                .without_registered()
                .handler(
                    HandlerDef::new("work", move |job: Job, ctx: Context| {
                        let seen = seen.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            seen.lock().push((job.n, ctx.attempt()));
                        }
                    })
                    .retries(1)
                    .concurrency(1),
                )
                // Ten times a job's run: a survivor busy with a job never
                // looks dead to the other, even on a loaded machine.
                .transport(fast_transport(&url, Duration::from_secs(3)).await)
                .build()
                .await
                .unwrap()
        }
    };
    let a = survivor().await;
    let b = survivor().await;

    let mut worker = KillOnDrop(spawn_child("stuck-worker", &server.url(), &log));
    a.publish_batch((0..N).map(|n| Job { n })).await.unwrap();
    wait_until("the stuck worker took every job", || {
        pending(&server, &stream, "svc.work") == u64::from(N)
    })
    .await;
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();

    let (ra, rb) = (a.spawn(), b.spawn());
    wait_until_async("every job handled, acked or dead-lettered", || async {
        let dead = a.dead_letters(10).await.unwrap().len();
        let done: BTreeSet<u32> = survived.lock().iter().map(|(n, _)| *n).collect();
        done.len() + dead >= N as usize && pending(&server, &stream, "svc.work") == 0
    })
    .await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    let dead = a.dead_letters(10).await.unwrap();
    assert!(
        dead.is_empty(),
        "jobs dead-lettered though a survivor could handle them: {:?}",
        dead.iter().map(|d| &d.error).collect::<Vec<_>>()
    );
    let mut got = survived.lock().clone();
    got.sort();
    assert_eq!(
        got,
        (0..N).map(|n| (n, 2)).collect::<Vec<_>>(),
        "each job taken over once, as its second attempt"
    );
}
