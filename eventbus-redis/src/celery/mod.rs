//! Celery task queues on Redis, as a [`Transport`]: Rust handlers for the
//! tasks Django code sends with `send_task`, and Celery tasks sent from
//! Rust that Python workers run, side by side on the same queues.
//!
//! An event type declared `#[event("send_email_task", celery, queue =
//! "emails")]` is a Celery task: on a bus whose URL is Redis, its messages
//! travel as Celery protocol 2 task messages (JSON serializer) in the
//! kombu queue, exactly as `app.send_task(name, args=..., queue=...)`
//! writes them, and a `#[handler]` of the type is a worker of that queue.
//!
//! **kombu's layout and guarantees.** A queue is a Redis list (`LPUSH` to
//! send, pop from the right; priorities 3, 6 and 9 in lists suffixed
//! `\x06\x16<n>`). A message taken by a worker is kept in the `unacked`
//! hash (`delivery tag -> [message, exchange, routing key]`) and the
//! `unacked_index` zset (its delivery time) until it is acknowledged;
//! whatever a dead worker leaves there longer than the visibility timeout
//! is put back on its queue by any worker, Python or Rust
//! (`restore_visible`, under kombu's `unacked_mutex`). This transport keeps
//! that layout, so that a Rust worker and a Python worker can serve one
//! queue and each restores what the other left. It does better than kombu
//! in three places, without changing what Python sees:
//! - the pop and the registration as unacknowledged are one atomic step (a
//!   script; kombu's `BRPOP` then `HSET` loses a message when a worker dies
//!   in between); a blocking wait moves the message to a hand-off list of
//!   the reader, which the next step registers, and which any Rust worker
//!   gives back when the reader is gone;
//! - while a Rust handler runs (or a task waits for its `eta`), the
//!   delivery time of its message is refreshed, so that a task longer than
//!   the visibility timeout is not run a second time by another worker;
//! - a retry is a new message on the queue (with `retries + 1` and an
//!   `eta`, as Celery's `Task.retry` sends), swapped for the old one
//!   atomically.
//!
//! **Arguments.** The handler's type takes the task's `args` and `kwargs`
//! by the shape of its JSON Schema ([`Shape`]): a newtype takes the one
//! argument (`struct SendEmail(i64)` for `args=(42,)`), a tuple struct the
//! positional arguments, a struct with named fields the keyword arguments
//! (or the positional ones, in field order). Sent from Rust, a newtype or a
//! tuple struct becomes `args`, a struct with named fields `kwargs`.
//!
//! **Semantics.** `eta` is honoured (the message is held, unacknowledged,
//! until then), an expired task is not run (acknowledged and logged, its
//! state `REVOKED` when results are stored), a task nobody here declared
//! and a message that cannot be read go to the dead-letter queue with the
//! reason, never crash a worker and are never lost. A task of this
//! service's that no running handler serves is put back on its queue. With
//! `result`, the state and result of each run are written where Celery's
//! Redis result backend keeps them (`celery-task-meta-<id>`, JSON), so
//! that `AsyncResult(id).get()` works in Python.

mod protocol;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventbus_core::transport::{
    Capabilities, DeadLetter, DeadLetterInfo, Delivery, DeliveryId, EventType, GroupSpec, Outgoing,
    Subscriber, Topics, Transport,
};
use eventbus_core::{Error as CoreError, Result};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use redis::Value;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::Client;
use crate::conn::Conn;

pub use protocol::{Malformed, Shape, TaskMessage};

/// kombu's separator of a queue's priority lists and of binding members.
const SEP: &str = "\x06\x16";
/// kombu's default priority steps (`priority_steps`).
const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// A Celery task this transport carries.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The task name (the event type).
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// How its Rust type takes the arguments.
    pub shape: Shape,
    /// Whether its state and result are written to the result backend.
    pub store_result: bool,
}

impl TaskSpec {
    /// A task on `queue` whose data has the JSON Schema `schema`.
    pub fn new(
        name: impl Into<String>,
        queue: impl Into<String>,
        schema: &serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            queue: queue.into(),
            shape: Shape::of_schema(schema),
            store_result: false,
        }
    }

    /// Stores its results (`celery-task-meta-<id>`).
    pub fn with_result(mut self, store: bool) -> Self {
        self.store_result = store;
        self
    }
}

/// Tuning of the Celery transport; the defaults are kombu's.
#[derive(Debug, Clone)]
pub struct CeleryOptions {
    /// How long a message taken by a worker that went away stays invisible
    /// before it is put back on its queue (kombu's `visibility_timeout`,
    /// default 1 hour). Use the value of the Python workers' broker
    /// transport options.
    pub visibility_timeout: Duration,
    /// kombu's `global_keyprefix` (default none).
    pub key_prefix: String,
    /// How many messages this process holds at most, running or read ahead
    /// (Celery's prefetch); tasks waiting for their `eta` do not count.
    pub prefetch: usize,
    /// How long a stored result is kept (Celery's `result_expires`, default 1 day).
    pub result_expires: Duration,
    /// The longest a blocking read waits before checking the priority
    /// lists and shutdown again.
    pub block: Duration,
}

impl Default for CeleryOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(3600),
            key_prefix: String::new(),
            prefetch: 256,
            result_expires: Duration::from_secs(86_400),
            block: Duration::from_secs(1),
        }
    }
}

