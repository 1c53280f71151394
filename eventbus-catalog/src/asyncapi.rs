//! The catalogue as an AsyncAPI 3.0 document.
//!
//! One channel per event type (its address is the CloudEvents `type`), one
//! message per channel whose `headers` are the CloudEvents attributes and
//! whose `payload` is the `data` schema, `receive` operations for the
//! handlers (one per type a handler subscribes to) and `send` operations for
//! what the service is known to publish. The schemars `$defs` are hoisted into
//! `components.schemas` so that every `$ref` resolves inside the document.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::catalog::{Catalog, EventDoc};
use crate::schema::{self, example_uuid};

pub(crate) const VERSION: &str = "3.0.0";

pub(crate) fn document(c: &Catalog) -> Value {
    let mut ids = Ids::default();
    let channel_ids: BTreeMap<&str, String> = c
        .events
        .iter()
        .map(|e| (e.type_name.as_str(), ids.unique("channel", &e.type_name)))
        .collect();
    let mut schemas = Schemas::default();
    let mut channels = Map::new();
    let mut messages = Map::new();

    for e in &c.events {
        let id = &channel_ids[e.type_name.as_str()];
        let payload = schemas.hoist(e, &mut ids);
        messages.insert(id.clone(), message(c, e, payload));
        let mut channel = Map::new();
        channel.insert("address".into(), json!(e.type_name));
        channel.insert("title".into(), json!(e.rust_type));
        channel.insert("description".into(), json!(description(e)));
        channel.insert(
            "messages".into(),
            json!({ id.clone(): { "$ref": format!("#/components/messages/{id}") } }),
        );
        channels.insert(id.clone(), Value::Object(channel));
    }

    let mut operations = Map::new();
    let channel_ref = |ty: &str| -> Option<(Value, Value)> {
        let id = channel_ids.get(ty)?;
        Some((
            json!({ "$ref": format!("#/channels/{id}") }),
            json!([{ "$ref": format!("#/channels/{id}/messages/{id}") }]),
        ))
    };
    for h in &c.handlers {
        let Some(own) = h.event_type.as_deref() else {
            continue;
        };
        let own_aliases: Vec<&String> = c
            .event(own)
            .map(|e| e.aliases.iter().collect())
            .unwrap_or_default();
        for ty in &h.receives {
            let Some((channel, msgs)) = channel_ref(ty) else {
                continue;
            };
            let key = if ty == own {
                ids.unique("operation", &h.group)
            } else {
                ids.unique("operation", &format!("{}.{ty}", h.group))
            };
            let mut op = Map::new();
            op.insert("action".into(), json!("receive"));
            op.insert("channel".into(), channel);
            op.insert("messages".into(), msgs);
            op.insert("title".into(), json!(h.name));
            let summary = if ty == own {
                format!(
                    "`{}` handles `{ty}` in the consumer group `{}`.",
                    h.name, h.group
                )
            } else {
                format!(
                    "`{}` handles the deprecated `{ty}`, converted to `{own}`, in the consumer group `{}`.",
                    h.name, h.group
                )
            };
            op.insert("summary".into(), json!(summary));
            op.insert("x-eventbus-group".into(), json!(h.group));
            op.insert("x-eventbus-retries".into(), json!(h.retries));
            op.insert("x-eventbus-concurrency".into(), json!(h.concurrency));
            if ty == own && !own_aliases.is_empty() {
                op.insert("x-eventbus-also-receives".into(), json!(own_aliases));
            }
            if ty != own {
                op.insert("x-eventbus-converted-to".into(), json!(own));
            }
            operations.insert(key, Value::Object(op));
        }
    }
    for e in c.events.iter().filter(|e| e.published) {
        let Some((channel, msgs)) = channel_ref(&e.type_name) else {
            continue;
        };
        let key = ids.unique("operation", &format!("publish.{}", e.type_name));
        let mut op = Map::new();
        op.insert("action".into(), json!("send"));
        op.insert("channel".into(), channel);
        op.insert("messages".into(), msgs);
        op.insert(
            "summary".into(),
            json!(format!("`{}` publishes `{}`.", c.service, e.type_name)),
        );
        let schedules: Vec<Value> = c
            .schedules_of(&e.type_name)
            .map(|s| {
                let mut m = Map::new();
                m.insert("name".into(), json!(s.name));
                m.insert("when".into(), json!(s.when));
                if let Some(every) = &s.every {
                    m.insert("every".into(), json!(every));
                }
                if let Some(cron) = &s.cron {
                    m.insert("cron".into(), json!(cron));
                }
                if let Some(tz) = &s.tz {
                    m.insert("tz".into(), json!(tz));
                }
                Value::Object(m)
            })
            .collect();
        if !schedules.is_empty() {
            op.insert("x-eventbus-schedules".into(), Value::Array(schedules));
        }
        operations.insert(key, Value::Object(op));
    }

    let mut doc = Map::new();
    doc.insert("asyncapi".into(), json!(VERSION));
    doc.insert(
        "id".into(),
        json!(format!("urn:eventbus:{}", ident(&c.service))),
    );
    doc.insert(
        "info".into(),
        json!({
            "title": format!("{} events", c.service),
            "version": c.version,
            "description": format!(
                "The events of the `{}` service, generated by eventbus from its code. Every message is a \
                 CloudEvents 1.0 event in structured JSON mode: the message `headers` are its context \
                 attributes, the `payload` is its `data`. A channel's address is the CloudEvents `type`.",
                c.service
            ),
        }),
    );
    doc.insert("defaultContentType".into(), json!("application/json"));
    doc.insert("channels".into(), Value::Object(channels));
    doc.insert("operations".into(), Value::Object(operations));
    doc.insert(
        "components".into(),
        json!({ "messages": Value::Object(messages), "schemas": Value::Object(schemas.map) }),
    );
    let globals: Vec<Value> = c
        .global_handlers()
        .map(|h| {
            json!({
                "name": h.name,
                "group": h.group,
                "retries": h.retries,
                "concurrency": h.concurrency,
            })
        })
        .collect();
    if !globals.is_empty() {
        doc.insert("x-eventbus-global-handlers".into(), Value::Array(globals));
    }
    schema::canonical(&Value::Object(doc))
}

