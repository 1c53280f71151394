#![doc = include_str!("../README.md")]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod dashboard;
mod dlq;
#[cfg(feature = "redis")]
mod groups;
mod publish;
#[cfg(feature = "redis")]
mod replay;
mod tail;
mod webhooks;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "eventbus",
    version,
    about = "Operate eventbus services: the transactional outbox (relay, migrate, capture, outbox-stats, retry-failed), webhook subscriptions (webhooks), the dead-letter queue (dlq), consumer groups (groups), the log (tail, publish, replay) and a dashboard.",
    after_help = "Logs go to stderr (RUST_LOG, default `info`). Exit codes: 0 ok, 1 error, 2 usage, 3 a check found a problem (`dlq list --max`).",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One subcommand.
#[derive(Debug, Subcommand)]
enum Command {
    /// Move committed outbox rows to the transport until SIGINT/SIGTERM.
    #[command(
        long_about = "Move committed outbox rows to the transport until SIGINT/SIGTERM.\n\n\
            Claims rows in batches (FOR UPDATE SKIP LOCKED on PostgreSQL, so several relays never \
            send a row twice), publishes each batch, backs off per row, marks a row `failed` after \
            --max-attempts, and deletes published rows after --retention-hours. On SIGINT or \
            SIGTERM it finishes the batch in hand and exits 0.",
        after_help = "Example:\n  eventbus relay --database-url postgres://app@db/app --transport-url redis://redis:6379 --migrate"
    )]
    Relay(RelayArgs),

    /// Create the outbox table and its indexes (idempotent).
    #[command(
        long_about = "Create the outbox table and its indexes, and on PostgreSQL its NOTIFY trigger \
            (idempotent, safe to run from several processes at once).",
        after_help = "Example:\n  eventbus migrate --database-url sqlite:app.db"
    )]
    Migrate(MigrateArgs),

    /// Print how many outbox rows are pending, published, failed.
    #[command(
        long_about = "Print how many outbox rows are pending (due, scheduled or in backoff), \
            published (not yet removed by the retention) and failed. A full scan: for operators, \
            not for a tight loop.",
        after_help = "Output: `pending N`, `published N`, `failed N` (one per line), or with --json\n  \
            {\"database\":\"postgres\",\"failed\":0,\"pending\":3,\"published\":120}"
    )]
    OutboxStats(StatsArgs),

    /// Make the failed outbox rows pending again.
    #[command(
        long_about = "Make every failed outbox row pending again, due now, with its attempts reset \
            (after fixing what made them fail); prints how many.",
        after_help = "Output: `N failed row(s) are pending again`, or with --json\n  \
            {\"database\":\"postgres\",\"retried\":2}"
    )]
    RetryFailed(RetryFailedArgs),

    /// Record a table's changes in the outbox with database triggers.
    #[command(
        subcommand,
        long_about = "Record a table's changes in the outbox with database triggers: every \
            INSERT, UPDATE (that changes a value) and DELETE, whoever makes it, writes a \
            record_create / record_change / record_delete CloudEvent into the outbox in the same \
            transaction, for the relay to publish."
    )]
    Capture(CaptureCommand),

    /// Look at a service's webhook subscriptions and re-send dead-lettered deliveries.
    #[command(
        subcommand,
        long_about = "Look at a service's webhook subscriptions over its subscriptions API \
            (`/subscriptions`, served by `eventbus::http::Http::webhooks`): list them, show one, \
            read its delivery attempts, and re-send its dead-lettered deliveries."
    )]
    Webhooks(webhooks::WebhooksCommand),

    /// The dead-letter queue: list, show, replay, purge, stats.
    #[command(
        subcommand,
        long_about = "The dead-letter queue of a transport (`--transport-url`, default EVENTBUS_URL), \
            read and changed directly: list and filter, show one, replay (each to the group that gave \
            up on it, keeping the event id), purge, count by type, group and error class. On Redis \
            it covers the Celery task queues' dead letters too (ids `celery:...`).",
        after_help = "Examples:\n  eventbus dlq list --type send_email_task --since 2h\n  \
            eventbus dlq replay --all --error-contains timeout --rate 50\n  \
            eventbus dlq stats --json"
    )]
    Dlq(dlq::DlqCommand),

    /// Print events as they are published (the transport's log, by cursor).
    #[command(
        long_about = "Print the events of a transport's log as they are published: from now on \
            (default), from the oldest it keeps (`--from start`), or after a cursor printed by \
            `--json`; one line each (time, type, id, subject, data), or JSON lines. Needs a \
            transport that keeps a log (Redis Streams); runs until --count or SIGINT.",
        after_help = "Examples:\n  eventbus tail --type review_created\n  eventbus tail --from start --count 10 --json"
    )]
    Tail(tail::TailArgs),

    /// Publish one CloudEvent of a type, with JSON data.
    #[command(
        after_help = "Examples:\n  eventbus publish review_created '{\"id\": 42}'\n  \
            eventbus publish review_created @review.json --subject 42 --json"
    )]
    Publish(publish::PublishArgs),

    /// A read-only web dashboard of the dead letters (and the outbox).
    #[command(
        long_about = "Serve server-rendered pages (no JavaScript) that read the transport, and the \
            outbox database when --database-url is given, on each request, keeping no state: an \
            overview, the dead letters (filter, show the last error and the payload, replay), the \
            outbox counts. Read-only unless --allow-write, which needs --token (or \
            EVENTBUS_DASHBOARD_TOKEN); listens on 127.0.0.1:8088 unless --bind says otherwise.",
        after_help = "Example:\n  eventbus dashboard --bind 127.0.0.1:8088 --allow-write --token \"$(openssl rand -hex 16)\""
    )]
    Dashboard(dashboard::DashboardArgs),

    /// The consumer groups of Redis Streams: lag, in flight, consumers, oldest age, dead letters.
    #[cfg(feature = "redis")]
    #[command(
        long_about = "Per consumer group of a Redis Streams transport: its lag (events not yet \
            delivered to it), in flight (delivered, not settled), redelivered, its consumers (alive \
            or not, by their heartbeats), the age of its oldest unsettled event and its dead \
            letters, read from the server. --max-lag and --max-age make it exit with code 3 when a \
            group is over them (for scripts and alerts); --watch prints again every 2 s.",
        after_help = "Examples:\n  eventbus groups\n  eventbus groups --type review_created --json\n  \
            eventbus groups --max-lag 1000 --max-age 5m || alert"
    )]
    Groups(groups::GroupsArgs),

    /// Deliver a group's past events again (Redis Streams, from what the streams keep).
    #[cfg(feature = "redis")]
    #[command(
        long_about = "Deliver the events a Redis Streams consumer group read since a time to that \
            group again, and only to it (through its replay stream), with their ids: for a handler \
            whose bug is fixed. --dry-run counts them.",
        after_help = "Example:\n  eventbus replay --group reviews.on_review_created --since 2h --type review_created"
    )]
    Replay(replay::ReplayArgs),
}

