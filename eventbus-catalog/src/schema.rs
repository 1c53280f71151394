//! Reading the JSON Schemas that schemars writes: `$ref`s, field order,
//! example values, one-line type sketches and field tables.

use serde_json::{Map, Value};

/// How deep the walkers below follow nested schemas before they stop.
const MAX_DEPTH: usize = 12;

/// A schema document: the root (with its `$defs`) that `$ref`s point into.
#[derive(Clone, Copy)]
pub(crate) struct Doc<'a> {
    root: &'a Value,
}

impl<'a> Doc<'a> {
    pub(crate) fn new(root: &'a Value) -> Self {
        Self { root }
    }

    /// Follows `$ref`s; returns the target and the name of the last `$ref`.
    pub(crate) fn resolve<'s>(&self, mut schema: &'s Value) -> (&'s Value, Option<&'s str>)
    where
        'a: 's,
    {
        let mut name = None;
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            match self.target(r) {
                Some(target) => {
                    name = Some(ref_name(r));
                    schema = target;
                }
                None => break,
            }
        }
        (schema, name)
    }

    pub(crate) fn target(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            Some(self.root)
        } else {
            self.root.pointer(pointer)
        }
    }

    /// An example value valid against `schema`: the schema's own example
    /// (`#[schemars(example = ...)]`) where it has one, else one built from it.
    pub(crate) fn example(&self, schema: &'a Value) -> Value {
        self.example_at(schema, "", &mut Vec::new())
            .unwrap_or(Value::Null)
    }

    fn example_at(&self, schema: &'a Value, path: &str, refs: &mut Vec<&'a str>) -> Option<Value> {
        let obj = match schema {
            Value::Bool(true) => return Some(Value::Null),
            Value::Object(o) => o,
            _ => return None,
        };
        if let Some(v) = given_example(obj) {
            return Some(v);
        }
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            if refs.contains(&r) || refs.len() > MAX_DEPTH {
                return None;
            }
            let target = self.target(r)?;
            refs.push(r);
            let v = self.example_at(target, path, refs);
            refs.pop();
            return v;
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            let mut other = None;
            for part in all {
                match self.example_at(part, path, refs)? {
                    Value::Object(m) => merged.extend(m),
                    v => other = Some(v),
                }
            }
            return Some(other.unwrap_or(Value::Object(merged)));
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = obj.get(key).and_then(Value::as_array) {
                let mut null_ok = false;
                for alt in alts {
                    if is_null_schema(alt) {
                        null_ok = true;
                        continue;
                    }
                    if let Some(v) = self.example_at(alt, path, refs) {
                        return Some(v);
                    }
                }
                return null_ok.then_some(Value::Null);
            }
        }
        match primary_type(obj) {
            Some("string") => Some(Value::String(example_string(obj, path))),
            Some("integer") => Some(example_integer(obj)),
            Some("number") => Some(example_number(obj)),
            Some("boolean") => Some(Value::Bool(true)),
            Some("null") => Some(Value::Null),
            Some("array") => self.example_array(obj, path, refs),
            Some("object") => self.example_object(obj, path, refs),
            _ => Some(Value::Null),
        }
    }

    fn example_array(
        &self,
        obj: &'a Map<String, Value>,
        path: &str,
        refs: &mut Vec<&'a str>,
    ) -> Option<Value> {
        if let Some(prefix) = obj.get("prefixItems").and_then(Value::as_array) {
            let items = prefix
                .iter()
                .enumerate()
                .map(|(i, s)| self.example_at(s, &format!("{path}[{i}]"), refs))
                .collect::<Option<Vec<_>>>()?;
            return Some(Value::Array(items));
        }
        let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let count = min.max(1).min(max).min(16);
        let item_schema = obj.get("items");
        let mut items = Vec::new();
        if let Some(s) = item_schema {
            for i in 0..count {
                match self.example_at(s, &format!("{path}[{i}]"), refs) {
                    Some(v) => items.push(v),
                    None if min == 0 => return Some(Value::Array(Vec::new())),
                    None => return None,
                }
            }
        }
        Some(Value::Array(items))
    }

    fn example_object(
        &self,
        obj: &'a Map<String, Value>,
        path: &str,
        refs: &mut Vec<&'a str>,
    ) -> Option<Value> {
        let mut out = Map::new();
        for (name, prop, required) in fields_of(obj) {
            let sub = join(path, name);
            match self.example_at(prop, &sub, refs) {
                Some(v) => {
                    out.insert(name.to_owned(), v);
                }
                None if required => return None,
                None => {}
            }
        }
        if out.is_empty()
            && obj.get("properties").is_none()
            && let Some(extra @ Value::Object(_)) = obj.get("additionalProperties")
            && let Some(v) = self.example_at(extra, &join(path, "key"), refs)
        {
            out.insert("key".to_owned(), v);
        }
        Some(Value::Object(out))
    }

    /// `value` as pretty JSON with object keys in the schema's field order
    /// (keys the schema does not list follow, sorted), as people read it.
    pub(crate) fn pretty_ordered(&self, value: &Value, schema: &'a Value) -> String {
        let mut out = String::new();
        self.write_ordered(&mut out, value, Some(schema), 0);
        out.push('\n');
        out
    }

    fn write_ordered(
        &self,
        out: &mut String,
        value: &Value,
        schema: Option<&'a Value>,
        indent: usize,
    ) {
        match value {
            Value::Object(m) if !m.is_empty() => {
                let listed: Vec<(&str, &'a Value)> = schema
                    .and_then(|s| self.object_of(s))
                    .map(|(obj, _)| fields_of(obj).into_iter().map(|(n, p, _)| (n, p)).collect())
                    .unwrap_or_default();
                let mut keys: Vec<(&String, Option<&'a Value>)> = listed
                    .iter()
                    .filter_map(|(name, prop)| {
                        m.get_key_value(*name).map(|(k, _)| (k, Some(*prop)))
                    })
                    .collect();
                let mut rest: Vec<&String> = m
                    .keys()
                    .filter(|k| !listed.iter().any(|(n, _)| n == k))
                    .collect();
                rest.sort();
                keys.extend(rest.into_iter().map(|k| (k, None)));
                out.push('{');
                for (i, (key, prop)) in keys.into_iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 2);
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push_str(": ");
                    self.write_ordered(out, &m[key], prop, indent + 2);
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
            Value::Array(items) if !items.is_empty() => {
                let item_schema = schema.and_then(|s| self.items_of(s));
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 2);
                    self.write_ordered(out, item, item_schema, indent + 2);
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// A one-line sketch of the shape, as the hand-written catalogues have it:
    /// `{"id": uuid, "action": "update" | "delete", "note"?: string}`.
    ///
    /// Objects nest up to `depth` levels; deeper ones show their type name.
    pub(crate) fn sketch(&self, schema: &'a Value, depth: usize) -> String {
        self.sketch_at(schema, depth, &mut Vec::new())
    }

    fn sketch_at(&self, schema: &'a Value, depth: usize, refs: &mut Vec<&'a str>) -> String {
        let obj = match schema {
            Value::Bool(true) => return "any".into(),
            Value::Bool(false) => return "never".into(),
            Value::Object(o) => o,
            _ => return "?".into(),
        };
        if let Some(c) = obj.get("const") {
            return c.to_string();
        }
        if let Some(values) = obj.get("enum").and_then(Value::as_array) {
            return values
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(" | ");
        }
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            let name = ref_name(r);
            let Some(target) = self.target(r) else {
                return name.to_owned();
            };
            let (target_obj, is_struct) = match target {
                Value::Object(t) => (Some(t), t.contains_key("properties")),
                _ => (None, false),
            };
            if refs.contains(&r) || (is_struct && depth == 0) || target_obj.is_none() {
                return name.to_owned();
            }
            refs.push(r);
            let s = self.sketch_at(target, depth, refs);
            refs.pop();
            return s;
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = obj.get(key).and_then(Value::as_array) {
                return union(alts.iter().map(|a| self.sketch_at(a, depth, refs)));
            }
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            return all
                .iter()
                .map(|a| self.sketch_at(a, depth, refs))
                .collect::<Vec<_>>()
                .join(" & ");
        }
        let types = types_of(obj);
        if types.is_empty() {
            if obj.contains_key("properties") {
                return self.sketch_type(obj, "object", depth, refs);
            }
            return "any".into();
        }
        union(types.iter().map(|t| self.sketch_type(obj, t, depth, refs)))
    }

    fn sketch_type(
        &self,
        obj: &'a Map<String, Value>,
        ty: &str,
        depth: usize,
        refs: &mut Vec<&'a str>,
    ) -> String {
        match ty {
            "string" => match obj.get("format").and_then(Value::as_str) {
                Some("date-time") => "datetime".into(),
                Some(f) => f.to_owned(),
                None => "string".into(),
            },
            "array" => {
                if let Some(prefix) = obj.get("prefixItems").and_then(Value::as_array) {
                    let parts: Vec<String> = prefix
                        .iter()
                        .map(|s| self.sketch_at(s, depth, refs))
                        .collect();
                    return format!("[{}]", parts.join(", "));
                }
                match obj.get("items") {
                    Some(items) => format!("[{}]", self.sketch_at(items, depth, refs)),
                    None => "[any]".into(),
                }
            }
            "object" => {
                let fields = fields_of(obj);
                if fields.is_empty() {
                    return match obj.get("additionalProperties") {
                        Some(v @ Value::Object(_)) => {
                            format!("{{string: {}}}", self.sketch_at(v, depth, refs))
                        }
                        Some(Value::Bool(false)) => "{}".into(),
                        _ => "object".into(),
                    };
                }
                if depth == 0 {
                    return "{…}".into();
                }
                let parts: Vec<String> = fields
                    .into_iter()
                    .map(|(name, prop, required)| {
                        format!(
                            "{}{}: {}",
                            Value::String(name.to_owned()),
                            if required { "" } else { "?" },
                            self.sketch_at(prop, depth - 1, refs)
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            other => other.to_owned(),
        }
    }

    /// Every field of an object schema, nested ones as `data.id`, in field order.
    pub(crate) fn fields(&self, schema: &'a Value) -> Vec<Field> {
        let mut out = Vec::new();
        self.fields_at(schema, "", &mut Vec::new(), &mut out);
        out
    }

    fn fields_at(
        &self,
        schema: &'a Value,
        path: &str,
        refs: &mut Vec<&'a str>,
        out: &mut Vec<Field>,
    ) {
        if refs.len() > MAX_DEPTH {
            return;
        }
        let Some((obj, chain)) = self.object_of(schema) else {
            return;
        };
        if chain.iter().any(|r| refs.contains(r)) {
            return;
        }
        let pushed = chain.len();
        refs.extend(chain);
        for (name, prop, required) in fields_of(obj) {
            let sub = join(path, name);
            let (target, _) = self.resolve(prop);
            let description = description_of(prop)
                .or_else(|| description_of(target))
                .unwrap_or_default();
            let variants = self.variant_docs(prop);
            let description = match (description.is_empty(), variants.is_empty()) {
                (_, true) => description,
                (true, false) => variants,
                (false, false) => format!("{description} {variants}"),
            };
            out.push(Field {
                path: sub.clone(),
                ty: self.sketch(prop, 0),
                required,
                description,
            });
            self.fields_at(prop, &sub, refs, out);
            if let Some(items) = self.items_of(prop) {
                self.fields_at(items, &format!("{sub}[]"), refs, out);
            }
        }
        refs.truncate(refs.len() - pushed);
    }

    /// The object schema with properties inside `schema` (through `$ref`s and
    /// `Option`'s `anyOf [T, null]`), if it is one, with the `$ref`s followed.
    fn object_of(&self, schema: &'a Value) -> Option<(&'a Map<String, Value>, Vec<&'a str>)> {
        let mut chain = Vec::new();
        let mut s = schema;
        for _ in 0..MAX_DEPTH {
            while let Some(r) = s.get("$ref").and_then(Value::as_str) {
                if chain.len() > MAX_DEPTH {
                    return None;
                }
                chain.push(r);
                s = self.target(r)?;
            }
            let obj = s.as_object()?;
            if obj.contains_key("properties") {
                return Some((obj, chain));
            }
            let alts = obj
                .get("anyOf")
                .or_else(|| obj.get("oneOf"))
                .and_then(Value::as_array)?;
            let mut non_null = alts.iter().filter(|a| !is_null_schema(a));
            let only = non_null.next()?;
            if non_null.next().is_some() {
                return None;
            }
            s = only;
        }
        None
    }

    fn items_of(&self, schema: &'a Value) -> Option<&'a Value> {
        let (target, _) = self.resolve(schema);
        let obj = target.as_object()?;
        if types_of(obj).contains(&"array") {
            obj.get("items").filter(|i| i.is_object())
        } else {
            None
        }
    }

    /// "`update`: The user's data changed. `delete`: ..." for enums whose
    /// variants have doc comments.
    fn variant_docs(&self, schema: &'a Value) -> String {
        let (target, _) = self.resolve(schema);
        let Some(alts) = target
            .get("oneOf")
            .or_else(|| target.get("anyOf"))
            .and_then(Value::as_array)
        else {
            return String::new();
        };
        let mut parts = Vec::new();
        for alt in alts {
            let (alt, _) = self.resolve(alt);
            let (Some(key), Some(desc)) = (variant_key(alt), description_of(alt)) else {
                continue;
            };
            parts.push(format!("`{key}`: {}", sentence(&desc)));
        }
        parts.join(" ")
    }
}

/// One row of a field table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub path: String,
    pub ty: String,
    pub required: bool,
    pub description: String,
}

/// The properties of an object schema in field order: the required ones in
/// the order schemars lists them (the struct's order), then the optional
/// ones by name. Independent of how `serde_json` orders maps.
pub(crate) fn fields_of(obj: &Map<String, Value>) -> Vec<(&str, &Value, bool)> {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = required_of(obj);
    let mut out: Vec<(&str, &Value, bool)> = required
        .iter()
        .filter_map(|name| props.get_key_value(*name))
        .map(|(k, v)| (k.as_str(), v, true))
        .collect();
    let mut optional: Vec<(&str, &Value, bool)> = props
        .iter()
        .filter(|(k, _)| !required.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v, false))
        .collect();
    optional.sort_by_key(|(k, _, _)| *k);
    out.extend(optional);
    out
}

pub(crate) fn required_of(obj: &Map<String, Value>) -> Vec<&str> {
    obj.get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The JSON types a schema allows (`type` as a string or a list).
pub(crate) fn types_of(obj: &Map<String, Value>) -> Vec<&str> {
    match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The first non-null type, or the one implied by `properties` / `items`.
fn primary_type(obj: &Map<String, Value>) -> Option<&str> {
    let types = types_of(obj);
    if let Some(t) = types.iter().find(|t| **t != "null") {
        return Some(t);
    }
    if types.contains(&"null") {
        return Some("null");
    }
    if obj.contains_key("properties") || obj.contains_key("additionalProperties") {
        Some("object")
    } else if obj.contains_key("items") || obj.contains_key("prefixItems") {
        Some("array")
    } else {
        None
    }
}

/// A schema that only accepts `null`.
pub(crate) fn is_null_schema(schema: &Value) -> bool {
    let Some(obj) = schema.as_object() else {
        return false;
    };
    if obj.get("const") == Some(&Value::Null) {
        return true;
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        return values.iter().all(Value::is_null);
    }
    let types = types_of(obj);
    !types.is_empty() && types.iter().all(|t| *t == "null")
}

/// The name of a `oneOf` alternative: its constant, or the tag of a tagged
/// enum variant (external: its one required property; internal: the
/// constant of a required property).
pub(crate) fn variant_key(alt: &Value) -> Option<String> {
    let obj = alt.as_object()?;
    if let Some(c) = obj.get("const") {
        return scalar_key(c);
    }
    if let Some([only]) = obj.get("enum").and_then(Value::as_array).map(Vec::as_slice) {
        return scalar_key(only);
    }
    let props = obj.get("properties").and_then(Value::as_object)?;
    let required = required_of(obj);
    for name in &required {
        if let Some(c) = props.get(*name).and_then(|p| p.get("const")) {
            return scalar_key(c);
        }
        if let Some([only]) = props
            .get(*name)
            .and_then(|p| p.get("enum"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return scalar_key(only);
        }
    }
    if props.len() == 1 && required.len() == 1 {
        return Some(required[0].to_owned());
    }
    None
}

fn scalar_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn description_of(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
}

/// `text` as a sentence: trimmed, ending with a full stop.
pub(crate) fn sentence(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() || t.ends_with(['.', '!', '?', ':']) {
        t.to_owned()
    } else {
        format!("{t}.")
    }
}

fn given_example(obj: &Map<String, Value>) -> Option<Value> {
    if let Some(first) = obj
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return Some(first.clone());
    }
    if let Some(v) = obj.get("example").or_else(|| obj.get("const")) {
        return Some(v.clone());
    }
    if let Some(v) = obj.get("default") {
        return Some(v.clone());
    }
    obj.get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.iter().find(|v| !v.is_null()).or(values.first()))
        .cloned()
}

fn example_string(obj: &Map<String, Value>, path: &str) -> String {
    let mut s = match obj.get("format").and_then(Value::as_str) {
        None if !obj.contains_key("pattern") && doc_example(obj).is_some() => {
            doc_example(obj).unwrap_or_default()
        }
        Some("uuid") => example_uuid(path),
        Some("date-time") => "2024-05-01T12:00:00Z".into(),
        Some("date") => "2024-05-01".into(),
        Some("time") => "12:00:00Z".into(),
        Some("duration") => "PT1H".into(),
        Some("email") => "user@example.com".into(),
        Some("hostname") => "example.com".into(),
        Some("ipv4") => "192.0.2.1".into(),
        Some("ipv6") => "2001:db8::1".into(),
        Some("uri" | "iri" | "url") => "https://example.com/".into(),
        Some("uri-reference" | "iri-reference") => "/example".into(),
        _ => "string".into(),
    };
    let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    while s.chars().count() < min {
        s.push('x');
    }
    if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
        s = s.chars().take(max as usize).collect();
    }
    s
}

/// The value a doc comment gives as an example: "e.g. `Review`" or "for example `Review`".
fn doc_example(obj: &Map<String, Value>) -> Option<String> {
    let desc = obj.get("description").and_then(Value::as_str)?;
    ["e.g. `", "for example `", "e.g., `", "for example, `"]
        .iter()
        .find_map(|marker| {
            let start = desc.find(marker)? + marker.len();
            let len = desc[start..].find('`')?;
            Some(desc[start..start + len].to_owned())
        })
        .filter(|v| !v.is_empty())
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A UUIDv7-shaped id that differs per field path but never between runs.
pub(crate) fn example_uuid(path: &str) -> String {
    // FNV-1a: stable across platforms and Rust versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "018f2b6e-{:04x}-7{:03x}-{:x}{:03x}-{:012x}",
        (h >> 48) & 0xffff,
        (h >> 36) & 0xfff,
        0x8 | ((h >> 34) & 0x3),
        (h >> 22) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

fn bound(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

fn example_integer(obj: &Map<String, Value>) -> Value {
    let min = bound(obj, "minimum")
        .or_else(|| bound(obj, "exclusiveMinimum").map(|m| m.floor() + 1.0))
        .unwrap_or(f64::MIN);
    let max = bound(obj, "maximum")
        .or_else(|| bound(obj, "exclusiveMaximum").map(|m| m.ceil() - 1.0))
        .unwrap_or(f64::MAX);
    let v = if (min..=max).contains(&1.0) {
        1.0
    } else if min > 1.0 {
        min.ceil()
    } else {
        max.floor()
    };
    if v >= 0.0 {
        Value::from(v as u64)
    } else {
        Value::from(v as i64)
    }
}

fn example_number(obj: &Map<String, Value>) -> Value {
    let min = bound(obj, "minimum").unwrap_or(f64::MIN);
    let max = bound(obj, "maximum").unwrap_or(f64::MAX);
    let v = if (min..=max).contains(&1.5) {
        1.5
    } else if min > 1.5 {
        min
    } else {
        max
    };
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn union(parts: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in parts {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen.join(" | ")
}

/// `value` with every object's keys in sorted order, whatever map type
/// `serde_json` was built with: the catalogue's output never depends on it.
pub(crate) fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Pretty JSON with sorted keys and a final newline.
pub(crate) fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&canonical(value)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn example_uuids_are_well_formed_and_stable() {
        let a = example_uuid("id");
        let b = example_uuid("data.id");
        assert_ne!(a, b);
        assert_eq!(a, example_uuid("id"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn sketches_follow_refs_and_field_order() {
        let schema = json!({
            "type": "object",
            "properties": {
                "z": {"type": ["string", "null"]},
                "data": {"$ref": "#/$defs/UserRef"},
                "action": {"$ref": "#/$defs/Action"},
                "n": {"type": "integer", "enum": [1, 2]}
            },
            "required": ["data", "action", "n"],
            "$defs": {
                "UserRef": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]},
                "Action": {"oneOf": [{"type": "string", "const": "update"}, {"type": "string", "const": "delete"}]}
            }
        });
        let doc = Doc::new(&schema);
        assert_eq!(
            doc.sketch(&schema, 3),
            r#"{"data": {"id": uuid}, "action": "update" | "delete", "n": 1 | 2, "z"?: string | null}"#
        );
        let example = doc.example(&schema);
        assert_eq!(example["action"], "update");
        assert_eq!(example["n"], 1);
        assert!(example["data"]["id"].is_string());
    }

    #[test]
    fn recursive_types_end() {
        let schema = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}
            }, "required": ["children"]}}
        });
        let doc = Doc::new(&schema);
        assert_eq!(doc.example(&schema), json!({"children": [], "next": null}));
        assert_eq!(
            doc.sketch(&schema, 3),
            r#"{"children": [Node], "next"?: Node | null}"#
        );
        assert_eq!(doc.fields(&schema).len(), 2);
    }
}
