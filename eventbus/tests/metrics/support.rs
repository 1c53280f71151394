#![allow(dead_code)]
//! A known workload and a recorder to read metrics back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventbus::{Bus, BusBuilder, Event, HandlerDef, RetryPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("metrics.job")]
pub struct Job {
    pub n: u32,
}

/// Events of the workload.
pub const N: u32 = 10;

/// A bus whose handler `work` (group `svc.work`, 1 retry) fails job 3 once
/// (then succeeds) and job 7 always (dead-lettered after 2 attempts).
pub fn workload_builder() -> BusBuilder {
    let failed_once = Arc::new(AtomicU32::new(0));
    let work = HandlerDef::new("work", move |job: Job| {
        let failed_once = failed_once.clone();
        async move {
            match job.n {
                3 if failed_once.fetch_add(1, Ordering::SeqCst) == 0 => Err("flaky"),
                7 => Err("broken"),
                _ => Ok(()),
            }
        }
    })
    .retries(1);
    Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        })
        .handler(work)
}

/// Publishes the workload's `N` jobs.
pub async fn publish_workload(bus: &Bus) {
    for n in 0..N {
        bus.publish(Job { n }).await.unwrap();
    }
}

/// Metrics read back from a [`DebuggingRecorder`].
pub struct Recorded(Vec<(CompositeKey, DebugValue)>);

impl Recorded {
    pub fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect(),
        )
    }

    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0.iter().find_map(|(k, v)| {
            let key = k.key();
            let matches = k.kind() == kind
                && key.name() == name
                && labels
                    .iter()
                    .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv));
            matches.then_some(v)
        })
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(MetricKind::Gauge, name, labels) {
            Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
            None => None,
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.find(MetricKind::Histogram, name, labels) {
            Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
            None => Vec::new(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

/// Runs `f` on a current-thread runtime with `recorder` as this thread's
/// recorder (so that tests of one binary do not share a global one).
pub fn with_recorder<F, Fut>(recorder: &DebuggingRecorder, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || rt.block_on(f()));
}

/// Waits (real time) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
