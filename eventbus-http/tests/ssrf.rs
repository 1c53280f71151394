//! The webhook guard against real sockets and a real reqwest client: sinks
//! on loopback are refused unless allow-listed, whether named by an IP
//! literal (checked by `check_url`) or by a name that resolves there
//! (checked by the client's resolver); redirects come back as answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::IntoResponse as _;
use eventbus_http::guard::{SinkError, SinkPolicy, classify};
use reqwest::{StatusCode, Url};

/// An axum server counting the requests it gets; it answers 200, a 302 to
/// `redirect`, or (with `delay`) 200 after a pause.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(bind: &str) -> std::io::Result<Self> {
        Self::answering(bind, None, Duration::ZERO).await
    }

    async fn answering(
        bind: &str,
        redirect: Option<String>,
        delay: Duration,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            let redirect = redirect.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                match redirect {
                    Some(to) => (StatusCode::FOUND, [(axum::http::header::LOCATION, to)], "")
                        .into_response(),
                    None => "received".into_response(),
                }
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Ok(Self { addr, hits, task })
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn url(s: &str) -> Url {
    Url::parse(s).expect("a valid URL")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

/// `check_url`'s refusal of `url`: the refused address and its reason.
fn refused(policy: &SinkPolicy, url: &str) -> (IpAddr, &'static str, String) {
    match policy.check_url(&self::url(url)) {
        Err(e @ SinkError::Refused { addr, reason, .. }) => (addr, reason, e.to_string()),
        other => panic!("{url}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn ip_literals_of_internal_addresses_are_refused_without_an_allow_list() {
    let receiver = Receiver::start("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let port = receiver.port();
    let policy = SinkPolicy::new();

    let cases = [
        (
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1",
            "a loopback address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "::ffff:127.0.0.1",
            "an IPv4-mapped loopback address",
        ),
        (
            format!("http://[64:ff9b::7f00:1]:{port}/"),
            "64:ff9b::7f00:1",
            "a NAT64 loopback address",
        ),
        (format!("http://[::1]:{port}/"), "::1", "a loopback address"),
        (
            format!("http://10.0.0.1:{port}/"),
            "10.0.0.1",
            "a private address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254",
            "a link-local address",
        ),
        // The URL parser's other spellings of 127.0.0.1 are the same literal.
        (
            format!("http://0x7f.1:{port}/"),
            "127.0.0.1",
            "a loopback address",
        ),
        (
            format!("http://2130706433:{port}/"),
            "127.0.0.1",
            "a loopback address",
        ),
        (
            "http://0.0.0.0/".to_owned(),
            "0.0.0.0",
            "an unspecified address",
        ),
    ];
    for (sink, addr, reason) in cases {
        let (got_addr, got_reason, message) = refused(&policy, &sink);
        assert_eq!((got_addr, got_reason), (ip(addr), reason), "{sink}");
        assert!(
            message.contains(&format!(
                "resolves to {addr}, {reason}; add its range to EVENTBUS_WEBHOOK_ALLOW"
            )),
            "{message}"
        );
    }

    let (_, _, message) = refused(&policy, "http://[::ffff:127.0.0.1]/");
    assert_eq!(
        message,
        "`http://[::ffff:7f00:1]/` resolves to ::ffff:127.0.0.1, an IPv4-mapped loopback address; \
         add its range to EVENTBUS_WEBHOOK_ALLOW to deliver to internal sinks",
        "the URL as parsed (WHATWG spells IPv6 in hex), the address as an address"
    );
    assert_eq!(receiver.hits(), 0);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
    let receiver = Receiver::start("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let policy = SinkPolicy::new();
    let sink = url(&format!("http://localhost:{}/hook", receiver.port()));
    policy
        .check_url(&sink)
        .expect("a host name passes check_url: the resolver checks it");

    let error = policy
        .client()
        .expect("a client")
        .post(sink)
        .body("{}")
        .send()
        .await
        .expect_err("the resolver refuses localhost");
    match SinkError::in_chain(&error) {
        Some(SinkError::Refused {
            target,
            addr,
            reason,
        }) => {
            assert_eq!(target, "localhost");
            assert!(addr.is_loopback(), "{addr}");
            assert_eq!(*reason, "a loopback address");
        }
        other => panic!("expected the resolver's refusal in {error:?}, got {other:?}"),
    }
    assert_eq!(receiver.hits(), 0, "nothing was sent");
}

#[tokio::test]
async fn an_allow_listed_range_is_delivered_to() {
    let receiver = Receiver::start("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let port = receiver.port();
    // localhost may resolve to ::1 as well as 127.0.0.1: both are allowed,
    // or the resolver rightly refuses the name for its ::1.
    let policy = SinkPolicy::new()
        .allow("127.0.0.0/8")
        .and_then(|p| p.allow("::1"))
        .expect("valid ranges");
    let client = policy.client().expect("a client");

    for sink in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let sink = url(&sink);
        policy.check_url(&sink).expect("allowed");
        let answer = client
            .post(sink.clone())
            .body("{}")
            .send()
            .await
            .expect("delivered");
        assert_eq!(answer.status(), StatusCode::OK, "{sink}");
    }
    assert_eq!(receiver.hits(), 2);

    // An IPv4 range covers the IPv4-mapped forms of its addresses.
    policy
        .check_url(&url(&format!("http://[::ffff:127.0.0.1]:{port}/")))
        .expect("::ffff:127.0.0.1 is 127.0.0.1");
    // ... and nothing else.
    let (addr, _, _) = refused(&policy, "http://10.0.0.1/");
    assert_eq!(addr, ip("10.0.0.1"));
}

#[tokio::test]
async fn ipv6_loopback_is_refused_unless_allowed() {
    let Ok(receiver) = Receiver::start("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let sink = url(&format!("http://[::1]:{}/", receiver.port()));
    let (addr, reason, _) = refused(&SinkPolicy::new(), sink.as_str());
    assert_eq!((addr, reason), (ip("::1"), "a loopback address"));

    let policy = SinkPolicy::new().allow("::1/128").expect("a valid range");
    policy.check_url(&sink).expect("allowed");
    let answer = policy
        .client()
        .expect("a client")
        .get(sink)
        .send()
        .await
        .expect("delivered");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(receiver.hits(), 1);
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let target = Receiver::start("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let location = format!("http://localhost:{}/internal", target.port());
    let sink = Receiver::answering("127.0.0.1:0", Some(location.clone()), Duration::ZERO)
        .await
        .expect("bind 127.0.0.1");
    // Even a redirect to an allowed address is not followed.
    let policy = SinkPolicy::new()
        .allow("127.0.0.0/8")
        .and_then(|p| p.allow("::1"))
        .expect("valid ranges");
    let answer = policy
        .client()
        .expect("a client")
        .post(url(&format!("http://127.0.0.1:{}/", sink.port())))
        .body("{}")
        .send()
        .await
        .expect("the sink answers");
    assert_eq!(answer.status(), StatusCode::FOUND);
    assert_eq!(answer.headers()["location"], location.as_str());
    assert_eq!(sink.hits(), 1);
    // Give a followed redirect the time to land, then check it did not.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        target.hits(),
        0,
        "the redirect's target never gets a request"
    );
}

#[tokio::test]
async fn https_only_refuses_http() {
    let receiver = Receiver::start("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let policy = SinkPolicy::new()
        .allow("127.0.0.0/8")
        .expect("a valid range")
        .https_only(true);
    let sink = url(&format!("http://127.0.0.1:{}/", receiver.port()));
    match policy.check_url(&sink) {
        Err(e @ SinkError::Insecure { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "`{sink}` is plain http and this policy delivers over https only; use an https:// URL"
            )
        ),
        other => panic!("expected Insecure, got {other:?}"),
    }
    policy
        .check_url(&url("https://hooks.example.com/in"))
        .expect("https is fine");
    // The client refuses it too, should check_url be skipped.
    let error = policy.client().expect("a client").get(sink).send().await;
    assert!(error.is_err(), "{error:?}");
    assert_eq!(receiver.hits(), 0);
}

#[test]
fn other_schemes_and_credentials_are_refused() {
    let policy = SinkPolicy::new();
    for sink in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
    ] {
        match policy.check_url(&url(sink)) {
            Err(SinkError::Scheme { url }) => assert_eq!(url, sink),
            other => panic!("{sink}: expected Scheme, got {other:?}"),
        }
    }
    for sink in [
        "https://alice:s3cret@example.com/in",
        "https://s3cret@example.com/in",
        "https://:s3cret@example.com/in",
    ] {
        match policy.check_url(&url(sink)) {
            Err(e @ SinkError::Credentials { .. }) => {
                let message = e.to_string();
                assert!(!message.contains("s3cret"), "{message}");
                assert!(
                    message.starts_with("`https://***@example.com/in` carries credentials"),
                    "{message}"
                );
            }
            other => panic!("{sink}: expected Credentials, got {other:?}"),
        }
    }
    policy
        .check_url(&url("https://hooks.example.com/in?token=x"))
        .expect("a public name passes check_url");
    policy
        .check_url(&url("http://8.8.8.8/"))
        .expect("a global literal passes");
}

#[tokio::test]
async fn the_request_timeout_holds() {
    let slow = Receiver::answering("127.0.0.1:0", None, Duration::from_secs(5))
        .await
        .expect("bind 127.0.0.1");
    let policy = SinkPolicy::new()
        .allow("127.0.0.0/8")
        .expect("a valid range")
        .timeout(Duration::from_millis(200));
    let error = policy
        .client()
        .expect("a client")
        .get(url(&format!("http://127.0.0.1:{}/", slow.port())))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error:?}");
}

/// The resolver's check on what a name resolved to. The system resolver
/// cannot be made to answer a mix of public and private addresses without
/// editing /etc/hosts (or running a DNS server), so the mix is handed to
/// `vet`, the function the client's resolver calls on its answer.
#[test]
fn a_name_with_one_internal_address_is_refused() {
    let addrs = |list: &[&str]| -> Vec<SocketAddr> {
        list.iter().map(|a| SocketAddr::new(ip(a), 0)).collect()
    };
    let policy = SinkPolicy::new();

    let public = addrs(&["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]);
    assert_eq!(
        policy
            .vet("example.com", public.clone())
            .expect("all global"),
        public
    );

    for mix in [
        &["8.8.8.8", "10.0.0.1"][..],
        &["10.0.0.1", "8.8.8.8"],
        &["2606:4700::1111", "::ffff:192.168.1.1"],
        &["8.8.8.8", "2606:4700::1111", "fd00::1"],
    ] {
        let error = policy
            .vet("rebind.example", addrs(mix))
            .expect_err("one internal address refuses the name");
        let SinkError::Refused { target, addr, .. } = &error else {
            panic!("{mix:?}: expected a refusal, got {error:?}");
        };
        assert_eq!(target, "rebind.example");
        assert!(
            classify(*addr).is_some(),
            "{mix:?}: refused for the global {addr}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("`rebind.example` resolves to {addr}, ")),
            "{error}"
        );
    }

    let allowed = SinkPolicy::new()
        .allow("10.0.0.0/8")
        .expect("a valid range");
    allowed
        .vet("internal.example", addrs(&["8.8.8.8", "10.0.0.1"]))
        .expect("the private one is allowed");

    match policy.vet("nothing.example", Vec::new()) {
        Err(e @ SinkError::Unresolved { .. }) => {
            assert_eq!(e.to_string(), "`nothing.example` resolves to no address")
        }
        other => panic!("expected Unresolved, got {other:?}"),
    }
}

#[test]
fn classify_knows_the_non_global_ranges() {
    let table: &[(&str, Option<&str>)] = &[
        // Global.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("93.184.215.14", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("192.0.1.1", None),
        ("198.17.255.255", None),
        ("198.20.0.0", None),
        ("223.255.255.255", None),
        ("2606:4700::1111", None),
        ("2001:4860:4860::8888", None),
        ("2a00:1450:4001::200e", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
        // IPv4.
        ("0.0.0.0", Some("an unspecified address")),
        ("0.1.2.3", Some("a this-network (0.0.0.0/8) address")),
        ("10.0.0.1", Some("a private address")),
        ("10.255.255.255", Some("a private address")),
        ("100.64.0.1", Some("a shared (CGNAT) address")),
        ("100.127.255.255", Some("a shared (CGNAT) address")),
        ("127.0.0.1", Some("a loopback address")),
        ("127.255.255.254", Some("a loopback address")),
        ("169.254.169.254", Some("a link-local address")),
        ("172.16.0.1", Some("a private address")),
        ("172.31.255.255", Some("a private address")),
        ("192.0.0.8", Some("an IETF protocol-assignment address")),
        ("192.0.2.1", Some("a documentation address")),
        ("192.88.99.1", Some("a 6to4-relay address")),
        ("192.168.1.1", Some("a private address")),
        ("198.18.0.1", Some("a benchmarking address")),
        ("198.19.255.255", Some("a benchmarking address")),
        ("198.51.100.7", Some("a documentation address")),
        ("203.0.113.9", Some("a documentation address")),
        ("224.0.0.1", Some("a multicast address")),
        ("239.255.255.250", Some("a multicast address")),
        ("240.0.0.1", Some("a reserved (240.0.0.0/4) address")),
        ("255.255.255.254", Some("a reserved (240.0.0.0/4) address")),
        ("255.255.255.255", Some("a broadcast address")),
        // IPv6.
        ("::", Some("an unspecified address")),
        ("::1", Some("a loopback address")),
        ("fc00::1", Some("a unique-local address")),
        ("fd12:3456:789a::1", Some("a unique-local address")),
        ("fe80::1", Some("a link-local address")),
        ("febf::1", Some("a link-local address")),
        ("fec0::1", Some("a site-local address")),
        ("ff02::1", Some("a multicast address")),
        ("ff0e::1", Some("a multicast address")),
        ("100::1", Some("a discard-only address")),
        ("2001:db8::1", Some("a documentation address")),
        ("3fff::1", Some("a documentation address")),
        ("2001:2::1", Some("a benchmarking address")),
        ("2001:10::1", Some("an IETF protocol-assignment address")),
        ("5f00::1", Some("an unallocated address (outside 2000::/3)")),
        ("4000::1", Some("an unallocated address (outside 2000::/3)")),
        ("64:ff9b:1::a00:1", Some("a local-use NAT64 address")),
        // IPv4 embedded in IPv6.
        ("::ffff:127.0.0.1", Some("an IPv4-mapped loopback address")),
        ("::ffff:10.1.2.3", Some("an IPv4-mapped private address")),
        (
            "::ffff:169.254.169.254",
            Some("an IPv4-mapped link-local address"),
        ),
        ("::ffff:0.0.0.0", Some("an IPv4-mapped unspecified address")),
        ("::127.0.0.1", Some("an IPv4-compatible loopback address")),
        ("::192.168.0.1", Some("an IPv4-compatible private address")),
        ("64:ff9b::7f00:1", Some("a NAT64 loopback address")),
        ("64:ff9b::a9fe:a9fe", Some("a NAT64 link-local address")),
        (
            "64:ff9b::100.64.0.1",
            Some("a NAT64 shared (CGNAT) address"),
        ),
        ("2002:7f00:1::", Some("a 6to4 loopback address")),
        ("2002:c0a8:101::1", Some("a 6to4 private address")),
        ("2002:e000:1::", Some("a 6to4 multicast address")),
        // Teredo: server 65.54.227.120, client 127.0.0.1 (stored inverted).
        (
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            Some("a Teredo loopback address"),
        ),
        // Server 10.0.0.1, client 8.8.8.8.
        (
            "2001:0:a00:1:8000:63bf:f7f7:f7f7",
            Some("a Teredo private address"),
        ),
        // Server 65.54.227.120, client 8.8.8.8: global.
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter_map(|(addr, expected)| {
            let got = classify(ip(addr));
            (got != *expected).then(|| format!("{addr}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn allow_entries_are_ranges_or_addresses() {
    match SinkPolicy::new().allow("10.0.0.0/33") {
        Err(e @ SinkError::Config(_)) => assert_eq!(
            e.to_string(),
            "`10.0.0.0/33` is not an IP range; write a CIDR range like 10.0.0.0/8 or fd00::/8, or one address"
        ),
        other => panic!("expected Config, got {other:?}"),
    }
    assert!(SinkPolicy::new().allow("internal.example").is_err());
    assert!(SinkPolicy::new().allow("").is_err());

    // One address is its own /32; host bits of a range are ignored.
    let policy = SinkPolicy::new()
        .allow("192.168.1.7")
        .and_then(|p| p.allow(" 10.1.2.3/16 "))
        .expect("valid entries");
    let ok = |a: &str| policy.vet("x", vec![SocketAddr::new(ip(a), 0)]).is_ok();
    assert!(ok("192.168.1.7"));
    assert!(!ok("192.168.1.8"));
    assert!(ok("10.1.200.200"));
    assert!(!ok("10.2.0.1"));
}

/// Runs this test binary's `from_env_child` with `EVENTBUS_WEBHOOK_ALLOW`
/// set to `value` (unset for `None`; the variable is the process's, so it is
/// set in a child, not here) and returns what the child reports.
fn from_env_in_child(value: Option<&str>) -> String {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"));
    child
        .args([
            "from_env_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SSRF_FROM_ENV_CHILD", "1");
    match value {
        Some(value) => child.env("EVENTBUS_WEBHOOK_ALLOW", value),
        None => child.env_remove("EVENTBUS_WEBHOOK_ALLOW"),
    };
    let output = child.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split_once("RESULT ").map(|(_, report)| report))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout}"))
        .to_owned()
}

/// The child half of `from_env_reads_comma_separated_ranges`: does nothing
/// unless that test runs it.
#[test]
fn from_env_child() {
    if std::env::var_os("SSRF_FROM_ENV_CHILD").is_none() {
        return;
    }
    let report = match SinkPolicy::from_env() {
        Err(e) => format!("error: {e}"),
        Ok(policy) => [
            "10.9.9.9",
            "fd00::1",
            "192.168.1.7",
            "192.168.1.8",
            "127.0.0.1",
        ]
        .iter()
        .map(|a| {
            let allowed = policy.vet("x", vec![SocketAddr::new(ip(a), 0)]).is_ok();
            format!("{a}={}", if allowed { "ok" } else { "refused" })
        })
        .collect::<Vec<_>>()
        .join(" "),
    };
    println!("RESULT {report}");
}

#[test]
fn from_env_reads_comma_separated_ranges() {
    assert_eq!(
        from_env_in_child(Some("10.0.0.0/8, fd00::/8 ,192.168.1.7,")),
        "10.9.9.9=ok fd00::1=ok 192.168.1.7=ok 192.168.1.8=refused 127.0.0.1=refused"
    );
    let none = "10.9.9.9=refused fd00::1=refused 192.168.1.7=refused 192.168.1.8=refused 127.0.0.1=refused";
    assert_eq!(from_env_in_child(Some("")), none);
    assert_eq!(from_env_in_child(None), none);
    assert_eq!(
        from_env_in_child(Some("10.0.0.0/8,10.0.0.0/33,fd00::/8")),
        "error: EVENTBUS_WEBHOOK_ALLOW: `10.0.0.0/33` is not an IP range; \
         write comma-separated CIDR ranges like 10.0.0.0/8,fd00::/8"
    );
    assert_eq!(
        from_env_in_child(Some("localhost")),
        "error: EVENTBUS_WEBHOOK_ALLOW: `localhost` is not an IP range; \
         write comma-separated CIDR ranges like 10.0.0.0/8,fd00::/8"
    );
}
