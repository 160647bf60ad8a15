//! `/server_info` and `/ready`: the server's state as Envoy names it, its
//! version and command line, and the process memory figures behind
//! `server.memory_*`.

use crate::cli::Cli;
use serde_json::{json, Value as Json};
use std::time::Duration;

/// Envoy's `envoy.admin.v3.ServerInfo.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Live,
    /// Shutting down, or `POST /healthcheck/fail` was called.
    Draining,
    /// Clusters have not finished their first discovery yet.
    PreInitializing,
}

impl ServerState {
    /// Envoy's order: an unfinished start-up wins over a failed health
    /// check; a shutdown in progress wins over both.
    pub fn of(shutting_down: bool, initialized: bool, health_check_failed: bool) -> Self {
        if shutting_down {
            ServerState::Draining
        } else if !initialized {
            ServerState::PreInitializing
        } else if health_check_failed {
            ServerState::Draining
        } else {
            ServerState::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
        }
    }

    /// The `server.state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            ServerState::Live => 0,
            ServerState::Draining => 1,
            ServerState::PreInitializing => 2,
        }
    }
}

/// Process memory, in bytes, from `/proc/self/status`. The allocator keeps
/// no statistics here, so `allocated` is the anonymous resident memory
/// (heap and stacks actually in use), the closest stand-in for Envoy's
/// tcmalloc figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub allocated: u64,
    pub heap_size: u64,
    pub physical_size: u64,
}

impl Memory {
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/self/status").map(|s| Self::parse(&s)).unwrap_or_default()
    }

    fn parse(status: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        };
        let physical_size = field("VmRSS");
        let anon = field("RssAnon");
        Memory { allocated: if anon > 0 { anon } else { physical_size }, heap_size: field("VmData"), physical_size }
    }
}

/// Envoy's version string layout: `<revision>/<version>/<status>/<build>/<ssl>`.
pub fn version() -> String {
    let build = if cfg!(debug_assertions) { "DEBUG" } else { "RELEASE" };
    format!("frontend-proxy/{}/Clean/{build}/BoringSSL", env!("CARGO_PKG_VERSION"))
}

/// Protobuf JSON duration: `12s`.
fn duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Envoy's `command_line_options`, from the flags this process was started with.
fn command_line_options(cli: &Cli, concurrency: usize) -> Json {
    json!({
        "base_id": cli.base_id.unwrap_or(0).to_string(),
        "concurrency": concurrency,
        "config_path": cli.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "config_yaml": "",
        "log_level": cli.log_level,
        "mode": match cli.mode { crate::cli::Mode::Serve => "Serve", crate::cli::Mode::Validate => "Validate" },
        "drain_time": duration(Duration::from_secs(cli.drain_time_s)),
        "service_cluster": cli.service_cluster.clone().unwrap_or_default(),
        "service_node": cli.service_node.clone().unwrap_or_default(),
        "service_zone": cli.service_zone.clone().unwrap_or_default(),
        "restart_epoch": cli.restart_epoch.unwrap_or(0),
        "disable_hot_restart": true,
    })
}

/// The `/server_info` document.
pub fn render(state: ServerState, uptime: Duration, cli: &Cli, concurrency: usize) -> Json {
    json!({
        "version": version(),
        "state": state.as_str(),
        "hot_restart_version": "disabled",
        "command_line_options": command_line_options(cli, concurrency),
        "node": {
            "id": cli.service_node.clone().unwrap_or_default(),
            "cluster": cli.service_cluster.clone().unwrap_or_default(),
            "user_agent_name": "frontend-proxy",
        },
        "uptime_current_epoch": duration(uptime),
        "uptime_all_epochs": duration(uptime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn state_precedence() {
        assert_eq!(ServerState::of(false, true, false), ServerState::Live);
        assert_eq!(ServerState::of(false, true, true), ServerState::Draining);
        assert_eq!(ServerState::of(false, false, true), ServerState::PreInitializing);
        assert_eq!(ServerState::of(true, false, false), ServerState::Draining);
        assert_eq!(ServerState::PreInitializing.as_str(), "PRE_INITIALIZING");
    }

    #[test]
    fn memory_from_proc_status() {
        let m = Memory::parse("Name:\tx\nVmData:\t  2048 kB\nVmRSS:\t    1000 kB\nRssAnon:\t     600 kB\n");
        assert_eq!(m, Memory { allocated: 600 * 1024, heap_size: 2048 * 1024, physical_size: 1000 * 1024 });
        assert_eq!(Memory::parse("VmRSS: 10 kB").allocated, 10 * 1024);
        assert!(Memory::read().physical_size > 0);
    }

    #[test]
    fn server_info_document() {
        let cli = Cli::try_parse_from(["frontend-proxy", "-c", "/etc/envoy.yaml", "--service-node", "edge"]).unwrap();
        let info = render(ServerState::Live, Duration::from_secs(42), &cli, 2);
        assert_eq!(info["state"], "LIVE");
        assert_eq!(info["uptime_current_epoch"], "42s");
        assert_eq!(info["command_line_options"]["config_path"], "/etc/envoy.yaml");
        assert_eq!(info["command_line_options"]["concurrency"], 2);
        assert_eq!(info["node"]["id"], "edge");
        assert_eq!(info["version"].as_str().unwrap().split('/').nth(1), Some(env!("CARGO_PKG_VERSION")));
    }
}
