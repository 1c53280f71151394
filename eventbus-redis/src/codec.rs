//! Structured-mode CloudEvents JSON (`application/cloudevents+json`) and the
//! legacy bare-data codec.
//!
//! The hot path works on already-encoded bytes: a publish writes the caller's
//! structured JSON as it is, a read hands back the bytes it got. Only the
//! legacy codec looks inside: on write it keeps just the `data` member, on
//! read it wraps a payload without `specversion` into a CloudEvent of the
//! channel's (or stream's) type. [`encode_event`] and [`decode_event`] are the
//! `cloudevents::Event` edges.

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

pub use eventbus_core::codec::{CONTENT_TYPE, SPEC_VERSION};

/// Encodes a `cloudevents::Event` as structured-mode JSON.
pub fn encode_event(event: &cloudevents::Event) -> Result<Bytes> {
    serde_json::to_vec(event)
        .map(Bytes::from)
        .map_err(|e| Error::Codec(e.to_string()))
}

/// Decodes structured-mode JSON into a `cloudevents::Event`, by the one
/// validator every reader uses ([`eventbus_core::codec::decode_cloudevent`]:
/// CloudEvents 1.0.2 rules, 0.3 read as 1.0, reasons that name the attribute).
pub fn decode_event(payload: &[u8]) -> Result<cloudevents::Event> {
    eventbus_core::codec::decode_cloudevent(payload).map_err(|e| Error::Codec(e.to_string()))
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    specversion: Option<&'a RawValue>,
}

/// True when `payload` is a JSON object with a top-level `specversion`
/// member, i.e. a structured CloudEvent rather than bare data.
pub fn is_structured(payload: &[u8]) -> bool {
    // Fast path: no `"specversion"` anywhere means bare data.
    if !contains(payload, b"\"specversion\"") {
        return false;
    }
    matches!(
        serde_json::from_slice::<Probe<'_>>(payload),
        Ok(Probe {
            specversion: Some(_)
        })
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Wraps bare data JSON into a structured CloudEvent of type `event_type`:
/// a fresh UUIDv7 `id`, the given `source`, `time` now and
/// `datacontenttype: application/json`.
///
/// Returns `None` when `data` is not valid JSON (such a payload is passed on
/// unchanged, so the consumer reports it as malformed instead of it vanishing).
pub fn wrap_legacy(event_type: &str, source: &str, data: &[u8]) -> Option<Bytes> {
    let now = SystemTime::now();
    wrap_legacy_as(
        event_type,
        source,
        data,
        eventbus_core::codec::new_event_id(now),
        now,
    )
}

/// [`wrap_legacy`] with the given `id` and `time`: a stream entry is given
/// the same ones every time it is read ([`entry_event_id`]), so that a
/// redelivery or a second read of the feed is recognisably the same event.
pub fn wrap_legacy_as(
    event_type: &str,
    source: &str,
    data: &[u8],
    id: uuid::Uuid,
    time: SystemTime,
) -> Option<Bytes> {
    let data: &RawValue = serde_json::from_slice(data).ok()?;
    let time = format_time(time);
    let mut out = Vec::with_capacity(data.get().len() + event_type.len() + source.len() + 160);
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
    out.extend_from_slice(id.hyphenated().encode_lower(&mut [0u8; 36]).as_bytes());
    out.extend_from_slice(b"\",\"source\":");
    serde_json::to_writer(&mut out, source).ok()?;
    out.extend_from_slice(b",\"type\":");
    serde_json::to_writer(&mut out, event_type).ok()?;
    out.extend_from_slice(b",\"datacontenttype\":\"application/json\",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data.get().as_bytes());
    out.push(b'}');
    Some(Bytes::from(out))
}

/// The CloudEvents id of the bare-data entry `entry_id` (`<ms>-<seq>`) of
/// `stream`: a UUIDv7 of the entry's time whose other bits are the sequence
/// and a hash of the stream key, the same on every read; `None` for an id
/// that is not `<ms>-<seq>`.
pub fn entry_event_id(stream: &str, entry_id: &str) -> Option<(uuid::Uuid, SystemTime)> {
    let (ms, seq) = entry_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    // FNV-1a of the key: entries of two streams with one id differ.
    let hash = stream.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut rest = [0u8; 10];
    rest[..4].copy_from_slice(&hash.to_be_bytes());
    rest[4..].copy_from_slice(&seq.to_be_bytes()[2..]);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid();
    Some((
        id,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    ))
}

/// `payload` as structured CloudEvent JSON: unchanged when it already is one
/// (or is not JSON at all), wrapped by [`wrap_legacy`] otherwise.
pub fn ensure_structured(event_type: &str, source: &str, payload: Bytes) -> Bytes {
    ensure_structured_with(event_type, || source.to_owned(), payload)
}

/// [`ensure_structured`], building the `source` only for a payload it wraps.
pub(crate) fn ensure_structured_with(
    event_type: &str,
    source: impl FnOnce() -> String,
    payload: Bytes,
) -> Bytes {
    // What every CloudEvents writer we know of starts with. Such a payload
    // is returned unchanged either way (a CloudEvent, or not JSON), so the
    // full parse below is only needed for anything else.
    if payload.starts_with(b"{\"specversion\":") || is_structured(&payload) {
        return payload;
    }
    wrap_legacy(event_type, &source(), &payload).unwrap_or(payload)
}

#[derive(Deserialize)]
struct DataOnly<'a> {
    #[serde(borrow, default)]
    specversion: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// What the legacy codec writes for `payload`: the raw `data` member of a
/// structured CloudEvent (`null` when it has none), or the payload itself
/// when it is not a CloudEvent.
pub fn legacy_data(payload: &[u8]) -> Cow<'_, [u8]> {
    if !contains(payload, b"\"specversion\"") {
        return Cow::Borrowed(payload);
    }
    match serde_json::from_slice::<DataOnly<'_>>(payload) {
        Ok(DataOnly {
            specversion: Some(_),
            data,
        }) => match data {
            Some(raw) => Cow::Borrowed(raw.get().as_bytes()),
            None => Cow::Borrowed(b"null"),
        },
        _ => Cow::Borrowed(payload),
    }
}

/// The attributes the django-broadcaster layout copies into stream fields.
#[derive(Debug, Deserialize)]
pub(crate) struct HeaderAttrs<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub time: Option<Cow<'a, str>>,
}

