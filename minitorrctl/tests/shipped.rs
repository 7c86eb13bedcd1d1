//! The completions and man pages in contrib/ are generated from the binary. This fails when
//! they no longer match it, i.e. when someone changed the CLI but forgot to run
//! `contrib/gen-completions.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

/// Run minitorrctl the way the generator script does: output independent of the environment.
fn ctl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_minitorrctl"))
        .args(args)
        .env_remove("MINITORR_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minitorrctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const STALE: &str =
    "shipped file is out of date: run contrib/gen-completions.sh and commit the result";

#[test]
fn shipped_completions_are_current() {
    for (shell, file) in [
        ("bash", "minitorrctl.bash"),
        ("zsh", "_minitorrctl"),
        ("fish", "minitorrctl.fish"),
    ] {
        let shipped = std::fs::read(contrib().join("completions").join(file))
            .unwrap_or_else(|e| panic!("contrib/completions/{file}: {e}; {STALE}"));
        assert!(
            shipped == ctl(&["completions", shell]),
            "contrib/completions/{file}: {STALE}"
        );
    }
}

#[test]
fn shipped_man_pages_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    ctl(&["man", fresh.path().to_str().unwrap()]);
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            // contrib/man also holds the daemons' pages (checked by the e2e packaging tests).
            .filter(|n| n.starts_with("minitorrctl") && n.ends_with(".1"))
            .collect()
    };
    let shipped_dir = contrib().join("man");
    let generated = names(fresh.path());
    assert_eq!(names(&shipped_dir), generated, "contrib/man: {STALE}");
    assert!(generated.contains("minitorrctl.1"));
    assert!(generated.contains("minitorrctl-upload_file.1"));
    assert!(
        !generated.iter().any(|n| n.contains("completions")),
        "hidden commands get no page"
    );
    for name in generated {
        let a = std::fs::read(shipped_dir.join(&name)).unwrap();
        let b = std::fs::read(fresh.path().join(&name)).unwrap();
        assert!(a == b, "contrib/man/{name}: {STALE}");
    }
}

#[test]
fn completions_know_the_seed_command_names() {
    let bash = String::from_utf8(ctl(&["completions", "bash"])).unwrap();
    for cmd in [
        "create_user",
        "upload_file",
        "download_file",
        "show_downloads",
        "stop_share",
        "wait",
    ] {
        assert!(bash.contains(cmd), "{cmd} missing from bash completions");
    }
}
