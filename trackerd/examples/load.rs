//! Tracker load benchmark: many simulated daemons against one trackerd on loopback.
//!
//! ```text
//! cargo build --release --bin trackerd --example load
//! target/release/examples/load --clients 1000 --duration 30
//! ```
//!
//! It starts `trackerd` (next to this binary in the target dir, or `--trackerd PATH`) on a free
//! loopback port with a fresh SQLite database, then:
//!
//! 1. setup (not measured): creates `--clients` users and `--groups` groups (each user a member
//!    of one group, every user sharing one file in it), with a few connections;
//! 2. load: opens one persistent TCP connection per simulated daemon (real handshake and codec),
//!    logs each in, and for `--duration` seconds each sends a `Heartbeat` every
//!    `--heartbeat-ms` and, every `--lookup-ms`, alternately `ListFiles` and `GetFile` of its
//!    group — one request in flight per connection, as minitorrd does;
//! 3. reports requests/s, p50/p99/p99.9/max latency per call and overall, errors, and
//!    trackerd's RSS (peak during the load, sampled every 250 ms).
//!
//! Every loop is bounded by the deadline; the process exits non-zero if any request failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::types::{FileMeta, Sha1Hash};
use minitorr_proto::{handshake, links, FrameCodec, Link};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, FrameCodec<Response, Request>>;

struct Opts {
    clients: usize,
    groups: usize,
    duration: Duration,
    heartbeat: Duration,
    lookup: Duration,
    trackerd: PathBuf,
    setup_concurrency: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        clients: 1000,
        groups: 20,
        duration: Duration::from_secs(30),
        heartbeat: Duration::from_secs(5),
        lookup: Duration::from_secs(2),
        trackerd: std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("../trackerd"),
        setup_concurrency: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--clients" => o.clients = v().parse().unwrap(),
            "--groups" => o.groups = v().parse().unwrap(),
            "--duration" => o.duration = Duration::from_secs(v().parse().unwrap()),
            "--heartbeat-ms" => o.heartbeat = Duration::from_millis(v().parse().unwrap()),
            "--lookup-ms" => o.lookup = Duration::from_millis(v().parse().unwrap()),
            "--trackerd" => o.trackerd = v().into(),
            "--setup-concurrency" => o.setup_concurrency = v().parse().unwrap(),
            other => {
                panic!("unknown argument {other}; see the doc comment of trackerd/examples/load.rs")
            }
        }
    }
    assert!(o.groups >= 1 && o.clients >= o.groups);
    o
}

async fn connect(addr: SocketAddr) -> Conn {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    handshake(&mut s, Link::Tracker).await.expect("handshake");
    Framed::new(s, links::tracker_client())
}

async fn call(conn: &mut Conn, token: &Option<String>, call: Call) -> Response {
    conn.send(Request {
        token: token.clone(),
        call,
    })
    .await
    .expect("send");
    conn.next().await.expect("tracker closed").expect("frame")
}

fn user(i: usize) -> String {
    format!("load{i:05}")
}

fn group(i: usize, groups: usize) -> String {
    format!("lg{:03}", i % groups)
}

fn file_name(i: usize) -> String {
    format!("file-{i:05}.bin")
}

/// Metadata of a made-up 4 MiB file (8 pieces of 512 KiB); content never transferred.
fn meta(i: usize) -> FileMeta {
    let h = |k: usize| {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&(i as u64).to_be_bytes());
        b[8..16].copy_from_slice(&(k as u64).to_be_bytes());
        Sha1Hash(b)
    };
    FileMeta {
        name: file_name(i),
        size: 4 << 20,
        piece_size: 512 * 1024,
        sha1: h(usize::MAX),
        pieces: (0..8).map(h).collect(),
        tree: None,
    }
}

async fn login(conn: &mut Conn, i: usize) -> Option<String> {
    let r = call(
        conn,
        &None,
        Call::Login {
            user: user(i),
            password: "load-test-password".into(),
            peer_addr: format!("127.0.0.1:{}", 10_000 + i),
            device_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        },
    )
    .await;
    match r {
        Response::LoggedIn(g) => Some(g.token),
        other => panic!("login {i}: {other:?}"),
    }
}

