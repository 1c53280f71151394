//! `cargo run --example webhooks`: the example's own [`run`](webhooks::run),
//! checked step by step.

#[path = "../webhooks.rs"]
#[allow(dead_code)]
mod webhooks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_example_verifies_signs_retries_and_disables() {
    let report = webhooks::run().await.expect("the example runs to its end");
    let text = report.lines.join("\n");

    // Three subscriptions through the API, each verified by the handshake.
    assert_eq!(
        report
            .lines
            .iter()
            .filter(|l| l.contains("verified by the OPTIONS handshake, active"))
            .count(),
        3,
        "{text}"
    );
    // Every delivery to `signed` carried a signature that verified with the
    // secret returned at creation.
    assert_eq!(report.signed_verified, webhooks::EVENTS, "{text}");
    assert_eq!(report.signed_rejected, 0, "{text}");
    // `flaky`: two failures, then the retry on the short schedule succeeded.
    assert_eq!(
        report.flaky_outcomes,
        ["retrying", "retrying", "delivered"],
        "{text}"
    );
    assert_eq!(report.flaky_delivered, webhooks::EVENTS, "{text}");
    // `gone`: 410 disabled it; its attempt says so.
    assert_eq!(report.gone_state, "disabled", "{text}");
    assert!(report.gone_reason.contains("410"), "{text}");
    assert_eq!(report.gone_outcome, "gone", "{text}");
}
