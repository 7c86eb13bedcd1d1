//! `trackerd [--config FILE] [--listen ADDR] [--state-dir DIR] [--database-url URL]
//! [--tls-cert PEM --tls-key PEM] [--allow-plaintext] [--print-config]
//! [--print-cert-fingerprint] [TRACKER_INFO [TRACKER_NO]]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use trackerd::auth::PasswordHasher;
use trackerd::config::{self, Config, Overrides};
use trackerd::server::{self, ServerOptions};
use trackerd::service::{self, Service, Timing};
use trackerd::store::{self, Store};

/// Minitorr tracker: accounts, groups, and who shares which file.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// TOML config file (must exist). Default: $TRACKERD_CONFIG, else
    /// $CONFIGURATION_DIRECTORY/trackerd.toml if present.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [env: TRACKERD_LISTEN] [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the database [env: TRACKERD_STATE_DIR].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [env: TRACKERD_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// TLS certificate chain, PEM [env: TRACKERD_TLS_CERT]; needs --tls-key.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [env: TRACKERD_TLS_KEY].
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Serve plain TCP on a non-loopback address (passwords in clear!)
    /// [env: TRACKERD_ALLOW_PLAINTEXT].
    #[arg(long)]
    allow_plaintext: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the SHA-256 fingerprint of the configured TLS certificate (what daemons pin as
    /// tracker_cert_sha256) and exit.
    #[arg(long)]
    print_cert_fingerprint: bool,
    /// Write the man page trackerd.8 into DIR and exit (used by contrib/gen-completions.sh).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
    /// Seed-style tracker list (IP and port lines); the listen address is entry TRACKER_NO.
    tracker_info: Option<PathBuf>,
    /// Which entry of TRACKER_INFO this tracker is (1-based).
    #[arg(default_value = None, requires = "tracker_info")]
    tracker_no: Option<usize>,
}

type ReloadHandle = reload::Handle<EnvFilter, Registry>;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn load_config(cli: &Cli) -> Result<(Config, Option<(PathBuf, bool)>)> {
    let overrides = Overrides {
        config: cli.config.clone(),
        listen: cli.listen,
        state_dir: cli.state_dir.clone(),
        database_url: cli.database_url.clone(),
        tracker_info: cli.tracker_info.clone(),
        tracker_no: cli.tracker_no,
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        allow_plaintext: cli.allow_plaintext,
    };
    let path = config::config_path(&overrides, &env);
    let file = match &path {
        Some((p, required)) => config::load_file(p, *required)?,
        None => None,
    };
    Ok((config::resolve(&overrides, &env, file)?, path))
}

/// Logging to stderr; `RUST_LOG` beats `log_level`. Returns a handle to change the filter.
fn init_logging(log_level: &str) -> Result<ReloadHandle> {
    let spec = env("RUST_LOG").unwrap_or_else(|| log_level.to_string());
    let filter =
        EnvFilter::try_new(&spec).with_context(|| format!("invalid log filter '{spec}'"))?;
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // No colour codes in journald or log files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    Ok(handle)
}

/// SIGHUP: re-read the config file and apply its `log_level` (other keys need a restart).
fn reload_log_level(path: &Option<(PathBuf, bool)>, handle: &ReloadHandle) {
    if env("RUST_LOG").is_some() {
        tracing::info!("SIGHUP: RUST_LOG is set and overrides log_level; nothing to reload");
        return;
    }
    let Some((p, required)) = path else {
        tracing::info!("SIGHUP: no config file in use; nothing to reload");
        return;
    };
    let level = match config::load_file(p, *required) {
        Ok(file) => file
            .and_then(|f| f.log_level)
            .unwrap_or_else(|| config::DEFAULT_LOG_LEVEL.into()),
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the current settings");
            return;
        }
    };
    match EnvFilter::try_new(&level) {
        Ok(f) => match handle.reload(f) {
            Ok(()) => tracing::info!(log_level = level, "SIGHUP: configuration reloaded"),
            Err(e) => tracing::error!("SIGHUP: cannot apply log_level: {e}"),
        },
        Err(e) => {
            tracing::error!("SIGHUP: invalid log_level '{level}': {e}; keeping the current one")
        }
    }
}

async fn run(
    config: Config,
    config_path: Option<(PathBuf, bool)>,
    log: ReloadHandle,
) -> Result<()> {
    // TLS or the plaintext policy first: a refused configuration must not touch the database.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = trackerd::tls::acceptor(cert, key)?;
            tracing::info!(
                cert = %cert.display(),
                sha256 = %trackerd::tls::fingerprint_file(cert)?,
                "tracker link uses TLS"
            );
            Some(acceptor)
        }
        _ => {
            let warning = trackerd::tls::plaintext_allowed(config.listen, config.allow_plaintext)?;
            tracing::warn!("{warning}");
            None
        }
    };
    if store::is_sqlite_url(&config.database_url) {
        store::create_state_dir(&config.state_dir)?;
    }
    let db = Store::open(&config.database_url, trackerd::DB_POOL_SIZE)
        .await
        .with_context(|| format!("cannot open the database {}", config.database_url))?;
    let timing = Timing {
        heartbeat_secs: config.heartbeat_secs,
        peer_timeout_secs: config.peer_timeout_secs,
        session_ttl_secs: config.session_ttl_secs,
        ticket_ttl_secs: config.ticket_ttl_secs,
    };
    let service = Arc::new(
        Service::new(
            db.clone(),
            timing,
            PasswordHasher::default(),
            service::system_clock(),
        )
        .await?
        .with_policy(config.policy()),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    trackerd::shutdown::install(shutdown.clone(), move || {
        reload_log_level(&config_path, &log)
    })
    .context("cannot install signal handlers")?;
    tracing::info!(
        "listening on {}",
        listener.local_addr().unwrap_or(config.listen)
    );
    trackerd::shutdown::notify_ready();

    server::serve_with_tls(
        listener,
        service,
        ServerOptions::from_config(&config),
        tls,
        shutdown,
    )
    .await;

    // Closing the pool checkpoints SQLite's WAL; bounded in case a request is stuck.
    if tokio::time::timeout(Duration::from_secs(5), db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still busy; exiting anyway (committed data is safe)");
    }
    tracing::info!("stopped");
    Ok(())
}

/// `DIR/trackerd.8` from the clap definition (hidden options are left out).
fn write_man_page(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    let path = dir.join("trackerd.8");
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command().name("trackerd"))
        .section("8")
        .render(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| -> Result<()> {
        if let Some(dir) = &cli.generate_man {
            return write_man_page(dir);
        }
        let (config, config_path) = load_config(&cli)?;
        if cli.print_config {
            print!("{}", config.to_toml());
            return Ok(());
        }
        if cli.print_cert_fingerprint {
            let cert = config.tls_cert.as_ref().context(
                "no TLS certificate configured (tls_cert in trackerd.toml, --tls-cert or TRACKERD_TLS_CERT)",
            )?;
            println!("{}", trackerd::tls::fingerprint_file(cert)?);
            return Ok(());
        }
        let log = init_logging(&config.log_level)?;
        let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        rt.block_on(run(config, config_path, log))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trackerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
