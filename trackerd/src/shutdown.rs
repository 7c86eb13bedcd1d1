//! Signals and systemd notifications.
//!
//! SIGTERM/SIGINT start a graceful shutdown (a second one exits at once); SIGHUP calls the
//! reload hook. systemd is told `READY=1` once the tracker can serve and `STOPPING=1` when it
//! starts shutting down; without `$NOTIFY_SOCKET` these are no-ops.

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd (READY=1): {e}");
    }
}

pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        tracing::warn!("cannot notify systemd (STOPPING=1): {e}");
    }
}

/// Install the handlers (must run inside the runtime). `shutdown` is cancelled on the first
/// SIGTERM/SIGINT; `on_reload` runs on every SIGHUP.
pub fn install(
    shutdown: CancellationToken,
    on_reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    on_reload();
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                tracing::warn!("second stop signal: exiting immediately");
                std::process::exit(1);
            }
            tracing::info!("stop signal received; shutting down");
            notify_stopping();
            shutdown.cancel();
        }
    });
    Ok(())
}
