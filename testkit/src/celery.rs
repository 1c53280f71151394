//! The Celery peers of the task interop tests: a real Celery 5 worker
//! ([`CeleryWorker`], `celery -A celery_peer worker`) and client
//! ([`celery_peer()`], `celery_peer.py send|get|fill`), both of the app in
//! `testkit/python/celery_peer.py` (see [`python_dir`]) on a Redis broker,
//! with the pinned peers of [`mod@crate::python`].
//!
//! The app's tasks (`send_short_message`, `send_email_task`,
//! `send_notification`, `notify_from_rust`) RPUSH a JSON record of what they
//! ran to a Redis list (default `peer:ran`), for example
//! `{"task": "send_short_message", "id": "…", "args": [42], "kwargs": {},
//! "worker": "python", "hostname": "…", "pid": 123, "retries": 0,
//! "redelivered": false}`, and return `{"ok": true, "task": "…"}`; `noop`
//! only INCRs `peer:noop:done`.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::{CeleryWorker, CeleryWorkerOptions, RedisServer};
//! let redis = RedisServer::start()?;
//! let mut worker = CeleryWorker::start(&CeleryWorkerOptions {
//!     queues: vec!["sms_send_queue".into()],
//!     ..CeleryWorkerOptions::new(redis.url())
//! })?;
//! worker.wait_ready(Duration::from_secs(60))?;
//! let url = redis.url();
//! let id = testkit::celery_peer(
//!     &["send", "send_short_message", "[42]", "--queue", "sms_send_queue"],
//!     &[("CELERY_PEER_BROKER", &url)],
//! )?;
//! worker.kill(); // SIGKILL, the prefork children too
//! # Ok::<(), testkit::Error>(())
//! ```
//!
//! Kombu's Redis transport keeps a delivered, unacknowledged task in the
//! `unacked` hash (its time in `unacked_index`) and puts it back on its queue
//! only from a worker's `restore_visible` sweep, once
//! [`visibility_timeout`](CeleryWorkerOptions::visibility_timeout) has passed
//! since the delivery. A worker sweeps once when it starts and then, with
//! kombu's defaults, every `unacked_restore_interval` (10 s) ×
//! `unacked_restore_throttle` (10) = 100 s; set
//! [`restore_interval`](CeleryWorkerOptions::restore_interval) and
//! [`restore_throttle`](CeleryWorkerOptions::restore_throttle) to sweep sooner.
//!
//! Signals go through the `kill` command (procps), to the worker's own
//! process group.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Error, err, python, tail, wait};

/// `testkit/python`: the Celery peer app (`celery_peer.py`).
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `testkit/python/celery_peer.py`.
pub fn peer_script() -> PathBuf {
    python_dir().join("celery_peer.py")
}

/// A Celery execution pool (`-P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CeleryPool {
    /// Child processes (Celery's default): a task runs in a forked child.
    #[default]
    Prefork,
    /// In the worker's own process, one task at a time.
    Solo,
    /// A thread pool.
    Threads,
}

impl CeleryPool {
    /// The `-P` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CeleryPool::Prefork => "prefork",
            CeleryPool::Solo => "solo",
            CeleryPool::Threads => "threads",
        }
    }
}

/// How to run a [`CeleryWorker`] (and the `CELERY_PEER_*` environment of
/// the app, [`env`](Self::env), for [`celery_peer()`] too).
#[derive(Debug, Clone)]
pub struct CeleryWorkerOptions {
    /// The broker's `redis://` URL (`CELERY_PEER_BROKER`); the records go there too.
    pub broker: String,
    /// The result backend's URL (`CELERY_PEER_BACKEND`).
    pub backend: Option<String>,
    /// The queues to consume (`-Q`); default `celery`.
    pub queues: Vec<String>,
    /// `-c`; default 1.
    pub concurrency: usize,
    /// `-P`; default prefork.
    pub pool: CeleryPool,
    /// Kombu's `visibility_timeout` (`CELERY_PEER_VISIBILITY`); default 1 h.
    pub visibility_timeout: Duration,
    /// Kombu's `unacked_restore_interval` (`CELERY_PEER_RESTORE_INTERVAL`,
    /// whole seconds); `None`: kombu's 10 s.
    pub restore_interval: Option<Duration>,
    /// Kombu's `unacked_restore_throttle` (`CELERY_PEER_RESTORE_THROTTLE`):
    /// only every Nth sweep scans; `None`: kombu's 10.
    pub restore_throttle: Option<u32>,
    /// The Redis list the tasks record to (`CELERY_PEER_RECORD`); default `peer:ran`.
    pub record: String,
    /// How long each recording task sleeps first (`CELERY_PEER_SLEEP`); default 0.
    pub sleep: Duration,
    /// `-n`; default a unique `python-<pid>-<n>@testkit`.
    pub hostname: Option<String>,
    /// More environment for the worker.
    pub env: Vec<(String, String)>,
}

