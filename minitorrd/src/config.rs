//! minitorrd configuration: defaults < TOML file < environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use minitorr_proto::defaults;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error(transparent)]
    TrackerInfo(#[from] minitorr_proto::tracker_info::TrackerInfoError),
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// `minitorrd [--config FILE] [--socket PATH] [--state-dir DIR] [ADDR [TRACKER_INFO]]`
#[derive(Debug, Parser, Default)]
#[command(
    name = "minitorrd",
    version,
    about = "Minitorr peer daemon (one per user)"
)]
pub struct Args {
    /// TOML config file (see contrib/minitorrd.toml).
    #[arg(long, env = "MINITORRD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control socket path [default: $XDG_RUNTIME_DIR/minitorr/minitorrd.sock].
    #[arg(long, env = defaults::SOCKET_ENV)]
    pub socket: Option<PathBuf>,
    /// Where shares, downloads and their progress are remembered [default: $XDG_STATE_HOME/minitorr].
    #[arg(long, env = "MINITORRD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Tracker address (repeatable, tried in order); alternative to TRACKER_INFO.
    #[arg(long = "tracker", env = "MINITORRD_TRACKERS", value_delimiter = ',')]
    pub trackers: Vec<SocketAddr>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to serve pieces to other peers on (the seed's `<IP>:<PORT>`).
    #[arg(env = "MINITORRD_LISTEN")]
    pub addr: Option<SocketAddr>,
    /// The seed's tracker_info.txt: tracker IP and port lines, in preference order.
    pub tracker_info: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve pieces on.
    pub listen: SocketAddr,
    /// Trackers, tried in order.
    pub trackers: Vec<SocketAddr>,
    /// Alternatively, a tracker_info.txt file (used when `trackers` is empty).
    pub tracker_info: Option<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log_level: String,
    /// Piece size for files this daemon shares, in bytes (16 KiB ..= 8 MiB).
    pub piece_size: u32,
    /// Peers one download connects to at most.
    pub max_peers_per_download: usize,
    /// Incoming peer connections served at once.
    pub max_incoming_peers: usize,
    /// Largest number of piece requests in flight to one peer (adapts between 2 and this).
    pub max_pipeline_depth: usize,
    /// Upload rate limit in bytes per second over all peers (0 = unlimited).
    pub max_upload_rate: u64,
    /// Download rate limit in bytes per second over all downloads (0 = unlimited).
    pub max_download_rate: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: defaults::DEFAULT_PEER_ADDR.parse().expect("valid default"),
            trackers: vec![],
            tracker_info: None,
            socket: defaults::default_socket_path(),
            state_dir: defaults::default_state_dir(),
            log_level: "info".into(),
            piece_size: 512 * 1024,
            max_peers_per_download: 8,
            max_incoming_peers: 128,
            max_pipeline_depth: 8,
            max_upload_rate: 0,
            max_download_rate: 0,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            msg: e.to_string(),
        })
    }

    /// Build the effective config from parsed arguments (which already include env vars).
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let mut cfg = match config_path(args) {
            Some(path) => Config::read(&path)?,
            None => Config::default(),
        };
        if let Some(s) = &args.socket {
            cfg.socket = s.clone();
        }
        if let Some(d) = &args.state_dir {
            cfg.state_dir = d.clone();
        }
        if let Some(a) = args.addr {
            cfg.listen = a;
        }
        if !args.trackers.is_empty() {
            cfg.trackers = args.trackers.clone();
        }
        if let Some(t) = &args.tracker_info {
            cfg.tracker_info = Some(t.clone());
        }
        if cfg.trackers.is_empty() {
            cfg.trackers = match &cfg.tracker_info {
                Some(p) => minitorr_proto::tracker_info::load(p)?,
                None => vec![defaults::DEFAULT_TRACKER_ADDR
                    .parse()
                    .expect("valid default")],
            };
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use minitorr_proto::{MAX_PIECE_SIZE, MIN_PIECE_SIZE};
        if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&self.piece_size) {
            return Err(ConfigError::Invalid(format!(
                "piece_size {} must be between {MIN_PIECE_SIZE} and {MAX_PIECE_SIZE}",
                self.piece_size
            )));
        }
        if self.max_peers_per_download == 0 || self.max_pipeline_depth < 2 {
            return Err(ConfigError::Invalid(
                "max_peers_per_download ≥ 1 and max_pipeline_depth ≥ 2".into(),
            ));
        }
        Ok(())
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// The config file in use: `--config`/`$MINITORRD_CONFIG` (must exist), else
/// `$XDG_CONFIG_HOME/minitorr/minitorrd.toml` if it exists (so a systemd user unit works
/// before anyone writes a config).
pub fn config_path(args: &Args) -> Option<PathBuf> {
    if let Some(p) = &args.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("minitorr").join("minitorrd.toml")).filter(|p| p.exists())
}

/// Resolve `p` relative to `base` if it is relative (config paths are relative to the file).
pub fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::from_toml("listen = \"127.0.0.1:7001\"\npeice_size = 1\n", "m.toml")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("peice_size"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn flags_override_file_and_seed_positional_form_works() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("tracker_info.txt");
        std::fs::write(&info, "127.0.0.1\n6000\n127.0.0.1\n6001\n").unwrap();
        let args =
            Args::try_parse_from(["minitorrd", "127.0.0.1:7009", info.to_str().unwrap()]).unwrap();
        let cfg = Config::load(&args).unwrap();
        assert_eq!(cfg.listen.port(), 7009);
        assert_eq!(cfg.trackers.len(), 2);
        assert_eq!(cfg.trackers[1].port(), 6001);
    }

    #[test]
    fn bad_piece_size_is_refused() {
        let cfg = Config {
            piece_size: 100,
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn print_config_round_trips() {
        let cfg = Config {
            trackers: vec!["127.0.0.1:5000".parse().unwrap()],
            ..Config::default()
        };
        let back = Config::from_toml(&cfg.to_toml(), "x").unwrap();
        assert_eq!(back.trackers, cfg.trackers);
    }
}
