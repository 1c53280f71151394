//! `redis://` URLs: where the server is and how events are laid out on it.
//!
//! ```text
//! redis://[user:pass@]host[:port][/db][?options]
//! rediss://...                                   TLS (feature `tls`)
//! redis+cluster://[user:pass@]host1:port,host2:port,...[?options]
//! rediss+cluster://...                           cluster over TLS (feature `tls`)
//!
//! options: mode=streams|pubsub  codec=cloudevents|legacy|auto  prefix=NAME
//!          legacy_types=T1,T2  cloudevents_types=T3 (the codec of these types)
//!          layout=per-type|django  stream=NAME (django layout)  maxlen=N
//!          heartbeat_interval_ms=N  heartbeat_timeout_ms=N
//!          claim_idle_ms=N  claim_interval_ms=N (defaults of ConsumerOptions)
//!          tls_ca=PATH  (rediss: trust this PEM CA bundle instead of the system roots)
//!          tls_cert=PATH&tls_key=PATH (rediss: client certificate for mutual TLS)
//! ```
//!
//! The password is kept in a [`Secret`] whose `Debug` and `Display` print
//! `***`; [`RedisConfig`]'s `Display` is the URL with the password redacted.

use eventbus_core::transport::redact;
use std::fmt;
use std::time::Duration;

use crate::consumer::ConsumerOptions;
use crate::error::{Error, Result};

/// The default port of `redis-server`.
pub const DEFAULT_PORT: u16 = 6379;
/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "eventbus";
/// The default stream of the `django` layout.
pub const DEFAULT_DJANGO_STREAM: &str = "events";

const OPTIONS: &str = "`mode`, `codec`, `legacy_types`, `cloudevents_types`, `prefix`, `layout`, `stream`, `maxlen`, `heartbeat_interval_ms`, `heartbeat_timeout_ms`, `claim_idle_ms`, `claim_interval_ms`, `tls_ca`, `tls_cert`, `tls_key`";

/// How events travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Redis Streams: durable, consumer groups, at-least-once (`mode=streams`, default).
    #[default]
    Streams,
    /// Redis pub/sub: fire-and-forget, at-most-once (`mode=pubsub`).
    PubSub,
}

/// What is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// Structured-mode CloudEvents JSON (`codec=cloudevents`; the default on Streams).
    #[default]
    CloudEvents,
    /// The bare `data` JSON, as older services publish it (`codec=legacy`).
    Legacy,
    /// Pub/sub only, its default (`codec=auto`): each channel keeps the
    /// format it carries. A channel on which this client's subscribers have
    /// received bare JSON from another producer gets bare JSON; any other
    /// gets CloudEvents JSON (a warning, once per type, says so while no
    /// message was seen on it). On Streams it means `CloudEvents`.
    Auto,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::CloudEvents => "cloudevents",
            Codec::Legacy => "legacy",
            Codec::Auto => "auto",
        }
    }
}

/// Which keys a Streams-mode client uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// One stream per event type, `{prefix}:stream:<type>` (`layout=per-type`, default).
    #[default]
    PerType,
    /// One stream shared by every type, with the fields that django-broadcaster
    /// writes (`event_id`, `event_type`, `source`, `timestamp`, `cloud_event`);
    /// consumers filter by `event_type` (`layout=django&stream=events`).
    Django {
        /// The stream's key (default `events`).
        stream: String,
    },
}

/// A password: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed Redis URL. Build it with [`RedisConfig::from_url`], adjust it
/// with the `with_*` methods.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    nodes: Vec<(String, u16)>,
    tls: bool,
    cluster: bool,
    username: Option<String>,
    password: Option<Secret>,
    db: i64,
    mode: Mode,
    /// `None`: the mode's default.
    codec: Option<Codec>,
    /// Per-type choices, over `codec`.
    type_codecs: std::collections::BTreeMap<String, Codec>,
    prefix: Option<String>,
    layout: Layout,
    maxlen: Option<u64>,
    heartbeat_interval: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
    claim_idle: Option<Duration>,
    claim_interval: Option<Duration>,
    tls_files: TlsFiles,
}

