//! `flywheel serve` configuration: one struct for three layers (TOML file < environment <
//! flags). clap reads [`ServeArgs`] from flags and environment, serde reads the same struct
//! from the file, and [`ServeArgs::resolve`] lays the first over the second, then applies the
//! defaults and checks the result. A setting is added in one place: a field of `ServeArgs`
//! (flag, env and file key together), its default in `resolve`, and its README row (a test
//! compares the README's table with the flags).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use upstream::UpstreamConfig;

/// Flags and environment variables of `flywheel serve`, and the keys of its TOML file. Every
/// field is optional so that a lower layer can supply it; [`ServeArgs::resolve`] applies the
/// defaults.
#[derive(Debug, Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML config file (flags and environment override it).
    #[arg(long, env = "FLYWHEEL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FLYWHEEL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (admin key, the SQLite database, hub files) [default: ./flywheel-data].
    #[arg(long, env = "FLYWHEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://DATA_DIR/flywheel.db].
    /// Several processes sharing one PostgreSQL database share tenants, the ledger and limits.
    #[arg(long, env = "FLYWHEEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Free tokens every new tenant gets; 0 turns the grant off [default: 1000000].
    #[arg(long, env = "FLYWHEEL_FREE_GRANT_TOKENS")]
    pub free_grant_tokens: Option<i64>,
    /// Price of a model without a price-book entry, in micro-units per million tokens, as
    /// INPUT,OUTPUT[,CACHED_INPUT] [default: 0,0,0].
    #[arg(long, env = "FLYWHEEL_DEFAULT_PRICE")]
    pub default_price: Option<String>,
    /// Seconds a running request's reservation stays this process's without a heartbeat;
    /// after a crash, another process settles it once the lease expires [default: 30].
    #[arg(long, env = "FLYWHEEL_RESERVATION_LEASE_SECONDS")]
    pub reservation_lease_seconds: Option<u32>,
    /// A model to serve: PATH[=NAME] or hub:ORG/NAME[@REV][#FILE][=NAME] (repeatable).
    /// NAME defaults to the file name without `.gguf`.
    #[arg(long = "model", env = "FLYWHEEL_MODELS", value_delimiter = ',')]
    #[serde(default)]
    pub models: Vec<String>,
    /// Sequence slots per model (decoded together) [default: 16].
    #[arg(long, env = "FLYWHEEL_SLOTS")]
    pub slots: Option<usize>,
    /// Tokens per slot [default: the model's training context, at most 4096].
    #[arg(long, env = "FLYWHEEL_SLOT_CONTEXT")]
    pub slot_context: Option<u32>,
    /// CPU threads per model [default: all cores].
    #[arg(long, env = "FLYWHEEL_THREADS")]
    pub threads: Option<usize>,
    /// Tokens per decode step, the prefill chunk budget [default: 512].
    #[arg(long, env = "FLYWHEEL_STEP_TOKENS")]
    pub step_tokens: Option<usize>,
    /// Requests waiting per model before 429 server_overloaded [default: 256].
    #[arg(long, env = "FLYWHEEL_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Seconds a request may wait in a `--model`'s queue before 503 queue_timeout [default: 60].
    #[arg(long, env = "FLYWHEEL_MAX_QUEUE_WAIT_SECONDS")]
    pub max_queue_wait_seconds: Option<u64>,
    /// Memory the node's replicas may use, in MiB [default: total memory minus the larger of
    /// 1 GiB and 10%].
    #[arg(long, env = "FLYWHEEL_NODE_MEMORY_MIB")]
    pub node_memory_mib: Option<u64>,
    /// CPU threads the node's replicas may use [default: all cores, or the sum of the
    /// `--model`s' threads if larger].
    #[arg(long, env = "FLYWHEEL_NODE_THREADS")]
    pub node_threads: Option<usize>,
    /// Seconds SIGTERM waits for running requests before exiting [default: 30].
    #[arg(long, env = "FLYWHEEL_DRAIN_SECONDS")]
    pub drain_seconds: Option<u64>,
    /// Serve /metrics without the admin key.
    #[arg(long, env = "FLYWHEEL_METRICS_OPEN")]
    pub metrics_open: Option<bool>,
    /// Days a stored response of the Responses API is kept (`store: true`); older ones are
    /// deleted hourly [default: 30].
    #[arg(long, env = "FLYWHEEL_RESPONSES_RETENTION_DAYS")]
    pub responses_retention_days: Option<u32>,
    /// Days a tenant's request log keeps a request; older rows are deleted hourly
    /// [default: 30].
    #[arg(long, env = "FLYWHEEL_REQUEST_LOG_RETENTION_DAYS")]
    pub request_log_retention_days: Option<u32>,
    /// Request log rows waiting for the writer, at most; more are dropped and counted in
    /// `flywheel_request_logs_dropped_total` [default: 65536; 0 turns the log off].
    #[arg(long, env = "FLYWHEEL_REQUEST_LOG_BUFFER")]
    pub request_log_buffer: Option<usize>,
    /// Largest accepted request body in bytes [default: 16 MiB].
    #[arg(long, env = "FLYWHEEL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest audio file one /v1/audio/transcriptions request may carry, in bytes
    /// [default: 25 MiB].
    #[arg(long, env = "FLYWHEEL_MAX_AUDIO_BYTES")]
    pub max_audio_bytes: Option<u64>,
    /// Longest audio one transcription request may carry, in seconds [default: 1800].
    #[arg(long, env = "FLYWHEEL_MAX_AUDIO_SECONDS")]
    pub max_audio_seconds: Option<u64>,
    /// Open client connections in all; more are answered 503 and closed [default: 10000,
    /// lowered to fit the open-file limit].
    #[arg(long, env = "FLYWHEEL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address (IPv6: one /64); more are answered 429 and
    /// closed. Raise it behind a reverse proxy, whose connections share its address [default: 1024].
    #[arg(long, env = "FLYWHEEL_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a request head may take from its first byte before the connection is closed
    /// [default: 30].
    #[arg(long, env = "FLYWHEEL_HEADER_READ_TIMEOUT_SECONDS")]
    pub header_read_timeout_seconds: Option<u64>,
    /// Seconds a connection with no request in flight stays open (new or kept alive); a
    /// running request, streamed or not, is never cut by it [default: 60].
    #[arg(long, env = "FLYWHEEL_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<u64>,
    /// PEM certificate chain to serve HTTPS with (HTTP/2 and HTTP/1.1); with --tls-key. Read
    /// again on SIGHUP [default: plain HTTP].
    #[arg(long, env = "FLYWHEEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLYWHEEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies whose X-Forwarded-For names the client (in logs and per-address
    /// connection caps): comma-separated addresses or CIDR blocks [default: none].
    #[arg(long, env = "FLYWHEEL_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Outbound hosts MCP servers may be reached at besides public addresses: comma-separated
    /// `host[:port]` (loopback, private and link-local addresses are refused unless listed)
    /// [default: public addresses only].
    #[arg(long, env = "FLYWHEEL_MCP_ALLOW_HOSTS")]
    pub mcp_allow_hosts: Option<String>,
    /// Outbound hosts budget alert webhooks may be sent to besides public addresses:
    /// comma-separated `host[:port]` (loopback, private and link-local addresses are refused
    /// unless listed) [default: public addresses only].
    #[arg(long, env = "FLYWHEEL_WEBHOOK_ALLOW_HOSTS")]
    pub webhook_allow_hosts: Option<String>,
    /// Export request traces to this OpenTelemetry collector over OTLP/HTTP (protobuf): its
    /// base URL (`/v1/traces` is added) or the traces URL itself [default: off].
    #[arg(long, env = "FLYWHEEL_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Seconds one request to an MCP server may take [default: 60].
    #[arg(long, env = "FLYWHEEL_MCP_CALL_TIMEOUT_SECONDS")]
    pub mcp_call_timeout_seconds: Option<u64>,
    /// Join a cluster coordinated by etcd: etcd://HOST:PORT[,HOST:PORT…] (needs a PostgreSQL
    /// --database-url) [default: a single process].
    #[arg(long, env = "FLYWHEEL_CLUSTER")]
    pub cluster: Option<String>,
    /// This process's part in the cluster: gateway, node or both [default: both].
    #[arg(long, env = "FLYWHEEL_ROLE")]
    pub role: Option<String>,
    /// Where the other processes of the cluster reach this one, HOST:PORT or a URL
    /// [default: the listen address, loopback if it listens on all addresses].
    #[arg(long, env = "FLYWHEEL_ADVERTISE")]
    pub advertise: Option<String>,
    /// This process's member id in the cluster, stable across restarts [default: the
    /// advertised HOST:PORT].
    #[arg(long, env = "FLYWHEEL_NODE_ID")]
    pub node_id: Option<String>,
    /// File holding the cluster secret, when FLYWHEEL_CLUSTER_SECRET is not set.
    #[arg(long, env = "FLYWHEEL_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Seconds a member's lease lives without renewal: a node silent this long is gone and its
    /// replicas are re-placed [default: 5].
    #[arg(long, env = "FLYWHEEL_CLUSTER_LEASE_SECONDS")]
    pub cluster_lease_seconds: Option<u32>,
    /// Key prefix of this cluster in etcd [default: /flywheel].
    #[arg(long, env = "FLYWHEEL_CLUSTER_PREFIX")]
    pub cluster_prefix: Option<String>,
    /// etcd user, with its password in FLYWHEEL_ETCD_PASSWORD [default: no authentication].
    #[arg(long, env = "FLYWHEEL_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// The `[hub]` table of the file.
    #[command(flatten)]
    #[serde(default)]
    pub hub: crate::hub_config::HubArgs,
    /// The `[files]` table of the file.
    #[command(flatten)]
    #[serde(default)]
    pub files: crate::files_config::FilesArgs,
    /// The `[batch]` table of the file.
    #[command(flatten)]
    #[serde(default)]
    pub batch: crate::batch_config::BatchArgs,
    /// The `[fine_tuning]` table of the file.
    #[command(flatten)]
    #[serde(default)]
    pub fine_tuning: crate::fine_tuning_config::FineTuningArgs,
    /// External OpenAI-compatible servers, each served under its own name (file only:
    /// `[[upstreams]]`).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub upstreams: Vec<UpstreamConfig>,
}