/// The Celery transport: kombu's Redis queues for the tasks it is given.
/// Cheap to clone.
#[derive(Clone)]
pub struct CeleryTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CeleryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryTransport")
            .field("redis", self.shared.client.config())
            .field("tasks", &self.shared.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: Client,
    opts: CeleryOptions,
    tasks: HashMap<String, TaskSpec>,
    /// This process, in hand-off keys and `headers.origin`.
    worker: String,
    /// The group running each task here.
    slots: Mutex<HashMap<String, Slot>>,
    /// The group each task was declared for (a task runs once: one group).
    declared: Mutex<HashMap<String, String>>,
    readers: Mutex<HashMap<String, ReaderHandle>>,
    inflight: Mutex<HashMap<DeliveryId, InFlight>>,
    /// Results handlers gave for tasks in flight, by task id.
    results: Mutex<HashMap<String, serde_json::Value>>,
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    /// Tasks found on a queue with no handler here, warned about once.
    warned: Mutex<HashSet<String>>,
    /// Whether [`housekeeping`] runs (from the first subscription on).
    housekeeping: std::sync::atomic::AtomicBool,
}

struct Slot {
    group: String,
    tx: mpsc::UnboundedSender<Delivery>,
}

struct ReaderHandle {
    stop: CancellationToken,
    groups: usize,
    handoff: String,
    /// Ends once the reader gave back its hand-off list.
    done: Option<tokio::task::JoinHandle<()>>,
}

struct InFlight {
    tag: String,
    queue: String,
    raw: Bytes,
    task: String,
    task_id: String,
    retries: u32,
    store_result: bool,
    /// Held until its `eta`, not handed to the handler yet.
    waiting: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

fn config_error(reason: String) -> CoreError {
    CoreError::Config(reason)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `text` with control characters escaped, for logs and dead-letter reasons.
pub(crate) fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_debug().to_string()
    } else {
        text.to_owned()
    }
}

fn redis_err(op: &'static str) -> impl FnOnce(redis::RedisError) -> CoreError {
    move |e| crate::Error::redis(op, e).into()
}

impl CeleryTransport {
    /// Connects to the Redis of `url` (the Celery broker, `redis://host:6379/0`)
    /// for `tasks`.
    pub async fn connect(url: &str, tasks: Vec<TaskSpec>, opts: CeleryOptions) -> Result<Self> {
        let client = Client::connect_url(url).await?;
        Self::new(client, tasks, opts)
    }

