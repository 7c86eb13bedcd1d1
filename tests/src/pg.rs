//! A PostgreSQL server for the tests that need one (tracker HA, the service tests on
//! PostgreSQL, database outages), so that `cargo test --workspace` runs them instead of passing
//! them in 0.00 s.
//!
//! [`admin_url`] decides, once per test binary:
//! 1. `MINITORR_TEST_POSTGRES` set: that server (a role that may create databases).
//! 2. `MINITORR_SKIP_POSTGRES_TESTS=1`: no server; every caller prints a loud SKIPPED line.
//! 3. Otherwise a throwaway server of our own: `initdb` + `pg_ctl` from
//!    `/usr/lib/postgresql/*/bin` (Debian's layout) or `PATH`, in a temp dir, on 127.0.0.1 with a
//!    random port and password, shared by every test of this binary. As root it runs as the
//!    `postgres` user (the server refuses root), as `.ci/run` does. A watchdog process stops it
//!    and deletes its directory when the test binary exits (even by `kill -9`).
//!    No binaries: the test FAILS with how to install them.
//!
//! Plain std (plus `nix`, `rand`, `tempfile`) so trackerd's own tests include this file too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// URL of an existing server to use instead of starting one.
pub const URL_ENV: &str = "MINITORR_TEST_POSTGRES";
/// The explicit switch that skips (loudly) the tests needing PostgreSQL.
pub const SKIP_ENV: &str = "MINITORR_SKIP_POSTGRES_TESTS";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The admin URL of a PostgreSQL server for tests, or `None` (after a loud SKIPPED line on
/// stderr, bypassing the harness's capture) when [`SKIP_ENV`] is set. Panics, saying how to
/// install PostgreSQL, when no server can be had. `what` names the test for the SKIPPED line.
pub fn admin_url(what: &str) -> Option<String> {
    if let Some(url) = env(URL_ENV) {
        return Some(url);
    }
    if env(SKIP_ENV).is_some_and(|v| v != "0") {
        skipped(what);
        return None;
    }
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    match SERVER.get_or_init(start_throwaway) {
        Ok(url) => Some(url.clone()),
        Err(why) => panic!("{why}"),
    }
}

fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n********************************************************************************\n\
         SKIPPED: {what}: needs PostgreSQL, and {SKIP_ENV} is set.\n\
         These tests did NOT run. Unset {SKIP_ENV} (with PostgreSQL's server binaries\n\
         installed, e.g. `apt-get install postgresql`) or set {URL_ENV} to run them.\n\
         ********************************************************************************"
    );
}

fn install_hint() -> String {
    format!(
        "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install postgresql`; they \
         land in /usr/lib/postgresql/VERSION/bin), or set {URL_ENV}=postgres://USER:PASSWORD@HOST:PORT/postgres \
         (a role with CREATEDB) to use a running server; to skip these tests knowingly, set \
         {SKIP_ENV}=1"
    )
}

/// The directory holding `initdb` and `pg_ctl`: the newest /usr/lib/postgresql/*/bin, else PATH.
fn bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has(d))
}

/// Runs PostgreSQL programs, as the `postgres` user when we are root.
struct Runner {
    bin: PathBuf,
    as_postgres: bool,
}

impl Runner {
    fn cmd(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The server daemonizes: it must not hold our pipes open.
        c.stdin(Stdio::null());
        c
    }