impl Default for CeleryWorkerOptions {
    /// Everything but the broker, which [`new`](Self::new) sets.
    fn default() -> Self {
        CeleryWorkerOptions {
            broker: String::new(),
            backend: None,
            queues: vec!["celery".into()],
            concurrency: 1,
            pool: CeleryPool::Prefork,
            visibility_timeout: Duration::from_secs(3600),
            restore_interval: None,
            restore_throttle: None,
            record: "peer:ran".into(),
            sleep: Duration::ZERO,
            hostname: None,
            env: Vec::new(),
        }
    }
}

impl CeleryWorkerOptions {
    /// The defaults on `broker`.
    pub fn new(broker: impl Into<String>) -> Self {
        CeleryWorkerOptions {
            broker: broker.into(),
            ..Default::default()
        }
    }

    /// The app's `CELERY_PEER_*` variables for these options (those left
    /// to kombu's defaults are absent).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CELERY_PEER_BROKER", self.broker.clone()),
            (
                "CELERY_PEER_VISIBILITY",
                self.visibility_timeout.as_secs_f64().to_string(),
            ),
            ("CELERY_PEER_RECORD", self.record.clone()),
            ("CELERY_PEER_SLEEP", self.sleep.as_secs_f64().to_string()),
        ];
        if let Some(backend) = &self.backend {
            env.push(("CELERY_PEER_BACKEND", backend.clone()));
        }
        if let Some(interval) = self.restore_interval {
            env.push((
                "CELERY_PEER_RESTORE_INTERVAL",
                interval.as_secs().max(1).to_string(),
            ));
        }
        if let Some(throttle) = self.restore_throttle {
            env.push(("CELERY_PEER_RESTORE_THROTTLE", throttle.to_string()));
        }
        env
    }
}

/// Every `CELERY_PEER_*` variable the app reads, so that none leaks in from
/// the test's own environment.
const PEER_VARS: [&str; 7] = [
    "CELERY_PEER_BROKER",
    "CELERY_PEER_BACKEND",
    "CELERY_PEER_VISIBILITY",
    "CELERY_PEER_RESTORE_INTERVAL",
    "CELERY_PEER_RESTORE_THROTTLE",
    "CELERY_PEER_RECORD",
    "CELERY_PEER_SLEEP",
];

/// A `celery -A celery_peer worker` in its own process group (the main
/// process and its pool's children), logging to a file in its own
/// temporary directory. Dropping it kills the group.
#[derive(Debug)]
pub struct CeleryWorker {
    child: Option<Child>,
    pid: u32,
    hostname: String,
    dir: tempfile::TempDir,
}

