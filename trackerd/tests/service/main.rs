//! Service tests against a real SQLite file in a temp dir, with an injected clock.

mod accounts;
mod devices;
mod events;
mod files;
mod groups;
mod hostile;
mod items;
mod keys;
mod metrics;
mod relay;
mod restart;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use minitorr_proto::tracker::{Call, ErrorCode, LoginGrant, Request, Response};
use minitorr_proto::types::{FileMeta, Sha1Hash};
use trackerd::auth::PasswordHasher;
use trackerd::service::{Policy, Service, Timing};
use trackerd::store::{self, Store};

pub const T0: u64 = 1_700_000_000;
pub const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub svc: Arc<Service>,
    pub clock: Arc<AtomicU64>,
    /// The signing key (as if read from the key file), kept across `reopen`.
    pub key: ed25519_dalek::SigningKey,
    pub policy: Policy,
}

/// Env var naming an admin PostgreSQL URL (e.g. `postgres://postgres@localhost/postgres`).
/// When set, every test runs on a fresh database there instead of a SQLite file, proving the
/// same SQL works on both backends.
pub const POSTGRES_ENV: &str = "TRACKERD_TEST_POSTGRES";

/// The PostgreSQL fixture of the e2e tests (throwaway server unless `MINITORR_TEST_POSTGRES`).
#[path = "../../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;

/// This binary is the `service_postgres` test target (the same tests, built again, see
/// Cargo.toml): it always runs on PostgreSQL, so `cargo test --workspace` covers both backends.
fn postgres_target() -> bool {
    env!("CARGO_CRATE_NAME") == "service_postgres"
}

async fn database_url(dir: &std::path::Path) -> String {
    let admin = match std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None if postgres_target() => {
            pg::admin_url("trackerd service tests on PostgreSQL (service_postgres)")
        }
        None => None,
    };
    let Some(admin) = admin else {
        return store::default_database_url(dir);
    };
    use sqlx::Connection;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    sqlx::any::install_default_drivers();
    let name = format!(
        "trackerd_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.split('?').next().unwrap();
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_policy(Policy::default()).await
    }

    /// A harness whose service runs with `policy` (quotas, announced addresses).
    pub async fn with_policy(policy: Policy) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(T0));
        let url = database_url(dir.path()).await;
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let svc = open(&url, &clock, &key, policy).await;
        Harness {
            dir,
            url,
            svc,
            clock,
            key,
            policy,
        }
    }

    /// Drop the service and open a fresh one on the same database file (a restart).
    pub async fn reopen(self) -> Harness {
        self.svc.store().close().await;
        let svc = open(&self.url, &self.clock, &self.key, self.policy).await;
        Harness { svc, ..self }
    }

    pub fn advance(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub async fn call(&self, token: Option<&str>, call: Call) -> Response {
        self.call_from(LOCAL, token, call).await
    }

    /// A call arriving on a connection from `source`.
    pub async fn call_from(&self, source: IpAddr, token: Option<&str>, call: Call) -> Response {
        self.svc
            .handle(
                Request {
                    token: token.map(str::to_string),
                    call,
                },
                source,
            )
            .await
    }

    /// Call with a token and expect `Ok`.
    pub async fn ok(&self, token: &str, call: Call) -> String {
        match self.call(Some(token), call.clone()).await {
            Response::Ok { message } => message,
            Response::LeftGroup(left) => left.message(),
            other => panic!("{call:?} -> {other:?}"),
        }
    }

    /// Call with a token and expect an error with `code`; returns its message.
    pub async fn err(&self, token: &str, call: Call, code: ErrorCode) -> String {
        expect_err(self.call(Some(token), call.clone()).await, code)
    }

    /// Log in as a second daemon of `user` (its own device key, derived from `peer_addr`):
    /// a login with the same key would replace the first session.
    pub async fn login_other_device(&self, user: &str, peer_addr: &str) -> LoginGrant {
        let call = Call::Login {
            user: user.into(),
            password: format!("{user}-pw"),
            peer_addr: peer_addr.into(),
            device_key: device_key_for(peer_addr),
        };
        match self.call(None, call).await {
            Response::LoggedIn(g) => g,
            other => panic!("login {user}: {other:?}"),
        }
    }

    pub async fn login_at(&self, user: &str, peer_addr: &str) -> LoginGrant {
        let call = Call::Login {
            user: user.into(),
            password: format!("{user}-pw"),
            peer_addr: peer_addr.into(),
            device_key: device_key(),
        };
        match self.call(None, call).await {
            Response::LoggedIn(g) => g,
            other => panic!("login {user}: {other:?}"),
        }
    }

    /// Create `user` (password `<user>-pw`) without logging in.
    pub async fn create_user(&self, user: &str) {
        let r = self
            .call(
                None,
                Call::CreateUser {
                    user: user.into(),
                    password: format!("{user}-pw"),
                },
            )
            .await;
        assert!(matches!(r, Response::Ok { .. }), "create {user}: {r:?}");
    }

    /// Create `user` (password `<user>-pw`) and log in; returns the token.
    pub async fn user(&self, user: &str) -> String {
        self.create_user(user).await;
        self.login_at(user, &format!("127.0.0.1:{}", 7000 + user.len()))
            .await
            .token
    }

    /// `owner` creates `group` and `members` join and are accepted, in that order.
    pub async fn group(&self, group: &str, owner: &str, members: &[&str]) {
        self.ok(
            owner,
            Call::CreateGroup {
                group: group.into(),
            },
        )
        .await;
        for m in members {
            self.ok(
                m,
                Call::JoinGroup {
                    group: group.into(),
                },
            )
            .await;
            let name = self.whoami(m).await;
            self.ok(
                owner,
                Call::AcceptRequest {
                    group: group.into(),
                    user: name,
                },
            )
            .await;
        }
    }

    /// The user name behind a token (via the login grant is not kept; ask the store).
    pub async fn whoami(&self, token: &str) -> String {
        let hash = trackerd::auth::token_hash(token);
        self.svc
            .store()
            .session(&hash, 0)
            .await
            .unwrap()
            .expect("live session")
            .user
    }
}

