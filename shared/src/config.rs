//! Configuration from the environment, a `.env` file and command-line flags
//! (SPEC §2).
//!
//! Every setting is an environment variable described by a [`VarSpec`]; the
//! common ones are [`COMMON_VARS`], and each daemon adds its own table
//! (`LOGD_*`, `WATCHD_*`). Rules, also printed by `--help`:
//! - each variable `NAME` has the flag `--name` (lower case, `_` → `-`),
//!   e.g. `HIK8S_URL` ↔ `--hik8s-url`, written `--name value` or
//!   `--name=value`; an alias (`AUTH0_DOMAIN`) has its own flag too;
//! - a flag wins over the environment, which wins over `.env` in the
//!   working directory, which wins over the default; a variable's own name
//!   wins over its aliases;
//! - an empty value (`NAME=`) counts as unset.
//!
//! Errors name the variable: `logd: configuration error: HIK8S_URL: "ftp//x"
//! is not an http(s) URL`. [`OrExit::or_exit`] prints that line on stderr and
//! exits with status 2 (`--help` and `--version` print on stdout, status 0).
//!
//! ```no_run
//! use shared::config::{Config, OrExit, VarSpec};
//! const VARS: &[VarSpec] = &[
//!     VarSpec::new("LOGD_PODS_DIR", "where the pods' logs are").default("/var/log/pods"),
//! ];
//! let config = Config::from_env_and_args("logd", VARS).or_exit();
//! let pods_dir = config.path("LOGD_PODS_DIR").or_exit();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connect timeout of intake and token requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout of intake and token requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The default of a variable, as used and as shown by `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default: the variable is unset unless given.
    Unset,
    /// Used as if the user had given this value.
    Value(&'static str),
    /// Computed by the daemon (e.g. depends on the sink); the text is only
    /// shown in `--help`, and the variable reads as unset when not given.
    Described(&'static str),
}

/// One configuration variable: its name, aliases, default and help line.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    /// The environment variable, e.g. `LOGD_PODS_DIR`.
    pub name: &'static str,
    /// Other accepted names (from the original deployment), each also with
    /// its own flag.
    pub aliases: &'static [&'static str],
    pub default: DefaultValue,
    /// One line for `--help`.
    pub help: &'static str,
    /// Never printed (tokens, passwords).
    pub secret: bool,
}

impl VarSpec {
    /// A variable without default, aliases or secrecy.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        VarSpec {
            name,
            aliases: &[],
            default: DefaultValue::Unset,
            help,
            secret: false,
        }
    }

    /// With a default used as if given.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = DefaultValue::Value(value);
        self
    }

    /// With a default the daemon computes; `text` is shown in `--help`.
    pub const fn default_described(mut self, text: &'static str) -> Self {
        self.default = DefaultValue::Described(text);
        self
    }

    /// With other accepted names.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Marks the value as a secret: never printed.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The command-line flag of this variable: `--` + the name in lower
    /// case with `_` turned into `-`.
    pub fn flag(&self) -> String {
        flag_of(self.name)
    }
}

fn flag_of(name: &str) -> String {
    format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
}

