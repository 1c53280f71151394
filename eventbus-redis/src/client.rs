//! [`Client`]: one configuration, one shared multiplexed connection, and
//! every operation that is not a consumer's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use redis::Cmd;

use crate::codec;
use crate::config::{Codec, Layout, Mode, RedisConfig};
use crate::conn::{self, ClientOptions, Conn, Connector};
use crate::consumer::{Consumer, ConsumerOptions, Kind};
use crate::error::Result;
use crate::keys::{Keys, check_name};
use crate::publisher::Publisher;
use crate::pubsub::{ChannelFormats, PubSubConsumer};
use crate::streams::StreamConsumer;
use eventbus_core::transport::Topics;

/// A connection to Redis for one [`RedisConfig`]: publishes, schedules,
/// creates consumers, manages the dead-letter queue.
///
/// Cheap to clone (an `Arc`); clones share one multiplexed connection that
/// pipelines concurrent callers and reconnects by itself.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) connector: Connector,
    pub(crate) conn: Conn,
    /// Sends the publishes of concurrent callers as shared pipelines.
    publisher: Publisher,
    /// Types this client has published before, with their stream key (per-type
    /// streams: the type is in the types set) or pub/sub channel.
    targets: RwLock<HashMap<String, Arc<str>>>,
    /// What this client's pub/sub consumers received on each channel.
    pub(crate) formats: ChannelFormats,
    pub(crate) scheduler_wake: tokio::sync::Notify,
    /// The connection of the consumers' acknowledgements, made at the first
    /// one: apart from the publishes, so an ack never waits behind a large
    /// publish pipeline (nor a publish behind acks).
    settle: tokio::sync::OnceCell<Conn>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What a publish writes for one event: XADD fields, or a PUBLISH payload.
pub(crate) enum Write<'a> {
    Xadd {
        key: String,
        fields: Vec<(&'static str, Cow<'a, [u8]>)>,
    },
    Publish {
        channel: String,
        payload: Cow<'a, [u8]>,
    },
}

