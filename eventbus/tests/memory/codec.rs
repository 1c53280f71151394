//! The wire format: structured CloudEvents JSON, interchangeable with cloudevents-sdk.

use std::time::SystemTime;

use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use eventbus::codec::{self, Attributes};
use eventbus::{Bus, Event};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("codec.review_created", source = "reviews")]
struct ReviewCreated {
    #[event(subject)]
    id: uuid::Uuid,
    rating: u8,
    text: String,
}

fn sample() -> ReviewCreated {
    ReviewCreated {
        id: uuid::Uuid::now_v7(),
        rating: 5,
        text: "Great \"quoted\" place\n".into(),
    }
}

async fn bus() -> Bus {
    Bus::builder()
        .service("codec-test")
        .without_registered()
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn typed_encoding_is_read_by_cloudevents_sdk() {
    let bus = bus().await;
    let event = sample();
    let (_, out) = bus.encode(&event).unwrap();
    assert_eq!(out.event_type, "codec.review_created");
    let sdk: cloudevents::Event = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(sdk.specversion(), cloudevents::event::SpecVersion::V10);
    assert_eq!(sdk.ty(), "codec.review_created");
    assert_eq!(sdk.source().to_string(), "/reviews");
    assert_eq!(sdk.subject(), Some(event.id.to_string().as_str()));
    assert_eq!(sdk.datacontenttype(), Some("application/json"));
    let id = uuid::Uuid::parse_str(sdk.id()).unwrap();
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
    let time = sdk.time().expect("time is set");
    let age = chrono::Utc::now() - *time;
    assert!(age.num_seconds().abs() < 5, "time is now, got {time}");
    let data: ReviewCreated = match sdk.data() {
        Some(cloudevents::Data::Json(v)) => serde_json::from_value(v.clone()).unwrap(),
        other => panic!("expected JSON data, got {other:?}"),
    };
    assert_eq!(data, event);
    // And the SDK writes back what we read.
    let again = serde_json::to_vec(&sdk).unwrap();
    assert_eq!(codec::decode::<ReviewCreated>(&again).unwrap(), event);
}

#[tokio::test]
async fn sdk_events_decode_as_typed_events() {
    let event = sample();
    let sdk = EventBuilderV10::new()
        .id("abc-1")
        .ty("codec.review_created")
        .source("/elsewhere")
        .subject("s")
        .time(chrono::Utc::now())
        .extension("traceparent", "00-abc-def-01")
        .data("application/json", serde_json::to_value(&event).unwrap())
        .build()
        .unwrap();
    let bytes = serde_json::to_vec(&sdk).unwrap();
    let attrs = Attributes::parse(&bytes).unwrap();
    assert_eq!(attrs.id, "abc-1");
    assert_eq!(attrs.source, "/elsewhere");
    assert_eq!(attrs.subject.as_deref(), Some("s"));
    assert_eq!(codec::decode::<ReviewCreated>(&bytes).unwrap(), event);
    let back = codec::decode_cloudevent(&bytes).unwrap();
    assert_eq!(back, sdk);
}

#[tokio::test]
async fn unknown_fields_in_data_are_tolerated() {
    let bytes = br#"{"specversion":"1.0","id":"1","type":"codec.review_created","source":"/x","data":{"id":"0191d3c4-0000-7000-8000-000000000000","rating":3,"text":"ok","added_later":[1,2]}}"#;
    let e = codec::decode::<ReviewCreated>(bytes).unwrap();
    assert_eq!(e.rating, 3);
}

#[test]
fn decode_errors_name_the_type_and_the_field() {
    let bytes = br#"{"specversion":"1.0","id":"1","type":"codec.review_created","source":"/x","data":{"id":"0191d3c4-0000-7000-8000-000000000000","rating":"five","text":"ok"}}"#;
    let err = codec::decode::<ReviewCreated>(bytes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("codec.review_created"), "{err}");
    assert!(err.contains("data.rating"), "{err}");
    assert!(err.contains("ReviewCreated"), "{err}");

    let missing = br#"{"specversion":"1.0","id":"1","type":"codec.review_created","source":"/x","data":{"id":"0191d3c4-0000-7000-8000-000000000000","text":"ok"}}"#;
    let err = codec::decode::<ReviewCreated>(missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `rating`"), "{err}");
}

#[test]
fn envelope_problems_are_explained() {
    let cases: &[(&[u8], &str)] = &[
        (b"not json at all", "not JSON"),
        (
            br#"{"specversion":"1.0","id":"1","source":"/x"}"#,
            "message is not a CloudEvent: required attribute `type` is missing",
        ),
        (
            br#"{"specversion":"2.0","id":"1","type":"t","source":"/x"}"#,
            "unsupported CloudEvents specversion \"2.0\"",
        ),
        (
            br#"[1,2,3]"#,
            "message is not a CloudEvent: it is an array, expected a JSON object",
        ),
    ];
    for (bytes, expected) in cases {
        let err = Attributes::parse(bytes).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{:?}: {err}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn attributes_borrow_from_the_message() {
    let bytes = br#"{"specversion":"1.0","id":"id-1","type":"t","source":"/s","data":{"a":1}}"#;
    let attrs = Attributes::parse(bytes).unwrap();
    assert!(matches!(attrs.id, std::borrow::Cow::Borrowed(_)));
    assert!(matches!(attrs.ty, std::borrow::Cow::Borrowed(_)));
    assert_eq!(attrs.data.unwrap().get(), r#"{"a":1}"#);
}

#[test]
fn time_is_rfc3339_with_microseconds() {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
    let bytes = format!(
        r#"{{"specversion":"1.0","id":"1","type":"t","source":"/s","time":"{}"}}"#,
        chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%S%.6fZ")
    );
    let sdk: cloudevents::Event = serde_json::from_str(&bytes).unwrap();
    assert_eq!(
        sdk.time().unwrap().timestamp_micros(),
        1_700_000_000_123_456
    );
}