/// The variables both daemons read (SPEC §2).
pub const COMMON_VARS: &[VarSpec] = &[
    VarSpec::new("HIK8S_URL", "intake base URL, e.g. https://api.hik8s.ai"),
    VarSpec::new(
        "HIK8S_HOST",
        "intake host, used when HIK8S_URL is unset: https://HOST:PORT",
    ),
    VarSpec::new("HIK8S_PORT", "intake port, with HIK8S_HOST").default("443"),
    VarSpec::new(
        "HIK8S_TOKEN",
        "a static bearer token (instead of client credentials)",
    )
    .secret(),
    VarSpec::new("CLIENT_ID", "OAuth2 client credentials: client id"),
    VarSpec::new("CLIENT_SECRET", "OAuth2 client credentials: client secret").secret(),
    VarSpec::new(
        "AUTH_DOMAIN",
        "token issuer domain: tokens from https://AUTH_DOMAIN/oauth2/token",
    )
    .aliases(&["AUTH0_DOMAIN"]),
    VarSpec::new("AUTH_AUDIENCE", "comma-separated token audiences").aliases(&["AUTH0_AUDIENCE"]),
    VarSpec::new(
        "AUTH_TOKEN_URL",
        "full token URL, overrides the one built from AUTH_DOMAIN",
    ),
    VarSpec::new(
        "HIK8S_CA_FILE",
        "PEM bundle of extra CA certificates for the intake and token URLs",
    ),
    // The proxy URL may carry user:password.
    VarSpec::new("HTTPS_PROXY", "proxy for intake and token requests")
        .aliases(&["https_proxy"])
        .secret(),
    VarSpec::new(
        "NO_PROXY",
        "comma-separated hosts reached without the proxy",
    )
    .aliases(&["no_proxy"]),
    VarSpec::new(
        "HIK8S_SHUTDOWN_GRACE_SECS",
        "how long SIGTERM may take to drain, in seconds",
    )
    .default("10"),
    VarSpec::new(
        "HIK8S_SINK",
        "where data goes: hik8s, otlp (OpenTelemetry OTLP/HTTP), stdout (NDJSON, one record a line) or file:<path>",
    )
    .default_described(
        "hik8s when an intake URL is set, else otlp when an OTLP endpoint is set, else stdout",
    ),
    // The OpenTelemetry SDK's own variables (the OTLP exporter's), with the
    // SDK's defaults; a `_LOGS_` variable wins over the general one.
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/HTTP base URL: /v1/logs is appended (Loki: http://loki:3100/otlp)",
    )
    .default_described("http://localhost:4318"),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTLP/HTTP logs URL, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT",
    ),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "headers of every OTLP request: key=value,... (values URL-decoded)",
    )
    .secret(),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        "as OTEL_EXPORTER_OTLP_HEADERS, for logs; wins over it",
    )
    .secret(),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTLP encoding: http/protobuf or http/json",
    )
    .default("http/protobuf"),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        "as OTEL_EXPORTER_OTLP_PROTOCOL, for logs; wins over it",
    ),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTLP request compression: gzip or none",
    )
    .default("none"),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
        "as OTEL_EXPORTER_OTLP_COMPRESSION, for logs; wins over it",
    ),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "how long one OTLP request may take, in milliseconds",
    )
    .default("10000"),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
        "as OTEL_EXPORTER_OTLP_TIMEOUT, for logs; wins over it",
    ),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "PEM bundle of extra CA certificates for the OTLP endpoint",
    ),
    VarSpec::new(
        "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        "as OTEL_EXPORTER_OTLP_CERTIFICATE, for logs; wins over it",
    ),
    VarSpec::new(
        "OTEL_RESOURCE_ATTRIBUTES",
        "attributes added to every OTLP resource: key=value,... (values URL-decoded), e.g. k8s.cluster.name=prod",
    ),
    VarSpec::new("RUST_LOG", "log filter (env_logger syntax)").default("info"),
];

/// A value that must never be printed: its `Debug` says `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, to put on the wire and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What both daemons configure the same way.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub sink: SinkConfig,
    /// `HIK8S_SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace: Duration,
    /// `RUST_LOG`, for [`crate::logging::init`].
    pub log_filter: String,
}

impl CommonConfig {
    /// The intake settings when the sink is `hik8s`.
    pub fn intake(&self) -> Option<&IntakeConfig> {
        match &self.sink {
            SinkConfig::Hik8s(intake) => Some(intake),
            _ => None,
        }
    }
}

impl Default for CommonConfig {
    fn default() -> Self {
        CommonConfig {
            sink: SinkConfig::Stdout,
            shutdown_grace: Duration::from_secs(10),
            log_filter: "info".into(),
        }
    }
}

/// Where the data goes (`HIK8S_SINK`).
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// The HiK8s intake API.
    Hik8s(IntakeConfig),
    /// NDJSON on stdout.
    Stdout,
    /// NDJSON appended to this file (its directory exists).
    File(PathBuf),
    /// An OpenTelemetry receiver, OTLP/HTTP.
    Otlp(OtlpConfig),
}

