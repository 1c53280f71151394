//! Subscription filters in the dialects of the CloudEvents Subscriptions
//! API: `exact`, `prefix`, `suffix` (each a map of attribute → value, all of
//! which must hold), `all`, `any` (lists of filters) and `not`.
//!
//! ```
//! use eventbus_http::webhooks::Filter;
//! let f: Filter = serde_json::from_str(r#"{"all": [
//!     {"prefix": {"type": "reviews."}},
//!     {"not": {"exact": {"source": "/tests"}}}
//! ]}"#).unwrap();
//! let attrs = |ty: &str, source: &str| {
//!     let (ty, source) = (ty.to_owned(), source.to_owned());
//!     move |name: &str| match name {
//!         "type" => Some(ty.clone()),
//!         "source" => Some(source.clone()),
//!         _ => None,
//!     }
//! };
//! assert!(f.matches(&attrs("reviews.created", "/reviews")));
//! assert!(!f.matches(&attrs("reviews.created", "/tests")));
//! assert!(!f.matches(&attrs("users.created", "/reviews")));
//! ```
//!
//! A dotted type prefix (`{"prefix": {"type": "reviews."}}`) is the hub's
//! "layered" topic matching: `reviews.` matches `reviews.created` and
//! `reviews.moderation.approved`.

use std::collections::BTreeMap;

use eventbus_core::Envelope;
use serde::{Deserialize, Serialize};

/// One filter expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    /// Every attribute named has exactly this value.
    Exact(BTreeMap<String, String>),
    /// Every attribute named starts with this value.
    Prefix(BTreeMap<String, String>),
    /// Every attribute named ends with this value.
    Suffix(BTreeMap<String, String>),
    /// Every filter of the list matches.
    All(Vec<Filter>),
    /// At least one filter of the list matches.
    Any(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// Whether an event whose attribute values `attr` gives (`None`: the
    /// event has no such attribute) passes the filter.
    pub fn matches(&self, attr: &dyn Fn(&str) -> Option<String>) -> bool {
        let each = |map: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            map.iter()
                .all(|(name, want)| attr(name).is_some_and(|have| test(&have, want)))
        };
        match self {
            Filter::Exact(m) => each(m, |have, want| have == want),
            Filter::Prefix(m) => each(m, |have, want| have.starts_with(want)),
            Filter::Suffix(m) => each(m, |have, want| have.ends_with(want)),
            Filter::All(list) => list.iter().all(|f| f.matches(attr)),
            Filter::Any(list) => list.iter().any(|f| f.matches(attr)),
            Filter::Not(f) => !f.matches(attr),
        }
    }

    /// [`Filter::matches`] on a received event.
    pub fn matches_event(&self, event: &Envelope) -> bool {
        self.matches(&|name| attribute(event, name))
    }

    /// What is wrong with the filter, for a `400`: an empty attribute map or
    /// list, or an attribute name that cannot be a CloudEvents attribute.
    pub fn check(&self) -> Result<(), String> {
        let map = |dialect: &str, m: &BTreeMap<String, String>| {
            if m.is_empty() {
                return Err(format!(
                    "the `{dialect}` filter names no attribute; write e.g. {{\"{dialect}\": {{\"type\": \"review_created\"}}}}"
                ));
            }
            for name in m.keys() {
                let ok = !name.is_empty()
                    && name.len() <= 20
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !ok {
                    return Err(format!(
                        "`{}` in the `{dialect}` filter is not a CloudEvents attribute name (lowercase letters and digits, at most 20)",
                        name.escape_debug()
                    ));
                }
            }
            Ok(())
        };
        match self {
            Filter::Exact(m) => map("exact", m),
            Filter::Prefix(m) => map("prefix", m),
            Filter::Suffix(m) => map("suffix", m),
            Filter::All(list) | Filter::Any(list) => {
                if list.is_empty() {
                    return Err("an `all` or `any` filter needs at least one filter".into());
                }
                list.iter().try_for_each(Filter::check)
            }
            Filter::Not(f) => f.check(),
        }
    }

    /// The event types the filter can match, when it names them exactly
    /// (`exact` on `type`, or an `any` of such): the transport then only
    /// has to carry those types to the subscription's queue.
    pub fn exact_types(&self) -> Option<Vec<String>> {
        match self {
            Filter::Exact(m) => m.get("type").map(|t| vec![t.clone()]),
            Filter::Any(list) => {
                let mut out = Vec::new();
                for f in list {
                    out.extend(f.exact_types()?);
                }
                Some(out)
            }
            Filter::All(list) => list.iter().find_map(Filter::exact_types),
            _ => None,
        }
    }
}

