//! The `test-apiserver` binary: starts, loads the recorded fixtures, writes
//! a kubeconfig and serves them.

mod apiserver_common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use apiserver_common::*;

/// Kills the server process when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_serves_the_fixtures_and_writes_a_kubeconfig() {
    let fixtures = testkit::fixtures_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-apiserver"))
        .args(["--port", "0", "--fixtures"])
        .arg(&fixtures)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start test-apiserver");
    let stdout = child.stdout.take().expect("piped stdout");
    let _child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("test-apiserver says where it listens");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_string();
        }
    };
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let config = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    assert!(config.contains(&format!("server: {url}")), "{config}");

    let pods = get_json(addr, "/api/v1/namespaces/examples/pods");
    assert!(
        names(&pods).contains(&"test1-656b95f57-mddjc".to_string()),
        "{pods}"
    );
    let uids: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap())
        .collect();
    let mut unique = uids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(uids.len(), unique.len(), "each object has a uid of its own");
    // Recorded custom resources come with a CRD made for them.
    let certificates = get_json(addr, "/apis/cert-manager.io/v1/certificates");
    assert!(!names(&certificates).is_empty());
}