/// How to reach an OTLP/HTTP receiver (the SDK's `OTEL_*` variables).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The full logs URL, e.g. `http://collector:4318/v1/logs`.
    pub url: String,
    /// Sent with every request; values are secrets (tokens).
    pub headers: Vec<(String, Secret)>,
    pub format: crate::otlp::encode::Format,
    pub gzip: bool,
    pub timeout: Duration,
    /// DER certificates from `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub extra_roots: Vec<Vec<u8>>,
    pub proxy: Option<ProxyConfig>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to every resource.
    pub resource_attributes: Vec<(String, String)>,
}

/// How to reach and authenticate to the intake.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Base URL without trailing `/`, e.g. `https://api.hik8s.ai`.
    pub url: String,
    pub auth: AuthConfig,
    /// DER certificates from `HIK8S_CA_FILE`, trusted besides the usual
    /// roots.
    pub extra_roots: Vec<Vec<u8>>,
    pub proxy: Option<ProxyConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// How requests are authorised.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// `HIK8S_TOKEN`.
    StaticToken(Secret),
    /// OAuth2 client credentials.
    ClientCredentials {
        /// `AUTH_TOKEN_URL`, or `https://AUTH_DOMAIN/oauth2/token`.
        token_url: String,
        client_id: String,
        client_secret: Secret,
        /// `AUTH_AUDIENCE`, split on commas.
        audiences: Vec<String>,
    },
}

/// `HTTPS_PROXY` and `NO_PROXY`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// May carry `user:password@`.
    pub url: Secret,
    pub no_proxy: Vec<String>,
}

/// Why the configuration cannot be used, or a request for help/version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A bad value: `var` names the variable (or the unknown flag).
    Invalid {
        daemon: String,
        var: String,
        message: String,
    },
    /// `--help`: this text goes to stdout, status 0.
    Help(String),
    /// `--version`: this text goes to stdout, status 0.
    Version(String),
}

impl ConfigError {
    /// 2 for a bad configuration, 0 for help and version.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Invalid { .. } => 2,
            ConfigError::Help(_) | ConfigError::Version(_) => 0,
        }
    }

    /// The variable (or flag) a bad configuration is about.
    pub fn var(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { var, .. } => Some(var),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    /// For `Invalid`, the one line for stderr:
    /// `<daemon>: configuration error: <VAR>: <message>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                daemon,
                var,
                message,
            } => write!(f, "{daemon}: configuration error: {var}: {message}"),
            ConfigError::Help(text) | ConfigError::Version(text) => f.write_str(text.trim_end()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Ends the process on a configuration error, the way every daemon must.
pub trait OrExit<T> {
    /// The value, or: help/version printed on stdout and exit 0; a bad
    /// configuration printed as one line on stderr and exit 2.
    fn or_exit(self) -> T;
}

impl<T> OrExit<T> for Result<T, ConfigError> {
    fn or_exit(self) -> T {
        match self {
            Ok(value) => value,
            Err(error @ ConfigError::Invalid { .. }) => {
                eprintln!("{error}");
                std::process::exit(error.exit_code());
            }
            Err(other) => {
                println!("{other}");
                std::process::exit(other.exit_code());
            }
        }
    }
}

/// The parsed configuration: the common part, typed, and typed getters for
/// the daemon's own variables.
///
/// Getters take a variable's name, which must be in the table the config was
/// parsed with (anything else is a programming error and panics). Getters
/// returning `Result<T, _>` fail when the value is malformed, and when there
/// is neither a value nor a default; wrap them in [`Config::optional`] for
/// variables that may stay unset.
#[derive(Clone)]
pub struct Config {
    daemon: String,
    specs: Vec<VarSpec>,
    /// Resolved, non-empty values (given or default), by variable name.
    values: HashMap<&'static str, String>,
    common: CommonConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut values: Vec<(&str, &str)> = self
            .specs
            .iter()
            .filter_map(|spec| {
                let value = self.values.get(spec.name)?;
                Some((spec.name, if spec.secret { "<redacted>" } else { value }))
            })
            .collect();
        values.sort();
        f.debug_struct("Config")
            .field("daemon", &self.daemon)
            .field("values", &values)
            .field("common", &self.common)
            .finish()
    }
}

