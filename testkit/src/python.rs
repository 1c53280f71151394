//! The Python peers of the interop tests: the Django services' own clients
//! (redis-py, the CloudEvents SDK), pinned in `scripts/python-peers.txt` and
//! installed into `target/python-peers` of the workspace (git-ignored),
//! never into the machine's Python.
//!
//! `scripts/test.sh` installs them before the tests run; a test run started
//! another way installs them on first use (once, under a file lock, with
//! `pip install --target`). A peer that cannot be had is a test failure that
//! says what to install, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Error, err};

/// The workspace's root (this crate lives in `<root>/testkit`).
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `scripts/python-peers.txt`.
pub fn requirements() -> PathBuf {
    workspace().join("scripts/python-peers.txt")
}

/// Where the pinned peers are installed: `target/python-peers`.
pub fn peers_dir() -> PathBuf {
    workspace().join("target/python-peers")
}

/// `python3` with the pinned peers first on its module path (and without
/// the user's site directory), for a test to add its arguments to.
///
/// # Panics
/// When `python3` or a pinned peer cannot be had; the message says what to install.
pub fn python() -> Command {
    if let Err(e) = ensure_peers() {
        panic!("{e}");
    }
    let mut c = Command::new("python3");
    c.arg("-s").env("PYTHONPATH", peers_dir());
    c
}

/// Installs the pinned peers unless `target/python-peers` already holds
/// exactly these pins (a stamp file records them).
pub fn ensure_peers() -> Result<(), Error> {
    static DONE: OnceLock<Result<(), Error>> = OnceLock::new();
    DONE.get_or_init(install).clone()
}

fn install() -> Result<(), Error> {
    let pins = std::fs::read_to_string(requirements())
        .map_err(|e| err(format!("cannot read {}: {e}", requirements().display())))?;
    let dir = peers_dir();
    let stamp = dir.join(".pins");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    // Test binaries run in parallel: one installs, the others wait.
    let lock = std::fs::File::create(workspace().join("target/python-peers.lock"))?;
    lock.lock()?;
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(());
    }
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--upgrade", "--target"])
            .arg(&dir)
            .args(extra)
            .arg("-r")
            .arg(requirements())
            .status()
    };
    let ok = match pip(&[]) {
        Ok(s) if s.success() => true,
        // Debian's Python refuses pip unless told this install is local.
        _ => pip(&["--break-system-packages"]).is_ok_and(|s| s.success()),
    };
    if !ok {
        return Err(err(format!(
            "cannot install the Python peers of the interop tests ({}) into {}: install python3 and pip (apt-get install -y python3 python3-pip) and run scripts/test.sh",
            pins.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        )));
    }
    std::fs::write(&stamp, pins)?;
    Ok(())
}
