//! rating-service: serves ratings until SIGTERM / Ctrl-C; `healthcheck`
//! checks a running one.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rating_service::{app, AppState, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, MIGRATIONS};
use service_common::db::{Database, PoolArgs};
use service_common::healthcheck::{self, HealthcheckArgs};
use service_common::{served_by, server, telemetry};

/// Film ratings {id, name, rating} over HTTP, stored in SQLite (default) or
/// PostgreSQL.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN, global = true)]
    listen: SocketAddr,
    /// The ratings database: sqlite://FILE (created if missing),
    /// sqlite::memory:, or postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    #[command(flatten)]
    pool: PoolArgs,
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
    let state = match AppState::new(db.clone(), served_by::hostname()) {
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
    tracing::info!(database = %db.display_url(), addr = %listener.local_addr(), "rating-service listening");
    let served = listener.serve(app(state), server::shutdown_signal()).await;
    db.close().await;
    if let Err(e) = served {
        tracing::error!(error = %e, "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("rating-service stopped");
    ExitCode::SUCCESS
}