/// `capture apply` / `capture drop`.
#[derive(Debug, Subcommand)]
enum CaptureCommand {
    /// Create (or replace) the capture triggers of a table (idempotent).
    #[command(
        long_about = "Create (or replace) the capture triggers of a table, and the outbox table if it \
            is missing. Idempotent: applying again leaves one set of triggers (with the new options).",
        after_help = "Example:\n  eventbus capture apply --database-url postgres://app@db/app --table review --model Review --id id"
    )]
    Apply(CaptureArgs),

    /// Remove the capture triggers of a table (idempotent).
    #[command(
        long_about = "Remove the capture triggers of a table: its changes are no longer recorded. \
            Idempotent, also when the table does not exist; rows already in the outbox stay.",
        after_help = "Example:\n  eventbus capture drop --database-url sqlite:app.db --table review"
    )]
    Drop(CaptureArgs),
}

/// Options of `capture apply` and `capture drop`.
#[derive(Debug, Args)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
struct CaptureArgs {
    /// The database: `postgres://user:pass@host/db` or `sqlite:path/to/app.db`.
    #[arg(
        long,
        visible_alias = "database",
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = non_empty
    )]
    database_url: String,

    /// The table whose changes are recorded (as stored: case-sensitive).
    #[arg(long, value_name = "NAME")]
    table: String,

    /// The PostgreSQL schema of the table (default: the search_path).
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,

    /// The `model_name` in the events' data (default: the table name).
    #[arg(long, value_name = "NAME")]
    model: Option<String>,

    /// The column identifying a row: `data.id` and the `subject`.
    #[arg(long, value_name = "COLUMN", default_value = "id")]
    id: String,

    /// The CloudEvents `source` of the events (default `/<table>`).
    #[arg(long, value_name = "URI")]
    source: Option<String>,
}

/// The outbox database, shared by every command.
#[derive(Debug, Args)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
struct DatabaseArg {
    /// The outbox database: `postgres://user:pass@host/db` or `sqlite:path/to/app.db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = non_empty
    )]
    database_url: String,
}