impl Config {
    /// Reads the process's arguments and environment, and `.env` in the
    /// working directory when present (never modifying the environment).
    pub fn from_env_and_args(daemon: &str, extra: &[VarSpec]) -> Result<Config, ConfigError> {
        let args = std::env::args_os()
            .skip(1)
            .map(|arg| arg.to_string_lossy().into_owned());
        let env = std::env::vars_os().map(|(key, value)| {
            (
                key.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        let cwd = std::env::current_dir().ok();
        Config::parse(daemon, extra, args, env, cwd.as_deref())
    }

    /// The parser itself, on explicit inputs: `args` without the program
    /// name, the environment, and the directory whose `.env` is read
    /// (`None`: no `.env`).
    pub fn parse(
        daemon: &str,
        extra: &[VarSpec],
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
        dotenv_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let specs: Vec<VarSpec> = COMMON_VARS.iter().chain(extra).copied().collect();
        let invalid = |var: &str, message: String| ConfigError::Invalid {
            daemon: daemon.to_string(),
            var: var.to_string(),
            message,
        };
        let flags = parse_flags(daemon, &specs, args)?;
        let env: HashMap<String, String> = env.into_iter().collect();
        let dotenv = match dotenv_dir {
            Some(dir) => read_dotenv(&dir.join(".env")).map_err(|m| invalid(".env", m))?,
            None => HashMap::new(),
        };
        let values = resolve(&specs, &flags, &env, &dotenv);
        let mut config = Config {
            daemon: daemon.to_string(),
            specs,
            values,
            common: CommonConfig::default(),
        };
        config.common = common_config(&config)?;
        Ok(config)
    }

    /// The daemon's name, as given to the parser.
    pub fn daemon(&self) -> &str {
        &self.daemon
    }

    /// The common, typed part.
    pub fn common(&self) -> &CommonConfig {
        &self.common
    }

    /// The `--help` text of this configuration's variables.
    pub fn help(&self) -> String {
        help_text(&self.daemon, &self.specs)
    }

    /// An error about `var`, for the daemon's own checks.
    pub fn invalid(&self, var: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            daemon: self.daemon.clone(),
            var: var.to_string(),
            message: message.into(),
        }
    }

    /// The raw value (flag, environment, `.env` or default), if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.spec(name);
        self.values.get(name).map(String::as_str)
    }

    /// `Ok(None)` when `name` has no value (nor default), else `get`'s
    /// result: `config.optional("LOGD_MAX_LINE_BYTES", Config::bytes)`.
    pub fn optional<T>(
        &self,
        name: &str,
        get: impl FnOnce(&Config, &str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        match self.value(name) {
            None => Ok(None),
            Some(_) => get(self, name).map(Some),
        }
    }

    /// The value as a string.
    pub fn string(&self, name: &str) -> Result<String, ConfigError> {
        self.required(name).map(str::to_string)
    }

    /// The value as a path.
    pub fn path(&self, name: &str) -> Result<PathBuf, ConfigError> {
        self.required(name).map(PathBuf::from)
    }

    /// A whole number.
    pub fn u64(&self, name: &str) -> Result<u64, ConfigError> {
        self.typed(name, parse_u64)
    }

    /// A size in bytes: `1048576`, `512KiB`, `1MiB`, `1Mi`, `1MB` (10^6),
    /// `2G`..., case-insensitive.
    pub fn bytes(&self, name: &str) -> Result<u64, ConfigError> {
        self.typed(name, parse_bytes)
    }

    /// A duration; a bare number is milliseconds (`1000`), units are
    /// allowed (`500ms`, `2s`, `1m`).
    pub fn millis(&self, name: &str) -> Result<Duration, ConfigError> {
        self.typed(name, |value| {
            parse_duration(value, Duration::from_millis(1))
        })
    }

    /// A duration; a bare number is seconds (`10`), units are allowed.
    pub fn secs(&self, name: &str) -> Result<Duration, ConfigError> {
        self.typed(name, |value| parse_duration(value, Duration::from_secs(1)))
    }

    /// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        self.typed(name, parse_bool)
    }

    /// A comma-separated list, items trimmed, empty items dropped; unset is
    /// an empty list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.value(name).map(split_list).unwrap_or_default()
    }

