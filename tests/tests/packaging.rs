//! Packaging: contrib/install.sh lays out the usual Unix tree, the installed units verify, and
//! the daemons' shipped man pages match their command lines.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use minitorr_e2e::*;

/// `contrib/install.sh --no-build --bin-dir <built binaries> ARGS…`; asserts success.
fn install(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(workspace_root().join("contrib/install.sh"))
        .arg("--no-build")
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {args:?} failed:\n{}{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    stdout_of(&out)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{} not installed: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn install_sh_fills_destdir_with_the_usual_tree() {
    let dest = tempfile::tempdir().unwrap();
    let said = install(&["--dest", dest.path().to_str().unwrap()]);
    let top = dest.path().join("usr/local");
    // The next steps include the mkdir the copy needs.
    assert!(
        said.contains("mkdir -p /etc/minitorr && cp /usr/local/share/doc/minitorr/trackerd.toml /etc/minitorr/"),
        "{said}"
    );
    assert!(said.contains("mkdir -p ~/.config/minitorr"), "{said}");

    for b in ["trackerd", "minitorrd", "minitorrctl"] {
        let p = top.join("bin").join(b);
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        let out = Command::new(&p).arg("--version").output().unwrap();
        assert!(out.status.success() && stdout_of(&out).contains(b), "{b}");
    }
    let files = [
        "lib/systemd/system/trackerd.service",
        "lib/systemd/user/minitorrd.service",
        "share/doc/minitorr/trackerd.toml",
        "share/doc/minitorr/minitorrd.toml",
        "share/doc/minitorr/README.md",
        "share/doc/minitorr/cli.md",
        "share/doc/minitorr/cli-json.md",
        "share/doc/minitorr/OPERATIONS.md",
        "share/doc/minitorr/SECURITY.md",
        "share/bash-completion/completions/minitorrctl",
        "share/zsh/site-functions/_minitorrctl",
        "share/fish/vendor_completions.d/minitorrctl.fish",
        "share/man/man1/minitorrctl.1",
        "share/man/man1/minitorrctl-upload_file.1",
        "share/man/man1/minitorrd.1",
        "share/man/man8/trackerd.8",
        "share/man/man8/trackerd-rotate-key.8",
    ];
    for f in files {
        assert_eq!(mode(&top.join(f)), 0o644, "{f}");
    }
    // Every shipped page and nothing else; nothing outside the prefix.
    let shipped = std::fs::read_dir(workspace_root().join("contrib/man"))
        .unwrap()
        .count();
    let installed = ["man1", "man8"]
        .iter()
        .map(|s| {
            std::fs::read_dir(top.join("share/man").join(s))
                .unwrap()
                .count()
        })
        .sum::<usize>();
    assert_eq!(installed, shipped);
    let roots: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(roots, ["usr"], "only DESTDIR/usr/local is written");

    // Every document an installed man page points at is installed.
    let mut cited = 0;
    for section in ["man1", "man8"] {
        for page in std::fs::read_dir(top.join("share/man").join(section)).unwrap() {
            let page = page.unwrap().path();
            let text = std::fs::read_to_string(&page).unwrap().replace("\\-", "-");
            assert!(
                !text.contains("docs/cli-json.md)") && !text.contains("in docs/"),
                "{} cites a source-tree path: {text}",
                page.display()
            );
            for (i, _) in text.match_indices("/usr/local/share/doc/minitorr/") {
                let rest = &text[i + "/usr/local/".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !"()\\".contains(*c))
                    .collect();
                let path = path.trim_end_matches(['.', ',']);
                assert!(
                    top.join(path).is_file(),
                    "{} cites /usr/local/{path}, which is not installed",
                    page.display()
                );
                cited += 1;
            }
        }
    }
    assert!(cited > 0, "the man pages cite the installed docs");

    // Default prefix: the units are installed as shipped.
    let unit = std::fs::read_to_string(top.join("lib/systemd/system/trackerd.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(workspace_root().join("contrib/systemd/trackerd.service")).unwrap()
    );
    // The bash completion is the shipped one, loadable by bash-completion by command name.
    let comp =
        std::fs::read_to_string(top.join("share/bash-completion/completions/minitorrctl")).unwrap();
    assert!(comp.contains("complete -F _minitorrctl"), "{comp}");
}

/// With another prefix the units name the binaries there — and then pass verify as installed.
#[test]
fn install_sh_prefix_rewrites_the_units_which_then_verify() {
    let root = tempfile::tempdir().unwrap();
    let prefix = root.path().join("opt/minitorr");
    let said = install(&["--prefix", prefix.to_str().unwrap()]);
    assert!(said.contains("systemctl --user"), "{said}");
    // The man pages follow the prefix to the installed docs.
    let page = std::fs::read_to_string(prefix.join("share/man/man1/minitorrctl.1")).unwrap();
    let cited = format!("{}/share/doc/minitorr/cli", prefix.display());
    assert!(page.contains(&cited), "{page}");
    assert!(!page.contains("/usr/local/"), "{page}");
    assert!(prefix.join("share/doc/minitorr/cli-json.md").is_file());

    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/trackerd.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/bin/trackerd\n", prefix.display())),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
    let user = std::fs::read_to_string(prefix.join("lib/systemd/user/minitorrd.service")).unwrap();
    assert!(
        user.contains(&format!("ExecStart={}/bin/minitorrd ", prefix.display())),
        "{user}"
    );

    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let runtime = root.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    for (unit, user) in [
        ("system/trackerd.service", false),
        ("user/minitorrd.service", true),
    ] {
        let mut cmd = Command::new(&analyze);
        if user {
            cmd.arg("--user");
        }
        let out = cmd
            .arg("verify")
            .arg(prefix.join("lib/systemd").join(unit))
            .env("MANPATH", prefix.join("share/man"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let text = format!("{}{}", stderr_of(&out), stdout_of(&out));
        let stem = unit
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".service");
        assert!(
            out.status.success() && !text.lines().any(|l| l.contains(stem)),
            "installed {unit}:\n{text}"
        );
    }
}

#[test]
fn install_sh_rejects_bad_arguments() {
    let out = Command::new("bash")
        .arg(workspace_root().join("contrib/install.sh"))
        .args(["--no-build", "--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--frobnicate"));
    let out = Command::new("bash")
        .arg(workspace_root().join("contrib/install.sh"))
        .args(["--no-build", "--prefix", "relative/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// trackerd.8, trackerd-rotate-key.8 and minitorrd.1 in contrib/man are generated from the clap definitions
/// (`contrib/gen-completions.sh`); this fails when a flag changed but the pages did not.
#[test]
fn shipped_daemon_man_pages_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    for (b, page) in [
        ("trackerd", "trackerd.8"),
        ("trackerd", "trackerd-rotate-key.8"),
        ("minitorrd", "minitorrd.1"),
    ] {
        let out = Command::new(bin(b))
            .arg("--generate-man")
            .arg(fresh.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{b}: {}", stderr_of(&out));
        let generated = std::fs::read(fresh.path().join(page)).unwrap();
        let shipped = std::fs::read(workspace_root().join("contrib/man").join(page))
            .unwrap_or_else(|e| panic!("contrib/man/{page}: {e}"));
        assert!(
            generated == shipped,
            "contrib/man/{page} is out of date: run contrib/gen-completions.sh and commit it"
        );
        assert!(
            !String::from_utf8_lossy(&generated).contains("generate"),
            "{page}: hidden --generate-man must not be documented"
        );
    }
}