fn expect_ok(what: &str, r: Response) {
    if let Response::Error { code, message } = &r {
        if !matches!(code, minitorr_proto::tracker::ErrorCode::AlreadyExists) {
            panic!("{what}: {code:?} {message}");
        }
    }
}

/// Users, groups, memberships and one shared file per user.
async fn setup(addr: SocketAddr, o: &Opts) {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let clients = o.clients;
    let mut tasks = Vec::new();
    // Phase 1: users (argon2 hashing dominates: a few in parallel).
    for _ in 0..o.setup_concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= clients {
                    break;
                }
                let r = call(
                    &mut c,
                    &None,
                    Call::CreateUser {
                        user: user(i),
                        password: "load-test-password".into(),
                    },
                )
                .await;
                expect_ok("create_user", r);
            }
        }));
    }
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    eprintln!("setup: {} users in {:?}", o.clients, t.elapsed());
    // Phase 2: owners (users 0..groups) create groups; everyone else joins; owners accept.
    let groups = o.groups;
    let mut owners = Vec::new();
    for g in 0..groups {
        let mut c = connect(addr).await;
        let tok = login(&mut c, g).await;
        expect_ok(
            "create_group",
            call(
                &mut c,
                &tok,
                Call::CreateGroup {
                    group: group(g, groups),
                },
            )
            .await,
        );
        owners.push((c, tok));
    }
    let next = Arc::new(AtomicU64::new(groups as u64));
    for _ in 0..o.setup_concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= clients {
                    break;
                }
                let tok = login(&mut c, i).await;
                let r = call(
                    &mut c,
                    &tok,
                    Call::JoinGroup {
                        group: group(i, groups),
                    },
                )
                .await;
                expect_ok("join_group", r);
                call(&mut c, &tok, Call::Logout).await;
            }
        }));
    }
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    for i in groups..clients {
        let (c, tok) = &mut owners[i % groups];
        let r = call(
            c,
            tok,
            Call::AcceptRequest {
                group: group(i, groups),
                user: user(i),
            },
        )
        .await;
        expect_ok("accept_request", r);
    }
    eprintln!(
        "setup: {groups} groups, {} members in {:?}",
        clients - groups,
        t.elapsed()
    );
}

#[derive(Default)]
struct Samples {
    heartbeat: Vec<u32>,
    list_files: Vec<u32>,
    get_file: Vec<u32>,
    errors: u64,
}

