"""Moves the debug info of the `tal` binary in a wheel out into a file of its own.

Usage: python3 strip_wheel.py WHEEL DEBUG_FILE

scripts/build-wheels.sh runs this on each wheel maturin built. The binary
is built with release's line tables (Cargo.toml's [profile.dist]), which
are four fifths of its size; a wheel must stay small (15 MB at most), but
a crash's addresses should still be readable later. So the same build is
split in two: ``objcopy --only-keep-debug`` writes the debug sections to
DEBUG_FILE (beside the wheel), and the binary in the wheel keeps its code
and symbol table (function names in a backtrace or ``perf``) with a
``.gnu_debuglink`` naming DEBUG_FILE, so that gdb finds it when it is put
beside the installed ``tal``. The wheel is then rewritten with the stripped
binary, its RECORD line (sha256 and size) made anew; every other member is
copied as it was. Standard library only.

The objcopy is LLVM's, as the Rust toolchain ships it (``rust-objcopy``,
beside rustc's own linker, with rustc's LLVM library), or ``$OBJCOPY``:
LLVM's reads and writes the ELF of every architecture, where a distribution's
binutils objcopy knows its own machine's only (on an aarch64 binary it
either refuses, or writes one whose machine field is gone).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile


def record_hash(data: bytes) -> str:
    """A RECORD line's hash (the wheel spec: urlsafe base64, no padding)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def objcopy() -> tuple[list[str], dict[str, str]]:
    """The objcopy to run, and its environment."""
    env = dict(os.environ)
    if env.get("OBJCOPY"):
        return [env["OBJCOPY"]], env

    def rustc(*args: str) -> str:
        return subprocess.run(["rustc", *args], check=True, capture_output=True, text=True).stdout

    sysroot = rustc("--print", "sysroot").strip()
    host = next(l.split()[1] for l in rustc("-vV").splitlines() if l.startswith("host:"))
    path = os.path.join(sysroot, "lib", "rustlib", host, "bin", "rust-objcopy")
    if not os.access(path, os.X_OK):
        sys.exit(f"strip_wheel: the Rust toolchain has no {path}: set OBJCOPY to an llvm-objcopy")
    # rust-objcopy links rustc's LLVM library, which is in the sysroot's lib.
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (os.path.join(sysroot, "lib"), env.get("LD_LIBRARY_PATH")) if p
    )
    return [path], env


def split_debug(binary: bytes, debug_file: str) -> bytes:
    """Writes the debug sections of `binary` to `debug_file`; returns it stripped."""
    cmd, env = objcopy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tal")
        with open(path, "wb") as f:
            f.write(binary)
        subprocess.run([*cmd, "--only-keep-debug", path, debug_file], check=True, env=env)
        # The link names the file as the debugger will look for it: its base name.
        subprocess.run(
            [*cmd, "--strip-debug", "--add-gnu-debuglink=" + debug_file, path],
            check=True,
            env=env,
        )
        with open(path, "rb") as f:
            return f.read()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: strip_wheel.py WHEEL DEBUG_FILE")
    wheel, debug_file = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    names = [i.filename for i, _ in members]
    contents = dict(zip(names, (d for _, d in members)))
    bins = [n for n in names if n.endswith(".data/scripts/tal")]
    records = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(bins) != 1 or len(records) != 1:
        sys.exit(f"strip_wheel: {wheel} has no single tal binary and RECORD: {names}")
    stripped = {bins[0]: split_debug(contents[bins[0]], debug_file)}
    record_lines = []
    for line in contents[records[0]].decode().splitlines():
        path = line.rsplit(",", 2)[0]
        if path in stripped:
            data = stripped[path]
            line = f"{path},{record_hash(data)},{len(data)}"
        record_lines.append(line)
    stripped[records[0]] = ("\n".join(record_lines) + "\n").encode()
    tmp = wheel + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info, data in members:
            out.writestr(info, stripped.get(info.filename, data), zipfile.ZIP_DEFLATED, 9)
    shutil.move(tmp, wheel)


if __name__ == "__main__":
    main()
