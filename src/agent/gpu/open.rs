//! Opening NVML and choosing the devices to sample, apart from polling
//! them (`super`): what `--gpus`, `CUDA_VISIBLE_DEVICES` and MIG mode
//! select, under which `gpu_id`, and why there is no GPU data when there
//! is none. Runs once, at start.
//!
//! **Loading.** NVML is opened at run time (`nvml-wrapper`, which loads
//! `libnvidia-ml.so.1`; `$TAL_NVML_LIBRARY` names another file, for sites
//! with the driver in an odd place and for tests). A node without a usable
//! NVML records normally: [`GpuSources::open`] returns the reason (library
//! missing, driver not loaded, no permission, no devices, none of the
//! requested devices), `tal record` prints it as one line on stderr, and
//! the GPU fields stay null.
//!
//! **Which devices, under which ids.** `--gpus auto` (the default) takes the
//! devices the job can see: `CUDA_VISIBLE_DEVICES` when it is set (NVML
//! indices, `GPU-…` UUIDs or `MIG-…` UUIDs, also unique UUID prefixes, as
//! the CUDA runtime reads it), else every device NVML lists. `--gpus LIST`
//! takes a list of the same form, `--gpus none` none. Without
//! `CUDA_VISIBLE_DEVICES`, a GPU in MIG mode is replaced by its MIG
//! instances, in NVML's order (MIG instances answer memory queries but not
//! utilisation, so their `gpu_percent` is null). A device's `gpu_id`
//! is its position in that list: the index the job's own CUDA runtime
//! gives it. (CUDA numbers devices in PCI bus order when
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID`, which is what Slurm's GPU plugin
//! assumes and what NVML's own order is; the startup line prints each
//! device's UUID and PCI bus id, so the mapping can always be checked.)

use super::{
    Dev, GpuInfo, GpuSources, Handle, Supports, BACKFILL_MAX, BACKFILL_MAX_EVERY_NS, MAX_GPUS,
    NVML_LIBRARY,
};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings as sys;
use std::ffi::OsString;

/// Which GPUs to sample (`--gpus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// The job's visible devices (`CUDA_VISIBLE_DEVICES`), else all.
    Auto,
    /// No GPU sampling.
    None,
    /// These devices (NVML indices or UUIDs), numbered in this order.
    List(Vec<String>),
}

impl std::str::FromStr for GpuSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            list => {
                let items = split_list(list);
                if items.is_empty() {
                    return Err(
                        "expected auto, none, or a comma-separated list of GPU indices or UUIDs"
                            .into(),
                    );
                }
                Ok(Self::List(items))
            }
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Words an NVML error for a user.
fn why(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) => format!(
            "cannot load the NVIDIA management library {} (no NVIDIA driver on this node?)",
            library_path().to_string_lossy()
        ),
        NvmlError::FailedToLoadSymbol(s) => {
            format!("the NVIDIA management library lacks a function tal needs ({s})")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".into(),
        other => format!("NVML: {other}"),
    }
}

/// The NVML library to open.
pub fn library_path() -> OsString {
    std::env::var_os("TAL_NVML_LIBRARY").unwrap_or_else(|| NVML_LIBRARY.into())
}

/// The devices a selection names: `(gpu_id, NVML index or UUID)` entries.
/// `Ok(None)`: sample nothing (`none`, or an empty `CUDA_VISIBLE_DEVICES`).
fn requested(sel: &GpuSelection, cuda_visible: Option<&str>) -> Option<Vec<String>> {
    match sel {
        GpuSelection::None => None,
        GpuSelection::List(l) => Some(l.clone()),
        GpuSelection::Auto => match cuda_visible {
            None => Some(Vec::new()),
            Some(v) => {
                // The CUDA runtime stops at the first invalid entry; "-1",
                // "NoDevFiles" or "" hide every device.
                let items = split_list(v);
                let ok: Vec<String> = items
                    .into_iter()
                    .take_while(|t| t != "-1" && t != "NoDevFiles")
                    .collect();
                if ok.is_empty() {
                    None
                } else {
                    Some(ok)
                }
            }
        },
    }
}

/// The MIG instances of a GPU in MIG mode (none when MIG is off or not
/// supported).
fn mig_instances(d: &Device<'_>) -> Vec<sys::nvmlDevice_t> {
    let on = d.mig_mode().is_ok_and(|m| m.current == 1);
    if !on {
        return Vec::new();
    }
    let max = d.mig_device_count().unwrap_or(0);
    (0..max)
        .filter_map(|j| d.mig_device_by_index(j).ok())
        // SAFETY: used only while the `Nvml` that `d` borrows lives.
        .map(|m| unsafe { m.handle() })
        .collect()
}

/// Finds the device a `CUDA_VISIBLE_DEVICES` / `--gpus` entry names: an
/// NVML index, or a UUID (`GPU-…`, `MIG-…`), or a unique prefix of one.
fn find<'n>(nvml: &'n Nvml, count: u32, w: &str) -> Result<Device<'n>, String> {
    if let Ok(i) = w.parse::<u32>() {
        return nvml
            .device_by_index(i)
            .map_err(|e| format!("GPU index {i} (of {count}): {}", why(&e)));
    }
    if let Ok(d) = nvml.device_by_uuid(w) {
        return Ok(d);
    }
    // A prefix of a device's UUID, as the CUDA runtime accepts.
    let mut found = Vec::new();
    for i in 0..count {
        if let Ok(d) = nvml.device_by_index(i) {
            if d.uuid().is_ok_and(|u| u.starts_with(w)) {
                found.push(i);
            }
        }
    }
    match found.as_slice() {
        [i] => nvml.device_by_index(*i).map_err(|e| why(&e)),
        [] => Err(format!("no GPU has the UUID {w}")),
        _ => Err(format!("{w} is a prefix of several GPUs' UUIDs")),
    }
}

