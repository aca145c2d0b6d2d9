//! logd's configuration: its own variables (SPEC §2) on top of the common
//! ones, checked and typed once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use logd::{ReadFrom, TailerConfig};
use shared::config::{CommonConfig, Config, ConfigError, SinkConfig, VarSpec};

/// What the intake accepts after a line's timestamp (SPEC §1).
const INTAKE_MESSAGE_MAX: usize = 30_720;
/// `<stream> F ` before the content: the longest is ` stderr F `.
const STREAM_PREFIX_MAX: usize = " stderr F ".len();
/// A `/logs` body may be at most 32 MiB; keep room for the metadata part.
const INTAKE_BODY_MAX: u64 = 32 * 1024 * 1024 - 64 * 1024;
/// A thread and a connection each: more would not be a small daemon.
const MAX_UPLOAD_CONCURRENCY: usize = 256;
/// Without the intake's cap, lines are cut at 1 MiB by default.
const LOCAL_MAX_LINE_BYTES: usize = 1024 * 1024;

pub const VARS: &[VarSpec] = &[
    VarSpec::new("LOGD_PODS_DIR", "where the pods' logs are").default("/var/log/pods"),
    VarSpec::new("LOGD_STATE_DIR", "where logd keeps its checkpoints").default("/var/lib/logd"),
    VarSpec::new(
        "LOGD_READ_FROM",
        "beginning or end: where files without a checkpoint are read from at the very first start",
    )
    .default("beginning"),
    VarSpec::new("LOGD_BATCH_MAX_BYTES", "flush a file's batch at this size").default("1MiB"),
    VarSpec::new(
        "LOGD_BATCH_LINGER_MS",
        "a batch waits at most this long (each file at its own point of the period)",
    )
    .default("1000"),
    VarSpec::new(
        "LOGD_UPLOAD_CONCURRENCY",
        "requests in flight to the intake at most; the number adapts below it to the intake's response times (1: one at a time)",
    )
    .default("64"),
    VarSpec::new(
        "LOGD_MAX_LINE_BYTES",
        "longer lines are cut here, on a character boundary, with \" [truncated]\"",
    )
    .default_described("30720 with the hik8s sink, 1MiB otherwise"),
    VarSpec::new(
        "LOGD_EXCLUDE_NAMESPACES",
        "comma-separated namespaces not shipped",
    ),
    VarSpec::new(
        "LOGD_EXCLUDE_POD_UID",
        "a pod uid never read (logd's own pod, from the downward API)",
    ),
    VarSpec::new(
        "NODE_NAME",
        "the node's name (downward API spec.nodeName): k8s.node.name of the OTLP sink's resources",
    ),
    VarSpec::new(
        "LOGD_METRICS_ADDR",
        "address of /metrics, /healthz, /readyz; off disables",
    )
    .default("0.0.0.0:9600"),
    VarSpec::new(
        "LOGD_DELETED_MAX_FILES",
        "deleted files kept open to be finished, at most",
    )
    .default("64"),
    VarSpec::new(
        "LOGD_DELETED_MAX_BYTES",
        "unread bytes of deleted files kept open, at most (beyond: counted as lost to rotation)",
    )
    .default("1GiB"),
];

/// logd's whole configuration, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub tailer: TailerConfig,
    pub state_dir: PathBuf,
    pub batch_max_bytes: usize,
    pub batch_linger: Duration,
    pub upload_concurrency: usize,
    pub metrics_addr: Option<SocketAddr>,
    /// Test-only stand-in for the kernel's inotify watch limit
    /// (`LOGD_TEST_MAX_INOTIFY_WATCHES`, deliberately not in `--help`).
    pub max_inotify_watches: Option<usize>,
    /// What the operator asked for and does not get, said once at start
    /// (settings are read before logging starts).
    pub warnings: Vec<String>,
}

impl Settings {
    /// Reads the process's flags, environment and `.env`.
    pub fn load() -> Result<Settings, ConfigError> {
        let config = Config::from_env_and_args("logd", VARS)?;
        Settings::from_config(&config)
    }

    pub fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        let mut common = config.common().clone();
        let to_intake = common.intake().is_some();
        if let (SinkConfig::Otlp(otlp), Some(node)) = (&mut common.sink, config.value("NODE_NAME"))
        {
            // OTEL_RESOURCE_ATTRIBUTES may name the node itself: it wins.
            let attributes = &mut otlp.resource_attributes;
            if !attributes.iter().any(|(key, _)| key == "k8s.node.name") {
                attributes.insert(0, ("k8s.node.name".into(), node.trim().to_string()));
            }
        }

