use super::*;

const EXTRA: &[VarSpec] = &[
    VarSpec::new("LOGD_PODS_DIR", "where the pods' logs are").default("/var/log/pods"),
    VarSpec::new("LOGD_BATCH_MAX_BYTES", "flush at this size").default("1MiB"),
    VarSpec::new("LOGD_BATCH_LINGER_MS", "flush after this long").default("1000"),
    VarSpec::new("LOGD_MAX_LINE_BYTES", "cut longer lines")
        .default_described("30720 with the hik8s sink, 1 MiB otherwise"),
    VarSpec::new("LOGD_EXCLUDE_NAMESPACES", "namespaces not shipped"),
    VarSpec::new("LOGD_METRICS_ADDR", "metrics address, or off").default("0.0.0.0:9600"),
    VarSpec::new("LOGD_FOLLOW", "a boolean for the tests").default("true"),
];

const TOKEN: &str = "made-up-token-value";
const SECRET: &str = "made-up-client-secret";

fn parse(env: &[(&str, &str)], args: &[&str]) -> Result<Config, ConfigError> {
    Config::parse(
        "logd",
        EXTRA,
        args.iter().map(|a| a.to_string()),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        None,
    )
}

/// The variable a configuration error names, and its full line.
fn error_of(env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let error = parse(env, args).expect_err("configuration should be refused");
    assert_eq!(error.exit_code(), 2, "{error}");
    let line = error.to_string();
    assert!(line.starts_with("logd: configuration error: "), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    (error.var().expect("names a variable").to_string(), line)
}

const CREDS: &[(&str, &str)] = &[
    ("CLIENT_ID", "id"),
    ("CLIENT_SECRET", SECRET),
    ("AUTH_DOMAIN", "issuer.example"),
    ("AUTH_AUDIENCE", "https://api.hik8s.ai/, second"),
];

fn with(
    base: &[(&'static str, &'static str)],
    more: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn defaults_without_anything() {
    let config = parse(&[], &[]).expect("empty configuration is valid");
    let common = config.common();
    assert!(matches!(common.sink, SinkConfig::Stdout));
    assert_eq!(common.shutdown_grace, Duration::from_secs(10));
    assert_eq!(common.log_filter, "info");
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/var/log/pods")
    );
    assert_eq!(config.bytes("LOGD_BATCH_MAX_BYTES").unwrap(), 1 << 20);
    assert_eq!(
        config.millis("LOGD_BATCH_LINGER_MS").unwrap(),
        Duration::from_secs(1)
    );
    assert_eq!(
        config
            .optional("LOGD_MAX_LINE_BYTES", Config::bytes)
            .unwrap(),
        None
    );
    assert!(config.list("LOGD_EXCLUDE_NAMESPACES").is_empty());
    assert_eq!(
        config.socket_addr_or_off("LOGD_METRICS_ADDR").unwrap(),
        Some("0.0.0.0:9600".parse().unwrap())
    );
    assert!(config.bool("LOGD_FOLLOW").unwrap());
    assert_eq!(config.value("HIK8S_PORT"), Some("443"));
}

#[test]
fn url_and_static_token_make_the_hik8s_sink() {
    let config = parse(
        &[
            ("HIK8S_URL", "https://api.hik8s.ai/"),
            ("HIK8S_TOKEN", TOKEN),
        ],
        &[],
    )
    .expect("valid");
    let intake = config
        .common()
        .intake()
        .expect("hik8s sink by default with a URL");
    assert_eq!(intake.url, "https://api.hik8s.ai");
    assert!(matches!(&intake.auth, AuthConfig::StaticToken(t) if t.expose() == TOKEN));
    assert_eq!(intake.connect_timeout, CONNECT_TIMEOUT);
    assert!(intake.proxy.is_none());
}

#[test]
fn client_credentials_with_the_original_alias_names() {
    let env = [
        ("HIK8S_URL", "http://127.0.0.1:8080"),
        ("CLIENT_ID", "id"),
        ("CLIENT_SECRET", SECRET),
        ("AUTH0_DOMAIN", "issuer.example"),
        ("AUTH0_AUDIENCE", "a, b"),
    ];
    let config = parse(&env, &[]).expect("valid");
    let intake = config.common().intake().expect("hik8s sink");
    match &intake.auth {
        AuthConfig::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            audiences,
        } => {
            assert_eq!(token_url, "https://issuer.example/oauth2/token");
            assert_eq!(client_id, "id");
            assert_eq!(client_secret.expose(), SECRET);
            assert_eq!(audiences, &["a", "b"]);
        }
        other => panic!("expected client credentials, got {other:?}"),
    }
}

