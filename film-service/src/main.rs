//! film-service: serves films until SIGTERM / Ctrl-C; `healthcheck` checks
//! a running one.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use film_service::rating_client::{RatingClient, Timeouts};
use film_service::{app, AppState, DEFAULT_LISTEN, DEFAULT_RATING_SERVICE_URL};
use service_common::healthcheck::{self, HealthcheckArgs};
use service_common::{served_by, server, telemetry};

/// Films {id, name, language} over HTTP, held in memory; each new film's
/// rating is registered with rating-service.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN, global = true)]
    listen: SocketAddr,
    /// Base URL of rating-service.
    #[arg(long, env = "RATING_SERVICE_URL", default_value = DEFAULT_RATING_SERVICE_URL)]
    rating_service_url: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GET the health URL of a running film-service; exit 0 on 200, 1 otherwise.
    Healthcheck(HealthcheckArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck(args)) = &cli.command {
        return healthcheck::run(args, cli.listen).await;
    }
    telemetry::init();
    let ratings = match RatingClient::new(&cli.rating_service_url, Timeouts::default()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: --rating-service-url / RATING_SERVICE_URL: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match AppState::new(ratings, served_by::hostname()) {
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
    tracing::info!(
        rating_service = %state.ratings.ratings_url(),
        addr = %listener.local_addr(),
        "film-service listening"
    );
    if let Err(e) = listener.serve(app(state), server::shutdown_signal()).await {
        tracing::error!(error = %e, "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("film-service stopped");
    ExitCode::SUCCESS
}
