//! The compile-time registry of events, handlers and schedules.
//!
//! `#[derive(Event)]`, `#[handler]` and `#[schedule]` submit const data to
//! [`inventory`]; [`Registry`] reads it once, sorts it, and checks it. A
//! handler that lives in a crate the binary never names can be dropped by the
//! linker: name such a crate with `use my_handlers as _;`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::event::{EventInfo, Upcast};
use crate::handler::HandlerDef;
use crate::schedule::ScheduleDef;

pub(crate) use registration::{EventRegistration, HandlerRegistration, ScheduleRegistration};

/// What the macros submit; reachable from outside only as
/// `eventbus::__private::*Registration`.
pub(crate) mod registration {
    use super::{EventInfo, HandlerDef, ScheduleDef};

    /// An event type, submitted by `#[derive(Event)]`.
    #[derive(Debug)]
    pub struct EventRegistration(pub &'static EventInfo);

    /// A handler, submitted by `#[handler]`.
    #[derive(Debug)]
    pub struct HandlerRegistration(pub fn() -> HandlerDef);

    /// A recurring schedule, submitted by `#[schedule]`.
    #[derive(Debug)]
    pub struct ScheduleRegistration(pub fn() -> ScheduleDef);
}

inventory::collect!(EventRegistration);
inventory::collect!(HandlerRegistration);
inventory::collect!(ScheduleRegistration);

/// The events, handlers and schedules of a binary, checked for consistency.
#[derive(Debug)]
pub struct Registry {
    events: BTreeMap<&'static str, &'static EventInfo>,
    aliases: BTreeMap<&'static str, &'static str>,
    handlers: Vec<Arc<HandlerDef>>,
    schedules: Vec<ScheduleDef>,
}

impl Registry {
    /// Everything registered in this binary with the macros, checked.
    ///
    /// Read once, then cached; fails with every problem found, one per line.
    pub fn global() -> Result<&'static Registry> {
        static GLOBAL: OnceLock<std::result::Result<Registry, Vec<String>>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let events = inventory::iter::<EventRegistration>()
                    .map(|r| r.0)
                    .collect();
                let handlers = inventory::iter::<HandlerRegistration>()
                    .map(|r| (r.0)())
                    .collect();
                let schedules = inventory::iter::<ScheduleRegistration>()
                    .map(|r| (r.0)())
                    .collect();
                Registry::build(events, handlers, schedules).map_err(|e| match e {
                    Error::Registry(problems) => problems,
                    other => vec![other.to_string()],
                })
            })
            .as_ref()
            .map_err(|problems| Error::Registry(problems.clone()))
    }

    /// Builds and checks a registry from explicit parts.
    pub fn build(
        events: Vec<&'static EventInfo>,
        handlers: Vec<HandlerDef>,
        schedules: Vec<ScheduleDef>,
    ) -> Result<Registry> {
        let mut problems = Vec::new();
        let mut by_type: BTreeMap<&'static str, &'static EventInfo> = BTreeMap::new();
        let mut sorted = events;
        sorted.sort_by_key(|i| (i.type_name, i.rust_path));
        sorted.dedup_by(|a, b| std::ptr::eq(*a, *b));
        for info in sorted {
            if let Some(prev) = by_type.get(info.type_name) {
                problems.push(format!(
                    "event type `{}` is defined twice: by `{}` and by `{}`; give one of them another name in #[event(\"...\")]",
                    info.type_name, prev.rust_path, info.rust_path
                ));
                continue;
            }
            by_type.insert(info.type_name, info);
        }
        let mut aliases: BTreeMap<&'static str, &'static str> = BTreeMap::new();
        for info in by_type.values() {
            for alias in info.aliases {
                if let Some(owner) = by_type.get(alias) {
                    problems.push(format!(
                        "`{}` declares the alias `{alias}`, but `{alias}` is also the type of `{}`; remove the alias, or make `{}` `replaced_by` `{}`",
                        info.rust_path, owner.rust_path, owner.rust_path, info.rust_path
                    ));
                } else if let Some(prev) = aliases.insert(alias, info.type_name) {
                    problems.push(format!(
                        "the alias `{alias}` is claimed by both `{prev}` and `{}`; an old name can decode as only one type",
                        info.type_name
                    ));
                }
            }
            if let Some(new) = info.replaced_by {
                match by_type.get(new) {
                    None => problems.push(format!(
                        "`{}` is `replaced_by` the event type `{new}`, which is not registered in this binary",
                        info.rust_path
                    )),
                    Some(target) if target.type_name == info.type_name => problems.push(format!(
                        "`{}` is `replaced_by` itself",
                        info.rust_path
                    )),
                    Some(_) => {}
                }
            }
        }

        let mut handlers: Vec<HandlerDef> = handlers;
        handlers.sort_by_key(|h| (h.meta.module_path, h.meta.name, h.meta.group));
        let mut groups: BTreeMap<String, String> = BTreeMap::new();
        for h in &handlers {
            if let Some(ty) = h.event_type()
                && !by_type.contains_key(ty)
            {
                problems.push(format!(
                    "handler `{}` takes the event type `{ty}`, which is not registered; is its crate linked (`use the_crate as _;`)?",
                    handler_path(h)
                ));
            }
            if let Some(group) = h.meta.group
                && let Some(prev) = groups.insert(group.to_owned(), handler_path(h))
            {
                problems.push(format!(
                    "handlers `{prev}` and `{}` both use the group `{group}`; a group is one handler's queue, give each its own",
                    handler_path(h)
                ));
            }
        }
        let mut names: BTreeMap<&str, &str> = BTreeMap::new();
        for h in &handlers {
            if h.meta.group.is_none()
                && let Some(prev) = names.insert(h.meta.name, h.meta.module_path)
            {
                problems.push(format!(
                    "two handlers are named `{}` (in `{prev}` and `{}`), so both would get the group `<service>.{}`; set `group = \"...\"` on one",
                    h.meta.name, h.meta.module_path, h.meta.name
                ));
            }
        }

        let mut schedules = schedules;
        schedules.sort_by_key(|s| (s.name, s.module_path));
        for pair in schedules.windows(2) {
            if pair[0].name == pair[1].name {
                problems.push(format!(
                    "two schedules are named `{}` (in `{}` and `{}`); ticks are claimed by name, rename one",
                    pair[0].name, pair[0].module_path, pair[1].module_path
                ));
            }
        }
        for s in &schedules {
            if let Err(e) = s.next_tick(std::time::SystemTime::now()) {
                problems.push(e.to_string());
            }
        }

        if problems.is_empty() {
            Ok(Registry {
                events: by_type,
                aliases,
                handlers: handlers.into_iter().map(Arc::new).collect(),
                schedules,
            })
        } else {
            Err(Error::Registry(problems))
        }
    }

    /// Every event type, sorted by type name.
    pub fn events(&self) -> impl Iterator<Item = &'static EventInfo> + '_ {
        self.events.values().copied()
    }

    /// The event registered under `type_name` (aliases resolve to their new type).
    pub fn event(&self, type_name: &str) -> Option<&'static EventInfo> {
        self.events
            .get(type_name)
            .or_else(|| self.aliases.get(type_name).and_then(|t| self.events.get(t)))
            .copied()
    }

    /// Every handler registered with `#[handler]`, sorted by module and name.
    pub fn handlers(&self) -> impl Iterator<Item = &HandlerDef> + '_ {
        self.handlers.iter().map(|h| &**h)
    }

    pub(crate) fn handler_arcs(&self) -> &[Arc<HandlerDef>] {
        &self.handlers
    }

    /// Every recurring schedule, sorted by name.
    pub fn schedules(&self) -> &[ScheduleDef] {
        &self.schedules
    }

    /// The CloudEvents types a handler of `event_type` receives: the type, its
    /// aliases, and every old type `replaced_by` it (with the conversion).
    pub fn routes_for(&self, event_type: &'static str) -> Routes {
        let mut types = vec![event_type];
        let mut upcasts = Vec::new();
        if let Some(info) = self.events.get(event_type) {
            types.extend(info.aliases.iter().copied());
        }
        for info in self.events.values() {
            if info.replaced_by == Some(event_type)
                && let Some(up) = info.upcast
            {
                types.push(info.type_name);
                upcasts.push((info.type_name, up));
            }
        }
        Routes { types, upcasts }
    }
}

/// Which types a typed handler subscribes to, and how old ones convert.
#[derive(Debug, Clone)]
pub struct Routes {
    /// The CloudEvents types to subscribe to.
    pub types: Vec<&'static str>,
    /// Old types and their conversion into the handler's type.
    pub(crate) upcasts: Vec<(&'static str, Upcast)>,
}

fn handler_path(h: &HandlerDef) -> String {
    if h.meta.module_path.is_empty() {
        h.meta.name.to_owned()
    } else {
        format!("{}::{}", h.meta.module_path, h.meta.name)
    }
}
