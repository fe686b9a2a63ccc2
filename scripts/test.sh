#!/usr/bin/env bash
# The project's test command (README's, and what CI runs): formatting,
# lints, then every unit, integration and property test against the real
# binary. Needs a Rust toolchain (and its C compiler, which builds the stub
# NVML library of the GPU tests), python3 with venv, and PyPI (for RHAPSODY
# in the bridge's integration test); nothing here needs a GPU. The Slurm
# tests bring up a real one-node Slurm on localhost (scripts/slurm-up.sh:
# root and Debian's packages); it is stopped again when this script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'scripts/slurm-down.sh' EXIT
scripts/setup-python.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --all-targets