impl Client {
    /// Connects with default [`ClientOptions`]. Fails fast with
    /// "cannot connect to Redis at host:port: ..." when the server is unreachable.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        Self::connect_with(config, ClientOptions::default()).await
    }

    /// Parses `url` and connects.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(RedisConfig::from_url(url)?).await
    }

    /// Connects with explicit timeouts and reconnect budget.
    pub async fn connect_with(config: RedisConfig, opts: ClientOptions) -> Result<Self> {
        let connector = Connector::new(&config, opts)?;
        let mut conn = connector
            .connect(connector.options().response_timeout)
            .await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| conn::connect_error(&config, e))?;
        tracing::debug!(redis = %config, "connected to Redis");
        let publisher = Publisher::spawn(conn.clone(), connector.options().reconnect_for);
        Ok(Client {
            inner: Arc::new(Inner {
                keys: Keys::new(&config),
                config,
                connector,
                conn,
                publisher,
                targets: RwLock::new(HashMap::new()),
                formats: ChannelFormats::default(),
                scheduler_wake: tokio::sync::Notify::new(),
                settle: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The configuration (prints with the password as `***`).
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The key names this client uses.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        self.inner.connector.options()
    }

    /// Runs one command on the shared connection, retrying while Redis is unreachable.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        let conn = self.conn();
        conn::retry(op, self.options().reconnect_for, || {
            let mut c = conn.clone();
            async move { cmd.query_async::<T>(&mut c).await }
        })
        .await
    }

    /// Runs a pipeline on the shared connection (one round trip), retrying
    /// while Redis is unreachable.
    pub(crate) async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        Self::pipe_on(self.conn(), self.options().reconnect_for, op, pipe).await
    }

    /// [`Client::run_pipe`] on the acknowledgements' connection.
    pub(crate) async fn run_settle_pipe<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let conn = self
            .inner
            .settle
            .get_or_try_init(|| {
                self.inner
                    .connector
                    .connect(self.inner.connector.options().response_timeout)
            })
            .await?
            .clone();
        Self::pipe_on(conn, self.options().reconnect_for, op, pipe).await
    }

    async fn pipe_on<T: redis::FromRedisValue>(
        conn: Conn,
        reconnect_for: std::time::Duration,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        conn::retry(op, reconnect_for, || {
            let mut c = conn.clone();
            async move { pipe.query_async::<T>(&mut c).await }
        })
        .await
    }

    /// Runs `cmd` on the client's shared connection, retrying while Redis is
    /// unreachable (for other crates' keys beside the transport's, such as
    /// the webhook subscriptions; name them from [`Client::keys`]). `op`
    /// names the command in errors. A command that is not idempotent may run
    /// twice when the connection drops after Redis executed it.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.run(op, cmd).await
    }

    /// Runs `pipe` (one round trip; atomic if it is a `MULTI` pipeline) like
    /// [`Client::query`].
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        self.run_pipe(op, pipe).await
    }

    /// Runs a script on the shared connection, retrying while Redis is unreachable.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let conn = self.conn();
        conn::retry(op, self.options().reconnect_for, || {
            let mut c = conn.clone();
            async move { inv.invoke_async::<T>(&mut c).await }
        })
        .await
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<()> {
        self.run::<()>("PING", &redis::cmd("PING")).await
    }

    /// Publishes a batch of `(event type, payload)` in one round trip.
    ///
    /// `payload` is structured-mode CloudEvent JSON (bare data JSON is
    /// wrapped into a CloudEvent of the type), written with the type's codec
    /// ([`RedisConfig::codec_of`]; on pub/sub by default each channel keeps
    /// the format it carries, see [`Codec::Auto`]). Streams mode: one `XADD`
    /// per event; pub/sub: one `PUBLISH`. Concurrent calls share pipelines:
    /// what many tasks publish meanwhile goes to Redis together, each call
    /// still returning the outcome of its own events.
    pub async fn publish(&self, events: &[(&str, &[u8])]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let config = &self.inner.config;
        let pubsub = config.mode() == Mode::PubSub;
        let fast = pubsub || config.layout() == &Layout::PerType;
        let mut cmds = Vec::with_capacity(events.len() + 1);
        let mut new_types: Vec<&str> = Vec::new();
        {
            // Hot path (per-type streams or pub/sub, CloudEvents): one map
            // lookup gives the stream key or channel, and whether the type
            // is registered.
            let targets = self.inner.targets.read().expect("not poisoned");
            for (ty, payload) in events {
                match targets.get(*ty) {
                    Some(target)
                        if fast && !self.publishes_bare(ty) && looks_structured(payload) =>
                    {
                        // Sized up front: the payload is copied once, without regrowing.
                        let size = target.len() + payload.len() + 32;
                        let mut cmd;
                        if pubsub {
                            cmd = Cmd::with_capacity(3, size);
                            cmd.arg("PUBLISH").arg(&**target).arg(*payload);
                        } else {
                            cmd = Cmd::with_capacity(5, size);
                            cmd.arg("XADD")
                                .arg(&**target)
                                .arg("*")
                                .arg("cloud_event")
                                .arg(*payload);
                        }
                        cmds.push(cmd);
                    }
                    known => {
                        check_name("event type", ty)?;
                        if known.is_none() && self.caches_targets() && !new_types.contains(ty) {
                            new_types.push(ty);
                            if pubsub {
                                self.warn_if_guessing(ty);
                            }
                        }
                        cmds.push(write_cmd(self.write(ty, payload)));
                    }
                }
            }
        }
        if !new_types.is_empty() && self.registers_types() {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(self.inner.keys.types()).arg(&new_types);
            cmds.push(sadd);
        }
        self.inner.publisher.send(cmds).await?;
        if !new_types.is_empty() {
            let keys = &self.inner.keys;
            let mut known = self.inner.targets.write().expect("not poisoned");
            for t in new_types {
                let target = if pubsub {
                    keys.channel(t)
                } else {
                    keys.stream(t)
                };
                known.insert(t.to_owned(), Arc::from(target));
            }
        }
        Ok(())
    }

    /// Publishes one event.
    pub async fn publish_one(&self, event_type: &str, payload: &[u8]) -> Result<()> {
        self.publish(&[(event_type, payload)]).await
    }

    /// Publishes a `cloudevents::Event` (its `type` picks the stream or channel).
    pub async fn publish_event(&self, event: &cloudevents::Event) -> Result<()> {
        use cloudevents::AttributesReader;
        let payload = codec::encode_event(event)?;
        self.publish_one(event.ty(), &payload).await
    }

    /// Whether events of `ty` are written as bare data JSON: the type's codec
    /// says so, or (pub/sub, [`Codec::Auto`]) its channel carried bare JSON.
    pub(crate) fn publishes_bare(&self, ty: &str) -> bool {
        let config = &self.inner.config;
        match config.codec_of(ty) {
            Codec::Legacy => !matches!(config.layout(), Layout::Django { .. }),
            Codec::Auto => config.mode() == Mode::PubSub && self.inner.formats.carries_bare(ty),
            _ => false,
        }
    }

    /// Why events of `ty` are written the way they are, for logs.
    pub(crate) fn codec_reason(&self, ty: &str) -> String {
        let config = &self.inner.config;
        match (config.codec_of(ty), config.codec_chosen_for(ty)) {
            (Codec::Auto, _) => "`codec=auto`, the pub/sub default: a channel that carried bare JSON stays bare; set `legacy_types` or `cloudevents_types` in the URL to choose".into(),
            (codec, true) => format!("the URL or config chose `{codec:?}` for it"),
            (codec, false) => format!("`{codec:?}` is the default"),
        }
    }

    /// `codec=auto` (the pub/sub default) on a channel that carried nothing
    /// this client received: the publish writes CloudEvents JSON, which a
    /// reader of bare JSON would misread; says so once per type.
    fn warn_if_guessing(&self, ty: &str) {
        let config = &self.inner.config;
        if config.codec_of(ty) == Codec::Auto
            && !config.codec_chosen_for(ty)
            && self.inner.formats.first_guess(ty)
        {
            tracing::warn!(
                event_type = %ty,
                "publishing CloudEvents JSON on pub/sub channel `{}`, on which no message was received yet; if other services read it as bare JSON (`json.loads(msg)[\"id\"]`), add `legacy_types={ty}` (or `codec=legacy`) to the Redis URL; `codec=cloudevents` says every channel carries CloudEvents and silences this",
                self.inner.keys.channel(ty)
            );
        }
    }

    /// Per-type streams: the first publish of a type adds it to `{P}:types`.
    fn registers_types(&self) -> bool {
        self.inner.config.mode() == Mode::Streams && self.inner.config.layout() == &Layout::PerType
    }

    /// Whether publishes remember each type's stream key or channel.
    fn caches_targets(&self) -> bool {
        self.registers_types() || self.inner.config.mode() == Mode::PubSub
    }

    /// What publishing `payload` as `ty` writes.
    pub(crate) fn write<'a>(&self, ty: &str, payload: &'a [u8]) -> Write<'a> {
        let keys = &self.inner.keys;
        let config = &self.inner.config;
        let bare = self.publishes_bare(ty);
        let body = |payload: &'a [u8]| -> Cow<'a, [u8]> {
            if bare {
                codec::legacy_data(payload)
            } else if looks_structured(payload) {
                Cow::Borrowed(payload)
            } else {
                match codec::wrap_legacy(ty, &source_of(ty), payload) {
                    Some(b) => Cow::Owned(b.to_vec()),
                    None => Cow::Borrowed(payload),
                }
            }
        };
        match (config.mode(), config.layout()) {
            (Mode::PubSub, _) => Write::Publish {
                channel: keys.channel(ty),
                payload: body(payload),
            },
            (_, Layout::PerType) => {
                let field = if bare { "data" } else { "cloud_event" };
                Write::Xadd {
                    key: keys.stream(ty),
                    fields: vec![(field, body(payload))],
                }
            }
            (_, Layout::Django { .. }) => {
                let ce = body(payload);
                let (id, source, time) = match codec::header_attrs(&ce) {
                    Some(a) => (
                        a.id.into_owned(),
                        a.source.map(|s| s.into_owned()).unwrap_or_default(),
                        a.time
                            .map(|t| t.into_owned())
                            .unwrap_or_else(|| codec::format_time(SystemTime::now())),
                    ),
                    None => (
                        eventbus_core::codec::new_event_id(SystemTime::now()).to_string(),
                        String::new(),
                        codec::format_time(SystemTime::now()),
                    ),
                };
                Write::Xadd {
                    key: keys.stream(ty),
                    fields: vec![
                        ("event_id", Cow::Owned(id.into_bytes())),
                        ("event_type", Cow::Owned(ty.as_bytes().to_vec())),
                        ("source", Cow::Owned(source.into_bytes())),
                        ("timestamp", Cow::Owned(time.into_bytes())),
                        ("cloud_event", ce),
                    ],
                }
            }
        }
    }

    /// A consumer of `group` reading `types`.
    ///
    /// Streams: creates the group on every stream it reads (`MKSTREAM`), at
    /// [`ConsumerOptions::start`]; a [`Topics::All`] consumer reads every
    /// `{P}:stream:*` stream, whoever writes it, and creates the group on a
    /// stream it finds later at the group's start (`Since` its time, the
    /// consumer's creation for `Latest`, `0` for `Earliest`). Pub/sub:
    /// subscribes to the types' channels (or the prefix pattern for `All`)
    /// before returning, so nothing published after this call is missed.
    pub async fn consumer(
        &self,
        group: &str,
        types: Topics,
        opts: ConsumerOptions,
    ) -> Result<Consumer> {
        check_name("group", group)?;
        if let Topics::Types(list) = &types {
            for t in list {
                check_name("event type", t)?;
            }
        }
        let kind = match self.inner.config.mode() {
            Mode::Streams => Kind::Streams(Arc::new(
                StreamConsumer::new(self.clone(), group, types, opts).await?,
            )),
            Mode::PubSub => Kind::PubSub(Arc::new(
                PubSubConsumer::new(self.clone(), group, types, opts).await?,
            )),
        };
        Ok(Consumer { kind })
    }
}

/// The command that performs `write`.
pub(crate) fn write_cmd(write: Write<'_>) -> Cmd {
    match write {
        Write::Xadd { key, fields } => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key).arg("*");
            for (f, v) in &fields {
                cmd.arg(*f).arg(&**v);
            }
            cmd
        }
        Write::Publish { channel, payload } => {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(&*payload);
            cmd
        }
    }
}

/// The `source` given to bare payloads wrapped into CloudEvents.
pub(crate) fn source_of(channel_or_type: &str) -> String {
    format!("/redis/{channel_or_type}")
}

/// Cheap check used on the publish path: a structured CloudEvent always has
/// a `"specversion"` member (usually first).
pub(crate) fn looks_structured(payload: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"specversion\"";
    if payload.get(1..1 + NEEDLE.len()) == Some(NEEDLE) {
        return true;
    }
    payload
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'"' && payload[i..].starts_with(NEEDLE))
}
