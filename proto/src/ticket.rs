//! Download tickets: proof, issued by the tracker, that a user may fetch one file of one group.
//!
//! The tracker signs `TicketClaims` with its Ed25519 key; seeders verify offline with the
//! tracker's public keys (a list, learned at login and refreshed while logged in). So a seeder
//! never has to ask the tracker whether a requester is a group member, and a ticket for one
//! file opens no other file.
//!
//! There is more than one valid key at a time: every tracker of a shared database signs with
//! its own key, and `trackerd rotate-key` keeps the old key valid for an overlap. A ticket
//! names the public key that signed it ([`Ticket::key`]) so a seeder knows which key to check,
//! and can tell "a key I have not heard of yet" (refresh the list) from "a bad signature".
//!
//! A ticket is bound to the downloader's device key (`device_key`): the seeder admits it only
//! on a TLS connection whose client proved possession of that key, so a sniffed or copied
//! ticket is worthless to anyone else.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::Sha1Hash;

/// Domain separation: a signature over claims can never be replayed as anything else.
const CONTEXT: &[u8] = b"minitorr-ticket-v2\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TicketClaims {
    pub user: String,
    pub group: String,
    pub file_name: String,
    pub file_sha1: Sha1Hash,
    /// Unix seconds (tracker clock) when the ticket was signed: a seeder that learnt the user
    /// was revoked at time T refuses tickets issued at or before T (see `tracker::Event`).
    pub issued_unix: u64,
    /// Unix seconds after which the ticket is refused.
    pub expires_unix: u64,
    /// Ed25519 public key of the downloading daemon (its device key, recorded by the tracker
    /// at login). Only a peer-link client authenticated with this key may use the ticket.
    pub device_key: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Ticket {
    pub claims: TicketClaims,
    /// The Ed25519 public key that signed this ticket (its key id). Not trusted by itself: a
    /// seeder only verifies with keys it got from the tracker.
    pub key: [u8; 32],
    /// Ed25519 signature (64 bytes) over `CONTEXT || postcard(claims)`.
    pub signature: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("ticket signature is invalid")]
    BadSignature,
    #[error("ticket expired")]
    Expired,
    #[error("ticket is for a different file")]
    WrongFile,
    #[error("ticket is signed by a key this peer does not know")]
    UnknownKey,
    #[error("ticket is signed by a retired tracker key")]
    RetiredKey,
}

/// A public key tickets are signed with, as the tracker publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TicketKey {
    /// Ed25519 public key.
    pub public: [u8; 32],
    /// Unix seconds after which tickets signed with this key are refused (`None`: no
    /// retirement scheduled yet).
    pub valid_until: Option<u64>,
}

impl TicketKey {
    pub fn is_valid_at(&self, now_unix: u64) -> bool {
        match self.valid_until {
            None => true,
            Some(t) => now_unix <= t,
        }
    }
}

/// Most keys a peer keeps (a few trackers, each with one key plus one being retired): a tracker
/// answer longer than this is cut, so a hostile tracker cannot make verification slow.
pub const MAX_TICKET_KEYS: usize = 64;

fn signed_bytes(claims: &TicketClaims) -> Vec<u8> {
    let mut v = CONTEXT.to_vec();
    v.extend(postcard::to_stdvec(claims).expect("claims always serialize"));
    v
}

impl Ticket {
    pub fn sign(claims: TicketClaims, key: &SigningKey) -> Ticket {
        let signature = key.sign(&signed_bytes(&claims)).to_bytes().to_vec();
        Ticket {
            claims,
            key: key.verifying_key().to_bytes(),
            signature,
        }
    }

    /// Verify with whichever of `keys` signed this ticket: the key must be listed and not
    /// retired at `now_unix`, then signature and expiry are checked as in [`Ticket::verify`].
    pub fn verify_with(
        &self,
        keys: &[TicketKey],
        now_unix: u64,
    ) -> Result<&TicketClaims, TicketError> {
        let known = keys
            .iter()
            .find(|k| k.public == self.key)
            .ok_or(TicketError::UnknownKey)?;
        if !known.is_valid_at(now_unix) {
            return Err(TicketError::RetiredKey);
        }
        let key = VerifyingKey::from_bytes(&known.public).map_err(|_| TicketError::BadSignature)?;
        self.verify(&key, now_unix)
    }

    /// Check signature and expiry; returns the claims if the ticket is good at `now_unix`.
    pub fn verify(&self, key: &VerifyingKey, now_unix: u64) -> Result<&TicketClaims, TicketError> {
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| TicketError::BadSignature)?;
        key.verify(&signed_bytes(&self.claims), &Signature::from_bytes(&sig))
            .map_err(|_| TicketError::BadSignature)?;
        if now_unix > self.claims.expires_unix {
            return Err(TicketError::Expired);
        }
        Ok(&self.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TicketClaims {
        TicketClaims {
            user: "bob".into(),
            group: "g1".into(),
            file_name: "a.iso".into(),
            file_sha1: Sha1Hash([7; 20]),
            issued_unix: 900,
            expires_unix: 1000,
            device_key: [9; 32],
        }
    }

    #[test]
    fn valid_ticket_verifies() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let t = Ticket::sign(claims(), &key);
        assert_eq!(t.verify(&key.verifying_key(), 999).unwrap().user, "bob");
    }

    #[test]
    fn forged_expired_and_foreign_tickets_fail() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        let mut t = Ticket::sign(claims(), &key);
        assert_eq!(
            t.verify(&key.verifying_key(), 1001),
            Err(TicketError::Expired)
        );
        assert_eq!(
            t.verify(&other.verifying_key(), 0),
            Err(TicketError::BadSignature)
        );
        let mut rebound = t.clone();
        rebound.claims.device_key = [1; 32];
        assert_eq!(
            rebound.verify(&key.verifying_key(), 0),
            Err(TicketError::BadSignature),
            "the device key is covered by the signature"
        );
        t.claims.group = "g2".into();
        assert_eq!(
            t.verify(&key.verifying_key(), 0),
            Err(TicketError::BadSignature)
        );
        t.signature.truncate(10);
        assert_eq!(
            t.verify(&key.verifying_key(), 0),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn verify_with_a_key_list() {
        let old = SigningKey::generate(&mut rand::rngs::OsRng);
        let new = SigningKey::generate(&mut rand::rngs::OsRng);
        let keys = [
            TicketKey {
                public: old.verifying_key().to_bytes(),
                valid_until: Some(500),
            },
            TicketKey {
                public: new.verifying_key().to_bytes(),
                valid_until: None,
            },
        ];
        let t_old = Ticket::sign(claims(), &old);
        let t_new = Ticket::sign(claims(), &new);
        assert!(t_old.verify_with(&keys, 500).is_ok());
        assert_eq!(t_old.verify_with(&keys, 501), Err(TicketError::RetiredKey));
        assert!(t_new.verify_with(&keys, 999).is_ok());
        assert_eq!(
            t_new.verify_with(&keys[..1], 0),
            Err(TicketError::UnknownKey)
        );
        // Claiming a listed key does not help a ticket signed by another one.
        let foreign = SigningKey::generate(&mut rand::rngs::OsRng);
        let mut forged = Ticket::sign(claims(), &foreign);
        forged.key = new.verifying_key().to_bytes();
        assert_eq!(forged.verify_with(&keys, 0), Err(TicketError::BadSignature));
        let mut t = t_new;
        t.signature.truncate(10);
        assert_eq!(t.verify_with(&keys, 0), Err(TicketError::BadSignature));
    }
}
