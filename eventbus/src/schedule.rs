//! Recurring schedules: `#[schedule(every = "1h")]` or `#[schedule(cron = "0 9 * * MON")]`
//! (with `tz = "Europe/Berlin"` for a time zone) on a function that returns the
//! event to publish, or [`ScheduleDef::every`] / [`ScheduleDef::cron`] for a
//! schedule read from configuration at run time, given to
//! [`BusBuilder::schedule`](crate::BusBuilder::schedule).
//!
//! Each tick fires once across every running instance of the service: the
//! instances race to claim the tick on the transport and only the winner
//! publishes. Ticks that fall while no instance runs are not caught up.
//!
//! An interval is aligned to the Unix epoch (`1h` fires on the hour). A cron
//! expression is evaluated in UTC unless a time zone is given; across the
//! daylight-saving changes of its zone it follows croner's rules: a time that
//! does not exist that day (the spring-forward gap) fires once, at the first
//! instant after the gap; a time that happens twice (fall back) fires once, at
//! its first occurrence; a field with `*` or a step fires for every wall-clock
//! time that matches.
//!
//! Each schedule is parsed once: `#[schedule]` checks the interval, cron
//! expression and zone at compile time and hands over the interval in
//! milliseconds; a cron expression and its zone are parsed when the
//! [`ScheduleDef`] is made (when the bus is built) and the running schedule
//! keeps the parsed value.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::event::Event;
use crate::{Error, Result};

