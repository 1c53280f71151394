//! Durable scheduling: events published for later wait in the sorted set
//! `{P}:schedule` (score = due time in ms) and a Lua script moves the due
//! ones to their stream or channel atomically, so any number of instances
//! may run the mover and each event is moved exactly once; nothing is lost
//! when the publisher restarts. Recurring schedules claim each tick once
//! across instances with [`Client::claim_tick`].
//!
//! The scheduler task ([`Client::run_scheduler`]) also trims streams to
//! `maxlen` without dropping entries a group has not read or acked.

use std::time::{Duration, SystemTime};

use redis::Value;

use crate::client::{Client, Write};
use crate::config::{Layout, Mode};
use crate::error::Result;
use crate::keys::check_name;
use crate::scripts;
use crate::streams::{bulk_string, epoch_ms, value_u32};

/// Tuning of the scheduler task.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerOptions {
    /// How often to look for due events scheduled by other instances
    /// (events scheduled through this client wake the task at their due time).
    pub poll_interval: Duration,
    /// Most events moved per script call.
    pub batch: usize,
    /// How often to trim streams (when the URL sets `maxlen`).
    pub trim_interval: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            poll_interval: Duration::from_millis(500),
            batch: 512,
            trim_interval: Duration::from_secs(5),
        }
    }
}

/// Result of trimming one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrimReport {
    /// The stream.
    pub stream: String,
    /// Its length before.
    pub len_before: u64,
    /// Entries removed.
    pub trimmed: u64,
    /// The group whose unread or unacked entries kept the stream above
    /// `maxlen`, if one did.
    pub held_by: Option<String>,
}

/// Aborts the scheduler task when dropped.
#[derive(Debug)]
pub struct SchedulerHandle(tokio::task::JoinHandle<()>);

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `<len>:<bytes>` pieces, parsed by the mover script.
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(part.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(part);
}

