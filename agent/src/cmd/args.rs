//! Command-line interface. Every flag is documented in README.md.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default listen address. 9947 is not in the Prometheus default-port allocations
/// (github.com/prometheus/prometheus/wiki/Default-port-allocations) at the time of writing.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9947";

#[derive(Parser, Debug)]
#[command(
    name = "siphon",
    version,
    about = "eBPF network telemetry for AI-inference clusters"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "SIPHON_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to interfaces, count traffic, and serve Prometheus metrics.
    // Boxed: the run flags outgrew the other variants (clippy::large_enum_variant).
    Run(Box<RunArgs>),
    /// Feed a pcap/pcapng capture through the kernel program (BPF_PROG_TEST_RUN) and the same
    /// pipeline; print a summary, optionally write per-exchange JSON and the metrics.
    Replay(ReplayArgs),
    /// Run the detector over exchange logs (as `--exchange-log` writes them; several are
    /// merged by time): write detection events, print the top entities with their reasons.
    Detect(DetectArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Interface to attach to (repeatable). Default: every UP non-loopback interface.
    #[arg(long = "iface", value_name = "NAME")]
    pub ifaces: Vec<String>,
    /// Attach to every interface whose name matches this glob (e.g. `eth*`, `veth*`); repeatable
    /// (an interface matching any of them is watched). Re-checked on every sweep so interfaces
    /// that appear later are picked up.
    #[arg(long = "iface-pattern", value_name = "GLOB", conflicts_with = "ifaces")]
    pub iface_patterns: Vec<String>,
    /// Address to serve /metrics, /healthz, /readyz and /flows on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How TC programs are attached: tcx links (Linux >= 6.6), netlink cls_bpf on a clsact
    /// qdisc, or auto (tcx where available).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// How often the flow table is swept (idle flows expired, totals folded in).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub sweep_interval: Duration,
    /// A flow with no packet for this long is expired.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub flow_idle_timeout: Duration,
    /// A TCP flow that saw FIN from both sides, or a RST, is expired after this much quiet.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub flow_closed_timeout: Duration,
    /// Capacity of the kernel flow table (LRU: the least recently used flow is evicted when it
    /// is full, and counted).
    #[arg(long, default_value_t = 131_072, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_flows: u32,
    /// Port of a local service (repeatable), used to tell client from server on flows whose
    /// handshake was not seen. Listening TCP sockets of this network namespace are added.
    #[arg(long = "service-port", value_name = "PORT")]
    pub service_ports: Vec<u16>,
    /// An exchange whose response has been quiet this long is reported without waiting for the
    /// connection's next request or close (idle keep-alive connections).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub exchange_idle_timeout: Duration,
    /// Append one JSON object per exchange and per TLS ClientHello to this file (addresses,
    /// routes, statuses, timings, fingerprints, API-key hashes; never keys or payloads).
    #[arg(long, value_name = "PATH")]
    pub exchange_log: Option<std::path::PathBuf>,
    /// Kernel ring-buffer size in bytes (power of two). Default: 1 MiB per online CPU, rounded
    /// up to a power of two, 2 MiB to 128 MiB.
    #[arg(long, value_parser = parse_ringbuf_bytes)]
    pub ringbuf_bytes: Option<u32>,
    /// Detector configuration (TOML; README.md "Detection"). Default: the built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub detect_config: Option<std::path::PathBuf>,
    /// Append one JSON line per detection event (raised, cleared) to this file.
    #[arg(long, value_name = "PATH")]
    pub detection_log: Option<std::path::PathBuf>,
    /// Do not serve /flows (it lists client and server addresses and ports, without
    /// authentication); it then answers 404. Served by default.
    #[arg(long)]
    pub no_flows_endpoint: bool,
    /// Pin the kernel maps and tcx links under this directory of a BPF filesystem (in
    /// `<layout version>/netns-<inode>/`), so a restarted agent continues the counts and takes
    /// over the links instead of attaching again. Off unless given (the DaemonSet sets it).
    #[arg(long, value_name = "DIR", env = "SIPHON_PIN_PATH")]
    pub pin_path: Option<std::path::PathBuf>,
    /// Do not pin, even if --pin-path or SIPHON_PIN_PATH is set.
    #[arg(long)]
    pub no_pin: bool,
    /// TLS, client certificates and basic auth for the listener, in the Prometheus
    /// exporter-toolkit web-config format (as node_exporter's --web.config.file).
    #[arg(long, value_name = "PATH")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// After the hash secret file changes, keys are also hashed under the previous secret
    /// (`api_key_hash_prev`) for this long, so the two hashes of one key can be joined.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub key_hash_overlap: Duration,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DetectArgs {
    /// Exchange logs (JSON lines; `-` for standard input).
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<std::path::PathBuf>,
    /// Detector configuration (TOML). Default: the built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// Write detection events (JSON lines) here (`-`: standard output).
    #[arg(long, value_name = "PATH")]
    pub events: Option<std::path::PathBuf>,
    /// Write the detector's metrics at the end (Prometheus text format) here.
    #[arg(long, value_name = "PATH")]
    pub metrics_out: Option<std::path::PathBuf>,
    /// Write the final state here (JSON: every entity with a score, clusters with members).
    #[arg(long, value_name = "PATH")]
    pub summary: Option<std::path::PathBuf>,
    /// Write score snapshots here (JSON lines: every entity scoring at least 0.05, every
    /// `--scores-every` seconds of record time).
    #[arg(long, value_name = "PATH")]
    pub scores_out: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub scores_every: u64,
    /// Rows of the table per score kind.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// No table and no progress on the terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// How requests are decoded and attributed; shared by `run` and `replay`.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Name a service for the `service` label: NAME=ADDR:PORT, NAME=:PORT (any address) or
    /// NAME=ADDR (any port); repeatable. Unmatched servers are `_other`. A port named here is
    /// also a service port (as --service-port).
    #[arg(long = "service", value_name = "NAME=ADDR:PORT")]
    pub services: Vec<String>,
    /// File holding the secret for API-key hashes (HMAC-SHA256; at least 16 bytes). Without it,
    /// SIPHON_KEY_HASH_SECRET is used; without both, a random per-process secret (hashes then
    /// differ between restarts and nodes).
    #[arg(long, value_name = "PATH")]
    pub key_hash_secret_file: Option<std::path::PathBuf>,
    /// Proxies in front of the servers whose X-Forwarded-For / Forwarded entries are trusted
    /// (0: the peer address is the client).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=16))]
    pub trusted_proxy_hops: u8,
    /// Bytes of each request/response head the kernel captures (64 to 2048). Default 1024 for
    /// `run` (LIVE_HEAD_CAPTURE_BYTES); `replay` defaults to 2048 (REPLAY_HEAD_CAPTURE_BYTES), as
    /// fidelity matters more than cost offline.
    #[arg(long, value_parser = clap::value_parser!(u32).range(64..=2048))]
    pub head_capture_bytes: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked, raw IP or loopback link types).
    pub capture: std::path::PathBuf,
    /// Write one JSON object per exchange and per TLS ClientHello to this file (`-`: stdout).
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
    /// Write the resulting metrics (Prometheus text format) to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics_out: Option<std::path::PathBuf>,
    /// Do not print progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn parse_ringbuf_bytes(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_power_of_two() || !(1 << 16..=1 << 30).contains(&v) {
        return Err("must be a power of two between 65536 and 1073741824".into());
    }
    Ok(v)
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Auto,
    Tcx,
    Netlink,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("siphon").chain(args.iter().copied()))
    }

    #[test]
    fn run_defaults() {
        let cli = parse(&["run"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert!(a.ifaces.is_empty());
        assert_eq!(a.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(a.sweep_interval, Duration::from_secs(5));
        assert_eq!(a.attach_mode, AttachMode::Auto);
        assert!(!a.no_flows_endpoint, "/flows is served by default");
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        for bad in [
            &["run", "--sweep-interval", "0s"][..],
            &["run", "--sweep-interval", "fast"],
            &["run", "--listen", "nowhere"],
            &["run", "--max-flows", "10"],
            &["run", "--attach-mode", "xdp"],
            &["run", "--iface", "a", "--iface-pattern", "b*"],
            &["run", "--service-port", "70000"],
            &["run", "--ringbuf-bytes", "1000"],
            &["run", "--head-capture-bytes", "9999"],
            &["run", "--trusted-proxy-hops", "-1"],
            &["replay"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn repeatable_ifaces() {
        let cli = parse(&["run", "--iface", "a", "--iface", "b"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.ifaces, ["a", "b"]);
    }

    #[test]
    fn repeatable_iface_patterns() {
        let cli =
            parse(&["run", "--iface-pattern", "eth*", "--iface-pattern=veth*"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.iface_patterns, ["eth*", "veth*"]);
    }
}
