//! The rules of CloudEvents 1.0.2 for attribute values, each returning the
//! reason a person can act on. Both readers use them: the general parser for
//! every member, the fast one for what it reads (so they cannot disagree).

use std::borrow::Cow;
use std::fmt;

use crate::escape::{quoted, ticked};

/// A JSON value read where an attribute is, kept only as far as the rules
/// need it.
pub(super) enum Val<'de> {
    Str(Cow<'de, str>),
    Bool(bool),
    Int(i128),
    Float(f64),
    Null,
    Object,
    Array,
}

impl Val<'_> {
    /// What the value is, for a reason: `null`, `a number (1.5)`, `an object`.
    pub(super) fn what(&self) -> String {
        match self {
            Val::Str(s) => format!("the string {}", quoted(s)),
            Val::Bool(b) => format!("a boolean ({b})"),
            Val::Int(n) => format!("a number ({n})"),
            Val::Float(x) => format!("a number ({x})"),
            Val::Null => "null".to_owned(),
            Val::Object => "an object".to_owned(),
            Val::Array => "an array".to_owned(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Val<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Val<'de>, E> {
                Ok(Val::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
                Ok(Val::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
                Ok(Val::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
                Ok(Val::Float(v))
            }
            fn visit_unit<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_none<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Val<'de>, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Val::Object)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Val<'de>, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Val::Array)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether `c` is a character a CloudEvents String must not contain: a
/// control character (U+0000-U+001F, U+007F-U+009F) or a noncharacter
/// (U+FDD0-U+FDEF, and the last two code points of every plane). Surrogates
/// cannot occur in a Rust string; JSON escapes of lone ones are rejected by
/// the JSON reader.
fn forbidden(c: char) -> bool {
    let n = c as u32;
    n <= 0x1f
        || (0x7f..=0x9f).contains(&n)
        || (0xfdd0..=0xfdef).contains(&n)
        || (n & 0xfffe) == 0xfffe
}

/// Whether every character of `s` is allowed in a CloudEvents String.
pub(super) fn chars_ok(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(forbidden)
}

/// Checks a String value: no forbidden character, and not empty when the
/// attribute requires it. The reason starts after the attribute's name.
pub(super) fn string(s: &str, non_empty: bool) -> Result<(), String> {
    if non_empty && s.is_empty() {
        return Err("is empty, expected a non-empty string".to_owned());
    }
    if chars_ok(s) {
        return Ok(());
    }
    let (at, c) = s
        .chars()
        .enumerate()
        .find(|(_, c)| forbidden(*c))
        .unwrap_or((0, '\0'));
    let kind = if (c as u32) < 0xa0 {
        "the control character"
    } else {
        "the noncharacter"
    };
    Err(format!(
        "contains {kind} U+{:04X} at character {at} ({}); CloudEvents strings must not",
        c as u32,
        quoted(s)
    ))
}

/// An attribute name: lower-case ASCII letters and digits, at least one
/// (CloudEvents 1.0.2 recommends at most 20 characters; longer is accepted).
pub(super) fn attribute_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Ok(());
    }
    let why = if name.is_empty() {
        "is empty"
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        "has upper-case letters"
    } else {
        "has characters other than a-z and 0-9"
    };
    Err(format!(
        "extension attribute {} {why}: CloudEvents attribute names are lower-case letters and digits only (e.g. `{}`)",
        ticked(name),
        suggest_name(name)
    ))
}

/// A valid spelling of an invalid name (lower-cased, other characters dropped).
fn suggest_name(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(20)
        .collect();
    if s.is_empty() { "myext".to_owned() } else { s }
}

/// An extension value: a String, a Boolean or an Integer (32-bit signed);
/// the reason starts after the attribute's name.
pub(super) fn extension_value(v: &Val<'_>) -> Result<(), String> {
    const EXPECTED: &str = "expected a string, a boolean or an integer";
    match v {
        Val::Str(s) => string(s, false),
        Val::Bool(_) | Val::Null => Ok(()),
        Val::Int(n) if i32::try_from(*n).is_ok() => Ok(()),
        Val::Int(n) => Err(format!(
            "is {n}, outside the CloudEvents Integer range (-2147483648 to 2147483647); write it as a string"
        )),
        Val::Float(_) => Err(format!(
            "is {}: a CloudEvents Integer has no fraction or exponent ({EXPECTED})",
            v.what()
        )),
        other => Err(format!("is {}, {EXPECTED}", other.what())),
    }
}

/// A `time` value: RFC 3339 with a UTC offset (`Z` or `±HH:MM`) and a
/// date and time of day that exist. The reason starts after the name.
pub(super) fn time(s: &str) -> Result<(), String> {
    time_error(s.as_bytes()).map_or(Ok(()), |why| {
        Err(format!(
            "is {}, not an RFC 3339 timestamp: {why}",
            quoted(s)
        ))
    })
}

/// Why `b` is not an RFC 3339 `date-time`; `None` when it is one.
fn time_error(b: &[u8]) -> Option<String> {
    const SHAPE: &str = "expected e.g. `2026-11-27T11:01:30Z` or `2026-11-27T12:01:30.5+01:00`";
    let digits = |at: usize, n: usize| -> Option<u32> {
        let part = b.get(at..at + n)?;
        part.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    let (Some(year), Some(month), Some(day)) = (digits(0, 4), digits(5, 2), digits(8, 2)) else {
        return Some(SHAPE.to_owned());
    };
    if !(sep(4, b"-") && sep(7, b"-")) {
        return Some(SHAPE.to_owned());
    }
    if b.len() == 10 {
        return Some("it is a date without a time of day".to_owned());
    }
    if !sep(10, b"Tt") {
        return Some(format!(
            "the date and the time must be separated by `T` ({SHAPE})"
        ));
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11, 2), digits(14, 2), digits(17, 2))
    else {
        return Some(SHAPE.to_owned());
    };
    if !(sep(13, b":") && sep(16, b":")) {
        return Some(SHAPE.to_owned());
    }
    let mut at = 19;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Some(format!("a `.` must be followed by digits ({SHAPE})"));
        }
    }
    match b.get(at) {
        None => return Some("it has no UTC offset: add `Z` (UTC) or `+HH:MM`".to_owned()),
        Some(b'Z' | b'z') if b.len() == at + 1 => {}
        Some(b'+' | b'-') if b.len() == at + 6 && sep(at + 3, b":") => {
            let (Some(oh), Some(om)) = (digits(at + 1, 2), digits(at + 4, 2)) else {
                return Some(SHAPE.to_owned());
            };
            if oh > 23 || om > 59 {
                return Some(format!("the UTC offset {oh:02}:{om:02} does not exist"));
            }
        }
        _ => return Some(SHAPE.to_owned()),
    }
    if !(1..=12).contains(&month) {
        return Some(format!("month {month:02} does not exist"));
    }
    let days = days_in(year, month);
    if day == 0 || day > days {
        return Some(format!(
            "{year:04}-{month:02}-{day:02} is not a date ({year:04}-{month:02} has {days} days)"
        ));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Some(format!(
            "{hour:02}:{minute:02}:{second:02} is not a time of day"
        ));
    }
    None
}