    /// The transport on `client`'s server for `tasks`.
    pub fn new(client: Client, tasks: Vec<TaskSpec>, opts: CeleryOptions) -> Result<Self> {
        if client.config().is_cluster() {
            return Err(config_error(format!(
                "Celery task queues need one Redis server (kombu does not run on a cluster); `{}` is a cluster: point the Celery broker at a single server",
                client.config()
            )));
        }
        if opts.visibility_timeout < Duration::from_secs(1) {
            return Err(config_error(
                "the Celery visibility timeout must be at least 1 second".into(),
            ));
        }
        let mut by_name = HashMap::new();
        for t in tasks {
            if let Some(prev) = by_name.insert(t.name.clone(), t.clone())
                && prev.queue != t.queue
            {
                return Err(config_error(format!(
                    "Celery task `{}` is declared on two queues, `{}` and `{}`; give it one",
                    t.name, prev.queue, t.queue
                )));
            }
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let worker = format!("eventbus-{}@{host}", uuid::Uuid::now_v7().simple());
        let prefetch = opts.prefetch.max(1);
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                tasks: by_name,
                worker,
                slots: Mutex::default(),
                declared: Mutex::default(),
                readers: Mutex::default(),
                inflight: Mutex::default(),
                results: Mutex::default(),
                permits: Arc::new(Semaphore::new(prefetch)),
                next_id: AtomicU64::new(1),
                warned: Mutex::default(),
                housekeeping: std::sync::atomic::AtomicBool::new(false),
                opts,
            }),
        })
    }

    /// The Redis client (the broker connection).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The tasks it carries.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskSpec> + '_ {
        self.shared.tasks.values()
    }

    /// Sends task `name` to `queue` with these arguments (a tuple or list
    /// serializes as `args`, a map as `kwargs`), as `app.send_task(name,
    /// args=args, kwargs=kwargs, queue=queue, serializer="json")` does.
    /// Returns the task id. For tasks declared as event types, publishing
    /// the event on the bus does the same, typed.
    pub async fn send_task(
        &self,
        name: &str,
        args: &impl serde::Serialize,
        kwargs: &impl serde::Serialize,
        queue: &str,
    ) -> Result<String> {
        let args = serde_json::to_string(args).map_err(|e| {
            config_error(format!("the args of task `{name}` do not serialize: {e}"))
        })?;
        let kwargs = serde_json::to_string(kwargs).map_err(|e| {
            config_error(format!("the kwargs of task `{name}` do not serialize: {e}"))
        })?;
        let args = match args.trim_start().as_bytes().first() {
            Some(b'[') => args,
            Some(b'n') => "[]".to_owned(),
            _ => format!("[{args}]"),
        };
        let kwargs = if kwargs == "null" {
            "{}".to_owned()
        } else {
            kwargs
        };
        if !kwargs.starts_with('{') {
            return Err(config_error(format!(
                "the kwargs of task `{name}` must serialize as a JSON object (a map or a struct)"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let message = protocol::Outgoing {
            task: name,
            id: &id,
            queue,
            args: &args,
            kwargs: &kwargs,
            eta: None,
            expires: None,
            retries: 0,
            origin: &self.shared.worker,
            ignore_result: false,
        }
        .encode();
        let key = self.shared.key(queue);
        self.shared
            .client
            .run::<()>("LPUSH", redis::cmd("LPUSH").arg(&key).arg(message))
            .await?;
        Ok(id)
    }

    /// Gives the result of the running task `task_id` (its event id,
    /// `ctx.id()` in the handler): written with the task's `SUCCESS` state
    /// when the handler returns `Ok` (tasks declared with `result`).
    pub fn set_result(&self, task_id: &str, value: serde_json::Value) {
        self.shared.results.lock().insert(task_id.to_owned(), value);
    }

    /// The stored state of task `task_id` (`celery-task-meta-<id>`), if any.
    pub async fn result(&self, task_id: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self
            .shared
            .client
            .run("GET", redis::cmd("GET").arg(result_key(task_id)))
            .await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

/// Whether `id` is a stream entry id (`<ms>-<seq>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

impl Shared {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.opts.key_prefix)
    }

    fn unacked(&self) -> String {
        self.key("unacked")
    }

    fn unacked_index(&self) -> String {
        self.key("unacked_index")
    }

    fn handoffs(&self) -> String {
        self.key("_eventbus.celery.handoffs")
    }

    fn dlq(&self) -> String {
        format!("{}:celery:dlq", self.client.keys().base())
    }

    /// The lists of `queue`, priority 0 first.
    fn queue_keys(&self, queue: &str) -> Vec<String> {
        PRIORITY_STEPS
            .iter()
            .map(|&p| match p {
                0 => self.key(queue),
                p => format!("{}{SEP}{p}", self.key(queue)),
            })
            .collect()
    }

    fn result_meta(
        &self,
        task_id: &str,
        status: &str,
        result: serde_json::Value,
        traceback: Option<String>,
    ) -> String {
        serde_json::json!({
            "status": status,
            "result": result,
            "traceback": traceback,
            "children": [],
            "date_done": Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
            "task_id": task_id,
        })
        .to_string()
    }

    /// kombu's acknowledgement of `tag`: out of `unacked_index` and `unacked`.
    fn add_ack(&self, pipe: &mut redis::Pipeline, tag: &str) {
        pipe.cmd("ZREM")
            .arg(self.unacked_index())
            .arg(tag)
            .ignore()
            .cmd("HDEL")
            .arg(self.unacked())
            .arg(tag)
            .ignore();
    }

    fn add_result(&self, pipe: &mut redis::Pipeline, task_id: &str, meta: &str) {
        let key = result_key(task_id);
        pipe.cmd("SETEX")
            .arg(&key)
            .arg(self.opts.result_expires.as_secs().max(1))
            .arg(meta)
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(meta)
            .ignore();
    }

    /// Puts `tag` back on its queue (`leftmost`: behind everything waiting).
    async fn restore(&self, tag: &str, leftmost: bool) -> Result<()> {
        let mut inv = scripts::RESTORE.prepare_invoke();
        inv.key(self.unacked())
            .key(self.unacked_index())
            .arg(tag)
            .arg(if leftmost { "1" } else { "0" })
            .arg(&self.opts.key_prefix);
        self.client
            .run_script::<i64>("Celery restore script", &inv)
            .await?;
        Ok(())
    }

    /// Moves `tag` to the dead-letter queue (`false`: it was not unacknowledged any more).
    async fn dead_letter_tag(
        &self,
        tag: &str,
        group: &str,
        queue: &str,
        raw: &[u8],
        event: Option<&[u8]>,
        info: &DeadLetterInfo,
    ) -> Result<bool> {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut inv = scripts::DEAD_LETTER.prepare_invoke();
        inv.key(self.unacked())
            .key(self.unacked_index())
            .key(self.dlq())
            .arg(tag)
            .arg("group")
            .arg(group)
            .arg("handler")
            .arg(&info.handler)
            .arg("type")
            .arg(&info.event_type)
            .arg("id")
            .arg(info.event_id.as_deref().unwrap_or(""))
            .arg("attempts")
            .arg(info.attempts)
            .arg("error")
            .arg(&info.error)
            .arg("origin")
            .arg(queue)
            .arg("time_ms")
            .arg(time_ms)
            .arg("payload")
            // The event as the handler got it, like every transport's DLQ;
            // the task message as received, for a replay.
            .arg(event.unwrap_or(raw));
        if event.is_some() {
            inv.arg("message").arg(raw);
        }
        let id: Option<String> = self
            .client
            .run_script("Celery dead-letter script", &inv)
            .await?;
        Ok(id.is_some())
    }

    fn warn_once(&self, task: &str, text: impl FnOnce() -> String) {
        if self.warned.lock().insert(task.to_owned()) {
            tracing::warn!("{}", text());
        }
    }
}

/// The CloudEvent a task message is delivered as.
fn cloudevent(msg: &TaskMessage, queue: &str, data: &str) -> Bytes {
    let s = |v: &str| serde_json::to_string(v).expect("a string");
    let time = msg.eta.unwrap_or_else(Utc::now);
    Bytes::from(format!(
        "{{\"specversion\":\"1.0\",\"id\":{},\"source\":{},\"type\":{},\"time\":{},\"datacontenttype\":\"application/json\",\"data\":{data}}}",
        s(&msg.id),
        s(&format!("/celery/{queue}")),
        s(&msg.task),
        s(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    ))
}

/// What a published structured CloudEvent says, for its task message.
#[derive(Deserialize)]
struct Published<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

impl Transport for CeleryTransport {
    fn name(&self) -> &'static str {
        "celery-redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::COMPETING
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for m in batch {
                let (key, message) = self.shared.encode(m, None)?;
                pipe.cmd("LPUSH").arg(key).arg(message).ignore();
            }
            self.shared
                .client
                .run_pipe::<()>("LPUSH", &pipe)
                .await
                .map_err(Into::into)
        })
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (key, message) = self
                .shared
                .encode(&message, Some(DateTime::<Utc>::from(at)))?;
            self.shared
                .client
                .run::<()>("LPUSH", redis::cmd("LPUSH").arg(key).arg(message))
                .await
                .map_err(Into::into)
        })
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Topics::Types(types) = &group.topics else {
                return Ok(());
            };
            let queues = self.shared.claim(group, types)?;
            // What a Celery worker declares for its queues: the binding of
            // the queue's direct exchange (kombu's `_queue_bind`).
            let mut pipe = redis::pipe();
            for q in queues {
                let member = format!("{q}{SEP}{SEP}{q}");
                pipe.cmd("SADD")
                    .arg(self.shared.key(&format!("_kombu.binding.{q}")))
                    .arg(&member)
                    .ignore()
                    .cmd("SADD")
                    .arg(self.shared.key(&format!("_kombu.binding_permanent.{q}")))
                    .arg(&member)
                    .ignore();
            }
            self.shared
                .client
                .run_pipe::<()>("SADD", &pipe)
                .await
                .map_err(Into::into)
        })
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async move {
            let Topics::Types(types) = &group.topics else {
                // A global handler: Celery tasks run once, on their own handler.
                tracing::debug!(
                    group = %group.group,
                    "global handlers do not receive Celery tasks"
                );
                return Ok(Box::new(Idle) as Box<dyn Subscriber>);
            };
            let queues = self.shared.claim(group, types)?;
            let (tx, rx) = mpsc::unbounded_channel();
            {
                let mut slots = self.shared.slots.lock();
                for t in types {
                    slots.insert(
                        t.clone(),
                        Slot {
                            group: group.group.clone(),
                            tx: tx.clone(),
                        },
                    );
                }
            }
            for q in &queues {
                self.start_reader(q);
            }
            if !self.shared.housekeeping.swap(true, Ordering::SeqCst) {
                tokio::spawn(housekeeping(Arc::downgrade(&self.shared)));
            }
            Ok(Box::new(CelerySubscriber {
                shared: self.shared.clone(),
                transport: self.clone(),
                rx: tokio::sync::Mutex::new(rx),
                tasks: types.clone(),
                queues,
                closed: std::sync::atomic::AtomicBool::new(false),
            }) as Box<dyn Subscriber>)
        })
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let key = format!(
                "{}:celery:tick:{schedule}:{tick_ms}",
                self.shared.client.keys().base()
            );
            let set: Option<String> = self
                .shared
                .client
                .run(
                    "SET",
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(86_400_000u64),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let reply: Value = self
                .shared
                .client
                .run(
                    "XRANGE",
                    redis::cmd("XRANGE")
                        .arg(self.shared.dlq())
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(limit.max(1)),
                )
                .await?;
            Ok(parse_dlq(reply).into_iter().map(|(dl, _)| dl).collect())
        })
    }

    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            if !is_stream_id(dead_letter_id) {
                return Ok(false);
            }
            let n: u64 = self
                .shared
                .client
                .run(
                    "XDEL",
                    redis::cmd("XDEL")
                        .arg(self.shared.dlq())
                        .arg(dead_letter_id),
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            // Not a stream entry id: no such entry.
            if !is_stream_id(dead_letter_id) {
                return Ok(false);
            }
            let reply: Value = self
                .shared
                .client
                .run(
                    "XRANGE",
                    redis::cmd("XRANGE")
                        .arg(self.shared.dlq())
                        .arg(dead_letter_id)
                        .arg(dead_letter_id),
                )
                .await?;
            let Some((dl, message)) = parse_dlq(reply).into_iter().next() else {
                return Ok(false);
            };
            let queue = dl.origin.clone().unwrap_or_else(|| "celery".into());
            let raw = message.unwrap_or_else(|| dl.payload.to_vec());
            let message = protocol::for_retry(&raw, 0, Utc::now())
                .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned());
            let script = redis::Script::new(
                "if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[2]) return 1 end return 0",
            );
            let mut inv = script.prepare_invoke();
            inv.key(self.shared.dlq())
                .key(self.shared.key(&queue))
                .arg(dead_letter_id)
                .arg(message);
            let n: i64 = self
                .shared
                .client
                .run_script("Celery replay script", &inv)
                .await?;
            Ok(n == 1)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.shared.client.ping().await.map_err(Into::into) })
    }

    // The housekeeping (refresh, restore, hand-offs) runs from the first
    // subscription on, for as long as the transport lives: not here.
}

