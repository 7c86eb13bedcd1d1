/// The logged-in user's session, as granted by the tracker.
#[derive(Clone)]
pub struct Session {
    pub user: String,
    pub token: String,
    pub heartbeat_secs: u32,
    /// Our peer address as the tracker hands it out (used to skip ourselves in peer lists).
    pub peer_addr: String,
    /// The tracker's relay (resolved), if it offers one.
    pub relay: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the token.
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}
