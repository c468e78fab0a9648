//! The `autoagent` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use autoagent::alerts::delivery::{ConfigError, DeliveryConfig};
use autoagent::auth::{Role, Tokens};
use autoagent::authoring::{self, AuthoringError, NewPlugin, Push};
use autoagent::plugins::PluginKind;
use autoagent::plugins::compiler::{CompileLimits, CompilerProcess};
use autoagent::server::{Limits, TlsError};
use autoagent::store::{RedbBackend, Store};
use autoagent::{App, AppConfig, server};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "autoagent", version, about = "AutoAgent automation host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the host: the management API, the plugins and the store.
    Serve(ServeArgs),
    /// Writes and uploads plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manages API tokens while the host is stopped (a running host manages
    /// them at `/tokens`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Compiles one plugin component for a running host, which starts this
    /// itself (`plugins::compiler`): the component on stdin, the artifact
    /// written to `--output`.
    #[command(name = autoagent::plugins::compiler::SUBCOMMAND, hide = true)]
    CompilePlugin {
        #[arg(long)]
        output: PathBuf,
        /// The host's engine key; another build refuses.
        #[arg(long)]
        engine_key: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. On a non-loopback address every request needs
    /// an API token, so at least one must exist (`autoagent token create`),
    /// and the host serves HTTPS (`--tls-cert`, `--tls-key`) unless
    /// `--behind-tls-proxy` is given.
    #[arg(long, default_value = "127.0.0.1:50000")]
    listen: SocketAddr,
    /// Folder for the redb file and plugin folders.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Folder for `autoagent.log`.
    #[arg(long, default_value = "./logs")]
    log_dir: PathBuf,
    /// Seconds a connection may take to send a whole request head (counted
    /// from its opening or its previous answer, so it also closes idle
    /// keep-alive connections); slower ones are closed without an answer.
    #[arg(long, default_value_t = Limits::DEFAULT.header_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is answered 408.
    #[arg(long, default_value_t = Limits::DEFAULT.body_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
    /// Seconds a request may take from its head to its answer before it is
    /// answered 503; also the grace period for requests in flight at
    /// shutdown.
    #[arg(long, default_value_t = Limits::DEFAULT.request_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_secs: u64,
    /// Connections served at once; further ones wait, unaccepted, until one
    /// closes.
    #[arg(long, default_value_t = Limits::DEFAULT.max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// PEM file with the host's certificate (then its chain): serve HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address, because a proxy in front
    /// of the host terminates TLS.
    #[arg(long, conflicts_with = "tls_cert")]
    behind_tls_proxy: bool,
    /// Linear memory all plugin calls together may hold, in MiB (default:
    /// half of the machine's memory). A call whose memory would grow past it
    /// fails with `memory_limit`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..))]
    guest_memory_mib: Option<u64>,
    /// Threads that run plugin code, apart from the API's (default: twice
    /// the cores, at least 4); each team may use half of them at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=1024))]
    guest_threads: Option<u32>,
    /// Size in bytes past which `autoagent.log` is rotated to
    /// `autoagent.log.1` (default 100 MiB).
    #[arg(long, default_value_t = 100 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    log_max_bytes: u64,
    /// Rotated log files kept besides the current one.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    log_keep: u32,
    /// Requests a second each API token may send on average, in bursts of
    /// twice that; past it, 429. 0 turns the limit off. Requests without a
    /// token (the local operator of a loopback host) are not limited.
    #[arg(long, default_value_t = autoagent::DEFAULT_TOKEN_RATE_PER_SEC)]
    token_rate_limit: u32,
    /// Days a finished task or action plan (succeeded, failed, cancelled,
    /// timed out) is kept before it is deleted; the totals in /status and
    /// /metrics stay.
    #[arg(long, alias = "task-retention-days", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    retention_days: u32,
    /// Most incidents whose recovery stages run at once, host-wide; others
    /// wait their turn.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrent_recoveries: u32,
    /// The alert channels file (TOML: channels, recipient groups, delivery
    /// policy; see the README). Without it no alert channel is configured
    /// and alert deliveries are recorded as skipped.
    #[arg(long, value_name = "FILE")]
    alerts_config: Option<PathBuf>,
    /// Memory a plugin's compiler process may write, in MiB; past it that
    /// plugin's load fails (compiling a plugin usually needs tens of MiB).
    #[arg(long, default_value_t = CompileLimits::DEFAULT.memory_bytes >> 20, value_parser = clap::value_parser!(u64).range(8..=1 << 20))]
    compile_memory_mib: u64,
    /// CPU time a plugin's compiler process may use, all its threads
    /// together, in seconds.
    #[arg(long, default_value_t = CompileLimits::DEFAULT.cpu_seconds, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    compile_cpu_secs: u64,
    /// Time a plugin's compiler process may take from its start to its
    /// exit, in seconds; past it the host stops it.
    #[arg(long, default_value_t = CompileLimits::DEFAULT.wall_seconds, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    compile_timeout_secs: u64,
}

