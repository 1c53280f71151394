//! The reviews platform on eventbus: every event of its catalogue, the three
//! task queues, a global audit handler, a delayed reminder and a recurring
//! schedule. The three jobs are Celery tasks: on Redis they are real Celery
//! queues (`sms_send_queue`, `celery`) that Django's `send_task` and Python
//! Celery workers share (see `examples/celery.rs`); on memory they stay in
//! the process.
//!
//! ```text
//! cargo run --example reviews                                  # memory transport
//! EVENTBUS_URL=redis://127.0.0.1:6379 cargo run --example reviews --features redis
//! EVENTBUS_URL='redis://127.0.0.1:6379?mode=pubsub&codec=legacy' \
//!     cargo run --example reviews --features redis             # the legacy pub/sub catalogue
//! ```
//!
//! It publishes a short scenario, prints a trace of what was published and
//! handled (including a job that fails, is retried and ends in the dead-letter
//! queue, and a deprecated event delivered to the handler of its
//! replacement), then a sorted summary, and exits 0.
//!
//! The scenario is [`run`]; `examples/tests/reviews_redis.rs` calls it on
//! memory, on Redis Streams and on Redis pub/sub with the legacy codec (a
//! real `redis-server`) and compares the [`Report`]s: one instance of the
//! service gives the same summary on all three. What pub/sub does not give
//! (an event published while no subscriber is listening is lost, nothing is
//! redelivered after a crash) the scenario does not exercise: it publishes
//! only once [`Running::ready`](eventbus::Running::ready) said that every
//! subscription is live.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use eventbus::RetryPolicy;
use eventbus::{Bus, CloudEvent, Context, Event, handler, schedule};
use uuid::Uuid;

#[path = "reviews/events.rs"]
pub mod events;
use events::*;

/// What the scenario saw; handlers record into it through `ctx.state()`.
#[derive(Default)]
struct Trace {
    handled: Mutex<BTreeMap<String, u32>>,
}

impl Trace {
    fn handled(&self, ctx: &Context, handler: &str, detail: impl std::fmt::Display) {
        let ty = ctx.event_type();
        println!(
            "  handled   {ty:<22} by {handler:<28} attempt {} {detail}",
            ctx.attempt()
        );
        *self
            .handled
            .lock()
            .unwrap()
            .entry(format!("{handler} <- {ty}"))
            .or_default() += 1;
    }

    fn count(&self, key: &str) -> u32 {
        self.handled.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[handler]
async fn on_review_created(event: ReviewCreated, ctx: Context) -> eventbus::Result<()> {
    ctx.state::<Trace>().handled(
        &ctx,
        "on_review_created",
        "-> record_create, send_short_message, reminder in 1s",
    );
    let bus = ctx.bus();
    bus.publish(RecordCreate {
        id: event.id,
        model_name: "Review".into(),
    })
    .await?;
    // The `ShortMessage` row the Django side would have inserted.
    bus.publish(SendShortMessage(1001)).await?;
    bus.publish_after(ReviewReminder { id: event.id }, Duration::from_secs(1))
        .await
}

#[handler]
async fn on_moderate_action(event: ModerateAction, ctx: Context) {
    let via = if ctx.event_type() == ModerateAction::TYPE {
        String::new()
    } else {
        format!(
            "(upcast from deprecated `{}`, status {:?})",
            ctx.event_type(),
            event.status
        )
    };
    ctx.state::<Trace>()
        .handled(&ctx, "on_moderate_action", via);
}

/// The old consumer of `review_approved` keeps working while it migrates.
#[handler]
async fn legacy_on_review_approved(_event: ReviewApproved, ctx: Context) {
    ctx.state::<Trace>()
        .handled(&ctx, "legacy_on_review_approved", "(old handler, old type)");
}

#[handler]
async fn on_record_create(event: RecordCreate, ctx: Context) {
    ctx.state::<Trace>().handled(
        &ctx,
        "on_record_create",
        format!("model {}", event.model_name),
    );
}

#[handler]
async fn on_id_user_changed(event: IdUserChanged, ctx: Context) {
    let via = if ctx.event_type() == IdUserChanged::TYPE {
        String::new()
    } else {
        format!(
            "(old name `{}` decoded as id_user_changed)",
            ctx.event_type()
        )
    };
    ctx.state::<Trace>().handled(
        &ctx,
        "on_id_user_changed",
        format!("{:?} {via}", event.action),
    );
}

#[handler(group = "sms_send_queue", retries = 5, concurrency = 8)]
async fn send_short_message(job: SendShortMessage, ctx: Context) {
    ctx.state::<Trace>()
        .handled(&ctx, "send_short_message", format!("message {}", job.0));
}

#[derive(Debug)]
struct SmtpError(i64);

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SMTP rejected the recipient of e-mail {}", self.0)
    }
}

