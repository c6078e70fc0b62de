//! The command line: parse arguments, build what each subcommand needs, run it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::config;
use crate::metrics::Metrics;
use crate::model::WorkloadKey;
use crate::model::crd;
use crate::model::istio::parse_duration;
use crate::xds::bootstrap::{BootstrapParams, bootstrap};
use crate::xds::cache::XdsSnapshot;
use crate::xds::server::{self, AdsShared, status::SyncRegistry};

/// pilotfish: an Istio-compatible service-mesh control plane for stock Envoy.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `pilotfish=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve xDS to Envoy from a directory of Istio YAML.
    Serve(ServeArgs),
    /// Print an Envoy bootstrap for one workload's sidecar.
    Bootstrap(BootstrapArgs),
    /// Check Istio YAML files or directories (`-` reads stdin); exit 1 on any problem.
    Validate(ValidateArgs),
    /// Check Istio YAML resources against each other (missing hosts, subsets,
    /// gateways; conflicts; unreachable rules); exit 1 on any Error.
    /// Codes: docs/analyze.md.
    Analyze(ValidateArgs),
    /// Each connected proxy's sync state per xDS type (like istioctl proxy-status).
    ProxyStatus(AdminClientArgs),
    /// What pilotfish last sent one proxy: clusters, listeners, routes,
    /// endpoints or secrets (keys redacted).
    ProxyConfig(ProxyConfigArgs),
    /// Load generator: simulated Envoys, generated scenarios, the floor server.
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Print the CustomResourceDefinitions of the kinds pilotfish reads (YAML).
    Crds(CrdsArgs),
    /// Rotate the CA's root on a running pilotfish: `begin` (a new root signs,
    /// both are trusted, every workload is re-issued), then `finish` (the
    /// old root is no longer trusted) once every proxy has a new certificate.
    RotateRoot(RotateRootArgs),
}

#[derive(clap::Args, Debug)]
pub struct RotateRootArgs {
    #[arg(value_parser = ["begin", "finish"])]
    pub step: String,
    /// pilotfish's admin address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub admin_address: String,
}

#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory (`<plural>.<group>.yaml`)
    /// instead of printing them all.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct AdminClientArgs {
    /// pilotfish's admin address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub admin_address: String,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: ValidateFormat,
}

#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// Node id or namespace/workload (see proxy-status).
    pub proxy: String,
    /// clusters | listeners | routes | endpoints | secrets
    pub kind: String,
    #[command(flatten)]
    pub admin: AdminClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Files or directories (searched for *.yaml / *.yml); `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// `text`: one line per problem; `json`: an array of problems.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: ValidateFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Directory of Istio YAML (*.yaml, *.yml, searched recursively), watched for changes.
    #[arg(
        long,
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config_dir: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// With --kubernetes: only namespaces whose labels match this selector
    /// (`key=value[,key=value...]`, all must match) are in the mesh; repeat
    /// for alternatives (Istio's discoverySelectors). Default: every namespace.
    #[arg(long, requires = "kubernetes", value_parser = clap::value_parser!(crate::kube::convert::LabelSelector))]
    pub discovery_selector: Vec<crate::kube::convert::LabelSelector>,
    /// ADS (gRPC) listen address: TLS with pilotfish's certificate, and every
    /// proxy must present the credential `pilotfish bootstrap` gives it.
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub xds_address: SocketAddr,
    /// Also serve ADS in plaintext WITHOUT authentication here (Istio's
    /// 15010): for trusted networks, debugging and the load generator. Off
    /// by default; keep it on loopback.
    #[arg(long)]
    pub plaintext_xds_address: Option<SocketAddr>,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics, /debug/*).
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub admin_address: SocketAddr,
    /// Quiet time after a file change before the config is re-read.
    #[arg(long, default_value = "100ms", value_parser = duration_arg)]
    pub debounce: Duration,
    #[command(flatten)]
    pub ca: CaArgs,
    /// Lifetime of workload certificates; they are re-issued at half-life.
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    pub cert_ttl: Duration,
    /// Lifetime of pilotfish's own xDS serving certificate; re-issued at
    /// half-life while running, and at once when a root rotation finishes.
    #[arg(long, default_value = "2160h", value_parser = duration_arg)]
    pub serving_cert_ttl: Duration,
    /// Cap on istio_* label sets the telemetry sink keeps; samples that
    /// would open more are dropped and counted.
    #[arg(long, default_value_t = crate::telemetry::series::DEFAULT_MAX_SERIES)]
    pub telemetry_max_series: usize,
    /// With --kubernetes: the namespace of the Lease that elects the one
    /// replica allowed to write (pilotfish's own namespace).
    #[arg(long, default_value = "istio-system")]
    pub leader_election_namespace: String,
    /// With --kubernetes: the audience proxies' ServiceAccount tokens must
    /// carry (checked with the TokenReview API), Istio's `istio-ca` by default.
    #[arg(long, default_value = "istio-ca")]
    pub xds_token_audience: String,
    /// With --kubernetes: this replica's name in the Lease, unique among
    /// replicas (the pod name). Default: the host name.
    #[arg(long, requires = "kubernetes")]
    pub leader_election_identity: Option<String>,
    /// The Zipkin-compatible collector (`host:port`, v2 JSON API) that
    /// Telemetry resources' `zipkin` tracing provider reports spans to.
    #[arg(long)]
    pub zipkin_address: Option<String>,
    /// Gateway certificates named by `credentialName`: NAME.crt and NAME.key
    /// (PEM), plus NAME.ca (client CA) for MUTUAL. Read only; polled for
    /// changes; served over SDS only to gateways whose Gateways name them.
    #[arg(long)]
    pub credentials_dir: Option<PathBuf>,
    /// The validating admission webhook (AdmissionReview v1, `POST
    /// /validate`, HTTPS with a certificate from pilotfish's CA), as
    /// istiod's port 15017; `off` to not serve it.
    #[arg(long, default_value = "127.0.0.1:15017", value_parser = webhook_address)]
    pub webhook_address: WebhookAddress,
    /// DNS names in the webhook's certificate: what the API server calls it
    /// (the Service's `NAME.NAMESPACE.svc`). Repeat for more.
    #[arg(long, default_value = "pilotfish.istio-system.svc")]
    pub webhook_dns_name: Vec<String>,
    /// With --kubernetes: the ValidatingWebhookConfiguration whose caBundle
    /// the Lease holder keeps equal to the CA's roots (and switches to
    /// `failurePolicy: Fail`), as istiod's webhook controller does.
    #[arg(long, default_value = crate::kube::webhook_config::WEBHOOK_CONFIG)]
    pub webhook_config_name: String,
    /// Mesh-wide outboundTrafficPolicy (meshConfig's): ALLOW_ANY forwards
    /// requests for hosts outside the registry to where their Host header
    /// points, REGISTRY_ONLY answers them with 502. A Sidecar resource's
    /// `outboundTrafficPolicy` overrides it for the workloads it selects.
    #[arg(long, default_value = "ALLOW_ANY", value_parser = outbound_policy_arg)]
    pub outbound_traffic_policy: crate::xds::translate::OutboundMode,
    /// How long a WorkloadEntry auto-registered for a WorkloadGroup stays
    /// after its proxy disconnects (Istio's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD):
    /// a reconnect within it keeps the entry.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub workload_entry_grace_period: Duration,
}