/// The number of days of `month` (1-12) in `year` (Gregorian).
fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whether `time` passes [`time`] (for the fast reader: no reason built).
/// What this crate writes (`2026-11-27T11:01:30.123456Z`) is checked by
/// position; anything else by the full rules.
pub(super) fn time_ok(time: &str) -> bool {
    let b = time.as_bytes();
    if b.len() != 27 || b[19] != b'.' || b[26] != b'Z' {
        return time_error(b).is_none();
    }
    let d = |i: usize| u32::from(b[i].wrapping_sub(b'0'));
    let n2 = |i: usize| d(i) * 10 + d(i + 1);
    let digits_ok = [
        0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25,
    ]
    .iter()
    .all(|&i| d(i) < 10);
    let (year, month, day) = (n2(0) * 100 + n2(2), n2(5), n2(8));
    digits_ok
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in(year, month)
        && n2(11) < 24
        && n2(14) < 60
        && n2(17) <= 60
}

/// A `datacontenttype`: a media type (RFC 2046) `type/subtype`, parameters
/// after `;` allowed. The reason starts after the name.
pub(super) fn media_type(s: &str) -> Result<(), String> {
    fn token(t: &str) -> bool {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    }
    let essence = s.split(';').next().unwrap_or(s).trim();
    match essence.split_once('/') {
        Some((ty, sub)) if token(ty) && token(sub) => Ok(()),
        _ => Err(format!(
            "is {}, not a media type (expected e.g. `application/json`)",
            quoted(s)
        )),
    }
}

/// Whether a `datacontenttype` declares JSON data: `*/json` or `*/*+json`
/// once stripped of parameters (JSON format 3.1.1); absent means JSON.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct.split(';').next().unwrap_or(ct).trim();
    let Some((_, sub)) = essence.split_once('/') else {
        return false;
    };
    sub.eq_ignore_ascii_case("json")
        || sub
            .len()
            .checked_sub(5)
            .is_some_and(|at| sub.is_char_boundary(at) && sub[at..].eq_ignore_ascii_case("+json"))
}

/// A URI (`dataschema`, `schemaurl`): absolute, as the CloudEvents SDKs
/// parse it. The reason starts after the name.
pub(super) fn uri(s: &str) -> Result<(), String> {
    use cloudevents::event::TryIntoUrl;
    s.into_url()
        .map(drop)
        .map_err(|e| format!("is {}, not an absolute URI ({e})", quoted(s)))
}

