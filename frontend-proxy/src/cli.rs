//! The command line, spelled like Envoy's so existing container commands
//! (`envoy -c /etc/envoy/envoy.yaml --concurrency 2`) keep working.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "frontend-proxy", version, about = "Envoy-compatible edge proxy on Pingora")]
pub struct Cli {
    /// Envoy v3 bootstrap file (YAML or JSON).
    #[arg(short = 'c', long = "config-path", value_name = "FILE", required_unless_present = "health_probe")]
    pub config_path: Option<PathBuf>,

    /// `serve` runs the proxy; `validate` loads everything, opens no socket,
    /// and reports whether the configuration is valid.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,

    /// Worker threads for the listeners (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Log level: trace, debug, info, warning, error, critical, off (a
    /// release build's most detailed level is debug: trace logs at debug).
    #[arg(short = 'l', long = "log-level", default_value = "info", value_parser = parse_level)]
    pub log_level: String,

    /// Longest time a graceful shutdown (SIGTERM) may take, in seconds.
    #[arg(long = "drain-time-s", value_name = "SECONDS", default_value_t = 5)]
    pub drain_time_s: u64,

    /// What serves HTTP/1.1: `native` (the proxy's own engine, handing
    /// what it does not support to Pingora) or `pingora`.
    #[arg(long = "http1-engine", env = "FRONTEND_PROXY_HTTP1_ENGINE", value_enum, default_value_t = Http1Engine::Native)]
    pub http1_engine: Http1Engine,

    /// Where to write the admin interface's address (`ip:port`) once it is
    /// bound, as Envoy does: with `port_value: 0` the port is the kernel's.
    #[arg(long = "admin-address-path", value_name = "FILE")]
    pub admin_address_path: Option<PathBuf>,

    /// Envoy flags about hot restart and node identity, accepted for
    /// compatibility; they do not change what the proxy does.
    #[arg(long = "service-cluster", hide = true)]
    pub service_cluster: Option<String>,
    #[arg(long = "service-node", hide = true)]
    pub service_node: Option<String>,
    #[arg(long = "service-zone", hide = true)]
    pub service_zone: Option<String>,
    #[arg(long = "base-id", hide = true)]
    pub base_id: Option<u32>,
    #[arg(long = "restart-epoch", hide = true)]
    pub restart_epoch: Option<u32>,
    #[arg(long = "disable-hot-restart", hide = true)]
    pub disable_hot_restart: bool,

    /// Health probe for container HEALTHCHECKs: GET the URL, exit 0 on 200.
    #[arg(long = "health-probe", value_name = "URL", conflicts_with = "config_path")]
    pub health_probe: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
}

/// The HTTP/1.1 engine (`--http1-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Http1Engine {
    /// The proxy's own HTTP/1.1 loop; what it does not handle (upgrades,
    /// `Expect`, chunked request bodies, HTTP/1.0) goes to Pingora.
    #[default]
    Native,
    /// Pingora's `HttpProxy` for everything.
    Pingora,
}

fn parse_level(s: &str) -> Result<String, String> {
    let level = match s.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "err" => "error",
        "off" => "off",
        _ => return Err(format!("unknown log level {s:?} (trace, debug, info, warning, error, critical, off)")),
    };
    Ok(level.to_string())
}

impl Cli {
    /// Flags that were accepted for compatibility but do nothing here.
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [
            (self.service_cluster.is_some(), "--service-cluster"),
            (self.service_node.is_some(), "--service-node"),
            (self.service_zone.is_some(), "--service-zone"),
            (self.base_id.is_some(), "--base-id"),
            (self.restart_epoch.is_some(), "--restart-epoch"),
            (self.disable_hot_restart, "--disable-hot-restart"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "frontend-proxy",
            "-c",
            "/etc/envoy.yaml",
            "--mode",
            "validate",
            "--concurrency",
            "2",
            "--log-level",
            "warning",
            "--admin-address-path",
            "/tmp/admin.txt",
        ])
        .unwrap();
        assert_eq!(cli.mode, Mode::Validate);
        assert_eq!(cli.concurrency, Some(2));
        assert_eq!(cli.log_level, "warn");
        assert_eq!(cli.admin_address_path, Some(PathBuf::from("/tmp/admin.txt")));
        let long =
            Cli::try_parse_from(["frontend-proxy", "--config-path", "x.yaml", "--service-cluster", "front"]).unwrap();
        assert_eq!(long.ignored_flags(), vec!["--service-cluster"]);
    }

    #[test]
    fn unknown_flags_and_missing_config_are_usage_errors() {
        assert!(Cli::try_parse_from(["frontend-proxy", "-c", "x", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["frontend-proxy"]).is_err());
        assert!(Cli::try_parse_from(["frontend-proxy", "-c", "x", "--log-level", "loud"]).is_err());
        assert!(Cli::try_parse_from(["frontend-proxy", "--health-probe", "http://127.0.0.1:9901/ready"]).is_ok());
    }
}
