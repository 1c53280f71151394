#![allow(dead_code)]
//! Shared by the catalogue tests (and `examples/tests/catalog_reviews.rs`):
//! the registry of one test module, and the official AsyncAPI parser run on
//! generated documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use eventbus::__private::{
    EventRegistration, HandlerRegistration, ScheduleRegistration, inventory,
};
use eventbus::registry::Registry;

/// What the macros registered in `module` and the modules inside it, checked
/// the way [`Registry::global`] checks the whole binary.
///
/// The areas of this test binary each register their own service (and the
/// compatibility tests several versions of the same types on purpose), so
/// the binary's global registry is not one service's: each area reads its own.
pub fn registry_of(module: &str) -> Registry {
    let inside = |path: &str| {
        path.strip_prefix(module)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    let events = inventory::iter::<EventRegistration>()
        .map(|r| r.0)
        .filter(|info| inside(info.rust_path))
        .collect();
    let handlers = inventory::iter::<HandlerRegistration>()
        .map(|r| (r.0)())
        .filter(|h| inside(h.meta().module_path))
        .collect();
    let schedules = inventory::iter::<ScheduleRegistration>()
        .map(|r| (r.0)())
        .filter(|s| inside(s.module_path))
        .collect();
    Registry::build(events, handlers, schedules)
        .unwrap_or_else(|e| panic!("the registry of `{module}` is invalid: {e}"))
}

/// `scripts/asyncapi` at the root of the workspace.
pub fn asyncapi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .join("scripts/asyncapi")
}

/// Validates AsyncAPI files with `node scripts/asyncapi/validate.mjs`
/// (the official `@asyncapi/parser`, plus each message example against its
/// schemas); panics with the parser's report when one is invalid.
pub fn validate_asyncapi(files: &[&Path]) {
    let dir = asyncapi_dir();
    if !dir.join("node_modules/@asyncapi/parser").is_dir() {
        panic!(
            "the AsyncAPI validator is not installed: run `npm ci --prefix {}` (Node.js 18 or newer) and test again",
            dir.display()
        );
    }
    let output = Command::new("node")
        .arg(dir.join("validate.mjs"))
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): install Node.js 18 or newer, then `npm ci --prefix {}`",
                dir.display()
            )
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the AsyncAPI document is invalid ({}):\n{report}",
        output.status
    );
    for file in files {
        assert!(
            report.contains(&format!("{}: valid AsyncAPI 3.0.0", file.display())),
            "{report}"
        );
    }
}

/// Panics unless the YAML file holds the same data as the JSON file, as
/// `js-yaml` (the YAML reader of the AsyncAPI tools) reads it.
pub fn assert_yaml_equals_json(yaml: &Path, json: &Path) {
    let dir = asyncapi_dir();
    let script = "import yaml from 'js-yaml'; import { readFileSync } from 'node:fs'; \
        import { isDeepStrictEqual } from 'node:util'; \
        const [y, j] = process.argv.slice(1); \
        const a = yaml.load(readFileSync(y, 'utf8'), { schema: yaml.CORE_SCHEMA }); \
        const b = JSON.parse(readFileSync(j, 'utf8')); \
        if (!isDeepStrictEqual(a, b)) { console.error('the YAML and the JSON differ'); process.exit(1); }";
    let output = Command::new("node")
        .current_dir(&dir)
        .args(["--input-type=module", "-e", script])
        .arg(yaml)
        .arg(json)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): install Node.js 18 or newer, then `npm ci --prefix {}`",
                dir.display()
            )
        });
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh directory under the system temp dir, removed by `Drop`.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "eventbus-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
