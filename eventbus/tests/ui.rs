//! Compile-time diagnostics of `#[derive(Event)]`, `#[handler]` and `#[schedule]`.
//!
//! The `.stderr` files are written by the toolchain of the CI (`TRYBUILD=overwrite
//! cargo test -p eventbus --test ui`); a new rustc may word its own notes
//! differently, the eventbus messages themselves are ours.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/event/*.rs");
    t.compile_fail("tests/ui/handler/*.rs");
    t.compile_fail("tests/ui/schedule/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
