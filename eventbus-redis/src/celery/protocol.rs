//! Celery's task message (protocol 2, and 1 on input) as kombu's Redis
//! transport stores it: a JSON envelope whose base64 `body` is
//! `[args, kwargs, embed]` (protocol 2) or `{"task", "id", "args", ...}`
//! (protocol 1), with the task's name, id, `eta`, `expires` and `retries`
//! in `headers`.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

/// How a task's Rust type takes the Celery arguments, from the JSON Schema
/// of its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A tuple struct or a sequence: the positional `args`.
    Args,
    /// A struct with named fields: the `kwargs`, or the `args` in field order.
    Kwargs,
    /// One value (a newtype such as `struct SendEmail(i64)`): the sole argument.
    Single,
    /// A unit struct: no arguments.
    Unit,
}

impl Shape {
    /// The shape of a type whose data has this JSON Schema.
    pub fn of_schema(schema: &serde_json::Value) -> Self {
        match schema.get("type").and_then(|t| t.as_str()) {
            Some("array") => Shape::Args,
            Some("object") => Shape::Kwargs,
            Some("null") => Shape::Unit,
            _ => Shape::Single,
        }
    }
}

/// A task message read off a queue.
#[derive(Debug)]
pub struct TaskMessage {
    /// The task name (`headers.task`).
    pub task: String,
    /// The task id (`headers.id`).
    pub id: String,
    /// Retries so far (`headers.retries`).
    pub retries: u32,
    /// Not to run before this (`headers.eta`).
    pub eta: Option<DateTime<Utc>>,
    /// Not to run after this (`headers.expires`).
    pub expires: Option<DateTime<Utc>>,
    /// Given back by a worker that went away (kombu sets `redelivered`).
    pub redelivered: bool,
    /// The positional arguments, as JSON.
    pub args: Box<RawValue>,
    /// The keyword arguments, as JSON.
    pub kwargs: Box<RawValue>,
}

/// Why a message cannot be read as a task: the text names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(reason: impl Into<String>) -> Malformed {
    Malformed(reason.into())
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(rename = "content-type", default)]
    content_type: Option<Cow<'a, str>>,
    #[serde(default)]
    headers: Option<Headers>,
    #[serde(default)]
    properties: Option<Properties<'a>>,
}

#[derive(Deserialize, Default)]
struct Headers {
    task: Option<String>,
    id: Option<String>,
    eta: Option<String>,
    expires: Option<String>,
    retries: Option<u32>,
    redelivered: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Properties<'a> {
    #[serde(borrow)]
    body_encoding: Option<Cow<'a, str>>,
    delivery_info: Option<DeliveryInfo>,
}

#[derive(Deserialize, Default)]
struct DeliveryInfo {
    redelivered: Option<bool>,
}

/// Protocol 1: everything in the body.
#[derive(Deserialize)]
struct BodyV1 {
    task: String,
    id: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
    #[serde(default)]
    kwargs: Option<Box<RawValue>>,
    retries: Option<u32>,
    eta: Option<String>,
    expires: Option<String>,
}

fn empty(raw: &str) -> Box<RawValue> {
    RawValue::from_string(raw.to_owned()).expect("valid JSON")
}

/// Parses a Celery datetime: ISO 8601 with an offset, or without one (UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|n| n.and_utc())
}

