//! [`Catalog`]: what a service's registry knows, as plain sorted data.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use eventbus::codec::normalize_source;
use eventbus::registry::Registry;
use eventbus::schedule::When;
use eventbus::{Bus, Error, Result};
use eventbus::{DEFAULT_CONCURRENCY, DEFAULT_RETRIES};

use crate::schema::{self, Doc};

/// The value of [`Catalog::format`] this version writes and reads.
pub const FORMAT: &str = "eventbus-catalog/1";

/// The event catalogue of one service: every event type, handler and
/// schedule of its registry, sorted, with schemas and example payloads.
///
/// Build it from the code ([`Catalog::from_registry`], [`Catalog::from_bus`],
/// [`Catalog::global`]), render it ([`to_markdown`](Catalog::to_markdown),
/// [`to_asyncapi_json`](Catalog::to_asyncapi_json),
/// [`to_asyncapi_yaml`](Catalog::to_asyncapi_yaml), [`to_json`](Catalog::to_json)),
/// or read a committed one back ([`Catalog::load`]) to check compatibility
/// with [`compare`](crate::compare). The same code always renders the same
/// bytes: everything is sorted, nothing depends on the clock or on the order
/// in which the linker registered things.
///
/// ```
/// use eventbus_catalog::Catalog;
///
/// /// Triggered when the review is created.
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event)]
/// #[event("review_created")]
/// struct ReviewCreated {
///     /// The review.
///     id: uuid::Uuid,
/// }
///
/// let registry = eventbus::registry::Registry::build(vec![ReviewCreated::info()], vec![], vec![])?;
/// let catalog = Catalog::from_registry(&registry, "reviews");
/// let event = catalog.event("review_created").unwrap();
/// assert_eq!(event.source, "/reviews");
/// assert_eq!(event.sketch(), r#"{"id": uuid}"#);
/// assert!(catalog.to_markdown().contains("Triggered when the review is created."));
/// # use eventbus::Event as _;
/// # Ok::<(), eventbus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Catalog {
    /// What this JSON is: [`FORMAT`].
    pub format: String,
    /// The service name: the default `source` (`/service`) and group prefix.
    pub service: String,
    /// The version written into the AsyncAPI `info` (default `0.0.0`).
    #[serde(default)]
    pub version: String,
    /// Every event type, by type name.
    pub events: Vec<EventDoc>,
    /// Every handler, by group.
    #[serde(default)]
    pub handlers: Vec<HandlerDoc>,
    /// Every recurring schedule, by name.
    #[serde(default)]
    pub schedules: Vec<ScheduleDoc>,
}

/// One event type of a [`Catalog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventDoc {
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The name of the Rust type (without its module path, which is no
    /// concern of other services and changes with every refactoring).
    #[serde(default)]
    pub rust_type: String,
    /// The doc comment of the Rust type.
    #[serde(default)]
    pub description: String,
    /// The CloudEvents `source` this service writes: `#[event(source = ...)]`, or `/service`.
    #[serde(default)]
    pub source: String,
    /// The data field that fills the CloudEvents `subject` (`#[event(subject)]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Deprecated by a note or a replacement.
    #[serde(default)]
    pub deprecated: bool,
    /// The note of `#[event(deprecated = "...")]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_note: Option<String>,
    /// The CloudEvents type of the replacement (`replaced_by = Type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// Whether handlers of the replacement receive this type, converted with
    /// its `From` impl.
    #[serde(default)]
    pub converted_to_replacement: bool,
    /// Old type names that decode as this type.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Set when the type is a Celery task (`#[event("name", celery)]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub celery: Option<TaskDoc>,
    /// Known to be published by this service: a schedule emits it, its
    /// `source` names this service, or [`Catalog::publishes`] said so.
    #[serde(default)]
    pub published: bool,
    /// JSON Schema (2020-12, by schemars) of the `data`.
    #[serde(default)]
    pub schema: Value,
    /// An example `data`, valid against the schema: the schema's own
    /// (`#[schemars(example = ...)]`) if it has one, else built from it.
    #[serde(default)]
    pub example: Value,
}

