//! Keeps the benchmark working: runs `bench/run.py --quick` against the binaries under test and
//! checks that every scenario reported. Timings are never asserted (shared, noisy machines).

use std::path::Path;
use std::process::{Command, Stdio};

use minitorr_e2e::bin;

#[test]
fn bench_quick_mode_reports_every_scenario() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no python3 on PATH; bench/run.py needs Python 3.8+");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = bin("minitorrd").parent().unwrap().to_path_buf();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let status = Command::new("python3")
        .arg(root.join("bench/run.py"))
        .args(["--quick", "--no-build", "--profile", profile, "--bin-dir"])
        .arg(&bins)
        .arg("--out")
        .arg(&out)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::null()) // the markdown table; progress and errors stay on stderr
        .status()
        .expect("run bench/run.py");
    assert!(status.success(), "bench/run.py --quick failed: {status}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("latest.json")).unwrap()).unwrap();
    for key in [
        "nproc",
        "cpu_model",
        "kernel",
        "sha_ni",
        "git_commit",
        "date",
    ] {
        assert!(!json["meta"][key].is_null(), "meta.{key} missing: {json}");
    }
    let s = &json["scenarios"];
    for key in ["upload", "loopback", "netlab", "resources", "many_peers"] {
        assert!(s.get(key).is_some(), "scenario {key} missing: {s}");
    }
    assert!(s["upload"]["upload_file_s"]["median"].is_number(), "{s}");
    for key in ["minitorr_1", "minitorr_3"] {
        let d = &s["loopback"][key];
        for field in ["time_s", "mbps", "first_piece_s", "cpu_s", "peak_rss_mib"] {
            assert!(
                d[field]["median"].is_number(),
                "loopback.{key}.{field}: {d}"
            );
        }
    }
    assert!(
        s["netlab"]["skipped"].is_string(),
        "quick mode skips netlab"
    );
    let rows = s["many_peers"]["rows"].as_array().unwrap();
    assert!(rows.len() >= 2, "{s}");
    for r in rows {
        assert!(r["download_s"]["median"].is_number(), "{r}");
        assert!(r["files_in_group"].as_u64().unwrap() > r["seeders"].as_u64().unwrap());
    }
    let md = std::fs::read_to_string(out.join("latest.md")).unwrap();
    assert!(
        md.contains("upload_file") && md.contains("Many peers"),
        "{md}"
    );
}
