//! Handlers defined in a crate the binary never names are still registered,
//! as long as the crate is linked (`use the_crate as _;`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use eventbus::Bus;
use eventbus_test_handlers as _;
use eventbus_test_handlers::{GrantPublished, HANDLED};

#[tokio::test]
async fn handlers_from_a_handlers_only_crate_run() {
    let bus = Bus::builder()
        .service("xcrate")
        .connect("memory://")
        .await
        .unwrap();
    assert!(
        bus.groups().any(|g| g == "xcrate.grants"),
        "{:?}",
        bus.groups().collect::<Vec<_>>()
    );
    assert!(bus.registry().event("xcrate.grant_published").is_some());
    let running = bus.spawn();
    bus.publish(GrantPublished { id: 5 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while HANDLED.load(Ordering::SeqCst) != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cross-crate handler did not run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn configuration_mistakes_are_one_actionable_sentence() {
    let err = Bus::builder()
        .connect("kafka://broker:9092")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown transport `kafka://`") && err.contains("memory://"),
        "{err}"
    );
    let err = Bus::builder()
        .connect("nats://user:hunter2@host:4222")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    let err = Bus::builder()
        .connect("localhost:6379")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a transport URL"), "{err}");
    let err = Bus::builder()
        .connect("memory://a/b")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("memory URL takes only an optional instance name"),
        "{err}"
    );
    let err = Bus::builder()
        .service("my service")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without spaces"), "{err}");
}
