//! rating-service: serves ratings until SIGTERM / Ctrl-C; `healthcheck`
//! checks a running one.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rating_service::{app, AppState, DEFAULT_LISTEN};
use service_common::healthcheck::{self, HealthcheckArgs};
use service_common::{served_by, server, telemetry};

/// Film ratings {id, name, rating} over HTTP, held in memory.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN, global = true)]
    listen: SocketAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GET the health URL of a running rating-service; exit 0 on 200, 1 otherwise.
    Healthcheck(HealthcheckArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck(args)) = &cli.command {
        return healthcheck::run(args, cli.listen).await;
    }
    telemetry::init();
    let state = match AppState::new(served_by::hostname()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: cannot set up metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %listener.local_addr(), "rating-service listening");
    if let Err(e) = listener.serve(app(state), server::shutdown_signal()).await {
        tracing::error!(error = %e, "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("rating-service stopped");
    ExitCode::SUCCESS
}
