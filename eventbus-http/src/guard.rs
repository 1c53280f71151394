//! An HTTP client for webhook sinks: URLs someone else typed in, guarded
//! against server-side request forgery.
//!
//! [`SinkPolicy::client`] builds a reqwest client that connects only to
//! globally routable addresses, or to ranges the operator allow-listed
//! (`EVENTBUS_WEBHOOK_ALLOW`, [`SinkPolicy::allow`]):
//!
//! - its DNS resolver resolves a sink's name with the system resolver and
//!   refuses the name unless *every* address passes ([`SinkPolicy::vet`]).
//!   The connection then goes to exactly those vetted addresses, so the
//!   check and the connect cannot see two different answers (no DNS
//!   rebinding in between), while TLS SNI and `Host` stay the name;
//! - redirects are never followed: a 3xx is the sink's answer, not a hop to
//!   wherever it points;
//! - proxies from the environment (`HTTP_PROXY`, ...) are ignored: a proxy
//!   would resolve the sink's name itself, past the resolver.
//!
//! reqwest does not resolve a URL whose host is an IP literal, so call
//! [`SinkPolicy::check_url`] on every sink URL before sending to it: it
//! checks a literal by the same rules, and refuses schemes other than http
//! and https, credentials in the URL, and (with
//! [`https_only`](SinkPolicy::https_only)) plain http.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use eventbus_http::guard::{SinkError, SinkPolicy};
//!
//! let policy = SinkPolicy::from_env()?; // EVENTBUS_WEBHOOK_ALLOW=10.1.0.0/16,fd00::/8
//! let client = policy.client()?;
//!
//! let url = reqwest::Url::parse("https://hooks.example.com/in")?;
//! policy.check_url(&url)?;
//! match client.post(url).body("{}").send().await {
//!     Ok(answer) => println!("the sink answered {}", answer.status()),
//!     // Refused by the resolver: permanent, not worth a retry.
//!     Err(e) if SinkError::in_chain(&e).is_some() => return Err(e.into()),
//!     Err(e) => println!("retry later: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! What counts as not global is [`classify`]'s table: loopback, private,
//! shared (CGNAT), link-local, unique-local, multicast, broadcast,
//! documentation, benchmarking and reserved ranges, and IPv6 addresses
//! that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4,
//! Teredo) whose IPv4 address is one of those.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The environment variable [`SinkPolicy::from_env`] reads: comma-separated
/// CIDR ranges (or single addresses) that sinks may resolve to even though
/// they are not global, e.g. `10.1.0.0/16,fd00::/8`.
pub const ALLOW_VAR: &str = "EVENTBUS_WEBHOOK_ALLOW";

/// The default time a whole request may take: 15 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The default time connecting (TCP and TLS) may take: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a sink URL was refused, or a policy could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink resolves to (or is) an address that is neither global nor
    /// allow-listed.
    #[error(
        "`{target}` resolves to {addr}, {reason}; add its range to {ALLOW_VAR} to deliver to internal sinks"
    )]
    Refused {
        /// The sink URL (credentials hidden), or the host name when the
        /// resolver refused it.
        target: String,
        /// The first refused address.
        addr: IpAddr,
        /// What kind of address it is, as [`classify`] says.
        reason: &'static str,
    },

    /// The sink's name resolved to no address at all.
    #[error("`{host}` resolves to no address")]
    Unresolved {
        /// The host name.
        host: String,
    },

    /// The URL's scheme is not http or https.
    #[error("`{url}` is not an http:// or https:// URL, the only kinds a webhook sink can have")]
    Scheme {
        /// The sink URL, credentials hidden.
        url: String,
    },

    /// The URL names no host.
    #[error("`{url}` names no host to deliver to")]
    Host {
        /// The sink URL, credentials hidden.
        url: String,
    },

    /// The URL carries a user name or password.
    #[error(
        "`{url}` carries credentials in the URL; give the sink its secret in a header or the path instead"
    )]
    Credentials {
        /// The sink URL, credentials hidden.
        url: String,
    },

    /// The URL is plain http and the policy is https only.
    #[error("`{url}` is plain http and this policy delivers over https only; use an https:// URL")]
    Insecure {
        /// The sink URL.
        url: String,
    },

    /// A bad allow-list entry (or a non-UTF-8 `EVENTBUS_WEBHOOK_ALLOW`).
    #[error("{0}")]
    Config(String),

    /// The reqwest client could not be built (its TLS backend, say).
    #[error("the webhook client cannot be built")]
    Client(#[source] reqwest::Error),
}