/// `--webhook-address`: an address, or `off`.
#[derive(Clone, Copy, Debug)]
pub struct WebhookAddress(pub Option<SocketAddr>);

fn webhook_address(s: &str) -> Result<WebhookAddress, String> {
    if s == "off" {
        return Ok(WebhookAddress(None));
    }
    s.parse()
        .map(|a| WebhookAddress(Some(a)))
        .map_err(|e| format!("{e}: expected HOST:PORT or off"))
}

fn outbound_policy_arg(s: &str) -> Result<crate::xds::translate::OutboundMode, String> {
    use crate::xds::translate::OutboundMode;
    match s {
        "ALLOW_ANY" => Ok(OutboundMode::AllowAny),
        "REGISTRY_ONLY" => Ok(OutboundMode::RegistryOnly),
        _ => Err(format!("{s:?}: expected ALLOW_ANY or REGISTRY_ONLY")),
    }
}

/// The Kubernetes API as the source of services, workloads and Istio config.
#[derive(clap::Args, Debug)]
pub struct KubeArgs {
    /// Read Services, EndpointSlices, Pods, Namespaces and the Istio CRDs from
    /// the Kubernetes API (instead of --config-dir).
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubeconfig file to use; default: $KUBECONFIG, ~/.kube/config, then
    /// the in-cluster service account.
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
}