#[test]
fn the_name_wins_over_its_alias_and_token_url_over_domain() {
    let env = with(
        CREDS,
        &[
            ("HIK8S_URL", "https://x.example"),
            ("AUTH0_AUDIENCE", "old"),
            ("AUTH_TOKEN_URL", "http://127.0.0.1:9/oauth2/token"),
        ],
    );
    let config = parse(&env, &[]).expect("valid");
    let AuthConfig::ClientCredentials {
        token_url,
        audiences,
        ..
    } = &config.common().intake().expect("hik8s").auth
    else {
        panic!("client credentials expected");
    };
    assert_eq!(token_url, "http://127.0.0.1:9/oauth2/token");
    assert_eq!(audiences, &["https://api.hik8s.ai/", "second"]);
}

#[test]
fn host_and_port_build_the_url() {
    let env = [("HIK8S_HOST", "intake.example"), ("HIK8S_TOKEN", TOKEN)];
    let config = parse(&env, &[]).expect("valid");
    assert_eq!(
        config.common().intake().unwrap().url,
        "https://intake.example:443"
    );
    let config = parse(&with(&env, &[("HIK8S_PORT", "8443")]), &[]).expect("valid");
    assert_eq!(
        config.common().intake().unwrap().url,
        "https://intake.example:8443"
    );
    // HIK8S_URL wins over HOST and PORT.
    let config = parse(&with(&env, &[("HIK8S_URL", "http://other:1")]), &[]).expect("valid");
    assert_eq!(config.common().intake().unwrap().url, "http://other:1");
    assert_eq!(
        error_of(&with(&env, &[("HIK8S_PORT", "http")]), &[]).0,
        "HIK8S_PORT"
    );
    assert_eq!(
        error_of(&with(&env, &[("HIK8S_PORT", "70000")]), &[]).0,
        "HIK8S_PORT"
    );
    assert_eq!(
        error_of(&[("HIK8S_HOST", "bad host"), ("HIK8S_TOKEN", TOKEN)], &[]).0,
        "HIK8S_HOST"
    );
}

#[test]
fn flag_wins_over_env_which_wins_over_the_default() {
    let env = [
        ("LOGD_PODS_DIR", "/from/env"),
        ("LOGD_BATCH_MAX_BYTES", "512KiB"),
    ];
    let config = parse(&env, &["--logd-pods-dir", "/from/flag"]).expect("valid");
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/from/flag")
    );
    assert_eq!(config.bytes("LOGD_BATCH_MAX_BYTES").unwrap(), 512 * 1024);
    let config = parse(&env, &["--logd-batch-max-bytes=2Mi"]).expect("valid");
    assert_eq!(config.bytes("LOGD_BATCH_MAX_BYTES").unwrap(), 2 << 20);
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/from/env")
    );
    // Alias flags work too.
    let config = parse(
        &with(CREDS, &[("HIK8S_URL", "http://h")]),
        &["--auth0-audience", "flagged"],
    )
    .expect("valid");
    let AuthConfig::ClientCredentials { audiences, .. } = &config.common().intake().unwrap().auth
    else {
        panic!("client credentials expected");
    };
    assert_eq!(audiences, &["flagged"]);
}

