//! `eventbus dashboard`, run as the built binary against a real
//! redis-server holding a dead letter of a running bus, driven in headless
//! Chromium (Debian's `chromium` through playwright-core,
//! `scripts/dashboard-e2e`): the overview and the filtered list show it, its
//! page shows the last error and the payload, the replay form (with the
//! token) sends it back to its group, which handles it with the same event
//! id. Without `--allow-write` a replay is refused (403); a wrong token is 401.
#![cfg(feature = "redis")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::{Context, HandlerDef, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const TOKEN: &str = "dash-t0ken";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
#[event("cli_dash.job")]
struct Job {
    n: u32,
}

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dashboard-e2e")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `eventbus dashboard` on a free port; killed on drop.
struct Dashboard(std::process::Child, String);

impl Dashboard {
    async fn start(url: &str, extra: &[&str]) -> Dashboard {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_eventbus"))
            .args(["dashboard", "--transport-url", url, "--bind", &addr])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run eventbus dashboard");
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&base).await.is_err() {
            assert!(Instant::now() < deadline, "the dashboard did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Dashboard(child, base)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_replays_a_dead_letter_in_a_real_browser() {
    assert!(
        e2e_dir().join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and playwright-core: run scripts/test.sh (apt-get install -y chromium; npm ci --prefix scripts/dashboard-e2e)"
    );
    let server = testkit::RedisServer::start().expect("start redis-server");
    let url = server.url();
    let fail = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let (f, s) = (fail.clone(), seen.clone());
    let job = HandlerDef::new("job", move |job: Job, ctx: Context| {
        let failing = f.load(Ordering::SeqCst);
        s.lock().unwrap().push((job.n, ctx.id().to_owned()));
        async move {
            match failing {
                true => Err("the <b>printer</b> is on fire".to_owned()),
                false => Ok(()),
            }
        }
    })
    .retries(0);
    let bus = eventbus::Bus::builder()
        .service("clidash")
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
        })
        .handler(job)
        .connect(&url)
        .await
        .expect("connect");
    let mut running = bus.spawn();
    running.ready().await.unwrap();
    bus.publish(Job { n: 7 }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.dead_letters(10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event_id = seen.lock().unwrap()[0].1.clone();
    fail.store(false, Ordering::SeqCst);

    // Read-only by default: a replay is refused, the entry stays.
    let id = bus.dead_letters(10).await.unwrap()[0].id.clone();
    {
        let ro = Dashboard::start(&url, &[]).await;
        let client = reqwest::Client::new();
        let refused = client
            .post(format!("{}/dead-letters/{id}/replay", ro.1))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        let page = client
            .get(format!("{}/dead-letters/{id}", ro.1))
            .send()
            .await
            .unwrap();
        let html = page.text().await.unwrap();
        assert!(
            html.contains("the &lt;b&gt;printer&lt;/b&gt; is on fire"),
            "escaped: {html}"
        );
        assert!(
            !html.contains("replay-form"),
            "no replay form when read-only"
        );
        let groups = client.get(format!("{}/groups", ro.1)).send().await.unwrap();
        assert_eq!(groups.status(), 200);
        let html = groups.text().await.unwrap();
        assert!(
            html.contains("<td>clidash.job</td><td>cli_dash.job</td>"),
            "{html}"
        );
    }
    let dash = Dashboard::start(&url, &["--allow-write", "--token", TOKEN]).await;
    let wrong = reqwest::Client::new()
        .post(format!("{}/dead-letters/{id}/replay", dash.1))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let out = tokio::process::Command::new("node")
        .arg(e2e_dir().join("replay.mjs"))
        .args([&dash.1, "cli_dash.job", TOKEN])
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["overview"], "1 dead letters", "{shown}");
    assert_eq!(shown["count"], "1 of 1 dead letters", "{shown}");
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["error"], "the <b>printer</b> is on fire");
    assert_eq!(shown["payload"]["data"]["n"], 7);
    assert_eq!(shown["payload"]["id"], event_id.as_str());
    assert!(
        shown["flash"].as_str().unwrap().starts_with("Replayed"),
        "{shown}"
    );
    assert_eq!(shown["after"], "0 of 0 dead letters", "{shown}");

    // Handled again, with the same event id, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = seen.lock().unwrap().clone();
        if s.len() >= 2 {
            assert_eq!(s.len(), 2, "{s:?}");
            assert_eq!(s[1], (7, event_id.clone()));
            break;
        }
        assert!(Instant::now() < deadline, "the replay was handled: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(dash);

    // Schedules (from the reviews catalogue) and the outbox, with a failed row
    // made pending again from the page.
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("app.db").display());
    let eventbus::outbox::Database::Sqlite(pool) =
        eventbus::outbox::Database::connect(&db_url).await.unwrap()
    else {
        unreachable!()
    };
    eventbus::outbox::migrate(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    bus.outbox().publish(&mut *tx, Job { n: 9 }).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query("UPDATE eventbus_outbox SET status = 'failed'")
        .execute(&pool)
        .await
        .unwrap();
    let catalog =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/reviews/docs/catalog.json");
    let dash = Dashboard::start(
        &url,
        &[
            "--allow-write",
            "--token",
            TOKEN,
            "--database-url",
            &db_url,
            "--catalog",
            catalog.to_str().unwrap(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let html = client
        .get(format!("{}/schedules", dash.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<td>reviews</td><td>moderation_stats</td><td>every 1s</td><td>moderation_stats_due</td>"),
        "{html}"
    );
    assert!(!html.contains("cannot run"), "{html}");
    let html = client
        .get(format!("{}/outbox", dash.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<tr><th>failed</th><td>1</td></tr>"),
        "{html}"
    );
    let retried = client
        .post(format!("{}/outbox/retry-failed", dash.1))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert!(
        retried
            .text()
            .await
            .unwrap()
            .contains("1 failed rows are pending again")
    );
    let counts = eventbus::outbox::counts(&pool).await.unwrap();
    assert_eq!((counts.pending, counts.failed), (1, 0));
    running.shutdown().await.unwrap();
}
