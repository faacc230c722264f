//! A few cycles of each long-run fault campaign (`registry_tests::faults`), against the real
//! `registry-server` binary Cargo built for this run. The campaigns at full size are run by
//! hand (tests/faults/README.md); these keep them working and catch a regression early.

use std::time::Duration;

use registry_tests::faults::{self, KillOptions, Outcome, TamperOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_under_writers_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let options = KillOptions {
        cycles: 6,
        writers: 4,
        longest_run: Duration::from_millis(1200),
        dir: dir.path().to_path_buf(),
    };
    let report = faults::kill_campaign(&options).await.expect("the campaign runs");
    assert!(report.failed_starts.is_empty(), "{:?}", report.failed_starts);
    assert!(report.lost.is_empty(), "{:?}", report.lost);
    assert!(report.acknowledged > 0, "some writes were acknowledged: {report:?}");
    assert!(report.export_verified, "the exported chain verifies: {report:?}");
    assert!(report.leftover_files.is_empty(), "{:?}", report.leftover_files);
    assert_eq!(report.cycles, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_bit_flips_never_start_a_silently_different_registry_nor_panic() {
    let dir = tempfile::tempdir().unwrap();
    let options = TamperOptions { flips: 30, registrations: 200, dir: dir.path().to_path_buf() };
    let report = faults::tamper_campaign(&options).await.expect("the campaign runs");
    let (refused, harmless, silent, panicked) = report.counts();
    let bad: Vec<_> = report
        .flips
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::SilentlyDifferent(_) | Outcome::Panicked(_)))
        .collect();
    assert!(bad.is_empty(), "{silent} silently different, {panicked} panics: {bad:#?}");
    assert_eq!(refused + harmless, 30);
    for f in &report.flips {
        if let Outcome::Refused { message, .. } = &f.outcome {
            assert!(message.len() > 20, "a refusal says what is damaged: {f:?}");
        }
    }
}