    fn shell_prefix(&self) -> String {
        if self.as_postgres {
            "runuser -u postgres -- ".into()
        } else {
            String::new()
        }
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn start_throwaway() -> Result<String, String> {
    let Some(bin) = bin_dir() else {
        return Err(format!(
            "these tests need PostgreSQL, and its server binaries (initdb, pg_ctl) are not \
             installed: {}",
            install_hint()
        ));
    };
    let as_postgres = nix::unistd::geteuid().is_root();
    let runner = Runner { bin, as_postgres };
    let started = std::time::Instant::now();
    let root = tempfile::Builder::new()
        .prefix("minitorr-test-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir for PostgreSQL: {e}"))?
        .keep();
    let fail = |msg: String| {
        let _ = std::fs::remove_dir_all(&root);
        Err(format!("cannot start a throwaway PostgreSQL: {msg}"))
    };
    if as_postgres {
        // initdb refuses root; the data dir must belong to the server's user.
        let user = match nix::unistd::User::from_name("postgres") {
            Ok(Some(u)) => u,
            _ => {
                return fail(format!(
                    "running as root, and there is no `postgres` user to run the server as; {}",
                    install_hint()
                ))
            }
        };
        if let Err(e) = nix::unistd::chown(&root, Some(user.uid), Some(user.gid)) {
            return fail(format!("chown {}: {e}", root.display()));
        }
    }
    let data = root.join("data");
    let password = hex::encode(rand::random::<[u8; 16]>());
    let pwfile = root.join("pw");
    if let Err(e) = std::fs::write(&pwfile, &password) {
        return fail(format!("write {}: {e}", pwfile.display()));
    }
    if as_postgres {
        let user = nix::unistd::User::from_name("postgres").ok().flatten();
        if let Some(u) = user {
            let _ = nix::unistd::chown(&pwfile, Some(u.uid), Some(u.gid));
        }
    }
    let mut initdb = runner.cmd("initdb");
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "minitorr",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    if let Err(e) = run(initdb, "initdb") {
        return fail(e);
    }
    let _ = std::fs::remove_file(&pwfile);
    // The port is free when we look; another process may take it before the server binds it,
    // so try a few.
    let mut last = String::new();
    let mut port = 0;
    for _ in 0..5 {
        port = free_port();
        let mut pg_ctl = runner.cmd("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                // Throwaway: durability off for speed (the tests kill trackers, never this
                // server); enough connections for parallel tests.
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=400 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                data.display()
            ))
            .arg("start");
        match run(pg_ctl, "pg_ctl start") {
            Ok(()) => {
                last.clear();
                break;
            }
            Err(e) => {
                let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
                last = format!("{e}\nserver log:\n{log}");
            }
        }
    }
    if !last.is_empty() {
        return fail(last);
    }
    spawn_watchdog(&runner, &root, &data);
    eprintln!(
        "started a throwaway PostgreSQL on 127.0.0.1:{port} in {} ({:.1} s; stopped when this test binary exits)",
        root.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(format!(
        "postgres://minitorr:{password}@127.0.0.1:{port}/postgres"
    ))
}

/// A small shell process that waits for this test binary to exit, then stops the server and
/// deletes its directory. In its own process group, so Ctrl-C on the test run does not kill it
/// before it has cleaned up.
fn spawn_watchdog(runner: &Runner, root: &Path, data: &Path) {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {prefix}{pg_ctl} -D '{data}' stop -m immediate -w >/dev/null 2>&1; rm -rf '{root}'",
        pid = std::process::id(),
        prefix = runner.shell_prefix(),
        pg_ctl = runner.bin.join("pg_ctl").display(),
        data = data.display(),
        root = root.display(),
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "warning: cannot start the PostgreSQL watchdog ({e}); stop it yourself: {}",
            data.display()
        );
    }
}

/// `psql` from the server's bin dir, else PATH.
fn psql_program() -> PathBuf {
    bin_dir()
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// Run one SQL statement with `psql` against `url`.
pub fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new(psql_program())
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run psql (PostgreSQL client): {e}; {}",
                install_hint()
            )
        })
}

/// A fresh database of its own on the server of `admin`, dropped (with its connections) when
/// this is dropped.
pub struct TestDatabase {
    admin: String,
    pub name: String,
    /// Same server and credentials, this database.
    pub url: String,
}

impl TestDatabase {
    pub fn create(admin: &str, prefix: &str) -> TestDatabase {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}_{}_{}_{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            rand::random::<u32>()
        );
        let out = psql(admin, &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestDatabase {
            admin: admin.to_string(),
            url: with_database(admin, &name),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `url` with its database (the path) replaced by `name`, query string kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let slash = base.rfind('/').expect("URL with a database path");
    assert!(slash > "postgres://".len(), "{url} must name a database");
    format!("{}/{name}{query}", &base[..slash])
}

/// `url` with its host:port replaced by `addr` (to put a proxy in front of the server).
pub fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    let rest = url.strip_prefix("postgres://").expect("postgres:// URL");
    let (auth, after) = match rest.rsplit_once('@') {
        Some((a, r)) => (format!("{a}@"), r),
        None => (String::new(), rest),
    };
    let path = after.find('/').map_or("", |i| &after[i..]);
    format!("postgres://{auth}{addr}{path}")
}
