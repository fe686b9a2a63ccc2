//! Fuzzes the /proc parsers with arbitrary bytes: never a panic. Those of
//! the node's files, and those of a task's processes (whose `stat` carries
//! the process's own name, which the process chooses).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tal::agent::procfs::*;
use tal::agent::tasks;

fuzz_target!(|data: &[u8]| {
    let mut all = CpuTicks::default();
    let mut per = [CpuTicks::default(); 8];
    let _ = parse_stat(data, &mut all, &mut per);
    let _ = parse_meminfo(data);
    let _ = parse_diskstats(data, &DiskFilter::from_names(["sda", "vda"]));
    let _ = parse_net_dev(data);
    let _ = tasks::parse_stat(data);
    let _ = tasks::parse_io(data);
    let _ = tasks::parse_statm_rss(data);
    let _ = tasks::parse_loadavg(data);
    let mut pids = Vec::new();
    tasks::parse_pids(data, &mut pids);
});
