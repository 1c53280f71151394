//! Test servers of the eventbus workspace, each a private process on a free
//! loopback port with its own temporary directory, stopped when the value is
//! dropped; never the system instance on the standard port.
//!
//! - [`postgres`]: a PostgreSQL cluster ([`PostgresServer`]), one per test
//!   binary or per test, with a fresh database per test.
//! - [`redis`]: a `redis-server` ([`RedisServer`]; restartable on the same
//!   port and data, optionally with TLS from a private CA) or a Redis Cluster
//!   ([`RedisCluster`]).
//! - [`python()`]: `python3` with the pinned Python peers of the interop
//!   tests (redis-py, the CloudEvents SDK, Celery) installed in the workspace.
//! - [`celery`]: a real Celery worker of the peer app
//!   `testkit/python/celery_peer.py` ([`CeleryWorker`], in its own process
//!   group, killable mid-task) and its client ([`celery_peer()`]: send tasks,
//!   get results).
//! - Condition waits with one generous deadline ([`wait_until`],
//!   [`wait_until_async`], [`eventually`]): tests wait for what they expect,
//!   they never assert on timing.
//!
//! ```no_run
//! let pg = testkit::PostgresServer::shared()?;
//! let url = pg.create_database()?; // a fresh, empty database
//!
//! let mut redis = testkit::RedisServer::start()?;
//! let url = redis.url(); // redis://127.0.0.1:<port>/0
//! redis.restart()?; // same port, same data directory
//! # Ok::<(), testkit::Error>(())
//! ```
//!
//! The servers are found on `PATH` (or where the module docs say); a missing
//! one is an error that says which package to install.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

pub mod celery;
pub mod postgres;
pub mod python;
pub mod redis;
mod wait;

pub use celery::{CeleryPool, CeleryWorker, CeleryWorkerOptions, celery_peer};
pub use postgres::{PostgresOptions, PostgresServer};
pub use python::python;
pub use redis::{RedisCluster, RedisOptions, RedisServer};
pub use wait::{DEADLINE, eventually, wait_until, wait_until_async};

/// What went wrong while starting or using a test server.
#[derive(Debug, Clone)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// `name` in the first of `dirs` that holds it.
fn find_in(name: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    find_in(program, std::env::split_paths(&path))
}

/// A loopback port nobody listens on, never a server's standard port (the
/// system instance may come up there later).
fn free_port() -> Result<u16, Error> {
    let no_port = |e: std::io::Error| err(format!("cannot find a free port: {e}"));
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(no_port)?;
        let port = listener.local_addr().map_err(no_port)?.port();
        if ![5432, 6379].contains(&port) {
            return Ok(port);
        }
    }
    Err(err("cannot find a free port"))
}

/// The last `lines` lines of the log at `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
