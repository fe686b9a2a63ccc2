//! A report's series: figures down-sampled onto the session's grid of
//! columns ([`Series`]), per-core heatmaps ([`Cores`], sharing their cells
//! by a [`HeatPlan`]), and what the report keeps of each node's own
//! samples ([`NodeDraw`]), which it takes on a thread of their own (see
//! [`crate::items::apart`]).

use super::across;
use super::facts::{self, Peak};
use crate::items::{Head, NodeSample, NodeView, PerCore, Place};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Columns a series is down-sampled to: with a minimum and a maximum per
/// column, two points per pixel of a chart 800 pixels wide.
pub const COLUMNS: usize = 800;

/// Columns of the per-core heatmap, at most.
pub const HEAT_COLUMNS: usize = 600;

/// Cells of all the per-core heatmaps together, at most: many nodes of many
/// cores get fewer columns each (down to [`HEAT_MIN_COLUMNS`]), then rows
/// of several cores' mean, then nodes past the budget are left out (see
/// [`HeatPlan`]), to keep the file small.
pub const HEAT_CELLS: usize = 2_000_000;

/// Rows of a per-core heatmap, at most: each row is labelled with its
/// core (or its group's first and last core), in a row tall enough for
/// the label; past this many cores, a row is the mean of a group.
pub const HEAT_ROWS: usize = 64;

/// Columns of a per-core heatmap, at least.
pub const HEAT_MIN_COLUMNS: usize = 20;

/// One multi-field series, down-sampled onto the session's grid of
/// [`COLUMNS`] columns: a column with one sample gives one point at its
/// middle; with more, its minimum at a quarter of its width and its
/// maximum at three quarters (per field), so that spikes survive. Every
/// series shares the grid's times, which lets the page align any number
/// of nodes on one axis cheaply.
#[derive(Debug, Serialize)]
pub(super) struct Series {
    pub(super) node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gpu: Option<u64>,
    /// The task, for a task's resource series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) task: Option<String>,
    /// A task's series made of its end-of-task figures alone (it ended
    /// before its first resource sample): drawn as points.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) end_only: bool,
    /// Field names, in the order of `v`.
    pub(super) fields: Vec<&'static str>,
    /// Each point's time in quarter columns: `k / 4 × column_s` is s from
    /// the session's start.
    pub(super) k: Vec<u32>,
    /// Per field, the values at `k` (null where missing).
    pub(super) v: Vec<Vec<Compact>>,
    /// The columns that have samples, by column (only those: a series
    /// read from one sample costs one column).
    #[serde(skip)]
    pub(super) cols: BTreeMap<usize, Column>,
}

/// A value written short: an integral one without its `.0`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compact(pub(super) Option<f64>);

impl Serialize for Compact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => s.serialize_i64(v as i64),
            Some(v) => s.serialize_f64(v),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) n: u32,
    pub(super) min: Vec<Option<f64>>,
    pub(super) max: Vec<Option<f64>>,
    /// Per field, the sum and count of its values (for the mean across
    /// nodes, see [`across`]).
    pub(super) sum: Vec<(f64, u32)>,
}

impl Series {
    pub(super) fn new(node: &str, gpu: Option<u64>, fields: Vec<&'static str>) -> Self {
        let n = fields.len();
        Self {
            node: node.to_string(),
            gpu,
            task: None,
            end_only: false,
            fields,
            k: Vec::new(),
            v: vec![Vec::new(); n],
            cols: BTreeMap::new(),
        }
    }

    pub(super) fn add(&mut self, col: usize, vals: &[Option<f64>]) {
        let c = self.cols.entry(col).or_insert_with(|| Column {
            n: 0,
            min: vec![None; vals.len()],
            max: vec![None; vals.len()],
            sum: vec![(0.0, 0); vals.len()],
        });
        c.n += 1;
        for (i, v) in vals.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                c.min[i] = Some(c.min[i].map_or(v, |m: f64| m.min(v)));
                c.max[i] = Some(c.max[i].map_or(v, |m: f64| m.max(v)));
                c.sum[i].0 += v;
                c.sum[i].1 += 1;
            }
        }
    }

    /// Each column's mean per field (before [`Series::finish`]).
    pub(super) fn means(&self) -> across::NodeColumns {
        self.cols
            .iter()
            .map(|(&col, c)| {
                let m = c.sum.iter();
                (
                    col,
                    m.map(|&(s, n)| (n > 0).then(|| s / f64::from(n))).collect(),
                )
            })
            .collect()
    }

    /// Turns the columns into points (see the type's doc). Returns the
    /// points.
    pub(super) fn finish(&mut self) -> usize {
        for (i, c) in std::mem::take(&mut self.cols) {
            let at = |quarter: u32| i as u32 * 4 + quarter;
            if c.n > 1 {
                self.k.push(at(1));
                for (f, m) in self.v.iter_mut().zip(&c.min) {
                    f.push(Compact(*m));
                }
                self.k.push(at(3));
            } else {
                self.k.push(at(2));
            }
            for (f, m) in self.v.iter_mut().zip(&c.max) {
                f.push(Compact(*m));
            }
        }
        self.k.len()
    }
}

