//! The daemon's operators' metrics (served by `minitorr_metrics` when `metrics_listen` is set).
//!
//! One registry per process: a state directory has one daemon (`statelock`), and one daemon
//! per process, so the process-wide [`global`] registry is that daemon's. (In-process tests
//! that run several `Daemon`s share it; none asserts on it.) Keeping it global means the
//! download engine and the share accounting record without every constructor carrying a
//! handle.
//!
//! Where things are recorded — in the logic layer, never in socket handlers:
//! * bytes received, pieces verified/failed: `Download::piece_verified` / `piece_rejected`;
//! * bytes sent: `ShareStats::uploaded` (the per-share accounting `list_shares` shows);
//! * hashing time: `hash_file` (sharing a file) and `Download::prepare_reporting`
//!   (re-verifying a part file);
//! * downloads by state and peers connected: gauges counted from the `Daemon` at scrape time.
//!
//! Labels come from fixed lists only (state, direction, what was hashed), never a user, group
//! or file name: the number of series is bounded whatever peers do.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use minitorr_proto::control::{DownloadState, Response};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: &'static str,
}

/// What was hashed, for [`DaemonMetrics::hashed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// A file being shared (or re-checked after it changed).
    Share,
    /// A part file re-verified on resume.
    Reverify,
}

fn hashing_histogram() -> Histogram {
    // 1 ms … about 9 min: a small file hashes in milliseconds, 1 GiB in seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

const STATES: [(DownloadState, &str); 6] = [
    (DownloadState::Downloading, "downloading"),
    (DownloadState::Queued, "queued"),
    (DownloadState::Paused, "paused"),
    (DownloadState::Verifying, "verifying"),
    (DownloadState::Complete, "complete"),
    (DownloadState::Failed, "failed"),
];

pub struct DaemonMetrics {
    registry: Registry,
    downloads: Family<StateLabel, Gauge>,
    received: Counter,
    sent: Counter,
    verified: Counter,
    failed: Counter,
    peers: Family<DirectionLabel, Gauge>,
    hashing: Family<WhatLabel, Histogram, fn() -> Histogram>,
}

static GLOBAL: LazyLock<Arc<DaemonMetrics>> = LazyLock::new(|| Arc::new(DaemonMetrics::new()));

/// This process's (this daemon's) metrics.
pub fn global() -> &'static Arc<DaemonMetrics> {
    &GLOBAL
}

impl DaemonMetrics {
    fn new() -> DaemonMetrics {
        let mut registry = Registry::with_prefix("minitorr_daemon");
        let downloads = Family::<StateLabel, Gauge>::default();
        registry.register(
            "downloads",
            "Downloads in show_downloads, by state",
            downloads.clone(),
        );
        let received = Counter::default();
        registry.register_with_unit(
            "received",
            "Piece bytes received from peers (verified or not)",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Counter::default();
        registry.register_with_unit(
            "sent",
            "Piece bytes sent to peers",
            Unit::Bytes,
            sent.clone(),
        );
        let verified = Counter::default();
        registry.register(
            "pieces_verified",
            "Downloaded pieces whose SHA1 matched",
            verified.clone(),
        );
        let failed = Counter::default();
        registry.register(
            "pieces_failed",
            "Downloaded pieces whose SHA1 did not match (discarded, fetched again)",
            failed.clone(),
        );
        let peers = Family::<DirectionLabel, Gauge>::default();
        registry.register(
            "peers_connected",
            "Peer connections: outgoing (our downloads) and incoming (peers we serve)",
            peers.clone(),
        );
        let hashing = Family::<WhatLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            hashing_histogram,
        );
        registry.register_with_unit(
            "hashing_duration",
            "Time spent hashing whole files: sharing (share) or re-verifying a part file (reverify)",
            Unit::Seconds,
            hashing.clone(),
        );
        // Every state shows (as 0) from the first scrape on.
        for (_, state) in STATES {
            downloads.get_or_create(&StateLabel { state }).set(0);
        }
        for direction in ["incoming", "outgoing"] {
            peers.get_or_create(&DirectionLabel { direction }).set(0);
        }
        DaemonMetrics {
            registry,
            downloads,
            received,
            sent,
            verified,
            failed,
            peers,
            hashing,
        }
    }

