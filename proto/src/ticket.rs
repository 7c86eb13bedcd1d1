//! Download tickets: proof, issued by the tracker, that a user may fetch one file of one group.
//!
//! The tracker signs `TicketClaims` with its Ed25519 key; seeders verify offline with the
//! tracker's public key (learned at login). So a seeder never has to ask the tracker whether a
//! requester is a group member, and a ticket for one file opens no other file.
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
}

fn signed_bytes(claims: &TicketClaims) -> Vec<u8> {
    let mut v = CONTEXT.to_vec();
    v.extend(postcard::to_stdvec(claims).expect("claims always serialize"));
    v
}

impl Ticket {
    pub fn sign(claims: TicketClaims, key: &SigningKey) -> Ticket {
        let signature = key.sign(&signed_bytes(&claims)).to_bytes().to_vec();
        Ticket { claims, signature }
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
}