/// A `--model` SPEC: a local GGUF and the name it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The GGUF; for a hub model, found when the hub is open (see `hub`).
    pub path: PathBuf,
    pub name: String,
    /// Set for `hub:ORG/NAME…` specs.
    pub hub: Option<crate::hub_config::HubModelRef>,
}

/// Everything `serve` needs, defaults applied and validated.
#[derive(Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub tenancy: tenancy::TenancyConfig,
    pub models: Vec<ModelSpec>,
    pub upstreams: Vec<UpstreamConfig>,
    pub engine: engine::EngineOptions,
    /// Seconds a request may wait in a `--model`'s queue.
    pub max_queue_wait_seconds: u64,
    /// The node's budgets for replicas; `None` fields: from the machine.
    pub node_memory_mib: Option<u64>,
    pub node_threads: Option<usize>,
    pub drain_seconds: u64,
    pub metrics_open: bool,
    pub max_body_bytes: usize,
    pub audio: gateway::AudioLimits,
    /// How long stored responses are kept.
    pub responses_retention: std::time::Duration,
    /// How long request log rows are kept.
    pub request_log_retention: std::time::Duration,
    /// Request log rows waiting for the writer, at most (0: no log).
    pub request_log_buffer: usize,
    /// Connection caps and timeouts, before the open-file limit is applied (see `serve`).
    pub connections: crate::http::ConnectionLimits,
    /// HTTPS, when set.
    pub tls: Option<crate::http::tls::TlsFiles>,
    pub trusted_proxies: crate::http::proxy::TrustedProxies,
    pub hub: hub::HubConfig,
    pub files: files::FilesConfig,
    pub batch: batch::BatchConfig,
    pub fine_tuning: ::finetune::jobs::JobsConfig,
    /// Where MCP connections may go.
    pub mcp_allow_hosts: mcp::AllowList,
    /// Where budget alert webhooks may go.
    pub webhook_allow_hosts: mcp::AllowList,
    /// The OTLP/HTTP collector traces go to; `None`: no traces.
    pub otlp_endpoint: Option<String>,
    pub mcp_call_timeout: Duration,
    /// Set when this process joins a cluster.
    pub cluster: Option<ClusterConfig>,
}