/// The publishing step of a schedule: runs its function and publishes the event.
type Produce = Arc<dyn Fn(Bus) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A recurring schedule, produced by `#[schedule]` or [`ScheduleDef::every`] / [`ScheduleDef::cron`].
///
/// ```
/// use std::time::Duration;
/// use eventbus::ScheduleDef;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event)]
/// # #[event("doc.digest")]
/// # struct Digest { n: u32 }
///
/// // Read from configuration, e.g. `digest_every = 90` and `report = "0 9 * * MON"`.
/// let digest = ScheduleDef::every("digest", Duration::from_secs(90), || async { Digest { n: 1 } });
/// let report = ScheduleDef::cron("report", "0 9 * * MON", Some("Europe/Berlin"), || async {
///     Digest { n: 2 }
/// })?;
/// assert_eq!(digest.when.to_string(), "every 1m 30s");
/// assert_eq!(report.when.to_string(), "cron `0 9 * * MON` (Europe/Berlin)");
///
/// let bad = ScheduleDef::cron("report", "0 9 * * MON", Some("Europe/Berln"), || async {
///     Digest { n: 3 }
/// });
/// assert_eq!(
///     bad.unwrap_err().to_string(),
///     "schedule `report`: unknown time zone \"Europe/Berln\"; write an IANA zone name such as \"Europe/Berlin\" or \"UTC\""
/// );
/// // Bus::builder().schedule(digest).schedule(report) ...
/// # Ok::<(), eventbus::Error>(())
/// ```
#[derive(Clone)]
pub struct ScheduleDef {
    /// The schedule's name (the function name); ticks are claimed under it.
    pub name: &'static str,
    /// `module_path!()` of the function (empty for a schedule made at run time).
    pub module_path: &'static str,
    /// When it fires, for people (`every 1h`, ``cron `0 9 * * *` (Europe/Berlin)``).
    pub when: When,
    /// The CloudEvents type it publishes.
    pub event_type: &'static str,
    /// When it fires, parsed.
    trigger: Trigger,
    pub(crate) produce: Produce,
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

/// When a schedule fires, as declared; [`Display`](fmt::Display) writes it for
/// people: `every 1h`, ``cron `0 9 * * MON` (UTC)``, ``cron `0 9 * * *` (Europe/Berlin)``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum When {
    /// `#[schedule(every = "...")]`: a fixed interval as written (`"1h"`),
    /// aligned to the Unix epoch (`"1h"` fires on the hour).
    Every(&'static str),
    /// `#[schedule(cron = "...")]`: a cron expression (5 fields, or 6 with
    /// seconds first), evaluated in UTC.
    Cron(&'static str),
    /// [`ScheduleDef::every`]: a fixed interval, aligned to the Unix epoch.
    Interval(Duration),
    /// A cron expression evaluated in a time zone: `#[schedule(cron = "...", tz = "...")]`
    /// or [`ScheduleDef::cron`].
    CronIn {
        /// The cron expression, as written.
        expr: &'static str,
        /// The IANA name of the zone (`"Europe/Berlin"`, `"UTC"`).
        tz: &'static str,
    },
}

impl When {
    /// The cron expression, if this is one.
    pub fn cron(&self) -> Option<&str> {
        match self {
            When::Cron(expr) | When::CronIn { expr, .. } => Some(expr),
            When::Every(_) | When::Interval(_) => None,
        }
    }

    /// The IANA name of the zone a cron expression is evaluated in (`"UTC"`
    /// unless one was given); `None` for an interval, which is the same in every zone.
    pub fn tz(&self) -> Option<&'static str> {
        match self {
            When::Cron(_) => Some("UTC"),
            When::CronIn { tz, .. } => Some(tz),
            When::Every(_) | When::Interval(_) => None,
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Every(s) => write!(f, "every {s}"),
            When::Cron(s) => write!(f, "cron `{s}` (UTC)"),
            When::Interval(d) => write!(f, "every {}", humantime::format_duration(*d)),
            When::CronIn { expr, tz } => write!(f, "cron `{expr}` ({tz})"),
        }
    }
}

/// When a schedule fires, parsed once.
#[derive(Clone)]
enum Trigger {
    /// Every `ms` milliseconds since the Unix epoch.
    Every { ms: u64 },
    /// The instants of a cron expression in a zone.
    Cron { cron: Arc<croner::Cron>, tz: Tz },
    /// Why the schedule cannot run; the registry reports it when the bus is built.
    Invalid(String),
}

impl ScheduleDef {
    /// A schedule named `name` that publishes what `produce` returns every
    /// `interval` (in whole milliseconds), aligned to the Unix epoch: every
    /// hour fires on the hour.
    ///
    /// `produce` returns the event to publish, or `Result<E, impl Display>`
    /// (an error is logged and the tick skipped). An interval shorter than a
    /// millisecond is reported when the bus is built.
    pub fn every<F, Fut, O>(name: &'static str, interval: Duration, produce: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: ScheduleOutput,
    {
        let trigger = match u64::try_from(interval.as_millis()) {
            Ok(0) => Trigger::Invalid("the interval must be at least 1 ms".into()),
            Ok(ms) => Trigger::Every { ms },
            Err(_) => Trigger::Invalid("the interval is too long".into()),
        };
        Self {
            name,
            module_path: "",
            when: When::Interval(interval),
            event_type: <O::Event as Event>::TYPE,
            trigger,
            produce: produce_with(name, produce),
        }
    }

    /// A schedule named `name` that publishes what `produce` returns at the
    /// instants of the cron expression `expr` (5 fields, or 6 with seconds
    /// first) in the IANA time zone `tz` (`"Europe/Berlin"`; UTC when `None`).
    ///
    /// `produce` returns the event to publish, or `Result<E, impl Display>`
    /// (an error is logged and the tick skipped). The text of `expr` is kept
    /// for the life of the process, once per distinct text (a [`When`] holds
    /// `&'static str`s, as every registration does).
    ///
    /// # Errors
    /// [`Error::Config`] with one sentence naming the schedule if `expr` is not
    /// a cron expression or `tz` is not a known zone.
    pub fn cron<F, Fut, O>(
        name: &'static str,
        expr: &str,
        tz: Option<&str>,
        produce: F,
    ) -> Result<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: ScheduleOutput,
    {
        let config = |why: String| Error::Config(format!("schedule `{name}`: {why}"));
        let cron = parse_cron(expr).map_err(config)?;
        let tz = match tz {
            Some(tz) => parse_tz(tz).map_err(config)?,
            None => Tz::UTC,
        };
        Ok(Self {
            name,
            module_path: "",
            when: When::CronIn {
                expr: intern(expr),
                tz: tz.name(),
            },
            event_type: <O::Event as Event>::TYPE,
            trigger: Trigger::Cron {
                cron: Arc::new(cron),
                tz,
            },
            produce: produce_with(name, produce),
        })
    }

    /// `#[schedule(every = "...")]`, with the interval the macro parsed.
    #[doc(hidden)]
    pub fn __every(
        name: &'static str,
        module_path: &'static str,
        spec: &'static str,
        every_ms: u64,
        event_type: &'static str,
        produce: fn(Bus) -> BoxFuture<'static, Result<()>>,
    ) -> Self {
        let trigger = match every_ms {
            0 => Trigger::Invalid("the interval must be at least 1 ms".into()),
            ms => Trigger::Every { ms },
        };
        Self {
            name,
            module_path,
            when: When::Every(spec),
            event_type,
            trigger,
            produce: Arc::new(produce),
        }
    }

    /// `#[schedule(cron = "...", tz = "...")]`: the macro checked both, this
    /// parses them once for the running schedule.
    #[doc(hidden)]
    pub fn __cron(
        name: &'static str,
        module_path: &'static str,
        expr: &'static str,
        tz: Option<&'static str>,
        event_type: &'static str,
        produce: fn(Bus) -> BoxFuture<'static, Result<()>>,
    ) -> Self {
        let parsed = parse_cron(expr).and_then(|cron| {
            let tz = tz.map_or(Ok(Tz::UTC), parse_tz)?;
            Ok((cron, tz))
        });
        let trigger = match parsed {
            Ok((cron, tz)) => Trigger::Cron {
                cron: Arc::new(cron),
                tz,
            },
            Err(why) => Trigger::Invalid(why),
        };
        let when = match tz {
            None => When::Cron(expr),
            Some(tz) => When::CronIn { expr, tz },
        };
        Self {
            name,
            module_path,
            when,
            event_type,
            trigger,
            produce: Arc::new(produce),
        }
    }

    /// The first tick strictly after `after`: when the running schedule fires
    /// next (in whole milliseconds).
    ///
    /// # Errors
    /// [`Error::Config`] if the schedule cannot run (an interval shorter than
    /// a millisecond) or its cron expression has no instant after `after`
    /// (`0 0 30 2 *`, February 30th).
    pub fn next_tick(&self, after: SystemTime) -> Result<SystemTime> {
        match &self.trigger {
            Trigger::Every { ms } => {
                let after_ms = u64::try_from(
                    after
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis(),
                )
                .unwrap_or(u64::MAX);
                let next = (after_ms / ms)
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(*ms))
                    .ok_or_else(|| self.invalid("its next tick is out of range"))?;
                Ok(UNIX_EPOCH + Duration::from_millis(next))
            }
            Trigger::Cron { cron, tz } => {
                let after = DateTime::<Utc>::from(after).with_timezone(tz);
                let next = cron
                    .find_next_occurrence(&after, false)
                    .map_err(|e| self.invalid(&e.to_string()))?;
                Ok(next.into())
            }
            Trigger::Invalid(why) => Err(self.invalid(why)),
        }
    }