#[test]
fn empty_values_count_as_unset() {
    let config = parse(&[("HIK8S_URL", ""), ("LOGD_PODS_DIR", "")], &[]).expect("valid");
    assert!(matches!(config.common().sink, SinkConfig::Stdout));
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/var/log/pods")
    );
}

#[test]
fn malformed_url_names_the_variable() {
    let (var, line) = error_of(&[("HIK8S_URL", "ftp//x"), ("HIK8S_TOKEN", TOKEN)], &[]);
    assert_eq!(var, "HIK8S_URL");
    assert_eq!(
        line,
        r#"logd: configuration error: HIK8S_URL: "ftp//x" is not an http(s) URL"#
    );
    assert_eq!(error_of(&[("HIK8S_URL", "ftp://x")], &[]).0, "HIK8S_URL");
    assert_eq!(error_of(&[("HIK8S_URL", "https://")], &[]).0, "HIK8S_URL");
    let env = with(
        CREDS,
        &[("HIK8S_URL", "http://h"), ("AUTH_TOKEN_URL", "not a url")],
    );
    assert_eq!(error_of(&env, &[]).0, "AUTH_TOKEN_URL");
}

#[test]
fn half_there_credentials_name_the_missing_variable() {
    let url = ("HIK8S_URL", "https://api.hik8s.ai");
    assert_eq!(
        error_of(&[url, ("CLIENT_ID", "id")], &[]).0,
        "CLIENT_SECRET"
    );
    assert_eq!(
        error_of(&[url, ("CLIENT_SECRET", SECRET)], &[]).0,
        "CLIENT_ID"
    );
    let no_domain: Vec<_> = CREDS
        .iter()
        .filter(|(k, _)| *k != "AUTH_DOMAIN")
        .copied()
        .collect();
    assert_eq!(error_of(&with(&no_domain, &[url]), &[]).0, "AUTH_DOMAIN");
    let no_audience: Vec<_> = CREDS
        .iter()
        .filter(|(k, _)| *k != "AUTH_AUDIENCE")
        .copied()
        .collect();
    assert_eq!(
        error_of(&with(&no_audience, &[url]), &[]).0,
        "AUTH_AUDIENCE"
    );
    // Half-there credentials are refused whatever the sink.
    assert_eq!(
        error_of(&[("CLIENT_ID", "id"), ("HIK8S_SINK", "stdout")], &[]).0,
        "CLIENT_SECRET"
    );
}

#[test]
fn token_and_client_credentials_together_are_refused() {
    let env = with(
        CREDS,
        &[
            ("HIK8S_URL", "https://api.hik8s.ai"),
            ("HIK8S_TOKEN", TOKEN),
        ],
    );
    let (var, line) = error_of(&env, &[]);
    assert_eq!(var, "HIK8S_TOKEN");
    assert!(!line.contains(TOKEN) && !line.contains(SECRET), "{line}");
}

#[test]
fn hik8s_sink_needs_a_url_and_credentials() {
    assert_eq!(
        error_of(&[("HIK8S_SINK", "hik8s"), ("HIK8S_TOKEN", TOKEN)], &[]).0,
        "HIK8S_SINK"
    );
    assert_eq!(
        error_of(&[("HIK8S_SINK", "hik8s"), ("HIK8S_URL", "https://h")], &[]).0,
        "HIK8S_SINK"
    );
    // The default sink with a URL is hik8s: credentials are then needed too.
    assert_eq!(error_of(&[("HIK8S_URL", "https://h")], &[]).0, "HIK8S_URL");
    // Another sink needs none.
    let config =
        parse(&[("HIK8S_URL", "https://h"), ("HIK8S_SINK", "stdout")], &[]).expect("valid");
    assert!(matches!(config.common().sink, SinkConfig::Stdout));
}

