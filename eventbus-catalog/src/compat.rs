//! The compatibility check: the current catalogue against a committed one.
//!
//! Events cross service boundaries, and the services are deployed one at a
//! time: old and new producers and consumers meet for a while. A change is
//! compatible when old messages still decode in new consumers and new
//! messages still decode in old ones, with one allowance that event schemas
//! always make: new enum variants are additive.
//!
//! Breaking: an event type removed without being deprecated first (or kept as
//! an alias), an alias removed, a field removed, a field retyped (type,
//! format, or a narrower set of values), a new required field, a field that
//! became required, optional or nullable, `null` no longer accepted, an enum
//! variant removed. Compatible: new event types, new optional fields, new
//! enum variants, deprecations, removing a deprecated event type.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::catalog::{Catalog, EventDoc};
use crate::schema::{self, Doc};

/// What changed between two catalogues, breaking or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// Breaking: an event type is gone and was not deprecated (nor kept as an alias).
    EventRemoved,
    /// Breaking: an old type name no longer decodes.
    AliasRemoved,
    /// Breaking: a field is gone.
    FieldRemoved,
    /// Breaking: a field has another type or format, or accepts fewer values.
    FieldRetyped,
    /// Breaking: a new field that old producers do not send is required.
    RequiredFieldAdded,
    /// Breaking: an optional field became required.
    FieldMadeRequired,
    /// Breaking: a required field became optional; old consumers expect it.
    FieldMadeOptional,
    /// Breaking: a field now accepts `null`; old consumers do not.
    NullAdded,
    /// Breaking: a field no longer accepts `null`; old producers send it.
    NullRemoved,
    /// Breaking: an enum variant (or value) is gone.
    EnumVariantRemoved,
    /// Compatible: a new event type.
    EventAdded,
    /// Compatible: an event type is now deprecated.
    EventDeprecated,
    /// Compatible: a deprecated event type was removed.
    DeprecatedEventRemoved,
    /// Compatible: an event type became an alias of another one.
    EventRenamed,
    /// Compatible: a new old name.
    AliasAdded,
    /// Compatible: a new optional field.
    FieldAdded,
    /// Compatible: a new enum variant.
    EnumVariantAdded,
}

impl ChangeKind {
    /// Whether old and new services can no longer exchange this event.
    pub fn is_breaking(self) -> bool {
        matches!(
            self,
            ChangeKind::EventRemoved
                | ChangeKind::AliasRemoved
                | ChangeKind::FieldRemoved
                | ChangeKind::FieldRetyped
                | ChangeKind::RequiredFieldAdded
                | ChangeKind::FieldMadeRequired
                | ChangeKind::FieldMadeOptional
                | ChangeKind::NullAdded
                | ChangeKind::NullRemoved
                | ChangeKind::EnumVariantRemoved
        )
    }
}

/// One difference between two catalogues.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// What kind of change.
    pub kind: ChangeKind,
    /// The event type it concerns (as the committed catalogue names it).
    pub event_type: String,
    /// The field, as a path in the data (`data.id`, `items[]`); empty for the event itself.
    pub field: String,
    /// What changed, in a sentence.
    pub message: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.event_type, self.message)
    }
}

/// The result of [`compare`]: every change, breaking ones first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compatibility {
    /// Every change found, breaking ones first, then by event type and field.
    pub changes: Vec<Change>,
}

impl Compatibility {
    /// The breaking changes.
    pub fn breaking(&self) -> impl Iterator<Item = &Change> + '_ {
        self.changes.iter().filter(|c| c.kind.is_breaking())
    }

    /// The compatible changes.
    pub fn compatible(&self) -> impl Iterator<Item = &Change> + '_ {
        self.changes.iter().filter(|c| !c.kind.is_breaking())
    }

    /// No breaking change.
    pub fn is_compatible(&self) -> bool {
        self.breaking().next().is_none()
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breaking: Vec<&Change> = self.breaking().collect();
        let compatible: Vec<&Change> = self.compatible().collect();
        if breaking.is_empty() {
            writeln!(f, "no breaking change")?;
        } else {
            writeln!(
                f,
                "{} breaking change{}:",
                breaking.len(),
                if breaking.len() == 1 { "" } else { "s" }
            )?;
            for c in &breaking {
                writeln!(f, "  - {c}")?;
            }
        }
        if !compatible.is_empty() {
            writeln!(f, "compatible changes:")?;
            for c in &compatible {
                writeln!(f, "  - {c}")?;
            }
        }
        Ok(())
    }
}

