//! Connections: one multiplexed, self-reconnecting connection shared by every
//! non-blocking command (single server: `ConnectionManager`; cluster:
//! `cluster_async::ClusterConnection`), one more of the same kind for the
//! consumers' acknowledgements (apart from the publish pipelines), dedicated
//! ones for blocking reads and for pub/sub, and the retry-with-backoff used
//! around every command.

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// A connection that pipelines concurrent callers. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Timeouts and the reconnect budget of a [`crate::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long a command waits for its reply before it counts as a connection problem.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long an operation keeps retrying (with exponential backoff) while
    /// Redis is unreachable, before it returns the error.
    pub reconnect_for: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            reconnect_for: Duration::from_secs(30),
        }
    }
}

/// Creates connections for one [`RedisConfig`].
pub(crate) struct Connector {
    config: RedisConfig,
    opts: ClientOptions,
    single: Option<redis::Client>,
    cluster: Option<ClusterClient>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn connection_info(config: &RedisConfig, host: &str, port: u16) -> Result<ConnectionInfo> {
    let addr = if config.tls() {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let mut redis = RedisConnectionInfo::default().set_db(config.db());
    if let Some(user) = config.username() {
        redis = redis.set_username(user);
    }
    if let Some(pass) = config.password() {
        redis = redis.set_password(pass.expose());
    }
    Ok(addr
        .into_connection_info()
        .map_err(|e| connect_error(config, e))?
        .set_redis_settings(redis))
}

pub(crate) fn connect_error(config: &RedisConfig, e: RedisError) -> Error {
    let reason = match e.kind() {
        ErrorKind::AuthenticationFailed => {
            "authentication failed (check the user and password in the URL)".to_owned()
        }
        // Something answered, but not in the Redis protocol: another service
        // (HTTP, SSH, PostgreSQL, ...) listens on that port.
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            "the server there does not speak the Redis protocol (another service listens on that port; Redis's default port is 6379)".to_owned()
        }
        // One line, whatever the client library put into its message.
        _ => e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    };
    Error::Connect {
        addr: config.addr(),
        reason,
        source: Some(e),
    }
}

/// For a TLS URL: makes sure rustls has a crypto provider, and reads the
/// certificates named by `tls_ca`, `tls_cert` and `tls_key` now, so a wrong
/// path is reported when the client is created.
#[cfg(feature = "tls")]
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>> {
    if !config.tls() {
        return Ok(None);
    }
    ensure_crypto_provider();
    let files = config.tls_files();
    let read = |option: &str, path: &str| {
        std::fs::read(path).map_err(|e| Error::Config {
            url: config.to_string(),
            reason: format!("cannot read the `{option}` file `{path}`: {e}"),
        })
    };
    let root_cert = files.ca.as_deref().map(|p| read("tls_ca", p)).transpose()?;
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("tls_cert", cert)?,
            client_key: read("tls_key", key)?,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// Makes ring rustls's process-wide crypto provider unless the application
/// chose one (rustls cannot pick by itself when its features name none, or
/// several).
#[cfg(feature = "tls")]
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A client of one server, with the URL's certificates when it names any.
fn single_client(config: &RedisConfig, info: ConnectionInfo) -> Result<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(certs) = tls_certificates(config)? {
        return redis::Client::build_with_tls(info, certs).map_err(|e| connect_error(config, e));
    }
    redis::Client::open(info).map_err(|e| connect_error(config, e))
}

impl Connector {
    pub(crate) fn new(config: &RedisConfig, opts: ClientOptions) -> Result<Self> {
        let (single, cluster) = if config.is_cluster() {
            let infos = config
                .nodes()
                .iter()
                .map(|(h, p)| connection_info(config, h, *p))
                .collect::<Result<Vec<_>>>()?;
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.response_timeout);
            if let Some(user) = config.username() {
                builder = builder.username(user);
            }
            if let Some(pass) = config.password() {
                builder = builder.password(pass.expose());
            }
            #[cfg(feature = "tls")]
            if let Some(certs) = tls_certificates(config)? {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| connect_error(config, e))?;
            (None, Some(client))
        } else {
            let (h, p) = &config.nodes()[0];
            let client = single_client(config, connection_info(config, h, *p)?)?;
            (Some(client), None)
        };
        Ok(Connector {
            config: config.clone(),
            opts,
            single,
            cluster,
        })
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// A multiplexed connection that reconnects by itself, replies awaited
    /// for at most `response_timeout`.
    pub(crate) async fn connect(&self, response_timeout: Duration) -> Result<Conn> {
        if let Some(client) = &self.single {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.opts.connect_timeout))
                .set_response_timeout(Some(response_timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(3);
            let manager = ConnectionManager::new_with_config(client.clone(), cfg)
                .await
                .map_err(|e| connect_error(&self.config, e))?;
            Ok(Conn::Single(manager))
        } else {
            let client = self.cluster.as_ref().expect("single or cluster");
            let cfg = ClusterConfig::new()
                .set_connection_timeout(self.opts.connect_timeout)
                .set_response_timeout(response_timeout);
            let conn = client
                .get_async_connection_with_config(cfg)
                .await
                .map_err(|e| connect_error(&self.config, e))?;
            Ok(Conn::Cluster(conn))
        }
    }

    /// A pub/sub connection: to the server, or to the first reachable
    /// cluster node (classic pub/sub messages reach every node of a cluster).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        let mut last = None;
        for (h, p) in self.config.nodes() {
            let info = connection_info(&self.config, h, *p)?;
            let client = single_client(&self.config, info)?;
            match tokio::time::timeout(self.opts.connect_timeout, client.get_async_pubsub()).await {
                Ok(Ok(ps)) => return Ok(ps),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out",
                    )))
                }
            }
        }
        Err(connect_error(
            &self.config,
            last.unwrap_or_else(|| RedisError::from((ErrorKind::Client, "no nodes"))),
        ))
    }
}

/// Errors after which the same command may succeed: the connection dropped
/// or timed out, Redis is loading its data after a restart, the cluster is
/// resharding or failing over.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                )
        )
}

/// True for a `NOGROUP` reply (stream or consumer group missing, e.g. after
/// Redis lost its data).
pub(crate) fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// Runs `f` until it succeeds, fails with a non-transient error, or the
/// reconnect budget is spent; sleeps with exponential backoff and jitter
/// between attempts.
pub(crate) async fn retry<T, F, Fut>(op: &'static str, budget: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(25);
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(op, attempts = attempt + 1, "Redis is reachable again");
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) && start.elapsed() < budget => {
                attempt += 1;
                let sleep = delay.mul_f64(0.5 + fastrand::f64());
                tracing::warn!(op, error = %e, attempt, "Redis unreachable; retrying in {sleep:?}");
                tokio::time::sleep(sleep).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(Error::redis(op, e)),
        }
    }
}
