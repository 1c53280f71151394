//! `eventbus dlq list|show|replay|purge|stats`, run as the built binary
//! against a real redis-server holding dead letters of a running bus (a
//! Streams group and a Celery task queue): filters, `--json` parsed back,
//! the exit codes (0 ok, 1 error, 2 usage, 3 `--max` exceeded), a replay that
//! keeps the event id and reaches the one group, once, and a purge by filter.
#![cfg(feature = "redis")]

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::{Context, HandlerDef, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_dlq.job")]
struct Job {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_dlq.task", celery, queue = "cli_jobs")]
struct Task(u32);

async fn eventbus(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTBUS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run eventbus")
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

type Seen = Arc<Mutex<Vec<(u32, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_on_redis() {
    let server = testkit::RedisServer::start().expect("start redis-server");
    let url = server.url();
    let fail = Arc::new(AtomicBool::new(true));
    let seen: Seen = Arc::default();
    let (f, s) = (fail.clone(), seen.clone());
    let job = HandlerDef::new("job", move |job: Job, ctx: Context| {
        let failing = f.load(Ordering::SeqCst);
        s.lock().unwrap().push((job.n, ctx.id().to_owned()));
        async move {
            match (failing, job.n) {
                (false, _) => Ok(()),
                (true, 3) => Err("timeout after 5s".to_owned()),
                (true, n) => Err(format!("boom {n}")),
            }
        }
    })
    .retries(0);
    let (f, s) = (fail.clone(), seen.clone());
    let task = HandlerDef::new("task", move |task: Task, ctx: Context| {
        let failing = f.load(Ordering::SeqCst);
        s.lock().unwrap().push((100 + task.0, ctx.id().to_owned()));
        async move {
            match failing {
                true => Err("the SMTP server is down".to_owned()),
                false => Ok(()),
            }
        }
    })
    .retries(0);
    let bus = eventbus::Bus::builder()
        .service("clidlq")
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
        })
        .handler(job)
        .handler(task)
        .connect(&url)
        .await
        .expect("connect");
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    for n in 1..=3 {
        bus.publish(Job { n }).await.unwrap();
    }
    bus.publish(Task(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.dead_letters(10).await.unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "four dead letters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // list: all four, the Celery one with its prefix.
    let all = json(&eventbus(&["dlq", "list", "--transport-url", &url, "--json"]).await);
    assert_eq!(
        (all["matched"].as_u64(), all["total"].as_u64()),
        (Some(4), Some(4)),
        "{all}"
    );
    let letters = all["dead_letters"].as_array().unwrap();
    let by_n = |n: u64| {
        letters
            .iter()
            .find(|d| d["payload"]["data"]["n"].as_u64() == Some(n))
            .unwrap_or_else(|| panic!("no dead letter of job {n}: {all}"))
    };
    let celery = letters
        .iter()
        .find(|d| d["type"] == "cli_dlq.task")
        .expect("the Celery task's dead letter");
    assert!(
        celery["id"].as_str().unwrap().starts_with("celery:"),
        "{celery}"
    );
    assert_eq!(celery["error"], "the SMTP server is down");
    assert_eq!(by_n(3)["group"], "clidlq.job");
    assert_eq!(by_n(3)["attempts"], 1);

    // Filters, and the text output's count line.
    let timeouts = json(
        &eventbus(&[
            "dlq",
            "list",
            "--transport-url",
            &url,
            "--json",
            "--type",
            "cli_dlq.job",
            "--error-contains",
            "timeout",
            "--since",
            "1h",
        ])
        .await,
    );
    assert_eq!(timeouts["matched"], 1, "{timeouts}");
    let text = eventbus(&[
        "dlq",
        "list",
        "--transport-url",
        &url,
        "--group",
        "clidlq.task",
    ])
    .await;
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("1 of 4 dead letters"),
        "{text:?}"
    );
    // --max: exit code 3 when exceeded.
    let over = eventbus(&["dlq", "list", "--transport-url", &url, "--max", "3"]).await;
    assert_eq!(over.status.code(), Some(3));
    let under = eventbus(&["dlq", "list", "--transport-url", &url, "--max", "4"]).await;
    assert_eq!(under.status.code(), Some(0));
    // Usage mistakes: 2.
    let usage = eventbus(&["dlq", "list", "--transport-url", &url, "--bogus"]).await;
    assert_eq!(usage.status.code(), Some(2));

    // show and stats.
    let id1 = by_n(1)["id"].as_str().unwrap().to_owned();
    let shown = json(&eventbus(&["dlq", "show", "--transport-url", &url, &id1, "--json"]).await);
    assert_eq!(shown["payload"]["data"]["n"], 1);
    assert_eq!(shown["error"], "boom 1");
    let stats = json(&eventbus(&["dlq", "stats", "--transport-url", &url, "--json"]).await);
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["by_type"]["cli_dlq.job"], 3);
    assert_eq!(stats["by_type"]["cli_dlq.task"], 1);
    assert_eq!(stats["by_error"]["boom N"], 2, "{stats}");

    // replay: the same event id, to its group, once.
    fail.store(false, Ordering::SeqCst);
    let first_id = by_n(1)["event_id"].as_str().unwrap().to_owned();
    let celery_id = celery["id"].as_str().unwrap().to_owned();
    let replayed = json(
        &eventbus(&[
            "dlq",
            "replay",
            "--transport-url",
            &url,
            "--json",
            &id1,
            &celery_id,
        ])
        .await,
    );
    assert_eq!(
        replayed["replay"].as_array().unwrap().len(),
        2,
        "{replayed}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = seen.lock().unwrap().clone();
        let again = s
            .iter()
            .filter(|(n, id)| *n == 1 && *id == first_id)
            .count();
        if again == 2 && s.iter().filter(|(n, _)| *n == 101).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the replays were handled: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let twice = eventbus(&["dlq", "replay", "--transport-url", &url, &id1]).await;
    assert_eq!(twice.status.code(), Some(1), "a replayed entry is gone");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("not in the dead-letter queue"));

    // A dry run changes nothing; purge asks for --yes; then by filter.
    let dry = eventbus(&[
        "dlq",
        "replay",
        "--transport-url",
        &url,
        "--all",
        "--dry-run",
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("2 dead letters would be replayed"),
        "{dry:?}"
    );
    let refused = eventbus(&[
        "dlq",
        "purge",
        "--transport-url",
        &url,
        "--all",
        "--error-contains",
        "boom",
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--yes"),
        "{refused:?}"
    );
    let purged = json(
        &eventbus(&[
            "dlq",
            "purge",
            "--transport-url",
            &url,
            "--all",
            "--error-contains",
            "boom",
            "--yes",
            "--json",
        ])
        .await,
    );
    assert_eq!(purged["purge"].as_array().unwrap().len(), 1, "{purged}");
    let left = json(&eventbus(&["dlq", "list", "--transport-url", &url, "--json"]).await);
    assert_eq!(left["total"], 1, "{left}");
    assert_eq!(left["dead_letters"][0]["payload"]["data"]["n"], 3);
    running.shutdown().await.unwrap();
}
