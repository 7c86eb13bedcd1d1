//! All SQL of the tracker.
//!
//! Everything goes through `sqlx::Any` with portable SQL (TEXT/BIGINT columns, `$N`
//! placeholders, `INSERT … ON CONFLICT`), so the same migrations and queries run on the default
//! SQLite file and on a PostgreSQL shared by several trackers.
//!
//! Every mutation runs in one transaction and returns only after it committed; on SQLite the
//! file is in WAL mode with `synchronous=FULL`, so a committed answer survives `kill -9` and
//! power loss. On SQLite, write transactions start with `BEGIN IMMEDIATE`: a deferred
//! transaction that reads and then writes fails with `SQLITE_BUSY` (without waiting) when another
//! connection committed in between, while `IMMEDIATE` takes the write lock up front and waits
//! for it under `busy_timeout`.

mod devices;
mod events;
mod files;
mod groups;
mod items;
mod keys;
mod sessions;
mod users;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};
use thiserror::Error;

pub use devices::{free_name, DeviceRow};
pub use files::{
    quota_entries, Quota, QuotaExceeded, RemoveOutcome, RemovedFile, ShareOutcome,
    LISTING_BYTES_PER_ENTRY,
};
pub use groups::{AcceptOutcome, GroupState, JoinOutcome, LeaveOutcome, RemoveMemberOutcome};
pub use keys::{public_from_hex, PublicKeyRow};
pub use sessions::SessionRow;

/// How long SQLite waits for another writer (or a process holding the file locked) before
/// giving up with "database is locked", which the service answers as `DatabaseUnavailable`.
/// Bounded so that a locked file fails a request in about this long instead of hanging it.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 1500;

/// How long a request waits for a working database connection (a free one from the pool that
/// still answers a ping, or a new one) before failing with `DatabaseUnavailable`. This is what
/// bounds a request when PostgreSQL is down (connection refused, retried until then) or
/// unreachable (packets dropped: the ping of a pooled connection never returns). Before this
/// existed a request hung for sqlx's default 30 s, then the daemon's own timeout.
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// SQLite is a local file that cannot be "down": waiting for a pooled connection only means the
/// other requests hold all of them (each bounded by the busy timeout), so wait longer there.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a request's database work may take once it holds a connection (a query on a
/// connection whose network went silent mid-way would otherwise wait for TCP to give up,
/// minutes later). Generous: a healthy database answers in milliseconds.
pub const DB_REQUEST_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// The database did not answer within [`DB_REQUEST_DEADLINE`].
    #[error("the database did not answer within {0:?}")]
    Deadline(Duration),
}

impl StoreError {
    /// True when the failure is the database being unreachable, down or locked (worth retrying
    /// later; the client is told "tracker database unavailable"), not a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => db_unavailable(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => db_unavailable(e),
            StoreError::Deadline(_) => true,
            _ => false,
        }
    }
}

/// Which `sqlx` errors mean "the database is not available" rather than "this query is wrong".
fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // PostgreSQL SQLSTATEs: class 08 connection exception, 57P01..57P03 shutdown /
            // cannot connect now, 53300 too many connections. SQLite result codes 5 (BUSY)
            // and 6 (LOCKED), also as extended codes (low byte).
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                || (code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                    && db.message().contains("locked"))
        }
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Connection pool plus what differs between backends (only the `BEGIN` statement).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    begin_write: &'static str,
}

/// True for `sqlite:` URLs (the only backend needing file setup and PRAGMAs).
pub fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Add `mode=rwc` to a SQLite URL that names no mode, so a fresh state dir just works.
pub fn sqlite_url_with_create(url: &str) -> String {
    if !is_sqlite_url(url) || url.contains("mode=") || url.contains(":memory:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

/// `sqlite://<state_dir>/tracker.db?mode=rwc`.
pub fn default_database_url(state_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        state_dir.join("tracker.db").display()
    )
}

/// Create `dir` (and parents) readable only by us: it holds password hashes and the ticket-signing key file.
pub fn create_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| StoreError::StateDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    // `mode` only applies to directories we created; tighten an existing one too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(())
}

impl Store {
    /// Connect, apply SQLite durability settings, and run pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = is_sqlite_url(url);
        let url = sqlite_url_with_create(url);
        let opts: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .acquire_timeout(if sqlite {
                SQLITE_ACQUIRE_TIMEOUT
            } else {
                DB_ACQUIRE_TIMEOUT
            })
            .max_connections(max_connections)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        for pragma in [
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
                            "PRAGMA journal_mode = WAL".to_string(),
                            "PRAGMA synchronous = FULL".to_string(),
                            "PRAGMA foreign_keys = ON".to_string(),
                        ] {
                            sqlx::query(&pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            begin_write: if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" },
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Close all connections (on SQLite the last close checkpoints the WAL into the main file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.pool.begin_with(self.begin_write).await?)
    }
}

/// Convert an unsigned value coming from the protocol to a BIGINT column value.
fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} does not fit in BIGINT")))
}

/// Convert a BIGINT column back; negative values mean someone edited the database by hand.
fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = default_database_url(dir.path());
        let store = Store::open(&url, 4).await.unwrap();
        (dir, store)
    }

    /// Our SQL relies on `$N` meaning "argument N" on SQLite too, not "the Nth placeholder".
    #[tokio::test]
    async fn sqlite_binds_dollar_placeholders_by_number() {
        let (_dir, store) = temp_store().await;
        let (a, b): (String, i64) = sqlx::query_as("SELECT $2, $1")
            .bind(7_i64)
            .bind("two")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!((a.as_str(), b), ("two", 7));
        // A repeated placeholder is the same argument.
        let s: i64 = sqlx::query_scalar("SELECT $1 + $1 * $2")
            .bind(3_i64)
            .bind(10_i64)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(s, 33);
    }

    #[tokio::test]
    async fn sqlite_is_wal_full_sync_with_foreign_keys() {
        let (_dir, store) = temp_store().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sync, 2, "2 = FULL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
    }

    /// Another process holding the file's write lock (an operator's `sqlite3` shell, a backup)
    /// fails a write within the busy timeout as "unavailable", instead of hanging it.
    #[tokio::test]
    async fn sqlite_locked_by_another_process_fails_fast_as_unavailable() {
        use sqlx::Connection;
        let (dir, store) = temp_store().await;
        let url = default_database_url(dir.path());
        let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = store
            .create_user("alice", "phc", 1)
            .await
            .expect_err("the file is locked");
        let took = started.elapsed();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert!(
            took >= Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS / 2),
            "gave up without waiting: {took:?}"
        );
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        assert!(store.create_user("alice", "phc", 1).await.unwrap());
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        assert_eq!(
            sqlite_url_with_create("sqlite:///x/t.db"),
            "sqlite:///x/t.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite:///x/t.db?cache=shared"),
            "sqlite:///x/t.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite:///x/t.db?mode=ro"),
            "sqlite:///x/t.db?mode=ro"
        );
        assert_eq!(sqlite_url_with_create("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn state_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("a/b");
        create_state_dir(&sd).unwrap();
        assert_eq!(
            std::fs::metadata(&sd).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
