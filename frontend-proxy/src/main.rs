//! `frontend-proxy -c envoy.yaml`: parse flags, set up logging, load and
//! validate the bootstrap, then serve it (or just report, with `--mode
//! validate`). The only place that decides the exit code.

use clap::Parser;
use frontend_proxy::cli::{Cli, Mode};
use frontend_proxy::{config, probe, server};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Pingora allocates per request (header maps, a 64 KiB body buffer per upstream
/// response); mimalloc serves those from thread-local free lists
/// (`allocator.rs`: without the aligned calls where none is needed).
#[global_allocator]
static ALLOCATOR: frontend_proxy::allocator::Mimalloc = frontend_proxy::allocator::Mimalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(url) = &cli.health_probe {
        return match probe::probe(url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("health probe failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for flag in cli.ignored_flags() {
        tracing::warn!(flag, "ignored: Envoy hot-restart and node flags have no effect here");
    }

    let Some(path) = cli.config_path.clone() else {
        eprintln!("error: -c/--config-path is required");
        return ExitCode::from(2);
    };
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: configuration '{}' is invalid:", path.display());
            for d in e.diagnostics() {
                eprintln!("  {d}");
            }
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(path = %w.path, "{}", w.message);
    }
    let prepared = match server::prepare(loaded) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("error: configuration '{}' cannot be served:", path.display());
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.mode == Mode::Validate {
        println!("configuration '{}' OK", path.display());
        return ExitCode::SUCCESS;
    }
    match server::run(prepared, cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
