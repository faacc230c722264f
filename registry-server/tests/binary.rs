//! The `registry-server` binary as an operator runs it: JSON logs, a loopback port, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use registry_proto::pb::audit_service_client::AuditServiceClient;
use registry_proto::pb::{GetRegistryInfoRequest, WatchEntriesRequest};

/// Starts the binary on a free loopback port and returns it with the address it logged.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("registry-server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "no 'listening' log line");
        let line = lines.next().expect("the server logs until it listens").expect("UTF-8 log");
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if event["message"] == "listening for gRPC" {
            break event["addr"].as_str().expect("addr field").to_string();
        }
    };
    // Keep draining the logs so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_zero_and_the_identity_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let mut client = AuditServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let first = client.get_registry_info(GetRegistryInfoRequest {}).await.unwrap().into_inner();
    let mut watch =
        client.watch_entries(WatchEntriesRequest { start: 0 }).await.unwrap().into_inner();

    sigterm(&child);
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch stream ends at shutdown");
    assert!(matches!(ended, Err(ref s) if s.code() == tonic::Code::Unavailable), "{ended:?}");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");

    let (mut child, addr) = start(dir.path());
    let mut client = AuditServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let again = client.get_registry_info(GetRegistryInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        again.public_key_der, first.public_key_der,
        "the registry key is loaded, not regenerated"
    );
    assert_eq!(again.origin, first.origin);
    sigterm(&child);
    assert_eq!(wait_with_timeout(&mut child, Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn a_bad_setting_is_reported_with_exit_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

/// The shipped systemd unit is one systemd accepts, and it raises the file-descriptor limit (each
/// connection is one) and sandboxes the service. Needs `systemd-analyze`; says so when missing.
#[test]
fn the_systemd_unit_verifies_and_limits_the_service() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/keyregistry.service"),
    )
    .expect("deploy/keyregistry.service");
    for setting in
        ["LimitNOFILE=65536", "MemoryMax=", "NoNewPrivileges=true", "CapabilityBoundingSet=\n"]
    {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit's syntax was not verified");
        return;
    }
    // Verify a copy whose ExecStart names the binary just built (verify checks that it exists).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyregistry.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/registry-server", env!("CARGO_BIN_EXE_registry-server")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// With `--request-log`, each call is one JSON line naming its method, peer, status code,
/// duration and the request ID the client also gets back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_has_a_line_per_call_with_the_id_the_client_got() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--request-log", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("registry-server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let next = |what: &dyn Fn(&serde_json::Value) -> bool| loop {
        let event = rx.recv_timeout(Duration::from_secs(30)).expect("a log line");
        if what(&event) {
            return event;
        }
    };
    let listening = next(&|e| e["message"] == "listening for gRPC");
    let addr = listening["addr"].as_str().unwrap().to_string();

    let mut client = AuditServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let mut request = tonic::Request::new(GetRegistryInfoRequest {});
    request.metadata_mut().insert("x-request-id", "ticket-42".parse().unwrap());
    let answer = client.get_registry_info(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "ticket-42");

    let line = next(&|e| e["message"] == "request" && e["request_id"] == "ticket-42");
    assert_eq!(line["method"], "/keyregistry.v1.AuditService/GetRegistryInfo", "{line}");
    assert_eq!(line["code"], "OK", "{line}");
    assert!(line["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{line}");
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    sigterm(&child);
    wait_with_timeout(&mut child, Duration::from_secs(15));
}
