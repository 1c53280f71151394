//! A private PostgreSQL cluster per test binary (or per test), on a free
//! loopback port, in a temporary directory. Never the system instance on
//! port 5432.
//!
//! ```no_run
//! let pg = testkit::PostgresServer::shared()?;
//! let url = pg.create_database()?; // a fresh, empty database
//! # Ok::<(), testkit::Error>(())
//! ```
//!
//! The server binaries (`initdb`, `pg_ctl`, `postgres`, `createdb`) are
//! looked up in `EVENTBUS_PG_BIN`, then `PATH`, then
//! `/usr/lib/postgresql/<version>/bin` (newest first). PostgreSQL refuses to
//! run as root, so when the tests run as root the binaries run as the
//! `postgres` OS user (`runuser`, `setpriv` or `su`) and the temporary
//! directory is handed to that user.
//!
//! A watchdog process stops the cluster and removes its directory when the
//! test process goes away, even if it was killed, so no cluster outlives its
//! tests.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, err, free_port, tail, which};

/// How to start a [`PostgresServer`].
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    durable: bool,
    settings: Vec<(String, String)>,
}

impl PostgresOptions {
    /// Keeps PostgreSQL's durable defaults (`fsync`, `synchronous_commit`,
    /// `full_page_writes` on), for benchmarks. Off by default: tests do not
    /// need their data to survive a power cut, and run faster without.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets a server parameter (`-c name=value`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Starts the server.
    pub fn start(self) -> Result<PostgresServer, Error> {
        PostgresServer::start_with(self)
    }
}

/// A PostgreSQL cluster of its own, stopped (and its directory removed) on drop.
pub struct PostgresServer {
    port: u16,
    bins: PathBuf,
    data: PathBuf,
    runner: Runner,
    watchdog: Option<Child>,
    dir: Option<tempfile::TempDir>,
    databases: AtomicU32,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// Starts a cluster with the default (fast, non-durable) settings and a
    /// database `eventbus` (see [`url`](Self::url)).
    pub fn start() -> Result<Self, Error> {
        Self::start_with(PostgresOptions::default())
    }

    /// Options for [`start`](PostgresOptions::start).
    pub fn options() -> PostgresOptions {
        PostgresOptions::default()
    }

