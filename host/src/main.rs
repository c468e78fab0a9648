//! The `autoagent` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
