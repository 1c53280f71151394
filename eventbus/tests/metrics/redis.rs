//! The backlog gauges on a real redis-server (Streams).

use std::time::Duration;

use eventbus::metrics::{CONSUMER_LAG, CONSUMER_OLDEST_PENDING_AGE, CONSUMER_PENDING};
use eventbus::transport::redis::RedisTransport;
use eventbus::transport::{GroupSpec, Topics, Transport};
use metrics_util::debugging::DebuggingRecorder;
use testkit::RedisServer;

use crate::support::{Job, Recorded, with_recorder};

#[test]
fn backlog_gauges_of_a_known_backlog_on_redis_streams() {
    let server =
        RedisServer::start().expect("start redis-server (apt-get install -y redis-server)");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, || async {
        let redis = RedisTransport::connect(&server.url()).await.unwrap();
        let spec = GroupSpec {
            group: "svc.slow".into(),
            handler: "slow".into(),
            topics: Topics::Types(vec!["metrics.job".into()]),
            handler_timeout: None,
            broadcast: false,
        };
        let empty = redis.group_stats(&spec).unwrap().await.unwrap();
        assert_eq!(
            (empty.lag, empty.pending),
            (Some(0), Some(0)),
            "no stream yet"
        );
        redis.declare(&spec).await.unwrap();
        let bus = eventbus::Bus::builder()
            .service("svc")
            .without_registered()
            .transport(redis.clone())
            .build()
            .await
            .unwrap();
        for n in 0..5 {
            bus.publish(Job { n }).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = redis.group_stats(&spec).unwrap().await.unwrap();
        assert_eq!((stats.lag, stats.pending), (Some(5), Some(0)));
        assert!(
            stats.oldest_pending.unwrap() >= Duration::from_millis(40),
            "{stats:?}"
        );
        // Two read and unsettled, three waiting.
        let sub = redis.subscribe(&spec).await.unwrap();
        let mut read = 0;
        while read < 2 {
            read += sub.next(2 - read).await.unwrap().len();
        }
        let stats = redis.group_stats(&spec).unwrap().await.unwrap();
        assert_eq!((stats.lag, stats.pending), (Some(3), Some(2)), "{stats:?}");
        assert!(stats.oldest_pending.unwrap() >= Duration::from_millis(40));
        eventbus::metrics::sample_groups(&redis, std::slice::from_ref(&spec)).await;
        drop(sub);
    });
    let got = Recorded::take(&snapshotter);
    let labels = [("group", "svc.slow"), ("transport", "redis-streams")];
    assert_eq!(got.gauge(CONSUMER_LAG.name, &labels), Some(3.0));
    assert_eq!(got.gauge(CONSUMER_PENDING.name, &labels), Some(2.0));
    let age = got
        .gauge(CONSUMER_OLDEST_PENDING_AGE.name, &labels)
        .unwrap();
    assert!((0.04..30.0).contains(&age), "{age}");
}
