//! Throwaway `redis-server`s: one server on a free loopback port with its own
//! temporary directory (restartable on the same port and data, optionally
//! serving TLS with certificates of a private CA), or a 3-node Redis Cluster.
//! Never the system instance on 6379. Processes are killed when the value is
//! dropped.
//!
//! ```no_run
//! use testkit::{RedisOptions, RedisServer};
//! let mut server = RedisServer::start_with(RedisOptions { appendonly: true, ..Default::default() })?;
//! let url = server.url();          // redis://127.0.0.1:<port>/0
//! server.restart()?;               // same port, same data directory
//! # Ok::<(), testkit::Error>(())
//! ```
//!
//! `redis-server` and `redis-cli` are looked up in `REDIS_SERVER` and
//! `REDIS_CLI`, then `PATH`, then the usual places; `openssl` (for
//! [`RedisOptions::tls`]) in `OPENSSL`, then the same.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, err, tail, wait};

/// How to run a test server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `--appendonly yes` (fsync every second; a graceful [`RedisServer::stop`] flushes it).
    pub appendonly: bool,
    /// `--requirepass`.
    pub password: Option<String>,
    /// Extra `redis-server` arguments.
    pub extra_args: Vec<String>,
    /// Also serve TLS on a second port, with a certificate of a private CA
    /// made for this server (by the `openssl` command); [`RedisServer::url`]
    /// is then a `rediss://` URL that trusts that CA. [`RedisServer::cmd`]
    /// keeps using the plain port.
    pub tls: bool,
    /// With `tls`: clients must present a certificate of that CA
    /// ([`RedisServer::tls_client_cert`]).
    pub tls_client_auth: bool,
}

/// A `redis-server` child process on `127.0.0.1:<free port>`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    opts: RedisOptions,
    cluster: bool,
}

fn not_found(what: &str) -> Error {
    err(format!(
        "{what} not found; install it with `apt-get install -y redis-server`"
    ))
}

/// Finds `redis-server` (`$REDIS_SERVER` wins, then `$PATH`, then the usual places).
pub fn redis_server_binary() -> Result<PathBuf, Error> {
    find_binary("REDIS_SERVER", "redis-server")
}

fn redis_cli_binary() -> Result<PathBuf, Error> {
    find_binary("REDIS_CLI", "redis-cli")
}

fn find_binary(env: &str, name: &str) -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/bin",
            "/usr/local/bin",
            "/usr/sbin",
            "/opt/homebrew/bin",
        ]
        .map(PathBuf::from),
    );
    find_in(name, std::env::var_os(env).map(PathBuf::from), &dirs)
}

fn find_in(name: &str, explicit: Option<PathBuf>, dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found(&format!("{name} (at {})", p.display())))
        };
    }
    crate::find_in(name, dirs.iter().cloned()).ok_or_else(|| not_found(name))
}

