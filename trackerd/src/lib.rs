//! trackerd: the Minitorr tracker daemon.
//!
//! Holds accounts, sessions, groups, join requests, and which online peers hold which files,
//! in a SQL database (SQLite by default, PostgreSQL for several trackers sharing one state).
//! Clients speak `minitorr_proto::tracker` over TCP.
//!
//! Layers: [`server`] (sockets, framing, limits) → [`service`] (rules, one request at a time)
//! → [`store`] (all SQL). [`config`] resolves the settings, [`auth`] hashes passwords and
//! limits guessing, [`keys`] holds the ticket-signing key (a file, never the database), [`shutdown`] handles signals and systemd.

pub mod auth;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod preauth;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod subscription;
pub mod tls;

/// Database connections per tracker process.
pub const DB_POOL_SIZE: u32 = 8;
