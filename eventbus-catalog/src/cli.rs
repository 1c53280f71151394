//! The `docs` subcommand, and the test helper that keeps committed
//! catalogues fresh.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::catalog::Catalog;
use crate::compat::compare;

/// An output format of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Markdown for people (`events.md`).
    Markdown,
    /// AsyncAPI 3.0 as JSON (`asyncapi.json`).
    AsyncApiJson,
    /// AsyncAPI 3.0 as YAML (`asyncapi.yaml`).
    AsyncApiYaml,
    /// The machine-readable catalogue that the compatibility check reads (`catalog.json`).
    Json,
    /// The JSON Schema of each event's data, by type (`--event TYPE` for one).
    JsonSchema,
}

impl Format {
    /// The formats that `--out-dir` writes and [`assert_up_to_date`] checks, in that order.
    pub const FILES: [Format; 4] = [
        Format::Markdown,
        Format::Json,
        Format::AsyncApiJson,
        Format::AsyncApiYaml,
    ];

    /// The file name used by `--out-dir` and [`assert_up_to_date`].
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Markdown => "events.md",
            Format::AsyncApiJson => "asyncapi.json",
            Format::AsyncApiYaml => "asyncapi.yaml",
            Format::Json => "catalog.json",
            Format::JsonSchema => "schemas.json",
        }
    }

    /// The name given to `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::AsyncApiJson => "asyncapi",
            Format::AsyncApiYaml => "asyncapi-yaml",
            Format::Json => "json",
            Format::JsonSchema => "json-schema",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "markdown" | "md" => Ok(Format::Markdown),
            "asyncapi" | "asyncapi-json" => Ok(Format::AsyncApiJson),
            "asyncapi-yaml" | "asyncapi-yml" | "yaml" => Ok(Format::AsyncApiYaml),
            "json" | "catalog" => Ok(Format::Json),
            "json-schema" | "schema" => Ok(Format::JsonSchema),
            other => Err(format!(
                "unknown format `{other}`; expected one of: markdown, asyncapi, asyncapi-yaml, json, json-schema"
            )),
        }
    }
}

const HELP: &str = "\
Prints the event catalogue of this service, generated from its code.

Usage: <service> docs [OPTIONS]

Options:
      --format <FORMAT>     markdown (default), asyncapi (AsyncAPI 3.0 JSON), asyncapi-yaml,
                            json (the machine-readable catalogue that --check reads),
                            json-schema (the JSON Schema of each event's data, by type)
      --event <TYPE>        with --format json-schema: only the schema of TYPE
  -o, --output <FILE>       write to FILE instead of standard output
      --out-dir <DIR>       write every format: events.md, catalog.json, asyncapi.json, asyncapi.yaml
      --check <FILE>        compare with a committed catalogue (JSON); exit 1 on a breaking change
      --api-version <VER>   the version in the AsyncAPI `info` (default 0.0.0)
  -h, --help                print this help

Exit status: 0 on success, 1 when --check finds a breaking change, 2 on a usage or I/O error.
";

/// If the process was started as `<program> docs ...`, prints the catalogue
/// of everything registered in this binary as the arguments ask and exits;
/// otherwise returns at once.
///
/// Call it first thing in `main`, before connecting to anything, so that
/// `my-service docs --format asyncapi` works on a laptop or in CI:
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> eventbus::Result<()> {
///     eventbus_catalog::main_if_requested("reviews");
///     let bus = eventbus::Bus::builder().service("reviews").connect_env().await?;
///     bus.run().await
/// }
/// ```
///
/// For handlers given to [`BusBuilder::handler`](eventbus::BusBuilder::handler)
/// rather than registered with `#[handler]`, build the catalogue with
/// [`Catalog::from_bus`] and call [`cli`].
pub fn main_if_requested(service: &str) {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new("docs")) {
        return;
    }
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let stdout = io::stdout();
    let stderr = io::stderr();
    let code = match Catalog::global(service) {
        Ok(catalog) => cli(&catalog, args, &mut stdout.lock(), &mut stderr.lock()),
        Err(e) => {
            let _ = writeln!(
                stderr.lock(),
                "the registry of this binary is invalid:\n{e}"
            );
            2
        }
    };
    let _ = stdout.lock().flush();
    std::process::exit(code);
}

/// Runs the `docs` subcommand (`args` without the word `docs`) on
/// `catalog`; returns the exit status. See `--help` for the options.
///
/// ```
/// # let catalog = eventbus_catalog::Catalog::from_registry(
/// #     &eventbus::registry::Registry::build(vec![], vec![], vec![])?, "demo");
/// let mut out = Vec::new();
/// let status = eventbus_catalog::cli(&catalog, ["--format", "json"], &mut out, &mut std::io::sink());
/// assert_eq!(status, 0);
/// assert!(String::from_utf8(out).unwrap().contains("\"service\": \"demo\""));
/// # Ok::<(), eventbus::Error>(())
/// ```
pub fn cli<I, S>(catalog: &Catalog, args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    match run(
        catalog,
        args.into_iter().map(Into::into).collect(),
        out,
        err,
    ) {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "error: {message}\n\nRun with --help for the options.");
            2
        }
    }
}

