//! What an operator watches, against a real server: `/metrics` on its own listener counts and
//! times calls by method and status code under the grpc-ecosystem names, shows the log and the
//! limits' refusals, and passes Prometheus' own checker (`promtool check metrics`, where the
//! Debian package `prometheus` is installed); every answer carries a request ID.

use std::io::Write;
use std::process::{Command, Stdio};

use registry_proto::pb;
use registry_server::log::system_clock;
use registry_tests::Fixture;
use tonic::Code;

/// `GET /metrics` over a plain HTTP/1.1 connection.
fn scrape(f: &Fixture) -> String {
    let addr = f.registry.server.metrics_addr().expect("a metrics listener");
    registry_tests::raw::http_get(addr, "/metrics")
}

/// The metric names (`grpc_server_*`, `registry_*`) a dashboard or rule file mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for start in ["grpc_server_", "registry_"] {
        let mut rest = text;
        while let Some(i) = rest.find(start) {
            let tail = &rest[i..];
            let end =
                tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let preceded =
                rest[..i].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !preceded {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

/// The value of the sample named exactly `series` (name and labels as exposed).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code_and_show_the_log_and_the_limits() {
    let f = Fixture::start_configured(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.request_log = true;
    })
    .await;
    f.operator("DE*ABC").await;
    // Three calls of GetRegistryInfo: the client asked it once for the origin it signs for.
    f.client.registry_info().await.unwrap();
    f.client.registry_info().await.unwrap();
    let mut lookups =
        pb::lookup_service_client::LookupServiceClient::new(f.registry.channel().await);
    let err = lookups.check_validity(pb::CheckValidityRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let many = pb::CheckValidityBatchRequest {
        queries: vec![pb::ValidityQuery::default(); 20_000],
        ..Default::default()
    };
    let err = lookups.check_validity_batch(many).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);

    let m = scrape(&f);
    let info = r#"grpc_type="unary",grpc_service="keyregistry.v1.AuditService",grpc_method="GetRegistryInfo""#;
    assert_eq!(value(&m, &format!("grpc_server_started_total{{{info}}}")), Some(3.0), "{m}");
    assert_eq!(
        value(&m, &format!("grpc_server_handled_total{{{info},grpc_code=\"OK\"}}")),
        Some(3.0),
        "{m}"
    );
    assert_eq!(value(&m, &format!("grpc_server_handling_seconds_count{{{info}}}")), Some(3.0));
    assert_eq!(
        value(&m, &format!("grpc_server_handling_seconds_bucket{{{info},le=\"+Inf\"}}")),
        Some(3.0)
    );
    let check = r#"grpc_type="unary",grpc_service="keyregistry.v1.LookupService",grpc_method="CheckValidity""#;
    assert_eq!(
        value(&m, &format!("grpc_server_handled_total{{{check},grpc_code=\"InvalidArgument\"}}")),
        Some(1.0),
        "{m}"
    );
    let batch = r#"grpc_type="unary",grpc_service="keyregistry.v1.LookupService",grpc_method="CheckValidityBatch""#;
    assert_eq!(
        value(&m, &format!("grpc_server_handled_total{{{batch},grpc_code=\"ResourceExhausted\"}}")),
        Some(1.0),
        "refusals by the limits are counted with their code: {m}"
    );
    assert_eq!(value(&m, r#"registry_refused_total{limit="message_size"}"#), Some(1.0), "{m}");
    assert_eq!(value(&m, "registry_log_size"), Some(f.log_size() as f64), "{m}");
    assert_eq!(value(&m, "registry_writer_up"), Some(1.0));
    assert!(value(&m, "registry_entries_written_total").unwrap_or(0.0) >= 1.0, "{m}");
    assert!(value(&m, "registry_newest_entry_age_seconds").is_some_and(|a| a < 600.0), "{m}");
    assert!(value(&m, "registry_data_dir_free_bytes").is_some_and(|b| b > 0.0), "{m}");
    // Everything written since the start waits for the background check (every 10 s).
    let unverified = value(&m, "registry_unverified_entries").expect("the verification lag");
    assert!(unverified <= f.log_size() as f64, "{m}");
    assert!(m.lines().any(|l| l.starts_with("registry_build_info{") && l.ends_with(" 1")), "{m}");

    assert!(value(&m, "registry_snapshot_duration_seconds").is_some(), "{m}");
    // The fixture's registrations are in memory since the start's snapshot, not yet cut.
    assert!(value(&m, "registry_snapshot_pending_records").is_some_and(|n| n >= 1.0), "{m}");
    assert_eq!(value(&m, "registry_replica_lag_entries"), None, "a primary follows nobody");

    // A replica says how it follows.
    let dir = tempfile::tempdir().unwrap();
    let config = registry_server::config::Config {
        metrics_listen: Some(([127, 0, 0, 1], 0).into()),
        follow: registry_server::config::Follow {
            primary: Some(f.registry.url()),
            ..Default::default()
        },
        ..registry_tests::test_config(dir.path())
    };
    let replica = registry_server::registry::start_registry(&config, system_clock()).await.unwrap();
    let mut heads = replica.reader().subscribe();
    while heads.borrow_and_update().size < f.log_size() {
        heads.changed().await.unwrap();
    }
    // The follower records its progress a moment after the head moves: the figures settle.
    let addr = replica.metrics_addr().unwrap();
    let mut r = String::new();
    for _ in 0..100 {
        r = tokio::task::spawn_blocking(move || registry_tests::raw::http_get(addr, "/metrics"))
            .await
            .unwrap();
        if value(&r, "registry_replica_lag_entries") == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(value(&r, "registry_replica_lag_entries"), Some(0.0), "{r}");
    assert_eq!(value(&r, "registry_replica_lag_seconds"), Some(0.0), "{r}");
    assert_eq!(value(&r, "registry_replica_connected"), Some(1.0), "{r}");
    assert_eq!(value(&r, "registry_replica_stopped"), Some(0.0), "{r}");
    assert_eq!(value(&r, "registry_log_size"), Some(f.log_size() as f64), "{r}");

    // Every series the shipped dashboard and alert rules ask for is one these servers expose.
    let primary = m.clone();
    let m = format!("{m}{r}");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["grafana/keyregistry.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                m.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{file} asks for {name}, which /metrics does not expose"
            );
        }
    }

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            // Both expositions, the replica's without the primary's duplicate families.
            let replica_only: String = r
                .lines()
                .filter(|l| l.contains("registry_replica_"))
                .map(|l| format!("{l}\n"))
                .collect();
            let both = format!("{primary}{replica_only}");
            promtool.stdin.take().unwrap().write_all(both.as_bytes()).unwrap();
            let out = promtool.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!(
            "promtool is not installed (Debian package prometheus): the exposition was checked \
             by this test's assertions only"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_the_clients_own_when_it_sent_one() {
    let f = Fixture::start().await;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(f.registry.channel().await);
    let mut request = tonic::Request::new(pb::GetRegistryInfoRequest {});
    request.metadata_mut().insert("x-request-id", "support-case-4711".parse().unwrap());
    let answer = audit.get_registry_info(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "support-case-4711");

    let answer = audit.get_registry_info(pb::GetRegistryInfoRequest {}).await.unwrap();
    let id = answer.metadata().get("x-request-id").unwrap().to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh UUID: {id}");

    // A refusal carries one too, and an ID that is not plain is replaced.
    let mut request = tonic::Request::new(pb::GetCheckpointRequest { tree_size: u64::MAX });
    request.metadata_mut().insert("x-request-id", "two words".parse().unwrap());
    let err = audit.get_checkpoint(request).await.unwrap_err();
    let id = err.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

/// The alert rules shipped in `deploy/prometheus/` load, and fire when they should: promtool
/// runs their unit tests (`alerts.test.yml`). Needs promtool (Debian package `prometheus`).
#[test]
fn the_shipped_alert_rules_load_and_fire_when_they_should() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = match Command::new("promtool").args(args).current_dir(&dir).output() {
            Ok(out) => out,
            Err(_) => {
                eprintln!(
                    "promtool is not installed (Debian package prometheus): the alert rules in \
                     deploy/prometheus were not checked"
                );
                return;
            }
        };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
