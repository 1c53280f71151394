//! One payload per rule of the validator (eventbus-core's codec), and the
//! verdict every reader must give: the same on every transport, for a typed
//! handler and a global one. Shared by the memory and the Redis tests.
#![allow(dead_code)]

/// The CloudEvents type of every payload (the typed handler's `Probe`).
pub const TYPE: &str = "validation.probe";

/// What the readers must make of a payload.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Invalid: both handlers dead-letter it with a reason containing this.
    Rejected(String),
    /// A valid CloudEvent that the typed handler cannot take (its reason
    /// contains this); the global handler receives it.
    TypedRejected(String),
    /// Valid: both handlers receive it; its data carries this `n`.
    Accepted(u32),
}

/// One payload and its verdict.
#[derive(Debug, Clone)]
pub struct Case {
    /// The rule it exercises.
    pub rule: &'static str,
    pub payload: Vec<u8>,
    pub expect: Expect,
    /// Whether the payload has a top-level `specversion`: on pub/sub, one
    /// without is bare (legacy) data, wrapped into a CloudEvent of the
    /// channel's type by the transport's contract, so it is not a case there.
    pub structured: bool,
}

/// A valid probe event with `members` spliced in before `data`.
fn event(id: &str, members: &str, n: u32, tag: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","type":"{TYPE}","source":"/validation"{members},"data":{{"run":"{tag}","n":{n}}}}}"#
    )
}