fn description(e: &EventDoc) -> String {
    let mut text = e.description.clone();
    if let Some(dep) = e.deprecation() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&dep);
    }
    if !e.aliases.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let names: Vec<String> = e.aliases.iter().map(|a| format!("`{a}`")).collect();
        text.push_str(&format!(
            "Also accepted under the old type name(s) {}.",
            names.join(", ")
        ));
    }
    text
}

fn message(c: &Catalog, e: &EventDoc, payload: Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(e.type_name));
    m.insert("title".into(), json!(e.rust_type));
    let summary = e.description.split("\n\n").next().unwrap_or("").trim();
    if !summary.is_empty() {
        m.insert("summary".into(), json!(summary));
    }
    let text = description(e);
    if !text.is_empty() {
        m.insert("description".into(), json!(text));
    }
    m.insert("contentType".into(), json!("application/json"));
    m.insert("headers".into(), headers(c, e));
    m.insert("payload".into(), payload);
    m.insert(
        "examples".into(),
        json!([{
            "name": format!("{}_example", e.type_name),
            "summary": format!("A `{}` event.", e.type_name),
            "headers": example_headers(e),
            "payload": e.example,
        }]),
    );
    if e.deprecated {
        m.insert("deprecated".into(), json!(true));
    }
    if let Some(new) = &e.replaced_by {
        m.insert("x-eventbus-replaced-by".into(), json!(new));
    }
    if !e.aliases.is_empty() {
        m.insert("x-eventbus-aliases".into(), json!(e.aliases));
    }
    if let Some(task) = &e.celery {
        m.insert(
            "x-eventbus-celery".into(),
            json!({"task": e.type_name, "queue": task.queue, "arguments": task.arguments, "storesResult": task.stores_result}),
        );
    }
    Value::Object(m)
}

/// The CloudEvents context attributes, as the message headers.
fn headers(c: &Catalog, e: &EventDoc) -> Value {
    let mut types = vec![json!(e.type_name)];
    types.extend(e.aliases.iter().map(|a| json!(a)));
    let mut props = Map::new();
    props.insert(
        "specversion".into(),
        json!({"type": "string", "const": "1.0", "description": "The CloudEvents spec version."}),
    );
    props.insert(
        "id".into(),
        json!({"type": "string", "minLength": 1, "description": "Unique per event; eventbus writes a UUIDv7."}),
    );
    let type_schema = if e.aliases.is_empty() {
        json!({"type": "string", "const": e.type_name, "description": "The event type."})
    } else {
        json!({"type": "string", "enum": types, "description": "The event type, or one of its old names."})
    };
    props.insert("type".into(), type_schema);
    props.insert(
        "source".into(),
        json!({
            "type": "string",
            "format": "uri-reference",
            "minLength": 1,
            "description": format!("The producer; `{}` when `{}` publishes it.", e.source, c.service),
            "examples": [e.source],
        }),
    );
    props.insert(
        "time".into(),
        json!({"type": "string", "format": "date-time", "description": "When the event was published."}),
    );
    props.insert(
        "datacontenttype".into(),
        json!({"type": "string", "const": "application/json"}),
    );
    let mut required = vec!["specversion", "id", "type", "source"];
    if let Some(field) = &e.subject {
        props.insert(
            "subject".into(),
            json!({"type": "string", "description": format!("The `{field}` field of the data.")}),
        );
        required.push("subject");
    }
    json!({
        "type": "object",
        "description": "CloudEvents 1.0 context attributes (top-level members of the structured-mode JSON event).",
        "properties": props,
        "required": required,
    })
}