#[handler(group = "send_email_task", retries = 2)]
async fn send_email_task(job: SendEmailTask, ctx: Context) -> Result<(), SmtpError> {
    // E-mail 0 stands for a row whose recipient the SMTP server rejects.
    if job.0 == 0 {
        ctx.state::<Trace>()
            .handled(&ctx, "send_email_task", "FAILED, will retry or dead-letter");
        return Err(SmtpError(job.0));
    }
    ctx.state::<Trace>()
        .handled(&ctx, "send_email_task", format!("e-mail {}", job.0));
    Ok(())
}

#[handler(group = "send_notification")]
async fn send_notification(job: SendNotification, ctx: Context) {
    ctx.state::<Trace>()
        .handled(&ctx, "send_notification", format!("notification {}", job.0));
}

#[handler]
async fn on_review_reminder(_event: ReviewReminder, ctx: Context) {
    ctx.state::<Trace>()
        .handled(&ctx, "on_review_reminder", "(published 1s later)");
}

#[handler]
async fn on_moderation_stats_due(_event: ModerationStatsDue, ctx: Context) {
    ctx.state::<Trace>()
        .handled(&ctx, "on_moderation_stats_due", "(recurring schedule)");
}

/// Sees every event on the bus, of any type.
#[handler(all)]
async fn audit(event: CloudEvent, ctx: Context) {
    ctx.state::<Trace>().handled(
        &ctx,
        "audit",
        format!(
            "from {}",
            eventbus::cloudevents::AttributesReader::source(&event)
        ),
    );
}

/// Every second (in production: `cron = "0 9 * * MON"`).
#[schedule(every = "1s")]
fn moderation_stats() -> ModerationStatsDue {
    let tick_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    ModerationStatsDue { tick_ms }
}

/// What the scenario waits for before it prints its summary, as `handler <-
/// type`. The global `audit` handler does not see the Celery tasks (a task
/// runs once, on its own handler, on every transport). On Redis the global `audit` handler finds the streams of types
/// first published after it started by polling, so it may see them last.
const EXPECTED: &[&str] = &[
    "audit <- grant_published",
    "audit <- moderate_action",
    "audit <- moderation_stats_due",
    "audit <- record_change",
    "audit <- record_create",
    "audit <- record_delete",
    "audit <- review_approved",
    "audit <- review_created",
    "audit <- review_reminder",
    "audit <- sso_user_changed",
    "audit <- user_applied",
    "audit <- user_survey_finished",
    "audit <- winners_announcement",
    "legacy_on_review_approved <- review_approved",
    "on_id_user_changed <- sso_user_changed",
    "on_moderate_action <- moderate_action",
    "on_moderate_action <- review_approved",
    "on_moderation_stats_due <- moderation_stats_due",
    "on_record_create <- record_create",
    "on_review_created <- review_created",
    "on_review_reminder <- review_reminder",
    "send_notification <- send_notification",
    "send_short_message <- send_short_message",
];

