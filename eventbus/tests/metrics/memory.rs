//! Exact metric values after a known workload on `memory://`.

use std::time::Duration;

use eventbus::metrics::{
    CONSUMED_MESSAGES, CONSUMER_LAG, CONSUMER_OLDEST_PENDING_AGE, CONSUMER_PENDING, DEAD_LETTERED,
    PROCESS_DURATION, RETRIES, SENT_MESSAGES,
};
use eventbus::transport::memory::MemoryTransport;
use eventbus::transport::{GroupSpec, Topics, Transport};
use metrics_util::debugging::DebuggingRecorder;

use crate::support::{
    Job, N, Recorded, eventually, publish_workload, with_recorder, workload_builder,
};

#[test]
fn a_known_workload_gives_exact_counters_and_histogram_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, || async {
        let memory = MemoryTransport::new();
        let bus = workload_builder()
            .transport(memory.clone())
            .build()
            .await
            .unwrap();
        let mut running = bus.spawn();
        running.ready().await.unwrap();
        publish_workload(&bus).await;
        let m = memory.clone();
        eventually("the workload settles", move || m.is_idle()).await;
        assert_eq!(bus.dead_letters(10).await.unwrap().len(), 1);
        running.shutdown().await.unwrap();
    });
    let got = Recorded::take(&snapshotter);
    let job = [("type", "metrics.job")];
    let group = [("type", "metrics.job"), ("group", "svc.work")];
    assert_eq!(
        got.counter(
            SENT_MESSAGES.name,
            &[("type", "metrics.job"), ("transport", "memory")]
        ),
        u64::from(N)
    );
    // Every delivery: N first attempts, one retry of job 3, one of job 7.
    assert_eq!(
        got.counter(
            CONSUMED_MESSAGES.name,
            &[
                ("type", "metrics.job"),
                ("group", "svc.work"),
                ("transport", "memory")
            ]
        ),
        u64::from(N) + 2
    );
    assert_eq!(got.counter(RETRIES.name, &group), 2);
    assert_eq!(got.counter(DEAD_LETTERED.name, &group), 1);
    let ok = got.histogram(PROCESS_DURATION.name, &[("outcome", "ok"), job[0]]);
    let failed = got.histogram(PROCESS_DURATION.name, &[("outcome", "error"), job[0]]);
    assert_eq!(ok.len(), N as usize - 1, "job 7 never succeeds");
    assert_eq!(failed.len(), 3, "job 3 once, job 7 twice");
    assert!(ok.iter().chain(&failed).all(|s| (0.0..5.0).contains(s)));
}

#[test]
fn backlog_gauges_of_a_known_backlog_on_memory() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, || async {
        let memory = MemoryTransport::new();
        let spec = GroupSpec {
            group: "svc.slow".into(),
            handler: "slow".into(),
            topics: Topics::Types(vec!["metrics.job".into()]),
            handler_timeout: None,
            broadcast: false,
        };
        memory.declare(&spec).await.unwrap();
        let bus = eventbus::Bus::builder()
            .service("svc")
            .without_registered()
            .transport(memory.clone())
            .build()
            .await
            .unwrap();
        for n in 0..5 {
            bus.publish(Job { n }).await.unwrap();
        }
        // Two handed out and unsettled, three waiting.
        let sub = memory.subscribe(&spec).await.unwrap();
        assert_eq!(sub.next(2).await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stats = memory.group_stats(&spec).unwrap().await.unwrap();
        assert_eq!((stats.lag, stats.pending), (Some(3), Some(2)));
        assert!(stats.oldest_pending.unwrap() >= Duration::from_millis(30));
        eventbus::metrics::sample_groups(&memory, std::slice::from_ref(&spec)).await;
        // An unknown group has no backlog.
        let mut other = spec.clone();
        other.group = "svc.none".into();
        let none = memory.group_stats(&other).unwrap().await.unwrap();
        assert_eq!(
            (none.lag, none.pending, none.oldest_pending),
            (Some(0), Some(0), Some(Duration::ZERO))
        );
    });
    let got = Recorded::take(&snapshotter);
    let labels = [("group", "svc.slow"), ("transport", "memory")];
    assert_eq!(got.gauge(CONSUMER_LAG.name, &labels), Some(3.0));
    assert_eq!(got.gauge(CONSUMER_PENDING.name, &labels), Some(2.0));
    let age = got
        .gauge(CONSUMER_OLDEST_PENDING_AGE.name, &labels)
        .unwrap();
    assert!((0.03..10.0).contains(&age), "{age}");
}

#[test]
fn a_running_bus_samples_its_groups() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, || async {
        let memory = MemoryTransport::new();
        let bus = workload_builder()
            .metrics_interval(Some(Duration::from_millis(20)))
            .transport(memory.clone())
            .build()
            .await
            .unwrap();
        let mut running = bus.spawn();
        running.ready().await.unwrap();
        publish_workload(&bus).await;
        let m = memory.clone();
        eventually("the workload settles", move || m.is_idle()).await;
        // A sample after the backlog drained.
        tokio::time::sleep(Duration::from_millis(100)).await;
        running.shutdown().await.unwrap();
    });
    let got = Recorded::take(&snapshotter);
    let labels = [("group", "svc.work"), ("transport", "memory")];
    assert_eq!(got.gauge(CONSUMER_LAG.name, &labels), Some(0.0));
    assert_eq!(got.gauge(CONSUMER_PENDING.name, &labels), Some(0.0));
    assert_eq!(
        got.gauge(CONSUMER_OLDEST_PENDING_AGE.name, &labels),
        Some(0.0)
    );
}

#[test]
fn a_routed_bus_tells_the_backlog_of_the_transport_a_group_lives_on() {
    with_recorder(&DebuggingRecorder::new(), || async {
        let (default, jobs) = (MemoryTransport::new(), MemoryTransport::new());
        let bus = eventbus::Bus::builder()
            .service("svc")
            .without_registered()
            .transport(default)
            .route_transport(["metrics.job"], jobs.clone())
            .build()
            .await
            .unwrap();
        let spec = GroupSpec {
            group: "svc.routed".into(),
            handler: "routed".into(),
            topics: Topics::Types(vec!["metrics.job".into()]),
            handler_timeout: None,
            broadcast: false,
        };
        bus.transport().declare(&spec).await.unwrap();
        for n in 0..3 {
            bus.publish(Job { n }).await.unwrap();
        }
        let stats = bus.transport().group_stats(&spec).unwrap().await.unwrap();
        assert_eq!((stats.lag, stats.pending), (Some(3), Some(0)));
        assert_eq!(jobs.pending("svc.routed"), 3);
    });
}