#[test]
fn file_sink_needs_an_existing_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.ndjson");
    let value = format!("file:{}", path.display());
    let config = parse(&[("HIK8S_SINK", &value)], &[]).expect("valid");
    assert!(matches!(&config.common().sink, SinkConfig::File(p) if *p == path));
    let missing = format!("file:{}", dir.path().join("missing/out.ndjson").display());
    let (var, line) = error_of(&[("HIK8S_SINK", &missing)], &[]);
    assert_eq!(var, "HIK8S_SINK");
    assert!(line.contains("does not exist"), "{line}");
    assert_eq!(error_of(&[("HIK8S_SINK", "file:")], &[]).0, "HIK8S_SINK");
    assert_eq!(error_of(&[("HIK8S_SINK", "kafka")], &[]).0, "HIK8S_SINK");
}

#[test]
fn typed_getters_name_the_variable() {
    type Getter = fn(&Config, &str) -> Result<(), ConfigError>;
    let cases: &[(&str, &str, Getter)] = &[
        ("LOGD_BATCH_MAX_BYTES", "lots", |c, n| c.bytes(n).map(drop)),
        ("LOGD_BATCH_MAX_BYTES", "12XB", |c, n| c.bytes(n).map(drop)),
        ("LOGD_BATCH_LINGER_MS", "soon", |c, n| c.millis(n).map(drop)),
        ("LOGD_METRICS_ADDR", "9600", |c, n| {
            c.socket_addr_or_off(n).map(drop)
        }),
        ("LOGD_FOLLOW", "maybe", |c, n| c.bool(n).map(drop)),
    ];
    for (name, value, get) in cases {
        let config = parse(&[(name, value)], &[]).expect("parsing alone accepts anything");
        let error = get(&config, name).expect_err(value);
        assert_eq!(error.var(), Some(*name));
        assert!(error.to_string().contains(&format!("{value:?}")), "{error}");
    }
    let error = parse(&[("HIK8S_SHUTDOWN_GRACE_SECS", "ten")], &[]).expect_err("bad grace");
    assert_eq!(error.var(), Some("HIK8S_SHUTDOWN_GRACE_SECS"));
}

#[test]
fn typed_getters_parse_their_forms() {
    let env = [
        ("LOGD_BATCH_MAX_BYTES", "1MB"),
        ("LOGD_BATCH_LINGER_MS", "2s"),
        ("LOGD_METRICS_ADDR", "off"),
        ("LOGD_FOLLOW", "no"),
        ("LOGD_EXCLUDE_NAMESPACES", " kube-system, ,default "),
        ("HIK8S_SHUTDOWN_GRACE_SECS", "30"),
    ];
    let config = parse(&env, &[]).expect("valid");
    assert_eq!(config.bytes("LOGD_BATCH_MAX_BYTES").unwrap(), 1_000_000);
    assert_eq!(
        config.millis("LOGD_BATCH_LINGER_MS").unwrap(),
        Duration::from_secs(2)
    );
    assert_eq!(
        config.socket_addr_or_off("LOGD_METRICS_ADDR").unwrap(),
        None
    );
    assert!(!config.bool("LOGD_FOLLOW").unwrap());
    assert_eq!(
        config.list("LOGD_EXCLUDE_NAMESPACES"),
        ["kube-system", "default"]
    );
    assert_eq!(config.common().shutdown_grace, Duration::from_secs(30));
    let config = parse(&[("LOGD_METRICS_ADDR", ":9700")], &[]).expect("valid");
    assert_eq!(
        config.socket_addr_or_off("LOGD_METRICS_ADDR").unwrap(),
        Some("0.0.0.0:9700".parse().unwrap())
    );
    assert_eq!(parse_bytes("30720").unwrap(), 30720);
    assert_eq!(parse_bytes("512 KiB").unwrap(), 512 * 1024);
    assert!(parse_bytes("99999999999999GiB").is_err());
}

#[test]
fn unknown_flags_and_missing_values_are_errors() {
    let (var, line) = error_of(&[], &["--no-such-thing"]);
    assert_eq!(var, "--no-such-thing");
    assert!(line.contains("unknown argument"), "{line}");
    assert_eq!(error_of(&[], &["positional"]).0, "positional");
    assert_eq!(error_of(&[], &["--logd-pods-dir"]).0, "LOGD_PODS_DIR");
}

