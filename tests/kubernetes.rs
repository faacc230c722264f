//! The Kubernetes manifests in `deploy/kubernetes/`: valid against the schemas of Kubernetes
//! 1.33 (`kubernetes-validate --strict`, pip package `kubernetes-validate`, where installed; no
//! cluster runs here), all listed in the kustomization, and consistent with the server: the
//! configuration they mount is one the server loads, and the ports, probes and scrape annotation
//! are the ones it listens on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_manifests_are_valid_kubernetes_1_33_and_all_in_the_kustomization() {
    let kustomization = std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(kustomization.contains(&format!("- {name}")), "{name} is not in the kustomization");
    }
    let out = match Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(&files)
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!(
                "kubernetes-validate is not installed (pip package kubernetes-validate): the \
                 schemas were not checked"
            );
            return;
        }
    };
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("ERROR"), "{report}");
    assert!(report.matches("passed").count() >= files.len(), "{report}");
}

#[test]
fn the_mounted_configuration_is_one_the_server_loads_on_the_ports_the_pod_declares() {
    let configmap = std::fs::read_to_string(dir().join("configmap.yaml")).unwrap();
    // The registry.toml block: the lines indented under `registry.toml: |`.
    let toml: String = configmap
        .split_once("registry.toml: |\n")
        .expect("a registry.toml entry")
        .1
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &toml).unwrap();
    let config = registry_server::config::Config::load(
        Some(file.path()),
        &registry_server::config::Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's registry.toml does not load: {e}\n{toml}"));
    let statefulset = std::fs::read_to_string(dir().join("statefulset.yaml")).unwrap();
    let grpc = config.listen.port();
    let metrics = config.metrics_listen.expect("metrics are served").port();
    assert!(statefulset.contains(&format!("containerPort: {grpc}")));
    assert!(statefulset.contains(&format!("containerPort: {metrics}")));
    assert_eq!(
        statefulset.matches(&format!("grpc:\n              port: {grpc}")).count(),
        3,
        "three gRPC probes"
    );
    assert!(statefulset.contains(&format!("prometheus.io/port: \"{metrics}\"")));
    assert!(statefulset.contains(&format!("mountPath: {}", config.data_dir.display())));
    assert!(statefulset.contains("readOnlyRootFilesystem: true"));
    assert!(statefulset.contains("runAsNonRoot: true"));
}
