//! What this daemon shares, and serving it to other peers.

pub mod fair_share;
pub mod hasher;
pub mod live;
mod registry;
mod server;
pub mod upload_policy;

pub use registry::{ShareKey, SharedFile, Shares};
pub use server::{serve_peers, serve_peers_with_relay, PeerServer};