/// Compares the `current` catalogue with the `committed` one.
pub fn compare(committed: &Catalog, current: &Catalog) -> Compatibility {
    let mut out = Vec::new();
    let new_by_type: BTreeMap<&str, &EventDoc> = current
        .events
        .iter()
        .map(|e| (e.type_name.as_str(), e))
        .collect();
    let new_aliases: BTreeMap<&str, &EventDoc> = current
        .events
        .iter()
        .flat_map(|e| e.aliases.iter().map(move |a| (a.as_str(), e)))
        .collect();
    let old_types: BTreeSet<&str> = committed
        .events
        .iter()
        .map(|e| e.type_name.as_str())
        .collect();
    let old_aliases: BTreeSet<&str> = committed
        .events
        .iter()
        .flat_map(|e| e.aliases.iter().map(String::as_str))
        .collect();

    for old in &committed.events {
        let ty = old.type_name.as_str();
        let push = |out: &mut Vec<Change>, kind, message: String| {
            out.push(Change {
                kind,
                event_type: ty.to_owned(),
                field: String::new(),
                message,
            })
        };
        let new = match (new_by_type.get(ty), new_aliases.get(ty)) {
            (Some(new), _) => {
                if !old.deprecated && new.deprecated {
                    push(&mut out, ChangeKind::EventDeprecated, "deprecated".into());
                }
                *new
            }
            (None, Some(owner)) => {
                push(
                    &mut out,
                    ChangeKind::EventRenamed,
                    format!("renamed: now an alias of `{}`", owner.type_name),
                );
                *owner
            }
            (None, None) if old.deprecated => {
                push(
                    &mut out,
                    ChangeKind::DeprecatedEventRemoved,
                    "removed after its deprecation".into(),
                );
                continue;
            }
            (None, None) => {
                push(
                    &mut out,
                    ChangeKind::EventRemoved,
                    "event type removed without deprecation; deprecate it first \
                     (`#[event(\"...\", deprecated = \"...\")]`) and remove it once nobody publishes or consumes it, \
                     or keep the name as an alias of its successor (`aliases = [\"...\"]`)"
                        .into(),
                );
                continue;
            }
        };
        for alias in &old.aliases {
            if !new_by_type.contains_key(alias.as_str())
                && !new_aliases.contains_key(alias.as_str())
            {
                push(
                    &mut out,
                    ChangeKind::AliasRemoved,
                    format!(
                        "the old name `{alias}` no longer decodes: it is neither an alias nor an event type"
                    ),
                );
            }
        }
        let mut cmp = SchemaCompare {
            old: &old.schema,
            new: &new.schema,
            event_type: ty,
            out: &mut out,
            stack: Vec::new(),
        };
        cmp.compare(&old.schema, &new.schema, "");
    }
    for new in &current.events {
        let ty = new.type_name.as_str();
        if !old_types.contains(ty) && !old_aliases.contains(ty) {
            out.push(Change {
                kind: ChangeKind::EventAdded,
                event_type: ty.to_owned(),
                field: String::new(),
                message: "new event type".into(),
            });
        }
        for alias in &new.aliases {
            if !old_aliases.contains(alias.as_str()) && !old_types.contains(alias.as_str()) {
                out.push(Change {
                    kind: ChangeKind::AliasAdded,
                    event_type: ty.to_owned(),
                    field: String::new(),
                    message: format!("new old name `{alias}`"),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (!a.kind.is_breaking(), &a.event_type, &a.field, a.kind).cmp(&(
            !b.kind.is_breaking(),
            &b.event_type,
            &b.field,
            b.kind,
        ))
    });
    out.dedup();
    Compatibility { changes: out }
}

/// Panics, listing every breaking change, unless `current` is compatible
/// with the catalogue committed at `committed` (a file written by
/// `<service> docs --format json` or [`assert_up_to_date`](crate::assert_up_to_date)).
///
/// ```no_run
/// #[test]
/// fn events_stay_compatible() {
///     let catalog = eventbus_catalog::Catalog::global("reviews").unwrap();
///     eventbus_catalog::assert_compatible("docs/catalog.json", &catalog);
/// }
/// ```
#[track_caller]
pub fn assert_compatible(committed: impl AsRef<Path>, current: &Catalog) {
    let path = committed.as_ref();
    let old = match Catalog::load(path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let report = compare(&old, current);
    if !report.is_compatible() {
        panic!(
            "the events of `{}` are not compatible with the committed catalogue {}:\n{report}\n\
             Make the change compatible (deprecate instead of removing, add fields as `Option`, keep old names as aliases). \
             If the break is intended, because every producer and consumer has moved on, commit the new catalogue: \
             `<service> docs --format json --output {}`.",
            current.service,
            path.display(),
            path.display()
        );
    }
}

/// A schema reduced to what compatibility depends on.
#[derive(Default)]
struct Shape {
    nullable: bool,
    /// Non-null JSON types; empty when unconstrained.
    types: BTreeSet<String>,
    format: Option<String>,
    /// Named variants or values (`enum`, `const`, tagged `oneOf`), with their schemas.
    variants: Option<BTreeMap<String, Option<Value>>>,
    /// The object and array keywords, merged from `allOf`.
    object: Map<String, Value>,
    /// The `$ref`s followed, to stop on recursive types.
    refs: Vec<String>,
}

struct SchemaCompare<'r, 'o> {
    old: &'r Value,
    new: &'r Value,
    event_type: &'r str,
    out: &'o mut Vec<Change>,
    stack: Vec<(Vec<String>, Vec<String>)>,
}

impl SchemaCompare<'_, '_> {
    fn change(&mut self, kind: ChangeKind, field: &str, message: String) {
        self.out.push(Change {
            kind,
            event_type: self.event_type.to_owned(),
            field: field.to_owned(),
            message,
        });
    }

    fn compare(&mut self, old: &Value, new: &Value, path: &str) {
        let o = shape(self.old, old);
        let n = shape(self.new, new);
        // A recursive type compares each level once.
        let key = (o.refs.clone(), n.refs.clone());
        let recursive = !key.0.is_empty() || !key.1.is_empty();
        if recursive && self.stack.contains(&key) {
            return;
        }
        if recursive {
            self.stack.push(key);
        }
        self.compare_inner(&o, &n, path);
        if recursive {
            self.stack.pop();
        }
    }

    fn compare_inner(&mut self, o: &Shape, n: &Shape, path: &str) {
        let what = subject(path);
        if o.nullable && !n.nullable {
            self.change(
                ChangeKind::NullRemoved,
                path,
                format!("{what} no longer accepts null"),
            );
        } else if !o.nullable && n.nullable {
            self.change(
                ChangeKind::NullAdded,
                path,
                format!("{what} may now be null, which old consumers reject"),
            );
        }
        if o.types != n.types || o.format != n.format {
            self.change(
                ChangeKind::FieldRetyped,
                path,
                format!(
                    "{what} changed type from {} to {}",
                    describe(o),
                    describe(n)
                ),
            );
            return;
        }
        match (&o.variants, &n.variants) {
            (Some(ov), Some(nv)) => {
                for (key, old_schema) in ov {
                    match nv.get(key) {
                        None => self.change(
                            ChangeKind::EnumVariantRemoved,
                            path,
                            format!("{what}: variant `{key}` removed"),
                        ),
                        Some(new_schema) => {
                            if let (Some(os), Some(ns)) = (old_schema, new_schema) {
                                let (os, ns) = (shape(self.old, os), shape(self.new, ns));
                                self.compare_shapes(&os, &ns, &format!("{path}({key})"));
                            }
                        }
                    }
                }
                for key in nv.keys().filter(|k| !ov.contains_key(*k)) {
                    self.change(
                        ChangeKind::EnumVariantAdded,
                        path,
                        format!("{what}: new variant `{key}`"),
                    );
                }
            }
            (None, Some(nv)) => {
                let keys: Vec<String> = nv.keys().map(|k| format!("`{k}`")).collect();
                self.change(
                    ChangeKind::FieldRetyped,
                    path,
                    format!("{what} now accepts only {}", keys.join(", ")),
                );
            }
            (Some(_), None) | (None, None) => {}
        }
        self.compare_shapes(o, n, path);
    }

    /// Fields, map values and array items.
    fn compare_shapes(&mut self, o: &Shape, n: &Shape, path: &str) {
        let old_fields = fields(&o.object);
        let new_fields = fields(&n.object);
        for (name, (old_prop, old_req)) in &old_fields {
            let sub = join(path, name);
            match new_fields.get(name) {
                None => self.change(
                    ChangeKind::FieldRemoved,
                    &sub,
                    format!("field `{sub}` removed"),
                ),
                Some((new_prop, new_req)) => {
                    if !old_req && *new_req {
                        self.change(
                            ChangeKind::FieldMadeRequired,
                            &sub,
                            format!(
                                "field `{sub}` became required; old producers may leave it out"
                            ),
                        );
                    } else if *old_req && !new_req {
                        self.change(
                            ChangeKind::FieldMadeOptional,
                            &sub,
                            format!("field `{sub}` became optional; old consumers require it"),
                        );
                    }
                    self.compare(old_prop, new_prop, &sub);
                }
            }
        }
        for (name, (_, required)) in &new_fields {
            if old_fields.contains_key(name) {
                continue;
            }
            let sub = join(path, name);
            if *required {
                self.change(
                    ChangeKind::RequiredFieldAdded,
                    &sub,
                    format!(
                        "new required field `{sub}`; old producers do not send it \
                         (make it an `Option` or give it a `#[serde(default)]`)"
                    ),
                );
            } else {
                self.change(
                    ChangeKind::FieldAdded,
                    &sub,
                    format!("new optional field `{sub}`"),
                );
            }
        }
        match (
            o.object.get("additionalProperties"),
            n.object.get("additionalProperties"),
        ) {
            (Some(os @ Value::Object(_)), Some(ns @ Value::Object(_))) => {
                self.compare(os, ns, &format!("{path}.*"));
            }
            (old_extra, Some(Value::Bool(false))) if old_extra != Some(&Value::Bool(false)) => {
                self.change(
                    ChangeKind::FieldRetyped,
                    path,
                    format!("{} now rejects unknown fields", subject(path)),
                );
            }
            _ => {}
        }
        if let (Some(oi), Some(ni)) = (o.object.get("items"), n.object.get("items")) {
            self.compare(oi, ni, &format!("{path}[]"));
        }
        if let (Some(Value::Array(op)), Some(Value::Array(np))) =
            (o.object.get("prefixItems"), n.object.get("prefixItems"))
        {
            if op.len() != np.len() {
                self.change(
                    ChangeKind::FieldRetyped,
                    path,
                    format!(
                        "{} changed from {} to {} elements",
                        subject(path),
                        op.len(),
                        np.len()
                    ),
                );
            }
            for (i, (a, b)) in op.iter().zip(np).enumerate() {
                self.compare(a, b, &format!("{path}[{i}]"));
            }
        }
    }
}

fn subject(path: &str) -> String {
    if path.is_empty() {
        "the data".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn fields(obj: &Map<String, Value>) -> BTreeMap<String, (Value, bool)> {
    let required = schema::required_of(obj);
    obj.get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| (k.clone(), (v.clone(), required.contains(&k.as_str()))))
                .collect()
        })
        .unwrap_or_default()
}

fn shape(root: &Value, schema: &Value) -> Shape {
    let mut s = Shape::default();
    fill(Doc::new(root), schema, &mut s, 0);
    s
}

fn fill(doc: Doc<'_>, schema: &Value, s: &mut Shape, depth: usize) {
    if depth > 16 {
        return;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        if s.refs.iter().any(|seen| seen == r) {
            return;
        }
        if let Some(target) = doc.target(r) {
            s.refs.push(r.to_owned());
            fill(doc, target, s, depth + 1);
        }
        return;
    }
    let Some(obj) = schema.as_object() else {
        return;
    };
    for key in ["oneOf", "anyOf"] {
        let Some(alts) = obj.get(key).and_then(Value::as_array) else {
            continue;
        };
        let mut rest: Vec<&Value> = Vec::new();
        for alt in alts {
            if schema::is_null_schema(alt) {
                s.nullable = true;
            } else {
                rest.push(alt);
            }
        }
        // Each alternative names its variants: a constant, a list of values
        // (schemars groups undocumented unit variants), or a tag.
        let keyed: Option<Vec<(String, Option<&Value>)>> = rest
            .iter()
            .map(|alt| alt_keys(doc, alt))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect());
        match (keyed, rest.as_slice()) {
            (_, [only]) if alt_keys(doc, only).is_none() => {
                fill(doc, only, s, depth + 1);
            }
            (Some(keyed), _) => {
                for alt in &rest {
                    let (resolved, _) = doc.resolve(alt);
                    if let Some(t) = resolved.as_object() {
                        s.types.extend(
                            schema::types_of(t)
                                .into_iter()
                                .filter(|t| *t != "null")
                                .map(str::to_owned),
                        );
                    }
                }
                let variants = s.variants.get_or_insert_with(BTreeMap::new);
                for (k, v) in keyed {
                    variants.insert(k, v.cloned());
                }
            }
            (None, _) => {
                let variants = s.variants.get_or_insert_with(BTreeMap::new);
                for (i, alt) in rest.iter().enumerate() {
                    variants.insert(format!("#{}", i + 1), Some((*alt).clone()));
                }
            }
        }
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        for part in all {
            fill(doc, part, s, depth + 1);
        }
    }
    for t in schema::types_of(obj) {
        if t == "null" {
            s.nullable = true;
        } else {
            s.types.insert(t.to_owned());
        }
    }
    if s.format.is_none() {
        s.format = obj.get("format").and_then(Value::as_str).map(str::to_owned);
    }
    let mut values: Vec<&Value> = Vec::new();
    if let Some(c) = obj.get("const") {
        values.push(c);
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        values.extend(e);
    }
    if !values.is_empty() {
        let variants = s.variants.get_or_insert_with(BTreeMap::new);
        for v in values {
            if v.is_null() {
                s.nullable = true;
            } else {
                variants.insert(value_key(v), None);
            }
        }
    }
    for key in [
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
    ] {
        let Some(v) = obj.get(key) else {
            continue;
        };
        match (key, s.object.get_mut(key), v) {
            ("properties", Some(Value::Object(existing)), Value::Object(more)) => {
                existing.extend(more.clone());
            }
            ("required", Some(Value::Array(existing)), Value::Array(more)) => {
                existing.extend(more.iter().cloned());
            }
            _ => {
                s.object.insert(key.to_owned(), v.clone());
            }
        }
    }
    if s.types.is_empty() && s.object.contains_key("properties") {
        s.types.insert("object".to_owned());
    }
}

/// The variant names a `oneOf` alternative stands for, with the schema of
/// its content for tagged variants; `None` when it names none.
fn alt_keys<'v>(doc: Doc<'v>, alt: &'v Value) -> Option<Vec<(String, Option<&'v Value>)>> {
    let (resolved, _) = doc.resolve(alt);
    let obj = resolved.as_object()?;
    if obj.get("const").is_none()
        && let Some(values) = obj.get("enum").and_then(Value::as_array)
    {
        return Some(
            values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| (value_key(v), None))
                .collect(),
        );
    }
    if let Some(c) = obj.get("const") {
        return Some(vec![(value_key(c), None)]);
    }
    schema::variant_key(resolved).map(|k| vec![(k, Some(resolved))])
}

fn value_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe(s: &Shape) -> String {
    let mut t = if s.types.is_empty() {
        "any".to_owned()
    } else {
        s.types
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    if let Some(f) = &s.format {
        t = format!("{t} ({f})");
    }
    format!("`{t}`")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}
