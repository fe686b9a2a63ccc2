#!/usr/bin/env bash
# The project's test command (README's, and what CI runs): formatting,
# lints, then every unit, integration and property test against the real
# binary. Needs only a Rust toolchain, sh and dd; nothing here needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --all-targets