#[test]
fn help_lists_every_variable_its_flag_alias_and_default() {
    let error = parse(&[("HIK8S_URL", "ftp//bad")], &["--help"]).expect_err("help");
    assert_eq!(error.exit_code(), 0);
    let ConfigError::Help(text) = error else {
        panic!("help expected");
    };
    for spec in COMMON_VARS.iter().chain(EXTRA) {
        assert!(text.contains(spec.name), "{} missing from help", spec.name);
        assert!(
            text.contains(&spec.flag()),
            "{} missing from help",
            spec.flag()
        );
    }
    assert!(text.contains("alias: AUTH0_DOMAIN (--auth0-domain)"));
    assert!(text.contains("default: 0.0.0.0:9600"));
    assert!(text.contains("default: 30720 with the hik8s sink, 1 MiB otherwise"));
    let ConfigError::Version(version) = parse(&[], &["--version"]).expect_err("version") else {
        panic!("version expected");
    };
    assert_eq!(version, format!("logd {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let env = [
        ("HIK8S_URL", "https://h"),
        ("HIK8S_TOKEN", TOKEN),
        ("HTTPS_PROXY", "http://user:pw-secret@proxy:3128"),
    ];
    let config = parse(&env, &[]).expect("valid");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(TOKEN) && !debug.contains("pw-secret"),
        "{debug}"
    );
    let config = parse(&with(CREDS, &[("HIK8S_URL", "https://h")]), &[]).expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn proxy_and_no_proxy_are_read() {
    let env = [
        ("HIK8S_URL", "https://h"),
        ("HIK8S_TOKEN", TOKEN),
        ("https_proxy", "http://proxy.example:3128"),
        ("NO_PROXY", "localhost,.cluster.local"),
    ];
    let config = parse(&env, &[]).expect("valid");
    let proxy = config
        .common()
        .intake()
        .unwrap()
        .proxy
        .as_ref()
        .expect("proxy");
    assert_eq!(proxy.url.expose(), "http://proxy.example:3128");
    assert_eq!(proxy.no_proxy, ["localhost", ".cluster.local"]);
}

#[test]
fn ca_file_must_hold_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let path_text = path.display().to_string();
    let env = [
        ("HIK8S_URL", "https://h"),
        ("HIK8S_TOKEN", TOKEN),
        ("HIK8S_CA_FILE", path_text.as_str()),
    ];
    assert_eq!(error_of(&env, &[]).0, "HIK8S_CA_FILE");
    let missing = dir.path().join("missing.pem").display().to_string();
    let env = [
        ("HIK8S_URL", "https://h"),
        ("HIK8S_TOKEN", TOKEN),
        ("HIK8S_CA_FILE", missing.as_str()),
    ];
    assert_eq!(error_of(&env, &[]).0, "HIK8S_CA_FILE");
}

#[test]
fn dotenv_is_read_and_the_real_environment_wins() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join(".env"),
        "# dev settings\nLOGD_PODS_DIR=/from/dotenv\nLOGD_BATCH_LINGER_MS=250\nAUTH0_DOMAIN=dotenv.example\n",
    )
    .expect("write .env");
    let env = [("LOGD_BATCH_LINGER_MS", "750")];
    let config = Config::parse(
        "logd",
        EXTRA,
        Vec::new(),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        Some(dir.path()),
    )
    .expect("valid");
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/from/dotenv")
    );
    assert_eq!(
        config.millis("LOGD_BATCH_LINGER_MS").unwrap(),
        Duration::from_millis(750)
    );
    assert_eq!(config.value("AUTH_DOMAIN"), Some("dotenv.example"));
    // No .env: nothing read, no error.
    let empty = tempfile::tempdir().expect("temp dir");
    let config =
        Config::parse("logd", EXTRA, Vec::new(), Vec::new(), Some(empty.path())).expect("valid");
    assert_eq!(
        config.path("LOGD_PODS_DIR").unwrap(),
        PathBuf::from("/var/log/pods")
    );
}

