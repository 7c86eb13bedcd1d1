//! Default locations and ports that the daemons and the CLI must agree on.

use std::path::PathBuf;

/// Default address trackerd listens on (the seed's example tracker port).
pub const DEFAULT_TRACKER_ADDR: &str = "127.0.0.1:5000";

/// Default address minitorrd serves pieces on.
pub const DEFAULT_PEER_ADDR: &str = "127.0.0.1:7001";

/// Environment variable that overrides the control socket path for daemon and CLI.
pub const SOCKET_ENV: &str = "MINITORR_SOCKET";

/// `$XDG_RUNTIME_DIR/minitorr/minitorrd.sock`, or `/tmp/minitorr-$UID/minitorrd.sock` when
/// there is no runtime dir (e.g. a plain `su` shell or a container).
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("minitorr").join("minitorrd.sock"),
        None => fallback_runtime_dir().join("minitorrd.sock"),
    }
}

fn fallback_runtime_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/minitorr-{}", nix::unistd::getuid()))
}

/// `$XDG_STATE_HOME/minitorr`, or `~/.local/state/minitorr`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("minitorr");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".local").join("state").join("minitorr")
}
