//! `ballast --profile NAME` starts with the profile's settings, logs them at start-up and
//! reports them in /metrics; a bad config value stops start-up with an error naming the key.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Server {
        child,
        log,
        _dir: dir,
    }
}

/// GET `path` over HTTP/1.1; None until the server answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

fn wait_for(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = http_get(port, path) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "server on {port} did not answer {path}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn profile_large_is_applied_logged_and_reported() {
    let port = free_port();
    let server = start(port, &["--profile", "large"]);
    let metrics = wait_for(port, "/metrics");
    let large = ballast_tuning::Profile::by_name("large")
        .unwrap()
        .settings();
    assert!(
        metrics.contains("ballast_profile_info{profile=\"large\"} 1"),
        "{metrics}"
    );
    let cache = format!(
        "ballast_setting{{key=\"page-cache-bytes\"}} {}",
        large.page_cache_bytes
    );
    assert!(metrics.contains(&cache), "{metrics}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("config profile: large"), "{log}");
    assert!(
        log.contains(&format!(
            "config page-cache-bytes: {}",
            large.page_cache_bytes
        )),
        "{log}"
    );
}

#[test]
fn invalid_config_file_value_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ballast.yml");
    std::fs::write(&file, "max-txn-ops: many\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["--config-file", file.to_str().unwrap()])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max-txn-ops"), "{stderr}");
}