/// What the catalogue says of a Celery task: where it is queued and how
/// its Rust type takes the task's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskDoc {
    /// The Celery queue (a kombu list on the broker).
    pub queue: String,
    /// How the task's `args`/`kwargs` map to the data: `"one positional
    /// argument"`, `"positional arguments"`, `"keyword arguments (or
    /// positional, in field order)"` or `"no arguments"`.
    pub arguments: String,
    /// Whether the state and result of each run are stored for `AsyncResult`.
    pub stores_result: bool,
}

impl TaskDoc {
    fn new(task: &eventbus::event::TaskInfo, schema: &Value) -> Self {
        let arguments = match schema.get("type").and_then(Value::as_str) {
            Some("array") => "positional arguments",
            Some("object") => "keyword arguments (or positional, in field order)",
            Some("null") => "no arguments",
            _ => "one positional argument",
        };
        Self {
            queue: task.queue.to_owned(),
            arguments: arguments.to_owned(),
            stores_result: task.store_result,
        }
    }

    /// The Python call that sends it, for the docs.
    pub fn send_task(&self, name: &str) -> String {
        let args = match self.arguments.as_str() {
            "no arguments" => String::new(),
            "one positional argument" => ", args=(value,)".to_owned(),
            "positional arguments" => ", args=(...)".to_owned(),
            _ => ", kwargs={...}".to_owned(),
        };
        let queue = if self.queue == "celery" {
            String::new()
        } else {
            format!(", queue=\"{}\"", self.queue)
        };
        format!("app.send_task(\"{name}\"{args}{queue})")
    }
}

/// One handler of a [`Catalog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandlerDoc {
    /// The function name.
    pub name: String,
    /// Its consumer group (queue): `group = "..."`, or `<service>.<name>`.
    pub group: String,
    /// The event type it takes; `None` for a global handler (`#[handler(all)]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Every CloudEvents type it subscribes to: its own type first, then its
    /// aliases and the deprecated types converted to it. Empty for a global handler.
    #[serde(default)]
    pub receives: Vec<String>,
    /// Retries after the first attempt before the event is dead-lettered.
    pub retries: u32,
    /// Events one instance handles at once.
    pub concurrency: u32,
}

/// One recurring schedule of a [`Catalog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduleDoc {
    /// The schedule's name (its function's).
    pub name: String,
    /// When it fires, for people: `every 1h`, `cron 0 9 * * MON (UTC)`,
    /// `cron 0 9 * * MON (Europe/Berlin)`.
    pub when: String,
    /// The interval: `every = "..."`, or [`ScheduleDef::every`](eventbus::ScheduleDef::every)'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The cron expression: `cron = "..."`, evaluated in UTC unless
    /// [`tz`](ScheduleDoc::tz) names another zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone of the cron expression (`tz = "Europe/Berlin"`);
    /// `None` for UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The CloudEvents type it publishes.
    pub event_type: String,
}

