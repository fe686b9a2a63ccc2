#!/usr/bin/env bash
# Builds the wheels that `pip install tal-telemetry` takes: one for x86_64
# and one for aarch64 Linux, each tagged manylinux2014 (glibc 2.17 or
# later), into target/wheels/. Each holds the `tal` binary (on the venv's
# PATH once installed) and the pure-Python package tal_telemetry.
#
# maturin builds them (pyproject.toml), with zig as the C compiler and
# linker (`--zig`): zig links against glibc 2.17's symbols whatever this
# machine's glibc, and cross-compiles the C code of the dependencies
# (zstd's, ring's) for aarch64, so no cross toolchain is needed. maturin
# and zig (PyPI's `ziglang`) are pinned and installed once into a venv of
# their own, target/wheel-tools. The binary is Cargo.toml's [profile.dist]
# (release's code, built apart from target/release); its debug info is
# moved out into target/wheels/tal-VERSION-TRIPLE.debug by
# scripts/strip_wheel.py, so the wheel stays small.
#
# Needs: rustup (the aarch64 standard library is added if missing),
# python3 with venv, PyPI. Progress goes to stderr; the
# wheels' paths and sizes are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=target/wheel-tools
out=target/wheels
maturin_version=1.16.0
zig_version=0.17.0
targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
say() { printf 'build-wheels: %s\n' "$*" >&2; }

if ! "$tools/bin/maturin" --version 2>/dev/null | grep -qx "maturin $maturin_version" ||
  [ "$("$tools/bin/python" -m ziglang version 2>/dev/null)" != "$zig_version" ]; then
  py=$(command -v python3 || true)
  if [ -z "$py" ]; then
    say "python3 is needed (apt-get install -y python3 python3-venv)"
    exit 1
  fi
  say "installing maturin $maturin_version and ziglang $zig_version from PyPI into $tools (once)"
  rm -rf "$tools"
  "$py" -m venv "$tools" >&2
  "$tools/bin/pip" install --quiet --progress-bar off --disable-pip-version-check \
    "maturin==$maturin_version" "ziglang==$zig_version" >&2
fi
# maturin finds zig as the `ziglang` module of the Python it runs beside.
export PATH="$root/$tools/bin:$PATH"

for t in "${targets[@]}"; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    say "adding Rust's standard library for $t (rustup target add $t)"
    rustup target add "$t" >&2 || {
      say "could not add the Rust target $t: run \`rustup target add $t\` (it downloads from the Rust project's servers), then this script again"
      exit 1
    }
  fi
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
mkdir -p "$out"
# Only this build's wheels are left in target/wheels, so that the tests
# cannot pick up an older one.
rm -f "$out"/tal_telemetry-*.whl "$out"/tal-*.debug
for t in "${targets[@]}"; do
  arch=${t%%-*}
  say "building the $arch wheel (maturin build --zig --target $t --compatibility manylinux2014, profile dist)"
  maturin build --zig --target "$t" --compatibility manylinux2014 --profile dist --locked \
    --out "$out" >&2
  wheel=$(ls "$out"/tal_telemetry-"$version"-*manylinux*_"$arch".whl)
  say "moving the debug info of its tal out of the wheel into $out/tal-$version-$t.debug"
  python3 scripts/strip_wheel.py "$wheel" "$out/tal-$version-$t.debug"
done

say "done:"
for f in "$out"/tal_telemetry-"$version"-*.whl "$out"/tal-"$version"-*.debug; do
  printf '%s\t%s bytes (%s)\n' "$f" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
done
