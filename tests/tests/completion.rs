//! Dynamic completion of group and file names (#12 item 8): the shipped bash completion asks
//! the running daemon (`minitorrctl __complete …`) for the groups and the files of a group,
//! and stays quiet when there is no daemon or no login.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use minitorr_e2e::*;

/// Run the shipped bash completion for `words` (the last one is being completed) with
/// `MINITORR_SOCKET=socket`; the candidates.
fn complete(socket: &Path, words: &[&str]) -> Vec<String> {
    let script = workspace_root().join("contrib/completions/minitorrctl.bash");
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let cword = words.len() - 1;
    let prog = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\n_minitorrctl minitorrctl '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword.saturating_sub(1)],
    );
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(prog)
        .env("PATH", path)
        .env("MINITORR_SOCKET", socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {}", stderr_of(&out));
    assert_eq!(stderr_of(&out), "", "completion must be quiet");
    stdout_of(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_groups_and_files_from_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    alice.ok(&["create_group", "team-x"]);
    for (name, size) in [("notes.txt", 10), ("a b.iso", 20)] {
        let src = dir.path().join(name);
        random_file(&src, size);
        alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    }

    let mut groups = complete(&alice.socket, &["minitorrctl", "list_files", ""]);
    groups.sort();
    assert_eq!(groups, ["g1", "team-x"]);
    assert_eq!(
        complete(&alice.socket, &["minitorrctl", "list_files", "te"]),
        ["team-x"]
    );
    // The file position of download_file lists the files of the group typed before it;
    // names with spaces come back quoted for the shell.
    let mut files = complete(&bob.socket, &["minitorrctl", "download_file", "g1", ""]);
    files.sort();
    assert_eq!(files, ["a\\ b.iso", "notes.txt"]);
    assert_eq!(
        complete(&bob.socket, &["minitorrctl", "download_file", "g1", "no"]),
        ["notes.txt"]
    );
    // Options with a value and --socket before the command do not shift the positions.
    let words = [
        "minitorrctl",
        "--socket",
        bob.socket.to_str().unwrap(),
        "download_file",
        "--timeout",
        "30",
        "g1",
        "n",
    ];
    assert_eq!(complete(Path::new("/nonexistent"), &words), ["notes.txt"]);
    // upload_file: the group is the second argument.
    assert_eq!(
        complete(&alice.socket, &["minitorrctl", "upload_file", "./x", "g"]),
        ["g1"]
    );
    // Everything else is still the static completion (commands, options).
    let cmds = complete(&alice.socket, &["minitorrctl", "download_f"]);
    assert_eq!(cmds, ["download_file"]);
    // A group the user cannot see has no files to offer.
    assert!(complete(&bob.socket, &["minitorrctl", "stop_share", "team-x", ""]).is_empty());

    // Not logged in: nothing, quietly.
    bob.ok(&["logout"]);
    assert!(complete(&bob.socket, &["minitorrctl", "list_files", ""]).is_empty());
}

#[test]
fn no_daemon_means_no_candidates_quickly_and_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let started = Instant::now();
    assert!(complete(&socket, &["minitorrctl", "download_file", ""]).is_empty());
    assert!(complete(&socket, &["minitorrctl", "download_file", "g1", ""]).is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    // The helper itself: exit 0, nothing on either stream.
    let out = Command::new(bin("minitorrctl"))
        .args(["--socket", socket.to_str().unwrap(), "__complete", "groups"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}