impl Catalog {
    /// The catalogue of `registry` for the service `service`.
    pub fn from_registry(registry: &Registry, service: &str) -> Catalog {
        let mut schedules: Vec<ScheduleDoc> = registry
            .schedules()
            .iter()
            .map(|s| {
                let zone = s.when.tz().filter(|tz| *tz != "UTC").map(str::to_owned);
                let (every, cron, when) = match s.when {
                    When::Every(e) => (Some(e.to_owned()), None, format!("every {e}")),
                    When::Interval(_) => {
                        // eventbus's own words for the interval (`every 1h 30m`).
                        let text = s.when.to_string();
                        let every = text.strip_prefix("every ").map(str::to_owned);
                        (every, None, text)
                    }
                    When::Cron(c) | When::CronIn { expr: c, .. } => (
                        None,
                        Some(c.to_owned()),
                        format!("cron {c} ({})", zone.as_deref().unwrap_or("UTC")),
                    ),
                    // A kind of schedule this version does not know: its own words.
                    other => (None, None, other.to_string()),
                };
                ScheduleDoc {
                    name: s.name.to_owned(),
                    when,
                    every,
                    cron,
                    tz: zone,
                    event_type: s.event_type.to_owned(),
                }
            })
            .collect();
        schedules.sort_by(|a, b| a.name.cmp(&b.name));

        let own_source = normalize_source(service).into_owned();
        let mut events: Vec<EventDoc> = registry
            .events()
            .map(|info| {
                let schema = (info.schema)();
                let example = Doc::new(&schema).example(&schema);
                let source = match info.source {
                    Some(s) => normalize_source(s).into_owned(),
                    None => own_source.clone(),
                };
                let description = if info.description.trim().is_empty() {
                    schema::description_of(&schema).unwrap_or_default()
                } else {
                    info.description.trim().to_owned()
                };
                let mut aliases: Vec<String> =
                    info.aliases.iter().map(|a| (*a).to_owned()).collect();
                aliases.sort();
                EventDoc {
                    type_name: info.type_name.to_owned(),
                    rust_type: info
                        .rust_path
                        .rsplit("::")
                        .next()
                        .unwrap_or(info.rust_path)
                        .to_owned(),
                    description,
                    published: info.source.is_some() && source == own_source
                        || schedules.iter().any(|s| s.event_type == info.type_name),
                    source,
                    subject: info.subject_field.map(str::to_owned),
                    deprecated: info.is_deprecated(),
                    deprecation_note: info.deprecated.map(str::to_owned),
                    replaced_by: info.replaced_by.map(str::to_owned),
                    converted_to_replacement: info.replaced_by.is_some() && info.upcast.is_some(),
                    aliases,
                    celery: info.task.as_ref().map(|t| TaskDoc::new(t, &schema)),
                    schema,
                    example,
                }
            })
            .collect();
        events.sort_by(|a, b| a.type_name.cmp(&b.type_name));

        let mut handlers: Vec<HandlerDoc> = registry
            .handlers()
            .map(|h| {
                let meta = h.meta();
                let event_type = h.event_type();
                let receives = match event_type {
                    None => Vec::new(),
                    Some(ty) => {
                        let mut rest: Vec<String> = registry
                            .routes_for(ty)
                            .types
                            .iter()
                            .filter(|t| **t != ty)
                            .map(|t| (*t).to_owned())
                            .collect();
                        rest.sort();
                        rest.dedup();
                        std::iter::once(ty.to_owned()).chain(rest).collect()
                    }
                };
                HandlerDoc {
                    name: meta.name.to_owned(),
                    group: match meta.group {
                        Some(g) => g.to_owned(),
                        None => format!("{service}.{}", meta.name),
                    },
                    event_type: event_type.map(str::to_owned),
                    receives,
                    retries: meta.retries.unwrap_or(DEFAULT_RETRIES),
                    concurrency: meta.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
                }
            })
            .collect();
        handlers.sort_by(|a, b| a.group.cmp(&b.group).then(a.name.cmp(&b.name)));

        Catalog {
            format: FORMAT.to_owned(),
            service: service.to_owned(),
            version: "0.0.0".to_owned(),
            events,
            handlers,
            schedules,
        }
    }

    /// The catalogue of a bus: its registry (including handlers given to
    /// [`BusBuilder::handler`](eventbus::BusBuilder::handler)) and service name.
    pub fn from_bus(bus: &Bus) -> Catalog {
        Catalog::from_registry(bus.registry(), bus.service())
    }

    /// The catalogue of everything registered with the macros in this
    /// binary ([`Registry::global`]), for the service `service`.
    pub fn global(service: &str) -> Result<Catalog> {
        Ok(Catalog::from_registry(Registry::global()?, service))
    }

    /// Sets the version written into the AsyncAPI document.
    pub fn with_version(mut self, version: impl Into<String>) -> Catalog {
        self.version = version.into();
        self
    }

