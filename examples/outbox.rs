//! The transactional outbox: a `ShortMessage` row and its `SendShortMessage`
//! event are written in one database transaction, and the event reaches the
//! `sms_send_queue` worker only if that transaction commits.
//!
//! ```text
//! cargo run --example outbox            # SQLite in a temporary file, memory transport
//! EVENTBUS_URL=redis://127.0.0.1:6379 cargo run --example outbox --features redis
//! ```
//!
//! It needs no set-up: the outbox table is created by
//! `eventbus::outbox::migrate`, the relay runs inside `bus.run()`. It creates
//! one message in a committed transaction and one in a rolled-back
//! transaction, shows that only the first is sent, and exits 0.

use std::time::{Duration, Instant};

use eventbus::outbox::{self, RelayOptions};
use eventbus::{Bus, Context, Event, handler};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

/// Send an SMS: a job for exactly one worker of the `sms_send_queue` group.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_short_message")]
pub struct SendShortMessage {
    /// The `short_message` row to send; also the ordering key.
    #[event(subject)]
    pub id: i64,
}

/// The worker: sends the message and marks the row sent.
#[handler(group = "sms_send_queue", retries = 5)]
async fn send_short_message(job: SendShortMessage, ctx: Context) -> anyhow::Result<()> {
    let pool = ctx.state::<SqlitePool>();
    let (phone, text): (String, String) =
        sqlx::query_as("SELECT phone, text FROM short_message WHERE id = ?1")
            .bind(job.id)
            .fetch_one(pool)
            .await?;
    println!("  sms_send_queue  sending #{} to {phone}: {text:?}", job.id);
    sqlx::query("UPDATE short_message SET status = 'sent' WHERE id = ?1")
        .bind(job.id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Creates a `short_message` row and its `SendShortMessage` event in one
/// transaction; commits it or rolls it back.
async fn create_message(
    bus: &Bus,
    pool: &SqlitePool,
    phone: &str,
    text: &str,
    commit: bool,
) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO short_message (phone, text, status) VALUES (?1, ?2, 'new') RETURNING id",
    )
    .bind(phone)
    .bind(text)
    .fetch_one(&mut *tx)
    .await?;
    let event_id = bus
        .outbox()
        .publish(&mut tx, SendShortMessage { id })
        .await?;
    if commit {
        tx.commit().await?;
        println!("  committed       short_message #{id}, event {event_id}");
    } else {
        tx.rollback().await?;
        println!("  rolled back     short_message #{id}, event {event_id} (never sent)");
    }
    Ok(id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    // The service's own database: a SQLite file, created on the spot.
    let dir = tempfile_dir()?;
    let url = format!("sqlite:{}", dir.join("sms.db").display());
    let outbox::Database::Sqlite(pool) = outbox::Database::connect(&url).await? else {
        anyhow::bail!("not SQLite");
    };
    outbox::migrate(&pool).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS short_message (
             id INTEGER PRIMARY KEY, phone TEXT NOT NULL, text TEXT NOT NULL, status TEXT NOT NULL)",
    )
    .execute(&pool)
    .await?;

    // The bus runs the sms_send_queue worker and the outbox relay.
    let bus = Bus::builder()
        .service("sms")
        .state(pool.clone())
        .outbox_relay(RelayOptions::new(&pool).poll_interval(Duration::from_millis(50)))
        .connect_env()
        .await?;
    let running = bus.spawn();
    println!("outbox example on {url} ({:?})", bus.transport().name());

    let sent = create_message(&bus, &pool, "+15550100", "Your code is 1234", true).await?;
    let dropped = create_message(&bus, &pool, "+15550199", "This never goes out", false).await?;

    // Wait for the worker to mark the committed message sent.
    let started = Instant::now();
    loop {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM short_message WHERE id = ?1")
            .bind(sent)
            .fetch_one(&pool)
            .await?;
        if status == "sent" {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the message was not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a wrongly relayed rollback a chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await?;

    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM short_message ORDER BY id")
            .fetch_all(&pool)
            .await?;
    let counts = outbox::counts(&pool).await?;
    println!("\nshort_message rows: {rows:?}");
    println!(
        "outbox: {} published, {} pending, {} failed",
        counts.published, counts.pending, counts.failed
    );
    anyhow::ensure!(
        rows == vec![(sent, "sent".to_owned())],
        "only #{sent} exists and was sent"
    );
    anyhow::ensure!(
        counts.published == 1 && counts.pending == 0,
        "one event went out"
    );
    println!(
        "#{sent} was sent once; #{dropped} was rolled back with its event, and nothing was sent for it."
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("eventbus-outbox-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
