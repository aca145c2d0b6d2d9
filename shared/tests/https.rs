//! The intake client over real TLS on 127.0.0.1: a test CA made here signs
//! the server's certificate, and `HIK8S_CA_FILE` is what makes the client
//! trust it (the Mozilla roots alone do not). Intake and token requests go
//! through the same agent, so both are checked.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shared::config::{Config, IntakeConfig};
use shared::intake::{IntakeClient, LogMeta, Route, SendError};

const TOKEN: &str = "made-up-static-token";
const TOKEN_ROUTE: &str = "/oauth2/token";
const TOKEN_ANSWER: &str = r#"{"access_token":"t-123","token_type":"Bearer","expires_in":3600}"#;

#[test]
fn the_ca_file_makes_the_intake_trusted() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = pki.write_ca_bundle(dir.path());

    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}", server.port);
        let client = IntakeClient::new(&intake_config(&[
            ("HIK8S_URL", &url),
            ("HIK8S_TOKEN", TOKEN),
            ("HIK8S_CA_FILE", &ca_file),
        ]));
        client
            .post_json(Route::Resources, b"[]")
            .unwrap_or_else(|e| panic!("POST /resources to {url}: {e}"));
        let stream = b"2024-11-18T08:59:45.000000001Z stdout F over tls\n";
        client
            .post_logs(&meta(), stream)
            .unwrap_or_else(|e| panic!("POST /logs to {url}: {e}"));
    }

    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /resources HTTP/1.1",
            "POST /logs HTTP/1.1",
            "POST /resources HTTP/1.1",
            "POST /logs HTTP/1.1",
        ]
    );
    for request in &requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    let logs = String::from_utf8_lossy(&requests[1].body);
    assert!(logs.contains("stdout F over tls\n"), "body: {logs}");
}

#[test]
fn without_the_ca_file_the_certificate_is_refused() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki);
    let url = format!("https://localhost:{}", server.port);
    let client = IntakeClient::new(&intake_config(&[
        ("HIK8S_URL", &url),
        ("HIK8S_TOKEN", TOKEN),
    ]));

    let error = client
        .post_json(Route::Resources, b"[]")
        .expect_err("a certificate from an unknown CA must be refused");
    let SendError::Retryable { reason, status, .. } = &error else {
        panic!("not retryable: {error:?}");
    };
    assert_eq!(*status, None, "{error:?}");
    assert!(
        reason.contains("certificate") && reason.contains("UnknownIssuer"),
        "the reason should name the certificate's unknown issuer: {reason}"
    );
    assert!(server.requests().is_empty(), "a request got through");
}

#[test]
fn the_token_is_fetched_over_https_with_the_ca_file() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = pki.write_ca_bundle(dir.path());
    let url = format!("https://localhost:{}", server.port);
    let token_url = format!("{url}{TOKEN_ROUTE}");
    let client = IntakeClient::new(&intake_config(&[
        ("HIK8S_URL", &url),
        ("CLIENT_ID", "test-client"),
        ("CLIENT_SECRET", "made-up-secret"),
        ("AUTH_TOKEN_URL", &token_url),
        ("AUTH_AUDIENCE", "https://api.hik8s.ai/"),
        ("HIK8S_CA_FILE", &ca_file),
    ]));

    client
        .post_json(Route::Events, b"[]")
        .unwrap_or_else(|e| panic!("POST /events with a fetched token: {e}"));

    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines,
        ["POST /oauth2/token HTTP/1.1", "POST /events HTTP/1.1"]
    );
    let basic = requests[0].authorization.as_deref().unwrap_or_default();
    assert!(basic.starts_with("Basic "), "token request auth: {basic:?}");
    let form = String::from_utf8_lossy(&requests[0].body);
    assert!(form.starts_with("grant_type=client_credentials"), "{form}");
    assert_eq!(requests[1].authorization.as_deref(), Some("Bearer t-123"));
}

/// The intake settings the real parser makes of `env` (no flags, no `.env`).
fn intake_config(env: &[(&str, &str)]) -> IntakeConfig {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::parse("logd", &[], Vec::new(), env, None)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}"))
        .common()
        .intake()
        .expect("hik8s sink")
        .clone()
}

fn meta() -> LogMeta<'static> {
    LogMeta {
        path: "/var/log/pods/default_web-1_0a1b2c3d-0000-4000-8000-000000000001/nginx",
        file: "0.log",
    }
}

/// A test CA and the server certificate it signed.
struct Pki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let ca = new_ca("hik8s test CA");
        let server_key = KeyPair::generate().expect("key pair");
        let mut params = CertificateParams::new(["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server names");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        Pki {
            ca_pem: ca.pem(),
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        }
    }

    /// Writes `ca.pem` in `dir`, our CA after an unrelated one, the way a
    /// bundle looks: every certificate of the file must be read, not only
    /// the first. Returns its path.
    fn write_ca_bundle(&self, dir: &Path) -> String {
        let unrelated = new_ca("unrelated test CA").pem();
        let path = dir.join("ca.pem");
        std::fs::write(&path, format!("{unrelated}{}", self.ca_pem)).expect("write ca.pem");
        path.to_str().expect("UTF-8 temp path").to_string()
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key pair");
    CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Request {
    /// E.g. `POST /logs HTTP/1.1`.
    line: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// A minimal blocking HTTPS server on 127.0.0.1: a thread per connection,
/// keep-alive, `200 {}` to everything (a token to [`TOKEN_ROUTE`]).
struct TlsServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(pki.server_key.clone_key());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_cert.clone()], key)
            .expect("server certificate and key match");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        // Lives until the test process ends, like the listener.
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, seen) = (config.clone(), seen.clone());
                thread::spawn(move || serve(config, tcp, &seen));
            }
        });
        TlsServer { port, requests }
    }

    /// The requests answered so far, in order. Each is recorded before it
    /// is answered, so a request the client saw succeed is in the list.
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Answers the requests of one connection until it closes or fails (a
/// refused handshake ends it before any request).
fn serve(config: Arc<rustls::ServerConfig>, tcp: TcpStream, seen: &Mutex<Vec<Request>>) {
    // A client that vanishes must not keep the thread forever.
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let connection = rustls::ServerConnection::new(config).expect("server connection");
    let mut stream = BufReader::new(rustls::StreamOwned::new(connection, tcp));
    while let Some(request) = read_request(&mut stream) {
        let answer = if request.line.split(' ').nth(1) == Some(TOKEN_ROUTE) {
            TOKEN_ANSWER
        } else {
            "{}"
        };
        seen.lock().expect("requests lock").push(request);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let tls = stream.get_mut();
        if tls.write_all(response.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
    }
}

/// One request: its head up to the empty line, then `Content-Length` bytes
/// of body. `None` at the end of the connection or on any error.
fn read_request(stream: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut request = Request {
        line: line.trim_end().to_string(),
        authorization: None,
        body: Vec::new(),
    };
    let mut content_length = 0;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).ok().filter(|&n| n > 0)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("authorization") {
            request.authorization = Some(value.to_string());
        }
    }
    request.body = vec![0; content_length];
    stream.read_exact(&mut request.body).ok()?;
    Some(request)
}