/// `--cluster` and the flags that go with it, checked.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd endpoints as `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    pub role: control::cluster::Role,
    /// `http://HOST:PORT` others reach this process at.
    pub advertise: String,
    pub id: String,
    pub secret_file: Option<PathBuf>,
    pub lease_seconds: u32,
    pub prefix: String,
    pub etcd_user: Option<String>,
}

impl ClusterConfig {
    fn resolve(args: &ServeArgs, listen: SocketAddr, database_url: &str) -> Result<Option<Self>> {
        let Some(url) = &args.cluster else {
            for (flag, set) in [
                ("--role", args.role.is_some()),
                ("--advertise", args.advertise.is_some()),
                ("--node-id", args.node_id.is_some()),
            ] {
                if set {
                    bail!("{flag} is a cluster setting: give --cluster etcd://HOST:PORT too");
                }
            }
            return Ok(None);
        };
        let endpoints =
            cluster::parse_endpoints(url).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            bail!("--cluster needs a PostgreSQL --database-url (postgres://USER@HOST/DB) shared by every process of the cluster; SQLite is one process's");
        }
        if !args.models.is_empty() {
            bail!("--model does not combine with --cluster: create deployments with POST /admin/v1/deployments (min_replicas says how many replicas the cluster runs)");
        }
        let role = args
            .role
            .as_deref()
            .unwrap_or("both")
            .parse::<control::cluster::Role>()
            .map_err(|e| anyhow::anyhow!("--role: {e}"))?;
        let advertise = match &args.advertise {
            Some(a) if a.starts_with("http://") || a.starts_with("https://") => {
                a.trim_end_matches('/').to_owned()
            }
            Some(a) => {
                a.parse::<SocketAddr>().map_err(|_| {
                    anyhow::anyhow!("--advertise: '{a}' is not HOST:PORT or an http:// URL")
                })?;
                format!("http://{a}")
            }
            None => {
                let ip = if listen.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    listen.ip()
                };
                format!("http://{}", SocketAddr::new(ip, listen.port()))
            }
        };
        let id = match &args.node_id {
            Some(id) => id.clone(),
            None => advertise
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_owned(),
        };
        if id.is_empty() || id.len() > 128 || id.contains('/') {
            bail!("--node-id: '{id}' must be 1 to 128 characters without '/'");
        }
        let lease_seconds = args.cluster_lease_seconds.unwrap_or(5);
        if !(1..=60).contains(&lease_seconds) {
            bail!("--cluster-lease-seconds must be between 1 and 60 (got {lease_seconds})");
        }
        let prefix = args
            .cluster_prefix
            .clone()
            .unwrap_or_else(|| "/flywheel".into());
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            bail!("--cluster-prefix: '{prefix}' must start with '/' and not end with one");
        }
        Ok(Some(Self {
            endpoints,
            role,
            advertise,
            id,
            secret_file: args.cluster_secret_file.clone(),
            lease_seconds,
            prefix,
            etcd_user: args.etcd_user.clone(),
        }))
    }
}

