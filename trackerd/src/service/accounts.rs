//! Accounts and sessions: create_user, login, logout, heartbeat.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minitorr_proto::names::{self, MAX_PASSWORD_LEN};
use minitorr_proto::tracker::{ErrorCode, LoginGrant, Response};

use super::{fail, valid, Caller, Fail, Outcome, Service};
use crate::auth::{self, RateLimiter, Refusal};

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

/// The address handed to downloaders. By default only the announced *port* is used, with the
/// IP this connection comes from: otherwise any member could make the tracker hand out an
/// arbitrary `host:port` as a seeder of their files, and turn every downloader into a
/// connection flood aimed at it. When the operator trusts announced addresses (daemons behind
/// a NAT or a proxy the tracker cannot see through), the announced one is used, with an
/// unspecified IP (0.0.0.0, ::) still replaced by the source.
pub(super) fn effective_peer_addr(
    announced: &str,
    source: IpAddr,
    trust_announced: bool,
) -> Result<SocketAddr, Fail> {
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
    if !trust_announced || addr.ip().is_unspecified() {
        // A v4 client seen through a dual-stack socket shows up as ::ffff:a.b.c.d.
        addr.set_ip(source.to_canonical());
    }
    Ok(addr)
}

/// How long a login waits for its user name or address to have room (attempts in flight at
/// the limit, none blocked) before it is refused. Generous: a burst of legitimate logins from
/// one address (a NAT, an office starting up) queues here at hashing speed (one hash per core
/// runs at a time anyway), and should not be refused for it.
const LOGIN_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// An admitted login attempt. Dropped without [`LoginAttempt::succeeded`] — a wrong password,
/// a database error, or the request's task cancelled half-way — it is reported as failed, so no
/// path can test a password without it counting.
pub(super) struct LoginAttempt {
    limiter: Arc<Mutex<RateLimiter>>,
    done: Arc<tokio::sync::Notify>,
    clock: super::Clock,
    attempt: Option<auth::Attempt>,
}

impl LoginAttempt {
    /// The password was right.
    pub(super) fn succeeded(mut self) {
        if let Some(a) = self.attempt.take() {
            self.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .succeeded(a);
        }
    }

    /// No password was tested (the user lookup failed): the attempt counts for nothing.
    pub(super) fn abandon(mut self) {
        if let Some(a) = self.attempt.take() {
            self.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abandoned(a);
        }
    }
}

impl Drop for LoginAttempt {
    fn drop(&mut self) {
        if let Some(a) = self.attempt.take() {
            let now = (self.clock)();
            self.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(a, now);
        }
        self.done.notify_waiters();
    }
}

