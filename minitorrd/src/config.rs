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
    /// Speak TLS to the trackers (implied by --tracker-ca / --tracker-cert-sha256).
    #[arg(long, env = "MINITORRD_TRACKER_TLS", value_parser = clap::builder::FalseyValueParser::new())]
    pub tracker_tls: bool,
    /// Trust the tracker certificate through this PEM file (a CA, or the tracker's own
    /// self-signed certificate).
    #[arg(long, env = "MINITORRD_TRACKER_CA", value_name = "PEM")]
    pub tracker_ca: Option<PathBuf>,
    /// Accept only a tracker certificate with this SHA-256 fingerprint (hex; several separated
    /// by commas). `trackerd --print-cert-fingerprint` prints it.
    #[arg(long, env = "MINITORRD_TRACKER_CERT_SHA256", value_name = "HEX")]
    pub tracker_cert_sha256: Option<String>,
    /// Allow plain TCP to a tracker that is not on a loopback address (passwords in clear!).
    #[arg(long, env = "MINITORRD_ALLOW_PLAINTEXT", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_plaintext: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Write the man page minitorrd.1 into DIR and exit (used by contrib/gen-completions.sh).
    #[arg(long, value_name = "DIR", hide = true)]
    pub generate_man: Option<PathBuf>,
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
    /// Piece size for files this daemon shares, in bytes (16 KiB ..= 8 MiB). Unset (the
    /// default): chosen by the item's size, 64 KiB to 512 KiB (`item::auto_piece_size`).
    pub piece_size: Option<u32>,
    /// Peers one download connects to at most.
    pub max_peers_per_download: usize,
    /// Incoming peer connections served at once.
    pub max_incoming_peers: usize,
    /// An incoming peer connection on which the peer requested nothing for this many seconds is
    /// closed (it frees its slot; a downloader that needs more reconnects).
    pub peer_idle_timeout_secs: u64,
    /// Incoming peer connections served at once to one IP address.
    pub max_peers_per_addr: usize,
    /// Incoming peer connections served at once to one user (whatever their addresses).
    pub max_peers_per_user: usize,
    /// Largest number of piece requests in flight to one peer on a short link, counted in
    /// 512 KiB pieces (adapts between 1 and this; a long link adds its bandwidth-delay
    /// product, docs/DOWNLOADS.md).
    pub max_pipeline_depth: usize,
    /// Upload rate limit in bytes per second over all peers (0 = unlimited); in the file also
    /// with a unit, e.g. "20M" or "10MiB" ([`crate::rate_units`]).
    #[serde(deserialize_with = "crate::rate_units::max_upload_rate")]
    pub max_upload_rate: u64,
    /// Download rate limit in bytes per second over all downloads (0 = unlimited); units as
    /// for `max_upload_rate`.
    #[serde(deserialize_with = "crate::rate_units::max_download_rate")]
    pub max_download_rate: u64,
    /// Downloads running at once; more wait in the queue (`[Q]` in show_downloads).
    pub max_active_downloads: usize,
    /// TLS to the trackers (turned on by `tracker_ca` or `tracker_cert_sha256`).
    pub tracker_tls: bool,
    /// PEM file to trust the tracker certificate by: a CA, or the tracker's own certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_ca: Option<PathBuf>,
    /// Pinned SHA-256 fingerprint(s) of the tracker certificate(s), hex, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cert_sha256: Option<String>,
    /// Plain TCP to a tracker that is not on a loopback address.
    pub allow_plaintext: bool,
    /// Peer links in plain TCP, without encryption or device-key authentication, for
    /// benchmarks only: refused unless `listen` is a loopback address. A daemon in this mode
    /// and a normal (TLS) daemon refuse each other with a clear error.
    pub insecure_plaintext_peer_links_for_benchmarks: bool,
    /// The TLS client built from the keys above by [`Config::load`].
    #[serde(skip)]
    pub tracker_tls_client: Option<crate::tracker::TlsClient>,
    /// This daemon's name in `minitorrctl devices` (default: the host name).
    pub device_name: String,
    /// Where to serve operators' metrics (`GET /metrics`, Prometheus text); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Use the tracker's relay (when it offers one) as the last resort: wait there for
    /// downloaders that cannot reach us, and go through it to holders we cannot reach.
    pub use_relay: bool,
    /// Ask the router (UPnP-IGD, else PCP/NAT-PMP) to forward the peer port when `listen` is a private address
    /// (issue #14); renewed in the background, deleted at a clean shutdown.
    pub port_mapping: bool,
    /// Lease asked for a port mapping, in seconds (renewed halfway); ≥ 30.
    pub port_mapping_lease_secs: u32,
    /// Take part in hole punches the tracker coordinates (issue #14), as downloader and as
    /// holder. Off: only direct connections and the relay.
    pub hole_punching: bool,
}

