//! Node series across many nodes: what the report draws instead of one
//! line per node once there are more nodes than a chart can tell apart by
//! colour (see `NODE_LINES` in the parent module). Per column of the
//! session's grid: the mean and the highest of the nodes' CPU and memory
//! %, and the sum of their disk and network rates (the cluster's total).
//!
//! A node's figure in a column is the mean of its samples there; a
//! column it has no sample in takes its latest figure before (a sample's
//! rate holds over its whole window, which runs to the next sample), from
//! its first sample to its last. So a sum does not drop where a node's
//! samples fall between columns.

/// How one output field combines the nodes' figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    Mean,
    Max,
    Sum,
}

/// One node's figures: by column (ascending), the mean per input field.
pub(super) type NodeColumns = Vec<(usize, Vec<Option<f64>>)>;

/// The nodes' figures combined, per column of `columns`: for each output
/// `(input field, how)`, the value (`None` where no node has one). Returns
/// the columns that have any value, with their values.
pub(super) fn combine(
    nodes: &[NodeColumns],
    columns: usize,
    outputs: &[(usize, How)],
) -> Vec<(usize, Vec<Option<f64>>)> {
    let mut acc: Vec<Vec<(f64, u32)>> = vec![vec![(0.0, 0); outputs.len()]; columns];
    let mut max: Vec<Vec<Option<f64>>> = vec![vec![None; outputs.len()]; columns];
    for node in nodes {
        let (Some(first), Some(last)) = (node.first(), node.last()) else {
            continue;
        };
        let mut at = 0;
        let mut held: &[Option<f64>] = &first.1;
        for col in first.0..=last.0.min(columns.saturating_sub(1)) {
            if at < node.len() && node[at].0 == col {
                held = &node[at].1;
                at += 1;
            }
            for (o, &(field, how)) in outputs.iter().enumerate() {
                let Some(v) = held.get(field).copied().flatten() else {
                    continue;
                };
                if how == How::Max {
                    let m = &mut max[col][o];
                    *m = Some(m.map_or(v, |m: f64| m.max(v)));
                } else {
                    acc[col][o].0 += v;
                    acc[col][o].1 += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for col in 0..columns {
        let vals: Vec<Option<f64>> = outputs
            .iter()
            .enumerate()
            .map(|(o, &(_, how))| {
                let (s, n) = acc[col][o];
                match how {
                    How::Max => max[col][o],
                    How::Mean => (n > 0).then(|| s / f64::from(n)),
                    How::Sum => (n > 0).then_some(s),
                }
            })
            .collect();
        if vals.iter().any(Option::is_some) {
            out.push((col, vals));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_between_samples_holds_its_figure() {
        // Node a samples every column, node b every other one: the sum
        // stays 3 throughout, the mean 1.5, the max 2.
        let a: NodeColumns = (0..6).map(|c| (c, vec![Some(1.0)])).collect();
        let b: NodeColumns = (0..6).step_by(2).map(|c| (c, vec![Some(2.0)])).collect();
        let out = combine(&[a, b], 8, &[(0, How::Sum), (0, How::Mean), (0, How::Max)]);
        // Past b's last sample (column 4) only a counts; 6 and 7: none.
        assert_eq!(out.len(), 6);
        for (c, v) in &out[..5] {
            assert_eq!(v, &[Some(3.0), Some(1.5), Some(2.0)], "column {c}");
        }
        assert_eq!(out[5].1, [Some(1.0), Some(1.0), Some(1.0)]);
    }

    #[test]
    fn missing_figures_are_left_out_not_zero() {
        let a: NodeColumns = vec![(0, vec![None]), (1, vec![Some(4.0)])];
        let out = combine(&[a], 2, &[(0, How::Mean)]);
        assert_eq!(out, [(1, vec![Some(4.0)])]);
    }
}
