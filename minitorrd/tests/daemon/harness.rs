//! A tracker and daemons in one process: a real trackerd `Service` (SQLite in a temp dir)
//! served over `tokio::io::duplex` through the tracker link's `Connector` seam, and `Daemon`s
//! driven through `handle` like the control socket does. Peer links are real TLS on loopback
//! (downloads need a seeder), so these tests run in real time; nothing spawns a process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use minitorr_proto::control::{DownloadState, DownloadStatus, ErrorKind, Request, Response};
use minitorrd::config::Config;
use minitorrd::daemon::Daemon;
use minitorrd::peerlink::{DeviceKey, PeerLinkMode, PeerTls};
use minitorrd::ratelimit::RateLimiter;
use minitorrd::sharing::{serve_peers, PeerServer};
use minitorrd::state::StateFile;
use minitorrd::tracker::{BoxedStream, Connector, TrackerLink};
use trackerd::auth::PasswordHasher;
use trackerd::server::{serve_stream, ServerOptions};
use trackerd::service::{system_clock, Service, Timing};
use trackerd::store::{self, Store};

/// Every tracker connection a daemon opens is a fresh duplex pipe served by the service.
struct InProcess {
    svc: Arc<Service>,
    shutdown: CancellationToken,
    /// The tracker's own real-time runtime, for daemons under paused time (see
    /// [`Net::for_paused_time`]); `None`: the tracker runs on the test's runtime.
    tracker_rt: Option<tokio::runtime::Handle>,
}

impl Connector for InProcess {
    fn connect(&self, _addr: SocketAddr) -> BoxFuture<'_, std::io::Result<BoxedStream>> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let (svc, shutdown) = (self.svc.clone(), self.shutdown.clone());
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let serve = serve_stream(server, from, svc, ServerOptions::default(), shutdown);
        match &self.tracker_rt {
            None => drop(tokio::spawn(serve)),
            // Served on the tracker's runtime from a blocking task of the test's: while a
            // blocking task runs, tokio's paused clock does not auto-advance (tokio >= 1.23),
            // so the daemon's timeouts cannot fire while the tracker (SQLite threads) works.
            // Time moves only by the test's `tokio::time::advance`.
            Some(rt) => {
                let rt = rt.clone();
                drop(tokio::task::spawn_blocking(move || rt.block_on(serve)));
            }
        }
        Box::pin(async move { Ok(Box::new(client) as BoxedStream) })
    }
}

pub struct Net {
    pub dir: tempfile::TempDir,
    pub svc: Arc<Service>,
    shutdown: CancellationToken,
    tracker_rt: Option<tokio::runtime::Runtime>,
}

pub struct Node {
    pub daemon: Arc<Daemon>,
    pub dir: PathBuf,
    pub cfg: Config,
    shutdown: CancellationToken,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.tracker_rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn service(dir: &Path) -> Service {
    let url = store::default_database_url(dir);
    let db = Store::open(&url, 4).await.unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    Service::with_signing_key(
        db,
        Timing::default(),
        PasswordHasher::insecure_fast(),
        system_clock(),
        key,
    )
    .await
    .unwrap()
}

impl Net {
    pub async fn new() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        Net {
            dir,
            svc: Arc::new(svc),
            shutdown: CancellationToken::new(),
            tracker_rt: None,
        }
    }