impl ServeArgs {
    /// The file's settings (if `--config` names one) under these, defaults applied, checked.
    pub fn resolve(self) -> Result<ServeConfig> {
        let args = self.over_file()?;
        let defaults = engine::EngineOptions::default();
        let models = args
            .models
            .iter()
            .map(|s| parse_model_spec(s))
            .collect::<Result<Vec<_>>>()?;
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("flywheel-data"));
        let fine_tuning = args.fine_tuning.resolve(&data_dir)?;
        let database_url = args
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("flywheel.db").display()));
        let mut tenancy = tenancy::TenancyConfig::default();
        if let Some(grant) = args.free_grant_tokens {
            tenancy.free_grant_tokens = grant;
        }
        if let Some(price) = &args.default_price {
            tenancy.default_price = parse_price(price)?;
        }
        if let Some(secs) = args.reservation_lease_seconds {
            tenancy.lease = chrono::TimeDelta::seconds(i64::from(secs.max(1)));
        }
        tenancy
            .validate()
            .map_err(|e| anyhow::anyhow!("tenancy settings: {e}"))?;
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let cluster = ClusterConfig::resolve(&args, listen, &database_url)?;
        let config = ServeConfig {
            cluster,
            listen,
            data_dir,
            database_url,
            tenancy,
            models,
            upstreams: args.upstreams,
            engine: engine::EngineOptions {
                slots: args.slots.unwrap_or(defaults.slots),
                slot_context: args.slot_context,
                threads: args.threads.unwrap_or(defaults.threads),
                step_tokens: args.step_tokens.unwrap_or(defaults.step_tokens),
                max_queue: args.max_queue.unwrap_or(defaults.max_queue),
            },
            max_queue_wait_seconds: args.max_queue_wait_seconds.unwrap_or(60),
            node_memory_mib: args.node_memory_mib,
            node_threads: args.node_threads,
            drain_seconds: args.drain_seconds.unwrap_or(30),
            metrics_open: args.metrics_open.unwrap_or(false),
            max_body_bytes: args.max_body_bytes.unwrap_or(16 << 20),
            audio: gateway::AudioLimits {
                max_bytes: args.max_audio_bytes.unwrap_or(25 << 20).max(1),
                max_seconds: args.max_audio_seconds.unwrap_or(1800).max(1),
            },
            responses_retention: std::time::Duration::from_secs(
                u64::from(args.responses_retention_days.unwrap_or(30).max(1)) * 86_400,
            ),
            request_log_retention: std::time::Duration::from_secs(
                u64::from(args.request_log_retention_days.unwrap_or(30).max(1)) * 86_400,
            ),
            request_log_buffer: args.request_log_buffer.unwrap_or(65_536),
            connections: crate::http::ConnectionLimits {
                max_connections: args.max_connections.unwrap_or(10_000),
                max_connections_per_address: args.max_connections_per_address.unwrap_or(1024),
                header_read_timeout: Duration::from_secs(
                    args.header_read_timeout_seconds.unwrap_or(30),
                ),
                idle_timeout: Duration::from_secs(args.idle_timeout_seconds.unwrap_or(60)),
            },
            tls: match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles { cert, key }),
                (None, None) => None,
                _ => bail!(
                    "--tls-cert and --tls-key go together: give both, or neither for plain HTTP"
                ),
            },
            trusted_proxies: crate::http::proxy::TrustedProxies::parse(
                args.trusted_proxies.as_deref().unwrap_or(""),
            )
            .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?,
            hub: args.hub.resolve()?,
            files: args.files.resolve()?,
            batch: args.batch.resolve()?,
            fine_tuning,
            mcp_allow_hosts: mcp::AllowList::parse(args.mcp_allow_hosts.as_deref().unwrap_or(""))
                .map_err(|e| anyhow::anyhow!("--mcp-allow-hosts: {e}"))?,
            webhook_allow_hosts: mcp::AllowList::parse(
                args.webhook_allow_hosts.as_deref().unwrap_or(""),
            )
            .map_err(|e| anyhow::anyhow!("--webhook-allow-hosts: {e}"))?,
            otlp_endpoint: args
                .otlp_endpoint
                .map(|url| check_otlp_endpoint(&url).map(|()| url))
                .transpose()?,
            mcp_call_timeout: Duration::from_secs(
                args.mcp_call_timeout_seconds.unwrap_or(60).clamp(1, 3600),
            ),
        };
        config.validate()?;
        Ok(config)
    }
}

