//! `trackerd [--config FILE] [--listen ADDR] [--state-dir DIR] [--database-url URL]
//! [--signing-key-file FILE] [--tls-cert PEM --tls-key PEM] [--allow-plaintext]
//! [--print-config] [--print-cert-fingerprint] [TRACKER_INFO [TRACKER_NO]]`
//!
//! `trackerd [--config FILE] [--state-dir DIR] [--database-url URL] [--signing-key-file FILE]
//! rotate-key [--overlap-secs N]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
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
#[command(
    version,
    subcommand_precedence_over_arg = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file (must exist). Default: $TRACKERD_CONFIG, else
    /// $CONFIGURATION_DIRECTORY/trackerd.toml if present.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [env: TRACKERD_LISTEN] [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the database and the key file [env: TRACKERD_STATE_DIR].
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [env: TRACKERD_DATABASE_URL].
    #[arg(long, value_name = "URL", global = true)]
    database_url: Option<String>,
    /// Private key that signs download tickets; created (mode 0600) if missing
    /// [env: TRACKERD_SIGNING_KEY_FILE] [default: STATE_DIR/ticket-signing.key]. The systemd
    /// credential `ticket-signing-key` takes precedence.
    #[arg(long, value_name = "FILE", global = true)]
    signing_key_file: Option<PathBuf>,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Replace this tracker's ticket-signing key, keeping the old one valid for an overlap.
    ///
    /// Writes a new key file (mode 0600, atomically by rename) and publishes its public key in
    /// the database; a trackerd running with this key file signs with it within a second.
    /// Tickets signed with the old key keep verifying for the overlap, then the old key is
    /// retired and refused everywhere. Run it with the same --config/--state-dir/--database-url
    /// as the serving trackerd. With a systemd credential: give --signing-key-file the
    /// credential's source file, then restart the unit.
    RotateKey {
        /// How long the old key stays valid, in seconds [default: key_overlap_secs from the
        /// config]; at least ticket_ttl_secs.
        #[arg(long, value_name = "SECS")]
        overlap_secs: Option<u64>,
    },
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
        signing_key_file: cli.signing_key_file.clone(),
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
    let key_source = trackerd::keys::KeySource::choose(&config.signing_key_file, &env);
    let key = trackerd::keys::load_signing_key(
        &db,
        &key_source,
        (service::system_clock())(),
        config.ticket_ttl_secs,
    )
    .await?;
    let timing = Timing {
        heartbeat_secs: config.heartbeat_secs,
        peer_timeout_secs: config.peer_timeout_secs,
        session_ttl_secs: config.session_ttl_secs,
        ticket_ttl_secs: config.ticket_ttl_secs,
    };
    let service = Arc::new(
        Service::with_signing_key(
            db.clone(),
            timing,
            PasswordHasher::default(),
            service::system_clock(),
            key,
        )
        .await?
        .with_policy(config.policy()),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        let metrics = minitorr_metrics::bind(addr).await?;
        if let Some(w) = minitorr_metrics::exposure_warning(addr) {
            tracing::warn!("{w}");
        }
        tracing::info!(
            "metrics on http://{}/metrics",
            metrics.local_addr().unwrap_or(addr)
        );
        tokio::spawn(minitorr_metrics::serve(
            metrics,
            trackerd::metrics::render(service.clone()),
            minitorr_metrics::Limits::default(),
            shutdown.clone(),
        ));
    }
    if let Some(addr) = config.relay_listen {
        let relay = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the relay on {addr} (relay_listen)"))?;
        tracing::info!(
            "relay listening on {} (handed to daemons as {})",
            relay.local_addr().unwrap_or(addr),
            config.relay_public_addr.unwrap_or(addr)
        );
        tokio::spawn(trackerd::relay::serve_relay(
            relay,
            service.clone(),
            config.relay_limits(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(trackerd::keys::watch(
        service.clone(),
        key_source,
        shutdown.clone(),
    ));
    // Sessions without a heartbeat for session_ttl_secs end here (HolderGone to their groups),
    // not only when somebody next logs in. A tenth of the TTL: the holder is gone at most
    // 10 % later than its session; at least every second, at most every minute.
    let sweep_every = std::time::Duration::from_secs((config.session_ttl_secs / 10).clamp(1, 60));
    tokio::spawn(service.clone().sweep_sessions(sweep_every));
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

/// `trackerd rotate-key`: runs beside (or without) the serving trackerd on this host.
async fn rotate_key(config: Config, overlap_secs: Option<u64>) -> Result<()> {
    let overlap = overlap_secs.unwrap_or(config.key_overlap_secs);
    anyhow::ensure!(
        overlap >= config.ticket_ttl_secs,
        "--overlap-secs {overlap} is shorter than ticket_ttl_secs ({}): tickets handed out just before the rotation would stop working early",
        config.ticket_ttl_secs
    );
    if store::is_sqlite_url(&config.database_url) {
        store::create_state_dir(&config.state_dir)?;
    }
    let db = Store::open(&config.database_url, 2)
        .await
        .with_context(|| format!("cannot open the database {}", config.database_url))?;
    let source = trackerd::keys::KeySource::File(config.signing_key_file.clone());
    let now = (service::system_clock())();
    let r = trackerd::keys::rotate(&db, &source, now, config.ticket_ttl_secs, overlap).await;
    db.close().await;
    let r = r?;
    use trackerd::keys::key_id;
    println!(
        "new ticket-signing key {} written to {}",
        key_id(&r.new),
        config.signing_key_file.display()
    );
    println!(
        "old key {} keeps verifying for {overlap} s (until unix time {}), then is retired",
        key_id(&r.old),
        r.old_valid_until
    );
    println!("a trackerd running with this key file switches within a second; one using a systemd credential needs the credential replaced and a restart");
    Ok(())
}

/// `DIR/trackerd.8` and `DIR/trackerd-rotate-key.8` from the clap definition (hidden options
/// are left out).
fn write_man_page(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command().name("trackerd");
    // Propagate global options (--config, --state-dir, …) into the subcommands' pages.
    cmd.build();
    let mut pages = vec![("trackerd.8".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // clap wants a 'static name; this runs once, in a process that exits right after.
        let name: &'static str = Box::leak(format!("trackerd-{}", sub.get_name()).into());
        let sub = sub.clone().name(name).version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.8"), sub));
    }
    for (file, cmd) in pages {
        let path = dir.join(&file);
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).section("8").render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
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
        if let Some(Command::RotateKey { overlap_secs }) = cli.command {
            return rt.block_on(rotate_key(config, overlap_secs));
        }
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