    /// For tests under `start_paused`: the tracker service lives on a runtime of its own, in
    /// real time, and every tracker connection keeps a blocking task of the test's runtime
    /// busy, so the paused clock moves only when the test advances it. No peer links may be
    /// used (their sockets would wait on real time that the paused clock does not follow).
    pub fn for_paused_time() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let path = dir.path().to_path_buf();
        let handle = rt.handle().clone();
        let svc = std::thread::spawn(move || handle.block_on(service(&path)))
            .join()
            .unwrap();
        Net {
            dir,
            svc: Arc::new(svc),
            shutdown: CancellationToken::new(),
            tracker_rt: Some(rt),
        }
    }

    /// A daemon named `name` with `tweak` applied to its config, its state loaded from its
    /// state dir (so a second node with the same name is a restart), serving peers on loopback.
    pub async fn node(&self, name: &str, tweak: impl FnOnce(&mut Config)) -> Node {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = Config {
            state_dir: dir.join("state"),
            ..Config::default()
        };
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        tweak(&mut cfg);
        let state = StateFile::load(&cfg.state_file()).unwrap();
        let device_key = DeviceKey::load_or_create(&cfg.state_dir).unwrap();
        let link = PeerLinkMode::Tls(Arc::new(PeerTls::new(&device_key).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tracker = TrackerLink::with_connector(
            vec!["127.0.0.1:9".parse().unwrap()],
            Arc::new(InProcess {
                svc: self.svc.clone(),
                shutdown: shutdown.clone(),
                tracker_rt: self.tracker_rt.as_ref().map(|rt| rt.handle().clone()),
            }),
        );
        let daemon = Daemon::with_tracker(
            cfg.clone(),
            peer_addr,
            state,
            device_key,
            link.clone(),
            tracker,
        );
        let server = Arc::new(PeerServer {
            shares: daemon.shares(),
            ticket_keys: daemon.ticket_keys(),
            pool: daemon.pool(),
            upload_limit: Arc::new(RateLimiter::new(cfg.max_upload_rate)),
            max_incoming: cfg.max_incoming_peers,
            live: daemon.live(),
            punch: daemon.punch_hub(),
            link,
        });
        tokio::spawn(serve_peers(listener, server, shutdown.clone()));
        Node {
            daemon,
            dir,
            cfg,
            shutdown,
        }
    }
}

impl Node {
    pub async fn call(&self, req: Request) -> Response {
        self.daemon.handle(req).await
    }

    /// Expect success.
    pub async fn ok(&self, req: Request) -> Response {
        match self.call(req.clone()).await {
            Response::Error(e) => panic!("{req:?} -> {e:?}"),
            r => r,
        }
    }

    /// Expect an error of `kind`; returns its message.
    pub async fn err(&self, req: Request, kind: ErrorKind) -> String {
        match self.call(req.clone()).await {
            Response::Error(e) if e.kind == kind => e.message,
            r => panic!("{req:?}: expected {kind:?}, got {r:?}"),
        }
    }

    pub async fn create_and_login(&self, user: &str) {
        self.ok(Request::CreateUser {
            user: user.into(),
            password: format!("{user}-pw"),
        })
        .await;
        self.login(user).await;
    }

    pub async fn login(&self, user: &str) -> Response {
        self.ok(Request::Login {
            user: user.into(),
            password: format!("{user}-pw"),
        })
        .await
    }

    pub async fn downloads(&self) -> Vec<DownloadStatus> {
        match self.ok(Request::ShowDownloads).await {
            Response::Downloads(d) => d,
            r => panic!("{r:?}"),
        }
    }

    pub async fn download(&self, file: &str) -> Option<DownloadStatus> {
        self.downloads().await.into_iter().find(|d| d.file == file)
    }

    /// Wait (real time, generous) until `file`'s download is in `state`.
    pub async fn wait_state(&self, file: &str, state: DownloadState) -> DownloadStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.download(file).await;
            if let Some(d) = d.as_ref().filter(|d| d.state == state) {
                return d.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{file} not {state:?} in time: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_bytes(&self, file: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.download(file).await.map_or(0, |d| d.bytes_done) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress on {file}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dl_dir(&self) -> PathBuf {
        let d = self.dir.join("dl");
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// `owner` creates `group`; `member` joins and is accepted.
pub async fn group(owner: &Node, member: &Node, group: &str, member_name: &str) {
    owner
        .ok(Request::CreateGroup {
            group: group.into(),
        })
        .await;
    member
        .ok(Request::JoinGroup {
            group: group.into(),
        })
        .await;
    owner
        .ok(Request::AcceptRequest {
            group: group.into(),
            user: member_name.into(),
        })
        .await;
}

/// Write `size` pseudo-random bytes at `path`.
pub fn random_file(path: &Path, size: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

/// alice (seeding `file` of `size` bytes in 64 KiB pieces, uploads capped at `rate` B/s)
/// and bob (`tweak`ed), both logged in, bob in alice's g1.
pub async fn alice_shares_to_bob(
    net: &Net,
    file: &str,
    size: usize,
    rate: u64,
    tweak: impl FnOnce(&mut Config),
) -> (Node, Node, Vec<u8>) {
    let alice = net
        .node("alice", |c| {
            c.piece_size = Some(65536);
            c.max_upload_rate = rate;
        })
        .await;
    let bob = net.node("bob", tweak).await;
    alice.create_and_login("alice").await;
    bob.create_and_login("bob").await;
    group(&alice, &bob, "g1", "bob").await;
    let data = share(&alice, file, size).await;
    (alice, bob, data)
}

pub async fn share(alice: &Node, file: &str, size: usize) -> Vec<u8> {
    let path = alice.dir.join(file);
    let data = random_file(&path, size);
    alice
        .ok(Request::UploadFile {
            path,
            group: "g1".into(),
            name: None,
        })
        .await;
    data
}