/// `--otlp-endpoint` must be an http(s) URL.
fn check_otlp_endpoint(url: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) || url.len() < 10 {
        bail!("--otlp-endpoint: '{url}' is not an http:// or https:// URL of an OTLP/HTTP collector (such as http://127.0.0.1:4318)");
    }
    Ok(())
}

impl ServeConfig {
    fn validate(&self) -> Result<()> {
        let e = &self.engine;
        if e.slots == 0 || e.slots > 256 {
            bail!("--slots must be between 1 and 256 (got {})", e.slots);
        }
        if e.step_tokens < e.slots {
            bail!(
                "--step-tokens ({}) must be at least --slots ({}): every decoding slot needs a token per step",
                e.step_tokens,
                e.slots
            );
        }
        if e.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if !(1..=3600).contains(&self.max_queue_wait_seconds) {
            bail!(
                "--max-queue-wait-seconds must be between 1 and 3600 (got {})",
                self.max_queue_wait_seconds
            );
        }
        let c = &self.connections;
        if c.max_connections == 0 || c.max_connections_per_address == 0 {
            bail!("--max-connections and --max-connections-per-address must be at least 1");
        }
        for (flag, timeout) in [
            ("--header-read-timeout-seconds", c.header_read_timeout),
            ("--idle-timeout-seconds", c.idle_timeout),
        ] {
            if !(1..=3600).contains(&timeout.as_secs()) {
                bail!(
                    "{flag} must be between 1 and 3600 (got {})",
                    timeout.as_secs()
                );
            }
        }
        if self.node_threads == Some(0) || self.node_memory_mib == Some(0) {
            bail!("--node-threads and --node-memory-mib must be at least 1");
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.extend(self.upstreams.iter().map(|u| u.name.as_str()));
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if !seen.insert(*n) {
                bail!("the served name '{n}' is used twice; give one of them another NAME (PATH=NAME)");
            }
        }
        if names.is_empty() {
            tracing::warn!("no models configured: pass --model PATH[=NAME] or add [[upstreams]] to the config file");
        }
        Ok(())
    }
}