    /// A listen address (`0.0.0.0:9600`, `[::]:9600`, `:9600` for all IPv4
    /// interfaces) or `off` (→ `None`).
    pub fn socket_addr_or_off(&self, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.typed(name, parse_socket_addr_or_off)
    }

    fn spec(&self, name: &str) -> &VarSpec {
        self.specs
            .iter()
            .find(|spec| spec.name == name)
            .unwrap_or_else(|| panic!("{name} is not a declared configuration variable"))
    }

    fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.value(name)
            .ok_or_else(|| self.invalid(name, "is required"))
    }

    fn typed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.required(name)?;
        parse(value).map_err(|message| {
            if self.spec(name).secret {
                self.invalid(name, "is malformed")
            } else {
                self.invalid(name, format!("{value:?} {message}"))
            }
        })
    }
}

/// Flag values by variable name; handles `--help` and `--version`.
fn parse_flags(
    daemon: &str,
    specs: &[VarSpec],
    args: impl IntoIterator<Item = String>,
) -> Result<HashMap<&'static str, String>, ConfigError> {
    let invalid = |var: &str, message: &str| ConfigError::Invalid {
        daemon: daemon.to_string(),
        var: var.to_string(),
        message: message.to_string(),
    };
    let mut by_flag: HashMap<String, &'static str> = HashMap::new();
    for spec in specs {
        for name in std::iter::once(&spec.name).chain(spec.aliases) {
            by_flag.insert(flag_of(name), spec.name);
        }
    }
    let mut values = HashMap::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => return Err(ConfigError::Help(help_text(daemon, specs))),
            "--version" | "-V" => return Err(ConfigError::Version(version_text(daemon))),
            _ => {}
        }
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let Some(&name) = by_flag.get(&flag) else {
            return Err(invalid(&arg, "unknown argument (see --help)"));
        };
        let value = match inline_value {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| invalid(name, &format!("{flag} needs a value")))?,
        };
        values.insert(name, value);
    }
    Ok(values)
}

/// Reads a `.env` file; a missing file is an empty one.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, String> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    iter.map(|item| item.map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// Flag > environment > `.env` > default; a name before its aliases; an
/// empty value is no value.
fn resolve(
    specs: &[VarSpec],
    flags: &HashMap<&'static str, String>,
    env: &HashMap<String, String>,
    dotenv: &HashMap<String, String>,
) -> HashMap<&'static str, String> {
    let mut values = HashMap::new();
    for spec in specs {
        let names = || std::iter::once(&spec.name).chain(spec.aliases);
        let given = flags
            .get(spec.name)
            .filter(|v| !v.is_empty())
            .or_else(|| names().find_map(|n| env.get(*n).filter(|v| !v.is_empty())))
            .or_else(|| names().find_map(|n| dotenv.get(*n).filter(|v| !v.is_empty())))
            .cloned();
        let value = given.or_else(|| match spec.default {
            DefaultValue::Value(default) => Some(default.to_string()),
            DefaultValue::Unset | DefaultValue::Described(_) => None,
        });
        if let Some(value) = value {
            values.insert(spec.name, value);
        }
    }
    values
}

fn version_text(daemon: &str) -> String {
    format!("{daemon} {}", env!("CARGO_PKG_VERSION"))
}

fn help_text(daemon: &str, specs: &[VarSpec]) -> String {
    let mut text = format!(
        "{version}\n\nUsage: {daemon} [--flag value | --flag=value]...\n\n\
         Every setting is an environment variable with an equivalent flag: the variable's\n\
         name in lower case, '_' turned into '-'. A flag wins over the environment, the\n\
         environment over a .env file in the working directory, that over the default.\n\
         An empty value counts as unset.\n\n",
        version = version_text(daemon)
    );
    for spec in specs {
        text.push_str(&format!("  {:<32} {}\n", spec.flag(), spec.name));
        text.push_str(&format!("      {}\n", spec.help));
        let default = match spec.default {
            DefaultValue::Unset => "unset",
            DefaultValue::Value(value) | DefaultValue::Described(value) => value,
        };
        text.push_str(&format!("      default: {default}\n"));
        for alias in spec.aliases {
            // `https_proxy` has the same flag as `HTTPS_PROXY`: say so once.
            if flag_of(alias) == spec.flag() {
                text.push_str(&format!("      alias: {alias}\n"));
            } else {
                text.push_str(&format!("      alias: {alias} ({})\n", flag_of(alias)));
            }
        }
    }
    text.push_str(
        "\n  --help, -h                       print this help\n  --version, -V                    print the version\n",
    );
    text
}