impl SinkError {
    /// The `SinkError` somewhere in `error`'s chain of sources: how a
    /// refusal by the client's resolver shows up in the `reqwest::Error`
    /// a send returns.
    pub fn in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a SinkError> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(sink) = e.downcast_ref::<SinkError>() {
                return Some(sink);
            }
            next = e.source();
        }
        None
    }
}

/// Where webhooks may be delivered, and how patiently; [`client`](Self::client)
/// builds the guarded client.
///
/// ```
/// use std::time::Duration;
/// use eventbus_http::guard::SinkPolicy;
///
/// let policy = SinkPolicy::new()
///     .allow("10.1.0.0/16")?
///     .https_only(true)
///     .timeout(Duration::from_secs(10));
/// # Ok::<_, eventbus_http::guard::SinkError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SinkPolicy {
    allow: Vec<IpNet>,
    https_only: bool,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for SinkPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl SinkPolicy {
    /// Global addresses only, http and https, the default timeouts.
    pub fn new() -> Self {
        Self {
            allow: Vec::new(),
            https_only: false,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// [`new`](Self::new) with the ranges of `EVENTBUS_WEBHOOK_ALLOW`
    /// (comma-separated; unset or empty allows none).
    pub fn from_env() -> Result<Self, SinkError> {
        let list = match std::env::var(ALLOW_VAR) {
            Ok(list) => list,
            Err(std::env::VarError::NotPresent) => return Ok(Self::new()),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(SinkError::Config(format!(
                    "{ALLOW_VAR} is not valid UTF-8; write comma-separated CIDR ranges like 10.0.0.0/8,fd00::/8"
                )));
            }
        };
        let mut policy = Self::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let range = parse_range(entry).ok_or_else(|| {
                SinkError::Config(format!(
                    "{ALLOW_VAR}: `{entry}` is not an IP range; write comma-separated CIDR ranges like 10.0.0.0/8,fd00::/8"
                ))
            })?;
            policy.allow.push(range);
        }
        Ok(policy)
    }

    /// Also delivers to addresses in `range`, a CIDR range (`10.1.0.0/16`,
    /// `fd00::/8`) or a single address, even when they are not global.
    /// An IPv4 range covers the IPv4-mapped forms (`::ffff:a.b.c.d`) of
    /// its addresses too.
    pub fn allow(mut self, range: &str) -> Result<Self, SinkError> {
        let range = range.trim();
        let net = parse_range(range).ok_or_else(|| {
            SinkError::Config(format!(
                "`{range}` is not an IP range; write a CIDR range like 10.0.0.0/8 or fd00::/8, or one address"
            ))
        })?;
        self.allow.push(net);
        Ok(self)
    }

    /// Refuses plain http sinks (default: false, http and https).
    pub fn https_only(mut self, https_only: bool) -> Self {
        self.https_only = https_only;
        self
    }

    /// The longest a whole request may take, answer included (default 15 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest connecting (TCP and TLS) may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A reqwest client that resolves sink names through the guard, never
    /// follows redirects, ignores environment proxies and keeps the
    /// policy's timeouts. Check each URL with [`check_url`](Self::check_url)
    /// before sending: IP literals bypass the resolver.
    pub fn client(&self) -> Result<reqwest::Client, SinkError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(self.https_only)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow: self.allow.clone().into(),
            }))
            .build()
            .map_err(SinkError::Client)
    }

    /// Whether `url` may be delivered to, as far as the URL itself says: an
    /// http or https URL without credentials (https only, if so set), whose
    /// host, when an IP literal, is global or allow-listed. A host name is
    /// checked by the client's resolver when it connects.
    pub fn check_url(&self, url: &Url) -> Result<(), SinkError> {
        let shown = || shown(url);
        match url.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            "http" => return Err(SinkError::Insecure { url: shown() }),
            _ => return Err(SinkError::Scheme { url: shown() }),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SinkError::Credentials { url: shown() });
        }
        let addr = match url.host() {
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            None => return Err(SinkError::Host { url: shown() }),
        };
        match refusal(&self.allow, addr) {
            None => Ok(()),
            Some(reason) => Err(SinkError::Refused {
                target: shown(),
                addr,
                reason,
            }),
        }
    }

    /// The check the client's resolver makes on what `host` resolved to:
    /// `addrs` back when every one of them is global or allow-listed, else
    /// the first that is not (one internal address refuses the name: a
    /// connection may try any of them).
    pub fn vet(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, SinkError> {
        vet(&self.allow, host, addrs)
    }
}