impl Client {
    /// Publishes `payload` as `event_type` at `at` (at once if `at` is past),
    /// durably: the event waits in `{P}:schedule` until a scheduler moves it.
    pub async fn publish_at(&self, event_type: &str, payload: &[u8], at: SystemTime) -> Result<()> {
        check_name("event type", event_type)?;
        let mut member = Vec::with_capacity(payload.len() + 96);
        push_part(
            &mut member,
            eventbus_core::codec::new_event_id(SystemTime::now())
                .to_string()
                .as_bytes(),
        );
        match self.write(event_type, payload) {
            Write::Xadd { key, fields } => {
                push_part(&mut member, b"x");
                push_part(&mut member, key.as_bytes());
                for (f, v) in &fields {
                    push_part(&mut member, f.as_bytes());
                    push_part(&mut member, v);
                }
            }
            Write::Publish { channel, payload } => {
                push_part(&mut member, b"p");
                push_part(&mut member, channel.as_bytes());
                push_part(&mut member, &payload);
            }
        }
        let due = epoch_ms(at);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.keys().schedule())
            .arg(due)
            .arg(member)
            .ignore();
        if self.config().mode() == Mode::Streams && self.config().layout() == &Layout::PerType {
            // Known before it is due, so global consumers create their group in time.
            pipe.cmd("SADD")
                .arg(self.keys().types())
                .arg(event_type)
                .ignore();
        }
        self.run_pipe::<()>("ZADD", &pipe).await?;
        self.inner.scheduler_wake.notify_waiters();
        Ok(())
    }

    /// Publishes `payload` as `event_type` after `delay`, durably.
    pub async fn publish_after(
        &self,
        event_type: &str,
        payload: &[u8],
        delay: Duration,
    ) -> Result<()> {
        self.publish_at(event_type, payload, SystemTime::now() + delay)
            .await
    }

    /// Moves up to `limit` due scheduled events to their streams or channels.
    /// Returns how many moved and when the next one is due.
    pub async fn move_due(&self, limit: usize) -> Result<(usize, Option<SystemTime>)> {
        let mut inv = scripts::MOVE_DUE.prepare_invoke();
        inv.key(self.keys().schedule())
            .arg(epoch_ms(SystemTime::now()))
            .arg(limit.max(1));
        let reply: Value = self.run_script("schedule mover script", &inv).await?;
        let Value::Array(mut parts) = reply else {
            return Ok((0, None));
        };
        let next = parts
            .pop()
            .and_then(bulk_string)
            .and_then(|s| s.parse::<f64>().ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64));
        let moved = parts.first().and_then(value_u32).unwrap_or(0) as usize;
        if moved > 0 {
            tracing::debug!(moved, "moved due scheduled events");
        }
        Ok((moved, next))
    }

    /// Number of events waiting in the schedule.
    pub async fn scheduled_count(&self) -> Result<u64> {
        self.run("ZCARD", redis::cmd("ZCARD").arg(self.keys().schedule()))
            .await
    }

    /// Claims tick `tick_ms` (e.g. the fire time in ms since the epoch) of
    /// the recurring schedule `name`. Exactly one caller across all instances
    /// gets `true` for a tick; a tick not later than the last claimed one is
    /// refused, so a restarted or late instance cannot fire it again. One
    /// key per schedule (`{P}:tick:<name>`) holds the last claimed tick.
    pub async fn claim_tick(&self, name: &str, tick_ms: u64) -> Result<bool> {
        check_name("schedule name", name)?;
        let mut inv = scripts::CLAIM_TICK.prepare_invoke();
        inv.key(self.keys().tick(name)).arg(tick_ms);
        let won: i64 = self.run_script("claim-tick script", &inv).await?;
        Ok(won == 1)
    }

    /// Trims every stream to about `maxlen` entries (when the URL sets it),
    /// never past an entry that some group has not read yet or has not
    /// acked; when a lagging group holds a stream above `maxlen`, says so in
    /// a warning and in the report.
    pub async fn trim(&self) -> Result<Vec<TrimReport>> {
        let Some(maxlen) = self.config().maxlen() else {
            return Ok(Vec::new());
        };
        let streams: Vec<String> = match self.config().layout() {
            Layout::Django { stream } => vec![stream.clone()],
            Layout::PerType => {
                let types: Vec<String> = self
                    .run("SMEMBERS", redis::cmd("SMEMBERS").arg(self.keys().types()))
                    .await?;
                types.iter().map(|t| self.keys().stream(t)).collect()
            }
        };
        let mut reports = Vec::new();
        for stream in streams {
            let mut inv = scripts::TRIM.prepare_invoke();
            inv.key(&stream).key(self.keys().trimmed()).arg(maxlen);
            let (len_before, trimmed, held_by): (u64, u64, String) =
                self.run_script("trim script", &inv).await?;
            let remaining = len_before - trimmed;
            let held_by = (remaining > maxlen + 1 && !held_by.is_empty()).then_some(held_by);
            if let Some(group) = &held_by {
                tracing::warn!(
                    stream = %eventbus_core::escape::Escaped(&stream), len = remaining, maxlen, group = %group,
                    "stream is longer than maxlen because group `{group}` has not read or acked its oldest entries; they are kept, not trimmed"
                );
            }
            reports.push(TrimReport {
                stream,
                len_before,
                trimmed,
                held_by,
            });
        }
        Ok(reports)
    }

    /// Runs the scheduler until the future is dropped: moves due scheduled
    /// events (waking at the due time of events scheduled through this
    /// client, polling for the others) and trims streams to `maxlen`. Safe to
    /// run in every instance. Errors are logged and retried.
    pub async fn run_scheduler(&self, opts: SchedulerOptions) {
        let mut next_trim = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let notified = self.inner.scheduler_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut wait = opts.poll_interval;
            match self.move_due(opts.batch).await {
                Ok((moved, next)) => {
                    delay = Duration::from_millis(50);
                    if moved >= opts.batch {
                        continue;
                    }
                    if let Some(next) = next {
                        let until = next
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO);
                        wait = wait.min(until);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: moving due events failed; retrying");
                    wait = delay;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            if self.config().maxlen().is_some() && tokio::time::Instant::now() >= next_trim {
                if let Err(e) = self.trim().await {
                    tracing::warn!(error = %e, "scheduler: trimming streams failed");
                }
                next_trim = tokio::time::Instant::now() + opts.trim_interval;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut notified => {}
            }
        }
    }

    /// Spawns [`Client::run_scheduler`] on the current Tokio runtime; the
    /// task stops when the handle is dropped.
    pub fn spawn_scheduler(&self, opts: SchedulerOptions) -> SchedulerHandle {
        let client = self.clone();
        SchedulerHandle(tokio::spawn(
            async move { client.run_scheduler(opts).await },
        ))
    }
}