fn example_headers(e: &EventDoc) -> Value {
    let mut h = Map::new();
    h.insert("specversion".into(), json!("1.0"));
    h.insert(
        "id".into(),
        json!(example_uuid(&format!("event:{}", e.type_name))),
    );
    h.insert("type".into(), json!(e.type_name));
    h.insert("source".into(), json!(e.source));
    h.insert("time".into(), json!("2024-05-01T12:00:00Z"));
    h.insert("datacontenttype".into(), json!("application/json"));
    if let Some(field) = &e.subject {
        let subject = match e.example.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        h.insert("subject".into(), json!(subject));
    }
    Value::Object(h)
}

/// `components.schemas`, filled with each event's payload schema and `$defs`.
#[derive(Default)]
struct Schemas {
    map: Map<String, Value>,
}

impl Schemas {
    /// Moves the event's schema and its `$defs` into `components.schemas`
    /// (sharing identical definitions, renaming clashing ones) and returns
    /// the `$ref` to its payload.
    fn hoist(&mut self, e: &EventDoc, ids: &mut Ids) -> Value {
        let mut root = e.schema.clone();
        let mut defs = Map::new();
        if let Value::Object(obj) = &mut root {
            obj.remove("$schema");
            for key in ["$defs", "definitions"] {
                if let Some(Value::Object(d)) = obj.remove(key) {
                    defs.extend(d);
                }
            }
        }
        let payload_name = ids.unique("schema", &e.rust_type);
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut def_names: Vec<&String> = defs.keys().collect();
        def_names.sort();
        for name in def_names {
            let base = ident(name);
            let identity: BTreeMap<String, String> = defs
                .keys()
                .map(|k| (k.clone(), names.get(k).cloned().unwrap_or_else(|| ident(k))))
                .collect();
            let candidate = rewrite(&defs[name], &identity, &payload_name);
            let mut chosen = base.clone();
            let mut n = 2;
            while self.map.get(&chosen).is_some_and(|v| *v != candidate) || (chosen == payload_name)
            {
                chosen = format!("{base}_{n}");
                n += 1;
            }
            names.insert(name.clone(), chosen);
        }
        for (name, def) in &defs {
            let target = names[name].clone();
            let def = rewrite(def, &names, &payload_name);
            ids.taken.insert(format!("schema:{target}"));
            self.map.entry(target).or_insert(def);
        }
        let mut root = rewrite(&root, &names, &payload_name);
        if let (Value::Object(obj), true) = (&mut root, e.deprecated) {
            obj.insert("deprecated".into(), json!(true));
            if let Some(new) = &e.replaced_by {
                obj.insert("x-eventbus-replaced-by".into(), json!(new));
            }
        }
        self.map.insert(payload_name.clone(), root);
        json!({ "$ref": format!("#/components/schemas/{payload_name}") })
    }
}

/// `schema` with its `$ref`s pointing into `components.schemas`.
fn rewrite(schema: &Value, names: &BTreeMap<String, String>, root_name: &str) -> Value {
    match schema {
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                if k == "$ref"
                    && let Some(r) = v.as_str()
                {
                    out.insert(k.clone(), json!(rewrite_ref(r, names, root_name)));
                    continue;
                }
                out.insert(k.clone(), rewrite(v, names, root_name));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| rewrite(v, names, root_name)).collect())
        }
        other => other.clone(),
    }
}

fn rewrite_ref(r: &str, names: &BTreeMap<String, String>, root_name: &str) -> String {
    if r == "#" {
        return format!("#/components/schemas/{root_name}");
    }
    for prefix in ["#/$defs/", "#/definitions/"] {
        if let Some(name) = r.strip_prefix(prefix) {
            let name = name.replace("~1", "/").replace("~0", "~");
            if let Some(target) = names.get(&name) {
                return format!("#/components/schemas/{target}");
            }
        }
    }
    r.to_owned()
}

/// Unique component keys per kind.
#[derive(Default)]
struct Ids {
    taken: BTreeSet<String>,
}

impl Ids {
    fn unique(&mut self, kind: &str, name: &str) -> String {
        let base = ident(name);
        let mut id = base.clone();
        let mut n = 2;
        while !self.taken.insert(format!("{kind}:{id}")) {
            id = format!("{base}_{n}");
            n += 1;
        }
        id
    }
}

/// A component key: `[A-Za-z0-9._-]`, anything else becomes `_`.
fn ident(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".to_owned() } else { s }
}