/// `INPUT,OUTPUT[,CACHED_INPUT]` micro-units per million tokens; cached defaults to input.
fn parse_price(text: &str) -> Result<tenancy::PriceRates> {
    let parts = text
        .split(',')
        .map(|p| p.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|p| (2..=3).contains(&p.len()) && p.iter().all(|x| *x >= 0));
    let Some(p) = parts else {
        bail!("--default-price '{text}': expected INPUT,OUTPUT[,CACHED_INPUT], non-negative integers (micro-units per million tokens)");
    };
    Ok(tenancy::PriceRates {
        input_per_million: p[0],
        output_per_million: p[1],
        cached_input_per_million: p.get(2).copied().unwrap_or(p[0]),
    })
}

fn load_file(path: &Path) -> Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

impl ServeArgs {
    /// These settings over the file's: whatever flags or environment set wins; an unset
    /// option or an empty list leaves the file's value.
    fn over_file(self) -> Result<ServeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = load_file(&path)?;
        let upstreams = file.upstreams.clone();
        let mut merged = serde_json::to_value(&file)?;
        overlay(&mut merged, serde_json::to_value(&self)?);
        let mut args: ServeArgs = serde_json::from_value(merged).with_context(|| {
            format!(
                "config file {} does not combine with the flags",
                path.display()
            )
        })?;
        args.config = Some(path);
        args.upstreams = upstreams;
        Ok(args)
    }
}

/// Lays `top` over `base`: tables key by key, anything else replaced unless `top`'s value is
/// unset (null) or an empty list.
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(slot) => overlay(slot, value),
                    None if !unset(&value) => {
                        base.insert(key, value);
                    }
                    None => {}
                }
            }
        }
        (slot, value) if !unset(&value) => *slot = value,
        _ => {}
    }
}

