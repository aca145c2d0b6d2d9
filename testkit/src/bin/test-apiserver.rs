//! `test-apiserver [--port N] [--fixtures DIR] [--kubeconfig PATH]`: runs the
//! test Kubernetes API server until killed, for trying watchd by hand.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use testkit::apiserver::ApiServer;

const USAGE: &str = "usage: test-apiserver [--port N] [--fixtures DIR] [--kubeconfig PATH]

Serves a test Kubernetes API on 127.0.0.1 (port 0: any free port) until
killed. --fixtures loads the `json` of every apply record file in DIR
(the repository's are in testkit/fixtures/k8s-objects); --kubeconfig writes a kubeconfig
pointing at the server.";

struct Args {
    port: u16,
    fixtures: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        fixtures: None,
        kubeconfig: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                args.port = value
                    .parse()
                    .map_err(|_| format!("--port: not a port: {value}"))?
            }
            "--fixtures" => args.fixtures = Some(value.into()),
            "--kubeconfig" => args.kubeconfig = Some(value.into()),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("test-apiserver: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match ApiServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))) {
        Ok(server) => server,
        Err(e) => {
            eprintln!(
                "test-apiserver: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            return ExitCode::from(1);
        }
    };
    server.create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    if let Some(dir) = &args.fixtures {
        match server.load_fixtures(dir) {
            Ok(n) => println!("loaded {n} objects from {}", dir.display()),
            Err(e) => {
                eprintln!(
                    "test-apiserver: loading fixtures from {}: {e}",
                    dir.display()
                );
                return ExitCode::from(1);
            }
        }
    }
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path);
        println!("kubeconfig written to {}", path.display());
    }
    println!("listening on {}", server.url());
    loop {
        std::thread::park();
    }
}
