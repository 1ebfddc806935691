//! The harness runs end to end in a few seconds, so it cannot rot. Numbers
//! are not asserted here: performance targets live in the benchmark itself.

#[test]
fn the_suite_runs_every_scenario_and_writes_a_table() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_raccordo-bench"))
        .args([
            "--in-process",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--runs",
            "1",
            "--in-flight",
            "4",
            "--scenarios",
            "ceiling,bare-echo,bare-pass-through,sync,overload,deferred,reads,fanout,growth",
            // One small store serves both `reads` and `growth`.
            "--store-size",
            "300",
            "--store-sizes",
            "300",
            "--subscribers",
            "10",
            "--connections",
            "2",
            "--out",
        ])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let table = std::fs::read_to_string(out.path()).unwrap();
    let row = |first_cell: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {first_cell} |")))
            .unwrap_or_else(|| panic!("no {first_cell} row in:\n{table}"))
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    for scenario in [
        "ceiling",
        "bare-echo",
        "bare-pass-through",
        "sync",
        "overload",
        "deferred",
        "reads",
        "fanout",
        "sync on 300",
        "deferred on 300",
        "reads on 300",
    ] {
        let cells = row(scenario);
        assert_eq!(cells[5], "0", "{scenario} had errors:\n{table}");
        let rate: f64 = cells[2].parse().unwrap();
        assert!(rate > 0.0, "{scenario} did nothing:\n{table}");
    }
    // The pass-through calls the vendor once per submission; echo never.
    assert!(
        row("bare-pass-through")[8].contains("vendor calls/op 1.0"),
        "{table}"
    );
    assert!(
        row("bare-echo")[8].contains("vendor calls/op 0.0"),
        "{table}"
    );
    let store = row("300");
    let bytes_per_practice: f64 = store[2].parse().unwrap();
    assert!(bytes_per_practice > 0.0, "empty store?\n{table}");
}

/// The PostgreSQL rows: two hubs sharing a fresh schema of the test
/// database (scripts/ensure-postgres), the load sent to them in turn.
#[test]
fn the_postgres_rows_run_on_two_hubs_sharing_one_schema() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_raccordo-bench"));
    command.args([
        "--in-process",
        "--store",
        "postgres",
        "--instances",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--runs",
        "1",
        "--in-flight",
        "4",
        "--scenarios",
        "sync,deferred",
        "--out",
    ]);
    command.arg(out.path());
    if let Ok(url) = std::env::var("RACCORDO_TEST_DATABASE_URL") {
        command.env("RACCORDO_BENCH_DATABASE_URL", url);
    }
    assert!(command.status().unwrap().success());
    let table = std::fs::read_to_string(out.path()).unwrap();
    assert!(
        table.contains("store PostgreSQL, 2 hubs sharing it"),
        "{table}"
    );
    for scenario in ["sync", "deferred"] {
        let cells: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no {scenario} row in:\n{table}"))
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(cells[5], "0", "{scenario} had errors:\n{table}");
        let rate: f64 = cells[2].parse().unwrap();
        assert!(rate > 0.0, "{scenario} did nothing:\n{table}");
        assert!(cells[8].contains("database CPU µs/op"), "{table}");
    }
}

/// Several hubs need a store they can share: refused on SQLite.
#[test]
fn several_instances_on_sqlite_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raccordo-bench"))
        .args(["--in-process", "--instances", "2", "--scenarios", "sync"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--instances 2 needs --store postgres"),
        "{stderr}"
    );
}
