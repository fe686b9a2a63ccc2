//! Parsers for the four /proc files the proc agent samples.
//!
//! Each parser reads only the fields RHAPSODY's semantics need, works on the
//! raw bytes of one read, and neither allocates nor fails loudly: a parse
//! that finds nothing usable returns `false`/`None` and the sample counts a
//! read error. They are public so that benches, tests and the fuzz target
//! can drive them directly.

/// Busy and total jiffies of one CPU (or of all CPUs together).
///
/// psutil's definitions (which RHAPSODY uses): total is the sum of user,
/// nice, system, idle, iowait, irq, softirq and steal (guest time is already
/// inside user and nice), and busy is total minus idle and iowait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Busy jiffies.
    pub busy: u64,
    /// All jiffies.
    pub total: u64,
}

impl CpuTicks {
    /// Busy share in percent between two readings, psutil-style: 0.0 when
    /// busy did not grow, and never above 100.
    pub fn percent_since(&self, prev: &CpuTicks) -> f64 {
        let busy = self.busy.saturating_sub(prev.busy);
        let total = self.total.saturating_sub(prev.total);
        if busy == 0 || total == 0 {
            return 0.0;
        }
        (busy as f64 / total as f64 * 100.0).min(100.0)
    }

    /// The ticks of the window since `prev`: busy and total deltas, or
    /// `None` when either counter went backwards (a CPU taken offline and
    /// back: its idle time comes from another clock then), which leaves
    /// the window unmeasurable.
    #[inline]
    pub fn delta_since(&self, prev: &CpuTicks) -> Option<CpuTicks> {
        Some(CpuTicks {
            busy: self.busy.checked_sub(prev.busy)?,
            total: self.total.checked_sub(prev.total)?,
        })
    }

    /// Busy share in percent of a window's ticks (a [`CpuTicks::delta_since`]),
    /// psutil-style: 0.0 without ticks, never above 100.
    #[inline]
    pub fn share(&self) -> f64 {
        if self.busy == 0 || self.total == 0 {
            return 0.0;
        }
        (self.busy as f64 / self.total as f64 * 100.0).min(100.0)
    }

    /// Adds another window's ticks (saturating).
    #[inline]
    pub fn add(&mut self, other: &CpuTicks) {
        self.busy = self.busy.saturating_add(other.busy);
        self.total = self.total.saturating_add(other.total);
    }
}

/// Parses an unsigned decimal at the start of `b`; returns it and the rest.
#[inline]
fn parse_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut i = 0;
    let mut v: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    (i > 0).then_some((v, &b[i..]))
}

