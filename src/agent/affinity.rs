//! CPU pinning. Agent threads run on one core chosen by `--pin`, by default
//! the last CPU of the process's allowed set, which is where HPC sites
//! usually leave system noise (and where a job's ranks are placed last).

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::io;

/// A saved CPU mask, to give a wrapped command the affinity tal started with.
#[derive(Clone, Copy)]
pub struct CpuMask(CpuSet);

impl std::fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.cpus()).finish()
    }
}

impl CpuMask {
    /// The calling thread's current mask.
    pub fn current() -> io::Result<Self> {
        Ok(Self(sched_getaffinity(None)?))
    }

    /// A mask holding only `cpu` (an empty one past `CpuSet::MAX_CPU`,
    /// which applying refuses).
    pub fn single(cpu: usize) -> Self {
        let mut set = CpuSet::new();
        if cpu < CpuSet::MAX_CPU {
            set.set(cpu);
        }
        Self(set)
    }

    /// The CPUs in the mask, ascending.
    pub fn cpus(&self) -> Vec<usize> {
        (0..CpuSet::MAX_CPU).filter(|&c| self.0.is_set(c)).collect()
    }

    /// The mask as rustix's set (to restore it in a child before exec).
    pub fn as_set(&self) -> CpuSet {
        self.0
    }

    /// Applies the mask to the calling thread.
    pub fn apply(&self) -> io::Result<()> {
        Ok(sched_setaffinity(None, &self.0)?)
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
