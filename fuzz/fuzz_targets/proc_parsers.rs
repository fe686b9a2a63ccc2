//! Fuzzes the /proc parsers with arbitrary bytes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tal::agent::procfs::*;

fuzz_target!(|data: &[u8]| {
    let mut all = CpuTicks::default();
    let mut per = [CpuTicks::default(); 8];
    let _ = parse_stat(data, &mut all, &mut per);
    let _ = parse_meminfo(data);
    let _ = parse_diskstats(data, &DiskFilter::from_names(["sda", "vda"]));
    let _ = parse_net_dev(data);
});