pub(crate) fn header_attrs(payload: &[u8]) -> Option<HeaderAttrs<'_>> {
    serde_json::from_slice(payload).ok()
}

pub use eventbus_core::codec::{format_time, parse_time};

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};

    #[test]
    fn wrapped_legacy_payload_is_a_cloudevent_the_sdk_reads() {
        let bytes = wrap_legacy(
            "review_created",
            "/redis/review_created",
            br#"{"id": "42"}"#,
        )
        .unwrap();
        let event = decode_event(&bytes).unwrap();
        assert_eq!(event.ty(), "review_created");
        assert_eq!(event.source().as_str(), "/redis/review_created");
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert!(event.time().is_some());
        assert_eq!(
            uuid::Uuid::parse_str(event.id()).unwrap().get_version_num(),
            7
        );
        let data: serde_json::Value = match event.data().unwrap() {
            cloudevents::Data::Json(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(data, serde_json::json!({"id": "42"}));
    }

    #[test]
    fn not_json_is_not_wrapped() {
        assert!(wrap_legacy("t", "/s", b"not json").is_none());
        let (a, t) = entry_event_id("{eventbus}:stream:x", "1733050000000-7").unwrap();
        assert_eq!(
            entry_event_id("{eventbus}:stream:x", "1733050000000-7")
                .unwrap()
                .0,
            a,
            "stable"
        );
        assert_ne!(
            entry_event_id("{eventbus}:stream:y", "1733050000000-7")
                .unwrap()
                .0,
            a
        );
        assert_ne!(
            entry_event_id("{eventbus}:stream:x", "1733050000000-8")
                .unwrap()
                .0,
            a
        );
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1733050000000)
        );
        assert!(entry_event_id("k", "nope").is_none());
        let b = ensure_structured("t", "/s", Bytes::from_static(b"not json"));
        assert_eq!(&b[..], b"not json");
    }

    #[test]
    fn structured_detection() {
        let event = EventBuilderV10::new()
            .id("1")
            .ty("t")
            .source("/s")
            .data(
                "application/json",
                serde_json::json!({"specversion": "nested"}),
            )
            .build()
            .unwrap();
        let bytes = encode_event(&event).unwrap();
        assert!(is_structured(&bytes));
        assert!(!is_structured(br#"{"id": 1}"#));
        assert!(!is_structured(br#"{"data": {"specversion": "1.0"}}"#));
        assert!(!is_structured(b"\"specversion\""));
        assert_eq!(
            &legacy_data(&bytes)[..],
            br#"{"specversion":"nested"}"#.as_slice()
        );
        assert_eq!(&legacy_data(br#"{"id":1}"#)[..], br#"{"id":1}"#.as_slice());
    }

    #[test]
    fn time_round_trip() {
        let now = SystemTime::now();
        let s = format_time(now);
        let back = parse_time(&s).unwrap();
        let diff = now.duration_since(back).unwrap_or_else(|e| e.duration());
        assert!(diff.as_micros() < 1, "{s}");
    }
}
