#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and black-box tests, and the
# real-browser tests (headless Chromium driven by playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Browser tests drive Debian's Chromium through playwright-core (never a downloaded browser).
if [ -f tests/browser/package.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