fn time_header(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, Malformed> {
    match value {
        None => Ok(None),
        Some(text) => parse_time(&text).map(Some).ok_or_else(|| {
            bad(format!(
                "its `{name}` header {:?} is not an ISO 8601 date and time",
                crate::celery::printable(&text)
            ))
        }),
    }
}

impl TaskMessage {
    /// Reads a message as kombu's Redis transport stores it.
    pub fn parse(raw: &[u8]) -> Result<Self, Malformed> {
        let wire: Wire<'_> = serde_json::from_slice(raw)
            .map_err(|e| bad(format!("the message is not a kombu message (JSON): {e}")))?;
        let props = wire.properties.unwrap_or_default();
        let headers = wire.headers.unwrap_or_default();
        let content_type = wire.content_type.as_deref().unwrap_or("application/json");
        if content_type != "application/json" {
            return Err(bad(format!(
                "its content type is {:?}; eventbus reads JSON task messages only: send them with serializer=\"json\"",
                crate::celery::printable(content_type)
            )));
        }
        let body = wire.body.ok_or_else(|| bad("the message has no `body`"))?;
        let body: Cow<'_, [u8]> = match props.body_encoding.as_deref() {
            Some("base64") => Cow::Owned(
                BASE64
                    .decode(body.as_bytes())
                    .map_err(|e| bad(format!("its base64 body does not decode: {e}")))?,
            ),
            None | Some("utf-8") => Cow::Borrowed(body.as_bytes()),
            Some(other) => {
                return Err(bad(format!(
                    "its body encoding {:?} is not base64",
                    crate::celery::printable(other)
                )));
            }
        };
        let redelivered = headers.redelivered.unwrap_or(false)
            || props
                .delivery_info
                .and_then(|d| d.redelivered)
                .unwrap_or(false);
        match headers.task {
            Some(task) => {
                // Protocol 2: [args, kwargs, embed].
                let parts: Vec<Box<RawValue>> = serde_json::from_slice(&body).map_err(|e| {
                    bad(format!(
                        "its body is not the JSON array [args, kwargs, embed] of Celery's protocol 2: {e}"
                    ))
                })?;
                let mut parts = parts.into_iter();
                let args = parts.next().unwrap_or_else(|| empty("[]"));
                let kwargs = parts.next().unwrap_or_else(|| empty("{}"));
                check_args(&args, &kwargs)?;
                Ok(TaskMessage {
                    id: headers
                        .id
                        .ok_or_else(|| bad("its headers have a `task` but no `id`"))?,
                    task,
                    retries: headers.retries.unwrap_or(0),
                    eta: time_header("eta", headers.eta)?,
                    expires: time_header("expires", headers.expires)?,
                    redelivered,
                    args,
                    kwargs,
                })
            }
            None => {
                let v1: BodyV1 = serde_json::from_slice(&body).map_err(|e| {
                    bad(format!(
                        "it has no `task` header and its body is not a protocol 1 task ({{\"task\", \"id\", \"args\", \"kwargs\"}}): {e}"
                    ))
                })?;
                let args = v1.args.unwrap_or_else(|| empty("[]"));
                let kwargs = v1.kwargs.unwrap_or_else(|| empty("{}"));
                check_args(&args, &kwargs)?;
                Ok(TaskMessage {
                    task: v1.task,
                    id: v1.id,
                    retries: v1.retries.unwrap_or(0),
                    eta: time_header("eta", v1.eta)?,
                    expires: time_header("expires", v1.expires)?,
                    redelivered,
                    args,
                    kwargs,
                })
            }
        }
    }

    /// The event data for a type of `shape`: the JSON the handler's type decodes.
    pub fn data(&self, shape: Shape) -> Result<Cow<'_, str>, Malformed> {
        let args = self.args.get();
        let kwargs = self.kwargs.get();
        let no_args = is_empty_json(args);
        let no_kwargs = is_empty_json(kwargs);
        let count = |what: &str| {
            bad(format!(
                "task `{}` takes {what}; the message has {} positional and {} keyword arguments",
                crate::celery::printable(&self.task),
                list_len(args),
                object_len(kwargs)
            ))
        };
        match shape {
            Shape::Args if no_kwargs => Ok(Cow::Borrowed(args)),
            Shape::Args => Err(count("positional arguments only")),
            Shape::Kwargs if no_args => Ok(Cow::Borrowed(kwargs)),
            Shape::Kwargs if no_kwargs => Ok(Cow::Borrowed(args)),
            Shape::Kwargs => Err(count(
                "either positional or keyword arguments (its fields in order, or by name), not both",
            )),
            Shape::Unit if no_args && no_kwargs => Ok(Cow::Borrowed("null")),
            Shape::Unit => Err(count("no arguments")),
            Shape::Single => {
                if no_kwargs {
                    let items: Vec<&RawValue> = serde_json::from_str(args)
                        .map_err(|e| bad(format!("its args are not a list: {e}")))?;
                    if let [one] = items[..] {
                        return Ok(Cow::Owned(one.get().to_owned()));
                    }
                } else if no_args {
                    let map: std::collections::BTreeMap<&str, &RawValue> =
                        serde_json::from_str(kwargs)
                            .map_err(|e| bad(format!("its kwargs are not an object: {e}")))?;
                    if map.len() == 1 {
                        let one = map.values().next().expect("one");
                        return Ok(Cow::Owned(one.get().to_owned()));
                    }
                }
                Err(count("one argument"))
            }
        }
    }
}

fn check_args(args: &RawValue, kwargs: &RawValue) -> Result<(), Malformed> {
    if !args.get().trim_start().starts_with('[') {
        return Err(bad("its args are not a JSON list"));
    }
    if !kwargs.get().trim_start().starts_with('{') {
        return Err(bad("its kwargs are not a JSON object"));
    }
    Ok(())
}

fn is_empty_json(raw: &str) -> bool {
    let inner = raw.trim();
    inner.len() >= 2 && inner[1..inner.len() - 1].trim().is_empty()
}