/// A range of the allow-list: CIDR notation, or one address.
fn parse_range(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// The URL as messages show it: any user info replaced by `***`.
fn shown(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut url = url.clone();
    // Cannot fail: a URL with user info has a host.
    let _ = url.set_password(None);
    let _ = url.set_username("***");
    url.to_string()
}

fn vet(allow: &[IpNet], host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, SinkError> {
    if addrs.is_empty() {
        return Err(SinkError::Unresolved {
            host: host.to_owned(),
        });
    }
    for addr in &addrs {
        if let Some(reason) = refusal(allow, addr.ip()) {
            return Err(SinkError::Refused {
                target: host.to_owned(),
                addr: addr.ip(),
                reason,
            });
        }
    }
    Ok(addrs)
}

/// Why `addr` is refused under `allow`: [`classify`]'s reason, unless a
/// range allows it (an IPv4-mapped address counts as its IPv4 address).
fn refusal(allow: &[IpNet], addr: IpAddr) -> Option<&'static str> {
    let reason = classify(addr)?;
    let canonical = addr.to_canonical();
    let allowed = allow
        .iter()
        .any(|net| net.contains(&addr) || net.contains(&canonical));
    (!allowed).then_some(reason)
}

/// The system resolver (`getaddrinfo`, through tokio), then [`vet`].
#[derive(Debug)]
struct GuardedResolver {
    allow: Arc<[IpNet]>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            let addrs = vet(&allow, host, addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// What kind of non-global address `addr` is (`"a loopback address"`,
/// `"an IPv4-mapped private address"`), or `None` when it is globally
/// routable.
///
/// IPv4: 0.0.0.0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16, 172.16/12,
/// 192.0.0/24, 192.0.2/24, 192.88.99/24 (6to4 relays), 192.168/16,
/// 198.18/15, 198.51.100/24, 203.0.113/24, 224/4, 240/4 and
/// 255.255.255.255.
///
/// IPv6: `::`, `::1`, anything outside 2000::/3 (unique-local fc00::/7,
/// link-local fe80::/10, site-local fec0::/10, multicast ff00::/8,
/// discard-only 100::/64, local-use NAT64 64:ff9b:1::/48, ...), the IETF
/// protocol block 2001::/23 (benchmarking 2001:2::/48 among it), and the
/// documentation ranges 2001:db8::/32 and 3fff::/20. The forms that embed an
/// IPv4 address are judged by it: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 64:ff9b::/96, 6to4 2002::/16 and
/// Teredo 2001::/32 (server and client address).
pub fn classify(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => V4::of(v4).map(|class| class.phrase(Via::Direct)),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v6(v6: Ipv6Addr) -> Option<&'static str> {
    if v6.is_unspecified() {
        return Some("an unspecified address");
    }
    if v6.is_loopback() {
        return Some("a loopback address");
    }
    let embedded = |via: Via, hi: u16, lo: u16| {
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        V4::of(v4).map(|class| class.phrase(via))
    };
    match v6.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(Via::Mapped, hi, lo),
        [0, 0, 0, 0, 0, 0, hi, lo] => embedded(Via::Compatible, hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(Via::Nat64, hi, lo),
        [0x64, 0xff9b, 1, ..] => Some("a local-use NAT64 address"),
        [0x100, 0, 0, 0, ..] => Some("a discard-only address"),
        // Teredo: the server's address, then the client's (stored inverted).
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            embedded(Via::Teredo, !client_hi, !client_lo)
                .or_else(|| embedded(Via::Teredo, server_hi, server_lo))
        }
        [0x2001, 2, 0, ..] => Some("a benchmarking address"),
        [0x2001, 0..=0x1ff, ..] => Some("an IETF protocol-assignment address"),
        [0x2001, 0xdb8, ..] | [0x3fff, 0..=0xfff, ..] => Some("a documentation address"),
        [0x2002, hi, lo, ..] => embedded(Via::SixToFour, hi, lo),
        [0x2000..=0x3fff, ..] => None,
        [0xfc00..=0xfdff, ..] => Some("a unique-local address"),
        [0xfe80..=0xfebf, ..] => Some("a link-local address"),
        [0xfec0..=0xfeff, ..] => Some("a site-local address"),
        [0xff00..=0xffff, ..] => Some("a multicast address"),
        _ => Some("an unallocated address (outside 2000::/3)"),
    }
}

/// How an IPv4 address is reached: directly, or embedded in an IPv6 one.
#[derive(Debug, Clone, Copy)]
enum Via {
    Direct,
    Mapped,
    Compatible,
    Nat64,
    SixToFour,
    Teredo,
}

/// The kinds of non-global IPv4 addresses, with the article and noun of
/// their message; the phrases for every [`Via`] are `&'static str`s spelled
/// out by the macro.
macro_rules! v4_classes {
    ($($class:ident => $article:literal $noun:literal,)*) => {
        #[derive(Debug, Clone, Copy)]
        enum V4 {
            $($class,)*
        }

        impl V4 {
            fn phrase(self, via: Via) -> &'static str {
                match (self, via) {
                    $(
                        (V4::$class, Via::Direct) => concat!($article, " ", $noun, " address"),
                        (V4::$class, Via::Mapped) => concat!("an IPv4-mapped ", $noun, " address"),
                        (V4::$class, Via::Compatible) => {
                            concat!("an IPv4-compatible ", $noun, " address")
                        }
                        (V4::$class, Via::Nat64) => concat!("a NAT64 ", $noun, " address"),
                        (V4::$class, Via::SixToFour) => concat!("a 6to4 ", $noun, " address"),
                        (V4::$class, Via::Teredo) => concat!("a Teredo ", $noun, " address"),
                    )*
                }
            }
        }
    };
}

v4_classes! {
    Unspecified => "an" "unspecified",
    ThisNetwork => "a" "this-network (0.0.0.0/8)",
    Private => "a" "private",
    Shared => "a" "shared (CGNAT)",
    Loopback => "a" "loopback",
    LinkLocal => "a" "link-local",
    Protocol => "an" "IETF protocol-assignment",
    Documentation => "a" "documentation",
    Relay => "a" "6to4-relay",
    Benchmarking => "a" "benchmarking",
    Multicast => "a" "multicast",
    Broadcast => "a" "broadcast",
    Reserved => "a" "reserved (240.0.0.0/4)",
}

impl V4 {
    fn of(v4: Ipv4Addr) -> Option<V4> {
        let class = match v4.octets() {
            [0, 0, 0, 0] => V4::Unspecified,
            [0, ..] => V4::ThisNetwork,
            [10, ..] => V4::Private,
            [100, 64..=127, ..] => V4::Shared,
            [127, ..] => V4::Loopback,
            [169, 254, ..] => V4::LinkLocal,
            [172, 16..=31, ..] => V4::Private,
            [192, 0, 0, _] => V4::Protocol,
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => V4::Documentation,
            [192, 88, 99, _] => V4::Relay,
            [192, 168, ..] => V4::Private,
            [198, 18..=19, ..] => V4::Benchmarking,
            [224..=239, ..] => V4::Multicast,
            [255, 255, 255, 255] => V4::Broadcast,
            [240..=255, ..] => V4::Reserved,
            _ => return None,
        };
        Some(class)
    }
}