/// The typed common part and its cross-field rules (SPEC §2).
fn common_config(config: &Config) -> Result<CommonConfig, ConfigError> {
    let url = intake_url(config)?;
    let auth = auth_config(config)?;
    let otlp_endpoint_set = config.value("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || config.value("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_some();
    let sink = match config.value("HIK8S_SINK") {
        None if url.is_some() => SinkChoice::Hik8s,
        None if otlp_endpoint_set => SinkChoice::Otlp,
        None => SinkChoice::Stdout,
        Some(value) => parse_sink(value).map_err(|m| config.invalid("HIK8S_SINK", m))?,
    };
    let sink = match sink {
        SinkChoice::Stdout => SinkConfig::Stdout,
        SinkChoice::File(path) => SinkConfig::File(path),
        SinkChoice::Otlp => SinkConfig::Otlp(otlp_config(config)?),
        SinkChoice::Hik8s => {
            let Some(url) = url else {
                return Err(config.invalid(
                    "HIK8S_SINK",
                    "the hik8s sink needs HIK8S_URL (or HIK8S_HOST)",
                ));
            };
            let Some(auth) = auth else {
                let var = if config.value("HIK8S_SINK").is_some() {
                    "HIK8S_SINK"
                } else {
                    "HIK8S_URL"
                };
                return Err(config.invalid(
                    var,
                    "the hik8s sink needs credentials: HIK8S_TOKEN, or CLIENT_ID and CLIENT_SECRET",
                ));
            };
            SinkConfig::Hik8s(IntakeConfig {
                url,
                auth,
                extra_roots: extra_roots(config)?,
                proxy: proxy_config(config)?,
                connect_timeout: CONNECT_TIMEOUT,
                request_timeout: REQUEST_TIMEOUT,
            })
        }
    };
    Ok(CommonConfig {
        sink,
        shutdown_grace: config.secs("HIK8S_SHUTDOWN_GRACE_SECS")?,
        log_filter: config.string("RUST_LOG")?,
    })
}

enum SinkChoice {
    Hik8s,
    Otlp,
    Stdout,
    File(PathBuf),
}

fn parse_sink(value: &str) -> Result<SinkChoice, String> {
    if value == "hik8s" {
        return Ok(SinkChoice::Hik8s);
    }
    if value == "otlp" {
        return Ok(SinkChoice::Otlp);
    }
    if value == "stdout" {
        return Ok(SinkChoice::Stdout);
    }
    let Some(path) = value.strip_prefix("file:") else {
        return Err(format!(
            "{value:?} is not hik8s, otlp, stdout or file:<path>"
        ));
    };
    if path.is_empty() {
        return Err(format!("{value:?} names no file"));
    }
    let path = PathBuf::from(path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "{value:?}: directory {} does not exist",
            dir.display()
        ));
    }
    Ok(SinkChoice::File(path))
}

/// `HIK8S_URL`, or `https://HIK8S_HOST:HIK8S_PORT`; without trailing `/`.
fn intake_url(config: &Config) -> Result<Option<String>, ConfigError> {
    if let Some(url) = config.value("HIK8S_URL") {
        return parse_http_url(url)
            .map(Some)
            .map_err(|m| config.invalid("HIK8S_URL", m));
    }
    let Some(host) = config.value("HIK8S_HOST") else {
        return Ok(None);
    };
    let port = config.u64("HIK8S_PORT")?;
    if port == 0 || port > u64::from(u16::MAX) {
        return Err(config.invalid("HIK8S_PORT", format!("{port} is not a port")));
    }
    parse_http_url(&format!("https://{host}:{port}"))
        .map(Some)
        .map_err(|_| config.invalid("HIK8S_HOST", format!("{host:?} is not a host name")))
}