/// PEM files for `rediss://` (paths as given in the URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca`: CA certificates to trust instead of the system's roots.
    pub ca: Option<String>,
    /// `tls_cert`: the client certificate (mutual TLS).
    pub cert: Option<String>,
    /// `tls_key`: the client certificate's private key.
    pub key: Option<String>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("db", &self.db)
            .field("mode", &self.mode)
            .field("codec", &self.codec())
            .field("type_codecs", &self.type_codecs)
            .field("prefix", &self.prefix())
            .field("layout", &self.layout)
            .field("maxlen", &self.maxlen)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("claim_idle", &self.claim_idle)
            .field("claim_interval", &self.claim_interval)
            .field("tls_files", &self.tls_files)
            .finish()
    }
}

/// The URL, password as `***`, options normalized.
impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.tls, self.cluster) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        };
        write!(f, "{scheme}://")?;
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, None) => {}
        }
        f.write_str(&self.addr())?;
        if !self.cluster {
            write!(f, "/{}", self.db)?;
        }
        let mut sep = '?';
        let mut opt = |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| {
            let r = write!(f, "{sep}{k}={v}");
            sep = '&';
            r
        };
        if self.mode == Mode::PubSub {
            opt(f, "mode", &"pubsub")?;
        }
        if let Some(codec) = self.codec
            && codec != self.default_codec()
        {
            opt(f, "codec", &codec.name())?;
        }
        for codec in [Codec::Legacy, Codec::CloudEvents] {
            let types: Vec<&str> = self
                .type_codecs
                .iter()
                .filter(|(_, c)| **c == codec)
                .map(|(t, _)| t.as_str())
                .collect();
            if !types.is_empty() {
                opt(f, &format!("{}_types", codec.name()), &types.join(","))?;
            }
        }
        if let Some(p) = &self.prefix {
            opt(f, "prefix", p)?;
        }
        if let Layout::Django { stream } = &self.layout {
            opt(f, "layout", &"django")?;
            opt(f, "stream", stream)?;
        }
        if let Some(n) = self.maxlen {
            opt(f, "maxlen", &n)?;
        }
        if let Some(d) = self.heartbeat_interval {
            opt(f, "heartbeat_interval_ms", &d.as_millis())?;
        }
        if let Some(d) = self.heartbeat_timeout {
            opt(f, "heartbeat_timeout_ms", &d.as_millis())?;
        }
        if let Some(d) = self.claim_idle {
            opt(f, "claim_idle_ms", &d.as_millis())?;
        }
        if let Some(d) = self.claim_interval {
            opt(f, "claim_interval_ms", &d.as_millis())?;
        }
        for (k, v) in [
            ("tls_ca", &self.tls_files.ca),
            ("tls_cert", &self.tls_files.cert),
            ("tls_key", &self.tls_files.key),
        ] {
            if let Some(v) = v {
                opt(f, k, v)?;
            }
        }
        Ok(())
    }
}

