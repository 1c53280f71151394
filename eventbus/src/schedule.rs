//! Recurring schedules: `#[schedule(every = "1h")]` or `#[schedule(cron = "0 9 * * MON")]`
//! on a function that returns the event to publish.
//!
//! Each tick fires once across every running instance of the service: the
//! instances race to claim the tick on the transport and only the winner
//! publishes. Ticks that fall while no instance runs are not caught up.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::event::Event;

/// A recurring schedule, produced by `#[schedule]` or [`ScheduleDef::every`] / [`ScheduleDef::cron`].
#[derive(Clone)]
pub struct ScheduleDef {
    /// The schedule's name (the function name); ticks are claimed under it.
    pub name: &'static str,
    /// `module_path!()` of the function.
    pub module_path: &'static str,
    /// When it fires.
    pub when: When,
    /// The CloudEvents type it publishes.
    pub event_type: &'static str,
    pub(crate) produce: fn(Bus) -> BoxFuture<'static, Result<()>>,
}

impl fmt::Debug for ScheduleDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleDef")
            .field("name", &self.name)
            .field("when", &self.when)
            .field("event_type", &self.event_type)
            .finish()
    }
}

/// When a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum When {
    /// Every fixed interval, aligned to the Unix epoch (`"1h"` fires on the hour).
    Every(&'static str),
    /// A cron expression (5 fields, or 6 with seconds first), evaluated in UTC.
    Cron(&'static str),
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Every(s) => write!(f, "every {s}"),
            When::Cron(s) => write!(f, "cron `{s}` (UTC)"),
        }
    }
}

impl ScheduleDef {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        module_path: &'static str,
        when: When,
        event_type: &'static str,
        produce: fn(Bus) -> BoxFuture<'static, Result<()>>,
    ) -> Self {
        Self {
            name,
            module_path,
            when,
            event_type,
            produce,
        }
    }

    /// The next tick strictly after `after`, as milliseconds since the epoch.
    pub(crate) fn next_tick(&self, after: SystemTime) -> Result<SystemTime> {
        let after_ms = after
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        match self.when {
            When::Every(spec) => {
                let every = parse_every(spec).map_err(|e| self.invalid(e))?;
                let every_ms = every.as_millis().max(1) as u64;
                let next = (after_ms / every_ms + 1) * every_ms;
                Ok(UNIX_EPOCH + Duration::from_millis(next))
            }
            When::Cron(expr) => {
                let cron = parse_cron(expr).map_err(|e| self.invalid(e))?;
                let after: chrono::DateTime<chrono::Utc> = after.into();
                let next = cron
                    .find_next_occurrence(&after, false)
                    .map_err(|e| self.invalid(e.to_string()))?;
                Ok(next.into())
            }
        }
    }

    fn invalid(&self, why: String) -> Error {
        Error::Config(format!(
            "schedule `{}` ({}) is invalid: {why}",
            self.name, self.when
        ))
    }
}

/// Parses the `every = "..."` interval (`"30s"`, `"5m"`, `"1h 30m"`).
pub(crate) fn parse_every(spec: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(spec).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the interval must be longer than zero".into());
    }
    Ok(d)
}

/// Parses a cron expression the way `#[schedule(cron = ...)]` validates it.
pub(crate) fn parse_cron(expr: &str) -> std::result::Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

pub use eventbus_core::arg::ScheduleOutput;

/// Publishes what a schedule function produced.
#[doc(hidden)]
pub async fn publish_output<O: ScheduleOutput>(bus: Bus, name: &'static str, out: O) -> Result<()> {
    match out.into_event() {
        Ok(event) => bus.publish(event).await,
        Err(e) => Err(Error::Schedule {
            schedule: name,
            message: e,
        }),
    }
}