impl Service {
    /// Admit a login attempt for `user` from `source`, waiting (up to [`LOGIN_QUEUE_WAIT`])
    /// while the limiter says attempts in flight fill the allowance; refused when blocked.
    pub(super) async fn admit_login(
        &self,
        user: &str,
        source: IpAddr,
    ) -> Result<LoginAttempt, Fail> {
        let deadline = tokio::time::Instant::now() + LOGIN_QUEUE_WAIT;
        loop {
            // Registered before looking, so an attempt finishing in between is not missed.
            let finished = self.login_done.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let admitted = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reserve(user, source, self.now());
            match admitted {
                Ok(attempt) => {
                    return Ok(LoginAttempt {
                        limiter: self.limiter.clone(),
                        done: self.login_done.clone(),
                        clock: self.clock.clone(),
                        attempt: Some(attempt),
                    })
                }
                Err(Refusal::Blocked(secs)) => {
                    return fail(
                        ErrorCode::RateLimited,
                        format!("too many failed logins: try again in {secs} s"),
                    )
                }
                Err(Refusal::Busy) => {}
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return fail(
                    ErrorCode::RateLimited,
                    "too many logins in progress for this user or address: try again later",
                );
            }
        }
    }

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
        // Canonical encoding only (one key, one byte string), no small-order points.
        super::devices::check_device_key(&device_key)?;
        let addr = effective_peer_addr(&peer_addr, source, self.policy.trust_announced_peer_addr)?;
        // Admit the attempt before looking anything up or waiting for a hashing slot: it counts
        // as a failure until the password proved right, so parallel logins cannot all slip
        // past the limit before the first failure is recorded.
        let attempt = self.admit_login(&user, source).await?;
        let stored = match self.store.password_hash(&user).await {
            Ok(s) => s,
            Err(e) => {
                // No password was tested: a database outage must not lock users out.
                attempt.abandon();
                return Err(e.into());
            }
        };
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_phc.clone());
        let hasher = self.hasher.clone();
        let checks = self.password_checks.clone();
        let ok = self
            .blocking(move || {
                checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                hasher.verify(&phc, &password)
            })
            .await?
            && known;
        if !ok {
            // Dropping `attempt` reports it as failed.
            tracing::info!(user, %source, "failed login");
            return fail(ErrorCode::AuthFailed, WRONG_CREDENTIALS);
        }
        attempt.succeeded();
        tracing::info!(user, "password login");
        self.open_session(user, device_key, addr, None).await
    }

    /// A new session for `user` on `device_key` after a successful (password or device) login:
    /// replaces the device's other sessions, registers the device (`name`: see
    /// `Store::register_device`) and answers the grant.
    pub(super) async fn open_session(
        &self,
        user: String,
        device_key: [u8; 32],
        addr: SocketAddr,
        name: Option<&str>,
    ) -> Outcome {
        let now = self.now();
        let token = auth::new_token();
        let peer_addr = addr.to_string();
        let token_hash = auth::token_hash(&token);
        let replaced = self
            .store
            .create_session(
                &token_hash,
                &user,
                &peer_addr,
                &device_key,
                now as i64,
                self.expired_before(),
            )
            .await?;
        if replaced > 0 {
            // Their event streams end now, as after a logout.
            self.sessions_ended();
        }
        // The login may have written HolderGone events (a replaced session's old address,
        // sessions that expired): subscribers hear of them now, not at the next poll.
        self.events_committed().await;
        self.store
            .register_device(&user, &device_key, name, &peer_addr, now as i64)
            .await?;
        let tracker_keys = self.ticket_keys().await?;
        tracing::info!(user, peer_addr, replaced, "logged in");
        Ok(Response::LoggedIn(LoginGrant {
            token,
            user,
            tracker_keys,
            heartbeat_secs: self.timing.heartbeat_secs,
            peer_addr,
            relay: self.policy.relay_addr.map(|a| a.to_string()),
        }))
    }

    /// Drop the sessions that expired (no heartbeat for `session_ttl_secs`, by the injected
    /// clock) and tell their groups the holders are gone (`HolderGone`), as a logout would.
    /// Returns how many expired. Run periodically by [`Service::sweep_sessions`].
    pub async fn expire_sessions(&self) -> Result<u64, crate::store::StoreError> {
        let n = self.store.expire_sessions(self.expired_before()).await?;
        if n > 0 {
            tracing::info!(expired = n, "sessions expired; holders gone");
            self.sessions_ended();
            self.events_committed().await;
        }
        Ok(n)
    }

    /// Every `every`, [`Service::expire_sessions`] (logged on failure, never ends).
    pub async fn sweep_sessions(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.expire_sessions().await {
                tracing::warn!(error = %e, "cannot expire sessions");
            }
        }
    }

    pub(super) async fn logout(&self, caller: &Caller) -> Outcome {
        self.store.end_session(&caller.token_hash).await?;
        self.sessions_ended();
        tracing::info!(user = caller.session.user, "logged out");
        Ok(Response::ok("logged out"))
    }

    pub(super) async fn heartbeat(&self, caller: &Caller) -> Outcome {
        if !self
            .store
            .touch_session(&caller.token_hash, self.now() as i64)
            .await?
        {
            return fail(ErrorCode::InvalidSession, "session expired or revoked");
        }
        Ok(Response::ok(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observed_ip_is_used_unless_announced_ones_are_trusted() {
        let src: IpAddr = "192.0.2.7".parse().unwrap();
        let eff = |a: &str, src: IpAddr, trust: bool| {
            effective_peer_addr(a, src, trust).map(|a| a.to_string())
        };
        for trust in [false, true] {
            assert_eq!(eff("0.0.0.0:7001", src, trust).unwrap(), "192.0.2.7:7001");
            assert_eq!(eff("[::]:7001", src, trust).unwrap(), "192.0.2.7:7001");
            let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
            assert_eq!(eff("0.0.0.0:1", mapped, trust).unwrap(), "192.0.2.9:1");
            assert!(eff("somewhere", src, trust).is_err());
            assert!(eff("10.1.1.1:0", src, trust).is_err());
        }
        // Default: the announced IP is ignored, its port kept.
        assert_eq!(eff("10.1.1.1:7001", src, false).unwrap(), "192.0.2.7:7001");
        assert_eq!(eff("[2001:db8::1]:9", src, false).unwrap(), "192.0.2.7:9");
        // Trusted: believed as announced.
        assert_eq!(eff("10.1.1.1:7001", src, true).unwrap(), "10.1.1.1:7001");
    }
}