impl RedisConfig {
    /// A config for one server at `host:port`, database 0, every option at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            nodes: vec![(host.into(), port)],
            tls: false,
            cluster: false,
            username: None,
            password: None,
            db: 0,
            mode: Mode::Streams,
            codec: None,
            type_codecs: Default::default(),
            prefix: None,
            layout: Layout::PerType,
            maxlen: None,
            heartbeat_interval: None,
            heartbeat_timeout: None,
            claim_idle: None,
            claim_interval: None,
            tls_files: TlsFiles::default(),
        }
    }

    /// Parses `redis://`, `rediss://`, `redis+cluster://` and `rediss+cluster://` URLs.
    ///
    /// Every error names the URL (password redacted) and says what to change.
    pub fn from_url(url: &str) -> Result<Self> {
        parse(url).map_err(|reason| Error::Config {
            url: redact(url),
            reason,
        })
    }

    /// `host:port` of the server, or the comma-separated cluster nodes.
    pub fn addr(&self) -> String {
        self.nodes
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server (or the cluster's seed nodes).
    pub fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }
    /// `rediss://`.
    pub fn tls(&self) -> bool {
        self.tls
    }
    /// The PEM files of `tls_ca`, `tls_cert` and `tls_key`.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls_files
    }
    /// `redis+cluster://`.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
    /// The ACL user name.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }
    /// The password (prints as `***`).
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// The database index (always 0 on a cluster).
    pub fn db(&self) -> i64 {
        self.db
    }
    /// Streams or pub/sub.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// CloudEvents or legacy payloads: the `codec` option, or the mode's
    /// default ([`Codec::CloudEvents`] on Streams, [`Codec::Auto`] on pub/sub).
    pub fn codec(&self) -> Codec {
        self.codec.unwrap_or_else(|| self.default_codec())
    }

    /// The codec events of type `event_type` are written with: the type's own
    /// (`legacy_types`, `cloudevents_types`, [`RedisConfig::with_type_codec`]),
    /// else [`RedisConfig::codec`].
    pub fn codec_of(&self, event_type: &str) -> Codec {
        self.type_codecs
            .get(event_type)
            .copied()
            .unwrap_or_else(|| self.codec())
    }

    /// Whether the codec of `event_type` was chosen (by the URL or in code)
    /// rather than left to the mode's default.
    pub(crate) fn codec_chosen_for(&self, event_type: &str) -> bool {
        self.codec.is_some() || self.type_codecs.contains_key(event_type)
    }

    fn default_codec(&self) -> Codec {
        match self.mode {
            Mode::PubSub => Codec::Auto,
            Mode::Streams => Codec::CloudEvents,
        }
    }
    /// The key prefix (default `eventbus`).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }
    /// The pub/sub channel prefix: the `prefix` option when the URL sets it,
    /// none otherwise (so channels are the bare event types legacy services use).
    pub fn channel_prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }
    /// Per-type streams or the django-broadcaster layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The stream length bound (`maxlen`), if any.
    pub fn maxlen(&self) -> Option<u64> {
        self.maxlen
    }

    /// [`ConsumerOptions::default()`] with what the URL sets
    /// (`heartbeat_interval_ms`, `heartbeat_timeout_ms`, `claim_idle_ms`,
    /// `claim_interval_ms`): the options of consumers created for this
    /// configuration when the caller has no others.
    pub fn consumer_options(&self) -> ConsumerOptions {
        let mut opts = ConsumerOptions::default();
        if let Some(d) = self.heartbeat_interval {
            opts.heartbeat_interval = d;
        }
        if let Some(d) = self.heartbeat_timeout {
            opts.heartbeat_timeout = d;
        }
        if let Some(d) = self.claim_idle {
            opts.claim_idle = d;
        }
        if let Some(d) = self.claim_interval {
            opts.claim_interval = d;
        }
        opts
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the codec.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }
    /// Sets the codec of one event type (over [`RedisConfig::with_codec`]):
    /// e.g. [`Codec::Legacy`] for a channel that Django services read as
    /// bare JSON, which this service only publishes to.
    pub fn with_type_codec(mut self, event_type: impl Into<String>, codec: Codec) -> Self {
        self.type_codecs.insert(event_type.into(), codec);
        self
    }
    /// Sets the key (and pub/sub channel) prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        check_prefix(&prefix).map_err(|reason| Error::Config {
            url: self.to_string(),
            reason,
        })?;
        self.prefix = Some(prefix);
        Ok(self)
    }
    /// Sets the layout.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Sets (or clears) the stream length bound.
    pub fn with_maxlen(mut self, maxlen: Option<u64>) -> Self {
        self.maxlen = maxlen;
        self
    }
    /// Sets the credentials.
    pub fn with_auth(mut self, username: Option<String>, password: Option<Secret>) -> Self {
        self.username = username;
        self.password = password;
        self
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("`prefix` must not be empty; leave it out for the default `eventbus`".into());
    }
    if prefix.contains(['{', '}']) {
        return Err(format!(
            "`prefix={prefix}` must not contain `{{` or `}}`: the crate adds the cluster hash tag itself"
        ));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`prefix={prefix}` must not contain spaces or control characters"
        ));
    }
    Ok(())
}

