#!/usr/bin/env bash
# Runs Kelson's whole test suite: formatting, lints, then every test of the
# workspace. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh test

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
