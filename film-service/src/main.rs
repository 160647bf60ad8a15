//! film-service: serves films until SIGTERM / Ctrl-C; `healthcheck` checks
//! a running one.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use film_service::creation::run_sweeper;
use film_service::rating_client::{RatingClient, Timeouts};
use film_service::{app, AppState, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_RATING_SERVICE_URL, MIGRATIONS};
use service_common::db::{parse_duration, Database, PoolArgs};
use service_common::healthcheck::{self, HealthcheckArgs};
use service_common::{served_by, server, telemetry};

/// Films {id, name, language} over HTTP, stored in SQLite (default) or
/// PostgreSQL; each new film's rating is registered with rating-service.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN, global = true)]
    listen: SocketAddr,
    /// Base URL of rating-service.
    #[arg(long, env = "RATING_SERVICE_URL", default_value = DEFAULT_RATING_SERVICE_URL)]
    rating_service_url: String,
    /// The films database: sqlite://FILE (created if missing),
    /// sqlite::memory:, or postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    #[command(flatten)]
    pool: PoolArgs,
    /// Age at which an unfinished film creation (its replica died, or lost
    /// its database or rating-service midway) is undone by the sweeper.
    #[arg(long, env = "PENDING_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pending_timeout: Duration,
    /// How often each replica looks for unfinished film creations.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    sweep_interval: Duration,
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
    let db = match Database::open(&cli.database_url, &cli.pool, MIGRATIONS) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: --database-url / DATABASE_URL: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = db.start().await {
        eprintln!("error: cannot open the database {}: {e}", db.display_url());
        return ExitCode::FAILURE;
    }
    let mut state = match AppState::new(db.clone(), ratings, served_by::hostname()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: cannot set up metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    state.pending_timeout = cli.pending_timeout;
    let state = Arc::new(state);
    let listener = match server::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let sweeper = tokio::spawn(run_sweeper(state.clone(), cli.sweep_interval));
    tracing::info!(
        rating_service = %state.ratings.ratings_url(),
        database = %db.display_url(),
        addr = %listener.local_addr(),
        "film-service listening"
    );
    let served = listener.serve(app(state), server::shutdown_signal()).await;
    sweeper.abort();
    db.close().await;
    if let Err(e) = served {
        tracing::error!(error = %e, "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("film-service stopped");
    ExitCode::SUCCESS
}