/// Options of `relay`.
#[derive(Debug, Args)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
struct RelayArgs {
    #[command(flatten)]
    database: DatabaseArg,

    /// Where to publish: `memory://`, `redis://host:6379`, `rediss://...` (TLS), `redis+cluster://...`.
    #[arg(
        long,
        env = "EVENTBUS_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = non_empty
    )]
    transport_url: String,

    /// Rows claimed and published per round, in one transport batch (default 500).
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    batch_size: Option<usize>,

    /// Publish attempts of a row before it becomes `failed` (default 25).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,

    /// Longest idle wait between two looks at the table, in milliseconds
    /// (default 500 on PostgreSQL, where NOTIFY wakes the relay at once; 100 on SQLite).
    #[arg(long, value_name = "MS")]
    poll_interval_ms: Option<u64>,

    /// Delete published rows this many hours after publication; 0 keeps them (default 168, a week).
    #[arg(long, value_name = "HOURS")]
    retention_hours: Option<u64>,

    /// Create the outbox table first (what `eventbus migrate` does).
    #[arg(long)]
    migrate: bool,

    /// The service name of the relay's own bus.
    #[arg(long, value_name = "NAME", default_value = "eventbus-relay")]
    service: String,
}

/// Options of `migrate`.
#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArg,
}

/// Options of `outbox-stats`.
#[derive(Debug, Args)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
struct StatsArgs {
    #[command(flatten)]
    database: DatabaseArg,

    /// Print one JSON object: `database`, `pending`, `published`, `failed`.
    #[arg(long)]
    json: bool,
}

/// Options of `retry-failed`.
#[derive(Debug, Args)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
struct RetryFailedArgs {
    #[command(flatten)]
    database: DatabaseArg,

    /// Print one JSON object: `database`, `retried` (how many rows are pending again).
    #[arg(long)]
    json: bool,
}

/// A URL given on the command line or in the environment must not be blank
/// (an exported but empty `DATABASE_URL` is a mistake, not a value).
fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("the URL is blank (an environment variable set but empty?)".into())
    } else {
        Ok(value.to_owned())
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Relay(_) => "relay",
            Command::Migrate(_) => "migrate",
            Command::OutboxStats(_) => "outbox-stats",
            Command::RetryFailed(_) => "retry-failed",
            Command::Capture(CaptureCommand::Apply(_)) => "capture apply",
            Command::Capture(CaptureCommand::Drop(_)) => "capture drop",
            Command::Webhooks(w) => w.name(),
            Command::Dlq(d) => d.name(),
            Command::Tail(_) => "tail",
            Command::Publish(_) => "publish",
            Command::Dashboard(_) => "dashboard",
            #[cfg(feature = "redis")]
            Command::Groups(_) => "groups",
            #[cfg(feature = "redis")]
            Command::Replay(_) => "replay",
        }
    }

    /// The URLs the user gave, to keep them out of error messages.
    fn urls(&self) -> Vec<&str> {
        match self {
            Command::Relay(a) => vec![&a.database.database_url, &a.transport_url],
            Command::Migrate(a) => vec![&a.database.database_url],
            Command::OutboxStats(a) => vec![&a.database.database_url],
            Command::RetryFailed(a) => vec![&a.database.database_url],
            Command::Capture(CaptureCommand::Apply(a) | CaptureCommand::Drop(a)) => {
                vec![&a.database_url]
            }
            Command::Webhooks(w) => vec![&w.common().url],
            Command::Dlq(d) => vec![d.url()],
            Command::Tail(t) => vec![&t.transport_url],
            Command::Publish(p) => vec![&p.transport_url],
            Command::Dashboard(d) => vec![&d.transport_url],
            #[cfg(feature = "redis")]
            Command::Groups(g) => vec![&g.transport_url],
            #[cfg(feature = "redis")]
            Command::Replay(r) => vec![&r.transport_url],
        }
    }
}

fn main() -> ExitCode {
    // Usage mistakes print clap's message and exit 2; `--help` exits 0.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eventbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli.command)) {
        Ok(false) => ExitCode::SUCCESS,
        // A check found a problem (`--max`).
        Ok(true) => ExitCode::from(3),
        Err(message) => {
            eprintln!("eventbus: {}", one_line(&message, &cli.command.urls()));
            ExitCode::FAILURE
        }
    }
}

