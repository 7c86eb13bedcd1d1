//! Smoke test of minitorrctl's human output against real daemons: the snapshot tests in
//! minitorrctl/src/render fix the layout on made-up data; this checks that what the daemons
//! really report comes out in the seed's format (`[D] [g1] file`, `[C] [g1] file`) with the
//! table header, aligned columns and the `Sum:` line.

use std::time::Duration;

use minitorr_e2e::*;

#[test]
fn list_files_and_show_downloads_read_like_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Tracker::start(&tmp.path().join("tracker"));
    let alice = Peer::start(&tmp.path().join("alice"), &t);
    // bob downloads at 64 KiB/s, so a 1 MiB file stays "[D]" for a while.
    let bob_dir = tmp.path().join("bob");
    std::fs::create_dir_all(&bob_dir).unwrap();
    let cfg = bob_dir.join("minitorrd.toml");
    std::fs::write(&cfg, "max_download_rate = 65536\n").unwrap();
    let bob = Peer::start_with(&bob_dir, &[t.addr], &["--config", cfg.to_str().unwrap()]);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);

    let big = tmp.path().join("alice").join("big.bin");
    let big_sha = random_file(&big, 1024 * 1024 + 1);
    let notes = tmp.path().join("alice").join("notes.txt");
    let notes_sha = random_file(&notes, 4300);
    alice.ok(&["upload_file", big.to_str().unwrap(), "g1"]);
    alice.ok(&["upload_file", notes.to_str().unwrap(), "g1"]);

    let list = bob.ok(&["list_files", "g1"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "header, 2 files, Sum:\n{list}");
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        ["NAME", "SIZE", "SEEDERS", "SHA1"],
        "{list}"
    );
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{list}"))
    };
    assert_eq!(
        words(row("big.bin")),
        ["big.bin", "1.0", "MiB", "1", &big_sha[..10]],
        "{list}"
    );
    assert_eq!(
        words(row("notes.txt")),
        ["notes.txt", "4.2", "KiB", "1", &notes_sha[..10]],
        "{list}"
    );
    // SIZE is right-aligned under its header; SEEDERS and SHA1 left-aligned.
    let size_end = lines[0].find("SIZE").unwrap() + 4;
    let seeders_at = lines[0].find("SEEDERS").unwrap();
    let sha_at = lines[0].find("SHA1").unwrap();
    for l in &lines[1..3] {
        assert!(l[..size_end].ends_with("iB"), "SIZE column:\n{list}");
        assert_eq!(
            &l[seeders_at..seeders_at + 1],
            "1",
            "SEEDERS column:\n{list}"
        );
        assert_eq!(l[sha_at..].len(), 10, "SHA1 column:\n{list}");
    }
    assert_eq!(
        lines[3], "Sum: 2 files, 1.0 MiB, 2 with seeders online",
        "{list}"
    );

    let dest = bob_dir.join("in");
    std::fs::create_dir(&dest).unwrap();
    bob.ok(&["download_file", "g1", "notes.txt", dest.to_str().unwrap()]);
    assert_eq!(
        bob.wait_download("g1", "notes.txt", Duration::from_secs(30))["state"],
        "complete"
    );
    bob.ok(&["download_file", "g1", "big.bin", dest.to_str().unwrap()]);

    let shown = bob.ok(&["show_downloads"]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "2 downloads and Sum:\n{shown}");
    let done = lines
        .iter()
        .find(|l| l.starts_with("[C] [g1] notes.txt "))
        .unwrap_or_else(|| panic!("no [C] line:\n{shown}"));
    assert!(
        done.contains("100.0%") && done.contains("4.2 KiB"),
        "{shown}"
    );
    assert!(
        done.ends_with(&format!("-> {}", dest.join("notes.txt").display())),
        "{shown}"
    );
    let running = lines
        .iter()
        .find(|l| l.starts_with("[D] [g1] big.bin "))
        .unwrap_or_else(|| panic!("no [D] line (rate limit not holding it?):\n{shown}"));
    assert!(
        running.contains("%") && running.contains("/1.0 MiB") && running.contains("ETA "),
        "{shown}"
    );
    assert!(
        lines[2].starts_with("Sum: 2 downloads (1 downloading, 1 complete, 0 failed), "),
        "{shown}"
    );
}