impl ServeArgs {
    fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a token and prints its secret, which is shown only this once.
    Create {
        /// Folder holding the host's redb file.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The team the token acts for.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        team: Option<autoagent::names::Name>,
        /// Its role in the team: `viewer`, `operator` or `admin`.
        #[arg(long, requires = "team", default_value = "admin", value_parser = parse_role)]
        role: Role,
        /// A global admin token, acting for every team.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Creates a ready plugin crate: Cargo.toml, plugin.toml and a working
    /// src/lib.rs with unit tests.
    New {
        /// `capability`, `health-check` or `recovery-strategy`.
        #[arg(value_parser = parse_kind)]
        kind: PluginKind,
        /// Plugin and crate name: lower-case letters, digits, `-` and `_`.
        name: String,
        /// Team that will own the plugin.
        #[arg(long, default_value = "default")]
        team: String,
        /// Folder to create (default: `./<name>`).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Folder of the `autoagent-sdk` crate to depend on by path
        /// (default: the sources this binary was built from, if present,
        /// else the published crate).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Builds a plugin crate for wasm32-wasip2 and uploads it, with its
    /// plugin.toml, to a running host.
    Push {
        /// The plugin crate's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The host to upload to.
        #[arg(long, default_value = "http://127.0.0.1:50000")]
        host: String,
        /// Upload this component instead of building the crate.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// PEM file with certificates to trust for an https host, besides
        /// the usual public roots: a self-signed host certificate, or the
        /// private CA that signed it.
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// The API token to upload with (default: `$AUTOAGENT_TOKEN`); a
        /// host on a non-loopback address requires one.
        #[arg(long, value_name = "SECRET")]
        token: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    [Role::Viewer, Role::Operator, Role::Admin]
        .into_iter()
        .find(|role| role.as_str() == text)
        .ok_or_else(|| "expected viewer, operator or admin".to_owned())
}

fn parse_kind(text: &str) -> Result<PluginKind, String> {
    [
        PluginKind::Capability,
        PluginKind::HealthCheck,
        PluginKind::RecoveryStrategy,
    ]
    .into_iter()
    .find(|kind| kind.world() == text)
    .ok_or_else(|| "expected capability, health-check or recovery-strategy".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugin { command } => plugin_command(command),
        Command::Token { command } => token_command(command),
        Command::Serve(args) => serve_command(&args),
        Command::CompilePlugin { output, engine_key } => {
            autoagent::plugins::compiler::run_compiler_process(&output, &engine_key)
        }
    }
}

fn serve_command(args: &ServeArgs) -> ExitCode {
    let rotation = autoagent::logging::Rotation {
        max_bytes: args.log_max_bytes,
        keep: args.log_keep as usize,
    };
    let _log_guard = match autoagent::logging::init(&args.log_dir, rotation) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!(
                "autoagent: cannot open the log in {}: {err}",
                args.log_dir.display()
            );
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err)
            if err.is::<NeedsTokens>()
                || err.is::<NeedsTls>()
                || err.is::<TlsError>()
                || err.is::<ConfigError>() =>
        {
            eprintln!("autoagent: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "host stopped");
            eprintln!("autoagent: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn plugin_command(command: PluginCommand) -> ExitCode {
    let outcome = match command {
        PluginCommand::New {
            kind,
            name,
            team,
            path,
            sdk,
        } => authoring::new_plugin(&NewPlugin {
            kind,
            dir: path.unwrap_or_else(|| PathBuf::from(&name)),
            name,
            team,
            sdk,
        })
        .map(|dir| {
            println!("created {}", dir.display());
            println!(
                "next: cd {} && cargo test && autoagent plugin push",
                dir.display()
            );
        }),
        PluginCommand::Push {
            dir,
            host,
            wasm,
            ca_cert,
            token,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the tokio runtime");
            let token = token.or_else(|| std::env::var("AUTOAGENT_TOKEN").ok());
            runtime
                .block_on(authoring::push(&Push {
                    dir,
                    host,
                    wasm,
                    ca_cert,
                    token,
                }))
                .map(|pushed| {
                    let verb = if pushed.replaced { "replaced" } else { "added" };
                    println!("{verb} {}", pushed.plugin);
                })
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("autoagent: {err}");
            ExitCode::from(AuthoringError::exit_code(&err))
        }
    }
}

fn token_command(command: TokenCommand) -> ExitCode {
    let TokenCommand::Create {
        data_dir,
        team,
        role,
        admin,
    } = command;
    let role = if admin { Role::Admin } else { role };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let outcome = runtime.block_on(async {
        let db = data_dir.join(autoagent::DATABASE_FILE);
        std::fs::create_dir_all(&data_dir)
            .map_err(|err| format!("cannot create {}: {err}", data_dir.display()))?;
        let backend = RedbBackend::open(&db).map_err(|err| {
            format!(
                "cannot open {} (is the host running? then use POST /tokens): {err}",
                db.display()
            )
        })?;
        let tokens = Tokens::open(&Store::new(std::sync::Arc::new(backend)))
            .await
            .map_err(|err| err.to_string())?;
        tokens
            .create(role, team)
            .await
            .map_err(|err| err.to_string())
    });
    match outcome {
        Ok((token, secret)) => {
            match &token.team {
                Some(team) => println!(
                    "created {} ({} of team {team})",
                    token.id,
                    token.role.as_str()
                ),
                None => println!("created {} (global admin)", token.id),
            }
            println!("{secret}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("autoagent: {message}");
            ExitCode::from(2)
        }
    }
}

/// A non-loopback host without any token could serve nobody.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {0}: a non-loopback host requires an API token on every request, and \
     none exists; create one first with `autoagent token create --admin`"
)]
struct NeedsTokens(SocketAddr);

/// A non-loopback host would carry tokens in clear text.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {0} without TLS: every request there carries an API token, which must \
     not cross the network in clear text; give `--tls-cert FILE --tls-key FILE` (PEM), or \
     `--behind-tls-proxy` if a proxy in front of the host terminates TLS"
)]
struct NeedsTls(SocketAddr);

/// The program to run this very build again: on Linux `/proc/self/exe`,
/// which names the running image even once an upgrade in place has put
/// another binary at its path (so a compiler process is never another
/// build); elsewhere the path it was started from.
fn own_image() -> Option<PathBuf> {
    let image = PathBuf::from("/proc/self/exe");
    if image.exists() {
        return Some(image);
    }
    std::env::current_exe().ok()
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let listen = args.listen;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
        _ => None,
    };
    let mut config = AppConfig::new(&args.data_dir);
    if let Some(path) = &args.alerts_config {
        config.alerts = Some(DeliveryConfig::load(path)?);
    }
    config.anonymous_is_admin = listen.ip().is_loopback();
    // Plugins compile in a child process run from this same binary.
    config.compiler = own_image().map(|program| {
        CompilerProcess::new(program).with_limits(CompileLimits {
            memory_bytes: args.compile_memory_mib << 20,
            cpu_seconds: args.compile_cpu_secs,
            wall_seconds: args.compile_timeout_secs,
        })
    });
    config.token_rate_per_sec = args.token_rate_limit;
    config.retention = std::time::Duration::from_secs(u64::from(args.retention_days) * 86_400);
    config.max_concurrent_recoveries = args.max_concurrent_recoveries as usize;
    if let Some(mib) = args.guest_memory_mib {
        config.runtime.guest_memory_bytes = mib << 20;
    }
    if let Some(threads) = args.guest_threads {
        config.runtime.guest_threads = threads as usize;
    }
    let app = App::open(&config).await?;
    // A host missing both hears about tokens first: TLS matters once there
    // is a token to protect.
    if !config.anonymous_is_admin && app.tokens.is_empty() {
        return Err(NeedsTokens(listen).into());
    }
    if !config.anonymous_is_admin && tls.is_none() && !args.behind_tls_proxy {
        return Err(NeedsTls(listen).into());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {listen}: {err}"))?;
    let bound = listener.local_addr()?;
    let limits = args.limits();
    tracing::info!(
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        header_timeout_secs = limits.header_timeout.as_secs(),
        body_timeout_secs = limits.body_timeout.as_secs(),
        request_timeout_secs = limits.request_timeout.as_secs(),
        max_connections = limits.max_connections,
        "listening on {bound}"
    );
    // SIGHUP reopens the log file, for an external logrotate.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            autoagent::logging::reopen();
            tracing::info!("SIGHUP received; log file reopened");
        }
    });
    server::serve(
        app.clone(),
        listener,
        limits,
        tls,
        server::shutdown_signal(),
    )
    .await;
    // No request is in flight now; the tasks running get the same grace.
    app.shutdown(limits.request_timeout).await;
    tracing::info!("stopped");
    Ok(())
}
