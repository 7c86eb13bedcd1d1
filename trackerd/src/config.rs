//! Configuration: command line > environment > config file > defaults.
//!
//! The config file is TOML with the keys of [`Config`]; an unknown key is an error (a typo
//! must not silently fall back to a default). Which file is read:
//!
//! * `--config FILE`, else `$TRACKERD_CONFIG`: must exist;
//! * otherwise `$CONFIGURATION_DIRECTORY/trackerd.toml` (set by systemd's
//!   `ConfigurationDirectory=`), read only if it exists, so the unit runs with defaults when
//!   the admin has not written a file;
//! * otherwise none.
//!
//! The seed form `trackerd tracker_info.txt [N]` sets the listen address to entry N (1-based).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Effective configuration (also what `--print-config` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub database_url: String,
    pub log_level: String,
    pub max_connections: usize,
    pub heartbeat_secs: u32,
    pub peer_timeout_secs: u64,
    pub session_ttl_secs: u64,
    pub ticket_ttl_secs: u64,
    pub handshake_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    /// The Ed25519 private key this tracker signs download tickets with (created 0600 on
    /// first start). A systemd credential named `ticket-signing-key` takes precedence.
    pub signing_key_file: PathBuf,
    /// After `trackerd rotate-key`, how long tickets signed with the old key keep verifying.
    /// At least `ticket_ttl_secs`, so no ticket handed out before the rotation is cut short.
    pub key_overlap_secs: u64,
    // Limits before authentication (see server.rs and preauth.rs).
    /// Largest request accepted from a connection that has not logged in yet (bytes).
    pub max_frame_before_login: usize,
    /// Connections that have not logged in yet, all sources together.
    pub max_unauthenticated: usize,
    /// Connections that have not logged in yet from one IPv4 address or IPv6 /64.
    pub max_unauthenticated_per_source: usize,
    /// Request bytes buffered for connections that have not logged in yet, all together.
    pub max_unauthenticated_bytes: usize,
    /// PEM certificate chain for TLS on the tracker link (with `tls_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain TCP on a non-loopback address (no TLS): passwords cross the network in clear.
    pub allow_plaintext: bool,
    // Per-member quotas and the announced-address switch (see contrib/trackerd.toml).
    pub quota_files_per_group: u64,
    pub quota_files: u64,
    pub quota_bytes: u64,
    pub quota_pieces: u64,
    pub max_pieces_per_file: u32,
    pub trust_announced_peer_addr: bool,
}

/// The config file as written: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_level: Option<String>,
    pub max_connections: Option<usize>,
    pub heartbeat_secs: Option<u32>,
    pub peer_timeout_secs: Option<u64>,
    pub session_ttl_secs: Option<u64>,
    pub ticket_ttl_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub signing_key_file: Option<PathBuf>,
    pub key_overlap_secs: Option<u64>,
    pub max_frame_before_login: Option<usize>,
    pub max_unauthenticated: Option<usize>,
    pub max_unauthenticated_per_source: Option<usize>,
    pub max_unauthenticated_bytes: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_plaintext: Option<bool>,
    pub quota_files_per_group: Option<u64>,
    pub quota_files: Option<u64>,
    pub quota_bytes: Option<u64>,
    pub quota_pieces: Option<u64>,
    pub max_pieces_per_file: Option<u32>,
    pub trust_announced_peer_addr: Option<bool>,
}

