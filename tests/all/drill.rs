//! `settle drill`: the shipped smoke scenario (a host crash, a downstream
//! outage, drift injected) meets its thresholds; a scenario whose threshold
//! cannot be met fails with exit 1 and says which.

use crate::support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn drills() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../example-plugins/drills")
}

fn drill(dir: &Path, scenario: &Path) -> (i32, String, String, Option<Value>) {
    let config = support::write_config(dir, None);
    let report = dir.join("report.json");
    let (code, stdout, stderr) = support::output_within(
        support::settle_command()
            .arg("drill")
            .arg("--config")
            .arg(&config)
            .arg("--scenario")
            .arg(scenario)
            .arg("--report")
            .arg(&report),
        Duration::from_secs(180),
    );
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    (code, stdout, stderr, json)
}

#[test]
fn the_smoke_drill_meets_its_thresholds() {
    let dir = support::tempdir();
    let (code, stdout, stderr, report) = drill(dir.path(), &drills().join("smoke.toml"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("every threshold met"), "{stdout}");
    let r = report.expect("the JSON report");
    assert!(r["submitted"].as_u64().unwrap() >= 30, "{r}");
    assert_eq!(r["host_crashes"], 1);
    assert_eq!(r["outages"], 1);
    assert_eq!(r["drift_injected"], 3, "{r}");
    assert_eq!(r["drift_detected"], 3, "{r}");
    assert_eq!(r["duplicate_effects"], 0);
    assert_eq!(r["duplicate_runs"], 0);
    assert_eq!(r["drift_asked"], 3);
    assert_eq!(r["still_moving"], 0, "{r}");
    assert_eq!(r["missed"], serde_json::json!([]));
}

#[test]
fn a_missed_threshold_fails_the_drill_and_is_named() {
    let dir = support::tempdir();
    let scenario = dir.path().join("impossible.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"impossible\"\nduration = \"1s\"\nrate = 5\n[[flow]]\nfile = \"{}\"\ninput = {{ customer = \"dee\", amount = 3 }}\n[thresholds]\nmax_p99_ms = 0\n",
            drills().join("pay.yaml").display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr, report) = drill(dir.path(), &scenario);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("MISSED: p99 time to finish"), "{stdout}");
    let r = report.expect("a report even when a threshold is missed");
    assert_eq!(r["missed"].as_array().unwrap().len(), 1, "{r}");
}
