use eventbus::Event;

// `queue` and `result` belong to Celery tasks: `celery` is missing.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("send_email_task", queue = "emails")]
struct SendEmail(i64);

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("add", result)]
struct Add(i64, i64);

// A queue name with a space.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
#[event("send_sms", celery, queue = "sms queue")]
struct SendSms(i64);

fn main() {}