/// The host name as a device name, or "minitorrd" if it is not a valid one.
pub fn default_device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| minitorr_proto::names::device(h.trim()).ok())
        .unwrap_or_else(|| "minitorrd".to_string())
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
            piece_size: None,
            max_peers_per_download: 32,
            max_incoming_peers: 128,
            peer_idle_timeout_secs: 60,
            max_peers_per_addr: 64,
            max_peers_per_user: 16,
            max_pipeline_depth: 8,
            max_upload_rate: 0,
            max_download_rate: 0,
            max_active_downloads: 4,
            tracker_tls: false,
            tracker_ca: None,
            tracker_cert_sha256: None,
            allow_plaintext: false,
            insecure_plaintext_peer_links_for_benchmarks: false,
            tracker_tls_client: None,
            device_name: default_device_name(),
            metrics_listen: None,
            use_relay: true,
            port_mapping: true,
            port_mapping_lease_secs: 3600,
            hole_punching: true,
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
        if args.tracker_tls {
            cfg.tracker_tls = true;
        }
        if let Some(p) = &args.tracker_ca {
            cfg.tracker_ca = Some(p.clone());
        }
        if let Some(f) = &args.tracker_cert_sha256 {
            cfg.tracker_cert_sha256 = Some(f.clone());
        }
        if args.allow_plaintext {
            cfg.allow_plaintext = true;
        }
        if cfg.tracker_ca.is_some() || cfg.tracker_cert_sha256.is_some() {
            cfg.tracker_tls = true;
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
        if cfg.tracker_tls {
            let client = crate::tracker::TlsClient::new(
                cfg.tracker_ca.as_deref(),
                cfg.tracker_cert_sha256.as_deref(),
            )
            .map_err(ConfigError::Invalid)?;
            cfg.tracker_tls_client = Some(client);
        }
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
        if let Some(ps) = self.piece_size {
            if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&ps) {
                return Err(ConfigError::Invalid(format!(
                    "piece_size {ps} must be between {MIN_PIECE_SIZE} and {MAX_PIECE_SIZE}"
                )));
            }
        }
        if self.max_peers_per_download == 0 || self.max_pipeline_depth < 2 {
            return Err(ConfigError::Invalid(
                "max_peers_per_download ≥ 1 and max_pipeline_depth ≥ 2".into(),
            ));
        }
        if self.max_active_downloads == 0 {
            return Err(ConfigError::Invalid(
                "max_active_downloads must be ≥ 1".into(),
            ));
        }
        if self.peer_idle_timeout_secs == 0
            || self.max_peers_per_addr == 0
            || self.max_peers_per_user == 0
        {
            return Err(ConfigError::Invalid(
                "peer_idle_timeout_secs, max_peers_per_addr and max_peers_per_user must be ≥ 1"
                    .into(),
            ));
        }
        if self.port_mapping_lease_secs < 30 {
            return Err(ConfigError::Invalid(
                "port_mapping_lease_secs must be ≥ 30".into(),
            ));
        }
        minitorr_proto::names::device(&self.device_name)
            .map_err(|e| ConfigError::Invalid(format!("device_name: {e}")))?;
        if self.insecure_plaintext_peer_links_for_benchmarks {
            crate::peerlink::check_plaintext_allowed(self.listen).map_err(ConfigError::Invalid)?;
        }
        if !self.tracker_tls && !self.allow_plaintext {
            if let Some(remote) = self.trackers.iter().find(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::Invalid(format!(
                    "tracker {remote} is not on a loopback address and the tracker link is not \
                     encrypted: set tracker_cert_sha256 (or tracker_ca) to use TLS, or \
                     allow_plaintext = true to send passwords and tokens in clear"
                )));
            }
        }
        Ok(())
    }

    /// What to warn about the tracker link at startup: plain TCP.
    pub fn tracker_link_warning(&self) -> Option<String> {
        if self.tracker_tls {
            return None;
        }
        Some(if self.trackers.iter().all(|a| a.ip().is_loopback()) {
            "tracker link is not encrypted (plain TCP to a loopback tracker)".to_string()
        } else {
            "tracker link is not encrypted: allow_plaintext = true; passwords and session \
             tokens cross the network in clear"
                .to_string()
        })
    }

    /// The seeder's limits on open peer connections.
    pub fn live_limits(&self) -> crate::sharing::live::LiveLimits {
        crate::sharing::live::LiveLimits {
            idle_timeout: std::time::Duration::from_secs(self.peer_idle_timeout_secs),
            max_per_addr: self.max_peers_per_addr,
            max_per_user: self.max_peers_per_user,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn to_toml(&self) -> String {
        let toml = toml::to_string_pretty(self).expect("config serializes");
        if self.piece_size.is_some() {
            return toml;
        }
        // An unset key is not written: say what it means instead.
        format!(
            "# piece_size is unset: each shared item gets 64 KiB to 512 KiB pieces by its size \
             (docs/DOWNLOADS.md, \"Piece size\")\n{toml}"
        )
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
            piece_size: Some(100),
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn rates_accept_units_and_bad_units_name_the_key() {
        let cfg = Config::from_toml(
            "max_download_rate = \"20M\"\nmax_upload_rate = 1048576\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.max_download_rate, 20_000_000);
        assert_eq!(cfg.max_upload_rate, 1_048_576);
        let cfg = Config::from_toml("max_upload_rate = \"10MiB\"\n", "t.toml").unwrap();
        assert_eq!(cfg.max_upload_rate, 10 << 20);
        assert_eq!(cfg.max_download_rate, 0);
        // --print-config writes plain bytes, which read back the same.
        let again = Config::from_toml(&cfg.to_toml(), "t.toml").unwrap();
        assert_eq!(again.max_upload_rate, 10 << 20);
        for (text, key) in [
            ("max_download_rate = \"20X\"\n", "max_download_rate"),
            ("max_upload_rate = -5\n", "max_upload_rate"),
            ("max_upload_rate = true\n", "max_upload_rate"),
        ] {
            let e = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(e.contains("t.toml"), "{text:?}: {e}");
        }
    }

    fn load(argv: &[&str]) -> Result<Config, ConfigError> {
        Config::load(&Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn plaintext_to_a_remote_tracker_needs_allow_plaintext() {
        let e = load(&["minitorrd", "--tracker", "127.0.0.1:5000,10.0.0.5:5000"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10.0.0.5:5000")
                && e.contains("not encrypted")
                && e.contains("allow_plaintext"),
            "{e}"
        );
        let cfg = load(&[
            "minitorrd",
            "--tracker",
            "10.0.0.5:5000",
            "--allow-plaintext",
        ])
        .unwrap();
        assert!(cfg
            .tracker_link_warning()
            .unwrap()
            .contains("not encrypted"));
        let cfg = load(&["minitorrd", "--tracker", "127.0.0.1:5000"]).unwrap();
        assert!(cfg.tracker_link_warning().unwrap().contains("loopback"));
        assert!(cfg.tracker_tls_client.is_none());
    }

    #[test]
    fn a_pin_or_a_ca_turns_tls_on() {
        let pin = "ab".repeat(32);
        let cfg = load(&[
            "minitorrd",
            "--tracker",
            "10.0.0.5:5000",
            "--tracker-cert-sha256",
            &pin,
        ])
        .unwrap();
        assert!(cfg.tracker_tls && cfg.tracker_tls_client.is_some());
        assert_eq!(cfg.tracker_link_warning(), None);
        let text = cfg.to_toml();
        assert!(text.contains("tracker_tls = true"), "{text}");
        assert!(text.contains(&pin), "{text}");
        let back = Config::from_toml(&text, "x").unwrap();
        assert_eq!(back.tracker_cert_sha256.as_deref(), Some(pin.as_str()));

        // TLS without anything to trust the tracker by, or a bad pin: refused at load.
        let e = load(&["minitorrd", "--tracker-tls"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tracker_cert_sha256"), "{e}");
        let e = load(&["minitorrd", "--tracker-cert-sha256", "abc"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a SHA-256 fingerprint"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(
            &f,
            "trackers = [\"10.0.0.5:5000\"]\ntracker_ca = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap();
        let e = load(&["minitorrd", "--config", f.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn example_config_parses_and_names_the_tls_keys() {
        let text = include_str!("../../contrib/minitorrd.toml");
        Config::from_toml(text, "contrib/minitorrd.toml").unwrap();
        for key in [
            "tracker_tls",
            "tracker_ca",
            "tracker_cert_sha256",
            "allow_plaintext",
            "metrics_listen",
            "use_relay",
            "hole_punching",
        ] {
            assert!(text.contains(&format!("#{key} = ")), "{key} undocumented");
        }
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_takes_an_address() {
        assert_eq!(Config::default().metrics_listen, None);
        let c = Config::from_toml("metrics_listen = \"127.0.0.1:9101\"\n", "x").unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
        let back = Config::from_toml(&c.to_toml(), "x").unwrap();
        assert_eq!(back.metrics_listen, c.metrics_listen);
        assert!(Config::from_toml("metrics_listen = \"nowhere\"\n", "x").is_err());
    }

    #[test]
    fn print_config_round_trips() {
        let cfg = Config {
            trackers: vec!["127.0.0.1:5000".parse().unwrap()],
            ..Config::default()
        };
        let back = Config::from_toml(&cfg.to_toml(), "x").unwrap();
        assert_eq!(back.trackers, cfg.trackers);
        assert!(cfg.to_toml().starts_with("# piece_size is unset"));
        assert_eq!(back.piece_size, None);
        let fixed = Config {
            piece_size: Some(65536),
            ..Config::default()
        };
        let back = Config::from_toml(&fixed.to_toml(), "x").unwrap();
        assert_eq!(back.piece_size, Some(65536));
    }
}
