//! The wheels of `pip install tal-telemetry`, as scripts/build-wheels.sh
//! leaves them in target/wheels/ (scripts/test.sh builds them before the
//! tests; these tests never build them, and fail naming the script if they
//! are missing): a binary that runs on glibc 2.17 or later, for x86_64 and
//! aarch64, and the Python package beside it.
//!
//! - Both wheels: tagged manylinux2014 / manylinux_2_17, at most 15 MB,
//!   the version of Cargo.toml, every member's hash in their RECORD; their `tal` is an ELF of the right machine
//!   that links only glibc's libraries and libgcc_s, and whose glibc
//!   symbol versions (`readelf -V`) are all 2.17 or older,
//!   stripped of debug info, which is in the `.debug` file beside the
//!   wheel that its `.gnu_debuglink` names (with that file's CRC, so that
//!   gdb takes it). The same glibc check is shown
//!   to fail on the `tal` that cargo builds here (against this machine's
//!   newer glibc).
//! - The x86_64 wheel installs into a fresh venv with no Rust on PATH;
//!   from there `tal --version`, a 2-second `tal record`, `tal convert` of
//!   its log and `import tal_telemetry` work.
//! - The aarch64 `tal` runs under `qemu-aarch64` (Debian's qemu-user, with
//!   the aarch64 glibc of libc6-arm64-cross): `--version`, a 2-second
//!   `tal record` reading this host's /proc (a CPU figure for each of its
//!   CPUs), and `tal convert` of its log, whose samples are the log's.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The most a wheel may weigh, in bytes.
const MAX_WHEEL_BYTES: u64 = 15_000_000;

/// The libraries of manylinux2014's policy that a Rust binary may link:
/// glibc's (its loader too, which zig's x86_64 link names) and libgcc_s;
/// none of tal's dependencies may bring another.
const MANYLINUX_LIBS: [&str; 10] = [
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libgcc_s.so.1",
];

/// Where `qemu-aarch64` finds the aarch64 loader and glibc (Debian's
/// libc6-arm64-cross).
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// A wheel's architecture: its name in the wheel's tag, its Rust target,
/// and the machine `readelf -h` names.
struct Arch {
    name: &'static str,
    triple: &'static str,
    machine: &'static str,
}

const X86_64: Arch = Arch {
    name: "x86_64",
    triple: "x86_64-unknown-linux-gnu",
    machine: "Advanced Micro Devices X86-64",
};
const AARCH64: Arch = Arch {
    name: "aarch64",
    triple: "aarch64-unknown-linux-gnu",
    machine: "AArch64",
};

fn wheels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wheels")
}

/// The wheel of `arch` at this version; fails, naming the script that
/// builds it, if there is none.
fn wheel(arch: &Arch) -> PathBuf {
    let prefix = format!("tal_telemetry-{VERSION}-");
    let suffix = format!("_{}.whl", arch.name);
    let found: Vec<PathBuf> = std::fs::read_dir(wheels_dir())
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(&suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {} wheel of tal-telemetry {VERSION} in {}, found {found:?}: \
         build the wheels with scripts/build-wheels.sh (scripts/test.sh does it before the tests)",
        arch.name,
        wheels_dir().display()
    );
    found.into_iter().next().unwrap()
}

/// Unpacks a wheel (Python's zipfile, as pip would) into `dir`.
fn unpack(wheel: &Path, dir: &Path) {
    run_ok(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(wheel)
            .arg(dir),
    );
}

