//! Concurrent publishes share pipelines.
//!
//! A [`Client::publish`](crate::Client::publish) with no other publish in
//! progress sends its pipeline itself. Otherwise it hands its commands to
//! one task per client, which sends everything queued meanwhile as one
//! pipeline (a few pipelines in flight at once), then answers each caller
//! with the outcome of its own commands. Many callers publishing one event at
//! a time thus cost Redis and the client about what one caller publishing
//! batches does, instead of one request each, and a lone caller pays no
//! task hop.
//!
//! Failure handling is per caller, as if it had sent its commands alone: a
//! lost connection retries the pipeline within the reconnect budget; a
//! server error in one caller's commands fails that caller only (retried on
//! its own first when it is transient, e.g. `LOADING` after a restart).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::{Cmd, Pipeline, Value};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{self, Conn};
use crate::error::{Error, Result};

/// Pipelines the task has sent and not yet seen answered. More would split
/// the waiting callers into smaller pipelines (measured: no faster).
const MAX_IN_FLIGHT: usize = 2;
/// A pipeline stops taking more callers' commands at this size.
const MAX_COMMANDS: usize = 1024;

struct Job {
    cmds: Vec<Cmd>,
    done: oneshot::Sender<Result<()>>,
}

/// The handle of the publishing task; the task ends when the handle is dropped.
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Job>,
    conn: Conn,
    budget: Duration,
    /// Calls of `send` in progress.
    active: Arc<AtomicUsize>,
}

/// Counts a call of `send` while it lasts (also when its future is dropped).
struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Publisher {
    /// Starts the task (on the current tokio runtime).
    pub(crate) fn spawn(conn: Conn, reconnect_for: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, conn.clone(), reconnect_for));
        Publisher {
            tx,
            conn,
            budget: reconnect_for,
            active: Arc::default(),
        }
    }

    /// Sends `cmds` (in order, in one pipeline) and waits for their replies.
    pub(crate) async fn send(&self, cmds: Vec<Cmd>) -> Result<()> {
        let alone = self.active.fetch_add(1, Ordering::AcqRel) == 0;
        let _active = Active(&self.active);
        if alone {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            return query_alone(&self.conn, self.budget, &pipe).await;
        }
        let (done, answer) = oneshot::channel();
        self.tx.send(Job { cmds, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Unsupported(
        "the publishing task of this Redis client stopped (its tokio runtime shut down)".into(),
    )
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, conn: Conn, budget: Duration) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            job = rx.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match job {
                Some(first) => {
                    let mut n = first.cmds.len();
                    let mut jobs = vec![first];
                    while n < MAX_COMMANDS {
                        match rx.try_recv() {
                            Ok(job) => {
                                n += job.cmds.len();
                                jobs.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    in_flight.push(send_batch(conn.clone(), budget, jobs));
                }
                None => open = false,
            },
            else => break,
        }
    }
}

async fn send_batch(conn: Conn, budget: Duration, mut jobs: Vec<Job>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(jobs.len());
    for job in &mut jobs {
        let start = pipe.len();
        for cmd in job.cmds.drain(..) {
            pipe.add_command(cmd);
        }
        ranges.push(start..pipe.len());
    }
    let replies = query(&conn, budget, &pipe).await;
    for (job, range) in jobs.into_iter().zip(ranges) {
        let outcome = match &replies {
            Err(e) => Err(duplicate(e)),
            Ok(values) => match first_error(values.get(range.clone()).unwrap_or(&[])) {
                None => Ok(()),
                Some(e) if conn::is_transient(&e) => {
                    // Alone, with the usual retries (the server is likely
                    // loading its data); the others are answered meanwhile.
                    let mut alone = redis::pipe();
                    alone.ignore_errors();
                    for cmd in pipe.cmd_iter().skip(range.start).take(range.len()) {
                        alone.add_command(cmd.clone());
                    }
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let _ = job.done.send(query_alone(&conn, budget, &alone).await);
                    });
                    continue;
                }
                Some(e) => Err(Error::redis("publish", e)),
            },
        };
        let _ = job.done.send(outcome);
    }
}

/// Runs the pipeline, retrying while Redis is unreachable; one reply per
/// command (server errors included as values).
async fn query(conn: &Conn, budget: Duration, pipe: &Pipeline) -> Result<Vec<Value>> {
    conn::retry("publish", budget, || {
        let mut c = conn.clone();
        async move { pipe.query_async::<Vec<Value>>(&mut c).await }
    })
    .await
}

/// Runs the pipeline, retrying while Redis is unreachable or answers with a
/// transient error; fails with the first server error.
async fn query_alone(conn: &Conn, budget: Duration, pipe: &Pipeline) -> Result<()> {
    conn::retry("publish", budget, || {
        let mut c = conn.clone();
        async move {
            let values = pipe.query_async::<Vec<Value>>(&mut c).await?;
            match first_error(&values) {
                None => Ok(()),
                Some(e) => Err(e),
            }
        }
    })
    .await
}

fn first_error(values: &[Value]) -> Option<redis::RedisError> {
    values.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(redis::RedisError::from(e.clone())),
        _ => None,
    })
}

/// The same error for another caller of the pipeline.
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Redis { op, source } => Error::redis(op, source.clone()),
        other => Error::Unsupported(other.to_string()),
    }
}
