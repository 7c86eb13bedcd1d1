use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use minitorrd::config::{config_path, Args, Config};
use minitorrd::control::{bind_control_socket, serve_control};
use minitorrd::daemon::Daemon;
use minitorrd::peerlink::{check_plaintext_allowed, DeviceKey, PeerLinkMode, PeerTls};
use minitorrd::ratelimit::RateLimiter;
use minitorrd::sharing::{serve_peers_with_relay, PeerServer};
use minitorrd::state::StateFile;

type LogHandle = reload::Handle<EnvFilter, Registry>;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        return match write_man_page(dir) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("minitorrd: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minitorrd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", cfg.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let (filter, log_handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // No colour codes in journald or log files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    if let Some(w) = cfg.tracker_link_warning() {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(cfg, config_path(&args), log_handle)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minitorrd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `DIR/minitorrd.1` from the clap definition (hidden options are left out).
fn write_man_page(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let path = dir.join("minitorrd.1");
    let mut out = Vec::new();
    clap_mangen::Man::new(Args::command()).render(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

async fn run(cfg: Config, config_file: Option<PathBuf>, log: LogHandle) -> anyhow::Result<()> {
    // The state dir records what we share and where downloads go: ours alone, 0700 (created
    // so if missing; another user's directory or one open to others is refused).
    minitorr_proto::private_dir::ensure_private_dir(&cfg.state_dir)
        .with_context(|| format!("unsafe state dir {}", cfg.state_dir.display()))?;
    // Before anything reads or writes in it: one daemon per state dir (held until exit).
    let _lock = minitorrd::statelock::StateLock::acquire(&cfg.state_dir)?;
    let state = StateFile::load(&cfg.state_file()).context("cannot load saved state")?;
    let device_key = DeviceKey::load_or_create(&cfg.state_dir)?;
    let link = if cfg.insecure_plaintext_peer_links_for_benchmarks {
        check_plaintext_allowed(cfg.listen).map_err(anyhow::Error::msg)?;
        tracing::warn!(
            "insecure_plaintext_peer_links_for_benchmarks: peer links are NOT encrypted or \
             authenticated (loopback benchmarks only)"
        );
        PeerLinkMode::InsecurePlaintext
    } else {
        let tls = PeerTls::new(&device_key).context("cannot set up TLS for peer links")?;
        PeerLinkMode::Tls(Arc::new(tls))
    };
    // Shareable port (SO_REUSEPORT): hole punches connect from it (`minitorrd::punch`).
    let peers = minitorrd::punch::listener(cfg.listen).with_context(|| {
        format!(
            "cannot serve peers on {} (another minitorrd on this port?)",
            cfg.listen
        )
    })?;
    let peer_addr = peers.local_addr()?;
    // Bound before the control socket and before anything runs, so a taken port fails the start instead of going unnoticed.
    let metrics_listen = cfg.metrics_listen;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(minitorr_metrics::bind(addr).await?),
        None => None,
    };
    let control = bind_control_socket(&cfg.socket).await?;
    let socket_path = cfg.socket.clone();

    let upload_limit = Arc::new(RateLimiter::new(cfg.max_upload_rate));
    let max_incoming = cfg.max_incoming_peers;
    let port_mapping = (
        cfg.port_mapping,
        cfg.port_mapping_lease_secs,
        cfg.trackers.first().copied(),
    );
    let daemon = Daemon::new(cfg, peer_addr, state, device_key, link.clone());
    let shutdown = CancellationToken::new();
    // In the background: neither startup nor login waits for the router.
    daemon.set_port_mapper(minitorrd::portmap::PortMapper::start(
        peer_addr,
        port_mapping.2,
        port_mapping.0,
        port_mapping.1,
        shutdown.clone(),
    ));
    let server = Arc::new(PeerServer {
        shares: daemon.shares(),
        ticket_keys: daemon.ticket_keys(),
        pool: daemon.pool(),
        upload_limit: upload_limit.clone(),
        max_incoming,
        live: daemon.live(),
        punch: daemon.punch_hub(),
        link,
    });
    let relayed = daemon.take_relay_inbox();
    tokio::spawn(serve_peers_with_relay(
        peers,
        relayed,
        server,
        shutdown.clone(),
    ));
    tokio::spawn(serve_control(control, daemon.clone(), shutdown.clone()));
    if let Some(addr) = metrics_listen {
        if let Some(w) = minitorr_metrics::exposure_warning(addr) {
            tracing::warn!("{w}");
        }
        tracing::info!(
            "metrics on http://{}/metrics",
            metrics_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .unwrap_or(addr)
        );
    }
    if let Some(listener) = metrics_listener {
        tokio::spawn(minitorr_metrics::serve(
            listener,
            minitorrd::metrics::render(daemon.clone()),
            minitorr_metrics::Limits::default(),
            shutdown.clone(),
        ));
    }
    // Log the remembered user back in with the device key (no password), in the background.
    daemon.start_auto_login();
    tracing::info!(peers = %peer_addr, control = %socket_path.display(), "minitorrd ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&config_file, &log, &upload_limit, &daemon),
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// SIGHUP: re-read the config file and apply what can change live — log_level (unless RUST_LOG
/// is set) and the rate limits. Addresses, paths and trackers need a restart.
fn reload(path: &Option<PathBuf>, log: &LogHandle, upload: &RateLimiter, daemon: &Daemon) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no config file in use; nothing to reload");
        return;
    };
    let cfg = match Config::read(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded");
            return;
        }
    };
    if std::env::var_os("RUST_LOG").is_none() {
        match EnvFilter::try_new(&cfg.log_level) {
            Ok(f) => {
                let _ = log.reload(f);
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: invalid log_level"),
        }
    }
    upload.set_rate(cfg.max_upload_rate);
    daemon.live().set_limits(cfg.live_limits());
    daemon.set_download_rate(cfg.max_download_rate);
    tracing::info!(log_level = %cfg.log_level, max_upload_rate = cfg.max_upload_rate, max_download_rate = cfg.max_download_rate, "SIGHUP: configuration reloaded");
}