impl Shared {
    /// Checks that `types` are tasks of one group each; returns their queues.
    fn claim(&self, group: &GroupSpec, types: &[String]) -> Result<Vec<String>> {
        let mut queues = Vec::new();
        let mut declared = self.declared.lock();
        for t in types {
            let Some(spec) = self.tasks.get(t) else {
                return Err(config_error(format!(
                    "handler `{}` takes `{t}`, which is routed to the Celery transport but is not a Celery task: declare it with #[event(\"{t}\", celery)] or route it elsewhere",
                    group.handler
                )));
            };
            match declared.get(t) {
                Some(other) if other != &group.group => {
                    return Err(config_error(format!(
                        "Celery task `{t}` has two handlers (groups `{other}` and `{}`); a task runs once, on one handler: keep one",
                        group.group
                    )));
                }
                _ => {
                    declared.insert(t.clone(), group.group.clone());
                }
            }
            if !queues.contains(&spec.queue) {
                queues.push(spec.queue.clone());
            }
        }
        Ok(queues)
    }

    /// The queue key and task message of a published event.
    fn encode(&self, m: &Outgoing, eta: Option<DateTime<Utc>>) -> Result<(String, String)> {
        let Some(spec) = self.tasks.get(m.event_type.as_ref()) else {
            return Err(config_error(format!(
                "`{}` is routed to the Celery transport but is not a Celery task: declare it with #[event(\"{}\", celery)]",
                m.event_type, m.event_type
            )));
        };
        let ce: Published<'_> = serde_json::from_slice(&m.payload).map_err(|e| {
            config_error(format!(
                "the `{}` event to send as a Celery task is not a structured CloudEvent: {e}",
                m.event_type
            ))
        })?;
        debug_assert_eq!(ce.ty, m.event_type.as_ref());
        let (args, kwargs) = protocol::arguments(ce.data, spec.shape);
        let message = protocol::Outgoing {
            task: &spec.name,
            id: &ce.id,
            queue: &spec.queue,
            args: &args,
            kwargs: &kwargs,
            eta,
            expires: None,
            retries: 0,
            origin: &self.worker,
            ignore_result: !spec.store_result,
        }
        .encode();
        Ok((self.key(&spec.queue), message))
    }
}