/// The value of attribute `name` of `event` as text (extensions included).
pub fn attribute(event: &Envelope, name: &str) -> Option<String> {
    let text = match name {
        "id" => Some(event.id()),
        "type" => Some(event.event_type()),
        "source" => Some(event.source()),
        "specversion" => Some("1.0"),
        "subject" => event.subject(),
        "time" => event.time(),
        "datacontenttype" => event.datacontenttype(),
        "dataschema" => event.dataschema(),
        other => return event.extension(other).map(|v| v.to_string()),
    };
    text.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Envelope {
        Envelope::parse(bytes::Bytes::from(json.to_owned())).unwrap()
    }

    #[test]
    fn every_dialect() {
        let e = ev(
            r#"{"specversion":"1.0","id":"1","source":"/reviews","type":"reviews.moderation.approved","subject":"r-42","tenant":"acme","data":{}}"#,
        );
        let f = |json: &str| serde_json::from_str::<Filter>(json).unwrap();
        assert!(f(r#"{"exact": {"type": "reviews.moderation.approved"}}"#).matches_event(&e));
        assert!(!f(r#"{"exact": {"type": "reviews.moderation"}}"#).matches_event(&e));
        assert!(f(r#"{"prefix": {"type": "reviews."}}"#).matches_event(&e));
        assert!(f(r#"{"prefix": {"type": "reviews.moderation."}}"#).matches_event(&e));
        assert!(!f(r#"{"prefix": {"type": "users."}}"#).matches_event(&e));
        assert!(f(r#"{"suffix": {"type": ".approved"}}"#).matches_event(&e));
        assert!(f(r#"{"exact": {"tenant": "acme", "subject": "r-42"}}"#).matches_event(&e));
        assert!(!f(r#"{"exact": {"tenant": "acme", "subject": "r-43"}}"#).matches_event(&e));
        assert!(
            !f(r#"{"exact": {"dataschema": "x"}}"#).matches_event(&e),
            "a missing attribute never matches"
        );
        assert!(
            f(r#"{"any": [{"exact": {"type": "x"}}, {"suffix": {"source": "views"}}]}"#)
                .matches_event(&e)
        );
        assert!(
            !f(r#"{"all": [{"exact": {"type": "x"}}, {"suffix": {"source": "views"}}]}"#)
                .matches_event(&e)
        );
        assert!(f(r#"{"not": {"exact": {"source": "/tests"}}}"#).matches_event(&e));
        assert!(!f(r#"{"not": {"prefix": {"type": ""}}}"#).matches_event(&e));
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        assert!(serde_json::from_str::<Filter>(r#"{"sql": "type = 'x'"}"#).is_err());
        assert!(serde_json::from_str::<Filter>(r#"{"exact": {"type": 1}}"#).is_err());
        let f: Filter = serde_json::from_str(r#"{"exact": {}}"#).unwrap();
        assert!(f.check().unwrap_err().contains("names no attribute"));
        let f: Filter = serde_json::from_str(r#"{"prefix": {"Type": "x"}}"#).unwrap();
        assert!(
            f.check()
                .unwrap_err()
                .contains("not a CloudEvents attribute name")
        );
        let f: Filter = serde_json::from_str(r#"{"any": []}"#).unwrap();
        assert!(f.check().is_err());
    }

    #[test]
    fn exact_types_narrow_the_queue() {
        let f: Filter = serde_json::from_str(
            r#"{"any": [{"exact": {"type": "a"}}, {"exact": {"type": "b", "source": "/x"}}]}"#,
        )
        .unwrap();
        assert_eq!(f.exact_types(), Some(vec!["a".into(), "b".into()]));
        let f: Filter = serde_json::from_str(r#"{"prefix": {"type": "a"}}"#).unwrap();
        assert_eq!(f.exact_types(), None);
    }
}