/// Per-core CPU of one node, as columns of means.
#[derive(Debug, Serialize)]
pub(super) struct Cores {
    pub(super) node: String,
    /// Columns, over the whole session.
    pub(super) columns: usize,
    /// Rows.
    pub(super) n: usize,
    /// Cores per row (their mean): 1 unless the cells' budget is short.
    pub(super) group: usize,
    /// Cores.
    pub(super) cores: usize,
    /// Row-major: row × column; busy %, rounded (null: no sample).
    pub(super) v: Vec<Option<u8>>,
    #[serde(skip)]
    pub(super) sum: Vec<(f64, u32)>,
}

/// How the per-core heatmaps share [`HEAT_CELLS`] cells: every node the
/// same columns, `HEAT_CELLS / cores` within [`HEAT_MIN_COLUMNS`] and
/// [`HEAT_COLUMNS`]; if that is still too many cells, rows of `group`
/// cores each (their mean); if still too many (a great many nodes of few
/// cores), the nodes past the budget, in order of their names, get none.
#[derive(Debug, Default)]
pub(super) struct HeatPlan {
    pub(super) columns: usize,
    pub(super) group: usize,
    /// The nodes drawn: their cores.
    pub(super) kept: HashMap<String, usize>,
    /// The nodes left out, and their cores.
    pub(super) cut: Option<Cut>,
}

/// What the page leaves out: how many (nodes, types) and how much in them
/// (cores, events).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct Cut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) nodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) types: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) events: Option<u64>,
}

impl HeatPlan {
    /// The plan for nodes of these many cores.
    pub(super) fn new(cores: &HashMap<String, usize>) -> Self {
        let all: usize = cores.values().sum();
        let columns = (HEAT_CELLS / all.max(1)).clamp(HEAT_MIN_COLUMNS, HEAT_COLUMNS);
        let group = (all.saturating_mul(columns)).div_ceil(HEAT_CELLS).max(1);
        let mut nodes: Vec<(&String, &usize)> = cores.iter().collect();
        nodes.sort();
        let mut plan = Self {
            columns,
            group,
            ..Self::default()
        };
        let (mut used, mut cut_nodes, mut cut_cores) = (0, 0, 0);
        for (node, &n) in nodes {
            let cells = n.div_ceil(group) * columns;
            if used + cells > HEAT_CELLS {
                cut_nodes += 1;
                cut_cores += n as u64;
                continue;
            }
            used += cells;
            plan.kept.insert(node.clone(), n);
        }
        plan.cut = (cut_nodes > 0).then_some(Cut {
            nodes: Some(cut_nodes),
            cores: Some(cut_cores),
            ..Cut::default()
        });
        plan
    }
}

/// The node series' fields, in the report: the input's
/// [`crate::convert::NODE_SERIES`], its byte counts since the previous
/// sample turned into rates per second (see [`facts::Windows`]).
pub(super) const NODE_FIELDS: [&str; 6] = [
    "cpu_percent",
    "memory_percent",
    "disk_read_per_s",
    "disk_write_per_s",
    "net_sent_per_s",
    "net_recv_per_s",
];

/// The session's grid of columns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    /// The session's start, ns since the epoch.
    pub(super) start: i64,
    /// Its length, s.
    pub(super) span_s: f64,
}

impl Grid {
    /// `t` (ns since the epoch) in s from the session's start.
    pub(super) fn secs(&self, t: i64) -> f64 {
        t.saturating_sub(self.start) as f64 / 1e9
    }

    /// The column of `t` (s from the start) among `columns`.
    pub(super) fn column(&self, t: f64, columns: usize) -> usize {
        ((t / self.span_s * columns as f64) as usize).min(columns - 1)
    }
}

