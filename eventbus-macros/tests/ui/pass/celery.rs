use eventbus::Event;

/// Django's `send_task("send_short_message", args=(id,), queue="sms_send_queue")`.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("send_short_message", celery, queue = "sms_send_queue", result)]
struct SendShortMessage(i64);

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("send_email_task", celery)]
struct SendEmailTask(i64);

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated(i64);

fn main() {
    let sms = SendShortMessage::info().task.expect("a Celery task");
    assert_eq!((sms.queue, sms.store_result), ("sms_send_queue", true));
    let email = SendEmailTask::info().task.expect("a Celery task");
    assert_eq!((email.queue, email.store_result), ("celery", false));
    assert!(ReviewCreated::info().task.is_none());
}
