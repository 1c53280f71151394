//! A small YAML writer for JSON values: block style, sorted keys, and a
//! string is written plain only where no YAML reader could take it for
//! anything else (a number, a boolean, null, an indicator); otherwise it is
//! double-quoted with JSON escapes, which YAML reads the same way.

use serde_json::Value;

pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => block(&mut out, value, 0),
        Value::Array(a) if !a.is_empty() => block(&mut out, value, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// A non-empty map or list, each line indented by `indent`.
fn block(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                pad(out, indent);
                out.push_str(&string(k));
                out.push(':');
                after_key(out, &m[k], indent);
            }
        }
        Value::Array(items) => {
            for item in items {
                pad(out, indent);
                out.push('-');
                after_dash(out, item, indent);
            }
        }
        scalar => {
            pad(out, indent);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn after_key(out: &mut String, value: &Value, indent: usize) {
    if is_inline(value) {
        out.push(' ');
        out.push_str(&inline(value));
        out.push('\n');
    } else {
        out.push('\n');
        block(out, value, indent + 2);
    }
}

fn after_dash(out: &mut String, value: &Value, indent: usize) {
    if is_inline(value) {
        out.push(' ');
        out.push_str(&inline(value));
        out.push('\n');
    } else {
        // The first line of the nested block goes on the dash's line.
        let mut nested = String::new();
        block(&mut nested, value, indent + 2);
        out.push(' ');
        out.push_str(&nested[indent + 2..]);
    }
}

fn is_inline(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A string, plain where that is unambiguous, else double-quoted.
fn string(s: &str) -> String {
    if is_plain(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn is_plain(s: &str) -> bool {
    const RESERVED: &[&str] = &[
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", ".nan",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/' || first == '$') {
        return false;
    }
    if s.ends_with(' ') || RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '$' | ' ' | ','))
        && !s.contains("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_yaml() {
        let v = json!({
            "asyncapi": "3.0.0",
            "b": [1, {"x": "y", "z": []}, [true, null]],
            "c": {"$ref": "#/components/x", "empty": {}, "text": "Line one.\nTwo: \"quoted\""},
            "d": ["yes", "plain words, ok", "-dash", "1.5"]
        });
        let expected = "\
asyncapi: \"3.0.0\"
b:
  - 1
  - x: \"y\"
    z: []
  - - true
    - null
c:
  $ref: \"#/components/x\"
  empty: {}
  text: \"Line one.\\nTwo: \\\"quoted\\\"\"
d:
  - \"yes\"
  - plain words, ok
  - \"-dash\"
  - \"1.5\"
";
        assert_eq!(to_yaml(&v), expected);
    }
}