#[test]
fn a_malformed_dotenv_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(".env"), "GOOD=1\nthis is not a line\n").expect("write .env");
    let error = Config::parse("logd", EXTRA, Vec::new(), Vec::new(), Some(dir.path()))
        .expect_err("malformed .env");
    assert_eq!(error.var(), Some(".env"));
}

fn otlp_of(env: &[(&str, &str)]) -> OtlpConfig {
    match parse(env, &[]).expect("valid").common().sink.clone() {
        SinkConfig::Otlp(otlp) => otlp,
        other => panic!("not the OTLP sink: {other:?}"),
    }
}

#[test]
fn an_otlp_endpoint_alone_makes_the_otlp_sink_with_the_sdk_defaults() {
    let otlp = otlp_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
    assert_eq!(otlp.url, "http://collector:4318/v1/logs");
    assert_eq!(otlp.format, crate::otlp::encode::Format::Protobuf);
    assert!(!otlp.gzip);
    assert_eq!(otlp.timeout, Duration::from_secs(10));
    assert!(otlp.headers.is_empty() && otlp.resource_attributes.is_empty());
    // Named without an endpoint: the SDK's default one.
    let otlp = otlp_of(&[("HIK8S_SINK", "otlp")]);
    assert_eq!(otlp.url, "http://localhost:4318/v1/logs");
    // An intake URL still makes the hik8s sink the default.
    let config = parse(
        &[
            ("HIK8S_URL", "https://intake.example"),
            ("HIK8S_TOKEN", TOKEN),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ],
        &[],
    )
    .expect("valid");
    assert!(matches!(config.common().sink, SinkConfig::Hik8s(_)));
}

#[test]
fn the_logs_variables_win_over_the_general_ones() {
    let otlp = otlp_of(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://loki:3100/otlp/v1/logs",
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-general=1"),
        (
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "Authorization=Bearer%20made-up, X-Scope-OrgID=tenant%2C1",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2500"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.cluster.name=prod,deployment.environment=eu%20west",
        ),
    ]);
    assert_eq!(otlp.url, "http://loki:3100/otlp/v1/logs");
    let headers: Vec<(&str, &str)> = otlp
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("Authorization", "Bearer made-up"),
            ("X-Scope-OrgID", "tenant,1")
        ]
    );
    assert_eq!(otlp.format, crate::otlp::encode::Format::Json);
    assert!(otlp.gzip);
    assert_eq!(otlp.timeout, Duration::from_millis(2500));
    assert_eq!(
        otlp.resource_attributes,
        [
            ("k8s.cluster.name".to_string(), "prod".to_string()),
            ("deployment.environment".to_string(), "eu west".to_string())
        ]
    );
    // Header values are secrets: not in the configuration's Debug.
    assert!(!format!("{otlp:?}").contains("made-up"));
}

#[test]
fn bad_otlp_values_name_their_variable() {
    let otlp = |more: &[(&'static str, &'static str)]| with(&[("HIK8S_SINK", "otlp")], more);
    for (var, value, says) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "URL"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "ftp://x/v1/logs", "URL"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization", "key=value"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "=x", "no key"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "not supported"),
        (
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "http/xml",
            "http/protobuf",
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "duration"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "0", "more than 0"),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/ca.pem",
            "ca.pem",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.cluster.name=%FF",
            "URL-encoded",
        ),
    ] {
        let (named, line) = error_of(&otlp(&[(var, value)]), &[]);
        assert_eq!(named, var, "{line}");
        assert!(line.contains(says), "{line}");
    }
    let (named, _) = error_of(&[("HIK8S_SINK", "opentelemetry")], &[]);
    assert_eq!(named, "HIK8S_SINK");
}
