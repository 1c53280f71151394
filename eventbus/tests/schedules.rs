//! Recurring schedules: from configuration ([`ScheduleDef::every`] and
//! [`ScheduleDef::cron`]) and from `#[schedule]`, in UTC and in a time zone
//! across its daylight-saving changes, on tokio's paused clock.
//!
//! Each bus here counts its schedules from a chosen wall-clock time
//! ([`BusBuilder::schedule_clock`](eventbus::BusBuilder::schedule_clock)), so
//! days pass in no real time and the ticks land on known dates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use eventbus::schedule::When;
use eventbus::{Bus, Event, ScheduleDef, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("schedules.tick")]
struct Tick {}

/// The wall-clock instants at which a schedule produced its event.
#[derive(Clone)]
struct Ticks {
    start: SystemTime,
    t0: tokio::time::Instant,
    seen: Arc<Mutex<Vec<SystemTime>>>,
}

impl Ticks {
    /// Ticks of a bus whose schedules start counting at `start` (RFC 3339), now.
    fn from(start: &str) -> Self {
        Self {
            start: utc(start),
            t0: tokio::time::Instant::now(),
            seen: Arc::default(),
        }
    }

    /// Records now, on the bus's wall clock.
    fn record(&self) {
        self.seen
            .lock()
            .unwrap()
            .push(self.start + self.t0.elapsed());
    }

    /// A producer for a schedule made at run time: records, then publishes a `Tick`.
    fn producer(&self) -> impl Fn() -> std::future::Ready<Tick> + Send + Sync + 'static {
        let ticks = self.clone();
        move || {
            ticks.record();
            std::future::ready(Tick {})
        }
    }

    /// What was recorded, as RFC 3339 UTC.
    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|t| rfc3339(*t))
            .collect()
    }
}

fn utc(rfc3339: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
}

