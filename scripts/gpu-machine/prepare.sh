#!/usr/bin/env bash
# Stages what scripts/gpu-machine/check.sh needs on a machine with a real
# NVIDIA GPU that has Python (with PyTorch), but no Rust toolchain and no
# network: release builds of tal, examples/floor and examples/task_floor,
# and RHAPSODY 0.6.0 with its dependencies as wheels (for its own
# telemetry adapter, measured beside tal). Everything goes to .gpu-kit/
# (ignored by git), about 40 MB; copy the repository with it to the GPU
# machine and run, from the repository's root there:
#
#   OUT=/some/dir bash scripts/gpu-machine/check.sh
#
# Usage: [PYVER=3.12] scripts/gpu-machine/prepare.sh   (PYVER: the GPU
# machine's Python, for the one compiled wheel, pydantic-core)
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpu-kit
PYVER=${PYVER:-3.12}
echo "building tal, floor and task_floor (release)…" >&2
cargo build --release --quiet --bin tal --example floor --example task_floor
rm -rf "$KIT" && mkdir -p "$KIT/whl"
cp target/release/tal target/release/examples/floor target/release/examples/task_floor "$KIT/"
strip "$KIT/tal" "$KIT/floor" "$KIT/task_floor" 2>/dev/null || true
echo "downloading RHAPSODY 0.6.0's wheels for Python $PYVER on x86-64…" >&2
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version "$PYVER" --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$KIT/whl" "rhapsody-py[telemetry]==0.6.0"
du -sh "$KIT" >&2