/// The value of a base64 digit of the standard alphabet (RFC 4648 §4).
fn digit(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard, padded base64 (RFC 4648 §4), rejecting anything else:
/// other characters, a length that is not a multiple of 4, misplaced `=`,
/// non-zero bits after the last byte. `out` gets the bytes when given.
fn base64(s: &str, mut out: Option<&mut Vec<u8>>) -> Result<(), String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return Err(format!(
            "is not valid base64: its length ({}) is not a multiple of 4 (standard base64 is padded with `=`)",
            b.len()
        ));
    }
    for (n, quad) in b.chunks_exact(4).enumerate() {
        let last = (n + 1) * 4 == b.len();
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(format!(
                "is not valid base64: misplaced `=` at byte {}",
                n * 4 + quad.iter().position(|&c| c == b'=').unwrap_or(0)
            ));
        }
        let mut acc = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            let Some(d) = digit(c) else {
                return Err(format!(
                    "is not valid base64: byte {} is {}, not a base64 digit (A-Z, a-z, 0-9, +, /)",
                    n * 4 + i,
                    crate::escape::escape(&char::from(c).to_string())
                ));
            };
            acc |= d << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        let kept = 3 - pad;
        if pad > 0 && bytes[kept..].iter().any(|&x| x != 0) {
            return Err("is not valid base64: its last digit has bits after the data".to_owned());
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(&bytes[..kept]);
        }
    }
    Ok(())
}

/// Checks base64 text (`data_base64`); the reason starts after the name.
pub(super) fn base64_text(s: &str) -> Result<(), String> {
    base64(s, None)
}