/// Where the CA lives; `serve` and `bootstrap` must be given the same.
#[derive(clap::Args, Debug)]
pub struct CaArgs {
    /// pilotfish's state directory: the self-signed root CA (created on first
    /// start, key mode 0600) and the key that signs proxies' xDS credentials.
    #[arg(long, default_value = ".pilotfish")]
    pub state_dir: PathBuf,
    /// Plugged-in CA: a directory with Istio's cacerts files (ca-cert.pem,
    /// ca-key.pem, root-cert.pem, cert-chain.pem) instead of the self-signed root.
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// The WorkloadEntry this sidecar runs beside; in Kubernetes, its pod's name.
    #[arg(long, required_unless_present = "workload_group")]
    pub workload: Option<String>,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// A sidecar that auto-registers with this WorkloadGroup (`NAMESPACE/NAME`,
    /// or `NAME` in --namespace) instead of naming a WorkloadEntry:
    /// pilotfish makes its entry from the group's template when it
    /// connects. Needs --address.
    #[arg(long, conflicts_with_all = ["workload", "kubernetes", "gateway"], requires = "address")]
    pub workload_group: Option<String>,
    /// With --workload-group: the workload's IP address (Istio's
    /// INSTANCE_IPS), where its sidecar binds.
    #[arg(long, requires = "workload_group")]
    pub address: Option<std::net::IpAddr>,
    /// With --workload-group and no --config-dir: the service account the
    /// credential names (it must be the group template's). With
    /// --config-dir it is read from the template.
    #[arg(long, requires = "workload_group")]
    pub service_account: Option<String>,
    /// Config directory: when given, the WorkloadEntry must exist there and
    /// its address goes into the node id.
    #[arg(long, conflicts_with = "kubernetes")]
    pub config_dir: Option<PathBuf>,
    /// With --kubernetes the pod named by --workload/--namespace must exist
    /// and have an IP: its IP goes into the node id, its service account
    /// into the credential.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Where Envoy reaches pilotfish's ADS server (host:port).
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub xds_address: String,
    /// The CA and credential key, as `serve` uses them.
    #[command(flatten)]
    pub ca: CaArgs,
    /// How long the proxy's xDS credential is valid.
    #[arg(long, default_value = "720h", value_parser = duration_arg)]
    pub token_ttl: Duration,
    /// For a `--plaintext-xds-address` port: no TLS, no credential.
    #[arg(long)]
    pub plaintext: bool,
    /// Envoy's admin listener (host:port). Keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_address: String,
    /// Use delta (incremental) xDS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// Also stream Envoy's own stats to pilotfish's MetricsService sink
    /// (every 15 s). Off by default: Envoy sends every stat it has (about
    /// 80 per cluster), megabytes per flush in a large mesh; the istio_*
    /// metrics come from access logs either way.
    #[arg(long)]
    pub metrics_sink: bool,
    /// An ingress gateway proxy: Istio's `router~` node id. (What makes a
    /// workload a gateway is a Gateway whose selector matches its labels;
    /// with --config-dir this checks that one does.)
    #[arg(long)]
    pub gateway: bool,
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    pub output: Format,
    /// Write the bootstrap to this file instead of stdout (an init
    /// container in an image without a shell).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --kubernetes: the namespace where pilotfish runs; the CA root
    /// is read from its `istio-ca-root-cert` ConfigMap (unless --ca-dir).
    #[arg(long, default_value = "istio-system", requires = "kubernetes")]
    pub ca_namespace: String,
    /// The proxy's credential is this file's contents (the pod's projected
    /// ServiceAccount token, e.g. /var/run/secrets/tokens/istio-token),
    /// re-read by Envoy when it is replaced, instead of a token pilotfish
    /// signs. pilotfish checks it with the TokenReview API.
    #[arg(long, conflicts_with = "plaintext")]
    pub token_file: Option<PathBuf>,
    /// With --token-file: where to write the small SDS file that points
    /// Envoy at the token (default: xds-token-sds.json beside --out).
    #[arg(long, requires = "token_file")]
    pub token_sds_file: Option<PathBuf>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bootstrap(args) => print_bootstrap(args),
        Command::Loadgen(args) => crate::loadgen::run(args),
        Command::Validate(args) => return validate(args),
        Command::Analyze(args) => return analyze(args),
        Command::Crds(args) => print_crds(args),
        Command::RotateRoot(a) => admin::client::rotate_root(&a.admin_address, &a.step)
            .map(|roots| println!("root rotation: {} done; {roots} root(s) trusted", a.step)),
        Command::ProxyStatus(a) => {
            admin::client::proxy_status(&a.admin_address, matches!(a.output, ValidateFormat::Json))
                .map(|s| print!("{s}"))
        }
        Command::ProxyConfig(a) => admin::client::proxy_config(
            &a.admin.admin_address,
            &a.proxy,
            &a.kind,
            matches!(a.admin.output, ValidateFormat::Json),
        )
        .map(|s| print!("{s}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pilotfish: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pilotfish validate`: exit 0 when every document is valid, 1 otherwise.
fn validate(args: ValidateArgs) -> ExitCode {
    let mut problems: Vec<config::ConfigError> = Vec::new();
    let mut warnings: Vec<config::ConfigError> = Vec::new();
    let mut documents = 0usize;
    for path in &args.paths {
        for (file, text) in read_inputs(path, &mut problems) {
            let parsed = config::parse_file(&file, &text);
            documents += parsed.resources.len() + parsed.errors.len();
            problems.extend(parsed.errors);
            warnings.extend(parsed.warnings);
        }
    }
    match args.output {
        ValidateFormat::Text => {
            for p in &problems {
                println!("{p}");
            }
            // Istio's warnings: reported, but the documents are valid.
            for w in &warnings {
                println!("warning: {w}");
            }
            if problems.is_empty() {
                eprintln!("{documents} resource(s) valid");
            }
        }
        ValidateFormat::Json => {
            match serde_json::to_string_pretty(&problems) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("pilotfish: error: {e}"),
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `pilotfish analyze`: validation problems (IST0106) and cross-resource
/// findings; exit 1 when any is an Error.
fn analyze(args: ValidateArgs) -> ExitCode {
    use config::analyze::{Code, Level, Message};
    let mut unreadable: Vec<config::ConfigError> = Vec::new();
    let mut resources = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for path in &args.paths {
        for (file, text) in read_inputs(path, &mut unreadable) {
            let parsed = config::parse_file(&file, &text);
            for e in parsed.errors {
                let code = Code::SchemaValidationError;
                messages.push(Message {
                    level: code.level(),
                    code: code.id(),
                    name: code.name(),
                    resource: e.resource.clone().unwrap_or_default(),
                    file: e.file.clone(),
                    document: e.document.unwrap_or_default(),
                    path: e.path.clone().unwrap_or_default(),
                    message: e.message.clone(),
                    key: None,
                });
            }
            resources.extend(parsed.resources);
        }
    }
    for e in &unreadable {
        eprintln!("pilotfish: error: {e}");
    }
    let count = resources.len();
    messages.extend(config::analyze::analyze(&config::analyze::snapshot_of(
        resources,
    )));
    match args.output {
        ValidateFormat::Text => {
            for m in &messages {
                println!("{m}");
            }
        }
        ValidateFormat::Json => match serde_json::to_string_pretty(&messages) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("pilotfish: error: {e}"),
        },
    }
    let n = |l: Level| messages.iter().filter(|m| m.level == l).count();
    let errors = n(Level::Error);
    if messages.is_empty() {
        eprintln!("no issues found when analyzing {count} resource(s)");
    } else {
        eprintln!(
            "{count} resource(s) analyzed: {errors} error(s), {} warning(s), {} info",
            n(Level::Warning),
            n(Level::Info)
        );
    }
    if errors == 0 && unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The YAML texts named by one `validate` argument.
fn read_inputs(
    path: &std::path::Path,
    problems: &mut Vec<config::ConfigError>,
) -> Vec<(PathBuf, String)> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        let limit = config::store::MAX_FILE_BYTES;
        return match std::io::stdin().take(limit + 1).read_to_string(&mut text) {
            Ok(n) if n as u64 > limit => {
                problems.push(config::ConfigError::file(
                    path,
                    format!("stdin has more than {limit} bytes; the limit is {limit}"),
                ));
                Vec::new()
            }
            Ok(_) => vec![(PathBuf::from("<stdin>"), text)],
            Err(e) => {
                problems.push(config::ConfigError::file(
                    path,
                    format!("cannot read stdin: {e}"),
                ));
                Vec::new()
            }
        };
    }
    let files = if path.is_dir() {
        match config::store::yaml_files(path) {
            Ok(files) => files,
            Err(e) => {
                problems.push(config::ConfigError::file(
                    path,
                    format!("cannot read directory: {e}"),
                ));
                return Vec::new();
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .filter_map(|f| match read_limited(&f) {
            Ok(text) => Some((f, text)),
            Err(e) => {
                problems.push(config::ConfigError::file(&f, format!("cannot read: {e}")));
                None
            }
        })
        .collect()
}

/// A config file's text, refused when larger than serve mode reads.
fn read_limited(path: &std::path::Path) -> std::io::Result<String> {
    let limit = config::store::MAX_FILE_BYTES;
    let len = std::fs::metadata(path)?.len();
    if len > limit {
        return Err(std::io::Error::other(format!(
            "file is {len} bytes; the limit is {limit}"
        )));
    }
    std::fs::read_to_string(path)
}

fn split_host_port(s: &str, what: &str) -> Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{what} {s:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("{what} {s:?}: bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// What a bootstrap for a WorkloadGroup member needs: the request its node
/// carries, and the template's service account and locality when the
/// config is at hand.
fn group_member(
    args: &BootstrapArgs,
    group: &str,
) -> Result<(
    crate::model::autoregister::Request,
    Option<String>,
    Option<String>,
)> {
    let (namespace, name) = match group.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (args.namespace.clone(), group.to_string()),
    };
    let Some(ip) = args.address else {
        bail!("--workload-group needs --address (the workload's IP)");
    };
    let req = crate::model::autoregister::Request {
        namespace,
        group: name,
        ip: ip.to_string(),
        network: None,
        locality: None,
        labels: Default::default(),
    };
    let Some(dir) = &args.config_dir else {
        return Ok((req, args.service_account.clone(), None));
    };
    let (_, state) =
        config::watch::load(dir, &Metrics::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some((_, g)) = crate::model::autoregister::group(&state.snapshot, &req) else {
        bail!(
            "no WorkloadGroup {}/{} in {} (known: {})",
            req.namespace,
            req.group,
            dir.display(),
            state
                .snapshot
                .workload_groups()
                .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let sa = crate::model::autoregister::service_account(g, args.service_account.as_deref())
        .map_err(|e| anyhow::anyhow!("--service-account: {e}"))?;
    Ok((req, sa, g.template.locality.clone()))
}

fn print_bootstrap(args: BootstrapArgs) -> Result<()> {
    let member = match &args.workload_group {
        Some(g) => Some(group_member(&args, g)?),
        None => None,
    };
    let workload = match &member {
        Some((req, _, _)) => req.entry_key(),
        None => WorkloadKey {
            namespace: args.namespace.clone(),
            name: args.workload.clone().unwrap_or_default(),
        },
    };
    let mut ip = None;
    let mut service_account = None;
    let mut locality = None;
    if let Some((req, sa, loc)) = &member {
        ip = Some(req.ip.clone());
        service_account = sa.clone();
        locality = loc.clone();
    } else if let Some(dir) = &args.config_dir {
        let (_, state) =
            config::watch::load(dir, &Metrics::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let registry = crate::model::Registry::build(&state.snapshot);
        match registry.workloads.get(&workload) {
            Some(w) => {
                ip = Some(w.address.clone());
                service_account = w.service_account.clone();
                locality = w.locality.clone();
                let mesh = crate::xds::translate::Mesh::new(&state.snapshot, &registry);
                let gateway = crate::xds::translate::gateway::is_gateway(&mesh, w);
                if args.gateway && !gateway {
                    eprintln!(
                        "pilotfish: warning: no Gateway selects {workload} (labels {:?}): it gets no gateway listeners until one does",
                        w.labels
                    );
                }
            }
            None => bail!(
                "no WorkloadEntry {workload} in {} (known: {})",
                dir.display(),
                registry
                    .workloads
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let mut kube_root = None;
    if args.kube.kubernetes {
        let want_root = args.ca.ca_dir.is_none() && !args.plaintext;
        let (pod, root) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?
            .block_on(async {
                let client = crate::kube::client(args.kube.kubeconfig.as_deref()).await?;
                let pod =
                    crate::kube::pod_identity(client.clone(), &workload.namespace, &workload.name)
                        .await?;
                let root = match want_root {
                    true => {
                        Some(crate::kube::ca_secret::read_root(client, &args.ca_namespace).await?)
                    }
                    false => None,
                };
                Ok::<_, crate::kube::KubeError>((pod, root))
            })?;
        ip = Some(pod.ip);
        service_account = Some(pod.service_account);
        kube_root = root;
    }
    let token_file = match &args.token_file {
        None => None,
        Some(path) => {
            let sds_path = match (&args.token_sds_file, &args.out) {
                (Some(p), _) => p.clone(),
                (None, Some(out)) => out
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("xds-token-sds.json"),
                (None, None) => bail!(
                    "--token-file needs --out or --token-sds-file (where the SDS file pointing Envoy at the token goes)"
                ),
            };
            let t = crate::xds::bootstrap::TokenFile {
                path: path.display().to_string(),
                sds_path: sds_path.display().to_string(),
            };
            let sds = serde_json::to_string_pretty(&crate::xds::bootstrap::token_sds(&t))?;
            std::fs::write(&sds_path, sds + "\n")
                .with_context(|| format!("writing {}", sds_path.display()))?;
            Some(t)
        }
    };
    let (xds_host, xds_port) = split_host_port(&args.xds_address, "--xds-address")?;
    let (admin_host, admin_port) = split_host_port(&args.admin_address, "--admin-address")?;
    let security = if args.plaintext {
        None
    } else {
        let roots_pem = match kube_root {
            Some(r) => r,
            None => open_ca(&args.ca)?.roots_pem(),
        };
        // A token file needs no key: the API server vouches for it.
        let token = match &token_file {
            Some(_) => String::new(),
            None => {
                let key = crate::ca::token::TokenKey::load_or_create(&args.ca.state_dir)?;
                key.sign(
                    crate::ca::token::Claims {
                        namespace: workload.namespace.clone(),
                        service_account: service_account.unwrap_or_else(|| "default".into()),
                        // A group member's credential names its service
                        // account only (as a VM's ServiceAccount token
                        // does): its entry is made when it connects.
                        workload: match &member {
                            Some(_) => String::new(),
                            None => workload.name.clone(),
                        },
                        exp: 0,
                    },
                    args.token_ttl,
                )
            }
        };
        Some(crate::xds::bootstrap::XdsSecurity {
            roots_pem,
            server_identity: server_identity(&args.ca.trust_domain)?.spiffe_uri(),
            token,
            token_file,
        })
    };
    let mut b = bootstrap(&BootstrapParams {
        workload,
        ip,
        xds_host,
        xds_port,
        admin_host,
        admin_port,
        delta: args.delta,
        metrics_sink: args.metrics_sink,
        security,
    });
    if args.gateway {
        crate::xds::bootstrap::as_gateway(&mut b);
    }
    if let Some((req, _, _)) = &member {
        crate::xds::bootstrap::as_group_member(&mut b, &req.group, &req.ip);
    }
    if let Some(l) = &locality {
        crate::xds::bootstrap::set_locality(&mut b, l);
    }
    let text = match args.output {
        Format::Yaml => serde_yaml_ng::to_string(&b)?,
        Format::Json => serde_json::to_string_pretty(&b)? + "\n",
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `pilotfish crds`: the CRDs as one multi-document YAML stream, or one file each.
fn print_crds(args: CrdsArgs) -> Result<()> {
    let crds = crd::crds()?;
    let Some(dir) = args.out_dir else {
        let mut out = String::new();
        for c in &crds {
            out.push_str("---\n");
            out.push_str(&crd::to_yaml(c)?);
        }
        print!("{out}");
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for c in &crds {
        let path = dir.join(crd::file_name(c));
        std::fs::write(&path, crd::to_yaml(c)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// pilotfish's own identity, in its xDS serving certificate.
fn server_identity(trust_domain: &str) -> Result<crate::ca::Identity> {
    crate::ca::Identity::new(trust_domain, "istio-system", "pilotfish")
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn open_ca(ca: &CaArgs) -> Result<crate::ca::Ca> {
    match &ca.ca_dir {
        Some(dir) => crate::ca::Ca::from_cacerts(dir, &ca.trust_domain),
        None => crate::ca::Ca::load_or_create(&ca.state_dir, &ca.trust_domain),
    }
    .map_err(|e| anyhow::anyhow!("certificate authority: {e}"))
}

fn serve(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(run_serve(args))
}

async fn run_serve(args: ServeArgs) -> Result<()> {
    let (metrics, mut registry) = Metrics::new();
    let source = ConfigSource::open(&args, &metrics).await?;
    let (config_tx, config_rx) = watch::channel(Arc::new(source.initial));
    // The model: the source's config plus the WorkloadEntries proxies of
    // WorkloadGroups auto-registered (in memory only).
    let autoreg = crate::xds::autoregister::AutoRegistry::new(
        config_rx.clone(),
        args.workload_entry_grace_period,
        metrics.clone(),
    );
    let (model_tx, model_rx) = watch::channel(Arc::clone(&config_rx.borrow()));
    tokio::spawn(crate::xds::autoregister::run(autoreg.clone(), model_tx));
    let (xds_tx, xds_rx) = watch::channel(Arc::new(XdsSnapshot::default()));
    let syncs = SyncRegistry::default();

    let xds_listener = server::listen(args.xds_address)
        .with_context(|| format!("bind xDS address {}", args.xds_address))?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_address)
        .await
        .with_context(|| format!("bind admin address {}", args.admin_address))?;
    info!(xds = %xds_listener.local_addr()?, admin = %admin_listener.local_addr()?, "listening");
    let webhook_listener = match args.webhook_address.0 {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("bind webhook address {addr} (--webhook-address off to not serve it)")
        })?),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut kube_client = None;
    let mut leader = None;
    let mut mesh_namespaces = None;
    match source.follow {
        Follow::Files(dir, store) => {
            tokio::spawn(config::watch::run(
                dir,
                store,
                args.debounce,
                config_tx,
                metrics.clone(),
            ));
        }
        Follow::Kubernetes(client) => {
            let (seen_tx, seen_rx) = watch::channel(Default::default());
            let (namespaces_tx, namespaces_rx) = watch::channel(Default::default());
            mesh_namespaces = Some(namespaces_rx);
            let opts = crate::kube::Options {
                debounce: args.debounce,
                discovery_selectors: args.discovery_selector.clone(),
                seen: Some(seen_tx),
                namespaces: Some(namespaces_tx),
            };
            tokio::spawn(crate::kube::run(
                client.clone(),
                opts,
                config_tx,
                metrics.clone(),
            ));
            let election =
                spawn_leader_election(client.clone(), &args, &metrics, stopped(stop_rx.clone()));
            // Status on Istio objects: written by the Lease holder only.
            tokio::spawn(crate::kube::status::run(
                client.clone(),
                config_rx.clone(),
                seen_rx,
                election.0.clone(),
            ));
            leader = Some(election);
            kube_client = Some(client);
        }
    }
    let (ca, ca_in_secret) = match (&kube_client, &leader, &args.ca.ca_dir) {
        // In Kubernetes the root lives in a Secret every replica shares.
        (Some(client), Some((is_leader, _)), None) => (
            crate::kube::ca_secret::load(
                client.clone(),
                &args.leader_election_namespace,
                &args.ca.trust_domain,
                is_leader.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
            true,
        ),
        _ => (open_ca(&args.ca)?, false),
    };
    // The trust bundle, followed by the root ConfigMaps and the webhook's
    // caBundle; it changes when a CA Secret does.
    let (roots_tx, roots_rx) = watch::channel(ca.roots_pem());
    if let (Some(client), Some((is_leader, _)), Some(namespaces)) =
        (&kube_client, &leader, mesh_namespaces)
    {
        // The public root in every namespace of the mesh (istiod's).
        tokio::spawn(crate::kube::root_configmap::run(
            client.clone(),
            args.leader_election_namespace.clone(),
            roots_rx.clone(),
            namespaces,
            is_leader.clone(),
        ));
    }
    metrics.record_ca_expiry(&ca);
    info!(trust_domain = %args.ca.trust_domain, cert_ttl = ?args.cert_ttl, plugged = args.ca.ca_dir.is_some(), "certificate authority ready");
    let token_key = Arc::new(
        crate::ca::token::TokenKey::load_or_create(&args.ca.state_dir)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut auth = crate::ca::auth::Authenticator::new(token_key);
    if let Some(client) = &kube_client {
        // Proxies in pods present their ServiceAccount token.
        auth = auth.with_reviewer(Arc::new(crate::kube::tokenreview::TokenReviewer::new(
            client.clone(),
            args.xds_token_audience.clone(),
        )));
    }
    let ca = Arc::new(ca);
    // pilotfish's own serving certificate for the xDS port, renewed at
    // half its lifetime and re-issued when a root rotation finishes.
    let serving = crate::ca::serving::ServingCert::new(
        Arc::clone(&ca),
        server_identity(&args.ca.trust_domain)?,
        args.serving_cert_ttl,
    )
    .map_err(|e| anyhow::anyhow!("xDS {e}"))?;
    let tls = Some(Arc::new(
        serving
            .server_config()
            .map_err(|e| anyhow::anyhow!("xDS {e}"))?,
    ));
    let serving_renewal = tokio::spawn(Arc::clone(&serving).keep_fresh());
    let mut serving_certs = vec![Arc::clone(&serving)];
    if let Some(listener) = webhook_listener {
        // The webhook's certificate: pilotfish's identity plus the DNS names
        // the API server calls it by; renewed like the xDS one.
        let cert = crate::ca::serving::ServingCert::with_dns(
            Arc::clone(&ca),
            server_identity(&args.ca.trust_domain)?,
            args.webhook_dns_name.clone(),
            args.serving_cert_ttl,
        )
        .map_err(|e| anyhow::anyhow!("webhook {e}"))?;
        let tls = Arc::new(
            cert.server_config_alpn(&[b"h2", b"http/1.1"])
                .map_err(|e| anyhow::anyhow!("webhook {e}"))?,
        );
        info!(address = %listener.local_addr()?, names = ?args.webhook_dns_name, "admission webhook listening");
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(Arc::clone(&cert).keep_fresh());
        serving_certs.push(Arc::clone(&cert));
        // The API server verifies the webhook with the CA's roots, which the
        // Lease holder keeps in the ValidatingWebhookConfiguration.
        if let (Some(client), Some((is_leader, _))) = (&kube_client, &leader) {
            tokio::spawn(crate::kube::webhook_config::keep_ca_bundle(
                client.clone(),
                args.webhook_config_name.clone(),
                args.leader_election_namespace.clone(),
                roots_rx.clone(),
                is_leader.clone(),
                crate::kube::webhook_config::CHECK,
            ));
        }
        tokio::spawn(async move {
            if let Err(e) = config::webhook::serve(listener, tls, shutdown).await {
                tracing::error!(error = %e, "admission webhook stopped");
            }
        });
    }
    let certs = crate::xds::secrets::CertBook::new(Arc::clone(&ca), args.cert_ttl);
    // Kept open for the whole run: the root and webhook publishers follow it.
    let mut _roots_tx = Some(roots_tx);
    let mut remote_rotation: Option<admin::RemoteRotation> = None;
    if let (true, Some(client), Some((is_leader, _))) = (ca_in_secret, &kube_client, &leader) {
        // Every replica adopts a changed CA Secret; the Lease holder
        // writes rotation steps into istio-ca-secret.
        tokio::spawn(crate::kube::ca_secret::follow(
            crate::kube::ca_secret::Follower {
                client: client.clone(),
                namespace: args.leader_election_namespace.clone(),
                trust_domain: args.ca.trust_domain.clone(),
                ca: Arc::clone(&ca),
                roots_changed: certs.roots_changed(),
                roots: _roots_tx.take().expect("roots sender"),
                serving: serving_certs,
                metrics: metrics.clone(),
            },
        ));
        let (client, namespace, leader) = (
            client.clone(),
            args.leader_election_namespace.clone(),
            is_leader.clone(),
        );
        remote_rotation = Some(Arc::new(move |step: String| {
            let (client, namespace, leader) = (client.clone(), namespace.clone(), leader.clone());
            Box::pin(async move {
                crate::kube::ca_secret::rotate(client, &namespace, &step, &leader)
                    .await
                    .map_err(|e| e.to_string())
            })
        }));
    }
    let rotation = admin::Rotation {
        ca: Arc::clone(&ca),
        roots_changed: certs.roots_changed(),
        serving: Some(Arc::clone(&serving)),
        metrics: metrics.clone(),
        remote: remote_rotation,
    };
    let creds = match (&args.credentials_dir, &kube_client) {
        (Some(dir), _) if !dir.is_dir() => {
            bail!("--credentials-dir {}: not a directory", dir.display())
        }
        (Some(dir), _) => Some(crate::xds::credentials::CredentialDir::new(dir.clone())),
        // In Kubernetes, credentialName names a Secret in the gateway's namespace.
        (None, Some(client)) => {
            let (tx, rx) = watch::channel(Arc::default());
            tokio::spawn(crate::kube::secrets::run(client.clone(), tx));
            Some(crate::xds::credentials::CredentialDir::kubernetes(rx))
        }
        (None, None) => None,
    };
    tokio::spawn(crate::xds::run_translator(
        model_rx.clone(),
        xds_tx,
        Some(certs),
        creds,
        metrics.clone(),
        args.zipkin_address.clone(),
        args.outbound_traffic_policy,
    ));
    let telemetry = crate::telemetry::Telemetry::new(metrics.clone(), args.telemetry_max_series);
    registry.register_collector(Box::new(Arc::clone(&telemetry.sink.series)));
    tokio::spawn(
        telemetry
            .clone()
            .follow(xds_rx.clone(), Some(args.ca.trust_domain.clone())),
    );
    let shared = AdsShared {
        snapshots: xds_rx.clone(),
        metrics: metrics.clone(),
        syncs: syncs.clone(),
        auth: Some(auth),
        autoreg: Some(autoreg.clone()),
    };
    if let Some(addr) = args.plaintext_xds_address {
        let listener =
            server::listen(addr).with_context(|| format!("bind plaintext xDS address {addr}"))?;
        tracing::warn!(%addr, "serving xDS in plaintext without authentication");
        let plain = AdsShared {
            auth: None,
            ..shared.clone()
        };
        tokio::spawn(server::serve(
            listener,
            plain,
            crate::telemetry::sink::routes(telemetry.sink.clone(), None),
            None,
            stopped(stop_rx.clone()),
        ));
    }
    let mut sink_routes =
        crate::telemetry::sink::routes(telemetry.sink.clone(), shared.auth.clone());
    // Istio's CA API, on the authenticated port only.
    if let Some(auth) = shared.auth.clone() {
        sink_routes = sink_routes.add_service(crate::ca::grpc::CaService {
            ca,
            trust_domain: args.ca.trust_domain.clone(),
            max_ttl: args.cert_ttl,
            auth,
            metrics: metrics.clone(),
        });
    }
    let ads = tokio::spawn(server::serve(
        xds_listener,
        shared,
        sink_routes,
        tls,
        stopped(stop_rx.clone()),
    ));
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            registry: Arc::new(registry),
            syncs,
            config: model_rx,
            xds: xds_rx,
            telemetry: telemetry.sink.clone(),
            rotation: Some(rotation),
            autoreg: Some(autoreg),
        },
        stopped(stop_rx),
    ));

    shutdown_signal().await;
    info!("shutting down");
    serving_renewal.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        // The Lease is released first: another replica starts writing sooner.
        if let Some((_, election)) = leader {
            let _ = election.await;
        }
        let _ = ads.await;
        let _ = admin.await;
    })
    .await;
    Ok(())
}

/// Campaigns for the Lease until `shutdown` (then releases it); returns
/// whether this replica holds it, which every writer checks right before
/// writing, and the election task. `pilotfish_leader` shows it too.
fn spawn_leader_election(
    client: ::kube::Client,
    args: &ServeArgs,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let identity = args.leader_election_identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("pilotfish-{}", std::process::id()))
    });
    let opts = crate::kube::leader::Options::new(&args.leader_election_namespace, &identity);
    let (tx, mut rx) = watch::channel(false);
    let is_leader = rx.clone();
    let election = tokio::spawn(crate::kube::leader::run_until(client, opts, tx, shutdown));
    let gauge = metrics.leader.clone();
    tokio::spawn(async move {
        loop {
            gauge.set(i64::from(*rx.borrow_and_update()));
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    (is_leader, election)
}

/// Where `serve` reads config from: the first state, and what keeps it current.
struct ConfigSource {
    initial: config::ConfigState,
    follow: Follow,
}

enum Follow {
    Files(PathBuf, config::Store),
    /// The first state is empty (version 0: not loaded) until every watched
    /// kind has been listed.
    Kubernetes(::kube::Client),
}

impl ConfigSource {
    async fn open(args: &ServeArgs, metrics: &Metrics) -> Result<ConfigSource> {
        let Some(dir) = &args.config_dir else {
            let client = crate::kube::client(args.kube.kubeconfig.as_deref()).await?;
            return Ok(ConfigSource {
                initial: config::ConfigState::default(),
                follow: Follow::Kubernetes(client),
            });
        };
        let (store, state) =
            config::watch::load(dir, metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
        for e in &state.errors {
            tracing::warn!(error = %e, "invalid config");
        }
        info!(dir = %dir.display(), files = state.files, resources = state.snapshot.resources.len(), errors = state.errors.len(), "config loaded");
        Ok(ConfigSource {
            initial: state,
            follow: Follow::Files(dir.clone(), store),
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
