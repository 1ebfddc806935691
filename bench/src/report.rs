//! Medians of alternating runs, as Markdown tables.

use crate::hub::Hub;
use crate::procfs;
use std::collections::BTreeMap;
use std::time::Duration;

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
pub fn table(results: &[(String, Vec<Row>)]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | ops/s | p50 ms | p99 ms | errors | hub CPU µs/op | hub peak RSS MiB | other (medians) |\n");
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
            // Fan-out costs about a microsecond per event: keep a decimal there.
            {
                let cpu = med(rows, |r| r.cpu_us_per_op);
                fmt(cpu, if cpu.is_some_and(|c| c < 10.0) { 1 } else { 0 })
            },
            fmt(med(rows, |r| r.peak_rss_mib), 1),
            other.join(", "),
        ));
    }
    out
}

/// Footprint figures gathered from every hub start of the suite.
#[derive(Debug, Default)]
pub struct Footprint {
    /// Spawn to healthy on an empty store, ms.
    pub healthy_empty_ms: Vec<f64>,
    /// RSS shortly after becoming healthy on an empty store, MiB.
    pub idle_rss_mib: Vec<f64>,
    /// Peak RSS at the end of the deferred scenario (empty store), MiB.
    pub deferred_peak_mib: Vec<f64>,
    /// RSS a second after the deferred scenario's backlog drained (empty
    /// store): what the hub keeps once quiet, MiB.
    pub drained_rss_mib: Vec<f64>,
    /// Spawn to healthy on a seeded store, ms, by practices in the store.
    pub healthy_seeded_ms: BTreeMap<usize, Vec<f64>>,
}

impl Footprint {
    /// Records a hub just started on an empty store (a separate process only).
    pub async fn empty_store_started(&mut self, hub: &Hub) {
        let Some(pid) = hub.pid else { return };
        self.healthy_empty_ms
            .push(hub.time_to_healthy.as_secs_f64() * 1000.0);
        // Idle: healthy, no request yet, start-up allocations settled.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((rss, _)) = procfs::rss_mib(pid) {
            self.idle_rss_mib.push(rss);
        }
    }

    /// Records a hub just started on a store of `practices` practices.
    pub fn seeded_store_started(&mut self, hub: &Hub, practices: usize) {
        if hub.pid.is_some() {
            self.healthy_seeded_ms
                .entry(practices)
                .or_default()
                .push(hub.time_to_healthy.as_secs_f64() * 1000.0);
        }
    }

    /// The footprint table; empty when no hub ran as a separate process.
    pub fn table(&self) -> String {
        let mut lines = Vec::new();
        let mut line = |what: String, values: &[f64], unit: &str, digits: usize| {
            if !values.is_empty() {
                let v = median(values.to_vec());
                lines.push(format!("| {what} | {v:.digits$} {unit} |"));
            }
        };
        line(
            "RSS idle (empty store)".into(),
            &self.idle_rss_mib,
            "MiB",
            1,
        );
        line(
            "RSS peak under `deferred` (empty store)".into(),
            &self.deferred_peak_mib,
            "MiB",
            1,
        );
        line(
            "RSS 1 s after the `deferred` backlog drained".into(),
            &self.drained_rss_mib,
            "MiB",
            1,
        );
        line(
            "start to healthy, empty store".into(),
            &self.healthy_empty_ms,
            "ms",
            0,
        );
        if let Some((size, values)) = self.healthy_seeded_ms.last_key_value() {
            line(
                format!("start to healthy, {} practices", thousands(*size)),
                values,
                "ms",
                0,
            );
        }
        if lines.is_empty() {
            return String::new();
        }
        format!(
            "| footprint (medians) | value |\n|---|---:|\n{}\n",
            lines.join("\n")
        )
    }
}

/// A seeded store as the stores table shows it.
#[derive(Debug, Clone)]
pub struct StoreLine {
    pub practices: usize,
    pub bytes_per_practice: f64,
    pub seed_seconds: f64,
}

/// The seeded stores: size on disk, seeding time, start-up time.
pub fn stores_table(stores: &[StoreLine], footprint: &Footprint) -> String {
    let mut out = String::from(
        "| store | bytes per practice | seeded in s | seeded practices/s | start to healthy ms |\n|---:|---:|---:|---:|---:|\n",
    );
    for s in stores {
        let healthy = footprint
            .healthy_seeded_ms
            .get(&s.practices)
            .map(|v| median(v.clone()));
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} | {} |\n",
            thousands(s.practices),
            s.bytes_per_practice,
            s.seed_seconds,
            thousands((s.practices as f64 / s.seed_seconds.max(1e-9)) as usize),
            fmt(healthy, 0),
        ));
    }
    out
}

/// `1000000` as `1,000,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
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

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
