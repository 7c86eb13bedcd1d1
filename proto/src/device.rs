//! Device login: what a daemon signs with its device key to log in without a password.
//!
//! The message is domain-separated (a context string no other signature of ours starts with,
//! so a device signature can never be replayed as a peer-link TLS signature or a ticket, nor
//! the other way round) and binds everything the tracker checks: the single-use nonce it
//! issued, the user, the tracker's identity (the id shared by every tracker of one database,
//! so a signature made for one deployment opens nothing at another) and the device key itself.

/// Context of a device-login signature; a new version gets a new string.
pub const LOGIN_CONTEXT: &[u8] = b"minitorr-device-login-v1";

/// Signature length (Ed25519).
pub const SIGNATURE_LEN: usize = 64;

/// The bytes a device signs: context, NUL, nonce, tracker id, device key, then the user name
/// prefixed by its length (so no two (user, …) tuples share an encoding).
pub fn login_message(
    nonce: &[u8; 32],
    user: &str,
    tracker_id: &[u8; 32],
    device_key: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(LOGIN_CONTEXT.len() + 1 + 96 + 4 + user.len());
    m.extend_from_slice(LOGIN_CONTEXT);
    m.push(0);
    m.extend_from_slice(nonce);
    m.extend_from_slice(tracker_id);
    m.extend_from_slice(device_key);
    m.extend_from_slice(&(user.len() as u32).to_be_bytes());
    m.extend_from_slice(user.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_message() {
        let base = login_message(&[1; 32], "alice", &[2; 32], &[3; 32]);
        assert!(base.starts_with(b"minitorr-device-login-v1\0"));
        for other in [
            login_message(&[9; 32], "alice", &[2; 32], &[3; 32]),
            login_message(&[1; 32], "alicf", &[2; 32], &[3; 32]),
            login_message(&[1; 32], "alice", &[9; 32], &[3; 32]),
            login_message(&[1; 32], "alice", &[2; 32], &[9; 32]),
        ] {
            assert_ne!(base, other);
        }
    }
}
