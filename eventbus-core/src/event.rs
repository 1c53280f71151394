//! The [`Event`] trait: a Rust type that travels as a CloudEvents 1.0 message.

use std::any::Any;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::DecodeError;

/// A typed event: a Rust type with a fixed CloudEvents `type`.
///
/// Implement it with `#[derive(Event)]` and `#[event("type_name")]`; the
/// derive also fills [`EventInfo`] from the attribute and the doc comments.
/// The derive lives in `eventbus`, whose README compiles an example like
/// this one:
///
/// ```ignore
/// use eventbus::Event;
/// use serde::{Deserialize, Serialize};
///
/// /// Triggered when the review is created.
/// #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
/// #[event("doc.review_created", source = "reviews")]
/// pub struct ReviewCreated {
///     #[event(subject)]
///     pub id: uuid::Uuid,
/// }
///
/// assert_eq!(ReviewCreated::TYPE, "doc.review_created");
/// assert_eq!(ReviewCreated::info().description, "Triggered when the review is created.");
/// ```
pub trait Event:
    Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
    /// The CloudEvents `type` attribute, e.g. `"review_created"`.
    const TYPE: &'static str;

    /// Everything the registry and the catalogue know about this type.
    fn info() -> &'static EventInfo;

    /// The CloudEvents `subject`, taken from the field marked `#[event(subject)]`.
    fn subject(&self) -> Option<impl fmt::Display + '_> {
        None::<&str>
    }
}

/// Static description of an event type, produced by `#[derive(Event)]`.
///
/// Registrations are const data (`&'static str` and fn pointers) so that
/// they can live in the binary's inventory without running any code.
#[non_exhaustive]
pub struct EventInfo {
    /// The CloudEvents `type`.
    pub type_name: &'static str,
    /// The Rust path of the type (`my_crate::events::ReviewCreated`).
    pub rust_path: &'static str,
    /// The `source` given in `#[event(source = "...")]`; the bus's service name otherwise.
    pub source: Option<&'static str>,
    /// The doc comment of the type.
    pub description: &'static str,
    /// The deprecation note given in `#[event(deprecated = "...")]`.
    pub deprecated: Option<&'static str>,
    /// The CloudEvents `type` of the replacement named in `replaced_by = Type`.
    pub replaced_by: Option<&'static str>,
    /// Old type names that decode as this type.
    pub aliases: &'static [&'static str],
    /// The name of the field marked `#[event(subject)]`.
    pub subject_field: Option<&'static str>,
    /// JSON Schema of the `data` of this event.
    pub schema: fn() -> serde_json::Value,
    /// Decodes the `data` of this event and converts it into its replacement
    /// (the `From<Self>` impl of the `replaced_by` type), boxed as `Any`.
    pub upcast: Option<Upcast>,
    /// Set when the event is a Celery task (`#[event("send_email_task", celery)]`):
    /// the queue its messages go to, and whether its result is stored.
    pub task: Option<TaskInfo>,
}

/// What `#[event("name", celery, queue = "...", result)]` says of a Celery
/// task: an event type whose messages travel as Celery (protocol 2) task
/// messages in a kombu queue, when the bus runs on Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The Celery queue (`celery` unless `queue = "..."` names another).
    pub queue: &'static str,
    /// Whether the state and result of each run is written where Celery's
    /// Redis result backend keeps them (`celery-task-meta-<id>`).
    pub store_result: bool,
}

impl TaskInfo {
    /// Celery's default queue name.
    pub const DEFAULT_QUEUE: &'static str = "celery";

    #[doc(hidden)]
    pub const fn __new(queue: Option<&'static str>, store_result: bool) -> Self {
        Self {
            queue: match queue {
                Some(q) => q,
                None => Self::DEFAULT_QUEUE,
            },
            store_result,
        }
    }
}

/// Decodes JSON `data` of an old type and converts it to its replacement.
pub type Upcast = fn(&serde_json::value::RawValue) -> Result<Box<dyn Any + Send>, DecodeError>;

impl EventInfo {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn __new(
        type_name: &'static str,
        rust_path: &'static str,
        source: Option<&'static str>,
        description: &'static str,
        deprecated: Option<&'static str>,
        replaced_by: Option<&'static str>,
        aliases: &'static [&'static str],
        subject_field: Option<&'static str>,
        schema: fn() -> serde_json::Value,
        upcast: Option<Upcast>,
    ) -> Self {
        Self {
            type_name,
            rust_path,
            source,
            description,
            deprecated,
            replaced_by,
            aliases,
            subject_field,
            schema,
            upcast,
            task: None,
        }
    }

    #[doc(hidden)]
    pub const fn __with_task(mut self, task: TaskInfo) -> Self {
        self.task = Some(task);
        self
    }

    /// Whether the type is deprecated (by a note or a replacement).
    pub fn is_deprecated(&self) -> bool {
        self.deprecated.is_some() || self.replaced_by.is_some()
    }
}

impl fmt::Debug for EventInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventInfo")
            .field("type_name", &self.type_name)
            .field("rust_path", &self.rust_path)
            .field("source", &self.source)
            .field("deprecated", &self.deprecated)
            .field("replaced_by", &self.replaced_by)
            .field("aliases", &self.aliases)
            .field("subject_field", &self.subject_field)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// The JSON Schema of `T`, as JSON.
#[doc(hidden)]
pub fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(serde_json::Value::Null)
}

/// Decodes `Old`, converts it with `From<Old> for New`, boxes the result.
#[doc(hidden)]
pub fn upcast<Old, New>(
    raw: &serde_json::value::RawValue,
) -> Result<Box<dyn Any + Send>, DecodeError>
where
    Old: Event,
    New: Event + From<Old>,
{
    let old: Old = crate::codec::decode_data(Old::TYPE, raw)?;
    Ok(Box::new(New::from(old)))
}
