//! Accounts and sessions: create_user, login, logout, heartbeat.

use std::net::{IpAddr, SocketAddr};

use minitorr_proto::names::{self, MAX_PASSWORD_LEN};
use minitorr_proto::tracker::{ErrorCode, LoginGrant, Response};

use super::{fail, valid, Caller, Fail, Outcome, Service};
use crate::auth;

const WRONG_CREDENTIALS: &str = "wrong user id or password";

fn check_password(password: &str) -> Result<(), Fail> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return fail(
            ErrorCode::BadRequest,
            format!("password must be 1 to {MAX_PASSWORD_LEN} bytes"),
        );
    }
    Ok(())
}

/// The address handed to downloaders: the announced one, with an unspecified IP (0.0.0.0, ::)
/// replaced by the address this connection comes from.
fn effective_peer_addr(announced: &str, source: IpAddr) -> Result<SocketAddr, Fail> {
    let mut addr: SocketAddr = match announced.parse() {
        Ok(a) => a,
        Err(_) => {
            return fail(
                ErrorCode::BadRequest,
                format!("peer address '{announced}' is not IP:PORT"),
            )
        }
    };
    if addr.port() == 0 {
        return fail(
            ErrorCode::BadRequest,
            format!("peer address '{announced}' has no port"),
        );
    }
    if addr.ip().is_unspecified() {
        // A v4 client seen through a dual-stack socket shows up as ::ffff:a.b.c.d.
        addr.set_ip(source.to_canonical());
    }
    Ok(addr)
}

impl Service {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Fail> {
        let _slot = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| Fail::Other(format!("hashing slots closed: {e}")))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Fail::Other(format!("hashing task failed: {e}")))
    }

    pub(super) async fn create_user(&self, user: String, password: String) -> Outcome {
        valid(names::validate_user(&user))?;
        check_password(&password)?;
        let hasher = self.hasher.clone();
        let phc = self
            .blocking(move || hasher.hash(&password))
            .await?
            .map_err(|e| Fail::Other(e.to_string()))?;
        if !self
            .store
            .create_user(&user, &phc, self.now() as i64)
            .await?
        {
            return fail(
                ErrorCode::AlreadyExists,
                format!("user {user} already exists"),
            );
        }
        tracing::info!(user, "user created");
        Ok(Response::ok(format!("user {user} created")))
    }

    pub(super) async fn login(
        &self,
        user: String,
        password: String,
        peer_addr: String,
        device_key: [u8; 32],
        source: IpAddr,
    ) -> Outcome {
        valid(names::validate_user(&user))?;
        check_password(&password)?;
        // Tickets get bound to this key and downloaders pin it: it must be a real Ed25519
        // public key (a weak or invalid point could never authenticate a TLS handshake).
        match ed25519_dalek::VerifyingKey::from_bytes(&device_key) {
            // Canonical encoding only (one key, one byte string), no small-order points.
            Ok(k) if !k.is_weak() && k.to_edwards().compress().to_bytes() == device_key => {}
            _ => {
                return fail(
                    ErrorCode::BadRequest,
                    "device_key is not a valid Ed25519 public key",
                )
            }
        }
        let addr = effective_peer_addr(&peer_addr, source)?;
        let now = self.now();
        if let Err(secs) = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&user, source, now)
        {
            return fail(
                ErrorCode::RateLimited,
                format!("too many failed logins: try again in {secs} s"),
            );
        }
        let stored = self.store.password_hash(&user).await?;
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_phc.clone());
        let hasher = self.hasher.clone();
        let ok = self
            .blocking(move || hasher.verify(&phc, &password))
            .await?
            && known;
        {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            if !ok {
                limiter.record_failure(&user, source, now);
            } else {
                limiter.record_success(&user);
            }
        }
        if !ok {
            tracing::info!(user, %source, "failed login");
            return fail(ErrorCode::AuthFailed, WRONG_CREDENTIALS);
        }
        let token = auth::new_token();
        let peer_addr = addr.to_string();
        let token_hash = auth::token_hash(&token);
        self.store
            .create_session(
                &token_hash,
                &user,
                &peer_addr,
                &device_key,
                now as i64,
                self.expired_before(),
            )
            .await?;
        tracing::info!(user, peer_addr, "logged in");
        Ok(Response::LoggedIn(LoginGrant {
            token,
            user,
            tracker_key: self.key.verifying_key().to_bytes(),
            heartbeat_secs: self.timing.heartbeat_secs,
            peer_addr,
        }))
    }

    pub(super) async fn logout(&self, caller: &Caller) -> Outcome {
        self.store.delete_session(&caller.token_hash).await?;
        tracing::info!(user = caller.session.user, "logged out");
        Ok(Response::ok("logged out"))
    }

    pub(super) async fn heartbeat(&self, caller: &Caller) -> Outcome {
        if !self
            .store
            .touch_session(&caller.token_hash, self.now() as i64)
            .await?
        {
            return fail(
                ErrorCode::InvalidSession,
                "session expired or revoked: log in again",
            );
        }
        Ok(Response::ok(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_peer_ip_is_replaced_by_the_source() {
        let src: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            effective_peer_addr("0.0.0.0:7001", src)
                .unwrap()
                .to_string(),
            "192.0.2.7:7001"
        );
        assert_eq!(
            effective_peer_addr("[::]:7001", src).unwrap().to_string(),
            "192.0.2.7:7001"
        );
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            effective_peer_addr("0.0.0.0:1", mapped)
                .unwrap()
                .to_string(),
            "192.0.2.9:1"
        );
        assert_eq!(
            effective_peer_addr("10.1.1.1:7001", src)
                .unwrap()
                .to_string(),
            "10.1.1.1:7001"
        );
        assert!(effective_peer_addr("somewhere", src).is_err());
        assert!(effective_peer_addr("10.1.1.1:0", src).is_err());
    }
}