    /// A downloaded piece of `len` bytes checked: good or bad.
    pub fn piece(&self, len: u64, good: bool) {
        self.received.inc_by(len);
        if good {
            self.verified.inc();
        } else {
            self.failed.inc();
        }
    }

    /// `len` piece bytes sent to a peer.
    pub fn sent(&self, len: u64) {
        self.sent.inc_by(len);
    }

    /// A whole-file hash that took `took`.
    pub fn hashed(&self, what: Hashing, took: Duration) {
        let what = match what {
            Hashing::Share => "share",
            Hashing::Reverify => "reverify",
        };
        self.hashing
            .get_or_create(&WhatLabel { what })
            .observe(took.as_secs_f64());
    }

    /// Set the gauges from the daemon's downloads (`show_downloads`' answer) and its count of
    /// incoming peer connections.
    pub fn set_gauges(&self, downloads: &Response, incoming: usize) {
        let mut by_state = [0i64; STATES.len()];
        let mut outgoing = 0i64;
        if let Response::Downloads(list) = downloads {
            for d in list {
                if let Some(i) = STATES.iter().position(|(s, _)| *s == d.state) {
                    by_state[i] += 1;
                }
                if d.state == DownloadState::Downloading {
                    outgoing += d.peers.iter().filter(|p| p.connected).count() as i64;
                }
            }
        }
        for ((_, state), n) in STATES.iter().zip(by_state) {
            self.downloads.get_or_create(&StateLabel { state }).set(n);
        }
        self.peers
            .get_or_create(&DirectionLabel {
                direction: "outgoing",
            })
            .set(outgoing);
        self.peers
            .get_or_create(&DirectionLabel {
                direction: "incoming",
            })
            .set(incoming as i64);
    }

    pub fn encode(&self) -> String {
        minitorr_metrics::encode(&self.registry)
    }
}

/// Render function for the metrics listener: the daemon's gauges, then the text.
pub fn render(daemon: Arc<crate::daemon::Daemon>) -> minitorr_metrics::Render {
    use futures::FutureExt;
    Arc::new(move || {
        let daemon = daemon.clone();
        async move {
            daemon.refresh_metrics();
            global().encode()
        }
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::control::DownloadStatus;

    #[test]
    fn counters_and_gauges_use_fixed_labels_only() {
        let m = DaemonMetrics::new();
        m.piece(1000, true);
        m.piece(500, false);
        m.sent(42);
        m.hashed(Hashing::Share, Duration::from_millis(3));
        let status = |state| DownloadStatus {
            group: "secret-group".into(),
            file: "secret-file".into(),
            dest: "/x/secret-file".into(),
            state,
            size: 0,
            sha1: minitorr_proto::types::Sha1Hash([0; 20]),
            bytes_done: 0,
            pieces_done: 0,
            pieces_total: 0,
            speed_bps: 0,
            peers: vec![],
            error: None,
            first_piece_ms: None,
            elapsed_ms: 0,
            avg_bps: 0,
            files_done: 0,
            files_total: 1,
            selection: None,
        };
        let list = Response::Downloads(vec![
            status(DownloadState::Downloading),
            status(DownloadState::Failed),
            status(DownloadState::Failed),
        ]);
        m.set_gauges(&list, 3);
        let text = m.encode();
        for line in [
            "minitorr_daemon_received_bytes_total 1500",
            "minitorr_daemon_sent_bytes_total 42",
            "minitorr_daemon_pieces_verified_total 1",
            "minitorr_daemon_pieces_failed_total 1",
            "minitorr_daemon_downloads{state=\"failed\"} 2",
            "minitorr_daemon_downloads{state=\"paused\"} 0",
            "minitorr_daemon_peers_connected{direction=\"incoming\"} 3",
            "minitorr_daemon_hashing_duration_seconds_count{what=\"share\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("secret"), "{text}");
    }
}
