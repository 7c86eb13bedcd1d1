use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use minitorrd::config::{Args, Config};
use minitorrd::control::{bind_control_socket, serve_control};
use minitorrd::daemon::Daemon;
use minitorrd::ratelimit::RateLimiter;
use minitorrd::sharing::{serve_peers, PeerServer};
use minitorrd::state::StateFile;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minitorrd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .with_context(|| format!("cannot create state dir {}", cfg.state_dir.display()))?;
    let state = StateFile::load(&cfg.state_file()).context("cannot load saved state")?;
    let peers = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot serve peers on {} (another minitorrd on this port?)", cfg.listen))?;
    let peer_addr = peers.local_addr()?;
    let control = bind_control_socket(&cfg.socket).await?;
    let socket_path = cfg.socket.clone();

    let upload_limit = Arc::new(RateLimiter::new(cfg.max_upload_rate));
    let max_incoming = cfg.max_incoming_peers;
    let daemon = Daemon::new(cfg, peer_addr, state);
    let shutdown = CancellationToken::new();
    let server = Arc::new(PeerServer {
        shares: daemon.shares(),
        tracker_key: daemon.tracker_key(),
        pool: daemon.pool(),
        upload_limit,
        max_incoming,
    });
    tokio::spawn(serve_peers(peers, server, shutdown.clone()));
    tokio::spawn(serve_control(control, daemon.clone(), shutdown.clone()));
    tracing::info!(peers = %peer_addr, control = %socket_path.display(), "minitorrd ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