/// Command-line values that take part in precedence.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub tracker_info: Option<PathBuf>,
    pub tracker_no: Option<usize>,
    pub signing_key_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_plaintext: bool,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{0}")]
    TrackerInfo(#[from] minitorr_proto::tracker_info::TrackerInfoError),
    #[error("{var}: '{value}' is not a valid {what}")]
    Env {
        var: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_HEARTBEAT_SECS: u32 = 5;
pub const DEFAULT_PEER_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_SESSION_TTL_SECS: u64 = 7 * 24 * 3600;
pub const DEFAULT_TICKET_TTL_SECS: u64 = 3600;
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
/// File name of the ticket-signing key in the state directory.
pub const SIGNING_KEY_FILE_NAME: &str = "ticket-signing.key";
/// Default rotation overlap beyond the ticket lifetime: margin for clocks that disagree a bit.
pub const KEY_OVERLAP_MARGIN_SECS: u64 = 300;
/// A maximal `Login` (64-byte name, 1024-byte password, an address) is about 1.2 KiB.
pub const DEFAULT_MAX_FRAME_BEFORE_LOGIN: usize = 4096;
/// The smallest `max_frame_before_login` accepted: below it a valid `Login` may not fit.
pub const MIN_FRAME_BEFORE_LOGIN: usize = 2048;
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 1024;
/// Room for a few dozen daemons behind one address (a NAT, or every test on 127.0.0.1)
/// connecting at once.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE: usize = 64;
pub const DEFAULT_MAX_UNAUTHENTICATED_BYTES: usize = 4 * 1024 * 1024;
/// File entries one member may register in one group.
pub const DEFAULT_QUOTA_FILES_PER_GROUP: u64 = 1000;
/// Files one member may register in all groups (a tree counts each file and empty directory,
/// see `store::quota_entries`): 1 Mi, four of the largest trees, or a million single files.
pub const DEFAULT_QUOTA_FILES: u64 = 1 << 20;
/// Sum of the sizes of one member's entries: 16 TiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 16 << 40;
/// Sum of the piece counts of one member's entries: 4 Mi pieces = 160 MiB of piece hashes in
/// the database (each hash is stored as 40 hex digits).
pub const DEFAULT_QUOTA_PIECES: u64 = 4 << 20;
/// Pieces per file entry: 256 Ki = 5 MiB of hashes on the wire; 2 TiB with 8 MiB pieces,
/// 128 GiB with minitorrd's default 512 KiB (it picks bigger pieces for bigger files).
pub const DEFAULT_MAX_PIECES_PER_FILE: u32 = 256 * 1024;
/// File name looked up in `$CONFIGURATION_DIRECTORY`.
pub const CONFIG_FILE_NAME: &str = "trackerd.toml";

/// Which config file to read, and whether it must exist.
pub fn config_path(
    cli: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(PathBuf, bool)> {
    if let Some(p) = &cli.config {
        return Some((p.clone(), true));
    }
    if let Some(p) = env("TRACKERD_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    // systemd may pass several directories separated by ':'; ours is the first.
    let dir = env("CONFIGURATION_DIRECTORY")?;
    let first = dir.split(':').next().unwrap_or_default();
    Some((Path::new(first).join(CONFIG_FILE_NAME), false))
}

/// Read and parse a config file. `Ok(None)` if it is optional and absent.
pub fn load_file(path: &Path, required: bool) -> Result<Option<FileConfig>, ConfigError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: shown,
                source,
            })
        }
    };
    parse_file(&text, &shown).map(Some)
}

/// Parse config text; errors carry toml's line/column and the offending key.
pub fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_string(),
        source,
    })
}

fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("STATE_DIRECTORY").filter(|s| !s.is_empty()) {
        Some(dirs) => PathBuf::from(dirs.split(':').next().unwrap_or_default()),
        None => minitorr_proto::defaults::default_state_dir().join("tracker"),
    }
}

