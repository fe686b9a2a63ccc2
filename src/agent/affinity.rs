//! CPU pinning. Agent threads run on one core chosen by `--pin`, by default
//! the last CPU of the process's allowed set, which is where HPC sites
//! usually leave system noise (and where a job's ranks are placed last).
#![allow(unsafe_code)]

use std::io;

/// A saved CPU mask, to give a wrapped command the affinity tal started with.
#[derive(Clone, Copy)]
pub struct CpuMask(libc::cpu_set_t);

impl std::fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.cpus()).finish()
    }
}

impl CpuMask {
    /// The calling thread's current mask.
    pub fn current() -> io::Result<Self> {
        // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(set))
    }

    /// A mask holding only `cpu`.
    pub fn single(cpu: usize) -> Self {
        // SAFETY: all-zero is a valid empty cpu_set_t.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET bounds-checks against the set's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        Self(set)
    }

    /// The CPUs in the mask, ascending.
    pub fn cpus(&self) -> Vec<usize> {
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: CPU_ISSET only reads the set, within its size.
        (0..max)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &self.0) })
            .collect()
    }

    /// Applies the mask to the calling thread. Async-signal-safe (one
    /// syscall), so it may run in a child between fork and exec.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: `self.0` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The default CPU to pin agents to: the last one tal may run on.
pub fn default_cpu() -> io::Result<usize> {
    CpuMask::current()?
        .cpus()
        .last()
        .copied()
        .ok_or_else(|| io::Error::other("empty CPU affinity mask"))
}

/// Pins the calling thread to `cpu`, which must be in its allowed set.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let allowed = CpuMask::current()?.cpus();
    if !allowed.contains(&cpu) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is not in this process's allowed set {allowed:?}"),
        ));
    }
    CpuMask::single(cpu).apply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cpu_is_allowed_and_pinning_round_trips() {
        let saved = CpuMask::current().unwrap();
        let cpu = default_cpu().unwrap();
        assert!(saved.cpus().contains(&cpu));
        std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            assert_eq!(CpuMask::current().unwrap().cpus(), vec![cpu]);
            saved.apply().unwrap();
            assert_eq!(CpuMask::current().unwrap().cpus(), saved.cpus());
            assert!(pin_current_thread(100_000).is_err());
        })
        .join()
        .unwrap();
    }
}
