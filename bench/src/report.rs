//! Medians of alternating runs, as a Markdown table.

/// One scenario run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Hub CPU per operation, when the hub is a separate process.
    pub cpu_us_per_op: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Scenario-specific figures, already formatted.
    pub notes: Vec<(String, f64)>,
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn med(rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = rows.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(v))
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// Renders the table: one line per scenario with the medians of its runs.
pub fn table(results: &[(String, Vec<Row>)], header: &str) -> String {
    let mut out = String::new();
    out.push_str(header);
    out.push_str("\n\n| scenario | ops/s | p50 ms | p99 ms | errors | hub CPU µs/op | hub peak RSS MiB | other (medians) |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for (name, rows) in results {
        let errors: u64 = rows.iter().map(|r| r.errors).sum();
        let mut other = Vec::new();
        if let Some(first) = rows.first() {
            for (i, (label, _)) in first.notes.iter().enumerate() {
                let v = median(
                    rows.iter()
                        .filter_map(|r| r.notes.get(i).map(|n| n.1))
                        .collect(),
                );
                other.push(format!("{label} {v:.1}"));
            }
        }
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {errors} | {} | {} | {} |\n",
            fmt(med(rows, |r| Some(r.rate)), 0),
            fmt(med(rows, |r| Some(r.p50_ms)), 2),
            fmt(med(rows, |r| Some(r.p99_ms)), 2),
            fmt(med(rows, |r| r.cpu_us_per_op), 0),
            fmt(med(rows, |r| r.peak_rss_mib), 1),
            other.join(", "),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
