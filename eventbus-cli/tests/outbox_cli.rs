//! The `eventbus` command line on a real PostgreSQL: migrate, relay (SIGTERM
//! stops it cleanly), outbox-stats, retry-failed, and its errors.
#![cfg(all(feature = "cli", feature = "postgres"))]

mod outbox_common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use outbox_common::*;

fn eventbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("EVENTBUS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run eventbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn migrate_relay_stats_and_retry_failed() {
    let server = testkit::PostgresServer::shared().unwrap();
    let url = server.create_database().unwrap();

    let out = eventbus(&["migrate", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("the outbox table is ready (postgres)"));
    // Idempotent.
    assert!(
        eventbus(&["migrate", "--database-url", &url])
            .status
            .success()
    );

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE short_message (id BIGINT PRIMARY KEY, text TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let db = Db::Pg(pool.clone(), url.clone());
    let bus = bus_on(Recorder::default()).await;
    db.publish(&bus, &[Item::Note(1), Item::Note(2), Item::Note(3)], true)
        .await;

    let out = eventbus(&["outbox-stats", "--database-url", &url]);
    assert_eq!(stdout(&out), "pending 3\npublished 0\nfailed 0\n");

    let mut relay = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args([
            "relay",
            "--database-url",
            &url,
            "--transport-url",
            "memory://",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.counts().await.published == 3
        })
        .await,
        "the CLI relay did not publish"
    );
    let pid = relay.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = relay.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");

    sqlx::query("UPDATE eventbus_outbox SET status = 'failed' WHERE id = (SELECT id FROM eventbus_outbox LIMIT 1)")
        .execute(&pool)
        .await
        .unwrap();
    let out = eventbus(&["retry-failed", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 failed row(s) are pending again"));
}

#[test]
fn mistakes_are_explained() {
    let out = eventbus(&["relay", "--transport-url", "memory://"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));

    let out = eventbus(&["relay", "--database-url", "mysql://x/y"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a database URL"),
        "{}",
        stderr(&out)
    );

    let out = eventbus(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown command `frobnicate`"));

    let out = eventbus(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("usage: eventbus"));
}