    /// One cluster shared by every test of this process, started on first use.
    ///
    /// Give each test its own database with [`create_database`](Self::create_database).
    /// The cluster is stopped by its watchdog when the process exits.
    pub fn shared() -> Result<&'static PostgresServer, Error> {
        static SHARED: OnceLock<Result<PostgresServer, Error>> = OnceLock::new();
        SHARED
            .get_or_init(PostgresServer::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start_with(options: PostgresOptions) -> Result<Self, Error> {
        let bins = find_bin_dir()?;
        let runner = Runner::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("eventbus-pg-")
            .tempdir_in(if runner.is_switching() {
                PathBuf::from("/tmp")
            } else {
                std::env::temp_dir()
            })
            .map_err(|e| err(format!("cannot create a temporary directory: {e}")))?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sock");
        std::fs::create_dir(&sockets)
            .map_err(|e| err(format!("cannot create {}: {e}", sockets.display())))?;
        runner.hand_over(dir.path())?;

        let initdb = runner
            .command(&bins.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(|e| err(format!("cannot run initdb: {e}")))?;
        if !initdb.status.success() {
            return Err(err(format!(
                "initdb failed ({}): {}{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            )));
        }

        let mut settings = vec![
            ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
            (
                "unix_socket_directories".to_owned(),
                sockets.display().to_string(),
            ),
            ("max_connections".to_owned(), "200".to_owned()),
        ];
        if !options.durable {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.push((name.to_owned(), "off".to_owned()));
            }
        }
        settings.extend(options.settings);

        let log = dir.path().join("postgres.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut opts = format!("-c port={port}");
            for (name, value) in &settings {
                opts.push_str(&format!(" -c {name}={value}"));
            }
            let start = runner
                .command(&bins.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| err(format!("cannot run pg_ctl: {e}")))?;
            if start.status.success() {
                let mut server = Self {
                    port,
                    bins,
                    data,
                    runner,
                    watchdog: None,
                    dir: Some(dir),
                    databases: AtomicU32::new(0),
                };
                server.watchdog = server.spawn_watchdog();
                server.create_named_database("eventbus")?;
                return Ok(server);
            }
            last_error = format!(
                "pg_ctl start failed ({}): {}{}\n{}",
                start.status,
                String::from_utf8_lossy(&start.stdout),
                String::from_utf8_lossy(&start.stderr),
                tail(&log, 20)
            );
            // Stop whatever half-started before trying another port.
            let _ = runner
                .command(&bins.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
        Err(err(last_error))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the database `eventbus`, created at start.
    pub fn url(&self) -> String {
        self.url_of("eventbus")
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// `psql` of the server's installation (next to `initdb`), connected to
    /// the database `url` names, with `-X` (no `.psqlrc`), `-q` and
    /// `ON_ERROR_STOP`: a failing statement makes it exit non-zero. A test
    /// adds `-c SQL` or pipes a script into it.
    pub fn psql(&self, url: &str) -> Command {
        let beside = self.bins.join("psql");
        let psql = if beside.is_file() {
            beside
        } else {
            which("psql").unwrap_or(beside)
        };
        let mut c = Command::new(psql);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .env("PGCONNECT_TIMEOUT", "10");
        c
    }

    /// Creates a fresh, empty database with a unique name and returns its URL.
    pub fn create_database(&self) -> Result<String, Error> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        self.create_named_database(&name)?;
        Ok(self.url_of(&name))
    }

    fn create_named_database(&self, name: &str) -> Result<(), Error> {
        let out = Command::new(self.bins.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run createdb: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Stops the server now (also done on drop).
    pub fn stop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let _ = self
            .runner
            .command(&self.bins.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        drop(dir);
    }

    /// A shell process that stops the cluster and removes its directory once
    /// this process is gone, however it ended.
    fn spawn_watchdog(&self) -> Option<Child> {
        let dir = self.dir.as_ref()?.path();
        let pg_ctl = self.bins.join("pg_ctl");
        let stop = self.runner.shell_line(&format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            self.data.display()
        ));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = dir.display(),
        );
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .args(["-c", &script])
            // Its own process group: it must outlive a kill of the test's group.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the server binaries are run: directly, or as the `postgres` user when we are root.
#[derive(Debug, Clone)]
enum Runner {
    Direct,
    Runuser,
    Setpriv,
    Su,
}

impl Runner {
    fn detect() -> Result<Self, Error> {
        if !is_root() {
            return Ok(Runner::Direct);
        }
        let has_user = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !has_user {
            return Err(err(
                "the tests run as root, PostgreSQL refuses to, and there is no `postgres` OS user to run it as; \
                 install the server with `apt-get install -y postgresql` (it creates the user) or run the tests as another user",
            ));
        }
        for (tool, runner) in [
            ("runuser", Runner::Runuser),
            ("setpriv", Runner::Setpriv),
            ("su", Runner::Su),
        ] {
            if which(tool).is_some() {
                return Ok(runner);
            }
        }
        Err(err(
            "the tests run as root and none of runuser, setpriv, su is available to run PostgreSQL as `postgres`",
        ))
    }

    fn is_switching(&self) -> bool {
        !matches!(self, Runner::Direct)
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            Runner::Direct => Command::new(program),
            Runner::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            Runner::Setpriv => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--reset-env",
                ])
                .arg(program);
                c
            }
            Runner::Su => {
                let mut c = Command::new("su");
                // `su -c` runs a shell line; `"$0" "$@"` keeps the arguments as they are.
                c.args(["postgres", "-s", "/bin/sh", "-c", "exec \"$0\" \"$@\""])
                    .arg(program);
                c
            }
        }
    }

    fn shell_line(&self, line: &str) -> String {
        match self {
            Runner::Direct => line.to_owned(),
            Runner::Runuser => format!("runuser -u postgres -- {line}"),
            Runner::Setpriv => {
                format!("setpriv --reuid=postgres --regid=postgres --init-groups {line}")
            }
            Runner::Su => format!("su postgres -s /bin/sh -c '{line}'"),
        }
    }

    /// Gives `dir` to the user the server runs as.
    fn hand_over(&self, dir: &Path) -> Result<(), Error> {
        if !self.is_switching() {
            return Ok(());
        }
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .output()
            .map_err(|e| err(format!("cannot run chown: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "cannot give {} to the postgres user: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false),
    }
}

const NOT_FOUND: &str =
    "PostgreSQL server binaries not found; install them with `apt-get install -y postgresql`";

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `createdb`.
fn find_bin_dir() -> Result<PathBuf, Error> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "createdb"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("EVENTBUS_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(err(format!(
                "EVENTBUS_PG_BIN={} does not hold initdb, pg_ctl, postgres and createdb",
                dir.display()
            )))
        };
    }
    if let Some(initdb) = which("initdb") {
        // Follow symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb).
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb.clone());
        for candidate in [real.parent(), initdb.parent()].into_iter().flatten() {
            if complete(candidate) {
                return Ok(candidate.to_owned());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| err(NOT_FOUND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_databases_and_stops() {
        let mut pg = PostgresServer::start().expect("start PostgreSQL");
        assert_ne!(pg.port(), 5432);
        let url = pg.create_database().expect("create a database");
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"));
        let dir = pg.dir.as_ref().map(|d| d.path().to_owned()).unwrap();
        assert!(dir.join("data/PG_VERSION").exists());
        pg.stop();
        assert!(!dir.exists());
    }
}