/// The credentials, checked for completeness; `None` when there are none.
/// `AUTH_*` without client credentials are ignored (a static-token setup
/// may keep them from an older manifest).
fn auth_config(config: &Config) -> Result<Option<AuthConfig>, ConfigError> {
    let token = config.value("HIK8S_TOKEN");
    let id = config.value("CLIENT_ID");
    let secret = config.value("CLIENT_SECRET");
    match (token, id, secret) {
        (None, None, None) => Ok(None),
        (Some(_), None, None) => Ok(Some(AuthConfig::StaticToken(Secret::new(
            config.string("HIK8S_TOKEN")?,
        )))),
        (Some(_), _, _) => Err(config.invalid(
            "HIK8S_TOKEN",
            "set together with client credentials (CLIENT_ID/CLIENT_SECRET): use one or the other",
        )),
        (None, Some(_), None) => Err(config.invalid("CLIENT_SECRET", "is required with CLIENT_ID")),
        (None, None, Some(_)) => Err(config.invalid("CLIENT_ID", "is required with CLIENT_SECRET")),
        (None, Some(id), Some(secret)) => {
            let token_url = token_url(config)?;
            let audiences = config.list("AUTH_AUDIENCE");
            if audiences.is_empty() {
                return Err(config.invalid(
                    "AUTH_AUDIENCE",
                    "is required with client credentials (CLIENT_ID/CLIENT_SECRET)",
                ));
            }
            Ok(Some(AuthConfig::ClientCredentials {
                token_url,
                client_id: id.to_string(),
                client_secret: Secret::new(secret),
                audiences,
            }))
        }
    }
}

fn token_url(config: &Config) -> Result<String, ConfigError> {
    if let Some(url) = config.value("AUTH_TOKEN_URL") {
        return parse_http_url(url).map_err(|m| config.invalid("AUTH_TOKEN_URL", m));
    }
    let Some(domain) = config.value("AUTH_DOMAIN") else {
        return Err(config.invalid(
            "AUTH_DOMAIN",
            "is required with client credentials (CLIENT_ID/CLIENT_SECRET), unless AUTH_TOKEN_URL is set",
        ));
    };
    // A domain given with its scheme (`https://issuer.example`) is accepted too.
    let base = if domain.contains("://") {
        domain.to_string()
    } else {
        format!("https://{domain}")
    };
    let base = parse_http_url(&base)
        .map_err(|_| config.invalid("AUTH_DOMAIN", format!("{domain:?} is not a domain")))?;
    Ok(format!("{base}/oauth2/token"))
}

fn extra_roots(config: &Config) -> Result<Vec<Vec<u8>>, ConfigError> {
    pem_roots(config, "HIK8S_CA_FILE")
}

/// The certificates of the PEM file `var` names; none when it is unset.
fn pem_roots(config: &Config, var: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let Some(path) = config.value(var) else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path).map_err(|e| config.invalid(var, format!("{path}: {e}")))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(e) => return Err(config.invalid(var, format!("{path}: {e}"))),
        }
    }
    if roots.is_empty() {
        return Err(config.invalid(var, format!("{path}: no PEM certificate in it")));
    }
    Ok(roots)
}