        let read_from = match config.string("LOGD_READ_FROM")?.as_str() {
            "beginning" => ReadFrom::Beginning,
            "end" => ReadFrom::End,
            other => {
                return Err(config.invalid(
                    "LOGD_READ_FROM",
                    format!("{other:?} is neither beginning nor end"),
                ));
            }
        };

        let batch_max_bytes = config.bytes("LOGD_BATCH_MAX_BYTES")?;
        if batch_max_bytes == 0 || (to_intake && batch_max_bytes > INTAKE_BODY_MAX) {
            return Err(config.invalid(
                "LOGD_BATCH_MAX_BYTES",
                format!(
                    "{batch_max_bytes} is out of range (1 to {INTAKE_BODY_MAX} bytes: the intake takes at most 32 MiB a request)"
                ),
            ));
        }

        let mut warnings = Vec::new();
        let max_line_bytes = max_line_bytes(config, to_intake, &mut warnings)?;

        let pods_dir = config.path("LOGD_PODS_DIR")?;
        let tailer = TailerConfig {
            read_from,
            max_line_bytes,
            exclude_namespaces: config.list("LOGD_EXCLUDE_NAMESPACES"),
            exclude_pod_uid: config
                .optional("LOGD_EXCLUDE_POD_UID", Config::string)?
                .map(|uid| uid.trim().to_string()),
            max_deleted_open: to_usize(config, "LOGD_DELETED_MAX_FILES")?,
            max_deleted_bytes: config.bytes("LOGD_DELETED_MAX_BYTES")?,
            ..TailerConfig::new(pods_dir)
        };

        let max_inotify_watches =
            match std::env::var("LOGD_TEST_MAX_INOTIFY_WATCHES") {
                Ok(value) => Some(value.parse().map_err(|_| {
                    config.invalid("LOGD_TEST_MAX_INOTIFY_WATCHES", "is not a number")
                })?),
                Err(_) => None,
            };

        Ok(Settings {
            common,
            tailer,
            state_dir: config.path("LOGD_STATE_DIR")?,
            batch_max_bytes: usize::try_from(batch_max_bytes)
                .map_err(|_| config.invalid("LOGD_BATCH_MAX_BYTES", "is too large"))?,
            batch_linger: config.millis("LOGD_BATCH_LINGER_MS")?,
            upload_concurrency: upload_concurrency(config)?,
            metrics_addr: config.socket_addr_or_off("LOGD_METRICS_ADDR")?,
            max_inotify_watches,
            warnings,
        })
    }
}

/// The cap on a line's content. `LOGD_MAX_LINE_BYTES` counts what follows
/// the timestamp, as the intake does; the core counts the content after
/// `<stream> F `, so the prefix is taken off. With the intake, never more
/// than it accepts, whatever is given.
fn max_line_bytes(
    config: &Config,
    to_intake: bool,
    warnings: &mut Vec<String>,
) -> Result<usize, ConfigError> {
    let given = config
        .optional("LOGD_MAX_LINE_BYTES", Config::bytes)?
        .map(|b| usize::try_from(b).unwrap_or(usize::MAX));
    let limit = match (given, to_intake) {
        (Some(given), true) if given > INTAKE_MESSAGE_MAX => {
            warnings.push(format!(
                "LOGD_MAX_LINE_BYTES={given} is lowered to {INTAKE_MESSAGE_MAX}: the intake takes no longer lines"
            ));
            INTAKE_MESSAGE_MAX
        }
        (Some(given), _) => given,
        (None, true) => INTAKE_MESSAGE_MAX,
        (None, false) => LOCAL_MAX_LINE_BYTES,
    };
    let min = logd::parse::MIN_MAX_LINE_BYTES + STREAM_PREFIX_MAX;
    if limit < min {
        return Err(config.invalid(
            "LOGD_MAX_LINE_BYTES",
            format!("{limit} is too small (at least {min})"),
        ));
    }
    Ok(limit - STREAM_PREFIX_MAX)
}

/// Requests in flight at most: 1 to [`MAX_UPLOAD_CONCURRENCY`].
fn upload_concurrency(config: &Config) -> Result<usize, ConfigError> {
    let value = config.u64("LOGD_UPLOAD_CONCURRENCY")?;
    if value == 0 || value > MAX_UPLOAD_CONCURRENCY as u64 {
        return Err(config.invalid(
            "LOGD_UPLOAD_CONCURRENCY",
            format!("{value} is out of range (1 to {MAX_UPLOAD_CONCURRENCY})"),
        ));
    }
    Ok(value as usize)
}

fn to_usize(config: &Config, name: &str) -> Result<usize, ConfigError> {
    let value = config.u64(name)?;
    usize::try_from(value).map_err(|_| config.invalid(name, "is too large"))
}