    /// Marks event types as published by this service (AsyncAPI `send`
    /// operations), for those the registry cannot know about.
    pub fn publishes<I, S>(mut self, types: I) -> Catalog
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for ty in types {
            if let Some(e) = self.events.iter_mut().find(|e| e.type_name == ty.as_ref()) {
                e.published = true;
            }
        }
        self
    }

    /// The event of type `type_name`.
    pub fn event(&self, type_name: &str) -> Option<&EventDoc> {
        self.events.iter().find(|e| e.type_name == type_name)
    }

    /// The typed handlers that receive `type_name` (directly, by an alias, or converted).
    pub fn consumers_of<'a>(
        &'a self,
        type_name: &'a str,
    ) -> impl Iterator<Item = &'a HandlerDoc> + 'a {
        self.handlers
            .iter()
            .filter(move |h| h.receives.iter().any(|t| t == type_name))
    }

    /// The global handlers (`#[handler(all)]`): they receive every event.
    pub fn global_handlers(&self) -> impl Iterator<Item = &HandlerDoc> + '_ {
        self.handlers.iter().filter(|h| h.event_type.is_none())
    }

    /// The schedules that publish `type_name`.
    pub fn schedules_of<'a>(
        &'a self,
        type_name: &'a str,
    ) -> impl Iterator<Item = &'a ScheduleDoc> + 'a {
        self.schedules
            .iter()
            .filter(move |s| s.event_type == type_name)
    }

    /// The machine-readable catalogue: pretty JSON, sorted keys, final newline.
    pub fn to_json(&self) -> String {
        schema::pretty(&serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// Reads a catalogue written by [`to_json`](Catalog::to_json).
    pub fn from_json(json: &str) -> Result<Catalog> {
        let catalog: Catalog = serde_json::from_str(json).map_err(|e| {
            Error::Config(format!(
                "not an eventbus catalogue ({FORMAT}): {e}; write one with `<service> docs --format json`"
            ))
        })?;
        if catalog.format != FORMAT {
            return Err(Error::Config(format!(
                "the catalogue is in format `{}`, this eventbus reads `{FORMAT}`; regenerate it with `<service> docs --format json`",
                catalog.format
            )));
        }
        Ok(catalog)
    }

    /// Reads the catalogue JSON file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Catalog> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the catalogue {}: {e}; write it with `<service> docs --format json --output {}`",
                path.display(),
                path.display()
            ))
        })?;
        Catalog::from_json(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

impl EventDoc {
    /// A one-line sketch of the data: `{"id": uuid, "action": "update" | "delete"}`.
    pub fn sketch(&self) -> String {
        Doc::new(&self.schema).sketch(&self.schema, 3)
    }

    /// The example as compact JSON with sorted keys.
    pub fn example_json(&self) -> String {
        serde_json::to_string(&schema::canonical(&self.example)).unwrap_or_default()
    }

    /// "Deprecated, use `x` instead." (and the note), or `None`.
    pub fn deprecation(&self) -> Option<String> {
        if !self.deprecated {
            return None;
        }
        let note = self
            .deprecation_note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        Some(match (&self.replaced_by, note) {
            (Some(new), None) => format!("Deprecated, use `{new}` instead."),
            (Some(new), Some(note)) if only_names_the_replacement(note, new) => {
                format!("Deprecated, use `{new}` instead.")
            }
            (Some(new), Some(note)) => {
                format!(
                    "Deprecated, use `{new}` instead. {}",
                    schema::sentence(&capitalize(note))
                )
            }
            (None, Some(note)) => format!("Deprecated: {}", schema::sentence(note)),
            (None, None) => "Deprecated.".to_owned(),
        })
    }
}

/// True when a deprecation note says no more than "use X (instead)" for the
/// replacement X, however it is written (`Use X instead.`, "use `X`",
/// "replaced by X"): the generated sentence already says it.
fn only_names_the_replacement(note: &str, new: &str) -> bool {
    let note = note.replace('`', "").to_lowercase();
    let note = note.trim().trim_end_matches(['.', '!']).trim();
    let note = note.strip_suffix("instead").unwrap_or(note).trim();
    let new = new.to_lowercase();
    ["use", "replaced by", "superseded by", "see"]
        .iter()
        .any(|verb| note.strip_prefix(verb).map(str::trim) == Some(new.as_str()))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod deprecation_tests {
    use super::only_names_the_replacement;

    #[test]
    fn a_note_that_only_names_the_replacement_is_not_repeated() {
        for note in [
            "use moderate_action",
            "Use moderate_action instead.",
            "use `moderate_action` instead",
            "Replaced by moderate_action.",
            "  USE moderate_action!  ",
        ] {
            assert!(
                only_names_the_replacement(note, "moderate_action"),
                "{note:?}"
            );
        }
        for note in [
            "use moderate_action with status 1",
            "use review_changed",
            "removed in 2027",
        ] {
            assert!(
                !only_names_the_replacement(note, "moderate_action"),
                "{note:?}"
            );
        }
    }
}
