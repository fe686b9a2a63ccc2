//! A JSONL checkpoint's items (tal's or RHAPSODY's): each line parsed as
//! [`crate::convert::each_jsonl_line`] reads it, and read into an
//! [`Item`] the way `tal report` and `tal summary` read the line itself
//! before they took items (a field that is not a number is `None`, a
//! section they ignored is no item).

use super::{Body, Fields, GpuSample, Head, Item, NodeSample, PerCore, Source, Span, TaskSample};
use crate::convert::lines::LineStats;
use serde_json::Value;
use std::borrow::Cow;
use std::io::{self, BufRead};

/// A checkpoint, read afresh from `open()` at each pass.
pub struct Jsonl<F> {
    open: F,
}

impl<F> std::fmt::Debug for Jsonl<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jsonl")
    }
}

impl<R: BufRead, F: FnMut() -> io::Result<R>> Jsonl<F> {
    /// The checkpoint `open()` gives (an error of it is the input's, see
    /// [`crate::convert::lines::input_error`]).
    pub fn new(open: F) -> Self {
        Self { open }
    }
}

impl<R: BufRead, F: FnMut() -> io::Result<R>> Source for Jsonl<F> {
    fn each(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<LineStats> {
        let input = (self.open)().map_err(crate::convert::lines::input_error)?;
        crate::convert::each_jsonl_line(input, |v| {
            line(&v, f);
            Ok(())
        })
    }
}

/// Hands line `v`'s item, if it is one, to `f`.
pub fn line(v: &Value, f: &mut dyn FnMut(Item<'_>)) {
    let Some(m) = v.as_object() else {
        return;
    };
    match v["section"].as_str() {
        Some("event") => f(Item::Event(head(v), body(v, m))),
        Some("span") => {
            let (Some(start_ns), Some(end_ns)) = (v["start_ns"].as_i64(), v["end_ns"].as_i64())
            else {
                return;
            };
            if v["name"] == "session" {
                f(Item::SessionSpan { start_ns, end_ns });
            } else {
                f(Item::TaskSpan(Span {
                    start_ns,
                    end_ns,
                    attributes: Cow::Borrowed(&v["attributes"]),
                }));
            }
        }
        Some("metric") => f(Item::Metric(m)),
        _ => {}
    }
}

fn head(v: &Value) -> Head<'_> {
    Head {
        event_type: v["event_type"].as_str(),
        time_s: v["event_time"].as_f64(),
        session_id: v["session_id"].as_str(),
        node_id: v["node_id"].as_str(),
        task_id: v["task_id"].as_str(),
    }
}

fn body<'a>(v: &'a Value, m: &'a serde_json::Map<String, Value>) -> Body<'a> {
    let n = |k: &str| v[k].as_f64();
    match v["event_type"].as_str() {
        Some("ResourceUpdate") => match (v["resource_scope"].as_str(), v["gpu_id"].as_u64()) {
            (Some("per_gpu"), Some(gpu_id)) => Body::Gpu(GpuSample {
                gpu_id,
                gpu_percent: n("gpu_percent"),
                gpu_memory_used_bytes: n("gpu_memory_used_bytes"),
                gpu_memory_total_bytes: n("gpu_memory_total_bytes"),
                gpu_power_watts: n("gpu_power_watts"),
                gpu_energy_joules: n("gpu_energy_joules"),
            }),
            _ => Body::Node(NodeSample {
                cpu_percent: n("cpu_percent"),
                memory_percent: n("memory_percent"),
                disk_read_bytes: n("disk_read_bytes"),
                disk_write_bytes: n("disk_write_bytes"),
                net_sent_bytes: n("net_sent_bytes"),
                net_recv_bytes: n("net_recv_bytes"),
                job_cpu_percent: n("job_cpu_percent"),
                job_memory_bytes: n("job_memory_bytes"),
                job_memory_peak_bytes: n("job_memory_peak_bytes"),
                job_disk_read_bytes: n("job_disk_read_bytes"),
                job_disk_write_bytes: n("job_disk_write_bytes"),
                per_core: v["cpu_percent_per_core"]
                    .as_array()
                    .map(|a| PerCore::Json(a.as_slice())),
            }),
        },
        Some(crate::record::TaskResources::EVENT_TYPE) => Body::Task(TaskSample {
            cpu_percent: n("cpu_percent"),
            rss_bytes: n("rss_bytes"),
            threads: n("threads"),
            read_bytes: n("read_bytes"),
            write_bytes: n("write_bytes"),
        }),
        _ => Body::Other(Fields::Json(m)),
    }
}