/// The bytes of checked base64 text.
pub(super) fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    base64(s, Some(&mut out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        assert!(string("ok ☕", true).is_ok());
        assert!(string("", false).is_ok());
        assert_eq!(
            string("", true).unwrap_err(),
            "is empty, expected a non-empty string"
        );
        for (s, code) in [
            ("a\nb", "U+000A"),
            ("\0", "U+0000"),
            ("x\u{7f}", "U+007F"),
            ("x\u{85}", "U+0085"),
            ("\u{9f}", "U+009F"),
            ("\u{fdd0}", "U+FDD0"),
            ("\u{fdef}", "U+FDEF"),
            ("\u{fffe}", "U+FFFE"),
            ("\u{ffff}", "U+FFFF"),
            ("\u{1fffe}", "U+1FFFE"),
            ("\u{10ffff}", "U+10FFFF"),
        ] {
            let why = string(s, true).unwrap_err();
            assert!(why.contains(code), "{s:?}: {why}");
            assert!(!why.contains('\n') && !why.contains('\0'), "{why}");
        }
        for ok in [
            "\u{a0}",
            "\u{fdcf}",
            "\u{fdf0}",
            "\u{fffd}",
            "\u{1f600}",
            "\u{10fffd}",
        ] {
            assert!(string(ok, true).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn names() {
        assert!(attribute_name("traceparent").is_ok());
        assert!(attribute_name("a1").is_ok());
        assert!(attribute_name("averyveryverylongextensionname").is_ok());
        let why = attribute_name("Trace-Parent").unwrap_err();
        assert!(
            why.contains("`Trace-Parent` has upper-case letters"),
            "{why}"
        );
        assert!(why.contains("`traceparent`"), "{why}");
        assert!(
            attribute_name("trace_parent")
                .unwrap_err()
                .contains("other than a-z")
        );
        assert!(attribute_name("").is_err());
        assert!(attribute_name("é").is_err());
    }

    #[test]
    fn extension_values() {
        assert!(extension_value(&Val::Str("x".into())).is_ok());
        assert!(extension_value(&Val::Str("".into())).is_ok());
        assert!(extension_value(&Val::Bool(true)).is_ok());
        assert!(extension_value(&Val::Int(-2_147_483_648)).is_ok());
        assert!(extension_value(&Val::Int(2_147_483_647)).is_ok());
        assert!(
            extension_value(&Val::Int(2_147_483_648))
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            extension_value(&Val::Float(1.5))
                .unwrap_err()
                .contains("no fraction")
        );
        assert!(
            extension_value(&Val::Object)
                .unwrap_err()
                .contains("is an object")
        );
        assert!(
            extension_value(&Val::Array)
                .unwrap_err()
                .contains("is an array")
        );
        assert!(extension_value(&Val::Str("a\nb".into())).is_err());
    }

    #[test]
    fn times() {
        for ok in [
            "2026-11-27T11:01:30Z",
            "2026-11-27T11:01:30.123456Z",
            "2026-11-27t11:01:30z",
            "2026-11-27T11:01:30+01:00",
            "2026-11-27T11:01:30.5-05:30",
            "2024-02-29T00:00:00Z",
            "2000-02-29T23:59:60Z",
            "0000-01-01T00:00:00Z",
        ] {
            assert!(time(ok).is_ok(), "{ok}: {:?}", time(ok));
            let chrono = chrono::DateTime::parse_from_rfc3339(ok);
            assert!(chrono.is_ok(), "chrono reads what we accept: {ok}");
        }
        for (bad, why) in [
            ("2026-11-27T11:01:30", "no UTC offset"),
            ("2026-11-27T11:01:30.123", "no UTC offset"),
            (
                "2026-02-30T00:00:00Z",
                "2026-02-30 is not a date (2026-02 has 28 days)",
            ),
            ("2025-02-29T00:00:00Z", "2025-02 has 28 days"),
            ("1900-02-29T00:00:00Z", "1900-02 has 28 days"),
            ("2026-04-31T00:00:00Z", "has 30 days"),
            ("2026-13-01T00:00:00Z", "month 13"),
            ("2026-00-01T00:00:00Z", "month 00"),
            ("2026-01-00T00:00:00Z", "not a date"),
            ("2026-01-01T24:00:00Z", "24:00:00 is not a time of day"),
            ("2026-01-01T23:60:00Z", "not a time of day"),
            ("2026-01-01T23:00:61Z", "not a time of day"),
            ("2026-01-01T00:00:00+24:00", "offset 24:00"),
            ("2026-01-01T00:00:00+0100", "expected e.g."),
            ("2026-01-01 00:00:00Z", "separated by `T`"),
            ("2026-01-01", "without a time of day"),
            ("2026-01-01T00:00:00.Z", "followed by digits"),
            ("2026-01-01T00:00:00ZZ", "expected e.g."),
            ("yesterday", "expected e.g."),
            ("", "expected e.g."),
        ] {
            let got = time(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
            assert!(!time_ok(bad));
        }
        // The fast check of what this crate writes agrees with the rules.
        for ok in [
            "2026-11-27T11:01:30.123456Z",
            "2024-02-29T23:59:60.000000Z",
            "0000-01-01T00:00:00.000000Z",
        ] {
            assert!(time_ok(ok), "{ok}");
        }
        for bad in [
            "2026-02-29T00:00:00.000000Z",
            "2026-13-01T00:00:00.000000Z",
            "2026-00-01T00:00:00.000000Z",
            "2026-01-32T00:00:00.000000Z",
            "2026-01-00T00:00:00.000000Z",
            "2026-01-01T24:00:00.000000Z",
            "2026-01-01T00:60:00.000000Z",
            "2026-01-01T00:00:61.000000Z",
            "2026-01-01T00:00:00.00000xZ",
            "2026/01-01T00:00:00.000000Z",
            "2026-01-01 00:00:00.000000Z",
            "+026-01-01T00:00:00.000000Z",
        ] {
            assert!(!time_ok(bad), "{bad}");
            assert!(time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_types() {
        assert!(media_type("application/json").is_ok());
        assert!(media_type("text/plain; charset=utf-8").is_ok());
        assert!(media_type("application/vnd.apache.thrift.binary").is_ok());
        assert!(media_type("json").is_err());
        assert!(media_type("").is_err());
        assert!(media_type("a/b c").is_err());
        assert!(is_json_media_type(None));
        assert!(is_json_media_type(Some("application/json")));
        assert!(is_json_media_type(Some("text/json; charset=utf-8")));
        assert!(is_json_media_type(Some(
            "application/cloudevents+json; charset=utf-8"
        )));
        assert!(is_json_media_type(Some("application/vnd.x+JSON")));
        assert!(!is_json_media_type(Some("text/plain")));
        assert!(!is_json_media_type(Some("application/jsonx")));
        assert!(!is_json_media_type(Some("application/xml")));
    }

    #[test]
    fn uris() {
        assert!(uri("https://example.com/schema.json").is_ok());
        assert!(uri("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66").is_ok());
        assert!(
            uri("/relative")
                .unwrap_err()
                .contains("not an absolute URI")
        );
    }

    #[test]
    fn base64_is_standard_and_padded() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg==", b"foob"),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
        ] {
            assert_eq!(base64_decode(text).unwrap(), bytes, "{text}");
        }
        for (bad, why) in [
            ("Zg", "multiple of 4"),
            ("Zg=", "multiple of 4"),
            ("Z===", "misplaced `=`"),
            ("Zg==Zg==", "misplaced `=`"),
            ("Zm9v!A==", "byte 4 is !"),
            ("Zh==", "bits after the data"),
            ("Zm9=", "bits after the data"),
            ("Zm 9", "not a base64 digit"),
            ("Zm-_", "not a base64 digit"),
        ] {
            let got = base64_text(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
