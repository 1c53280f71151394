//! Compile-time diagnostics of `#[derive(Event)]`, `#[handler]` and `#[schedule]`.
//!
//! They live here, not in `eventbus`, so that trybuild builds `eventbus` (a
//! dev-dependency) with its default features only: from `eventbus` under
//! `--all-features` it would rebuild sqlx and redis for its test crate.
//!
//! The `.stderr` files were written with the toolchain pinned below
//! (`TRYBUILD=overwrite cargo test -p eventbus-macros --test ui`). Another rustc
//! words its own notes differently, so with another version the test says so
//! and skips (set `EVENTBUS_UI_STRICT=1` to run it anyway).

/// The rustc the `.stderr` files were written with.
const PINNED_RUSTC: &str = "rustc 1.95.";

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn ui() {
    let version = rustc_version();
    if !version.starts_with(PINNED_RUSTC) && std::env::var_os("EVENTBUS_UI_STRICT").is_none() {
        eprintln!(
            "note: skipping the UI tests: {} is not the pinned {PINNED_RUSTC}x whose messages the .stderr files hold (EVENTBUS_UI_STRICT=1 runs them anyway)",
            version.trim()
        );
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/event/*.rs");
    t.compile_fail("tests/ui/handler/*.rs");
    t.compile_fail("tests/ui/schedule/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
