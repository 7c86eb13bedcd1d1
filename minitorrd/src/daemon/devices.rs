//! Restart without a human: the automatic login with the device key, and the user's devices.
//!
//! After a password login the state file says "user X logged in on this device" (never a
//! password). A (re)started daemon, or one whose session the tracker ended (replaced, expired),
//! asks the tracker for a single-use nonce, signs it with its device key
//! (`proto::device::login_message`) and gets the same grant a password login gives; then
//! resharing and resuming run as after a password login. A refusal (device revoked, logged
//! out, unknown) ends the automatic login for good — recorded with the reason for `status` —
//! while an unreachable tracker is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use minitorr_proto::control::Response;
use minitorr_proto::tracker::{self, Call, ErrorCode, LoginGrant};

use super::{unexpected, Daemon, Reply};

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a device login did not happen.
enum DeviceLoginError {
    /// The tracker said no for good (revoked, logged out, not registered, bad signature).
    Refused(String),
    /// Try again later (tracker unreachable, rate limited, nonce lost in a failover).
    Transient(String),
}

fn classify(code: ErrorCode, message: String) -> DeviceLoginError {
    match code {
        // A nonce that another tracker issued (failover between the two calls) or that
        // expired: just ask again.
        ErrorCode::AuthFailed if message.contains("nonce") => DeviceLoginError::Transient(message),
        ErrorCode::AuthFailed | ErrorCode::BadRequest | ErrorCode::NotFound => {
            DeviceLoginError::Refused(message)
        }
        _ => DeviceLoginError::Transient(message),
    }
}

impl Daemon {
    /// Remember (or forget) the automatic login in the state file; `ended`: why it ended.
    pub(super) async fn remember_auto_login(&self, user: Option<String>, ended: Option<String>) {
        let mut state = self.state.lock().await;
        if let Some(why) = &ended {
            *self.auto_login.lock().expect("lock") = format!("off: {why}");
        }
        state.auto_login = user;
        state.auto_login_ended = ended;
        self.save_state(&state).await;
    }

    /// At startup: log the remembered user back in by ourselves (in the background).
    pub fn start_auto_login(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let (user, ended) = {
                let state = me.state.lock().await;
                (state.auto_login.clone(), state.auto_login_ended.clone())
            };
            match (user, ended) {
                (Some(user), _) => me.auto_login_loop(user).await,
                (None, Some(why)) => *me.auto_login.lock().expect("lock") = format!("off: {why}"),
                (None, None) => {}
            }
        });
    }

    /// Device-login `user` until it works, is refused, or someone logged in by hand.
    async fn auto_login_loop(self: Arc<Self>, user: String) {
        let mut backoff = RETRY_MIN;
        loop {
            {
                let _guard = self.login_lock.lock().await;
                if self.session.read().expect("lock").is_some() {
                    return;
                }
                if self.state.lock().await.auto_login.as_deref() != Some(user.as_str()) {
                    return; // logged out meanwhile
                }
                match self.device_login(&user).await {
                    Ok(grant) => {
                        self.auto_session
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        let report = self.begin_session(grant).await;
                        tracing::info!(
                            %user,
                            reshared = report.reshared.len(),
                            resumed = report.resumed_downloads.len(),
                            problems = ?report.problems,
                            "logged in by ourselves with the device key"
                        );
                        return;
                    }
                    Err(DeviceLoginError::Refused(why)) => {
                        tracing::warn!(%user, %why, "automatic login refused; log in with the password");
                        self.remember_auto_login(
                            None,
                            Some(format!("login of {user} refused: {why}")),
                        )
                        .await;
                        return;
                    }
                    Err(DeviceLoginError::Transient(why)) => {
                        tracing::info!(%user, %why, retry_in = ?backoff, "automatic login failed; retrying");
                        *self.auto_login.lock().expect("lock") =
                            format!("logging in as {user} (retrying: {why})");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// One challenge–signature round with the tracker.
    async fn device_login(&self, user: &str) -> Result<LoginGrant, DeviceLoginError> {
        let key = self.device_key.public_bytes();
        let transient =
            |e: crate::tracker::TrackerError| DeviceLoginError::Transient(e.to_string());
        let challenge = Call::DeviceChallenge {
            user: user.to_string(),
            device_key: key,
        };
        let (nonce, tracker_id) = match self
            .tracker
            .call(None, challenge)
            .await
            .map_err(transient)?
        {
            tracker::Response::DeviceChallenge {
                nonce, tracker_id, ..
            } => (nonce, tracker_id),
            tracker::Response::Error { code, message } => return Err(classify(code, message)),
            other => {
                return Err(DeviceLoginError::Transient(format!(
                    "unexpected answer: {other:?}"
                )))
            }
        };
        let msg = minitorr_proto::device::login_message(&nonce, user, &tracker_id, &key);
        let login = Call::DeviceLogin {
            user: user.to_string(),
            device_key: key,
            peer_addr: self.announced_peer_addr(),
            nonce,
            signature: self.device_key.sign(&msg).to_vec(),
            device_name: self.cfg.device_name.clone(),
        };
        match self.tracker.call(None, login).await.map_err(transient)? {
            tracker::Response::LoggedIn(g) => Ok(g),
            tracker::Response::Error { code, message } => Err(classify(code, message)),
            other => Err(DeviceLoginError::Transient(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// The tracker ended the session `token` (heartbeat refused): stop, then log in again by
    /// ourselves if the automatic login is on (it says why if it is refused).
    pub(super) fn session_lost(self: &Arc<Self>, token: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let user = {
                let _guard = me.login_lock.lock().await;
                let current = me
                    .session
                    .read()
                    .expect("lock")
                    .as_ref()
                    .map(|s| s.token.clone());
                if current.as_deref() != Some(token.as_str()) {
                    return;
                }
                me.stop_activity();
                *me.session.write().expect("lock") = None;
                *me.auto_login.lock().expect("lock") = "off: the tracker ended the session".into();
                me.state.lock().await.auto_login.clone()
            };
            if let Some(user) = user {
                me.auto_login_loop(user).await;
            }
        });
    }

    pub(super) async fn devices(&self) -> Reply<Response> {
        match self.call(Call::ListDevices).await? {
            tracker::Response::Devices(list) => Ok(Response::Devices(list)),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn revoke_device(self: &Arc<Self>, name: String) -> Reply<Response> {
        let own = match self.call(Call::ListDevices).await? {
            tracker::Response::Devices(list) => list.iter().any(|d| d.name == name && d.current),
            other => return Err(unexpected(other)),
        };
        let message = match self.call(Call::RevokeDevice { name: name.clone() }).await? {
            tracker::Response::Ok { message } => message,
            other => return Err(unexpected(other)),
        };
        if own {
            // Revoking this device is a logout: stop now, and stay logged out after a restart.
            let _guard = self.login_lock.lock().await;
            self.stop_activity();
            *self.session.write().expect("lock") = None;
            self.remember_auto_login(None, Some(format!("this device ({name}) was revoked")))
                .await;
        }
        Ok(Response::Done { message })
    }
}