#[inline]
fn skip_spaces(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

/// Splits the next line off `b`.
#[inline]
fn next_line(b: &[u8]) -> (&[u8], &[u8]) {
    match memchr_nl(b) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

#[inline]
fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Reads up to `N` whitespace-separated numbers from `b`.
#[inline]
fn numbers<const N: usize>(mut b: &[u8]) -> ([u64; N], usize) {
    let mut out = [0u64; N];
    let mut n = 0;
    while n < N {
        b = skip_spaces(b);
        match parse_u64(b) {
            Some((v, rest)) => {
                out[n] = v;
                n += 1;
                b = rest;
            }
            None => break,
        }
    }
    (out, n)
}

fn ticks_of(fields: &[u64; 10], n: usize) -> Option<CpuTicks> {
    if n < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice
    // Saturating: a line of absurd numbers (the parser wraps what does not
    // fit in 64 bits) gives absurd ticks, never a panic.
    let total = fields[..n.min(8)]
        .iter()
        .fold(0u64, |a, &f| a.saturating_add(f));
    let idle = fields[3].saturating_add(if n > 4 { fields[4] } else { 0 });
    Some(CpuTicks {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Parses `/proc/stat`: the aggregate `cpu` line into `all`, and the
/// `cpuN` lines into `per_cpu[N]` (those with N ≥ `per_cpu.len()` are
/// ignored). Returns the number of per-CPU slots filled (highest N + 1), or
/// `None` when there is no aggregate line.
pub fn parse_stat(buf: &[u8], all: &mut CpuTicks, per_cpu: &mut [CpuTicks]) -> Option<usize> {
    let mut rest = buf;
    let mut found = false;
    let mut ncpu = 0;
    while !rest.is_empty() {
        let (line, r) = next_line(rest);
        rest = r;
        if !line.starts_with(b"cpu") {
            // The cpu lines come first; stop at the first other line.
            if found {
                break;
            }
            continue;
        }
        let after = &line[3..];
        if after.first() == Some(&b' ') {
            let (f, n) = numbers::<10>(after);
            *all = ticks_of(&f, n)?;
            found = true;
        } else if let Some((idx, tail)) = parse_u64(after) {
            let (f, n) = numbers::<10>(tail);
            if let (Some(t), Some(slot)) = (ticks_of(&f, n), per_cpu.get_mut(idx as usize)) {
                *slot = t;
                ncpu = ncpu.max(idx as usize + 1);
            }
        }
    }
    found.then_some(ncpu)
}

/// Parses `/proc/meminfo`: returns (MemTotal, MemAvailable) in kB.
pub fn parse_meminfo(buf: &[u8]) -> Option<(u64, u64)> {
    let mut total = None;
    let mut avail = None;
    let mut rest = buf;
    while !rest.is_empty() && (total.is_none() || avail.is_none()) {
        let (line, r) = next_line(rest);
        rest = r;
        if let Some(v) = line.strip_prefix(b"MemTotal:") {
            total = parse_u64(skip_spaces(v)).map(|(v, _)| v);
        } else if let Some(v) = line.strip_prefix(b"MemAvailable:") {
            avail = parse_u64(skip_spaces(v)).map(|(v, _)| v);
        }
    }
    Some((total?, avail?))
}

/// Memory used in percent, psutil-style: (total − available) / total.
pub fn memory_percent(total_kb: u64, avail_kb: u64) -> f64 {
    if total_kb == 0 {
        return 0.0;
    }
    total_kb.saturating_sub(avail_kb) as f64 / total_kb as f64 * 100.0
}

/// The whole-disk names `parse_diskstats` counts: those listed in
/// `/sys/block` (as psutil does), which excludes partitions.
#[derive(Debug, Clone, Default)]
pub struct DiskFilter {
    names: Vec<Vec<u8>>,
}

impl DiskFilter {
    /// Reads `/sys/block`. A missing directory gives an empty filter, in
    /// which case every device whose name does not end in a digit after a
    /// letter-only stem is counted (see [`DiskFilter::is_whole_disk`]).
    pub fn from_sys() -> Self {
        let mut names = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                // /sys/block writes '/' in device names as '!'.
                let n = e.file_name().to_string_lossy().replace('!', "/");
                names.push(n.into_bytes());
            }
        }
        names.sort();
        Self { names }
    }

    /// A filter from explicit names (tests).
    pub fn from_names<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        let mut names: Vec<Vec<u8>> = names
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .collect();
        names.sort();
        Self { names }
    }

    /// Names in the filter.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(|n| std::str::from_utf8(n).unwrap_or(""))
    }

    /// Whether `name` is a whole disk.
    #[inline]
    pub fn is_whole_disk(&self, name: &[u8]) -> bool {
        if self.names.is_empty() {
            return true;
        }
        self.names
            .binary_search_by(|n| n.as_slice().cmp(name))
            .is_ok()
    }
}

/// Parses `/proc/diskstats`: returns (sectors read, sectors written) summed
/// over whole disks.
pub fn parse_diskstats(buf: &[u8], filter: &DiskFilter) -> Option<(u64, u64)> {
    let mut read = 0u64;
    let mut written = 0u64;
    let mut any = false;
    let mut rest = buf;
    while !rest.is_empty() {
        let (line, r) = next_line(rest);
        rest = r;
        // major minor name reads reads_merged sectors_read ms writes
        // writes_merged sectors_written ...
        let (_, n) = numbers::<2>(line);
        if n < 2 {
            continue;
        }
        let mut l = skip_spaces(line);
        for _ in 0..2 {
            l = skip_spaces(&l[l.iter().take_while(|c| c.is_ascii_digit()).count()..]);
        }
        let name_len = l.iter().take_while(|&&c| c != b' ' && c != b'\t').count();
        let (name, tail) = l.split_at(name_len);
        if name.is_empty() || !filter.is_whole_disk(name) {
            continue;
        }
        let (f, n) = numbers::<7>(tail);
        if n < 7 {
            continue;
        }
        read = read.wrapping_add(f[2]);
        written = written.wrapping_add(f[6]);
        any = true;
    }
    any.then_some((read, written)).or(Some((0, 0)))
}

/// Parses `/proc/net/dev`: returns (bytes received, bytes sent) summed over
/// all interfaces (loopback included, as psutil does).
pub fn parse_net_dev(buf: &[u8]) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut seen_header = false;
    let mut rest = buf;
    while !rest.is_empty() {
        let (line, r) = next_line(rest);
        rest = r;
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        if line.contains(&b'|') {
            continue;
        }
        seen_header = true;
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
        let (f, n) = numbers::<9>(&line[colon + 1..]);
        if n < 9 {
            continue;
        }
        rx = rx.wrapping_add(f[0]);
        tx = tx.wrapping_add(f[8]);
    }
    seen_header.then_some((rx, tx)).or(Some((0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"cpu  100 5 50 800 20 3 2 1 7 0\n\
cpu0 50 2 25 400 10 1 1 1 3 0\n\
cpu1 50 3 25 400 10 2 1 0 4 0\n\
intr 12345 0 0\nctxt 999\n";

    #[test]
    fn stat_aggregate_and_per_cpu() {
        let mut all = CpuTicks::default();
        let mut per = [CpuTicks::default(); 4];
        let n = parse_stat(STAT, &mut all, &mut per).unwrap();
        assert_eq!(n, 2);
        // total = 100+5+50+800+20+3+2+1 = 981 (guest excluded); idle = 820.
        assert_eq!(
            all,
            CpuTicks {
                busy: 161,
                total: 981
            }
        );
        assert_eq!(
            per[0],
            CpuTicks {
                busy: 80,
                total: 490
            }
        );
        assert_eq!(
            per[1],
            CpuTicks {
                busy: 81,
                total: 491
            }
        );
        let later = CpuTicks {
            busy: 161 + 30,
            total: 981 + 100,
        };
        assert!((later.percent_since(&all) - 30.0).abs() < 1e-9);
        assert_eq!(all.percent_since(&later), 0.0);
    }

    #[test]
    fn stat_of_absurd_numbers_saturates() {
        // Found by fuzzing (fuzz/regressions/proc_parsers): ticks whose sum
        // overflowed 64 bits panicked with overflow checks on.
        let mut all = CpuTicks::default();
        let big = format!(
            "cpu  {m} {m} {m} {m} {m}\ncpu0 {m} {m} 1 {m} {m}\n",
            m = u64::MAX
        );
        let mut per = [CpuTicks::default(); 1];
        assert_eq!(parse_stat(big.as_bytes(), &mut all, &mut per), Some(1));
        assert_eq!(
            all,
            CpuTicks {
                busy: 0,
                total: u64::MAX
            }
        );
        assert_eq!(per[0].total, u64::MAX);
        let crash =
            include_bytes!("../../fuzz/regressions/proc_parsers/stat-ticks-that-overflow-a-sum");
        let _ = parse_stat(crash, &mut all, &mut per);
    }

    #[test]
    fn stat_without_cpu_line_is_none() {
        let mut all = CpuTicks::default();
        assert_eq!(parse_stat(b"intr 1\n", &mut all, &mut []), None);
        assert_eq!(parse_stat(b"", &mut all, &mut []), None);
    }

    #[test]
    fn meminfo() {
        let m = b"MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_meminfo(m), Some((16_000_000, 12_000_000)));
        assert_eq!(memory_percent(16_000_000, 12_000_000), 25.0);
        assert_eq!(parse_meminfo(b"MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn diskstats_whole_disks_only() {
        let d = b" 254       0 vda 1000 10 2000 50 300 5 4000 60 0 100 110 0 0 0 0\n\
 254       1 vda1 900 10 1800 50 300 5 3900 60 0 100 110 0 0 0 0\n\
   7       0 loop0 10 0 20 1 0 0 0 0 0 1 1 0 0 0 0\n";
        let f = DiskFilter::from_names(["vda", "loop0"]);
        assert_eq!(parse_diskstats(d, &f), Some((2020, 4000)));
        let f = DiskFilter::from_names(["vda"]);
        assert_eq!(parse_diskstats(d, &f), Some((2000, 4000)));
    }

    #[test]
    fn net_dev_sums_all_interfaces() {
        let n = b"Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 5000      50    0    0    0     0          0         0     7000      70    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(n), Some((6000, 8000)));
    }

    #[test]
    fn parsers_survive_garbage() {
        let junk: &[u8] = b"\xff\x00cpu x\ncpu9999999999999999999999 1 2\n::::\n|:|";
        let mut all = CpuTicks::default();
        let mut per = [CpuTicks::default(); 2];
        // Nothing in the junk is a reading: the parsers whose file must
        // have one say so (and none panics); no counter is touched; disk and
        // network sums are zero, as on a node with no disk or interface.
        assert_eq!(parse_stat(junk, &mut all, &mut per), None);
        assert_eq!(all, CpuTicks::default());
        assert_eq!(per, [CpuTicks::default(); 2]);
        assert_eq!(parse_meminfo(junk), None);
        assert_eq!(parse_diskstats(junk, &DiskFilter::default()), Some((0, 0)));
        assert_eq!(parse_net_dev(junk), Some((0, 0)));
        // Truncated real lines: no reading, rather than a wrong one.
        assert_eq!(parse_meminfo(b"MemTotal:       16"), None);
        assert_eq!(
            parse_net_dev(b"Inter-|   Receive\n face |bytes\n  eth0: 12"),
            Some((0, 0))
        );
    }
}