/// Runs a tool (readelf) and returns its stdout (lossily: a debuglink's
/// CRC is binary).
fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (binutils is needed): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The glibc symbol versions that `readelf -V` shows an ELF needs
/// (`GLIBC_2.17`, ...), each with its numbers (none for a version that is
/// not numbered, such as `GLIBC_PRIVATE`).
fn glibc_versions(readelf_v: &str) -> Vec<(String, Option<Vec<u32>>)> {
    let mut found: Vec<(String, Option<Vec<u32>>)> = readelf_v
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_").map(|v| (w, v)))
        .map(|(w, v)| {
            let numbers = v.split('.').map(|n| n.parse().ok()).collect();
            (w.to_string(), numbers)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The glibc versions of `readelf_v` newer than 2.17 (numerically: 2.2.5
/// is older), or not numbered: what a manylinux2014 binary must not need.
fn above_2_17(readelf_v: &str) -> Vec<String> {
    glibc_versions(readelf_v)
        .into_iter()
        .filter(|(_, n)| n.as_ref().is_none_or(|n| n.as_slice() > [2, 17].as_slice()))
        .map(|(w, _)| w)
        .collect()
}

fn readelf(args: &[&str], elf: &Path) -> String {
    tool(Command::new("readelf").args(args).arg(elf))
}

#[test]
fn glibc_versions_compare_as_numbers() {
    let v = "  0x0010:   Name: GLIBC_2.2.5  Flags: none  Version: 5\n\
             0x0020:   Name: GLIBC_2.17  Flags: none  Version: 4\n\
             0x0030:   Name: GLIBC_2.3.4  Flags: none  Version: 3\n\
             0x0040:   Name: GLIBC_2.18  Flags: none  Version: 2\n\
             0x0050:   Name: GLIBC_2.17  Flags: none  Version: 6\n\
             0x0060:   Name: GLIBC_PRIVATE  Flags: none  Version: 7\n\
             0x0070:   Name: GCC_3.0  Flags: none  Version: 8\n";
    assert_eq!(glibc_versions(v).len(), 5);
    assert_eq!(above_2_17(v), ["GLIBC_2.18", "GLIBC_PRIVATE"]);
}

/// The check below can fail: the `tal` that cargo builds on this machine
/// links against its glibc (2.34 or later moved pthread's symbols into
/// libc under GLIBC_2.34), which is why the wheels are linked by zig.
#[test]
fn the_glibc_check_refuses_a_binary_built_against_this_machines_glibc() {
    let v = readelf(&["-V", "--wide"], Path::new(env!("CARGO_BIN_EXE_tal")));
    assert!(!glibc_versions(&v).is_empty(), "no glibc versions in {v}");
    let newer = above_2_17(&v);
    assert!(
        !newer.is_empty(),
        "cargo's tal needs no glibc above 2.17: {v}"
    );
    eprintln!("cargo's tal needs {newer:?}");
}

/// Checks a wheel's RECORD (Python's hashlib: tal has no SHA-256): every
/// member but RECORD is listed once, with its size and urlsafe-base64
/// SHA-256, as the stripping rewrote them.
const CHECK_RECORD: &str = r#"
import base64, csv, hashlib, io, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(z.read(record).decode())) if r}
assert sorted(rows) == sorted(z.namelist()), (sorted(rows), z.namelist())
for name in z.namelist():
    if name == record:
        continue
    data = z.read(name)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert rows[name] == ["sha256=" + digest, str(len(data))], (name, rows[name])
print(len(rows))
"#;

/// The file name and CRC-32 that an ELF's `.gnu_debuglink` gives for
/// its debug file (the name, NUL-padded to 4 bytes, then the CRC in the
/// ELF's byte order: little-endian on both architectures).
fn debuglink(elf: &Path) -> (String, u32) {
    let dump = readelf(&["-x", ".gnu_debuglink", "--wide"], elf);
    // Each line: "  0xADDRESS" and up to four words of hex in 35 columns,
    // then the same bytes as text (which could look like hex: cut off).
    let bytes: Vec<u8> = dump
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("0x"))
        .filter_map(|l| l.get(9..).map(|hex| &hex[..hex.len().min(35)]))
        .flat_map(|hex| hex.split_whitespace())
        .flat_map(|w| (0..w.len() / 2).map(move |i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16)))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot read readelf's dump ({e}): {dump}"));
    assert!(bytes.len() >= 8, "no .gnu_debuglink: {dump}");
    let name = bytes.split(|&b| b == 0).next().unwrap();
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    (String::from_utf8(name.to_vec()).unwrap(), crc)
}