    fn invalid(&self, why: &str) -> Error {
        Error::Config(format!(
            "schedule `{}` ({}) cannot run: {why}",
            self.name, self.when
        ))
    }
}

/// Runs `produce` and publishes its event, for a schedule made at run time.
fn produce_with<F, Fut, O>(name: &'static str, produce: F) -> Produce
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: ScheduleOutput,
{
    Arc::new(move |bus: Bus| -> BoxFuture<'static, Result<()>> {
        let out = produce();
        Box::pin(async move { publish_output(bus, name, out.await).await })
    })
}

/// `text` for the life of the process, stored once however often it is asked for.
fn intern(text: &str) -> &'static str {
    static TEXTS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut texts = TEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = texts.get(text) {
        return kept;
    }
    let kept: &'static str = Box::leak(text.into());
    texts.insert(kept);
    kept
}

/// Parses a cron expression the way `#[schedule(cron = ...)]` checks it.
fn parse_cron(expr: &str) -> std::result::Result<croner::Cron, String> {
    #[cfg(test)]
    tests::PARSES.with(|n| n.set(n.get() + 1));
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!(
                "invalid cron expression {expr:?}: {e}; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"0 9 * * MON\""
            )
        })
}

/// Parses an IANA time zone name the way `#[schedule(tz = ...)]` checks it.
fn parse_tz(name: &str) -> std::result::Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        match chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
        {
            Some(tz) => format!("unknown time zone {name:?}; did you mean {:?}?", tz.name()),
            None => format!(
                "unknown time zone {name:?}; write an IANA zone name such as \"Europe/Berlin\" or \"UTC\""
            ),
        }
    })
}

