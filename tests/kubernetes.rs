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

/// The configuration file `name` of the ConfigMap (the lines indented under `name: |`),
/// loaded as the server loads it.
fn mounted_config(name: &str) -> registry_server::config::Config {
    let configmap = std::fs::read_to_string(dir().join("configmap.yaml")).unwrap();
    let toml: String = configmap
        .split_once(&format!("{name}: |\n"))
        .unwrap_or_else(|| panic!("a {name} entry"))
        .1
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &toml).unwrap();
    registry_server::config::Config::load(
        Some(file.path()),
        &registry_server::config::Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's {name} does not load: {e}\n{toml}"))
}

/// The ports, probes, scrape annotation, data volume and security context of a workload match
/// the configuration it mounts.
fn assert_matches(config: &registry_server::config::Config, workload: &str) {
    let grpc = config.listen.port();
    let metrics = config.metrics_listen.expect("metrics are served").port();
    let web = config.http_listen.expect("the web face is served").port();
    assert!(workload.contains(&format!("containerPort: {grpc}")));
    assert!(workload.contains(&format!("containerPort: {metrics}")));
    assert!(workload.contains(&format!("- name: http\n              containerPort: {web}")));
    assert_eq!(
        workload.matches(&format!("grpc:\n              port: {grpc}")).count(),
        3,
        "three gRPC probes"
    );
    assert!(workload.contains(&format!("prometheus.io/port: \"{metrics}\"")));
    assert!(workload.contains(&format!("mountPath: {}", config.data_dir.display())));
    assert!(workload.contains("readOnlyRootFilesystem: true"));
    assert!(workload.contains("runAsNonRoot: true"));
}

fn mount_of(path: &Path) -> String {
    format!("mountPath: {}", path.parent().expect("a directory").display())
}

#[test]
fn the_primary_mounts_a_configuration_the_server_loads_with_its_key_from_a_secret() {
    let config = mounted_config("registry.toml");
    let statefulset = std::fs::read_to_string(dir().join("statefulset.yaml")).unwrap();
    assert_matches(&config, &statefulset);
    assert_eq!(config.follow.primary, None);
    let key = config.registry_key.as_deref().expect("the key comes from a Secret");
    assert!(statefulset.contains(&mount_of(key)), "the key's directory is mounted");
    assert!(statefulset.contains("secretName: keyregistry-key"));
    assert!(config.sync_replicas >= 1);
    let token = config.replication_token_file.as_deref().expect("reports need a token");
    assert!(statefulset.contains(&mount_of(token)));
    assert!(statefulset.contains("secretName: keyregistry-replication"));
    let replicas = std::fs::read_to_string(dir().join("replicas.yaml")).unwrap();
    assert!(replicas.contains("kind: PodDisruptionBudget") && replicas.contains("minAvailable: 1"));
}

#[test]
fn the_replicas_follow_the_primary_s_service_and_are_ready_once_caught_up() {
    let config = mounted_config("replica.toml");
    let replicas = std::fs::read_to_string(dir().join("replicas.yaml")).unwrap();
    assert_matches(&config, &replicas);
    assert!(replicas.contains("service: keyregistry.v1.LookupService"), "readiness: caught up");
    let primary = mounted_config("registry.toml");
    assert_eq!(
        config.follow.primary.as_deref(),
        Some(format!("http://keyregistry:{}", primary.listen.port()).as_str())
    );
    let services = std::fs::read_to_string(dir().join("service.yaml")).unwrap();
    let writes = services.split("---").find(|d| d.contains("name: keyregistry\n")).unwrap();
    assert!(writes.contains("app.kubernetes.io/component: primary"), "{writes}");
    let reads = services.split("---").find(|d| d.contains("name: keyregistry-read\n")).unwrap();
    assert!(reads.contains("app.kubernetes.io/component: replica"), "{reads}");
    let key = config.follow.registry_key.as_deref().expect("the public key is configured");
    assert!(replicas.contains(&mount_of(key)));
    assert!(replicas.contains("name: keyregistry-public-key"));
    let token = config.follow.token_file.as_deref().expect("reports carry the token");
    assert!(replicas.contains(&mount_of(token)));
    assert!(replicas.contains("secretName: keyregistry-replication"));
    assert_eq!(Some(token), primary.replication_token_file.as_deref(), "the same Secret");
    assert!(!replicas.contains("keyregistry-key\n"), "replicas never see the private key");
}