fn parse(url: &str) -> Result<RedisConfig, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected a URL like `redis://127.0.0.1:6379/0`".into());
    };
    let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => {
            return Err(format!(
                "unknown scheme `{other}`; use `redis://`, `rediss://` (TLS), `redis+cluster://` or `rediss+cluster://`"
            ));
        }
    };
    if tls && !cfg!(feature = "tls") {
        return Err(format!(
            "`{scheme}://` needs TLS support: enable the `tls` feature of eventbus-redis (the `redis-tls` feature of eventbus)"
        ));
    }
    if rest.contains('#') {
        return Err("fragments (`#...`) are not supported; remove them".into());
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, p),
        None => (before_query, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut config = RedisConfig::new(String::new(), DEFAULT_PORT);
    config.tls = tls;
    config.cluster = cluster;
    if let Some(userinfo) = userinfo {
        let (user, pass) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user = percent_decode(user).ok_or("the user name has a bad %-escape")?;
        if !user.is_empty() {
            config.username = Some(user);
        }
        if let Some(pass) = pass {
            let pass = percent_decode(pass)
                .ok_or("the password has a bad %-escape (write `%25` for a literal `%`)")?;
            config.password = Some(Secret(pass));
        }
    }
    config.nodes.clear();
    for node in hosts.split(',') {
        config.nodes.push(parse_host(node)?);
    }
    if config.nodes.len() > 1 && !cluster {
        return Err(
            "several hosts are only allowed with `redis+cluster://host1:port,host2:port`".into(),
        );
    }
    let path = path.trim_end_matches('/');
    if !path.is_empty() {
        let db: i64 = path
            .parse()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("the database `/{path}` must be a number like `/0`"))?;
        if cluster && db != 0 {
            return Err("Redis Cluster has only database 0; remove the `/N` path".into());
        }
        config.db = db;
    }
    let mut stream = None;
    let mut layout_django = false;
    if let Some(query) = query {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "mode" => {
                    config.mode = match &*value {
                        "streams" => Mode::Streams,
                        "pubsub" => Mode::PubSub,
                        v => {
                            return Err(format!(
                                "`mode={v}` is not a mode; use `mode=streams` (durable) or `mode=pubsub` (fire-and-forget)"
                            ));
                        }
                    }
                }
                "codec" => {
                    config.codec = Some(match &*value {
                        "cloudevents" => Codec::CloudEvents,
                        "legacy" => Codec::Legacy,
                        "auto" => Codec::Auto,
                        v => {
                            return Err(format!(
                                "`codec={v}` is not a codec; use `codec=cloudevents`, `codec=legacy` (bare data JSON) or `codec=auto` (pub/sub: each channel as it is used)"
                            ));
                        }
                    })
                }
                "legacy_types" | "cloudevents_types" => {
                    let codec = if key == "legacy_types" {
                        Codec::Legacy
                    } else {
                        Codec::CloudEvents
                    };
                    for ty in value.split(',') {
                        if ty.is_empty() || ty.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(format!(
                                "`{key}={value}` must be a comma-separated list of event types, like `{key}=review_created,review_approved`"
                            ));
                        }
                        if config
                            .type_codecs
                            .insert(ty.to_owned(), codec)
                            .is_some_and(|c| c != codec)
                        {
                            return Err(format!(
                                "`{ty}` is in both `legacy_types` and `cloudevents_types`; keep it in one"
                            ));
                        }
                    }
                }
                "prefix" => {
                    check_prefix(&value)?;
                    config.prefix = Some(value.into_owned());
                }
                "layout" => {
                    layout_django = match &*value {
                        "per-type" => false,
                        "django" => true,
                        v => {
                            return Err(format!(
                                "`layout={v}` is not a layout; use `layout=per-type` (default) or `layout=django`"
                            ));
                        }
                    }
                }
                "stream" => {
                    let v = value.into_owned();
                    if v.is_empty() || v.contains(['{', '}']) {
                        return Err(format!(
                            "`stream={v}` must be a non-empty key name without `{{` or `}}`"
                        ));
                    }
                    stream = Some(v);
                }
                "claim_idle_ms"
                | "claim_interval_ms"
                | "heartbeat_interval_ms"
                | "heartbeat_timeout_ms" => {
                    let ms: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("`{key}={value}` must be a positive number of milliseconds, like `{key}=60000`")
                    })?;
                    let d = Some(Duration::from_millis(ms));
                    match &*key {
                        "claim_idle_ms" => config.claim_idle = d,
                        "claim_interval_ms" => config.claim_interval = d,
                        "heartbeat_interval_ms" => config.heartbeat_interval = d,
                        _ => config.heartbeat_timeout = d,
                    }
                }
                "tls_ca" | "tls_cert" | "tls_key" => {
                    if !tls {
                        return Err(format!(
                            "`{key}` only applies to TLS connections; use a `rediss://` URL"
                        ));
                    }
                    if value.is_empty() {
                        return Err(format!("`{key}=` needs the path of a PEM file"));
                    }
                    let slot = match &*key {
                        "tls_ca" => &mut config.tls_files.ca,
                        "tls_cert" => &mut config.tls_files.cert,
                        _ => &mut config.tls_files.key,
                    };
                    *slot = Some(value.into_owned());
                }
                "maxlen" => {
                    let n: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("`maxlen={value}` must be a positive number of entries, like `maxlen=100000`")
                    })?;
                    config.maxlen = Some(n);
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}`; expected one of: {OPTIONS}"
                    ));
                }
            }
        }
    }
    if config.tls_files.cert.is_some() != config.tls_files.key.is_some() {
        return Err(
            "mutual TLS needs both `tls_cert` (the client certificate) and `tls_key` (its key)"
                .into(),
        );
    }
    if config.mode == Mode::Streams && config.codec == Some(Codec::Auto) {
        return Err(
            "`codec=auto` is for pub/sub channels; add `mode=pubsub`, or use `codec=cloudevents` or `codec=legacy` on Streams".into(),
        );
    }
    if layout_django {
        if config.mode == Mode::PubSub {
            return Err("`layout=django` is a Streams layout; remove `mode=pubsub`".into());
        }
        if config.codec == Some(Codec::Legacy)
            || config.type_codecs.values().any(|c| *c == Codec::Legacy)
        {
            return Err(
                "`layout=django` always writes CloudEvents JSON; remove `codec=legacy` and `legacy_types`".into(),
            );
        }
        config.layout = Layout::Django {
            stream: stream.unwrap_or_else(|| DEFAULT_DJANGO_STREAM.to_owned()),
        };
    } else if stream.is_some() {
        return Err("`stream=...` only applies to `layout=django`; add `layout=django`".into());
    }
    Ok(config)
}

fn parse_host(node: &str) -> Result<(String, u16), String> {
    if node.is_empty() {
        return Err("the host is missing; write it like `redis://127.0.0.1:6379`".into());
    }
    let (host, port) = if let Some(rest) = node.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{node}`: an IPv6 address needs a closing `]`"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("`{node}`: expected `:port` after `]`")),
        }
    } else {
        match node.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (node, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{node}`: the host is missing"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{node}`: the port must be a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults() {
        let c = RedisConfig::from_url("redis://127.0.0.1").unwrap();
        assert_eq!(c.nodes(), &[("127.0.0.1".to_owned(), 6379)]);
        assert_eq!(c.db(), 0);
        assert_eq!(c.mode(), Mode::Streams);
        assert_eq!(c.codec(), Codec::CloudEvents);
        assert_eq!(c.prefix(), "eventbus");
        assert_eq!(c.channel_prefix(), None);
        assert_eq!(c.layout(), &Layout::PerType);
        assert_eq!(c.to_string(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn parses_everything() {
        let c = RedisConfig::from_url(
            "redis://me:p%40ss@localhost:7000/3?mode=pubsub&codec=legacy&prefix=svc&maxlen=1000",
        )
        .unwrap();
        assert_eq!(c.username(), Some("me"));
        assert_eq!(c.password().unwrap().expose(), "p@ss");
        assert_eq!(c.db(), 3);
        assert_eq!(c.mode(), Mode::PubSub);
        assert_eq!(c.codec(), Codec::Legacy);
        assert_eq!(c.prefix(), "svc");
        assert_eq!(c.channel_prefix(), Some("svc"));
        assert_eq!(c.maxlen(), Some(1000));
        assert_eq!(
            c.to_string(),
            "redis://me:***@localhost:7000/3?mode=pubsub&codec=legacy&prefix=svc&maxlen=1000"
        );
    }

    #[test]
    fn parses_consumer_options() {
        let c =
            RedisConfig::from_url("redis://h?claim_idle_ms=1500&claim_interval_ms=100").unwrap();
        let o = c.consumer_options();
        assert_eq!(o.claim_idle, Duration::from_millis(1500));
        assert_eq!(o.claim_interval, Duration::from_millis(100));
        assert_eq!(
            c.to_string(),
            "redis://h:6379/0?claim_idle_ms=1500&claim_interval_ms=100"
        );
        assert_eq!(RedisConfig::from_url(&c.to_string()).unwrap(), c);
        let d = RedisConfig::from_url("redis://h")
            .unwrap()
            .consumer_options();
        assert_eq!(d.claim_idle, ConsumerOptions::default().claim_idle);
        assert_eq!(d.claim_interval, ConsumerOptions::default().claim_interval);
        assert!(
            err("redis://h?claim_idle_ms=0")
                .contains("`claim_idle_ms=0` must be a positive number of milliseconds")
        );
        assert!(err("redis://h?claim_interval_ms=1s").contains("like `claim_interval_ms=60000`"));

        let h =
            RedisConfig::from_url("redis://h?heartbeat_interval_ms=250&heartbeat_timeout_ms=2000")
                .unwrap();
        let o = h.consumer_options();
        assert_eq!(o.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(o.heartbeat_timeout, Duration::from_millis(2000));
        assert_eq!(
            h.to_string(),
            "redis://h:6379/0?heartbeat_interval_ms=250&heartbeat_timeout_ms=2000"
        );
        assert_eq!(RedisConfig::from_url(&h.to_string()).unwrap(), h);
        assert_eq!(
            d.heartbeat_timeout,
            ConsumerOptions::default().heartbeat_timeout
        );
        assert!(
            err("redis://h?heartbeat_timeout_ms=-1").contains("positive number of milliseconds")
        );
    }

    #[test]
    fn parses_cluster_and_django() {
        let c = RedisConfig::from_url(
            "redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002?layout=django&stream=outbox",
        )
        .unwrap();
        assert!(c.is_cluster());
        assert_eq!(c.nodes().len(), 3);
        assert_eq!(c.nodes()[2], ("::1".to_owned(), 7002));
        assert_eq!(
            c.layout(),
            &Layout::Django {
                stream: "outbox".into()
            }
        );
        assert_eq!(
            c.to_string(),
            "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002?layout=django&stream=outbox"
        );
        let d = RedisConfig::from_url("redis://h?layout=django").unwrap();
        assert_eq!(
            d.layout(),
            &Layout::Django {
                stream: "events".into()
            }
        );
    }

    fn err(url: &str) -> String {
        RedisConfig::from_url(url).unwrap_err().to_string()
    }

    #[test]
    fn codecs_per_mode_and_per_type() {
        let streams = RedisConfig::from_url("redis://h").unwrap();
        assert_eq!(streams.codec(), Codec::CloudEvents);
        let pubsub = RedisConfig::from_url("redis://h?mode=pubsub").unwrap();
        assert_eq!(pubsub.codec(), Codec::Auto);
        assert!(!pubsub.codec_chosen_for("a"));
        assert_eq!(pubsub.to_string(), "redis://h:6379/0?mode=pubsub");

        let c = RedisConfig::from_url(
            "redis://h?mode=pubsub&legacy_types=a,b&cloudevents_types=c&codec=cloudevents",
        )
        .unwrap();
        assert_eq!(c.codec_of("a"), Codec::Legacy);
        assert_eq!(c.codec_of("b"), Codec::Legacy);
        assert_eq!(c.codec_of("c"), Codec::CloudEvents);
        assert_eq!(c.codec_of("d"), Codec::CloudEvents);
        assert!(c.codec_chosen_for("d"));
        assert_eq!(
            c.to_string(),
            "redis://h:6379/0?mode=pubsub&codec=cloudevents&legacy_types=a,b&cloudevents_types=c"
        );
        assert_eq!(RedisConfig::from_url(&c.to_string()).unwrap(), c);
        let coded = pubsub.with_type_codec("a", Codec::Legacy);
        assert_eq!(coded.codec_of("a"), Codec::Legacy);
        assert!(coded.codec_chosen_for("a") && !coded.codec_chosen_for("b"));

        assert!(err("redis://h?codec=auto").contains("`codec=auto` is for pub/sub channels"));
        assert!(
            err("redis://h?mode=pubsub&legacy_types=a&cloudevents_types=a")
                .contains("`a` is in both `legacy_types` and `cloudevents_types`")
        );
        assert!(err("redis://h?legacy_types=a,,b").contains("comma-separated list"));
        assert!(
            err("redis://h?layout=django&legacy_types=a")
                .contains("remove `codec=legacy` and `legacy_types`")
        );
        assert!(err("redis://h?codec=avro").contains("`codec=auto`"));
    }

    #[test]
    fn errors_are_actionable_and_redacted() {
        let e = err("redis://u:hunter2@h:6379/0?colour=blue");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("u:***@h"), "{e}");
        assert!(
            e.contains("unknown option `colour`; expected one of: `mode`"),
            "{e}"
        );
        assert!(err("redis://h?mode=kafka").contains("use `mode=streams`"));
        assert!(err("redis://h?codec=avro").contains("`codec=legacy`"));
        assert!(err("redis://h?maxlen=-1").contains("positive number"));
        assert!(err("redis://h:99999").contains("port must be a number"));
        assert!(err("redis://h/x").contains("must be a number like `/0`"));
        assert!(err("http://h").contains("unknown scheme `http`"));
        assert!(err("localhost:6379").contains("expected a URL like"));
        assert!(err("redis://a:1,b:2").contains("redis+cluster://"));
        assert!(err("redis+cluster://a:1/2").contains("only database 0"));
        assert!(err("redis://h?stream=x").contains("add `layout=django`"));
        assert!(err("redis://h?layout=django&mode=pubsub").contains("Streams layout"));
        assert!(err("redis://h?prefix=a{b}").contains("hash tag"));
        #[cfg(not(feature = "tls"))]
        assert!(err("rediss://h").contains("enable the `tls` feature"));
    }

    #[test]
    #[cfg(feature = "tls")]
    fn tls_files_need_rediss_and_come_in_pairs() {
        let err = |u: &str| RedisConfig::from_url(u).unwrap_err().to_string();
        assert!(err("redis://h?tls_ca=/ca.pem").contains("use a `rediss://` URL"));
        assert!(err("rediss://h?tls_cert=/c.pem").contains("both `tls_cert`"));
        assert!(err("rediss://h?tls_ca=").contains("needs the path of a PEM file"));
        let c = RedisConfig::from_url("rediss://h/0?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem")
            .unwrap();
        assert_eq!(c.tls_files().ca.as_deref(), Some("/ca.pem"));
        assert_eq!(c.tls_files().key.as_deref(), Some("/k.pem"));
        let again = RedisConfig::from_url(&c.to_string()).unwrap();
        assert_eq!(again, c, "Display reads back");
    }

    #[test]
    fn debug_hides_password() {
        let c = RedisConfig::from_url("redis://user:hunter2@h/0").unwrap();
        let dbg = format!("{c:?} {c:#?} {c}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn redacts_unparseable_urls() {
        assert_eq!(redact("redis://u:pw@h:x/0"), "redis://u:***@h:x/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
    }
}