impl CeleryWorker {
    /// Spawns the worker (it is not ready yet: [`wait_ready`](Self::wait_ready)).
    pub fn start(opts: &CeleryWorkerOptions) -> Result<Self, Error> {
        static WORKERS: AtomicUsize = AtomicUsize::new(0);
        if opts.broker.is_empty() {
            return Err(err("CeleryWorkerOptions::broker is empty"));
        }
        python::ensure_peers()?;
        let hostname = opts.hostname.clone().unwrap_or_else(|| {
            format!(
                "python-{}-{}@testkit",
                std::process::id(),
                WORKERS.fetch_add(1, Ordering::Relaxed)
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("eventbus-celery-")
            .tempdir()?;
        let log = File::create(dir.path().join("worker.log"))?;
        let path = std::env::join_paths([python::peers_dir(), python_dir()])
            .map_err(|e| err(format!("cannot build PYTHONPATH: {e}")))?;
        let mut cmd = Command::new("python3");
        cmd.args(["-s", "-m", "celery", "-A", "celery_peer", "worker"])
            .arg("-Q")
            .arg(opts.queues.join(","))
            .arg("-c")
            .arg(opts.concurrency.max(1).to_string())
            .args(["-P", opts.pool.as_str()])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .arg("-n")
            .arg(&hostname)
            .args(["-l", "info"])
            .current_dir(dir.path())
            .env("PYTHONPATH", path)
            .env("PYTHONUNBUFFERED", "1");
        for var in PEER_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(opts.env())
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own group, so that a kill reaches the prefork children too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|e| {
            err(format!(
                "cannot start python3 (celery worker): {e}; install it with `apt-get install -y python3 python3-pip`"
            ))
        })?;
        Ok(CeleryWorker {
            pid: child.id(),
            child: Some(child),
            hostname,
            dir,
        })
    }

    /// Waits until the log says `<hostname> ready.` (Celery's banner is
    /// out, the queues are consumed); fails with the log's tail when the
    /// worker exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let ready = format!("{} ready.", self.hostname);
        let mut exited = None;
        let up = wait::blocking(timeout, Duration::from_millis(50), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            self.log().contains(&ready)
        });
        if let Some(status) = exited {
            self.child = None;
            return Err(err(format!(
                "celery worker {} exited with {status} before it was ready; log:\n{}",
                self.hostname,
                self.log_tail()
            )));
        }
        if !up {
            return Err(err(format!(
                "celery worker {} was not ready after {timeout:?}; log:\n{}",
                self.hostname,
                self.log_tail()
            )));
        }
        if self.child.is_none() {
            return Err(err(format!(
                "celery worker {} is not running",
                self.hostname
            )));
        }
        Ok(())
    }

    /// The main process's id (also the process group's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker's name (`-n`), as in its records' `hostname`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("worker.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log_path(), 30)
    }

    /// True while the main process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the main process and its pool's children (`SIGKILL` to the
    /// process group), as a crash or the OOM killer would: nothing is
    /// acknowledged or given back, the task in hand stays in kombu's
    /// `unacked` until a worker restores it. Waits until the group is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal("-KILL", &format!("-{}", self.pid));
            let _ = child.kill();
            let _ = child.wait();
            // The children, orphaned now, are reaped by init.
            wait::blocking(Duration::from_secs(10), Duration::from_millis(20), || {
                !group_alive(self.pid)
            });
        }
    }

    /// Celery's warm shutdown: `SIGTERM` to the main process (not the
    /// group: a pool child that gets it dies mid-task, a lost worker),
    /// which stops consuming, lets the tasks in hand finish and exits; then
    /// [`kill`](Self::kill)s what is left after `timeout`.
    pub fn stop(&mut self, timeout: Duration) {
        if self.child.is_some() {
            signal("-TERM", &self.pid.to_string());
            wait::blocking(timeout, Duration::from_millis(20), || !self.is_running());
        }
        self.kill();
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True while a process of group `pgid` lives (zombies do not count:
/// from `/proc`, or `kill -0` where there is none).
fn group_alive(pgid: u32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return signal("-0", &format!("-{pgid}"));
    };
    procs.flatten().any(|p| {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parens.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        matches!(fields.as_slice(), [state, _ppid, pgrp, ..] if *state != "Z" && *state != "X" && pgrp.parse() == Ok(pgid))
    })
}

/// `kill <signal> -- <target>`; true when it was delivered.
fn signal(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `python3 celery_peer.py <args>` (the client: `send`, `get`, `fill`)
/// with `env` (its `CELERY_PEER_*`: the broker at least) and returns its
/// stdout, e.g. the sent tasks' ids one per line.
///
/// # Panics
/// When `python3` or a pinned peer cannot be had (see [`crate::python()`]).
pub fn celery_peer(args: &[&str], env: &[(&str, &str)]) -> Result<String, Error> {
    let mut cmd = crate::python();
    cmd.arg(peer_script()).args(args);
    for var in PEER_VARS {
        cmd.env_remove(var);
    }
    let out = cmd
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run python3 celery_peer.py: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "celery_peer.py {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