#[derive(Default)]
struct Options {
    format: Option<Format>,
    output: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    check: Option<PathBuf>,
    version: Option<String>,
    event: Option<String>,
}

fn run(
    catalog: &Catalog,
    args: Vec<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, String> {
    let mut opts = Options::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                out.write_all(HELP.as_bytes()).map_err(|e| e.to_string())?;
                return Ok(0);
            }
            "--format" | "-f" => opts.format = Some(value("--format")?.parse()?),
            "--output" | "-o" => opts.output = Some(value("--output")?.into()),
            "--out-dir" => opts.out_dir = Some(value("--out-dir")?.into()),
            "--check" => opts.check = Some(value("--check")?.into()),
            "--api-version" => opts.version = Some(value("--api-version")?),
            "--event" => opts.event = Some(value("--event")?),
            other => {
                return Err(format!(
                    "unexpected argument `{other}`; expected one of: --format, --event, --output, --out-dir, --check, --api-version, --help"
                ));
            }
        }
    }
    let catalog = match opts.version {
        Some(v) => catalog.clone().with_version(v),
        None => catalog.clone(),
    };

    if let Some(path) = &opts.check {
        let committed = Catalog::load(path).map_err(|e| e.to_string())?;
        let report = compare(&committed, &catalog);
        let text = format!(
            "compatibility of `{}` with {}: {report}",
            catalog.service,
            path.display()
        );
        if report.is_compatible() {
            let _ = out.write_all(text.as_bytes());
            return Ok(0);
        }
        let _ = err.write_all(text.as_bytes());
        return Ok(1);
    }
    if let Some(dir) = &opts.out_dir {
        write_files(&catalog, dir)
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        let _ = writeln!(
            err,
            "wrote {} in {}",
            Format::FILES.map(Format::file_name).join(", "),
            dir.display()
        );
        return Ok(0);
    }
    let format = opts.format.unwrap_or(Format::Markdown);
    let text = match (&opts.event, format) {
        (None, format) => catalog.render(format),
        (Some(ty), Format::JsonSchema) => {
            let event = catalog.event(ty).ok_or_else(|| {
                let known: Vec<&str> = catalog
                    .events
                    .iter()
                    .map(|e| e.type_name.as_str())
                    .collect();
                format!(
                    "no event type `{ty}` in `{}`; it has: {}",
                    catalog.service,
                    known.join(", ")
                )
            })?;
            crate::schema::pretty(&event.schema)
        }
        (Some(_), _) => return Err("`--event` goes with `--format json-schema`".into()),
    };
    match &opts.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => out.write_all(text.as_bytes()).map_err(|e| e.to_string())?,
    }
    Ok(0)
}

fn write_files(catalog: &Catalog, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for format in Format::FILES {
        std::fs::write(dir.join(format.file_name()), catalog.render(format))?;
    }
    Ok(())
}

