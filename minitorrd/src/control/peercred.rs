//! Who may control this daemon: the user it runs as, and root. Checked per connection with
//! SO_PEERCRED (the kernel's word, not the client's).

/// `Ok` if a client with `peer_uid` may control a daemon running as `own_uid`.
pub fn authorize(peer_uid: u32, own_uid: u32) -> Result<(), String> {
    if peer_uid == own_uid || peer_uid == 0 {
        Ok(())
    } else {
        Err(format!(
            "uid {peer_uid} may not control the minitorrd of uid {own_uid}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_and_root_only() {
        assert!(authorize(1000, 1000).is_ok());
        assert!(authorize(0, 1000).is_ok());
        assert!(authorize(1001, 1000).is_err());
        assert!(authorize(1000, 0).is_err());
    }
}