impl CeleryTransport {
    fn start_reader(&self, queue: &str) {
        let mut readers = self.shared.readers.lock();
        if let Some(r) = readers.get_mut(queue) {
            r.groups += 1;
            return;
        }
        let stop = CancellationToken::new();
        let handoff = self.shared.key(&format!(
            "_eventbus.celery.handoff.{}.{queue}",
            self.shared.worker
        ));
        readers.insert(
            queue.to_owned(),
            ReaderHandle {
                stop: stop.clone(),
                groups: 1,
                handoff: handoff.clone(),
                done: None,
            },
        );
        let reader = Reader {
            shared: self.shared.clone(),
            queue: queue.to_owned(),
            keys: self.shared.queue_keys(queue),
            handoff,
            conn: None,
            batches: None,
        };
        let done = tokio::spawn(reader.run(stop));
        if let Some(r) = readers.get_mut(queue) {
            r.done = Some(done);
        }
    }

    /// One group less reads `queue`; the last one stops its reader and
    /// waits until it gave back what its last blocking read took.
    async fn stop_reader(&self, queue: &str) {
        if let Some(done) = self.release_reader(queue) {
            let _ = done.await;
        }
    }

    /// One group less reads `queue`; the last one stops its reader, whose
    /// task this returns.
    fn release_reader(&self, queue: &str) -> Option<tokio::task::JoinHandle<()>> {
        let mut readers = self.shared.readers.lock();
        match readers.get_mut(queue) {
            Some(r) if r.groups > 1 => {
                r.groups -= 1;
                None
            }
            Some(_) => readers.remove(queue).and_then(|r| {
                r.stop.cancel();
                r.done
            }),
            None => None,
        }
    }
}

/// Pops a queue's messages and hands them to the groups of their tasks.
struct Reader {
    shared: Arc<Shared>,
    queue: String,
    keys: Vec<String>,
    handoff: String,
    /// The connection of blocking reads (a multiplexed one would stall
    /// every other command behind them).
    conn: Option<Conn>,
    /// Popped batches, parsed and handed to the groups by a task of their
    /// own, so that the next pop is under way meanwhile.
    batches: Option<mpsc::UnboundedSender<Vec<(String, Bytes, OwnedSemaphorePermit)>>>,
}