/// `message` on one line, with every URL of `urls` that appears in it
/// redacted (eventbus's own messages already redact; this covers the rest).
fn one_line(message: &str, urls: &[&str]) -> String {
    let mut text = message.trim().replace('\n', "; ");
    for url in urls {
        let redacted = eventbus::transport::redact(url);
        if !url.is_empty() && redacted != *url {
            text = text.replace(url, &redacted);
        }
    }
    text
}

/// Runs one command; `Ok(true)` when a check found a problem (exit code 3).
async fn run(command: &Command) -> Result<bool, String> {
    match command {
        Command::Webhooks(w) => webhooks::run(w).await.map(|()| false),
        Command::Dlq(d) => dlq::run(d).await,
        Command::Tail(t) => tail::run(t).await.map(|()| false),
        Command::Publish(p) => publish::run(p).await.map(|()| false),
        Command::Dashboard(d) => dashboard::run(d).await.map(|()| false),
        #[cfg(feature = "redis")]
        Command::Groups(g) => groups::run(g).await,
        #[cfg(feature = "redis")]
        Command::Replay(r) => replay::run(r).await.map(|()| false),
        outbox => run_outbox(outbox).await.map(|()| false),
    }
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
async fn run_outbox(command: &Command) -> Result<(), String> {
    Err(format!(
        "`{}` needs the outbox: build eventbus-cli with the `postgres` or `sqlite` feature",
        command.name()
    ))
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn run_outbox(command: &Command) -> Result<(), String> {
    use eventbus::outbox::{self, Database, Relay, RelayOptions};
    use std::time::Duration;

    let what = command.name();
    let fail = |e: eventbus::Error| format!("{what} failed: {e}");
    match command {
        // Not the outbox: `run` took it.
        Command::Webhooks(w) => webhooks::run(w).await?,
        Command::Dlq(d) => {
            dlq::run(d).await?;
        }
        Command::Tail(t) => tail::run(t).await?,
        Command::Publish(p) => publish::run(p).await?,
        Command::Dashboard(d) => dashboard::run(d).await?,
        #[cfg(feature = "redis")]
        Command::Groups(g) => {
            groups::run(g).await?;
        }
        #[cfg(feature = "redis")]
        Command::Replay(r) => replay::run(r).await?,
        Command::Migrate(args) => {
            let db = Database::connect(&args.database.database_url)
                .await
                .map_err(fail)?;
            outbox::migrate(&db).await.map_err(fail)?;
            println!("the outbox table is ready ({})", db.kind());
        }
        Command::OutboxStats(args) => {
            let db = Database::connect(&args.database.database_url)
                .await
                .map_err(fail)?;
            let c = outbox::counts(&db).await.map_err(fail)?;
            if args.json {
                let value = serde_json::json!({
                    "database": db.kind(),
                    "pending": c.pending,
                    "published": c.published,
                    "failed": c.failed,
                });
                println!("{value}");
            } else {
                println!(
                    "pending {}\npublished {}\nfailed {}",
                    c.pending, c.published, c.failed
                );
            }
        }
        Command::RetryFailed(args) => {
            let db = Database::connect(&args.database.database_url)
                .await
                .map_err(fail)?;
            let n = outbox::retry_failed(&db).await.map_err(fail)?;
            if args.json {
                let value = serde_json::json!({ "database": db.kind(), "retried": n });
                println!("{value}");
            } else {
                println!("{n} failed row(s) are pending again");
            }
        }
        Command::Capture(command) => {
            let (CaptureCommand::Apply(args) | CaptureCommand::Drop(args)) = command;
            let db = Database::connect(&args.database_url).await.map_err(fail)?;
            let mut capture =
                outbox::capture::Capture::table(args.table.as_str()).id(args.id.as_str());
            if let Some(schema) = &args.schema {
                capture = capture.schema(schema.as_str());
            }
            if let Some(model) = &args.model {
                capture = capture.model(model.as_str());
            }
            if let Some(source) = &args.source {
                capture = capture.source(source.as_str());
            }
            match command {
                CaptureCommand::Apply(_) => {
                    capture.apply(&db).await.map_err(fail)?;
                    println!(
                        "the changes of `{}` are captured into the outbox ({})",
                        args.table,
                        db.kind()
                    );
                }
                CaptureCommand::Drop(_) => {
                    capture.drop(&db).await.map_err(fail)?;
                    println!(
                        "the changes of `{}` are no longer captured ({})",
                        args.table,
                        db.kind()
                    );
                }
            }
        }
        Command::Relay(args) => {
            let db = Database::connect(&args.database.database_url)
                .await
                .map_err(fail)?;
            if args.migrate {
                outbox::migrate(&db).await.map_err(fail)?;
            }
            let bus = eventbus::Bus::builder()
                .service(args.service.as_str())
                .without_registered()
                .connect(&args.transport_url)
                .await
                .map_err(fail)?;
            let mut options = RelayOptions::new(db);
            if let Some(n) = args.batch_size {
                options = options.batch_size(n);
            }
            if let Some(n) = args.max_attempts {
                options = options.max_attempts(n);
            }
            if let Some(ms) = args.poll_interval_ms {
                options = options.poll_interval(Duration::from_millis(ms));
            }
            if let Some(h) = args.retention_hours {
                options =
                    options.retention((h > 0).then(|| Duration::from_secs(h.saturating_mul(3600))));
            }
            let relay = Relay::new(bus, options);
            let token = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(token.clone()));
            relay.run(token).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn stop_on_signal(token: tokio_util::sync::CancellationToken) {
    stop_signal().await;
    tracing::info!("stopping the relay");
    token.cancel();
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::warn!("cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("eventbus").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_relay_command() {
        let cli = parse(
            "relay --database-url postgres://x/db --transport-url=memory:// --batch-size 10 --migrate",
        )
        .unwrap();
        let Command::Relay(a) = cli.command else {
            panic!("not relay: {cli:?}");
        };
        assert_eq!(a.database.database_url, "postgres://x/db");
        assert_eq!(a.transport_url, "memory://");
        assert_eq!(a.batch_size, Some(10));
        assert_eq!(a.max_attempts, None);
        assert!(a.migrate);
        assert_eq!(a.service, "eventbus-relay");
    }

    #[test]
    fn parses_the_capture_commands() {
        let cli = parse(
            "capture apply --database postgres://x/db --table review --model Review --id uid --source /reviews",
        )
        .unwrap();
        let Command::Capture(CaptureCommand::Apply(a)) = cli.command else {
            panic!("not capture apply: {cli:?}");
        };
        assert_eq!(a.database_url, "postgres://x/db");
        assert_eq!(a.table, "review");
        assert_eq!(a.model.as_deref(), Some("Review"));
        assert_eq!(a.id, "uid");
        assert_eq!(a.source.as_deref(), Some("/reviews"));
        let cli = parse("capture drop --database-url sqlite:a.db --table review").unwrap();
        let Command::Capture(CaptureCommand::Drop(a)) = cli.command else {
            panic!("not capture drop: {cli:?}");
        };
        assert_eq!((a.id.as_str(), a.model, a.schema), ("id", None, None));
        let kind = |line| parse(line).unwrap_err().kind();
        assert_eq!(
            kind("capture apply --database-url a"),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(kind("capture frob --table t"), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn parses_json_flags() {
        let cli = parse("outbox-stats --database-url sqlite:a.db --json").unwrap();
        assert!(matches!(
            cli.command,
            Command::OutboxStats(StatsArgs { json: true, .. })
        ));
        let cli = parse("retry-failed --database-url sqlite:a.db").unwrap();
        assert!(matches!(
            cli.command,
            Command::RetryFailed(RetryFailedArgs { json: false, .. })
        ));
    }

    #[test]
    fn rejects_mistakes_with_a_reason() {
        let kind = |line| parse(line).unwrap_err().kind();
        assert_eq!(
            kind("relay --database-url a --transport-url b --bogus"),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind("relay --database-url a --transport-url b --batch-size ten"),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind("relay --database-url a --transport-url b --batch-size 0"),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind("migrate --database-url"), ErrorKind::InvalidValue);
        assert_eq!(kind("migrate --database-url="), ErrorKind::ValueValidation);
        assert_eq!(kind("frobnicate"), ErrorKind::InvalidSubcommand);
        assert_eq!(
            kind(""),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        // Exit code 2 for all of them; 0 for help and version.
        assert_eq!(parse("frobnicate").unwrap_err().exit_code(), 2);
        assert_eq!(parse("relay --help").unwrap_err().exit_code(), 0);
    }

    #[test]
    fn error_messages_are_one_line_without_passwords() {
        let url = "postgres://app:hunter2@db.internal/app";
        let text = one_line(
            &format!("migrate failed: cannot reach {url}\nretry later\n"),
            &[url],
        );
        assert_eq!(
            text,
            "migrate failed: cannot reach postgres://app:***@db.internal/app; retry later"
        );
    }
}