fn unset(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Parse `PATH[=NAME]` or `hub:ORG/NAME[@REV][#FILE][=NAME]`.
pub fn parse_model_spec(spec: &str) -> Result<ModelSpec> {
    if spec.starts_with("hub:") {
        let (hub, name) = crate::hub_config::parse_hub_spec(spec)?;
        return Ok(ModelSpec {
            path: PathBuf::new(),
            name,
            hub: Some(hub),
        });
    }
    let (path, name) = match spec.rsplit_once('=') {
        Some((p, n)) => (p, Some(n)),
        None => (spec, None),
    };
    if path.is_empty() {
        bail!("model '{spec}': the path is empty; expected PATH[=NAME]");
    }
    let path = PathBuf::from(path);
    let name = match name {
        Some(n) => n.to_owned(),
        None => path
            .file_name()
            .and_then(|f| f.to_str())
            .map(|f| f.strip_suffix(".gguf").unwrap_or(f).to_owned())
            .unwrap_or_default(),
    };
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("model '{spec}': the served name must be 1-128 characters without spaces");
    }
    Ok(ModelSpec {
        path,
        name,
        hub: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_validate() {
        let c = ServeArgs::default().resolve().expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.engine.slots, 16);
        assert!(c.models.is_empty());
        assert_eq!(c.connections.max_connections_per_address, 1024);
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn model_specs_parse() {
        let m = parse_model_spec("/m/SmolLM2.Q4.gguf").expect("valid");
        assert_eq!(m.name, "SmolLM2.Q4");
        let m = parse_model_spec("/m/a.gguf=smol").expect("valid");
        assert_eq!(
            (m.path.to_str(), m.name.as_str()),
            (Some("/m/a.gguf"), "smol")
        );
        assert!(parse_model_spec("=x").is_err());
        assert!(parse_model_spec("/a.gguf=has space").is_err());
        assert!(parse_model_spec("hub:org/name").is_ok_and(|m| m.hub.is_some()));
        assert!(parse_model_spec("hub:org").is_err());
    }

    #[test]
    fn flags_override_file_and_file_fills_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.toml");
        std::fs::write(
            &path,
            "slots = 4\nmax_queue = 9\nmodels = [\"/x.gguf=x\"]\n[hub]\nmax_files = 5\nmax_open_uploads = 7\n[[upstreams]]\nname = \"up\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            slots: Some(8),
            hub: crate::hub_config::HubArgs {
                hub_max_files: Some(6),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = args.resolve().expect("valid");
        assert_eq!(c.engine.slots, 8);
        assert_eq!(c.engine.max_queue, 9);
        assert_eq!(c.models[0].name, "x");
        assert_eq!(c.upstreams[0].name, "up");
        // The [hub] table is the same settings: a flag wins, the file fills the rest.
        assert_eq!((c.hub.max_files, c.hub.max_open_uploads), (6, 7));
        // Flags that name models replace the file's list.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let path2 = dir2.path().join("g.toml");
        std::fs::write(&path2, "models = [\"/x.gguf=x\"]\n").expect("write");
        let c = ServeArgs {
            config: Some(path2),
            models: vec!["/y.gguf=y".into()],
            ..Default::default()
        }
        .resolve()
        .expect("valid");
        assert_eq!(c.models.len(), 1);
        assert_eq!(c.models[0].name, "y");
    }

    #[test]
    fn bad_file_and_duplicate_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "slotz = 4\n").expect("write");
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .expect_err("unknown key");
        assert!(format!("{err:#}").contains("slotz"), "{err:#}");
        let err = ServeArgs {
            models: vec!["/a.gguf=m".into(), "/b.gguf=m".into()],
            ..Default::default()
        }
        .resolve()
        .expect_err("duplicate");
        assert!(err.to_string().contains("used twice"));
    }
}
