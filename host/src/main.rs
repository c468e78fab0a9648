//! The `autoagent` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use autoagent::authoring::{self, AuthoringError, NewPlugin, Push};
use autoagent::plugins::PluginKind;
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
    Serve {
        /// Address to listen on. Only loopback addresses are accepted until
        /// API tokens exist.
        #[arg(long, default_value = "127.0.0.1:50000")]
        listen: SocketAddr,
        /// Folder for the redb file and plugin folders.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Folder for `autoagent.log`.
        #[arg(long, default_value = "./logs")]
        log_dir: PathBuf,
    },
    /// Writes and uploads plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
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
    },
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
        Command::Serve {
            listen,
            data_dir,
            log_dir,
        } => {
            if !listen.ip().is_loopback() {
                eprintln!(
                    "autoagent: refusing to listen on {listen}: binding a non-loopback address \
                     requires API tokens, which this version does not have yet"
                );
                return ExitCode::from(2);
            }
            let _log_guard = match autoagent::logging::init(&log_dir) {
                Ok(guard) => guard,
                Err(err) => {
                    eprintln!(
                        "autoagent: cannot open the log in {}: {err}",
                        log_dir.display()
                    );
                    return ExitCode::from(1);
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("building the tokio runtime");
            match runtime.block_on(serve(listen, AppConfig::new(data_dir))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "host stopped");
                    eprintln!("autoagent: {err:#}");
                    ExitCode::from(1)
                }
            }
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
        PluginCommand::Push { dir, host, wasm } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the tokio runtime");
            runtime
                .block_on(authoring::push(&Push { dir, host, wasm }))
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

async fn serve(listen: SocketAddr, config: AppConfig) -> anyhow::Result<()> {
    let app = App::open(&config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {listen}: {err}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        "listening on {bound}"
    );
    server::serve(app, listener, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
