#!/usr/bin/env bash
# The test command: installs what the tests need, starts the real peers, and
# runs every check and test. Run from anywhere:  bash scripts/test-all.sh
#
#   1. system packages (Debian): protoc, Chromium, linuxptp, rt-tests, socat, systemd-analyze, bsdtar, xz, git (Java and Maven for Pulsar)
#   2. Rust components: rustfmt, clippy
#   3. Python peers in .venv: onnxruntime, onnx, pulsar-client, PyJWT, ...
#   4. the main job builds with Rust alone: `cargo check` of the default build
#      with protoc hidden (an empty bind mount in a private mount namespace)
#   5. formatting and lints (rustfmt, clippy -D warnings)
#   6. the triad binary (with the Pulsar backend) and an Apache Pulsar
#      standalone broker (deploy/pulsar)
#   7. `cargo test --workspace --no-fail-fast`; the broker is stopped at the end
#
# Environment: TRIAD_SKIP_INSTALL=1 skips steps 1-3 (they are idempotent anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
step() { printf '\n=== %s\n' "$*"; }
t0=$(date +%s)

if [ "${TRIAD_SKIP_INSTALL:-0}" != 1 ]; then
  step "system packages"
  need=()
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } || need+=(chromium)
  command -v ptp4l >/dev/null || need+=(linuxptp)
  command -v cyclictest >/dev/null || need+=(rt-tests)
  command -v socat >/dev/null || need+=(socat)                # Modbus RTU over a pty pair
  command -v systemd-analyze >/dev/null || need+=(systemd)   # the unit's verify and security score
  command -v bsdtar >/dev/null || need+=(libarchive-tools)   # bundles packed by bsdtar
  command -v xz >/dev/null || need+=(xz-utils)               # an xz bundle is refused by name
  command -v git >/dev/null || need+=(git)                   # bundles packed by git archive
  command -v mvn >/dev/null || need+=(maven)
  command -v java >/dev/null || need+=(default-jdk-headless)
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "all present"
  fi

  step "Rust components"
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
  cargo --version

  step "Python peers (.venv)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
  .venv/bin/python -c "import onnxruntime, onnx, pulsar, jwt; print('onnxruntime', onnxruntime.__version__)"
fi

step "the main job builds with Rust alone (protoc hidden)"
# The README's first command must build on a machine with only Rust: the
# default features leave out pulsar-rs, whose build script needs protoc.
if cargo tree --locked -e normal,build -i pulsar >/dev/null 2>&1; then
  echo "the default build pulls in pulsar-rs (protoc needed):"; cargo tree --locked -e normal,build -i pulsar; exit 1
fi
if command -v protoc >/dev/null && command -v unshare >/dev/null && unshare --mount true 2>/dev/null; then
  unshare --mount sh -ec 'mount --bind /dev/null "$(command -v protoc)"; ! protoc --version >/dev/null 2>&1; cargo check --locked --bin triad'
else
  PROTOC=/nonexistent/protoc cargo check --locked --bin triad
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the triad binary (with the Pulsar backend, as the tests use it)"
cargo build --locked --workspace --bins

step "Apache Pulsar standalone broker"
# Fetched from Maven Central on first use (cached), bound to 127.0.0.1.
eval "$(deploy/pulsar/standalone start --fresh)"
export PULSAR_SERVICE_URL PULSAR_ADMIN_URL PULSAR_PID   # the shutdown tests pause the broker by its pid
trap 'deploy/pulsar/standalone stop >/dev/null 2>&1 || true' EXIT
echo "broker: $PULSAR_SERVICE_URL (admin $PULSAR_ADMIN_URL)"
# `standalone start` returns once a new topic can be created (its bookie
# takes writes), not just when the broker says healthy.

step "tests"
cargo test --workspace --locked --no-fail-fast
echo "all checks passed in $(( $(date +%s) - t0 )) s"