/// What one wheel holds, checked: tags, size, version, the binary's
/// machine, glibc versions and debug info, and the Python package.
fn check_wheel(arch: &Arch) {
    let wheel = wheel(arch);
    let size = std::fs::metadata(&wheel).unwrap().len();
    eprintln!("{}: {size} bytes", wheel.display());
    assert!(
        size <= MAX_WHEEL_BYTES,
        "{} is {size} bytes, more than {MAX_WHEEL_BYTES}",
        wheel.display()
    );
    run_ok(
        Command::new("python3")
            .args(["-c", CHECK_RECORD])
            .arg(&wheel),
    );
    let dir = tempfile::tempdir().unwrap();
    unpack(&wheel, dir.path());
    let info = dir
        .path()
        .join(format!("tal_telemetry-{VERSION}.dist-info"));
    let tags = std::fs::read_to_string(info.join("WHEEL")).unwrap();
    for tag in ["manylinux2014", "manylinux_2_17"] {
        let want = format!("Tag: py3-none-{tag}_{}", arch.name);
        assert!(tags.lines().any(|l| l == want), "no {want} in {tags}");
    }
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.contains(&format!("manylinux_2_17_{}", arch.name)),
        "{name}"
    );
    let meta = std::fs::read_to_string(info.join("METADATA")).unwrap();
    assert!(meta.lines().any(|l| l == "Name: tal-telemetry"), "{meta}");
    assert!(
        meta.lines().any(|l| l == format!("Version: {VERSION}")),
        "{meta}"
    );
    for f in [
        "__init__.py",
        "client.py",
        "bridge.py",
        "rhapsody.py",
        "py.typed",
    ] {
        assert!(dir.path().join("tal_telemetry").join(f).is_file(), "no {f}");
    }

    let bin = dir
        .path()
        .join(format!("tal_telemetry-{VERSION}.data/scripts/tal"));
    let header = readelf(&["-h"], &bin);
    assert!(
        header.contains(&format!(
            "Machine:                           {}",
            arch.machine
        )),
        "{header}"
    );
    // The libraries it links are those every manylinux2014 system has.
    let dynamic = readelf(&["-d", "--wide"], &bin);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{dynamic}");
    for lib in &needed {
        assert!(MANYLINUX_LIBS.contains(lib), "{} links {lib}", arch.name);
    }
    let v = readelf(&["-V", "--wide"], &bin);
    assert!(
        glibc_versions(&v).iter().any(|(w, _)| w == "GLIBC_2.17"),
        "the wheel's tal needs no GLIBC_2.17 symbols (is it linked against glibc?): {v}"
    );
    assert_eq!(above_2_17(&v), Vec::<String>::new(), "{v}");

    // Stripped of debug info, which is in the file its debuglink names.
    let sections = readelf(&["-S", "--wide"], &bin);
    assert!(!sections.contains(".debug_info"), "{sections}");
    assert!(sections.contains(".symtab"), "{sections}");
    let debug_name = format!("tal-{VERSION}-{}.debug", arch.triple);
    let debug = wheels_dir().join(&debug_name);
    let (link_name, link_crc) = debuglink(&bin);
    assert_eq!(link_name, debug_name);
    assert_eq!(
        link_crc,
        crc32fast::hash(&std::fs::read(&debug).unwrap()),
        "the debuglink's CRC is not {}'s: a debugger would not take it",
        debug.display()
    );
    assert!(
        readelf(&["-S", "--wide"], &debug).contains(".debug_info"),
        "{} holds no debug info",
        debug.display()
    );
    eprintln!(
        "its tal: {} bytes; {debug_name}: {} bytes",
        std::fs::metadata(&bin).unwrap().len(),
        std::fs::metadata(&debug).unwrap().len()
    );
}

#[test]
fn the_x86_64_wheel_is_manylinux2014_small_and_stripped() {
    check_wheel(&X86_64);
}

#[test]
fn the_aarch64_wheel_is_manylinux2014_small_and_stripped() {
    check_wheel(&AARCH64);
}