impl GpuSources {
    /// Opens NVML and the selected devices. `Ok(None)` when the selection
    /// is empty (`--gpus none`, or no device visible to the job); `Err`
    /// gives the reason there is no GPU data, worded for stderr.
    pub fn open(sel: &GpuSelection) -> Result<Option<Self>, String> {
        let cuda = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let Some(wanted) = requested(sel, cuda.as_deref()) else {
            return Ok(None);
        };
        let lib = library_path();
        let nvml = Nvml::builder().lib_path(&lib).init().map_err(|e| why(&e))?;
        let count = nvml.device_count().map_err(|e| why(&e))?;
        let mut handles: Vec<(String, sys::nvmlDevice_t)> = Vec::new();
        if wanted.is_empty() {
            for i in 0..count {
                let d = nvml
                    .device_by_index(i)
                    .map_err(|e| format!("GPU {i}: {}", why(&e)))?;
                // A GPU in MIG mode shows the job its instances, as CUDA
                // enumerates them.
                let migs = mig_instances(&d);
                if migs.is_empty() {
                    // SAFETY: the handle is used only while `nvml` lives.
                    handles.push((i.to_string(), unsafe { d.handle() }));
                } else {
                    for (j, h) in migs.into_iter().enumerate() {
                        handles.push((format!("{i}:{j}"), h));
                    }
                }
            }
        } else {
            for w in &wanted {
                let d = find(&nvml, count, w)?;
                // SAFETY: as above.
                handles.push((w.clone(), unsafe { d.handle() }));
            }
        }
        if handles.is_empty() {
            return Err("NVML lists no GPUs on this node".into());
        }
        if handles.len() > MAX_GPUS {
            return Err(format!(
                "{} GPUs selected; tal samples at most {MAX_GPUS}: pass --gpus LIST",
                handles.len()
            ));
        }
        let mut devs = Vec::new();
        for (gpu_id, (asked, h)) in handles.into_iter().enumerate() {
            // SAFETY: a handle NVML just gave for this `nvml`.
            let d = unsafe { Device::new(h, &nvml) };
            let uuid = d.uuid().unwrap_or_else(|_| asked.clone());
            let name = d.name().unwrap_or_default();
            let pci_bus_id = d.pci_info().map(|p| p.bus_id).unwrap_or_default();
            let supports = Supports {
                samples: nvml.lib().nvmlDeviceGetSamples.is_ok(),
                rates: true,
                memory: true,
                power: true,
                temperature: true,
                clock: true,
                processes: nvml.lib().nvmlDeviceGetComputeRunningProcesses_v3.is_ok(),
            };
            devs.push(Dev {
                info: GpuInfo {
                    gpu_id: gpu_id as u32,
                    uuid,
                    name,
                    pci_bus_id,
                },
                handle: Handle(h),
                supports,
                down: None,
                last_seen_util: 0,
                backfill_at_ns: 0,
                backfill_every_ns: BACKFILL_MAX_EVERY_NS,
                backfill_cost_ns: 0,
                energy_j: 0.0,
                last_power: None,
                procs_last: Vec::new(),
                procs_mem_used: None,
                procs_at_ns: 0,
            });
        }
        let mut s = Self {
            devs,
            interval_ns: 1,
            // SAFETY: nvmlSample_t is plain data; all-zero is a valid value.
            samples_buf: vec![unsafe { std::mem::zeroed() }; BACKFILL_MAX],
            procs_buf: Vec::new(),
            procs: Vec::new(),
            ancestry: Vec::new(),
            disabled_at_open: 0,
            backfill: Box::default(),
            nvml,
        };
        s.probe();
        Ok(Some(s))
    }

    /// The devices, by `gpu_id`.
    pub fn devices(&self) -> impl Iterator<Item = &GpuInfo> {
        self.devs.iter().map(|d| &d.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!("auto".parse(), Ok(GpuSelection::Auto));
        assert_eq!("none".parse(), Ok(GpuSelection::None));
        assert_eq!(
            " 1, GPU-abc ".parse(),
            Ok(GpuSelection::List(vec!["1".into(), "GPU-abc".into()]))
        );
        assert!(",".parse::<GpuSelection>().is_err());
    }

    #[test]
    fn cuda_visible_devices_is_read_as_the_cuda_runtime_reads_it() {
        let a = GpuSelection::Auto;
        assert_eq!(requested(&a, None), Some(vec![]));
        assert_eq!(requested(&a, Some("")), None);
        assert_eq!(requested(&a, Some("-1")), None);
        assert_eq!(requested(&a, Some("NoDevFiles")), None);
        assert_eq!(
            requested(&a, Some("2,0")),
            Some(vec!["2".into(), "0".into()])
        );
        assert_eq!(
            requested(&a, Some("1,-1,0")),
            Some(vec!["1".into()]),
            "entries after an invalid one are ignored"
        );
        assert_eq!(requested(&GpuSelection::None, Some("0")), None);
        assert_eq!(
            requested(&GpuSelection::List(vec!["3".into()]), Some("0")),
            Some(vec!["3".into()])
        );
    }
}