pub async fn open(
    url: &str,
    clock: &Arc<AtomicU64>,
    key: &ed25519_dalek::SigningKey,
    policy: Policy,
) -> Arc<Service> {
    let db = Store::open(url, 4).await.unwrap();
    let c = clock.clone();
    let svc = Service::with_signing_key(
        db,
        Timing::default(),
        PasswordHasher::insecure_fast(),
        Arc::new(move || c.load(Ordering::SeqCst)),
        key.clone(),
    )
    .await
    .unwrap()
    .with_policy(policy);
    Arc::new(svc)
}

pub fn expect_err(r: Response, code: ErrorCode) -> String {
    match r {
        Response::Error { code: c, message } if c == code => message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// A consistent FileMeta of `size` bytes with 16 KiB pieces; `seed` varies the hashes.
pub fn meta(name: &str, size: u64, seed: u8) -> FileMeta {
    let piece_size = minitorr_proto::MIN_PIECE_SIZE;
    let n = FileMeta::piece_count_for(size, piece_size);
    FileMeta {
        name: name.into(),
        size,
        piece_size,
        sha1: Sha1Hash([seed; 20]),
        pieces: (0..n).map(|i| Sha1Hash([seed ^ (i as u8); 20])).collect(),
        tree: None,
    }
}

pub fn share(group: &str, meta: FileMeta, complete: bool) -> Call {
    Call::Share {
        group: group.into(),
        meta: meta.into(),
        complete,
    }
}

/// The device key every test session logs in with (a fixed, valid Ed25519 public key).
pub fn device_key() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[1; 32])
        .verifying_key()
        .to_bytes()
}

/// A valid device key derived from `seed` (one "daemon" per seed).
pub fn device_key_for(seed: &str) -> [u8; 32] {
    signing_key_for(seed).verifying_key().to_bytes()
}

pub fn signing_key_for(seed: &str) -> ed25519_dalek::SigningKey {
    use sha2::Digest;
    ed25519_dalek::SigningKey::from_bytes(&sha2::Sha256::digest(seed.as_bytes()).into())
}
