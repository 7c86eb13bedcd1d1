//! minitorrd: the Minitorr peer daemon, as a library so that its logic is testable without
//! sockets. The binary (`main.rs`) only wires configuration, logging, sockets and signals.

pub mod blocking;
pub mod config;
pub mod control;
pub mod daemon;
pub mod download;
pub mod events;
pub mod metrics;
pub mod peerlink;
pub mod portmap;
pub mod punch;
pub mod rate_units;
pub mod ratelimit;
pub mod sharing;
pub mod state;
pub mod statelock;
pub mod storage;
pub mod tracker;