fn rejected(rule: &'static str, payload: impl Into<Vec<u8>>, reason: &str) -> Case {
    let payload = payload.into();
    Case {
        rule,
        structured: contains(&payload, b"\"specversion\""),
        payload,
        expect: Expect::Rejected(reason.into()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The corpus for the run `tag` (ids and data carry it).
pub fn cases(tag: &str) -> Vec<Case> {
    let ok = |i: u32, members: &str| event(&format!("{tag}-ok-{i}"), members, i, tag);
    let bad = |i: u32, members: &str| event(&format!("{tag}-bad-{i}"), members, 1000 + i, tag);
    let big = "x".repeat(1 << 20);
    let mut cases = vec![
        rejected("not JSON", format!("not json {tag}"), "message is not JSON"),
        rejected(
            "not UTF-8",
            [
                format!(r#"{{"specversion":"1.0","id":"{tag}"#).as_bytes(),
                b"\xff\"}",
            ]
            .concat(),
            "message is not JSON: it is not valid UTF-8",
        ),
        rejected(
            "exactly one JSON value",
            format!("{}{}", bad(1, ""), bad(1, "")),
            "message is more than one JSON value",
        ),
        rejected(
            "an object",
            format!(r#"["{tag}"]"#),
            "message is not a CloudEvent: it is an array, expected a JSON object",
        ),
        rejected(
            "required specversion",
            format!(r#"{{"id":"{tag}","type":"{TYPE}","source":"/v"}}"#),
            "required attribute `specversion` is missing",
        ),
        rejected(
            "required id",
            bad(2, "").replace(&format!(r#""id":"{tag}-bad-2","#), ""),
            "message is not a CloudEvent: required attribute `id` is missing",
        ),
        rejected(
            "required source",
            bad(3, "").replace(r#","source":"/validation""#, ""),
            "required attribute `source` is missing",
        ),
        rejected(
            "id null",
            bad(4, "").replace(&format!(r#""id":"{tag}-bad-4""#), r#""id":null"#),
            "attribute `id` is null, expected a non-empty string",
        ),
        rejected(
            "id a number",
            bad(5, "").replace(&format!(r#""id":"{tag}-bad-5""#), r#""id":5"#),
            "attribute `id` is a number (5), expected a non-empty string",
        ),
        rejected(
            "id empty",
            bad(6, "").replace(&format!(r#""id":"{tag}-bad-6""#), r#""id":"""#),
            "attribute `id` is empty, expected a non-empty string",
        ),
        rejected(
            "source empty",
            bad(7, "").replace(r#""source":"/validation""#, r#""source":"""#),
            "attribute `source` is empty, expected a non-empty string",
        ),
        rejected(
            "type empty",
            bad(8, "").replace(&format!(r#""type":"{TYPE}""#), r#""type":"""#),
            "attribute `type` is empty, expected a non-empty string",
        ),
        rejected(
            "source an object",
            bad(9, "").replace(r#""source":"/validation""#, r#""source":{"uri":"/v"}"#),
            "attribute `source` is an object, expected a non-empty string",
        ),
        rejected(
            "specversion known",
            bad(10, "").replace(r#""specversion":"1.0""#, r#""specversion":"2.0""#),
            "unsupported CloudEvents specversion \"2.0\"",
        ),
        rejected(
            "no control character (newline in type)",
            bad(11, "").replace(
                &format!(r#""type":"{TYPE}""#),
                &format!(r#""type":"{TYPE}\nINFO forged line""#),
            ),
            "attribute `type` contains the control character U+000A",
        ),
        rejected(
            "no control character (NUL)",
            bad(12, r#","subject":"a\u0000b""#),
            "attribute `subject` contains the control character U+0000",
        ),
        rejected(
            "no control character (C1)",
            bad(13, r#","subject":"a\u0085b""#),
            "attribute `subject` contains the control character U+0085",
        ),
        rejected(
            "no control character (DEL, raw)",
            bad(14, ",\"subject\":\"a\u{7f}b\""),
            "attribute `subject` contains the control character U+007F",
        ),
        rejected(
            "no noncharacter",
            bad(15, r#","subject":"\uFDD0""#),
            "attribute `subject` contains the noncharacter U+FDD0",
        ),
        rejected(
            "no noncharacter (U+xFFFE)",
            bad(16, ",\"subject\":\"\u{10fffe}\""),
            "attribute `subject` contains the noncharacter U+10FFFE",
        ),
        rejected(
            "no lone surrogate",
            bad(17, r#","subject":"\uD800""#),
            "attribute `subject` is not a valid CloudEvents string",
        ),
        rejected(
            "subject non-empty",
            bad(18, r#","subject":"""#),
            "attribute `subject` is empty",
        ),
        rejected(
            "time with an offset",
            bad(19, r#","time":"2026-11-27T11:01:30""#),
            "attribute `time` is \"2026-11-27T11:01:30\", not an RFC 3339 timestamp: it has no UTC offset",
        ),
        rejected(
            "time on a real date",
            bad(20, r#","time":"2026-02-30T11:01:30Z""#),
            "2026-02-30 is not a date (2026-02 has 28 days)",
        ),
        rejected(
            "time a string",
            bad(21, r#","time":1764241290"#),
            "attribute `time` is a number (1764241290), expected an RFC 3339 timestamp string",
        ),
        rejected(
            "datacontenttype a media type",
            bad(22, r#","datacontenttype":"json""#),
            "attribute `datacontenttype` is \"json\", not a media type",
        ),
        rejected(
            "dataschema an absolute URI",
            bad(23, r#","dataschema":"probe.json""#),
            "attribute `dataschema` is \"probe.json\", not an absolute URI",
        ),
        rejected(
            "extension name lower-case",
            bad(24, r#","traceParent":"00-x""#),
            "extension attribute `traceParent` has upper-case letters",
        ),
        rejected(
            "extension name a-z0-9",
            bad(25, r#","trace-id":"x""#),
            "extension attribute `trace-id` has characters other than a-z and 0-9",
        ),
        rejected(
            "extension value not an object",
            bad(26, r#","meta":{"a":1}"#),
            "extension attribute `meta` is an object, expected a string, a boolean or an integer",
        ),
        rejected(
            "extension value not an array",
            bad(27, r#","tags":["a"]"#),
            "extension attribute `tags` is an array",
        ),
        rejected(
            "extension value not a float",
            bad(28, r#","ratio":0.5"#),
            "extension attribute `ratio` is a number (0.5): a CloudEvents Integer has no fraction or exponent",
        ),
        rejected(
            "extension integer in range",
            bad(29, r#","big":4294967296"#),
            "extension attribute `big` is 4294967296, outside the CloudEvents Integer range",
        ),
        rejected(
            "data xor data_base64",
            bad(30, r#","data_base64":"AAAA""#),
            "`data` and `data_base64` are both present",
        ),
        rejected(
            "data_base64 valid base64",
            format!(
                r#"{{"specversion":"1.0","id":"{tag}-bad-31","type":"{TYPE}","source":"/v","data_base64":"not base64!"}}"#
            ),
            "`data_base64` is not valid base64",
        ),
        rejected(
            "non-JSON data is a string",
            bad(32, r#","datacontenttype":"text/plain""#),
            "`data` is an object, but `datacontenttype` `text/plain` is not JSON",
        ),
        rejected(
            "no duplicate member",
            bad(33, &format!(r#","id":"{tag}-again""#)),
            "duplicate attribute `id`",
        ),
        rejected(
            "no duplicate extension",
            bad(34, r#","ext":"a","ext":"b""#),
            "duplicate attribute `ext`",
        ),
        rejected(
            "0.3 data encoding is base64",
            format!(
                r#"{{"specversion":"0.3","id":"{tag}-bad-35","type":"{TYPE}","source":"/v","datacontentencoding":"quoted-printable","data":"x"}}"#
            ),
            "attribute `datacontentencoding` is \"quoted-printable\": CloudEvents 0.3 data can only be encoded as `base64`",
        ),
        rejected(
            "a 1 MiB value is not quoted in full",
            bad(36, &format!(r#","time":"{big}""#)),
            "attribute `time` is \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\" (1048576 bytes), not an RFC 3339 timestamp",
        ),
    ];
    cases.extend([
        Case {
            rule: "binary data is not JSON for a typed handler",
            payload: format!(
                r#"{{"specversion":"1.0","id":"{tag}-bin-1","type":"{TYPE}","source":"/v","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}}"#
            )
            .into_bytes(),
            expect: Expect::TypedRejected(format!(
                "event `{TYPE}` carries binary data (`data_base64`, content type `application/octet-stream`), which a typed handler cannot read as JSON"
            )),
            structured: true,
        },
        Case {
            rule: "0.3 base64 data is binary",
            payload: format!(
                r#"{{"specversion":"0.3","id":"{tag}-bin-2","type":"{TYPE}","source":"/v","datacontentencoding":"base64","data":"AAEC/w=="}}"#
            )
            .into_bytes(),
            expect: Expect::TypedRejected("carries binary data".into()),
            structured: true,
        },
        Case {
            rule: "data that does not fit names the field",
            payload: format!(
                r#"{{"specversion":"1.0","id":"{tag}-fit-1","type":"{TYPE}","source":"/v","data":{{"run":"{tag}","n":"{big}"}}}}"#
            )
            .into_bytes(),
            expect: Expect::TypedRejected(format!(
                "data of `{TYPE}` does not fit Probe: data.n: invalid type: string \"xxxx"
            )),
            structured: true,
        },
    ]);
    let long = "averyveryverylongextensionname";
    for (i, members, rule) in [
        (1, String::new(), "the plain layout"),
        (
            2,
            r#","subject":null,"time":null,"dataschema":null,"unset":null"#.to_owned(),
            "null means absent",
        ),
        (
            3,
            format!(r#","{long}":"v","flag":true,"count":-2147483648"#),
            "extension names longer than 20, boolean and integer values",
        ),
        (
            4,
            r#","time":"2026-11-27t11:01:30.5+01:00""#.to_owned(),
            "time with an offset, lower-case t",
        ),
        (
            5,
            r#","subject":"Caf\u00e9 \uD83D\uDE00 \"q\"""#.to_owned(),
            "escapes and surrogate pairs",
        ),
        (
            6,
            r#","datacontenttype":"application/json; charset=utf-8""#.to_owned(),
            "a JSON media type with parameters",
        ),
    ] {
        cases.push(Case {
            rule,
            payload: ok(i, &members).into_bytes(),
            expect: Expect::Accepted(i),
            structured: true,
        });
    }
    cases.push(Case {
        rule: "members in any order",
        payload: format!(
            r#"{{"data":{{"run":"{tag}","n":7}},"source":"/v","type":"{TYPE}","id":"{tag}-ok-7","specversion":"1.0"}}"#
        )
        .into_bytes(),
        expect: Expect::Accepted(7),
        structured: true,
    });
    cases.push(Case {
        rule: "CloudEvents 0.3, read as 1.0",
        payload: format!(
            r#"{{"specversion":"0.3","id":"{tag}-ok-8","type":"{TYPE}","source":"/v","schemaurl":"https://example.com/probe.json","datacontenttype":"application/json","time":"2026-11-27T11:01:30Z","data":{{"run":"{tag}","n":8}}}}"#
        )
        .into_bytes(),
        expect: Expect::Accepted(8),
        structured: true,
    });
    cases
}

/// The `n` of every accepted case, sorted.
pub fn accepted(cases: &[Case]) -> Vec<u32> {
    let mut n: Vec<u32> = cases
        .iter()
        .filter_map(|c| match c.expect {
            Expect::Accepted(n) => Some(n),
            _ => None,
        })
        .collect();
    n.sort_unstable();
    n
}

/// Checks a reason: it contains `expected`, names no more than about 300
/// characters, and carries no raw control character.
pub fn check_reason(rule: &str, reason: &str, expected: &str) {
    assert!(
        reason.contains(expected),
        "{rule}: expected a reason containing {expected:?}, got {reason:?}"
    );
    assert!(
        reason.chars().count() <= 300,
        "{rule}: reason of {} characters",
        reason.chars().count()
    );
    assert!(
        !reason.chars().any(char::is_control),
        "{rule}: raw control character in {reason:?}"
    );
}

/// Checks what a transport did with the corpus: each rejected payload
/// dead-lettered once by each handler's group with its reason, each
/// typed-rejected one by the typed group only, and every valid one handled
/// by both; `typed` are the `n` the typed handler saw, `global` the events
/// the global handler saw.
pub fn check(
    cases: &[&Case],
    dead: &[eventbus::transport::DeadLetter],
    typed: &[u32],
    global: &[eventbus::CloudEvent],
    groups: [&str; 2],
) {
    use eventbus::cloudevents::AttributesReader;
    let [typed_group, global_group] = groups;
    let dead_in = |group: &str, case: &Case| -> Vec<&eventbus::transport::DeadLetter> {
        dead.iter()
            .filter(|d| d.group == group && d.payload[..] == case.payload[..])
            .collect()
    };
    let id_of = |case: &Case| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&case.payload).expect("a valid case is JSON");
        v["id"].as_str().expect("an id").to_owned()
    };
    let global_saw = |case: &Case| global.iter().filter(|e| e.id() == id_of(case)).count();
    for case in cases {
        match &case.expect {
            Expect::Rejected(reason) => {
                for group in [typed_group, global_group] {
                    let d = dead_in(group, case);
                    assert_eq!(d.len(), 1, "{}: dead-lettered once by {group}", case.rule);
                    check_reason(case.rule, &d[0].error, reason);
                    assert_eq!(d[0].attempts, 1, "{}: not retried", case.rule);
                }
            }
            Expect::TypedRejected(reason) => {
                let d = dead_in(typed_group, case);
                assert_eq!(
                    d.len(),
                    1,
                    "{}: dead-lettered once by {typed_group}",
                    case.rule
                );
                check_reason(case.rule, &d[0].error, reason);
                assert!(dead_in(global_group, case).is_empty(), "{}", case.rule);
                assert_eq!(
                    global_saw(case),
                    1,
                    "{}: the global handler got it",
                    case.rule
                );
            }
            Expect::Accepted(_) => {
                for group in [typed_group, global_group] {
                    let d = dead_in(group, case);
                    assert!(
                        d.is_empty(),
                        "{}: {group} rejected it: {:?}",
                        case.rule,
                        d[0].error
                    );
                }
                assert_eq!(
                    global_saw(case),
                    1,
                    "{}: the global handler got it",
                    case.rule
                );
            }
        }
    }
    let mut typed = typed.to_vec();
    typed.sort_unstable();
    let owned: Vec<Case> = cases.iter().map(|c| (*c).clone()).collect();
    assert_eq!(
        typed,
        accepted(&owned),
        "the typed handler got each valid event once"
    );
    // The global handler reads 0.3 as 1.0 and binary data as bytes.
    for e in global {
        assert_eq!(
            e.specversion(),
            eventbus::cloudevents::event::SpecVersion::V10
        );
        if e.id().ends_with("-ok-8") || e.id().ends_with("-py-ok-21") {
            assert_eq!(
                e.dataschema().map(|u| u.as_str()),
                Some("https://example.com/probe.json")
            );
        }
        if e.id().contains("-bin-") {
            assert_eq!(
                e.data(),
                Some(&eventbus::cloudevents::Data::Binary(vec![0, 1, 2, 255]))
            );
        }
    }
}

/// Everything `tracing` writes while the guard lives (this thread only:
/// use a current-thread runtime).
#[derive(Clone, Default)]
pub struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    /// Captures every level, as the default `fmt` subscriber writes it.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let buf = Self::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (buf, tracing::subscriber::set_default(subscriber))
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// Checks that no line was forged or carries a raw NUL: every line
    /// starts as the subscriber writes one (its own timestamp), none with
    /// the hostile text `forged` (which appears, if at all, escaped in the
    /// middle of a line).
    pub fn assert_escaped(&self, forged: &[&str]) {
        let bytes = self.bytes();
        assert!(!bytes.contains(&0), "a raw NUL reached the log");
        let out = String::from_utf8(bytes).expect("UTF-8 log");
        for line in out.lines() {
            assert!(
                line.as_bytes().first().is_some_and(u8::is_ascii_digit),
                "a line not written by the subscriber: {line:?}\n{out}"
            );
            for f in forged {
                assert!(!line.starts_with(f), "a forged line: {line:?}\n{out}");
            }
        }
    }
}

/// Writes CloudEvents 0.3 events with the Python SDK (pinned in
/// `scripts/python-peers.txt`, run through `testkit::python()`), one JSON per line:
/// with its 2.x API (`cloudevents.core`) when there is one, and with its
/// 1.x API (`cloudevents.http`, kept as `cloudevents.v1.http` in 2.x).
const PY_WRITE_03: &str = r#"
import sys
tag, ty = sys.argv[1], sys.argv[2]
out = []
try:
    from cloudevents.core.v03.event import CloudEvent as Core03
    from cloudevents.core.formats.json import JSONFormat
    fmt = JSONFormat()
    out.append(fmt.write(Core03({"id": f"{tag}-py-ok-21", "source": "/python", "type": ty,
        "specversion": "0.3", "datacontenttype": "application/json",
        "schemaurl": "https://example.com/probe.json", "subject": "core"},
        {"run": tag, "n": 21})).decode())
    out.append(fmt.write(Core03({"id": f"{tag}-py-bin-21", "source": "/python", "type": ty,
        "specversion": "0.3", "datacontenttype": "application/octet-stream"},
        bytes([0, 1, 2, 255]))).decode())
except ImportError:
    pass
try:
    from cloudevents.http import CloudEvent as Http, to_structured
except ImportError:
    from cloudevents.v1.http import CloudEvent as Http, to_structured
_, body = to_structured(Http({"id": f"{tag}-py-ok-22", "source": "/python", "type": ty,
    "specversion": "0.3", "datacontenttype": "application/json"}, {"run": tag, "n": 22}))
out.append(body.decode())
_, body = to_structured(Http({"id": f"{tag}-py-bin-22", "source": "/python", "type": ty,
    "specversion": "0.3", "datacontenttype": "application/octet-stream"}, bytes([0, 1, 2, 255])))
out.append(body.decode())
print("\n".join(out))
"#;

/// CloudEvents 0.3 events written by the real Python `cloudevents` SDK: valid
/// JSON ones (accepted, read as 1.0) and binary ones (base64, as each API
/// writes it: binary for a global handler, a reason for a typed one).
/// Fails with `testkit::python()`'s sentence when Python is missing.
pub fn python_cases(tag: &str) -> Vec<Case> {
    let out = testkit::python()
        .args(["-c", PY_WRITE_03, tag, TYPE])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Python SDK could not write its events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 from python");
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("the SDK wrote JSON");
            let id = v["id"].as_str().unwrap_or_default();
            let expect = match id.rsplit('-').next().and_then(|n| n.parse().ok()) {
                Some(n) if id.contains("-py-ok-") => Expect::Accepted(n),
                _ => Expect::TypedRejected(format!(
                    "event `{TYPE}` carries binary data (`data_base64`, content type `application/octet-stream`)"
                )),
            };
            Case {
                rule: "CloudEvents 0.3 written by the Python SDK",
                payload: line.as_bytes().to_vec(),
                expect,
                structured: true,
            }
        })
        .collect();
    assert!(cases.len() >= 2, "{text}");
    cases
}