/// The wall-clock time at which a bus's schedules start counting, instead of
/// the system clock's (from [`BusBuilder::schedule_clock`](crate::BusBuilder::schedule_clock)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClockStart(pub(crate) SystemTime);

/// Wall-clock time that follows tokio's clock, so schedules run on a paused test clock.
struct Clock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl Clock {
    fn new(base: SystemTime) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// Runs one schedule of `bus` until `token` is cancelled: waits for each tick,
/// claims it on the transport and, if this instance won it, publishes.
pub(crate) async fn run(bus: Bus, def: ScheduleDef, token: CancellationToken) {
    let base = bus
        .try_state::<WallClockStart>()
        .map_or_else(SystemTime::now, |start| start.0);
    let clock = Clock::new(base);
    let key = format!("{}.{}", bus.service(), def.name);
    loop {
        let now = clock.now();
        let next = match def.next_tick(now) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let wait = next.duration_since(now).unwrap_or_default();
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let tick_ms = next
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        match bus.transport().claim_tick(&key, tick_ms).await {
            Ok(true) => {
                tracing::debug!(schedule = def.name, tick_ms, "schedule fired");
                if let Err(e) = (def.produce)(bus.clone()).await {
                    tracing::error!(schedule = def.name, "{e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = def.name, "cannot claim the tick: {e}"),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Cron expressions parsed on this thread.
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    fn no_publish(_: Bus) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    #[test]
    fn a_cron_schedule_is_parsed_once_however_often_it_ticks() {
        let before = PARSES.with(Cell::get);
        let def = ScheduleDef::__cron(
            "daily",
            "tests",
            "0 9 * * *",
            Some("Europe/Berlin"),
            "tick",
            no_publish,
        );
        let copy = def.clone();
        let mut at = UNIX_EPOCH + Duration::from_secs(1_774_000_000);
        for _ in 0..100 {
            at = copy.next_tick(at).unwrap();
        }
        assert_eq!(PARSES.with(Cell::get) - before, 1);
        assert!(matches!(&def.trigger, Trigger::Cron { tz, .. } if *tz == Tz::Europe__Berlin));
    }

    #[test]
    fn an_interval_from_the_macro_is_used_as_given() {
        let def = ScheduleDef::__every("hourly", "tests", "1h", 3_600_000, "tick", no_publish);
        assert!(matches!(def.trigger, Trigger::Every { ms: 3_600_000 }));
        let at = UNIX_EPOCH + Duration::from_millis(3_600_000 * 5 + 1);
        assert_eq!(
            def.next_tick(at).unwrap(),
            UNIX_EPOCH + Duration::from_millis(3_600_000 * 6)
        );
    }
}
