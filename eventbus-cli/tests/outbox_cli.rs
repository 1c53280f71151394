//! The `eventbus` command line, run as the built binary: every command on a
//! real PostgreSQL (started by `testkit`) and on SQLite, `--json` output,
//! `--help`, exit codes (0 ok, 1 error, 2 usage), error sentences without
//! passwords, and two relays into a real redis-server.

use std::process::{Command, Output, Stdio};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use std::time::Duration;

/// `eventbus args...` with no URL in the environment and quiet logs.
fn eventbus(args: &[&str]) -> Output {
    eventbus_with_env(args, &[])
}

fn eventbus_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("EVENTBUS_URL")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run eventbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, or a panic naming the output (killed by a signal).
fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("no exit code: {o:?}"))
}

/// The one JSON object `--json` prints.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn json(o: &Output) -> serde_json::Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    let text = stdout(o);
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A loopback port nothing listens on (connections are refused).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runtime error: exit 1 and one sentence on stderr, without `secret`.
fn assert_one_sentence_error(o: &Output, secret: &str) -> String {
    let text = stderr(o);
    assert_eq!(code(o), 1, "{text}");
    assert!(o.stdout.is_empty(), "{}", stdout(o));
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("eventbus: "), "{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    text
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod outbox {
    //! The outbox database as a service sees it: rows written in its
    //! transactions, and the counts.

    use eventbus::outbox::{Counts, Database};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, eventbus::Event)]
    #[event("cli_test.note")]
    pub struct Note {
        pub n: u64,
    }

    /// One connection pool and a bus whose outbox writes into it.
    pub struct Db {
        db: Database,
        bus: eventbus::Bus,
    }

    impl Db {
        pub async fn open(url: &str) -> Db {
            let bus = eventbus::Bus::builder()
                .service("cli-test")
                .without_registered()
                .connect("memory://")
                .await
                .expect("bus");
            let db = Database::connect(url).await.expect("database");
            Db { db, bus }
        }

        /// Publishes `Note { n }` for each of `ns` through the outbox, in one
        /// committed transaction; the event ids.
        pub async fn publish(&self, ns: impl IntoIterator<Item = u64>) -> Vec<String> {
            let outbox = self.bus.outbox();
            let mut ids = Vec::new();
            match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    let mut tx = pool.begin().await.expect("begin");
                    for n in ns {
                        ids.push(outbox.publish(&mut tx, Note { n }).await.expect("publish"));
                    }
                    tx.commit().await.expect("commit");
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                    for n in ns {
                        ids.push(outbox.publish(&mut tx, Note { n }).await.expect("publish"));
                    }
                    tx.commit().await.expect("commit");
                }
                other => panic!("unexpected database {other:?}"),
            }
            ids.into_iter().map(|id| id.to_string()).collect()
        }

        pub async fn counts(&self) -> Counts {
            eventbus::outbox::counts(&self.db).await.expect("counts")
        }

        /// Runs one statement of a test's own (a business table, a change).
        pub async fn exec(&self, sql: &'static str) {
            match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    sqlx::raw_sql(sql).execute(pool).await.expect("statement");
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlx::raw_sql(sql).execute(pool).await.expect("statement");
                }
                other => panic!("unexpected database {other:?}"),
            }
        }

        /// Marks one row `failed`, as the relay does after `max_attempts`.
        pub async fn fail_one_row(&self) {
            let sql = "UPDATE eventbus_outbox SET status = 'failed' \
                       WHERE id = (SELECT id FROM eventbus_outbox LIMIT 1)";
            match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    sqlx::query(sql).execute(pool).await.expect("update");
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlx::query(sql).execute(pool).await.expect("update");
                }
                other => panic!("unexpected database {other:?}"),
            }
        }
    }
}

// ------------------------------------------------------------------ commands

