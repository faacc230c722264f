//! The `registry` binary driven through the README walkthrough against a real registry on a
//! loopback port, checking its `--json` output and exit statuses.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `registry` with `--json`; returns the exit status and the parsed output.
fn registry(dir: &Path, server: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_registry"))
        .current_dir(dir)
        .arg("--server")
        .arg(server)
        .arg("--json")
        .args(args)
        .output()
        .expect("registry runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: output is not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn ok(dir: &Path, server: &str, args: &[&str]) -> Value {
    let (code, json) = registry(dir, server, args);
    assert_eq!(code, 0, "{args:?} failed: {json}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_through_the_registry_tool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Keys: an administrator, two operators and three meters.
    for name in ["admin", "abc", "xyz", "meter1", "meter2"] {
        let k = ok(d, "http://unused", &["keygen", "--out", &format!("{name}.pem")]);
        assert_eq!(k["key_id"].as_str().unwrap().len(), 64);
    }
    let config = registry_server::config::Config {
        data_dir: d.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_keys: vec![d.join("admin.pub.pem")],
        ..Default::default()
    };
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await
            .unwrap();
    let url = format!("http://{}", server.local_addr());
    let s = url.as_str();
    let run = move |args: &[&str]| ok(d, s, args);

    run(&[
        "admin",
        "add-operator",
        "--signer",
        "admin.pem",
        "--operator",
        "DE*ABC",
        "--name",
        "ABC Charging",
        "--key",
        "abc.pub.pem",
    ]);
    run(&[
        "admin",
        "add-operator",
        "--signer",
        "admin.pem",
        "--operator",
        "DE*XYZ",
        "--name",
        "XYZ Energy",
        "--key",
        "xyz.pub.pem",
    ]);

    // Commission a charge point, keeping the confirmation receipt.
    let reg = run(&[
        "cpo",
        "register",
        "--receipt",
        "meter1.receipt.json",
        "--signer",
        "abc.pem",
        "--public-key",
        "@meter1.pub.pem",
        "--evse",
        "DE*ABC*E1001*1",
        "--meter-serial",
        "M-1001",
        "--manufacturer",
        "ACME",
        "--effective-at",
        "2026-01-01T08:00:00Z",
    ]);
    // Registry messages are in the protobuf JSON mapping, as the web face's JSON API sends them.
    let registered = &reg["entry"]["events"][0]["keyRegistered"];
    assert_eq!(registered["evseIds"][0], "DE*ABC*E1001*1", "{reg}");
    assert!(reg["confirmation_position"].as_u64().unwrap() > reg["position"].as_u64().unwrap());
    let old_fp = registered["fingerprint"].as_str().unwrap().to_string();

    // Anyone can check the receipt offline with the registry's public key.
    let registry_key = d.join("data/registry-key.pub.pem");
    let receipt = run(&[
        "verify",
        "receipt",
        "meter1.receipt.json",
        "--registry-key",
        registry_key.to_str().unwrap(),
    ]);
    assert_eq!(receipt["valid"], true);
    assert_eq!(receipt["fingerprint"].as_str(), Some(old_fp.as_str()));
    assert_eq!(receipt["evse_ids"][0], "DE*ABC*E1001*1");

    // Check a session.
    // Exit status 0 when the verdict is VALID, 1 when it is any other: the answer is no.
    let check = |at: &str| {
        let (code, json) =
            registry(d, s, &["msp", "check", "--evse", "DE*ABC*E1001*1", "--at", at]);
        let valid = json["validity"]["verdict"] == "VERDICT_VALID";
        assert_eq!(code, if valid { 0 } else { 1 }, "{at}: {json}");
        json
    };
    let v = check("2026-03-01T12:00:00Z");
    assert_eq!(
        (v["validity"]["verdict"].as_str(), v["validity"]["fingerprint"].as_str()),
        (Some("VERDICT_VALID"), Some(old_fp.as_str()))
    );
    // 64-bit integers are strings in the protobuf JSON mapping.
    let log_size: u64 = v["basis"]["logSize"].as_str().unwrap().parse().unwrap();
    assert!(log_size > 0);

    // The same check, verified against the evidence instead of trusted.
    let state = d.join("state.json");
    let checked = run(&[
        "msp",
        "check",
        "--evse",
        "DE*ABC*E1001*1",
        "--at",
        "2026-03-01T12:00:00Z",
        "--verify",
        "--registry-key",
        registry_key.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(checked["validity"]["verdict"], "VERDICT_VALID");
    assert!(checked["verified"]["checkpoint_size"].as_u64().unwrap() >= log_size);
    assert!(state.is_file(), "the last checkpoint is remembered");

    // Replace the meter; the old session stays verifiable with the old key.
    let rep = run(&[
        "cpo",
        "replace",
        "--signer",
        "abc.pem",
        "--key-fingerprint",
        &old_fp,
        "--public-key",
        "@meter2.pub.pem",
        "--meter-serial",
        "M-2002",
        "--manufacturer",
        "ACME",
        "--effective-at",
        "2026-06-01T00:00:00Z",
    ]);
    let new_fp =
        rep["entry"]["events"][1]["keyRegistered"]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(rep["entry"]["events"][0]["keyEnded"]["reason"], "END_REASON_REPLACED");
    assert_eq!(
        check("2026-03-01T12:00:00Z")["validity"]["fingerprint"].as_str(),
        Some(old_fp.as_str())
    );
    assert_eq!(
        check("2026-07-01T12:00:00Z")["validity"]["fingerprint"].as_str(),
        Some(new_fp.as_str())
    );

    // Another operator takes the charge point over.
    run(&[
        "cpo",
        "release",
        "--signer",
        "abc.pem",
        "--key-fingerprint",
        &new_fp,
        "--to-operator",
        "DE*XYZ",
    ]);
    run(&[
        "cpo",
        "take-over",
        "--signer",
        "xyz.pem",
        "--key-fingerprint",
        &new_fp,
        "--evse",
        "DE*XYZ*E0042*1",
        "--effective-at",
        "2026-09-01T00:00:00Z",
    ]);
    let taken = run(&["msp", "check", "--evse", "DE*XYZ*E0042*1", "--at", "2026-10-01T00:00:00Z"]);
    assert_eq!(taken["validity"]["binding"]["operatorId"], "DE*XYZ");
    let gone = check("2026-10-01T00:00:00Z");
    assert_eq!(
        (gone["validity"]["verdict"].as_str(), gone["validity"]["endReason"].as_str()),
        (Some("VERDICT_ENDED"), Some("END_REASON_TAKEN_OVER"))
    );

    // The old operator may no longer act on the key: exit status 1 and the status code.
    let (code, err) =
        registry(d, s, &["cpo", "deactivate", "--signer", "abc.pem", "--key-fingerprint", &new_fp]);
    assert_eq!(code, 1);
    assert_eq!(err["code"], "PERMISSION_DENIED");
    assert_eq!(err["violations"][0]["field"], "deactivate_key.fingerprint");

    // History, the key record and the signed checkpoint.
    let history = run(&["msp", "history", "--key-fingerprint", &new_fp]);
    assert_eq!(
        history["entries"].as_array().unwrap().len(),
        4,
        "registration, confirmation, release, takeover: {history}"
    );
    assert!(history["verified"].is_null(), "not verified unless asked");
    let verified_history = run(&[
        "msp",
        "history",
        "--key-fingerprint",
        &new_fp,
        "--verify",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(verified_history["entries"], history["entries"]);
    assert!(verified_history["verified"]["checkpoint_size"].is_u64());
    let key = run(&[
        "msp",
        "key",
        "--key-fingerprint",
        &old_fp,
        "--verify",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(key["key"]["state"], "KEY_STATE_DEACTIVATED");
    assert_eq!(key["key"]["successor"], new_fp.as_str());
    let cp = run(&["audit", "checkpoint"]);
    assert_eq!(cp["tree_size"].as_u64(), Some(server.reader().head().size));

    // An MSP checks the signed meter values of two sessions of meter 1: March (its key valid)
    // and July (replaced in June). Exit status 0 only when every record is valid and billable.
    let meter1 = registry_core::keys::P256KeyPair::from_pkcs8_pem(
        &std::fs::read_to_string(d.join("meter1.pem")).unwrap(),
    )
    .unwrap();
    let record = |when: &str| {
        let payload = format!(
            r#"{{"FV":"1.0","PG":"T1","MS":"M-1001","IS":false,"IT":"NONE","CT":"EVSEID","CI":"DE*ABC*E1001*1","RD":[{{"TM":"{when},000+0000 S","TX":"B","RV":1.25,"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}}]}}"#
        );
        let sd = hex::encode_upper(meter1.sign_der(payload.as_bytes()));
        format!(r#"OCMF|{payload}|{{"SD":"{sd}"}}"#)
    };
    std::fs::write(d.join("march.ocmf"), format!("# March\n{}\n", record("2026-03-01T12:00:00")))
        .unwrap();
    let march =
        run(&["msp", "verify-ocmf", "march.ocmf", "--verify", "--state", state.to_str().unwrap()]);
    assert_eq!(march["all_valid_and_billable"], true, "{march}");
    assert_eq!(march["results"][0]["label"], "line 2");
    assert!(march["verified"]["checkpoint_size"].is_u64());
    std::fs::write(
        d.join("both.ocmf"),
        format!("{}\n{}\n", record("2026-03-01T12:00:00"), record("2026-07-01T12:00:00")),
    )
    .unwrap();
    let (code, both) = registry(d, s, &["msp", "verify-ocmf", "both.ocmf"]);
    assert_eq!(code, 1, "one record is not valid: {both}");
    // The protobuf JSON mapping leaves out fields at their default (here `valid: false`).
    assert_eq!(both["results"][0]["valid"], true);
    assert_eq!(both["results"][1].get("valid"), None, "{both}");
    let key_valid = both["results"][1]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "METER_VALUE_CHECK_KEY_VALID")
        .unwrap()
        .clone();
    assert_eq!(key_valid["outcome"], "CHECK_OUTCOME_FAIL");
    assert!(key_valid["reason"].as_str().unwrap().contains("replaced"), "{key_valid}");

    // A regulator exports the log and verifies it offline; a changed byte of a stored entry fails
    // with exit status 1 and the entry named.
    let exported = run(&["audit", "export", "--out", "archive"]);
    let size = exported["size"].as_u64().unwrap();
    assert_eq!(size, server.reader().head().size);
    let registry_key = d.join("data/registry-key.pub.pem");
    let registry_key = registry_key.to_str().unwrap();
    let verified = run(&["audit", "verify", "archive", "--registry-key", registry_key]);
    assert_eq!(verified["valid"], true, "{verified}");
    let bundle = d.join("archive/tile/entries/000.p").join(size.to_string());
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last_len = {
        // Walk the length-prefixed entries to the last one and flip a byte in its middle.
        let mut offset = 0;
        let mut last = (0, 0);
        while offset < bytes.len() {
            let len = u16::from_be_bytes([bytes[offset], bytes[offset + 1]]) as usize;
            last = (offset + 2, len);
            offset += 2 + len;
        }
        last
    };
    bytes[last_len.0 + last_len.1 / 2] ^= 0x40;
    std::fs::write(&bundle, &bytes).unwrap();
    let (code, failed) =
        registry(d, s, &["audit", "verify", "archive", "--registry-key", registry_key]);
    assert_eq!(code, 1, "{failed}");
    assert_eq!(failed["valid"], false);
    assert_eq!(failed["first_bad_position"].as_u64(), Some(size - 1), "{failed}");

    // Bad input is reported with the field, and a bad time never reaches the server.
    let (code, err) = registry(
        d,
        s,
        &["cpo", "register", "--signer", "abc.pem", "--public-key", "00", "--evse", "DE*ABC*E9"],
    );
    assert_eq!((code, err["code"].as_str()), (1, Some("INVALID_ARGUMENT")));
    assert_eq!(err["violations"][0]["field"], "register_key.key.public_key");
    // A bad time is bad usage (2): nothing was asked.
    let (code, err) =
        registry(d, s, &["msp", "check", "--evse", "DE*ABC*E1001*1", "--at", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err["error"].as_str().unwrap().contains("RFC 3339"), "{err}");
}

/// "Could not get an answer" is not "the answer is no": a registry that is not there gives exit
/// status 3 and a JSON error, and `--help` lists every status.
#[test]
fn an_unreachable_registry_is_no_answer_not_a_no() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    let (code, err) = registry(
        dir.path(),
        &server,
        &["msp", "check", "--evse", "DE*ABC*E1*1", "--at", "2026-01-01T00:00:00Z"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err["error"].is_string(), "{err}");

    let help = Command::new(env!("CARGO_BIN_EXE_registry")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for status in ["0 the answer is yes", "1 the answer is no", "2 bad usage", "3 no answer"] {
        assert!(help.contains(status), "--help does not list {status:?}:\n{help}");
    }
}

/// `https://` is TLS or nothing: against a plaintext registry it gets no answer (status 3), never
/// a silent plaintext one; TLS options with an `http://` URL are bad usage (status 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_always_tls_and_tls_options_need_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = registry_server::config::Config {
        data_dir: d.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        emergency_ballast_mib: 1,
        ..Default::default()
    };
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await
            .unwrap();
    let plain = format!("http://{}", server.local_addr());
    let https = format!("https://{}", server.local_addr());
    let (code, json) = tokio::task::spawn_blocking({
        let (d, plain) = (d.to_path_buf(), plain.clone());
        move || registry(&d, &plain, &["audit", "info"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{json}");

    let (code, err) = tokio::task::spawn_blocking({
        let d = d.to_path_buf();
        move || registry(&d, &https, &["audit", "info"])
    })
    .await
    .unwrap();
    assert_eq!(code, 3, "{err}");
    assert!(err["error"].is_string(), "{err}");

    std::fs::write(d.join("ca.pem"), "not used").unwrap();
    let (code, err) = tokio::task::spawn_blocking({
        let d = d.to_path_buf();
        move || registry(&d, &plain, &["--ca-cert", "ca.pem", "audit", "info"])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err["error"].as_str().unwrap().contains("https://"), "{err}");
}

/// A command sent to a read replica is refused (exit status 1), and the tool says where to
/// send it: the replica's primary, from the refusal's `ErrorInfo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_refuses_a_command_and_the_tool_names_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    for name in ["admin", "abc"] {
        ok(&d, "http://unused", &["keygen", "--out", &format!("{name}.pem")]);
    }
    let config = registry_server::config::Config {
        data_dir: d.join("primary"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_keys: vec![d.join("admin.pub.pem")],
        emergency_ballast_mib: 1,
        ..Default::default()
    };
    let clock = registry_server::log::system_clock;
    let primary = registry_server::registry::start_registry(&config, clock()).await.unwrap();
    let primary_url = format!("http://{}", primary.local_addr());
    let replica_config = registry_server::config::Config {
        data_dir: d.join("replica"),
        admin_keys: Vec::new(),
        follow: registry_server::config::Follow {
            primary: Some(primary_url.clone()),
            ..Default::default()
        },
        ..config
    };
    let replica =
        registry_server::registry::start_registry(&replica_config, clock()).await.unwrap();
    let replica_url = format!("http://{}", replica.local_addr());
    let (code, err) = tokio::task::spawn_blocking(move || {
        let args = [
            "admin",
            "add-operator",
            "--signer",
            "admin.pem",
            "--operator",
            "DE*ABC",
            "--name",
            "ABC",
            "--key",
            "abc.pub.pem",
        ];
        registry(&d, &replica_url, &args)
    })
    .await
    .unwrap();
    assert_eq!((code, err["code"].as_str()), (1, Some("FAILED_PRECONDITION")), "{err}");
    assert_eq!(err["primary"].as_str(), Some(primary_url.as_str()), "{err}");
}
