//! A Rust worker for the reviews catalogue's three Celery task queues,
//! beside (or instead of) the Python Celery workers of the Django side.
//!
//! ```text
//! EVENTBUS_URL=redis://127.0.0.1:6379/0 cargo run --example celery --features redis
//! PYTHONPATH=target/python-peers python3 examples/celery/peer.py send 42      # Django's send_task
//! PYTHONPATH=target/python-peers python3 examples/celery/peer.py worker       # a Celery worker
//! ```
//!
//! It runs `send_short_message` (queue `sms_send_queue`), `send_email_task`
//! and `send_notification` (queue `celery`), each taking the message row's
//! id as its one positional argument, as the Django code sends them with
//! `app.send_task("send_short_message", args=(instance.id,),
//! serializer="json", queue="sms_send_queue")`, and prints one line per
//! task run, until SIGINT or SIGTERM (then it finishes the tasks it holds
//! and gives back what it read ahead). After each text message it sends
//! `mark_message_sent(id)` to the Python side (queue `django_tasks`), which
//! `peer.py worker` runs. Python and Rust workers can serve one queue side
//! by side: each task runs once, and a task of a killed worker of either
//! kind is restored (kombu's visibility timeout; set
//! `EVENTBUS_CELERY_VISIBILITY_TIMEOUT` to the Python workers' value).

use eventbus::{Bus, Context, handler};

#[path = "reviews/events.rs"]
#[allow(dead_code)]
pub mod events;
use events::{MarkMessageSent, SendEmailTask, SendNotification, SendShortMessage};

fn ran(ctx: &Context, what: String) {
    println!("ran {what:<32} task {} attempt {}", ctx.id(), ctx.attempt());
}

#[handler(group = "sms_send_queue", retries = 5, concurrency = 8)]
async fn send_short_message(task: SendShortMessage, ctx: Context) -> eventbus::Result<()> {
    ran(&ctx, format!("send_short_message({})", task.0));
    // The Django side records the delivery: a Celery task its workers run.
    ctx.bus().publish(MarkMessageSent(task.0)).await
}

#[handler(group = "send_email_task", retries = 2)]
async fn send_email_task(task: SendEmailTask, ctx: Context) {
    ran(&ctx, format!("send_email_task({})", task.0));
}

#[handler(group = "send_notification")]
async fn send_notification(task: SendNotification, ctx: Context) {
    ran(&ctx, format!("send_notification({})", task.0));
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the worker on `bus` until `stop` resolves, then shuts down: finishes
/// the tasks in hand and gives back what it read ahead.
pub async fn serve(bus: Bus, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let Some(celery) = bus.celery() else {
        anyhow::bail!(
            "the Celery queues live on Redis: set EVENTBUS_URL=redis://127.0.0.1:6379/0 (the Celery broker of the Django side)"
        );
    };
    let handled: Vec<&str> = bus
        .registry()
        .handlers()
        .filter_map(|h| h.event_type())
        .collect();
    let mut queues: Vec<String> = celery
        .tasks()
        .filter(|t| handled.contains(&t.name.as_str()))
        .map(|t| format!("{} on {}", t.name, t.queue))
        .collect();
    queues.sort();
    let mut running = bus.spawn();
    running.ready().await?;
    println!(
        "eventbus celery example: serving {} ({}); Ctrl-C stops it",
        queues.join(", "),
        celery.client().config()
    );
    stop.await;
    println!("stopping: finishing the tasks in hand");
    running.shutdown().await?;
    Ok(())
}

#[allow(dead_code)] // not called where a test includes this file
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let bus = Bus::builder().service("reviews").connect_env().await?;
    serve(bus, stop_signal()).await
}