fn published(ty: &str, note: &str) {
    println!("published {ty:<22} {note}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo run --example reviews -- docs --help`: the event catalogue, from this code.
    eventbus_catalog::main_if_requested("reviews");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_target(false)
        .init();

    let report = run(None).await?;
    println!("\ndead-letter queue:");
    for line in &report.dead_letters {
        println!("  {line}");
    }
    println!("\nsummary (handler <- type: times; schedule ticks shown once):");
    for line in &report.summary {
        println!("  {line}");
    }
    Ok(())
}

/// How a run of the scenario ended.
#[derive(Debug)]
pub struct Report {
    /// The transport's name (`memory`, `redis-streams`, ...).
    pub transport: &'static str,
    /// The dead letters: type, group, attempts and error.
    pub dead_letters: Vec<String>,
    /// `handler <- type: times`, sorted; a schedule's ticks count once.
    pub summary: Vec<String>,
}

/// Runs the scenario on `url` (`None`: `EVENTBUS_URL`, default `memory://`),
/// printing its trace, until every handler saw its events and the failing
/// job is dead-lettered.
pub async fn run(url: Option<&str>) -> anyhow::Result<Report> {
    let builder = Bus::builder()
        .service("reviews")
        .state(Trace::default())
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        });
    let bus = match url {
        Some(url) => builder.connect(url).await?,
        None => builder.connect_env().await?,
    };
    println!("eventbus reviews example on {}\n", bus.transport().name());

    // Publish only once every handler's subscription is live: on pub/sub an
    // event published before reaches no one.
    let mut running = bus.spawn();
    running.ready().await?;
    let review = Uuid::now_v7();
    let user = Uuid::now_v7();

    bus.publish(ReviewCreated { id: review }).await?;
    published("review_created", "");
    bus.publish(ReviewApproved { id: review }).await?;
    published(
        "review_approved",
        "(deprecated: replaced by moderate_action)",
    );
    bus.publish(ModerateAction {
        action_id: Uuid::now_v7(),
        status: ModerationStatus::Rejected,
        model_name: "Review".into(),
        id: review,
    })
    .await?;
    published("moderate_action", "");
    bus.publish(RecordChange {
        id: review,
        model_name: "Review".into(),
    })
    .await?;
    published("record_change", "");
    bus.publish(RecordDelete {
        id: review,
        model_name: "Review".into(),
    })
    .await?;
    published("record_delete", "");

    // An old producer still sends the deprecated name `sso_user_changed`.
    let old = eventbus::codec::decode_cloudevent(
        format!(
            r#"{{"specversion":"1.0","id":"{}","type":"sso_user_changed","source":"/sso","datacontenttype":"application/json","data":{{"data":{{"id":"{user}"}},"action":"update"}}}}"#,
            Uuid::now_v7()
        )
        .as_bytes(),
    )?;
    bus.publish_cloudevent(&old).await?;
    published(
        "sso_user_changed",
        "(old name of id_user_changed, from an old producer)",
    );

    for (ty, id) in [
        ("grant_published", Uuid::now_v7()),
        ("user_applied", Uuid::now_v7()),
        ("winners_announcement", Uuid::now_v7()),
        ("user_survey_finished", Uuid::now_v7()),
    ] {
        match ty {
            "grant_published" => bus.publish(GrantPublished { id }).await?,
            "user_applied" => bus.publish(UserApplied { id }).await?,
            "winners_announcement" => bus.publish(WinnersAnnouncement { id }).await?,
            _ => bus.publish(UserSurveyFinished { id }).await?,
        }
        published(ty, "");
    }

    bus.publish(SendEmailTask(0)).await?;
    published("send_email_task", "(to an address the SMTP server rejects)");
    bus.publish(SendNotification(2001)).await?;
    published("send_notification", "");

    // Wait for every handler to see its events (the delayed reminder and a
    // schedule tick included) and for the dead letter.
    let trace = bus.state::<Trace>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = bus.dead_letters(10).await?;
        if EXPECTED.iter().all(|key| trace.count(key) >= 1) && !dead.is_empty() {
            break dead;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the scenario did not complete within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown().await?;

    let dead_letters = dead
        .iter()
        .map(|d| {
            format!(
                "{} in group {} after {} attempts: {}",
                d.event_type.as_deref().unwrap_or("?"),
                d.group,
                d.attempts,
                d.error
            )
        })
        .collect();
    let summary = trace
        .handled
        .lock()
        .unwrap()
        .iter()
        .map(|(key, n)| {
            let n = if key.contains("moderation_stats_due") {
                1
            } else {
                *n
            };
            format!("{key}: {n}")
        })
        .collect();
    Ok(Report {
        transport: bus.transport().name(),
        dead_letters,
        summary,
    })
}