#[cfg(feature = "postgres")]
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

    let db = outbox::Db::open(&url).await;
    db.publish(1..=3).await;

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
        testkit::eventually(Duration::from_secs(20), || async {
            db.counts().await.published == 3
        })
        .await,
        "the CLI relay did not publish"
    );
    let pid = relay.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = relay.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");

    db.fail_one_row().await;
    let out = eventbus(&["retry-failed", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 failed row(s) are pending again"));
}

/// `--json` on PostgreSQL, with the URL from `DATABASE_URL`.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn json_output_on_postgres_with_the_url_from_the_environment() {
    let server = testkit::PostgresServer::shared().unwrap();
    let url = server.create_database().unwrap();
    let env = [("DATABASE_URL", url.as_str())];

    assert!(eventbus_with_env(&["migrate"], &env).status.success());
    let db = outbox::Db::open(&url).await;
    db.publish(1..=2).await;
    let stats = json(&eventbus_with_env(&["outbox-stats", "--json"], &env));
    assert_eq!(
        stats,
        serde_json::json!({"database": "postgres", "pending": 2, "published": 0, "failed": 0})
    );

    db.fail_one_row().await;
    let stats = json(&eventbus_with_env(&["outbox-stats", "--json"], &env));
    assert_eq!(
        (stats["pending"].as_u64(), stats["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let retried = json(&eventbus_with_env(&["retry-failed", "--json"], &env));
    assert_eq!(
        retried,
        serde_json::json!({"database": "postgres", "retried": 1})
    );
    let retried = json(&eventbus_with_env(&["retry-failed", "--json"], &env));
    assert_eq!(retried["retried"], 0);
}

/// Every command on SQLite, the relay included (`--migrate` creates the table).
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn every_command_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());

    let out = eventbus(&["migrate", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "the outbox table is ready (sqlite)\n");
    let db = outbox::Db::open(&url).await;
    db.publish(1..=4).await;

    let stats = json(&eventbus(&[
        "outbox-stats",
        "--database-url",
        &url,
        "--json",
    ]));
    assert_eq!(
        stats,
        serde_json::json!({"database": "sqlite", "pending": 4, "published": 0, "failed": 0})
    );

    let mut relay = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .args(["relay", "--database-url", &url, "--migrate"])
        .args(["--batch-size", "2", "--poll-interval-ms", "50"])
        .args(["--max-attempts", "3", "--retention-hours", "0"])
        .env("EVENTBUS_URL", "memory://")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(20), || async {
            db.counts().await.published == 4
        })
        .await,
        "the CLI relay did not publish on SQLite"
    );
    let pid = relay.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = relay.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");

    let out = eventbus(&["outbox-stats", "--database-url", &url]);
    assert_eq!(stdout(&out), "pending 0\npublished 4\nfailed 0\n");

    db.fail_one_row().await;
    let retried = json(&eventbus(&[
        "retry-failed",
        "--database-url",
        &url,
        "--json",
    ]));
    assert_eq!(
        retried,
        serde_json::json!({"database": "sqlite", "retried": 1})
    );
    let out = eventbus(&["retry-failed", "--database-url", &url]);
    assert_eq!(stdout(&out), "0 failed row(s) are pending again\n");
}

/// `capture apply` records a table's changes, idempotently; `capture drop`
/// stops it; a bad or missing table is one sentence and exit 1.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn capture_apply_and_drop(url: &str, kind: &str) {
    let db = outbox::Db::open(url).await;
    db.exec("CREATE TABLE review (id BIGINT PRIMARY KEY, title TEXT)")
        .await;
    let apply = [
        "capture",
        "apply",
        "--database",
        url,
        "--table",
        "review",
        "--model",
        "Review",
        "--id",
        "id",
    ];
    for _ in 0..2 {
        let out = eventbus(&apply);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("the changes of `review` are captured into the outbox ({kind})\n")
        );
    }
    db.exec("INSERT INTO review (id, title) VALUES (1, 'a')")
        .await;
    db.exec("UPDATE review SET title = 'b' WHERE id = 1").await;
    assert_eq!(db.counts().await.pending, 2, "one row per change");

    let drop = [
        "capture",
        "drop",
        "--database-url",
        url,
        "--table",
        "review",
    ];
    for _ in 0..2 {
        let out = eventbus(&drop);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("the changes of `review` are no longer captured ({kind})\n")
        );
    }
    db.exec("UPDATE review SET title = 'c' WHERE id = 1").await;
    assert_eq!(db.counts().await.pending, 2, "nothing after the drop");

    let out = eventbus(&[
        "capture",
        "apply",
        "--database-url",
        url,
        "--table",
        "review;--",
    ]);
    let text = assert_one_sentence_error(&out, "hunter2");
    assert!(text.contains("capture apply failed"), "{text}");
    assert!(text.contains("is not a valid table name"), "{text}");
    let out = eventbus(&[
        "capture",
        "apply",
        "--database-url",
        url,
        "--table",
        "reviews",
    ]);
    let text = assert_one_sentence_error(&out, "hunter2");
    assert!(text.contains("no table `reviews`"), "{text}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn capture_apply_and_drop_on_postgres() {
    let server = testkit::PostgresServer::shared().unwrap();
    capture_apply_and_drop(&server.create_database().unwrap(), "postgres").await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn capture_apply_and_drop_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    capture_apply_and_drop(&url, "sqlite").await;
}

// ------------------------------------------------------------ help and usage

