//! The `eventbus` command line (feature `cli`).
//!
//! ```text
//! eventbus relay --database-url postgres://... --transport-url redis://...
//! eventbus migrate --database-url sqlite:app.db
//! eventbus outbox-stats --database-url ...
//! eventbus retry-failed --database-url ...
//! ```
//!
//! `--database-url` defaults to `DATABASE_URL`, `--transport-url` to
//! `EVENTBUS_URL`. Logs go to stderr (`RUST_LOG`, default `info`).

use std::process::ExitCode;

const USAGE: &str = "\
usage: eventbus <command> [options]

commands:
  relay          move committed outbox rows to the transport until SIGINT/SIGTERM
  migrate        create the outbox table and its indexes (idempotent)
  outbox-stats   print how many outbox rows are pending, published, failed
  retry-failed   make the failed outbox rows pending again

options:
  --database-url URL    postgres://user@host/db or sqlite:path.db (default: $DATABASE_URL)
  --transport-url URL   memory://, redis://host:6379, ... (relay; default: $EVENTBUS_URL)
  --batch-size N        rows per batch (relay; default 500)
  --max-attempts N      attempts before a row is failed (relay; default 25)
  --poll-interval-ms N  longest idle wait (relay)
  --retention-hours N   keep published rows this long, 0 to keep them (relay; default 168)
  --migrate             run `migrate` before relaying
  --service NAME        the service name of the relay's bus (default eventbus-relay)
";

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    command: String,
    database_url: Option<String>,
    transport_url: Option<String>,
    batch_size: Option<usize>,
    max_attempts: Option<u32>,
    poll_interval_ms: Option<u64>,
    retention_hours: Option<u64>,
    migrate: bool,
    service: Option<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    fn number<T: std::str::FromStr>(flag: &str, text: String) -> Result<T, String> {
        text.parse()
            .map_err(|_| format!("`{flag}` needs a number, got `{text}`"))
    }
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let take = |argv: &mut dyn Iterator<Item = String>| match inline.clone() {
            Some(v) => Ok(v),
            None => argv.next().ok_or_else(|| format!("`{flag}` needs a value")),
        };
        match flag.as_str() {
            "-h" | "--help" | "help" => args.command = "help".into(),
            "--database-url" => args.database_url = Some(take(&mut argv)?),
            "--transport-url" => args.transport_url = Some(take(&mut argv)?),
            "--batch-size" => args.batch_size = Some(number(&flag, take(&mut argv)?)?),
            "--max-attempts" => args.max_attempts = Some(number(&flag, take(&mut argv)?)?),
            "--poll-interval-ms" => args.poll_interval_ms = Some(number(&flag, take(&mut argv)?)?),
            "--retention-hours" => args.retention_hours = Some(number(&flag, take(&mut argv)?)?),
            "--service" => args.service = Some(take(&mut argv)?),
            "--migrate" => args.migrate = true,
            other if other.starts_with('-') => {
                return Err(format!("unknown option `{other}`"));
            }
            command if args.command.is_empty() => args.command = command.to_owned(),
            extra => return Err(format!("unexpected argument `{extra}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("eventbus: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.command.is_empty() || args.command == "help" {
        print!("{USAGE}");
        return if args.command.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
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
            eprintln!("eventbus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventbus: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
async fn run(args: Args) -> Result<(), String> {
    match args.command.as_str() {
        "relay" | "migrate" | "outbox-stats" | "retry-failed" => Err(format!(
            "`{}` needs the outbox: build eventbus with the `postgres` or `sqlite` feature",
            args.command
        )),
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn run(args: Args) -> Result<(), String> {
    use eventbus::outbox::{self, Database, Relay, RelayOptions};
    use std::time::Duration;

    let database_url = || {
        args.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                "give the outbox database with `--database-url` or DATABASE_URL".to_owned()
            })
    };
    match args.command.as_str() {
        "migrate" => {
            let db = Database::connect(&database_url()?)
                .await
                .map_err(|e| e.to_string())?;
            outbox::migrate(&db).await.map_err(|e| e.to_string())?;
            println!("the outbox table is ready ({})", db.kind());
            Ok(())
        }
        "outbox-stats" => {
            let db = Database::connect(&database_url()?)
                .await
                .map_err(|e| e.to_string())?;
            let c = outbox::counts(&db).await.map_err(|e| e.to_string())?;
            println!(
                "pending {}\npublished {}\nfailed {}",
                c.pending, c.published, c.failed
            );
            Ok(())
        }
        "retry-failed" => {
            let db = Database::connect(&database_url()?)
                .await
                .map_err(|e| e.to_string())?;
            let n = outbox::retry_failed(&db).await.map_err(|e| e.to_string())?;
            println!("{n} failed row(s) are pending again");
            Ok(())
        }
        "relay" => {
            let db = Database::connect(&database_url()?)
                .await
                .map_err(|e| e.to_string())?;
            if args.migrate {
                outbox::migrate(&db).await.map_err(|e| e.to_string())?;
            }
            let transport_url = args
                .transport_url
                .clone()
                .or_else(|| std::env::var("EVENTBUS_URL").ok())
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    "give the transport with `--transport-url` or EVENTBUS_URL".to_owned()
                })?;
            let bus = eventbus::Bus::builder()
                .service(args.service.as_deref().unwrap_or("eventbus-relay"))
                .without_registered()
                .connect(&transport_url)
                .await
                .map_err(|e| e.to_string())?;
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
                options = options.retention((h > 0).then(|| Duration::from_secs(h * 3600)));
            }
            let relay = Relay::new(bus, options);
            let token = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(token.clone()));
            relay.run(token).await.map_err(|e| e.to_string())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn stop_on_signal(token: tokio_util::sync::CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
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
    tracing::info!("stopping the relay");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_the_relay_command() {
        let a = args("relay --database-url postgres://x/db --transport-url=memory:// --batch-size 10 --migrate")
            .unwrap();
        assert_eq!(a.command, "relay");
        assert_eq!(a.database_url.as_deref(), Some("postgres://x/db"));
        assert_eq!(a.transport_url.as_deref(), Some("memory://"));
        assert_eq!(a.batch_size, Some(10));
        assert!(a.migrate);
    }

    #[test]
    fn rejects_mistakes_with_a_reason() {
        assert!(
            args("relay --bogus")
                .unwrap_err()
                .contains("unknown option `--bogus`")
        );
        assert!(
            args("relay --batch-size ten")
                .unwrap_err()
                .contains("needs a number")
        );
        assert!(
            args("relay --database-url")
                .unwrap_err()
                .contains("needs a value")
        );
    }
}