/// `t` in UTC to the second: a paused clock's timer wakes within a
/// millisecond after the tick, and that fraction is dropped.
fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs `defs` on one bus from `ticks.start` for `span` of paused time.
async fn run_for(ticks: &Ticks, span: Duration, defs: Vec<ScheduleDef>) {
    let mut builder = Bus::builder()
        .service("schedules")
        .without_registered()
        .schedule_clock(ticks.start);
    for def in defs {
        builder = builder.schedule(def);
    }
    let running = builder.build().await.unwrap().spawn();
    tokio::time::sleep(span).await;
    running.shutdown().await.unwrap();
}

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn an_interval_from_configuration_fires_on_aligned_ticks() {
    // `digest_every_secs = 10` in some configuration file.
    let every = Duration::from_secs(10);
    let ticks = Ticks::from("2026-01-01T00:00:07.250Z");
    let def = ScheduleDef::every("digest", every, ticks.producer());
    assert_eq!(def.when, When::Interval(every));
    assert_eq!(def.when.to_string(), "every 10s");
    assert_eq!(def.event_type, "schedules.tick");

    run_for(&ticks, Duration::from_secs(65), vec![def]).await;
    assert_eq!(
        ticks.seen(),
        [
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:30Z",
            "2026-01-01T00:00:40Z",
            "2026-01-01T00:00:50Z",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:10Z",
        ],
        "on the multiples of 10 s since the epoch, not 10 s after the start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cron_in_berlin_fires_at_nine_local_across_spring_forward() {
    let ticks = Ticks::from("2026-03-27T12:00:00Z");
    let def = ScheduleDef::cron(
        "morning",
        "0 9 * * *",
        Some("Europe/Berlin"),
        ticks.producer(),
    )
    .unwrap();
    assert_eq!(def.when.to_string(), "cron `0 9 * * *` (Europe/Berlin)");
    assert_eq!(def.when.tz(), Some("Europe/Berlin"));

    run_for(&ticks, 4 * DAY, vec![def]).await;
    assert_eq!(
        ticks.seen(),
        [
            "2026-03-28T08:00:00Z", // 09:00 CET (UTC+1)
            "2026-03-29T07:00:00Z", // clocks went forward at 02:00: 09:00 CEST (UTC+2)
            "2026-03-30T07:00:00Z",
            "2026-03-31T07:00:00Z",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cron_in_berlin_fires_at_nine_local_across_fall_back() {
    let ticks = Ticks::from("2026-10-23T12:00:00Z");
    let def = ScheduleDef::cron(
        "morning",
        "0 9 * * *",
        Some("Europe/Berlin"),
        ticks.producer(),
    )
    .unwrap();

    run_for(&ticks, 4 * DAY, vec![def]).await;
    assert_eq!(
        ticks.seen(),
        [
            "2026-10-24T07:00:00Z", // 09:00 CEST (UTC+2)
            "2026-10-25T08:00:00Z", // clocks went back at 03:00: 09:00 CET (UTC+1)
            "2026-10-26T08:00:00Z",
            "2026-10-27T08:00:00Z",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() {
    // 02:30 does not exist in Berlin on 2026-03-29 (02:00 CET is 03:00 CEST);
    // croner runs a fixed-time job at the first instant after the gap.
    let ticks = Ticks::from("2026-03-28T12:00:00Z");
    let def = ScheduleDef::cron(
        "nightly",
        "30 2 * * *",
        Some("Europe/Berlin"),
        ticks.producer(),
    )
    .unwrap();

    run_for(&ticks, 2 * DAY, vec![def]).await;
    assert_eq!(
        ticks.seen(),
        [
            "2026-03-29T01:00:00Z", // 03:00 CEST, once
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
    // 02:30 happens twice in Berlin on 2026-10-25 (CEST, then CET an hour later);
    // croner runs a fixed-time job once, at the first.
    let ticks = Ticks::from("2026-10-24T12:00:00Z");
    let def = ScheduleDef::cron(
        "nightly",
        "30 2 * * *",
        Some("Europe/Berlin"),
        ticks.producer(),
    )
    .unwrap();

    run_for(&ticks, 2 * DAY, vec![def]).await;
    assert_eq!(
        ticks.seen(),
        [
            "2026-10-25T00:30:00Z", // 02:30 CEST; not again at 01:30Z (02:30 CET)
            "2026-10-26T01:30:00Z", // 02:30 CET
        ]
    );
}

#[test]
fn an_hourly_cron_fires_in_both_passes_of_a_repeated_hour() {
    // A wildcard hour fires at every wall-clock time that matches: 02:00 comes twice.
    let def = ScheduleDef::cron("hourly", "0 * * * *", Some("Europe/Berlin"), || async {
        Tick {}
    })
    .unwrap();
    let mut at = utc("2026-10-24T23:30:00Z");
    let mut seen = Vec::new();
    for _ in 0..4 {
        at = def.next_tick(at).unwrap();
        seen.push(rfc3339(at));
    }
    assert_eq!(
        seen,
        [
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
            "2026-10-25T03:00:00Z",
        ]
    );
}

#[test]
fn a_cron_without_a_zone_is_utc() {
    let def = ScheduleDef::cron("utc", "0 9 * * *", None, || async { Tick {} }).unwrap();
    assert_eq!(def.when.to_string(), "cron `0 9 * * *` (UTC)");
    assert_eq!(def.when.tz(), Some("UTC"));
    assert_eq!(def.when.cron(), Some("0 9 * * *"));
    assert_eq!(
        rfc3339(def.next_tick(utc("2026-03-29T07:00:00Z")).unwrap()),
        "2026-03-29T09:00:00Z"
    );
}

#[test]
fn a_bad_cron_or_zone_from_configuration_is_one_clear_sentence() {
    let err = ScheduleDef::cron("report", "0 25 * * *", None, || async { Tick {} }).unwrap_err();
    assert!(matches!(err, eventbus::Error::Config(_)));
    assert_eq!(
        err.to_string(),
        "schedule `report`: invalid cron expression \"0 25 * * *\": Component error: Number out of bounds.; \
         write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"0 9 * * MON\""
    );

    let err = ScheduleDef::cron("report", "0 9 * * *", Some("Mars/Olympus_Mons"), || async {
        Tick {}
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "schedule `report`: unknown time zone \"Mars/Olympus_Mons\"; write an IANA zone name such as \"Europe/Berlin\" or \"UTC\""
    );

    let err = ScheduleDef::cron("report", "0 9 * * *", Some("europe/berlin"), || async {
        Tick {}
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "schedule `report`: unknown time zone \"europe/berlin\"; did you mean \"Europe/Berlin\"?"
    );
}

#[tokio::test]
async fn an_interval_under_a_millisecond_is_refused_when_the_bus_is_built() {
    let def = ScheduleDef::every("busy", Duration::from_micros(500), || async { Tick {} });
    let err = Bus::builder()
        .service("schedules")
        .without_registered()
        .schedule(def)
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "schedule `busy` (every 500us) cannot run: the interval must be at least 1 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_schedule_from_configuration_fires_once_per_tick_across_two_instances() {
    let ticks = Ticks::from("2026-01-01T00:00:00.500Z");
    let def = ScheduleDef::every("shared", Duration::from_secs(10), ticks.producer());
    let mut running = Vec::new();
    for _ in 0..2 {
        let bus = Bus::builder()
            .service("schedules-two")
            .without_registered()
            .schedule_clock(ticks.start)
            .schedule(def.clone())
            .connect("memory://schedules-two")
            .await
            .unwrap();
        running.push(bus.spawn());
    }
    tokio::time::sleep(Duration::from_secs(35)).await;
    for r in running {
        r.shutdown().await.unwrap();
    }
    assert_eq!(
        ticks.seen(),
        [
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:30Z",
        ],
        "each tick claimed by one of the two"
    );
}

#[tokio::test(start_paused = true)]
async fn a_producer_error_skips_its_tick_and_the_schedule_goes_on() {
    // `Result<E, impl Display>` works for a schedule from configuration too.
    let ticks = Ticks::from("2026-01-01T00:00:00Z");
    let calls = Arc::new(Mutex::new(0_u32));
    let (count, record) = (calls.clone(), ticks.clone());
    let def = ScheduleDef::every("flaky", Duration::from_secs(1), move || {
        let mut n = count.lock().unwrap();
        *n += 1;
        let fails = *n % 2 == 1;
        if !fails {
            record.record();
        }
        std::future::ready(if fails {
            Err("the database is down")
        } else {
            Ok(Tick {})
        })
    });
    assert_eq!(def.event_type, "schedules.tick");

    run_for(&ticks, Duration::from_millis(4500), vec![def]).await;
    assert_eq!(
        *calls.lock().unwrap(),
        4,
        "one call per tick, errors or not"
    );
    assert_eq!(
        ticks.seen(),
        ["2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z"]
    );
}

/// The macro path: `#[schedule]` functions record when they run.
static MACRO_TICKS: Mutex<Vec<tokio::time::Instant>> = Mutex::new(Vec::new());
static MACRO_EVERY: Mutex<Vec<tokio::time::Instant>> = Mutex::new(Vec::new());

#[schedule(cron = "0 9 * * *", tz = "Europe/Berlin")]
fn berlin_morning() -> Tick {
    MACRO_TICKS
        .lock()
        .unwrap()
        .push(tokio::time::Instant::now());
    Tick {}
}

#[schedule(every = "10s")]
async fn every_ten_seconds() -> Tick {
    MACRO_EVERY
        .lock()
        .unwrap()
        .push(tokio::time::Instant::now());
    Tick {}
}

/// The schedule `#[schedule]` registered as `name`, so that each test runs
/// only its own.
fn registered(name: &str) -> ScheduleDef {
    eventbus::registry::Registry::global()
        .unwrap()
        .schedules()
        .iter()
        .find(|s| s.name == name)
        .unwrap()
        .clone()
}

/// `times` as RFC 3339, on a wall clock that read `start` at `t0`.
fn wall(
    start: SystemTime,
    t0: tokio::time::Instant,
    times: &[tokio::time::Instant],
) -> Vec<String> {
    times.iter().map(|t| rfc3339(start + (*t - t0))).collect()
}

#[test]
fn schedule_hands_over_what_it_checked() {
    let registered: Vec<_> = eventbus::registry::Registry::global()
        .unwrap()
        .schedules()
        .iter()
        .map(|s| (s.name, s.when, s.when.to_string()))
        .collect();
    assert_eq!(
        registered,
        [
            (
                "berlin_morning",
                When::CronIn {
                    expr: "0 9 * * *",
                    tz: "Europe/Berlin"
                },
                "cron `0 9 * * *` (Europe/Berlin)".to_owned()
            ),
            (
                "every_ten_seconds",
                When::Every("10s"),
                "every 10s".to_owned()
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn schedule_with_tz_fires_at_nine_local_across_spring_forward() {
    let start = utc("2026-03-28T00:00:00Z");
    let t0 = tokio::time::Instant::now();
    let running = Bus::builder()
        .service("schedules-macro")
        .without_registered()
        .schedule(registered("berlin_morning"))
        .schedule_clock(start)
        .build()
        .await
        .unwrap()
        .spawn();
    tokio::time::sleep(3 * DAY).await;
    running.shutdown().await.unwrap();
    assert_eq!(
        wall(start, t0, &MACRO_TICKS.lock().unwrap()),
        [
            "2026-03-28T08:00:00Z",
            "2026-03-29T07:00:00Z",
            "2026-03-30T07:00:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn schedule_fires_once_per_tick_across_two_instances() {
    let start = utc("2026-01-01T00:00:00.500Z");
    let t0 = tokio::time::Instant::now();
    let mut running = Vec::new();
    for _ in 0..2 {
        let bus = Bus::builder()
            .service("schedules-macro-two")
            .without_registered()
            .schedule(registered("every_ten_seconds"))
            .schedule_clock(start)
            .connect("memory://schedules-macro-two")
            .await
            .unwrap();
        running.push(bus.spawn());
    }
    tokio::time::sleep(Duration::from_secs(35)).await;
    for r in running {
        r.shutdown().await.unwrap();
    }
    assert_eq!(
        wall(start, t0, &MACRO_EVERY.lock().unwrap()),
        [
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:30Z"
        ],
        "each tick claimed by one of the two"
    );
}
