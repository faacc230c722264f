//! The benchmark harness at toy size (`tests/bench/run.sh --quick`) with the binaries of this
//! build, so that it never rots. It checks that every figure of the table was produced; it
//! asserts nothing about speed (that is what the table is for).

use std::path::Path;
use std::process::Command;

#[test]
fn the_benchmark_harness_fills_every_row_of_the_table_at_toy_size() {
    let registry = Path::new(env!("CARGO_BIN_EXE_registry"));
    let bin_dir = registry.parent().expect("the binary lives in a directory");
    assert!(
        bin_dir.join("registry-server").is_file(),
        "registry-server is not built next to {}: run the workspace's tests (`cargo test \
         --workspace`), which build it",
        registry.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().expect("a temporary directory");
    let table = out.path().join("BENCHMARKS.md");
    let run = Command::new("bash")
        .arg(repo.join("tests/bench/run.sh"))
        .arg("--quick")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&table)
        .output()
        .expect("bash runs the harness");
    assert!(
        run.status.success(),
        "run.sh --quick failed ({}):\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&table).expect("run.sh wrote the table");
    // Where PostgreSQL is installed the comparison runs too, and then every one of its rows
    // has a figure.
    let postgres_ran = text.contains(" on loopback, default durability");
    let postgres_rows: &[&str] = if postgres_ran {
        &[
            "PostgreSQL: durable registrations",
            "PostgreSQL: validity lookups",
            "PostgreSQL: batch validity, 1,000 per query",
        ]
    } else {
        &[]
    };
    for figure in [
        "Durable signed registrations",
        "Validity lookups by EVSE ID",
        "Batch validity",
        "… same, basic view",
        "OCMF validation, batches of 500",
        "Mixed",
        "Empty unary RPC",
        "Projection rebuild",
    ]
    .iter()
    .chain(postgres_rows)
    {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {figure}")))
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{text}"));
        let median = row.split('|').nth(2).unwrap_or_default().trim();
        let value: f64 = median
            .split_whitespace()
            .next()
            .and_then(|v| v.replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("{figure}: no measured median in {row:?}"));
        assert!(value > 0.0, "{figure}: {row}");
    }
    for ceiling in ["bare sled", "ECDSA P-256 verify, ring", "SHA-256", "empty unary RPC"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("| {ceiling}")) && !l.contains("n/a")),
            "ceiling {ceiling:?} missing or not measured in\n{text}"
        );
    }
    // Each run says how much of the machine the hypervisor took meanwhile (where /proc/stat is).
    let steal = text
        .split("## CPU steal during each run")
        .nth(1)
        .unwrap_or_else(|| panic!("no CPU steal section in\n{text}"));
    let row = steal
        .lines()
        .find(|l| l.starts_with("| register |"))
        .unwrap_or_else(|| panic!("no steal row for register in\n{steal}"));
    let cells: Vec<&str> =
        row.split('|').map(str::trim).filter(|c| !c.is_empty()).skip(1).collect();
    assert_eq!(cells.len(), 3, "one cell per run: {row}");
    if std::path::Path::new("/proc/stat").exists() {
        for cell in cells {
            let pct: f64 = cell
                .trim_end_matches('%')
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("a per cent figure, not {cell:?}"));
            assert!((0.0..=100.0).contains(&pct), "{row}");
        }
    }
    for scale in ["server start-up with", "database on disk", "peak RSS"] {
        assert!(text.contains(scale), "{scale:?} missing in\n{text}");
    }
}