fn list_len(raw: &str) -> usize {
    serde_json::from_str::<Vec<&RawValue>>(raw).map_or(0, |v| v.len())
}

fn object_len(raw: &str) -> usize {
    serde_json::from_str::<std::collections::BTreeMap<&str, &RawValue>>(raw).map_or(0, |m| m.len())
}

/// The arguments of a task message from event data of `shape`: `(args, kwargs)` JSON.
pub fn arguments(data: Option<&RawValue>, shape: Shape) -> (Cow<'_, str>, Cow<'_, str>) {
    let Some(data) = data else {
        return (Cow::Borrowed("[]"), Cow::Borrowed("{}"));
    };
    let text = data.get();
    match text.trim_start().as_bytes().first() {
        Some(b'[') => (Cow::Borrowed(text), Cow::Borrowed("{}")),
        Some(b'{') if shape == Shape::Kwargs => (Cow::Borrowed("[]"), Cow::Borrowed(text)),
        Some(b'n') if shape == Shape::Unit => (Cow::Borrowed("[]"), Cow::Borrowed("{}")),
        _ => (Cow::Owned(format!("[{text}]")), Cow::Borrowed("{}")),
    }
}

/// What a task message says besides its arguments.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The task name.
    pub task: &'a str,
    /// The task id (also its `root_id` and `correlation_id`).
    pub id: &'a str,
    /// The queue (`delivery_info.routing_key`; the exchange is kombu's default, `""`).
    pub queue: &'a str,
    /// Positional arguments (a JSON list).
    pub args: &'a str,
    /// Keyword arguments (a JSON object).
    pub kwargs: &'a str,
    /// Not before.
    pub eta: Option<DateTime<Utc>>,
    /// Not after.
    pub expires: Option<DateTime<Utc>>,
    /// Retries so far.
    pub retries: u32,
    /// `headers.origin`: who sent it.
    pub origin: &'a str,
    /// Whether the worker should store no result (`ignore_result`).
    pub ignore_result: bool,
}

fn celery_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

impl Outgoing<'_> {
    /// The message as Celery's `send_task` writes it (protocol 2, JSON).
    pub fn encode(&self) -> String {
        let body = format!(
            "[{},{},{{\"callbacks\":null,\"errbacks\":null,\"chain\":null,\"chord\":null}}]",
            self.args, self.kwargs
        );
        let s = |v: &str| serde_json::to_string(v).expect("a string");
        let t = |v: &Option<DateTime<Utc>>| match v {
            Some(t) => s(&celery_time(t)),
            None => "null".to_owned(),
        };
        let id = s(self.id);
        format!(
            concat!(
                "{{\"body\":\"{body}\",\"content-encoding\":\"utf-8\",\"content-type\":\"application/json\",",
                "\"headers\":{{\"lang\":\"py\",\"task\":{task},\"id\":{id},\"shadow\":null,\"eta\":{eta},",
                "\"expires\":{expires},\"group\":null,\"group_index\":null,\"retries\":{retries},",
                "\"timelimit\":[null,null],\"root_id\":{id},\"parent_id\":null,\"argsrepr\":{argsrepr},",
                "\"kwargsrepr\":{kwargsrepr},\"origin\":{origin},\"ignore_result\":{ignore},",
                "\"replaced_task_nesting\":0,\"stamped_headers\":null,\"stamps\":{{}}}},",
                "\"properties\":{{\"correlation_id\":{id},\"reply_to\":\"\",\"delivery_mode\":2,",
                "\"delivery_info\":{{\"exchange\":\"\",\"routing_key\":{queue}}},\"priority\":0,",
                "\"body_encoding\":\"base64\",\"delivery_tag\":{tag}}}}}"
            ),
            body = BASE64.encode(body),
            task = s(self.task),
            id = id,
            eta = t(&self.eta),
            expires = t(&self.expires),
            retries = self.retries,
            argsrepr = s(self.args),
            kwargsrepr = s(self.kwargs),
            origin = s(self.origin),
            ignore = self.ignore_result,
            queue = s(self.queue),
            tag = s(&uuid::Uuid::new_v4().to_string()),
        )
    }
}