#[test]
fn mistakes_are_explained() {
    let out = eventbus(&["relay", "--transport-url", "memory://"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    {
        let out = eventbus(&[
            "relay",
            "--database-url",
            "mysql://x/y",
            "--transport-url",
            "memory://",
        ]);
        assert_one_sentence_error(&out, "no secret here");
        assert!(
            stderr(&out).contains("is not a database URL"),
            "{}",
            stderr(&out)
        );
    }

    let out = eventbus(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        stderr(&out)
    );

    let out = eventbus(&["--help"]);
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    assert!(help.contains("Usage: eventbus"), "{help}");
    for command in [
        "relay",
        "migrate",
        "capture",
        "outbox-stats",
        "retry-failed",
    ] {
        assert!(help.contains(command), "{command} missing from {help}");
    }

    // No command at all: the help, as a usage error.
    let out = eventbus(&[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("Usage: eventbus"), "{}", stderr(&out));
}

#[test]
fn every_command_has_help_naming_its_options() {
    let commands: [(&str, &[&str]); 4] = [
        (
            "relay",
            &[
                "--database-url",
                "DATABASE_URL",
                "--transport-url",
                "EVENTBUS_URL",
                "--batch-size",
                "--max-attempts",
                "--poll-interval-ms",
                "--retention-hours",
                "--migrate",
                "--service",
                "SIGTERM",
            ],
        ),
        ("migrate", &["--database-url", "DATABASE_URL", "idempotent"]),
        (
            "outbox-stats",
            &[
                "--database-url",
                "DATABASE_URL",
                "--json",
                "pending",
                "failed",
            ],
        ),
        (
            "retry-failed",
            &["--database-url", "DATABASE_URL", "--json", "pending again"],
        ),
    ];
    // A password in the environment never shows in the help.
    let env = [
        ("DATABASE_URL", "postgres://app:hunter2@db/app"),
        ("EVENTBUS_URL", "redis://:hunter2@redis:6379"),
    ];
    for (command, options) in commands {
        for help in [vec![command, "--help"], vec!["help", command]] {
            let out = eventbus_with_env(&help, &env);
            assert_eq!(code(&out), 0, "{help:?}: {}", stderr(&out));
            let text = stdout(&out);
            assert!(
                text.contains(&format!("Usage: eventbus {command}")),
                "{text}"
            );
            for option in options {
                assert!(
                    text.contains(option),
                    "`{command} --help` lacks {option}: {text}"
                );
            }
            assert!(!text.contains("hunter2"), "{text}");
        }
        // `-h` is the short form.
        assert_eq!(code(&eventbus(&[command, "-h"])), 0);
    }
    for command in ["apply", "drop"] {
        let out = eventbus(&["capture", command, "--help"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!("Usage: eventbus capture {command}")),
            "{text}"
        );
        for option in [
            "--database-url",
            "--table",
            "--model",
            "--id",
            "--schema",
            "--source",
            "idempotent",
        ] {
            assert!(
                text.to_lowercase().contains(option),
                "`capture {command} --help` lacks {option}: {text}"
            );
        }
    }
    // `capture` alone names its subcommands, as a usage error.
    let out = eventbus(&["capture"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("apply"), "{}", stderr(&out));
    let out = eventbus(&["--version"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("eventbus "), "{}", stdout(&out));
}

#[test]
fn usage_mistakes_exit_2() {
    let mistakes: [&[&str]; 7] = [
        &[
            "relay",
            "--database-url",
            "sqlite:a.db",
            "--transport-url",
            "memory://",
            "--bogus",
        ],
        &[
            "relay",
            "--database-url",
            "sqlite:a.db",
            "--transport-url",
            "memory://",
            "--batch-size",
            "ten",
        ],
        &[
            "relay",
            "--database-url",
            "sqlite:a.db",
            "--transport-url",
            "memory://",
            "--max-attempts",
            "0",
        ],
        &["relay", "--database-url", "sqlite:a.db"],
        &["migrate", "--database-url"],
        &[
            "outbox-stats",
            "--database-url",
            "sqlite:a.db",
            "--json=yes",
        ],
        &["retry-failed", "extra"],
    ];
    for args in mistakes {
        let out = eventbus(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("try '--help'"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A set but empty variable is no URL.
    let out = eventbus_with_env(&["migrate"], &[("DATABASE_URL", "")]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));
}

// ------------------------------------------------------------ runtime errors

/// Built without a database: every command says which feature it needs.
#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
#[test]
fn without_a_database_feature_each_command_names_the_features() {
    for command in ["migrate", "outbox-stats", "retry-failed"] {
        let out = eventbus(&[command, "--database-url", "postgres://app:hunter2@db/app"]);
        let text = assert_one_sentence_error(&out, "hunter2");
        assert!(
            text.contains(&format!("`{command}` needs the outbox")),
            "{text}"
        );
        assert!(text.contains("`postgres` or `sqlite` feature"), "{text}");
    }
}

/// PostgreSQL unreachable (the pool gives up after its 10 s acquire
/// timeout): exit 1, one sentence, the password replaced.
#[cfg(feature = "postgres")]
fn assert_unreachable_postgres(command: &str, url_in_env: bool) {
    let url = format!("postgres://app:hunter2@127.0.0.1:{}/app", refused_port());
    let mut args = vec![command];
    if url_in_env {
        args.push("--json");
    } else {
        args.extend(["--database-url", url.as_str()]);
    }
    let env: &[(&str, &str)] = if url_in_env {
        &[("DATABASE_URL", &url), ("RUST_LOG", "info")]
    } else {
        &[("RUST_LOG", "info")]
    };
    let out = eventbus_with_env(&args, env);
    let text = assert_one_sentence_error(&out, "hunter2");
    assert!(text.contains(&format!("{command} failed")), "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
    assert!(text.contains("app:***@127.0.0.1"), "{text}");
}

#[cfg(feature = "postgres")]
#[test]
fn an_unreachable_database_is_one_sentence_without_the_password() {
    assert_unreachable_postgres("outbox-stats", false);
}

#[cfg(feature = "postgres")]
#[test]
fn an_unreachable_database_from_the_environment_is_one_sentence_without_the_password() {
    assert_unreachable_postgres("retry-failed", true);
}

/// A SQLite file that cannot be created: exit 1, one sentence.
#[cfg(feature = "sqlite")]
#[test]
fn an_unopenable_sqlite_file_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("missing/dir/app.db").display());
    for command in ["migrate", "outbox-stats", "retry-failed"] {
        let out = eventbus(&[command, "--database-url", &url]);
        let text = assert_one_sentence_error(&out, "no secret here");
        assert!(text.contains(&format!("{command} failed")), "{text}");
        assert!(text.contains("SQLite"), "{text}");
    }
}

/// A transport URL the relay cannot use: exit 1, one sentence, the password replaced.
#[cfg(feature = "sqlite")]
#[test]
fn a_bad_transport_is_one_sentence_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("app.db").display());
    let mut urls = vec!["nats://app:hunter2@127.0.0.1:4222".to_owned()];
    if cfg!(feature = "redis") {
        urls.push(format!("redis://:hunter2@127.0.0.1:{}/0", refused_port()));
    }
    for url in &urls {
        let out = eventbus(&["relay", "--database-url", &db, "--transport-url", url]);
        let text = assert_one_sentence_error(&out, "hunter2");
        assert!(text.contains("relay failed"), "{text}");
    }
}

// ------------------------------------------------------------------- Redis

/// Two `eventbus relay` processes over 10,000 rows written while they run:
/// every event reaches Redis, none twice.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test]
async fn two_cli_relays_deliver_10000_rows_to_redis_once_each() {
    use std::collections::HashSet;

    let pg = testkit::PostgresServer::shared().unwrap();
    let url = pg.create_database().unwrap();
    let server = testkit::RedisServer::start()
        .expect("start redis-server (apt-get install -y redis-server)");
    assert!(
        eventbus(&["migrate", "--database-url", &url])
            .status
            .success()
    );
    let db = outbox::Db::open(&url).await;
    let relay = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_eventbus"))
            .args(["relay", "--database-url", &url, "--transport-url"])
            .arg(server.url())
            .args([
                "--batch-size",
                "200",
                "--poll-interval-ms",
                "200",
                "--service",
            ])
            .arg(name)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start `eventbus relay`")
    };
    let mut a = relay("relay-a");
    let mut b = relay("relay-b");

    const ROWS: u64 = 10_000;
    let mut ids = HashSet::new();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(100) {
        ids.extend(db.publish(chunk.iter().copied()).await);
    }
    assert!(
        testkit::eventually(Duration::from_secs(120), || async {
            db.counts().await.pending == 0
        })
        .await,
        "rows left pending: {:?}",
        db.counts().await
    );

    // SIGTERM: both stop cleanly.
    for child in [&mut a, &mut b] {
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }
    for child in [&mut a, &mut b] {
        let status = child.wait().unwrap();
        assert!(status.success(), "relay exited with {status}");
    }

    // The CloudEvents ids in the stream, in stream order.
    let key = "{eventbus}:stream:cli_test.note";
    let in_stream: Vec<String> = server
        .cmd(&["XRANGE", key, "-", "+"])
        .expect("XRANGE")
        .lines()
        .filter(|l| l.contains("\"specversion\""))
        .map(|l| {
            let event: serde_json::Value =
                serde_json::from_str(l.trim()).expect("a CloudEvent in the stream");
            event["id"].as_str().expect("an id").to_owned()
        })
        .collect();
    let distinct: HashSet<String> = in_stream.iter().cloned().collect();
    assert_eq!(distinct, ids, "every event reached Redis");
    assert_eq!(in_stream.len(), ROWS as usize, "no event published twice");
    assert_eq!(db.counts().await.published, ROWS);
}