/// One simulated daemon: login + share (not measured), then the request mix until `deadline`.
async fn daemon(
    addr: SocketAddr,
    i: usize,
    o: Arc<Opts>,
    ready: Arc<tokio::sync::Barrier>,
    start: Arc<std::sync::OnceLock<(Instant, Instant)>>,
) -> Samples {
    let mut c = connect(addr).await;
    let tok = login(&mut c, i).await;
    let g = group(i, o.groups);
    let r = call(
        &mut c,
        &tok,
        Call::Share {
            group: g.clone(),
            meta: meta(i).into(),
            complete: true,
        },
    )
    .await;
    expect_ok("share", r);
    // Everyone logged in and sharing: the measured phase starts for all at once.
    if ready.wait().await.is_leader() {
        let at = Instant::now();
        start.set((at, at + o.duration)).unwrap();
    }
    ready.wait().await;
    let deadline = start.get().unwrap().1;
    // Spread the clients over the periods, as real daemons started at different times would be.
    let phase = Duration::from_micros((i as u64 * 7919) % o.lookup.as_micros().max(1) as u64);
    let mut next_hb = Instant::now() + o.heartbeat.mul_f64((i % 97) as f64 / 97.0);
    let mut next_lookup = Instant::now() + phase;
    let mut s = Samples::default();
    let mut k = 0usize;
    loop {
        let at = next_hb.min(next_lookup);
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let (which, req) = if next_hb <= next_lookup {
            next_hb += o.heartbeat;
            (0, Call::Heartbeat)
        } else {
            next_lookup += o.lookup;
            k += 1;
            // Lookups go to files other members share in the same group.
            let other = (i + o.groups * (1 + k % 7)) % o.clients;
            let other = if other % o.groups == i % o.groups {
                other
            } else {
                i
            };
            if k % 2 == 0 {
                (1, Call::ListFiles { group: g.clone() })
            } else {
                (
                    2,
                    Call::GetFile {
                        group: g.clone(),
                        file: file_name(other),
                    },
                )
            }
        };
        let t = Instant::now();
        let r = call(&mut c, &tok, req).await;
        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        let ok = match (&r, which) {
            (Response::Ok { .. }, 0) => true,
            (Response::Files(f), 1) => !f.is_empty(),
            (Response::File(_), 2) => true,
            _ => false,
        };
        if !ok {
            s.errors += 1;
            if s.errors == 1 {
                eprintln!("client {i}: unexpected answer {r:?}");
            }
        }
        match which {
            0 => s.heartbeat.push(us),
            1 => s.list_files.push(us),
            _ => s.get_file.push(us),
        }
    }
    s
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn report(name: &str, mut v: Vec<u32>, secs: f64) {
    v.sort_unstable();
    println!(
        "| {name:<10} | {:>8} | {:>8.0} | {:>6.2} | {:>6.2} | {:>7.2} | {:>7.2} |",
        v.len(),
        v.len() as f64 / secs,
        pct(&v, 0.50),
        pct(&v, 0.99),
        pct(&v, 0.999),
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let o = Arc::new(parse());
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Every simulated daemon connects from 127.0.0.1 and they all log in at once: raise the
    // pre-login caps per source as an operator would for a large NAT (the defaults allow 64
    // not-yet-logged-in connections per address).
    let config = state.path().join("trackerd.toml");
    std::fs::write(
        &config,
        format!(
            "max_unauthenticated = {n}\nmax_unauthenticated_per_source = {n}\n",
            n = o.clients.max(64)
        ),
    )
    .unwrap();
    let mut child = Command::new(&o.trackerd)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .env_remove("TRACKERD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", o.trackerd.display()));
    let pid = child.id();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "trackerd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    setup(addr, &o).await;
    let rss_idle = rss_kib(pid);

    // Connect and log in all daemons, then start the measured phase together.
    let ready = Arc::new(tokio::sync::Barrier::new(o.clients));
    let start = Arc::new(std::sync::OnceLock::new());
    let tasks: Vec<_> = (0..o.clients)
        .map(|i| tokio::spawn(daemon(addr, i, o.clone(), ready.clone(), start.clone())))
        .collect();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let start = start.clone();
        tokio::spawn(async move {
            while start.get().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let deadline = start.get().unwrap().1;
            while Instant::now() < deadline {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut all = Samples::default();
    for t in tasks {
        let s = t.await.expect("client task");
        all.heartbeat.extend(s.heartbeat);
        all.list_files.extend(s.list_files);
        all.get_file.extend(s.get_file);
        all.errors += s.errors;
    }
    sampler.await.unwrap();
    let secs = o.duration.as_secs_f64();
    let total: Vec<u32> = all
        .heartbeat
        .iter()
        .chain(&all.list_files)
        .chain(&all.get_file)
        .copied()
        .collect();
    println!(
        "\n{} concurrent connections, {} groups, {:?} measured; heartbeat every {:?}, a lookup every {:?} per client\n",
        o.clients, o.groups, o.duration, o.heartbeat, o.lookup
    );
    println!("| call       | requests |    req/s | p50 ms | p99 ms | p99.9 ms |  max ms |");
    println!("|------------|---------:|---------:|-------:|-------:|--------:|--------:|");
    report("heartbeat", all.heartbeat, secs);
    report("list_files", all.list_files, secs);
    report("get_file", all.get_file, secs);
    report("all", total, secs);
    println!(
        "\nerrors: {}; trackerd RSS: {} MiB after setup, {} MiB peak under load",
        all.errors,
        rss_idle / 1024,
        peak.load(Ordering::Relaxed) / 1024
    );
    let _ = child.kill();
    let _ = child.wait();
    if all.errors > 0 {
        std::process::exit(1);
    }
}
