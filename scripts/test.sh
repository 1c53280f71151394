#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration, UI and doc tests.
# Integration tests start their own redis-server and PostgreSQL on free
# loopback ports; this script installs the binaries when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # certificates of the TLS test server
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)  # the Python peers below
# The headless browser of the dashboard test (eventbus-cli/tests/dashboard_cli.rs).
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi

# The build and the test servers' data need about 7 GB; say so up front
# rather than failing later with a linker's "No space left on device".
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kb / 1024)) MiB free here; the build and tests need about 7 GiB" >&2
fi

echo "==> the AsyncAPI validator (official @asyncapi/parser)"
npm ci --prefix scripts/asyncapi --ignore-scripts --no-audit --no-fund --loglevel=error

echo "==> the dashboard's browser driver (playwright-core, with Debian's chromium)"
npm ci --prefix scripts/dashboard-e2e --ignore-scripts --no-audit --no-fund --loglevel=error

echo "==> the Python peers of the interop tests (scripts/python-peers.txt, into target/python-peers)"
mkdir -p target/python-peers
if ! cmp -s scripts/python-peers.txt target/python-peers/.pins; then
  pip_args=(-m pip install --quiet --disable-pip-version-check --upgrade --target target/python-peers -r scripts/python-peers.txt)
  # Debian's Python refuses pip unless told the install is local to us.
  python3 "${pip_args[@]}" || python3 "${pip_args[@]}" --break-system-packages
  cp scripts/python-peers.txt target/python-peers/.pins
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "==> cargo test (all features)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features 2>&1 | tee "$log"

echo "==> the example runs on the default transport"
cargo run --quiet --example reviews > /dev/null

echo "==> cargo doc (all features, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

echo "==> every feature of every published crate builds on its own"
check_features() {
  local crate=$1; shift
  for features in "$@"; do
    cargo check --quiet -p "$crate" --no-default-features ${features:+--features "$features"}
  done
}
check_features eventbus-core ""
check_features eventbus "" memory test-util redis redis-tls postgres sqlite http
check_features eventbus-redis "" tls
check_features eventbus-http ""
check_features eventbus-catalog ""
check_features eventbus-cli "" postgres sqlite redis redis-tls
echo "all checks passed"
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