/// Fails a test when the catalogue committed in `dir` (`events.md`,
/// `catalog.json`, `asyncapi.json`, `asyncapi.yaml`) is not what the code
/// generates now, or when the code breaks compatibility with the committed
/// `catalog.json`. The failure says how to regenerate the files.
///
/// With `EVENTBUS_BLESS=1` in the environment it rewrites stale files
/// instead, as long as the change is compatible; `EVENTBUS_BLESS=breaking`
/// also accepts a breaking change (when every producer and consumer has
/// moved on).
///
/// ```no_run
/// #[test]
/// fn event_catalogue_is_up_to_date() {
///     let catalog = eventbus_catalog::Catalog::global("reviews").unwrap();
///     eventbus_catalog::assert_up_to_date(&catalog, concat!(env!("CARGO_MANIFEST_DIR"), "/docs"));
/// }
/// ```
#[track_caller]
pub fn assert_up_to_date(catalog: &Catalog, dir: impl AsRef<Path>) {
    let dir = dir.as_ref();
    let bless = std::env::var("EVENTBUS_BLESS")
        .ok()
        .filter(|v| !v.is_empty() && v != "0");
    let command = regenerate_command();

    let committed_path = dir.join(Format::Json.file_name());
    if committed_path.exists() {
        match Catalog::load(&committed_path) {
            Ok(committed) => {
                let report = compare(&committed, catalog);
                if !report.is_compatible() && bless.as_deref() != Some("breaking") {
                    panic!(
                        "the events of `{}` break compatibility with the committed catalogue {}:\n{report}\n\
                         Make the change compatible (deprecate instead of removing, add fields as `Option`, \
                         keep old names as aliases). If the break is intended, because every producer and \
                         consumer has moved on, accept it with:\n    {}",
                        catalog.service,
                        committed_path.display(),
                        command.replace("EVENTBUS_BLESS=1", "EVENTBUS_BLESS=breaking")
                    );
                }
            }
            Err(e) if bless.is_none() => panic!("{e}\nRegenerate it with:\n    {command}"),
            Err(_) => {}
        }
    }

    let mut stale = Vec::new();
    for format in Format::FILES {
        let name = format.file_name();
        let want = catalog.render(format);
        match std::fs::read_to_string(dir.join(name)) {
            Ok(have) if have.replace("\r\n", "\n") == want => {}
            Ok(have) => stale.push(format!("{name}: {}", first_difference(&have, &want))),
            Err(_) => stale.push(format!("{name}: missing")),
        }
    }
    if stale.is_empty() {
        return;
    }
    if bless.is_some() {
        if let Err(e) = write_files(catalog, dir) {
            panic!("cannot write the catalogue to {}: {e}", dir.display());
        }
        eprintln!(
            "EVENTBUS_BLESS: rewrote the event catalogue in {}:\n  - {}",
            dir.display(),
            stale.join("\n  - ")
        );
        return;
    }
    panic!(
        "the event catalogue committed in {} is stale:\n  - {}\nRegenerate it (and commit the result) with:\n    {command}",
        dir.display(),
        stale.join("\n  - ")
    );
}

fn first_difference(have: &str, want: &str) -> String {
    let have = have.replace("\r\n", "\n");
    for (i, (a, b)) in have.lines().zip(want.lines()).enumerate() {
        if a != b {
            return format!(
                "line {} differs: committed `{}`, generated `{}`",
                i + 1,
                clip(a),
                clip(b)
            );
        }
    }
    let (h, w) = (have.lines().count(), want.lines().count());
    format!("the committed file has {h} lines, the generated one {w}")
}

fn clip(line: &str) -> String {
    let line = line.trim();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// `EVENTBUS_BLESS=1 cargo test -p <package> --test <target> -- <test>`, from
/// what cargo tells the running test.
fn regenerate_command() -> String {
    let mut cmd = "EVENTBUS_BLESS=1 cargo test".to_owned();
    let package = std::env::var("CARGO_PKG_NAME").ok();
    if let Some(p) = &package {
        cmd.push_str(&format!(" -p {p}"));
    }
    let target = std::env::current_exe().ok().and_then(|exe| {
        let stem = exe.file_stem()?.to_string_lossy().into_owned();
        Some(match stem.rsplit_once('-') {
            Some((base, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                base.to_owned()
            }
            _ => stem,
        })
    });
    match (target, &package) {
        (Some(t), Some(p)) if t == p.replace('-', "_") => cmd.push_str(" --lib"),
        (Some(t), _) => cmd.push_str(&format!(" --test {t}")),
        (None, _) => {}
    }
    if let Some(name) = std::thread::current().name().filter(|n| *n != "main") {
        cmd.push_str(&format!(" -- {name}"));
    }
    cmd
}
