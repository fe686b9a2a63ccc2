#!/usr/bin/env bash
# The project's test command (README's, and what CI runs): formatting,
# lints, then every unit, integration and property test against the real
# binary. Needs a Rust toolchain (and its C compiler, which builds the stub
# NVML library of the GPU tests), python3 with venv, and PyPI (for RHAPSODY
# in the bridge's integration test); nothing here needs a GPU. The Slurm
# tests bring up a real one-node Slurm on localhost and a four-node one
# (scripts/slurm-up.sh: root and Debian's packages; the four nodes in
# network namespaces, with cgroups of their own where the kernel allows);
# both are stopped and removed again when this script ends. The Slurm tests
# report each job submitted and finished as they run.
# The report tests render `tal report`'s pages in Debian's chromium
# (headless, no network), installed here if missing. The wheel tests
# (tests/wheel.rs) take the wheels built here by scripts/build-wheels.sh
# (maturin and zig from PyPI) and run the aarch64 one's tal under Debian's
# qemu-user with its aarch64 glibc, installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'TAL_SLURM_DIR=/tmp/tal-slurm-4 scripts/slurm-down.sh; scripts/slurm-down.sh' EXIT
step() { printf '\n== test.sh: %s\n' "$*" >&2; }
step "Python environment for the integration tests (target/pyenv: RHAPSODY 0.6.0, opentelemetry-proto, pyarrow, DuckDB and polars from PyPI; made once)"
scripts/setup-python.sh >/dev/null
if ! [ -x /usr/bin/chromium ]; then
  step "Debian's chromium, to check that tal report's pages render (headless; installed once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
if ! command -v qemu-aarch64 >/dev/null || ! [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ]; then
  step "Debian's qemu-user and aarch64 glibc (libc6-arm64-cross), to run the aarch64 wheel's tal (installed once)"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(qemu-user libc6-arm64-cross libgcc-s1-arm64-cross)
  apt-get install -y -q "${pkgs[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y -q "${pkgs[@]}" >/dev/null; }
fi
step "a one-node Slurm on localhost (munge, slurmctld, slurmd, slurm-client from Debian's packages, installed if missing; needs root)"
scripts/slurm-up.sh >/dev/null
step "a four-node Slurm on this machine: four slurmd, each in its own network and UTS namespace, with its own cgroups where the kernel allows (scripts/slurm-up.sh --nodes 4)"
TAL_SLURM_DIR=/tmp/tal-slurm-4 scripts/slurm-up.sh --nodes 4 >/dev/null
step "formatting"
cargo fmt --all -- --check
step "lints"
# The scripts that only run by hand (benchmarks, the GPU machine's kit)
# must at least parse.
for f in scripts/*.sh scripts/gpu-machine/*.sh; do bash -n "$f"; done
python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' scripts/*.py scripts/gpu-machine/*.py
# Every relative link and heading anchor of README.md, docs/ and
# slurm/README.md names a file (and heading) in the repository.
python3 scripts/check-links.py --self-test >/dev/null
python3 scripts/check-links.py
cargo clippy --all-targets --release -- -D warnings
# The benchmark-only writer thread (recorder/threaded.rs) must keep building.
cargo clippy --lib --release --features writer-thread -- -D warnings
status=0
# A wheel that does not build fails its tests (tests/wheel.rs names this
# script), not the others.
step "the wheels, for tests/wheel.rs (scripts/build-wheels.sh: manylinux2014, x86_64 and aarch64, into target/wheels; maturin and zig from PyPI into target/wheel-tools once)"
scripts/build-wheels.sh || status=$?
step "unit, property and integration tests (every test binary runs, even after a failure)"
cargo test --release --all-targets --no-fail-fast || status=$?
step "unit and property tests again with overflow checks on (a debug build)"
cargo test --lib --no-fail-fast || status=$?
step "fuzz regressions: every fuzz target builds, and each runs on the inputs that once broke tal (fuzz/regressions/)"
(cd fuzz && cargo build --quiet --bins && ./target/debug/log_frames -runs=0 regressions/log_frames/* &&
  ./target/debug/proc_parsers -runs=0 regressions/proc_parsers/* &&
  ./target/debug/jsonl_readers -runs=0 regressions/jsonl_readers/* &&
  ./target/debug/log_header -runs=0 regressions/log_header/* &&
  ./target/debug/log_to_jsonl -runs=0 -rss_limit_mb=512 regressions/log_to_jsonl/*) || status=$?
exit "$status"
