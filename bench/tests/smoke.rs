//! The harness runs end to end for a second, so it cannot rot. Numbers are
//! not asserted here: performance targets live in the benchmark itself.

#[test]
fn the_suite_runs_every_scenario_and_writes_a_table() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_raccordo-bench"))
        .args([
            "--in-process",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--runs",
            "1",
            "--in-flight",
            "4",
        ])
        .args(["--store-size", "300", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let table = std::fs::read_to_string(out.path()).unwrap();
    for scenario in ["ceiling", "sync", "deferred", "reads"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no {scenario} row in:\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[5], "0", "{scenario} had errors:\n{table}");
        let rate: f64 = cells[2].parse().unwrap();
        assert!(rate > 0.0, "{scenario} did nothing:\n{table}");
    }
}
