//! The log read as tiles over HTTP: an export or a follow from the registry's own web face, or
//! from any static web server holding a copy of an export (a real nginx on loopback, where the
//! Debian package is installed), gives exactly the archive an export over gRPC gives, and a
//! tampered copy is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use indicatif::ProgressBar;
use registry_client::ClientError;
use registry_client::archive::Archive;
use registry_client::audit::{self, Source};
use registry_client::tiles::TileClient;
use registry_tests::Fixture;

async fn registry() -> Fixture {
    Fixture::start_configured(|c| c.http_listen = Some("127.0.0.1:0".parse().unwrap())).await
}

async fn register_many(f: &Fixture, op: &registry_core::keys::P256KeyPair, from: u32, n: u32) {
    for i in from..from + n {
        registry_tests::register_at_evse(f, op, &format!("DE*ABC*E{i}")).await;
    }
}

fn registry_key(f: &Fixture) -> Vec<u8> {
    let pem =
        std::fs::read_to_string(f.registry.config.data_dir.join("registry-key.pub.pem")).unwrap();
    registry_core::keys::p256_spki_der_from_pem(&pem).unwrap()
}

/// Every file of an archive, by relative path, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn export_over_grpc(f: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    audit::export(&f.client, &Archive::new(dir.path()), None, &ProgressBar::hidden())
        .await
        .expect("exported over gRPC");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_and_a_follow_from_the_web_face_are_the_grpc_export() {
    let f = registry().await;
    let op = f.operator("DE*ABC").await;
    register_many(&f, &op, 0, 140).await;
    let key = registry_key(&f);
    let url = format!("http://{}/", f.registry.server.web_addr().unwrap());
    let tiles = TileClient::new(&url, None).unwrap().polling(std::time::Duration::from_millis(50));

    let over_grpc = export_over_grpc(&f).await;
    let over_tiles = tempfile::tempdir().unwrap();
    let archive = Archive::new(over_tiles.path());
    let done = audit::export(Source::Tiles(&tiles, &key), &archive, None, &ProgressBar::hidden())
        .await
        .expect("exported from tiles");
    assert_eq!(done.size, f.log_size());
    assert_eq!(files(over_tiles.path()), files(over_grpc.path()));

    // A follow keeps the same archive current as the log grows, by polling the checkpoint.
    let until = f.log_size() + 20;
    let follower = {
        let (tiles, key, dir) = (tiles.clone(), key.clone(), over_tiles.path().to_path_buf());
        tokio::spawn(async move {
            let archive = Archive::new(&dir);
            audit::follow(Source::Tiles(&tiles, &key), &archive, Some(until), |_| {}).await
        })
    };
    register_many(&f, &op, 140, 10).await;
    let followed = follower.await.unwrap().expect("followed");
    assert!(followed >= until, "{followed}");
    let verified =
        audit::verify(&Archive::new(over_tiles.path()), &key, None, &ProgressBar::hidden())
            .expect("the followed archive verifies");
    assert_eq!(verified.checkpoint.size, followed);

    // A key that is not the registry's: its checkpoints are refused.
    let stranger = registry_core::keys::P256KeyPair::generate().public_key_der().to_vec();
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = audit::export(
        Source::Tiles(&tiles, &stranger),
        &Archive::new(elsewhere.path()),
        None,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, ClientError::Verification(_)), "{refused}");
}

/// nginx serving `root` on a free loopback port, stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn start_nginx(bin: &Path, root: &Path) -> Nginx {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path().display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {p}/nginx.pid;\n\
         error_log {p}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           default_type application/octet-stream;\n\
           server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
        root.display()
    );
    let conf_path = prefix.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .args(["-p", &p.to_string(), "-c", &conf_path.display().to_string(), "-e", "stderr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Killed and reaped on drop, also when it never starts listening.
    let nginx = Nginx { child, addr, _prefix: prefix };
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return nginx;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("nginx did not start listening on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_served_by_a_static_web_server_verifies_the_same() {
    let Some(bin) = nginx_binary() else {
        eprintln!(
            "SKIPPED: nginx is not installed (Debian package nginx-light or nginx; .ci/run \
             installs it); the registry's own tile server is tested in \
             an_export_and_a_follow_from_the_web_face_are_the_grpc_export"
        );
        return;
    };
    let f = registry().await;
    let op = f.operator("DE*ABC").await;
    register_many(&f, &op, 0, 140).await;
    let key = registry_key(&f);
    let published = export_over_grpc(&f).await;
    let nginx = start_nginx(&bin, published.path());
    let tiles = TileClient::new(&format!("http://{}/", nginx.addr), None).unwrap();

    let copy = tempfile::tempdir().unwrap();
    audit::export(
        Source::Tiles(&tiles, &key),
        &Archive::new(copy.path()),
        None,
        &ProgressBar::hidden(),
    )
    .await
    .expect("exported from nginx");
    assert_eq!(files(copy.path()), files(published.path()));
    audit::verify(&Archive::new(copy.path()), &key, None, &ProgressBar::hidden())
        .expect("the copy verifies");

    // One byte of one entry changed on the web server: the export refuses it.
    let bundle = published.path().join("tile/entries/000");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, bytes).unwrap();
    let tampered = tempfile::tempdir().unwrap();
    let refused = audit::export(
        Source::Tiles(&tiles, &key),
        &Archive::new(tampered.path()),
        None,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, ClientError::Verification(_)), "{refused}");
}