impl Reader {
    async fn run(mut self, stop: CancellationToken) {
        let (btx, mut brx) =
            mpsc::unbounded_channel::<Vec<(String, Bytes, OwnedSemaphorePermit)>>();
        let dispatcher = Reader {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
            keys: Vec::new(),
            handoff: String::new(),
            conn: None,
            batches: None,
        };
        let dispatching = tokio::spawn(async move {
            while let Some(batch) = brx.recv().await {
                for (tag, raw, permit) in batch {
                    // Failed: it stays unacknowledged, restored after the visibility timeout.
                    if let Err(e) = dispatcher.dispatch(tag, raw, permit).await {
                        tracing::warn!(error = %e, "could not hand a Celery task to its handler");
                    }
                }
            }
        });
        self.batches = Some(btx);
        let mut backoff = Duration::from_millis(100);
        self.alive().await;
        loop {
            if stop.is_cancelled() {
                break;
            }
            match self.round(&stop).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(queue = %printable(&self.queue), error = %e, "reading the Celery queue failed; trying again in {backoff:?}");
                    self.conn = None;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.batches = None;
        let _ = dispatching.await;
        // What a last blocking read moved to the hand-off goes back now.
        let script = redis::Script::new(
            "while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT') do end redis.call('HDEL', KEYS[3], KEYS[1]) return 1",
        );
        let mut inv = script.prepare_invoke();
        inv.key(&self.handoff)
            .key(&self.keys[0])
            .key(self.shared.handoffs());
        if let Err(e) = self
            .shared
            .client
            .run_script::<i64>("Celery hand-off script", &inv)
            .await
        {
            tracing::warn!(error = %e, "could not give back the Celery hand-off list; another worker will within 30 s");
        }
    }

    async fn alive(&self) {
        let mut inv = scripts::HANDOFF_ALIVE.prepare_invoke();
        inv.key(self.shared.handoffs())
            .arg(&self.handoff)
            .arg(&self.keys[0])
            .arg(HANDOFF_TTL.as_millis() as u64);
        if let Err(e) = self
            .shared
            .client
            .run_script::<i64>("Celery hand-off script", &inv)
            .await
        {
            tracing::warn!(error = %e, "could not register the Celery hand-off list");
        }
    }

    async fn round(&mut self, stop: &CancellationToken) -> Result<()> {
        let first = tokio::select! {
            p = self.shared.permits.clone().acquire_owned() => p.expect("never closed"),
            _ = stop.cancelled() => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < 128 {
            match self.shared.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let mut inv = scripts::POP.prepare_invoke();
        inv.key(self.shared.unacked())
            .key(self.shared.unacked_index())
            .key(&self.handoff);
        for k in &self.keys {
            inv.key(k);
        }
        // Whole seconds: kombu's listpack zset compares integer scores without parsing them.
        inv.arg(now_secs() as u64).arg(permits.len());
        let popped: Vec<Vec<u8>> = self
            .shared
            .client
            .run_script("Celery pop script", &inv)
            .await?;
        if popped.is_empty() {
            drop(permits);
            return self.block(stop).await;
        }
        // A message whose dispatch fails stays unacknowledged: restored
        // after the visibility timeout, never lost.
        let mut batch = Vec::with_capacity(permits.len());
        for (pair, permit) in popped.chunks(2).zip(permits) {
            let [tag, raw] = pair else { continue };
            batch.push((
                String::from_utf8_lossy(tag).into_owned(),
                Bytes::copy_from_slice(raw),
                permit,
            ));
        }
        let _ = self.batches.as_ref().expect("set by run").send(batch);
        Ok(())
    }

    /// Waits for the queue's first list to get a message (moved to the hand-off).
    async fn block(&mut self, stop: &CancellationToken) -> Result<()> {
        if self.conn.is_none() {
            let timeout = self.shared.opts.block + self.shared.client.options().response_timeout;
            self.conn = Some(self.shared.client.inner.connector.connect(timeout).await?);
        }
        let mut conn = self.conn.clone().expect("connected above");
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(&self.keys[0])
            .arg(&self.handoff)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(self.shared.opts.block.as_secs_f64().max(0.01));
        // Not cancelled on shutdown: whatever it moves is in the hand-off,
        // which the next round or the stop gives back.
        let _ = stop;
        let _: Option<Vec<u8>> = cmd
            .query_async(&mut conn)
            .await
            .map_err(redis_err("BLMOVE"))?;
        Ok(())
    }

    /// Hands one popped message to its group, or settles it here.
    async fn dispatch(&self, tag: String, raw: Bytes, permit: OwnedSemaphorePermit) -> Result<()> {
        let shared = &self.shared;
        let queue = &self.queue;
        let dead = |error: String, ty: String, id: Option<String>| DeadLetterInfo {
            event_type: ty,
            event_id: id,
            handler: format!("celery:{queue}"),
            attempts: 0,
            error,
        };
        let group = format!("celery:{queue}");
        let msg = match TaskMessage::parse(&raw) {
            Ok(m) => m,
            Err(why) => {
                let info = dead(
                    format!(
                        "cannot read the Celery task message on queue `{}`: {why}",
                        printable(queue)
                    ),
                    String::new(),
                    None,
                );
                tracing::warn!(queue = %printable(queue), reason = %info.error, "dead-lettering a message that is not a task");
                shared
                    .dead_letter_tag(&tag, &group, queue, &raw, None, &info)
                    .await?;
                return Ok(());
            }
        };
        let Some(spec) = shared.tasks.get(&msg.task) else {
            let mut known: Vec<&str> = shared
                .tasks
                .values()
                .filter(|t| &t.queue == queue)
                .map(|t| t.name.as_str())
                .collect();
            known.sort_unstable();
            let info = dead(
                format!(
                    "no handler for Celery task `{}` on queue `{}` (this service runs {}): declare it with #[event(\"{}\", celery, queue = \"{}\")] and a #[handler], or send it to a queue its workers read",
                    printable(&msg.task),
                    printable(queue),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    },
                    printable(&msg.task),
                    printable(queue),
                ),
                printable(&msg.task),
                Some(printable(&msg.id)),
            );
            tracing::warn!(task = %printable(&msg.task), id = %printable(&msg.id), "dead-lettering a task nobody here runs");
            shared
                .dead_letter_tag(&tag, &group, queue, &raw, None, &info)
                .await?;
            return Ok(());
        };
        if let Some(expires) = msg.expires
            && expires <= Utc::now()
        {
            tracing::info!(task = %spec.name, id = %printable(&msg.id), %expires, "task expired before it ran: not run (as Celery does)");
            let mut pipe = redis::pipe();
            pipe.atomic();
            if spec.store_result {
                let meta = shared.result_meta(&msg.id, "REVOKED", serde_json::json!({"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}), None);
                shared.add_result(&mut pipe, &msg.id, &meta);
            }
            shared.add_ack(&mut pipe, &tag);
            shared.client.run_pipe::<()>("Celery ack", &pipe).await?;
            return Ok(());
        }
        let slot = shared.slots.lock().get(&msg.task).map(|s| s.tx.clone());
        let Some(tx) = slot else {
            shared.warn_once(&msg.task, || {
                format!(
                    "Celery task `{}` on queue `{}` has no running handler in this process; leaving its messages on the queue for other workers",
                    spec.name, queue
                )
            });
            // Back behind the others after a second (not at once: this
            // reader would take it again and again).
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(permit);
                if let Err(e) = shared.restore(&tag, true).await {
                    tracing::warn!(error = %e, "could not give back a Celery task; it is restored after the visibility timeout");
                }
            });
            return Ok(());
        };
        let data = match msg.data(spec.shape) {
            Ok(d) => d,
            Err(why) => {
                let info = dead(why.0, spec.name.clone(), Some(printable(&msg.id)));
                shared
                    .dead_letter_tag(&tag, &group, queue, &raw, None, &info)
                    .await?;
                return Ok(());
            }
        };
        let payload = cloudevent(&msg, queue, &data);
        let id = DeliveryId(u128::from(shared.next_id.fetch_add(1, Ordering::Relaxed)));
        let attempt = msg.retries.saturating_add(1 + u32::from(msg.redelivered));
        let delivery = Delivery {
            id,
            event_type: EventType::from(msg.task.clone()),
            payload,
            attempt,
        };
        let wait = msg
            .eta
            .and_then(|eta| (eta - Utc::now()).to_std().ok())
            .filter(|d| !d.is_zero());
        shared.inflight.lock().insert(
            id,
            InFlight {
                tag,
                queue: queue.clone(),
                raw,
                task: msg.task.clone(),
                task_id: msg.id.clone(),
                retries: msg.retries,
                store_result: spec.store_result,
                waiting: wait.is_some(),
                // A task waiting for its eta does not hold back the others.
                _permit: wait.is_none().then_some(permit),
            },
        );
        match wait {
            None => {
                let _ = tx.send(delivery);
            }
            Some(wait) => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let tag = match shared.inflight.lock().get_mut(&id) {
                        Some(f) => {
                            f.waiting = false;
                            f.tag.clone()
                        }
                        // Given back by a closing subscriber meanwhile.
                        None => return,
                    };
                    if tx.send(delivery).is_err() {
                        shared.inflight.lock().remove(&id);
                        if let Err(e) = shared.restore(&tag, false).await {
                            tracing::warn!(error = %e, "could not give back a Celery task; it is restored after the visibility timeout");
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// How long a reader's hand-off list outlives its last sign of life.
const HANDOFF_TTL: Duration = Duration::from_secs(30);

/// Keeps the delivery times of this process's messages fresh, restores
/// what dead workers left longer than the visibility timeout, keeps the
/// hand-off lists alive and gives back those of dead readers.
async fn housekeeping(weak: std::sync::Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let vt = shared.opts.visibility_timeout;
    drop(shared);
    let period = (vt / 4).clamp(Duration::from_millis(250), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_alive = std::time::Instant::now();
    loop {
        tick.tick().await;
        // Ends with the transport.
        let Some(shared) = weak.upgrade() else { return };
        if let Err(e) = refresh(&shared).await {
            tracing::warn!(error = %e, "could not refresh the Celery tasks in flight");
        }
        if let Err(e) = restore_visible(&shared).await {
            tracing::warn!(error = %e, "could not restore Celery tasks of dead workers");
        }
        if last_alive.elapsed() >= Duration::from_secs(5) || period >= Duration::from_secs(5) {
            last_alive = std::time::Instant::now();
            let handoffs: Vec<(String, String)> = shared
                .readers
                .lock()
                .iter()
                .map(|(q, r)| (r.handoff.clone(), shared.key(q)))
                .collect();
            for (handoff, queue) in handoffs {
                let mut inv = scripts::HANDOFF_ALIVE.prepare_invoke();
                inv.key(shared.handoffs())
                    .arg(&handoff)
                    .arg(&queue)
                    .arg(HANDOFF_TTL.as_millis() as u64);
                let _ = shared
                    .client
                    .run_script::<i64>("Celery hand-off script", &inv)
                    .await;
            }
            let mut inv = scripts::SWEEP_HANDOFFS.prepare_invoke();
            inv.key(shared.handoffs());
            match shared
                .client
                .run_script::<i64>("Celery hand-off sweep", &inv)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(
                        messages = n,
                        "gave back Celery messages a dead reader had taken"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not sweep Celery hand-off lists"),
            }
        }
    }
}

/// Sets the delivery time of every message this process holds to now.
async fn refresh(shared: &Shared) -> Result<()> {
    let tags: Vec<String> = shared
        .inflight
        .lock()
        .values()
        .map(|f| f.tag.clone())
        .collect();
    if tags.is_empty() {
        return Ok(());
    }
    // Whole seconds, as the pop script writes them.
    let now = now_secs() as u64;
    let mut pipe = redis::pipe();
    for chunk in tags.chunks(500) {
        let cmd = pipe.cmd("ZADD").arg(shared.unacked_index()).arg("XX");
        for tag in chunk {
            cmd.arg(now).arg(tag);
        }
        cmd.ignore();
    }
    shared.client.run_pipe::<()>("ZADD", &pipe).await?;
    Ok(())
}

/// kombu's `restore_visible`: under `unacked_mutex`, puts back on their
/// queues the messages delivered longer than the visibility timeout ago.
async fn restore_visible(shared: &Shared) -> Result<()> {
    let mutex = shared.key("unacked_mutex");
    let token = uuid::Uuid::new_v4().to_string();
    let got: Option<String> = shared
        .client
        .run(
            "SET",
            redis::cmd("SET")
                .arg(&mutex)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(300_000u64),
        )
        .await?;
    if got.is_none() {
        return Ok(());
    }
    let ceil = now_secs() - shared.opts.visibility_timeout.as_secs_f64();
    let outcome = async {
        let tags: Vec<String> = shared
            .client
            .run(
                "ZRANGEBYSCORE",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(shared.unacked_index())
                    .arg("-inf")
                    .arg(format!("{ceil:.6}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(100),
            )
            .await?;
        let ours: HashSet<String> = shared
            .inflight
            .lock()
            .values()
            .map(|f| f.tag.clone())
            .collect();
        let mut restored = 0;
        for tag in tags.iter().filter(|t| !ours.contains(*t)) {
            shared.restore(tag, false).await?;
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(
                messages = restored,
                "restored Celery tasks a worker left unacknowledged past the visibility timeout"
            );
        }
        Ok::<_, CoreError>(())
    }
    .await;
    let mut inv = scripts::UNLOCK.prepare_invoke();
    inv.key(&mutex).arg(&token);
    let _ = shared.client.run_script::<i64>("Celery unlock", &inv).await;
    outcome
}

/// The entries of the DLQ, each with the task message it was taken from
/// (when its payload is the event the handler got).
fn parse_dlq(reply: Value) -> Vec<(DeadLetter, Option<Vec<u8>>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let [id, Value::Array(fields)] = &parts[..] else {
            continue;
        };
        let Ok(id) = redis::from_redis_value_ref::<String>(id) else {
            continue;
        };
        let mut map: HashMap<String, Vec<u8>> = HashMap::new();
        for pair in fields.chunks(2) {
            if let [k, v] = pair
                && let (Ok(k), Ok(v)) = (
                    redis::from_redis_value_ref::<String>(k),
                    redis::from_redis_value_ref::<Vec<u8>>(v),
                )
            {
                map.insert(k, v);
            }
        }
        let payload = Bytes::from(map.remove("payload").unwrap_or_default());
        let message = map.remove("message");
        let text = |k: &str| {
            map.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let time_ms: u64 = text("time_ms").parse().unwrap_or(0);
        let info = DeadLetterInfo {
            event_type: text("type"),
            event_id: Some(text("id")).filter(|s| !s.is_empty()),
            handler: text("handler"),
            attempts: text("attempts").parse().unwrap_or(0),
            error: text("error"),
        };
        let mut dl = DeadLetter::new(
            id,
            text("group"),
            info,
            UNIX_EPOCH + Duration::from_millis(time_ms),
            payload,
        );
        dl.origin = Some(text("origin")).filter(|s| !s.is_empty());
        out.push((dl, message));
    }
    out
}

/// A subscriber that never receives (a global handler's part here).
struct Idle;

impl Subscriber for Idle {
    fn next(&self, _max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(futures::future::pending())
    }
    fn ack<'a>(&'a self, _ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn retry(&self, _id: DeliveryId, _delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn dead_letter<'a>(
        &'a self,
        _delivery: &'a Delivery,
        _info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

struct CelerySubscriber {
    shared: Arc<Shared>,
    transport: CeleryTransport,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    tasks: Vec<String>,
    queues: Vec<String>,
    /// Closed by a stopping worker (else dropped: the process died, as far
    /// as Redis is concerned).
    closed: std::sync::atomic::AtomicBool,
}

impl CelerySubscriber {
    fn leave(&self) {
        let mut slots = self.shared.slots.lock();
        for t in &self.tasks {
            slots.remove(t);
        }
    }
}

impl Drop for CelerySubscriber {
    /// Dropped without `close`: what it holds stays unacknowledged, for a
    /// restore after the visibility timeout (its delivery time is no
    /// longer refreshed), as if the process had died.
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.leave();
        for q in &self.queues {
            drop(self.transport.release_reader(q));
        }
        self.shared
            .inflight
            .lock()
            .retain(|_, f| !self.tasks.contains(&f.task));
    }
}

impl Subscriber for CelerySubscriber {
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let mut rx = self.rx.lock().await;
            let Some(first) = rx.recv().await else {
                return Ok(Vec::new());
            };
            let mut out = vec![first];
            while out.len() < max.max(1) {
                match rx.try_recv() {
                    Ok(d) => out.push(d),
                    Err(_) => break,
                }
            }
            Ok(out)
        })
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let done: Vec<InFlight> = {
                let mut inflight = self.shared.inflight.lock();
                ids.iter().filter_map(|id| inflight.remove(id)).collect()
            };
            if done.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for f in &done {
                let result = self.shared.results.lock().remove(&f.task_id);
                if f.store_result {
                    let meta = self.shared.result_meta(
                        &f.task_id,
                        "SUCCESS",
                        result.unwrap_or(serde_json::Value::Null),
                        None,
                    );
                    self.shared.add_result(&mut pipe, &f.task_id, &meta);
                }
                self.shared.add_ack(&mut pipe, &f.tag);
            }
            self.shared
                .client
                .run_pipe::<()>("Celery ack", &pipe)
                .await
                .map_err(Into::into)
        })
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(f) = self.shared.inflight.lock().remove(&id) else {
                return Ok(());
            };
            self.shared.results.lock().remove(&f.task_id);
            let eta = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            match protocol::for_retry(&f.raw, f.retries.saturating_add(1), eta) {
                Some(message) => {
                    let mut inv = scripts::RETRY.prepare_invoke();
                    inv.key(self.shared.unacked())
                        .key(self.shared.unacked_index())
                        .key(self.shared.key(&f.queue))
                        .arg(&f.tag)
                        .arg(message);
                    self.shared
                        .client
                        .run_script::<i64>("Celery retry script", &inv)
                        .await?;
                    Ok(())
                }
                None => self.shared.restore(&f.tag, true).await,
            }
        })
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        mut info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(f) = self.shared.inflight.lock().remove(&delivery.id) else {
                return Ok(());
            };
            self.shared.results.lock().remove(&f.task_id);
            if info.event_type.is_empty() {
                info.event_type = f.task.clone();
            }
            info.event_id.get_or_insert_with(|| f.task_id.clone());
            let group = self
                .shared
                .slots
                .lock()
                .get(&f.task)
                .map(|s| s.group.clone())
                .unwrap_or_else(|| format!("celery:{}", f.queue));
            if f.store_result {
                let meta = self.shared.result_meta(
                    &f.task_id,
                    "FAILURE",
                    serde_json::json!({"exc_type": "RuntimeError", "exc_message": [info.error.clone()], "exc_module": "builtins"}),
                    Some(info.error.clone()),
                );
                let mut pipe = redis::pipe();
                self.shared.add_result(&mut pipe, &f.task_id, &meta);
                self.shared.client.run_pipe::<()>("SETEX", &pipe).await?;
            }
            self.shared
                .dead_letter_tag(
                    &f.tag,
                    &group,
                    &f.queue,
                    &f.raw,
                    Some(&delivery.payload),
                    &info,
                )
                .await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::SeqCst);
            // The readers first: what they still hand over lands in `rx`,
            // given back below.
            for q in &self.queues {
                self.transport.stop_reader(q).await;
            }
            self.leave();
            // Read ahead but never handed to the handler: back to the queue,
            // next in line.
            let mut rx = self.rx.lock().await;
            rx.close();
            let mut back: Vec<String> = Vec::new();
            while let Ok(d) = rx.try_recv() {
                if let Some(f) = self.shared.inflight.lock().remove(&d.id) {
                    back.push(f.tag);
                }
            }
            // Held for an `eta` that has not come: back too.
            {
                let mut inflight = self.shared.inflight.lock();
                let waiting: Vec<DeliveryId> = inflight
                    .iter()
                    .filter(|(_, f)| f.waiting && self.tasks.contains(&f.task))
                    .map(|(id, _)| *id)
                    .collect();
                for id in waiting {
                    if let Some(f) = inflight.remove(&id) {
                        back.push(f.tag);
                    }
                }
            }
            for tag in back {
                self.shared.restore(&tag, false).await?;
            }
            Ok(())
        })
    }
}