/// The OTLP sink's settings, as the OpenTelemetry SDK reads them: each
/// `OTEL_EXPORTER_OTLP_LOGS_*` variable wins over its general one.
fn otlp_config(config: &Config) -> Result<OtlpConfig, ConfigError> {
    let url = match config.value("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
        Some(url) => parse_http_url(url)
            .map_err(|m| config.invalid("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", m))?,
        None => {
            let base = config.value("OTEL_EXPORTER_OTLP_ENDPOINT");
            let base = parse_http_url(base.unwrap_or("http://localhost:4318"))
                .map_err(|m| config.invalid("OTEL_EXPORTER_OTLP_ENDPOINT", m))?;
            format!("{base}/v1/logs")
        }
    };
    let signal_or_general = |name: &str| -> String {
        let logs = name.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_LOGS_");
        if config.value(&logs).is_some() {
            logs
        } else {
            name.to_string()
        }
    };
    let var = signal_or_general("OTEL_EXPORTER_OTLP_HEADERS");
    let headers = match config.value(&var) {
        Some(value) => parse_key_values(value)
            .map_err(|m| config.invalid(&var, m))?
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
        None => Vec::new(),
    };
    let var = signal_or_general("OTEL_EXPORTER_OTLP_PROTOCOL");
    let format = match config.string(&var)?.trim() {
        "http/protobuf" => crate::otlp::encode::Format::Protobuf,
        "http/json" => crate::otlp::encode::Format::Json,
        "grpc" => {
            return Err(config.invalid(
                &var,
                "grpc is not supported: use http/protobuf (OTLP/HTTP, port 4318) or http/json",
            ));
        }
        other => {
            return Err(
                config.invalid(&var, format!("{other:?} is not http/protobuf or http/json"))
            );
        }
    };
    let var = signal_or_general("OTEL_EXPORTER_OTLP_COMPRESSION");
    let gzip = match config.string(&var)?.trim() {
        "gzip" => true,
        "none" => false,
        other => return Err(config.invalid(&var, format!("{other:?} is not gzip or none"))),
    };
    let var = signal_or_general("OTEL_EXPORTER_OTLP_TIMEOUT");
    let timeout = config.millis(&var)?;
    if timeout.is_zero() {
        return Err(config.invalid(&var, "must be more than 0"));
    }
    let resource_attributes = match config.value("OTEL_RESOURCE_ATTRIBUTES") {
        Some(value) => {
            parse_key_values(value).map_err(|m| config.invalid("OTEL_RESOURCE_ATTRIBUTES", m))?
        }
        None => Vec::new(),
    };
    Ok(OtlpConfig {
        url,
        headers,
        format,
        gzip,
        timeout,
        extra_roots: pem_roots(config, &signal_or_general("OTEL_EXPORTER_OTLP_CERTIFICATE"))?,
        proxy: proxy_config(config)?,
        resource_attributes,
    })
}

/// `key=value,key2=value2` with URL-encoded values (the W3C Baggage form
/// the OpenTelemetry SDK reads headers and resource attributes in).
fn parse_key_values(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, raw)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{item:?} has no key"));
        }
        let decoded = percent_encoding::percent_decode_str(raw.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {key:?} is not URL-encoded UTF-8"))?;
        pairs.push((key.to_string(), decoded.into_owned()));
    }
    Ok(pairs)
}

fn proxy_config(config: &Config) -> Result<Option<ProxyConfig>, ConfigError> {
    let Some(url) = config.value("HTTPS_PROXY") else {
        return Ok(None);
    };
    ureq::Proxy::new(url).map_err(|_| config.invalid("HTTPS_PROXY", "is not a proxy URL"))?;
    Ok(Some(ProxyConfig {
        url: Secret::new(url),
        no_proxy: config.list("NO_PROXY"),
    }))
}

/// An absolute `http://` or `https://` URL with a host, returned without
/// trailing `/`.
fn parse_http_url(value: &str) -> Result<String, String> {
    let not_url = || format!("{value:?} is not an http(s) URL");
    let uri: ureq::http::Uri = value.parse().map_err(|_| not_url())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|host| !host.is_empty());
    if !scheme_ok || !host_ok || uri.query().is_some() {
        return Err(not_url());
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_u64(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "is not a whole number".to_string())
}

fn parse_bytes(value: &str) -> Result<u64, String> {
    let bad = || "is not a size (e.g. 1048576, 512KiB, 1MiB)".to_string();
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "is too large".to_string())
}

fn parse_duration(value: &str, bare_unit: Duration) -> Result<Duration, String> {
    let bad = || "is not a duration (e.g. 1000ms, 10s, 1m)".to_string();
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u32 = number.parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "" => bare_unit,
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    unit.checked_mul(number)
        .ok_or_else(|| "is too long".to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("is not true or false".to_string()),
    }
}

fn parse_socket_addr_or_off(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let full;
    let addr = if value.starts_with(':') {
        full = format!("0.0.0.0{value}");
        &full
    } else {
        value
    };
    addr.parse()
        .map(Some)
        .map_err(|_| "is not an address like 0.0.0.0:9600, or off".to_string())
}

#[cfg(test)]
mod tests;