/// `raw` given back for another run: `retries` set, `eta` set, a new
/// delivery tag, `redelivered` cleared (what Celery's `Task.retry` sends).
pub fn for_retry(raw: &[u8], retries: u32, eta: DateTime<Utc>) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let headers = v.get_mut("headers")?.as_object_mut()?;
    headers.insert("retries".into(), retries.into());
    headers.insert("eta".into(), celery_time(&eta).into());
    headers.remove("redelivered");
    let props = v.get_mut("properties")?.as_object_mut()?;
    props.insert(
        "delivery_tag".into(),
        uuid::Uuid::new_v4().to_string().into(),
    );
    if let Some(info) = props
        .get_mut("delivery_info")
        .and_then(|d| d.as_object_mut())
    {
        info.remove("redelivered");
    }
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM_CELERY: &str = r#"{"body": "W1s0Ml0sIHt9LCB7ImNhbGxiYWNrcyI6IG51bGwsICJlcnJiYWNrcyI6IG51bGwsICJjaGFpbiI6IG51bGwsICJjaG9yZCI6IG51bGx9XQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "send_short_message", "id": "8f7cb36a-3774-4f18-9673-aa4882e681fb", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "8f7cb36a-3774-4f18-9673-aa4882e681fb", "parent_id": null, "argsrepr": "(42,)", "kwargsrepr": "{}", "origin": "gen5997@vm", "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "8f7cb36a-3774-4f18-9673-aa4882e681fb", "reply_to": "7e8c5e4f-31b5-36c1-b61d-a43121108563", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "sms_send_queue"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "7f1e8231-e8ea-4a61-b03a-cfbb7cd9ed3b"}}"#;

    #[test]
    fn reads_what_celery_send_task_writes() {
        let m = TaskMessage::parse(FROM_CELERY.as_bytes()).unwrap();
        assert_eq!(m.task, "send_short_message");
        assert_eq!(m.id, "8f7cb36a-3774-4f18-9673-aa4882e681fb");
        assert_eq!((m.retries, m.eta, m.redelivered), (0, None, false));
        assert_eq!(m.args.get(), "[42]");
        assert_eq!(m.data(Shape::Single).unwrap(), "42");
        assert_eq!(m.data(Shape::Args).unwrap(), "[42]");
        assert_eq!(m.data(Shape::Kwargs).unwrap(), "[42]");
        let err = m.data(Shape::Unit).unwrap_err();
        assert_eq!(
            err.0,
            "task `send_short_message` takes no arguments; the message has 1 positional and 0 keyword arguments"
        );
    }

    #[test]
    fn what_it_writes_reads_back() {
        let eta = parse_time("2026-12-01T14:33:50.569218+00:00").unwrap();
        let text = Outgoing {
            task: "send_email_task",
            id: "abc",
            queue: "emails",
            args: "[7]",
            kwargs: "{\"x\":1}",
            eta: Some(eta),
            expires: None,
            retries: 2,
            origin: "eventbus@host",
            ignore_result: false,
        }
        .encode();
        let m = TaskMessage::parse(text.as_bytes()).unwrap();
        assert_eq!(
            (m.task.as_str(), m.id.as_str(), m.retries),
            ("send_email_task", "abc", 2)
        );
        assert_eq!(m.eta, Some(eta));
        assert_eq!((m.args.get(), m.kwargs.get()), ("[7]", "{\"x\":1}"));
        let again = for_retry(text.as_bytes(), 3, eta).unwrap();
        assert_eq!(TaskMessage::parse(again.as_bytes()).unwrap().retries, 3);
    }

    #[test]
    fn reads_protocol_1_and_names_what_is_wrong() {
        let body = BASE64
            .encode(r#"{"task":"t","id":"i","args":[1],"kwargs":{},"eta":"2026-01-01T00:00:00"}"#);
        let v1 = format!(r#"{{"body":"{body}","properties":{{"body_encoding":"base64"}}}}"#);
        let m = TaskMessage::parse(v1.as_bytes()).unwrap();
        assert_eq!((m.task.as_str(), m.args.get()), ("t", "[1]"));
        assert!(m.eta.is_some());
        let pickle = FROM_CELERY.replace("application/json", "application/x-python-serialize");
        assert!(
            TaskMessage::parse(pickle.as_bytes())
                .unwrap_err()
                .0
                .contains("serializer=\"json\"")
        );
        assert!(
            TaskMessage::parse(b"garbage")
                .unwrap_err()
                .0
                .contains("not a kombu message")
        );
        let bad_body = FROM_CELERY.replace("W1s0Ml0s", "!!!!");
        assert!(
            TaskMessage::parse(bad_body.as_bytes())
                .unwrap_err()
                .0
                .contains("base64")
        );
    }

    #[test]
    fn arguments_from_data() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(arguments(Some(&raw("42")), Shape::Single).0, "[42]");
        assert_eq!(arguments(Some(&raw("[1,2]")), Shape::Args).0, "[1,2]");
        let object = raw("{\"id\":1}");
        let (a, k) = arguments(Some(&object), Shape::Kwargs);
        assert_eq!((a.as_ref(), k.as_ref()), ("[]", "{\"id\":1}"));
        assert_eq!(arguments(Some(&raw("null")), Shape::Unit).0, "[]");
    }
}