/// `sh -c script` in an environment of only `path` as PATH, `home` as HOME.
fn sh_in(path: &str, home: &Path, script: &str) -> std::process::Output {
    run(Command::new("/bin/sh")
        .args(["-c", script])
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8"))
}

/// The log's ResourceUpdate samples are in the JSONL converted from it,
/// one for one, and there are some.
fn assert_converted(log: &Path, jsonl: &Path) {
    let v = read_jsonl(jsonl);
    assert_complete(&v);
    let samples = lines(&v, "event", Some("ResourceUpdate")).len();
    assert!(samples > 0, "no samples in {}", jsonl.display());
    assert_eq!(samples, samples_in_log(log));
}

#[test]
fn the_x86_64_wheel_installs_and_runs_without_rust() {
    let wheel = wheel(&X86_64);
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
    let home = dir.path();
    for rust in ["cargo", "rustc"] {
        let out = sh_in(&path, home, &format!("command -v {rust}"));
        assert!(
            !out.status.success(),
            "{rust} is on the venv's PATH: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let install = sh_in(
        &path,
        home,
        &format!(
            "pip install --isolated --no-index --no-deps --disable-pip-version-check '{}'",
            wheel.display()
        ),
    );
    assert!(
        install.status.success(),
        "pip install: {}",
        String::from_utf8_lossy(&install.stderr)
    );

    let out = sh_in(&path, home, "command -v tal && tal --version");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            venv.join("bin/tal").to_str().unwrap(),
            &format!("tal {VERSION}")
        ]
    );

    let rec = dir.path().join("rec");
    let script = format!(
        "cd '{}' && tal record --no-convert --out '{}' --session-id wheel --node-id n -- sleep 2 \
         && tal convert '{}/wheel.n.tal' -o '{}/wheel.jsonl'",
        dir.path().display(),
        rec.display(),
        rec.display(),
        rec.display()
    );
    let out = sh_in(&path, home, &script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_converted(&rec.join("wheel.n.tal"), &rec.join("wheel.jsonl"));

    // The package comes from the venv, not from the sources.
    let out = sh_in(
        &path,
        home,
        "cd / && python -c 'import tal_telemetry, tal_telemetry.client; print(tal_telemetry.__file__)'",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(venv.to_str().unwrap()), "{stdout}");
}

/// `qemu-aarch64` running `bin` with `args`, in the aarch64 sysroot.
fn qemu(bin: &Path) -> Command {
    let mut cmd = Command::new("qemu-aarch64");
    cmd.args(["-L", AARCH64_SYSROOT]).arg(bin);
    cmd
}

#[test]
fn the_aarch64_tal_records_and_converts_under_qemu() {
    let has_qemu = Command::new("sh")
        .args(["-c", "command -v qemu-aarch64"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_qemu && Path::new(AARCH64_SYSROOT).join("lib/libc.so.6").exists(),
        "qemu-aarch64 and an aarch64 glibc in {AARCH64_SYSROOT} are needed: \
         apt-get install qemu-user libc6-arm64-cross libgcc-s1-arm64-cross (scripts/test.sh does)"
    );
    let wheel = wheel(&AARCH64);
    let dir = tempfile::tempdir().unwrap();
    unpack(&wheel, dir.path());
    let bin = dir
        .path()
        .join(format!("tal_telemetry-{VERSION}.data/scripts/tal"));
    // Python's zipfile does not restore modes (pip makes scripts executable).
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_ok(qemu(&bin).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tal {VERSION}")
    );

    let rec = dir.path().join("rec");
    run_ok(
        qemu(&bin)
            .args([
                "record",
                "--no-convert",
                "--session-id",
                "arm",
                "--node-id",
                "n",
            ])
            .arg("--out")
            .arg(&rec)
            .args(["--", "sleep", "2"]),
    );
    let log = rec.join("arm.n.tal");
    let jsonl = rec.join("arm.jsonl");
    run_ok(qemu(&bin).arg("convert").arg(&log).arg("-o").arg(&jsonl));
    assert_converted(&log, &jsonl);
    // It read this host's /proc/stat: a figure for each of its CPUs in
    // every sample with a CPU share (not the warm-up one, nor one whose
    // window was too short to measure: docs/what-is-recorded.md).
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes()[3].is_ascii_digit())
        .count();
    let v = read_jsonl(&jsonl);
    let samples = lines(&v, "event", Some("ResourceUpdate"));
    let with_cpu: Vec<_> = samples
        .iter()
        .filter(|s| !s["cpu_percent"].is_null())
        .collect();
    assert!(!with_cpu.is_empty(), "no CPU figures: {samples:?}");
    for sample in with_cpu {
        let per_core = sample["cpu_percent_per_core"].as_array();
        assert_eq!(per_core.map(Vec::len), Some(cpus), "{sample}");
    }
}