/// Combine everything into the effective configuration.
pub fn resolve(
    cli: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<FileConfig>,
) -> Result<Config, ConfigError> {
    let file = file.unwrap_or_default();
    let env_addr = |var: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
        env(var)
            .map(|v| {
                v.parse().map_err(|_| ConfigError::Env {
                    var,
                    value: v,
                    what: "socket address",
                })
            })
            .transpose()
    };

    let info_addr = match &cli.tracker_info {
        None => None,
        Some(path) => {
            if cli.listen.is_some() {
                return Err(ConfigError::Invalid(
                    "give either --listen or TRACKER_INFO, not both".into(),
                ));
            }
            let addrs = minitorr_proto::tracker_info::load(path)?;
            let n = cli.tracker_no.unwrap_or(1);
            let addr = n.checked_sub(1).and_then(|i| addrs.get(i)).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{} lists {} tracker(s), there is no number {n}",
                    path.display(),
                    addrs.len()
                ))
            })?;
            Some(*addr)
        }
    };
    let listen = match cli.listen.or(info_addr) {
        Some(a) => a,
        None => match env_addr("TRACKERD_LISTEN")?.or(file.listen) {
            Some(a) => a,
            None => minitorr_proto::defaults::DEFAULT_TRACKER_ADDR
                .parse()
                .expect("valid default address"),
        },
    };
    let state_dir = cli
        .state_dir
        .clone()
        .or_else(|| env("TRACKERD_STATE_DIR").map(PathBuf::from))
        .or(file.state_dir)
        .unwrap_or_else(|| default_state_dir(env));
    let database_url = cli
        .database_url
        .clone()
        .or_else(|| env("TRACKERD_DATABASE_URL"))
        .or(file.database_url)
        .unwrap_or_else(|| crate::store::default_database_url(&state_dir));

    let signing_key_file = cli
        .signing_key_file
        .clone()
        .or_else(|| env("TRACKERD_SIGNING_KEY_FILE").map(PathBuf::from))
        .or(file.signing_key_file)
        .unwrap_or_else(|| state_dir.join(SIGNING_KEY_FILE_NAME));
    let ticket_ttl_secs = file.ticket_ttl_secs.unwrap_or(DEFAULT_TICKET_TTL_SECS);

    let tls_cert = cli
        .tls_cert
        .clone()
        .or_else(|| env("TRACKERD_TLS_CERT").map(PathBuf::from))
        .or(file.tls_cert);
    let tls_key = cli
        .tls_key
        .clone()
        .or_else(|| env("TRACKERD_TLS_KEY").map(PathBuf::from))
        .or(file.tls_key);
    let allow_plaintext = if cli.allow_plaintext {
        true
    } else if let Some(v) = env("TRACKERD_ALLOW_PLAINTEXT") {
        match v.as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => {
                return Err(ConfigError::Env {
                    var: "TRACKERD_ALLOW_PLAINTEXT",
                    value: v,
                    what: "boolean (true or false)",
                })
            }
        }
    } else {
        file.allow_plaintext.unwrap_or(false)
    };

    let config = Config {
        listen,
        state_dir,
        database_url,
        log_level: file.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
        max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        heartbeat_secs: file.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS),
        peer_timeout_secs: file.peer_timeout_secs.unwrap_or(DEFAULT_PEER_TIMEOUT_SECS),
        session_ttl_secs: file.session_ttl_secs.unwrap_or(DEFAULT_SESSION_TTL_SECS),
        ticket_ttl_secs,
        handshake_timeout_secs: file
            .handshake_timeout_secs
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
        idle_timeout_secs: file.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
        signing_key_file,
        key_overlap_secs: file
            .key_overlap_secs
            .unwrap_or(ticket_ttl_secs.saturating_add(KEY_OVERLAP_MARGIN_SECS)),
        max_frame_before_login: file
            .max_frame_before_login
            .unwrap_or(DEFAULT_MAX_FRAME_BEFORE_LOGIN),
        max_unauthenticated: file
            .max_unauthenticated
            .unwrap_or(DEFAULT_MAX_UNAUTHENTICATED),
        max_unauthenticated_per_source: file
            .max_unauthenticated_per_source
            .unwrap_or(DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE),
        max_unauthenticated_bytes: file
            .max_unauthenticated_bytes
            .unwrap_or(DEFAULT_MAX_UNAUTHENTICATED_BYTES),
        tls_cert,
        tls_key,
        allow_plaintext,
        quota_files_per_group: file
            .quota_files_per_group
            .unwrap_or(DEFAULT_QUOTA_FILES_PER_GROUP),
        quota_files: file.quota_files.unwrap_or(DEFAULT_QUOTA_FILES),
        quota_bytes: file.quota_bytes.unwrap_or(DEFAULT_QUOTA_BYTES),
        quota_pieces: file.quota_pieces.unwrap_or(DEFAULT_QUOTA_PIECES),
        max_pieces_per_file: file
            .max_pieces_per_file
            .unwrap_or(DEFAULT_MAX_PIECES_PER_FILE),
        trust_announced_peer_addr: file.trust_announced_peer_addr.unwrap_or(false),
    };
    config.validate()?;
    Ok(config)
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (key, v) in [
            ("max_connections", self.max_connections as u64),
            ("heartbeat_secs", u64::from(self.heartbeat_secs)),
            ("ticket_ttl_secs", self.ticket_ttl_secs),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_unauthenticated", self.max_unauthenticated as u64),
            (
                "max_unauthenticated_per_source",
                self.max_unauthenticated_per_source as u64,
            ),
            ("quota_files_per_group", self.quota_files_per_group),
            ("quota_files", self.quota_files),
            ("quota_bytes", self.quota_bytes),
            ("quota_pieces", self.quota_pieces),
            ("max_pieces_per_file", u64::from(self.max_pieces_per_file)),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        let max_frame = minitorr_proto::MAX_MESSAGE_FRAME;
        if !(MIN_FRAME_BEFORE_LOGIN..=max_frame).contains(&self.max_frame_before_login) {
            return bad(format!(
                "max_frame_before_login ({}) must be between {MIN_FRAME_BEFORE_LOGIN} (a login must fit) and {max_frame}",
                self.max_frame_before_login
            ));
        }
        if self.max_unauthenticated_bytes < self.max_frame_before_login {
            return bad(format!(
                "max_unauthenticated_bytes ({}) must be at least max_frame_before_login ({})",
                self.max_unauthenticated_bytes, self.max_frame_before_login
            ));
        }
        if self.peer_timeout_secs <= u64::from(self.heartbeat_secs) {
            return bad(format!(
                "peer_timeout_secs ({}) must be greater than heartbeat_secs ({}), or live peers look offline",
                self.peer_timeout_secs, self.heartbeat_secs
            ));
        }
        if self.session_ttl_secs < self.peer_timeout_secs {
            return bad(format!(
                "session_ttl_secs ({}) must be at least peer_timeout_secs ({})",
                self.session_ttl_secs, self.peer_timeout_secs
            ));
        }
        if self.key_overlap_secs < self.ticket_ttl_secs {
            return bad(format!(
                "key_overlap_secs ({}) must be at least ticket_ttl_secs ({}), or tickets handed out just before a key rotation stop working early",
                self.key_overlap_secs, self.ticket_ttl_secs
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together: set both (TLS) or neither".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad(format!("log_level '{}': {e}", self.log_level));
        }
        Ok(())
    }

    /// What members may do, for [`crate::service::Service::with_policy`].
    pub fn policy(&self) -> crate::service::Policy {
        crate::service::Policy {
            quota: crate::store::Quota {
                files_per_group: self.quota_files_per_group,
                files: self.quota_files,
                bytes: self.quota_bytes,
                pieces: self.quota_pieces,
            },
            max_pieces_per_file: self.max_pieces_per_file,
            trust_announced_peer_addr: self.trust_announced_peer_addr,
        }
    }

    /// TOML text of the effective configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config always serializes")
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
