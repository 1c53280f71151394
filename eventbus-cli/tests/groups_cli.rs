//! `eventbus groups`, run as the built binary against a real redis-server
//! with a known backlog: a group whose bus is declared but not running (all
//! lag), a group whose handler holds its events (in flight, its consumer
//! alive), the oldest age, the dead letters, `--json` parsed back and exit
//! code 3 over `--max-lag`.
#![cfg(feature = "redis")]

use std::process::Stdio;
use std::time::{Duration, Instant};

use eventbus::{Context, HandlerDef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_groups.job")]
struct Job {
    n: u32,
}

async fn eventbus(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTBUS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run eventbus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_shows_lag_in_flight_consumers_and_age() {
    let server = testkit::RedisServer::start().expect("start redis-server");
    let url = server.url();
    // `idle`: declared (its bus built), never run: every event is lag.
    let _idle = eventbus::Bus::builder()
        .service("cligroups")
        .without_registered()
        .handler(HandlerDef::new("idle", |_: Job| async {}))
        .connect(&url)
        .await
        .unwrap();
    // `busy`: takes events and holds them (n = 0 is dead-lettered at once).
    let busy = eventbus::Bus::builder()
        .service("cligroups")
        .without_registered()
        .handler_timeout(None)
        .handler(
            HandlerDef::new("busy", |job: Job, _ctx: Context| async move {
                if job.n == 0 {
                    return Err("job 0 is poison".to_owned());
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .retries(0)
            .concurrency(2),
        )
        .connect(&url)
        .await
        .unwrap();
    let mut running = busy.spawn();
    running.ready().await.unwrap();
    for n in 0..=5 {
        busy.publish(Job { n }).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let groups = loop {
        let out = eventbus(&["groups", "--transport-url", &url, "--json"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let busy = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "cligroups.busy")
            .cloned();
        let held =
            |b: &Value| b["in_flight"].as_u64().unwrap_or(0) + b["lag"].as_u64().unwrap_or(0);
        if busy.as_ref().is_some_and(|b| {
            held(b) == 5 && b["in_flight"].as_u64() >= Some(2) && b["dead_letters"] == 1
        }) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the busy group holds its events: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let find = |name: &str| {
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("{name}: {groups}"))
            .clone()
    };
    let idle = find("cligroups.idle");
    assert_eq!(idle["lag"], 6, "{idle}");
    assert_eq!(idle["in_flight"], 0);
    assert_eq!(idle["types"], serde_json::json!(["cli_groups.job"]));
    assert!(idle["oldest_pending_ms"].as_u64().is_some(), "{idle}");
    let busy_g = find("cligroups.busy");
    // Two run, the rest read ahead (in flight too) or still in the stream.
    assert_eq!(
        busy_g["lag"].as_u64().unwrap() + busy_g["in_flight"].as_u64().unwrap(),
        5,
        "6 published, 1 dead-lettered: {busy_g}"
    );
    let consumers = busy_g["consumers"].as_array().unwrap();
    assert!(consumers.iter().any(|c| c["alive"] == true), "{busy_g}");

    // Over the limit: 3; --group filters; the table.
    let over = eventbus(&["groups", "--transport-url", &url, "--max-lag", "5"]).await;
    assert_eq!(over.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&over.stdout).contains("over the limit"));
    let fine = eventbus(&[
        "groups",
        "--transport-url",
        &url,
        "--group",
        "cligroups.busy",
        "--max-lag",
        "5",
    ])
    .await;
    assert_eq!(
        fine.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fine.stdout)
    );
    let memory = eventbus(&["groups", "--transport-url", "memory://"]).await;
    assert_eq!(memory.status.code(), Some(1));
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_a_groups_past_events_to_it_again_and_only_to_it() {
    use std::sync::{Arc, Mutex};
    let server = testkit::RedisServer::start().expect("start redis-server");
    let url = server.url();
    type Seen = Arc<Mutex<Vec<(u32, String)>>>;
    let (fixed, other): (Seen, Seen) = Default::default();
    let (f, o) = (fixed.clone(), other.clone());
    let bus = eventbus::Bus::builder()
        .service("clireplay")
        .without_registered()
        .handler(HandlerDef::new("fixed", move |job: Job, ctx: Context| {
            f.lock().unwrap().push((job.n, ctx.id().to_owned()));
            async {}
        }))
        .handler(HandlerDef::new("other", move |job: Job, ctx: Context| {
            o.lock().unwrap().push((job.n, ctx.id().to_owned()));
            async {}
        }))
        .connect(&url)
        .await
        .unwrap();
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    for n in 1..=3 {
        bus.publish(Job { n }).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while fixed.lock().unwrap().len() < 3 || other.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the first deliveries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = fixed.lock().unwrap().clone();

    let dry = eventbus(&[
        "replay",
        "--transport-url",
        &url,
        "--group",
        "clireplay.fixed",
        "--since",
        "1h",
        "--dry-run",
        "--json",
    ])
    .await;
    let v: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        (v["replayed"].as_u64(), v["dry_run"].as_bool()),
        (Some(3), Some(true)),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fixed.lock().unwrap().len(), 3, "a dry run delivers nothing");

    let done = eventbus(&[
        "replay",
        "--transport-url",
        &url,
        "--group",
        "clireplay.fixed",
        "--since",
        "1h",
    ])
    .await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        String::from_utf8_lossy(&done.stdout)
            .contains("3 events delivered again to clireplay.fixed")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while fixed.lock().unwrap().len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the replays: {:?}",
            fixed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = fixed.lock().unwrap()[3..].to_vec();
    let mut ids: Vec<&String> = again.iter().map(|(_, id)| id).collect();
    let mut before: Vec<&String> = first.iter().map(|(_, id)| id).collect();
    ids.sort();
    before.sort();
    assert_eq!(ids, before, "the same events, by id");
    assert_eq!(
        other.lock().unwrap().len(),
        3,
        "the other group got nothing again"
    );
    let unknown = eventbus(&[
        "replay",
        "--transport-url",
        &url,
        "--group",
        "nope",
        "--since",
        "1h",
    ])
    .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no consumer group `nope`"));
    running.shutdown().await.unwrap();
}