/// Writes a private CA (`ca.pem`), a server certificate for 127.0.0.1 and
/// localhost (`server.pem`, `server.key`) and a client certificate
/// (`client.pem`, `client.key`) into `dir`, with the `openssl` command.
fn make_certificates(dir: &Path) -> Result<(), Error> {
    let openssl = find_binary("OPENSSL", "openssl").map_err(|_| {
        err(
            "openssl not found (the TLS test server makes its certificates with it); install it with `apt-get install -y openssl`",
        )
    })?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 5] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=eventbus test CA",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
                "-subj",
                "/CN=eventbus test client",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "3650",
            "-extfile",
            "client.ext",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl)
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(err(format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

/// A loopback port nobody listens on (and, for cluster nodes, whose bus port
/// `port + 10000` is free too).
fn free_port(cluster: bool) -> Result<u16, Error> {
    for _ in 0..200 {
        let port = crate::free_port()?;
        if cluster && (port > 55535 || TcpListener::bind(("127.0.0.1", port + 10000)).is_err()) {
            continue;
        }
        return Ok(port);
    }
    Err(err("no free loopback port"))
}

impl RedisServer {
    /// Starts a server with default options (no persistence).
    pub fn start() -> Result<Self, Error> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server.
    pub fn start_with(opts: RedisOptions) -> Result<Self, Error> {
        Self::start_inner(opts, false)
    }

    fn start_inner(opts: RedisOptions, cluster: bool) -> Result<Self, Error> {
        let mut last = None;
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(cluster)?,
                tls_port: None,
                dir: tempfile::Builder::new()
                    .prefix("eventbus-redis-")
                    .tempdir()?,
                child: None,
                opts: opts.clone(),
                cluster,
            };
            if opts.tls {
                make_certificates(server.dir.path())?;
                server.tls_port = Some(free_port(false)?);
            }
            match server.spawn() {
                Ok(()) => return Ok(server),
                // Most likely another test took the port meanwhile: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err("redis-server did not start")))
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let bin = redis_server_binary()?;
        let dir = self.dir.path().to_str().expect("utf-8 temp dir").to_owned();
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.opts.appendonly { "yes" } else { "no" })
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg("redis.log")
            .arg("--daemonize")
            .arg("no");
        if let Some(p) = &self.opts.password {
            cmd.arg("--requirepass").arg(p);
        }
        if let Some(tls_port) = self.tls_port {
            let file = |name: &str| self.dir.path().join(name);
            cmd.arg("--tls-port")
                .arg(tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .arg("--tls-auth-clients")
                .arg(if self.opts.tls_client_auth {
                    "yes"
                } else {
                    "no"
                });
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        cmd.args(&self.opts.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start redis-server: {e}")))?;
        self.child = Some(child);
        let mut exited = None;
        let up = wait::blocking(Duration::from_secs(20), Duration::from_millis(20), || {
            match self.child.as_mut().expect("spawned").try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    return true;
                }
                Ok(None) => {}
                Err(_) => return false,
            }
            self.cmd(&["PING"]).is_ok_and(|reply| reply == "PONG")
        });
        if let Some(status) = exited {
            self.child = None;
            return Err(err(format!(
                "redis-server on port {} exited with {status}; log:\n{}",
                self.port,
                self.log_tail()
            )));
        }
        if !up {
            self.kill();
            return Err(err(format!(
                "redis-server on port {} did not answer PING; log:\n{}",
                self.port,
                self.log_tail()
            )));
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("redis.log"), 20)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`; with `tls`,
    /// `rediss://[:password@]127.0.0.1:<tls port>/0?tls_ca=<the CA's PEM>`.
    pub fn url(&self) -> String {
        let auth = match &self.opts.password {
            Some(p) => format!(":{p}@"),
            None => String::new(),
        };
        match self.tls_port {
            Some(tls_port) => format!(
                "rediss://{auth}127.0.0.1:{tls_port}/0?tls_ca={}",
                self.tls_ca().display()
            ),
            None => format!("redis://{auth}127.0.0.1:{}/0", self.port),
        }
    }

    /// The TLS port (with `tls`).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The PEM of the private CA that signed the server's (and the client's)
    /// certificate (with `tls`).
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate and its key, signed by [`tls_ca`](Self::tls_ca) (with `tls`).
    pub fn tls_client_cert(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client.key"),
        )
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops gracefully (`SHUTDOWN`, which flushes the append-only file) and waits.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = self.cmd(&["SHUTDOWN"]);
        wait::blocking(Duration::from_secs(10), Duration::from_millis(20), || {
            !self.is_running()
        });
        self.kill();
    }

    /// Kills the process (`SIGKILL`) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Ok(());
        }
        // The old process may still hold the port for a moment.
        let mut last = Ok(());
        wait::blocking(Duration::from_secs(10), Duration::from_millis(100), || {
            last = self.spawn();
            last.is_ok()
        });
        last
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.start_again()
    }

    /// Sends one command over a fresh connection and renders the reply as
    /// text (arrays one element per line; errors as `Err`).
    pub fn cmd(&self, args: &[&str]) -> Result<String, Error> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&args)
    }

    /// Like [`cmd`](Self::cmd) with binary arguments.
    pub fn cmd_bytes(&self, args: &[&[u8]]) -> Result<String, Error> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(p) = &self.opts.password {
            send(&mut writer, &[b"AUTH", p.as_bytes()])?;
            read_reply(&mut reader)?;
        }
        send(&mut writer, args)?;
        read_reply(&mut reader)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn send(w: &mut impl Write, args: &[&[u8]]) -> Result<(), Error> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
    w.write_all(&buf)?;
    Ok(w.flush()?)
}

fn read_reply(r: &mut impl BufRead) -> Result<String, Error> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(err(rest)),
        "$" => {
            let n: i64 = rest
                .parse()
                .map_err(|_| err(format!("unexpected reply `{line}`")))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest
                .parse()
                .map_err(|_| err(format!("unexpected reply `{line}`")))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(err(format!("unexpected reply `{line}`"))),
    }
}

/// A Redis Cluster of `n` primaries (no replicas) on free loopback ports.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits for `cluster_state:ok`.
    pub fn start(n: usize) -> Result<Self, Error> {
        let n = n.max(3);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(RedisServer::start_inner(RedisOptions::default(), true)?);
        }
        let cli = redis_cli_binary()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = RedisCluster { nodes };
        let ready = wait::blocking(Duration::from_secs(30), Duration::from_millis(100), || {
            cluster.nodes.iter().all(|s| {
                s.cmd(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info.contains(&format!("cluster_known_nodes:{n}"))
                })
            })
        });
        if !ready {
            return Err(err("the test cluster did not reach cluster_state:ok"));
        }
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_redis_server_says_how_to_install_it() {
        let e = find_in("redis-server", None, &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "redis-server not found; install it with `apt-get install -y redis-server`"
        );
        let e = find_in("redis-server", Some("/nope/redis-server".into()), &[]).unwrap_err();
        assert!(
            e.to_string().contains("apt-get install -y redis-server"),
            "{e}"
        );
    }
}
