//! `lcpfs crush test` as an operator runs it.

use std::process::Command;

fn lcpfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lcpfs"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn synthetic_cluster_report_balances_and_counts_movement() {
    let out = lcpfs(&[
        "crush",
        "test",
        "--hosts",
        "10",
        "--osds-per-host",
        "4",
        "--pg-num",
        "2048",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_osd = report["per_osd"].as_array().unwrap();
    assert_eq!(per_osd.len(), 40);
    assert_eq!(report["unplaced_shards"], 0);
    for osd in per_osd {
        let deviation = osd["deviation_pct"].as_f64().unwrap();
        assert!(
            deviation.abs() < 30.0,
            "osd {} deviates {deviation}%",
            osd["osd"]
        );
    }
    let added = &report["moved_on_add"];
    assert!(added["moved_pct"].as_f64().unwrap() > 0.0);
}

#[test]
fn erasure_and_bad_flags() {
    let out = lcpfs(&["crush", "test", "--ec", "4+2", "--hosts", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PGs mapped"));
    let bad = lcpfs(&["crush", "test", "--ec", "four"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not K+M"));
    let domain = lcpfs(&["crush", "test", "--failure-domain", "rack"]);
    assert!(String::from_utf8_lossy(&domain.stderr).contains("unknown failure domain"));
}