/// A peak, with its place in the session's stream: of equal peaks, the
/// first read is the one named.
pub(super) type Placed = Option<(Peak, Place)>;

/// Figure `v`, where it is a new peak above `high` (finite, and higher:
/// of equal ones, the first stays).
pub(super) fn above(high: Option<f64>, v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && high.is_none_or(|h| *v > h))
}

/// Takes figure `v` of `node` at `t`, the `seq`th item, into `slot`.
pub(super) fn peak(slot: &mut Placed, v: Option<f64>, node: &str, t: f64, seq: Place) {
    if let Some(v) = above(slot.as_ref().map(|(p, _)| p.value), v) {
        let p = Peak {
            value: v,
            node: node.to_string(),
            t,
        };
        *slot = Some((p, seq));
    }
}

/// The higher of two peaks (of equal ones, the first read).
pub(super) fn higher(a: Placed, b: Placed) -> Placed {
    match (a, b) {
        (Some(a), Some(b)) => {
            let first = a.1 < b.1;
            let (x, y) = if first { (a, b) } else { (b, a) };
            Some(if y.0.value > x.0.value { y } else { x })
        }
        (a, b) => a.or(b),
    }
}

/// What the report keeps of one node's own samples: its series, its
/// heatmap, its peaks of CPU and memory, its samples.
#[derive(Debug)]
pub(super) struct NodeDraw<'a> {
    grid: Grid,
    heat: &'a HeatPlan,
    /// The node's series (made at its first sample).
    pub(super) series: Option<Series>,
    /// Its heatmap, if it is drawn.
    pub(super) cores: Option<Cores>,
    /// Its previous sample's time, s from the start.
    last_t: Option<f64>,
    /// Its highest CPU % and memory %.
    pub(super) peaks: [Placed; 2],
    /// Its samples.
    pub(super) samples: usize,
}

impl<'a> NodeDraw<'a> {
    /// A node's, on `grid`, its heatmap as `heat` plans it.
    pub(super) fn new(grid: Grid, heat: &'a HeatPlan) -> Self {
        Self {
            grid,
            heat,
            series: None,
            cores: None,
            last_t: None,
            peaks: [None, None],
            samples: 0,
        }
    }

    /// The node's per-core CPU, into its heatmap (if it is drawn).
    fn heat(&mut self, per_core: &PerCore<'_>, node: &str, t: f64) {
        let Some(&n) = self.heat.kept.get(node) else {
            return;
        };
        // Rows of one core each, or of a group (see [`HEAT_ROWS`]).
        let (columns, group) = (
            self.heat.columns,
            self.heat.group.max(n.div_ceil(HEAT_ROWS)),
        );
        let hcol = self.grid.column(t, columns);
        let c = self.cores.get_or_insert_with(|| Cores {
            node: node.to_string(),
            columns,
            n: n.div_ceil(group),
            group,
            cores: n,
            v: Vec::new(),
            sum: vec![(0.0, 0); n.div_ceil(group) * columns],
        });
        for (core, x) in per_core.values().enumerate().take(n) {
            if let Some(x) = x {
                let cell = &mut c.sum[core / group * columns + hcol];
                cell.0 += x;
                cell.1 += 1;
            }
        }
    }
}

impl NodeView for NodeDraw<'_> {
    fn sample(&mut self, seq: Place, head: &Head<'_>, v: &NodeSample<'_>) {
        let Some(t) = head.time_ns() else {
            return;
        };
        let t = self.grid.secs(t);
        let node = head.node_id.unwrap_or("");
        // The time since the node's previous sample.
        let window = self.last_t.replace(t).map(|p| t - p).filter(|w| *w > 0.0);
        let mut vals = crate::convert::NODE_SERIES.map(|f| v.get(f));
        // Byte counts since the previous sample, as rates.
        for x in &mut vals[2..] {
            *x = facts::per_second(*x, window);
        }
        let [cpu, mem] = &mut self.peaks;
        peak(cpu, vals[0], node, t, seq);
        peak(mem, vals[1], node, t, seq);
        let col = self.grid.column(t, COLUMNS);
        self.series
            .get_or_insert_with(|| Series::new(node, None, NODE_FIELDS.to_vec()))
            .add(col, &vals);
        self.samples += 1;
        if let Some(per_core) = &v.per_core {
            self.heat(per_core, node, t);
        }
    }
}
