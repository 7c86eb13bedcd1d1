//! Devices: automatic login of a restarted daemon with its device key (`DeviceChallenge`,
//! `DeviceLogin`), and the user's control over it (`ListDevices`, `NameDevice`, `RevokeDevice`,
//! `LogoutDevice`).
//!
//! Rules:
//! * A password `Login` registers the daemon's device key for the user (or makes a revoked or
//!   logged-out device active again: someone who knows the password vouched for it).
//! * A device login needs a nonce this tracker issued for the same user and key less than
//!   `NONCE_TTL_SECS` ago, used once, and an Ed25519 signature by that key over
//!   `proto::device::login_message` (context, nonce, this deployment's identity, key, user),
//!   verified strictly. Only then is the device's state looked at (so nobody without the key
//!   learns whether it is revoked). Every attempt goes through the login limiter exactly like
//!   a password attempt: a failed one counts as a failure for the user and the address.
//! * Every login (password or device) replaces the device's other sessions of that user at
//!   once (`Store::create_session`), and wakes their event subscriptions so they end now.
//! * Revoking a device or logging it out ends all its sessions in the same transaction.

use minitorr_proto::device::{login_message, SIGNATURE_LEN};
use minitorr_proto::names;
use minitorr_proto::tracker::{ErrorCode, Response};
use minitorr_proto::types::{DeviceInfo, DeviceState};

use super::{fail, valid, Caller, Outcome, Service};
use crate::auth::NONCE_TTL_SECS;

/// Refuse anything but a canonical, non-weak Ed25519 public key (see `Login`).
pub(super) fn check_device_key(device_key: &[u8; 32]) -> Result<(), super::Fail> {
    match ed25519_dalek::VerifyingKey::from_bytes(device_key) {
        Ok(k) if !k.is_weak() && k.to_edwards().compress().to_bytes() == *device_key => Ok(()),
        _ => fail(
            ErrorCode::BadRequest,
            "device_key is not a valid Ed25519 public key",
        ),
    }
}

/// A login request's credentials, checked in [`Service::device_login`].
pub(super) struct DeviceProof {
    pub nonce: [u8; 32],
    pub signature: Vec<u8>,
    pub device_name: String,
}

impl Service {
    pub(super) async fn device_challenge(&self, user: String, device_key: [u8; 32]) -> Outcome {
        valid(names::validate_user(&user))?;
        check_device_key(&device_key)?;
        let nonce = self.nonces.lock().unwrap_or_else(|p| p.into_inner()).issue(
            &user,
            device_key,
            self.now(),
        );
        Ok(Response::DeviceChallenge {
            nonce,
            tracker_id: self.tracker_id,
            expires_in_secs: NONCE_TTL_SECS as u32,
        })
    }

    pub(super) async fn device_login(
        &self,
        user: String,
        device_key: [u8; 32],
        peer_addr: String,
        proof: DeviceProof,
        source: std::net::IpAddr,
    ) -> Outcome {
        valid(names::validate_user(&user))?;
        check_device_key(&device_key)?;
        let addr = super::accounts::effective_peer_addr(
            &peer_addr,
            source,
            self.policy.trust_announced_peer_addr,
        )?;
        // Counted like a password attempt: dropping `attempt` on any refusal below records a
        // failure for this user and address.
        let attempt = self.admit_login(&user, source).await?;
        let taken = self.nonces.lock().unwrap_or_else(|p| p.into_inner()).take(
            &proof.nonce,
            &user,
            &device_key,
            self.now(),
        );
        if let Err(e) = taken {
            tracing::info!(user, %source, error = %e, "failed device login");
            return fail(ErrorCode::AuthFailed, e.to_string());
        }
        let verified = <[u8; SIGNATURE_LEN]>::try_from(proof.signature.as_slice())
            .ok()
            .and_then(|sig| {
                let key = ed25519_dalek::VerifyingKey::from_bytes(&device_key).ok()?;
                let msg = login_message(&proof.nonce, &user, &self.tracker_id, &device_key);
                key.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                    .ok()
            })
            .is_some();
        if !verified {
            tracing::info!(user, %source, "failed device login: bad signature");
            return fail(
                ErrorCode::AuthFailed,
                "device signature does not verify: log in with the password",
            );
        }
        let state = match self.store.device_state(&user, &device_key).await {
            Ok(s) => s,
            Err(e) => {
                attempt.abandon();
                return Err(e.into());
            }
        };
        match state {
            Some(DeviceState::Active) => {}
            None => {
                return fail(
                    ErrorCode::AuthFailed,
                    format!("this device is not registered for {user}: log in with the password"),
                )
            }
            Some(DeviceState::Revoked) => {
                return fail(
                    ErrorCode::AuthFailed,
                    "this device was revoked (revoke_device): log in with the password to use \
                     it again",
                )
            }
            Some(DeviceState::LoggedOut) => {
                return fail(
                    ErrorCode::AuthFailed,
                    "logged out on this device: log in with the password",
                )
            }
        }
        attempt.succeeded();
        tracing::info!(user, device = %proof.device_name, "device login");
        self.open_session(user, device_key, addr, Some(&proof.device_name))
            .await
    }

    pub(super) async fn list_devices(&self, caller: &Caller) -> Outcome {
        let rows = self
            .store
            .list_devices(&caller.session.user, self.online_since())
            .await?;
        Ok(Response::Devices(
            rows.into_iter()
                .map(|r| DeviceInfo {
                    current: r.device_key == caller.session.device_key,
                    name: r.name,
                    device_key: r.device_key,
                    created_unix: r.created.max(0) as u64,
                    last_seen_unix: r.last_seen.max(0) as u64,
                    last_addr: r.last_addr,
                    online: r.online,
                    state: r.state,
                })
                .collect(),
        ))
    }

    pub(super) async fn name_device(&self, caller: &Caller, name: &str) -> Outcome {
        let s = &caller.session;
        let given = self
            .store
            .register_device(
                &s.user,
                &s.device_key,
                Some(name),
                &s.peer_addr,
                self.now() as i64,
            )
            .await?;
        Ok(Response::ok(given))
    }

    pub(super) async fn revoke_device(&self, caller: &Caller, name: &str) -> Outcome {
        let user = &caller.session.user;
        let Some((key, ended)) = self
            .store
            .end_device_by_name(user, name, DeviceState::Revoked)
            .await?
        else {
            return fail(
                ErrorCode::NotFound,
                format!("{user} has no device named {name}; see: minitorrctl devices"),
            );
        };
        self.sessions_ended();
        let own = key == caller.session.device_key;
        tracing::info!(user, device = name, ended, own, "device revoked");
        Ok(Response::ok(if own {
            format!("device {name} (this one) revoked; logged out")
        } else {
            format!("device {name} revoked; {ended} session(s) ended")
        }))
    }

    pub(super) async fn logout_device(&self, caller: &Caller) -> Outcome {
        let s = &caller.session;
        self.store
            .end_device_by_key(&s.user, &s.device_key, DeviceState::LoggedOut)
            .await?;
        self.sessions_ended();
        tracing::info!(user = s.user, "logged out (device)");
        Ok(Response::ok("logged out; automatic login ended"))
    }
}
