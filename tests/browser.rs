//! The lookup page in a real browser: headless Chromium, driven over WebDriver (chromedriver),
//! against a real server on loopback. A driver pastes signed meter values and sees whether they
//! are billable, verified in the browser; a lookup draws the key timeline; a server that lies in
//! its answer is refused by the page; and the page's own verifier passes the Merkle and OCMF
//! vectors the Rust code passes.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them); where
//! they are missing the tests say so and pass without running. Screenshots of the main views are
//! written to `target/page-screenshots/`.

#[path = "../registry-core/tests/support/ocmf_vectors.rs"]
mod vectors;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use registry_client::{KeySubmission, Order};
use registry_core::keys::P256KeyPair;
use registry_tests::raw::http;
use registry_tests::{Fixture, meter_key, spki_hex, t};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session; the driver process ends with it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts chromedriver and a headless Chromium, or says why it cannot and returns `None`.
async fn browser() -> Option<Browser> {
    let (chromium, driver) = (
        std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into()),
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into()),
    );
    if !Path::new(&chromium).exists() || !Path::new(&driver).exists() {
        eprintln!(
            "skipping the browser test: {chromium} or {driver} is missing \
             (install the Debian packages chromium and chromium-driver; .ci/run does)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1400", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
            Ok(client) => return Some(Browser { client, driver: child, _profile: profile }),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no WebDriver session with headless Chromium: {last:?}");
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/page-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// A record from a P-256 meter with serial `serial` at `evse`, readings at `times`.
fn ocmf(meter: &P256KeyPair, serial: &str, evse: &str, times: [&str; 2], kwh: [&str; 2]) -> String {
    let payload = payload(serial, evse, times, kwh);
    let sd = hex::encode_upper(meter.sign_der(payload.as_bytes()));
    format!(r#"OCMF|{payload}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{sd}"}}"#)
}

/// An OCMF payload: begin and end readings of a session at `evse`.
fn payload(serial: &str, evse: &str, times: [&str; 2], kwh: [&str; 2]) -> String {
    format!(
        r#"{{"FV":"1.0","GI":"ACME Wallbox","GS":"","GV":"1.4","PG":"T12","MV":"ACME","MM":"W1","MS":"{serial}","IS":true,"IL":"TRUSTED","IF":["RFID_PLAIN"],"IT":"ISO14443","ID":"0A0B0C0D","CT":"EVSEID","CI":"{evse}","RD":[{{"TM":"{}","TX":"B","RV":{},"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}},{{"TM":"{}","TX":"E","RV":{},"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}}]}}"#,
        times[0], kwh[0], times[1], kwh[1]
    )
}

fn submission(meter: &P256KeyPair, serial: &str) -> KeySubmission {
    KeySubmission {
        meter_serial: Some(serial.into()),
        manufacturer: Some("ACME".into()),
        model: Some("W1".into()),
        ..KeySubmission::new(spki_hex(meter))
    }
}

/// A registry with one charge point's life: a key registered at DE*ABC*E1 on 2026-01-01, its
/// meter replaced on 2026-06-01, the new key taken over by another operator on 2026-09-01.
struct Scene {
    f: Fixture,
    web: SocketAddr,
    first: P256KeyPair,
    abc: P256KeyPair,
}

async fn scene() -> Scene {
    let f =
        Fixture::start_configured(|c| c.http_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let web = f.registry.server.web_addr().expect("a web listener");
    let abc = f.operator("DE*ABC").await;
    let xyz = f.operator("DE*XYZ").await;
    let (first, second) = (meter_key(), meter_key());
    let submit = |key: &P256KeyPair, order: Order| {
        let (client, key) = (f.client.clone(), key.clone());
        async move { client.submit(&key, &order).await.expect("accepted") }
    };
    submit(
        &abc,
        Order::Register {
            key: submission(&first, "1234567"),
            evse_ids: vec!["DE*ABC*E1".into()],
            effective_at: Some(t("2026-01-01T00:00:00Z")),
        },
    )
    .await;
    submit(
        &abc,
        Order::Replace {
            fingerprint: first.fingerprint_hex(),
            new_key: submission(&second, "7654321"),
            effective_at: Some(t("2026-06-01T00:00:00Z")),
            comment: "meter exchanged after calibration".into(),
        },
    )
    .await;
    submit(
        &abc,
        Order::Release { fingerprint: second.fingerprint_hex(), to_operator_id: "DE*XYZ".into() },
    )
    .await;
    submit(
        &xyz,
        Order::TakeOver {
            fingerprint: second.fingerprint_hex(),
            evse_ids: vec!["DE*XYZ*E9".into()],
            effective_at: Some(t("2026-09-01T00:00:00Z")),
        },
    )
    .await;
    Scene { f, web, first, abc }
}

/// Opens the page at `base`, pastes `text` into the signed-data field and checks it; returns
/// the result's text once it is there.
async fn paste_and_check(client: &Client, base: &str, text: &str) -> String {
    client.goto(&format!("{base}/?lang=en")).await.unwrap();
    client.wait().for_element(Locator::Css("body[data-ready]")).await.unwrap();
    client
        .execute("document.getElementById('signed-data').value = arguments[0];", vec![json!(text)])
        .await
        .unwrap();
    client
        .find(Locator::Css("#check-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = "#check-result .verdict, #check-result .refused, #check-result .error";
    client.wait().for_element(Locator::Css(done)).await.expect("the page shows a result");
    client.find(Locator::Id("check-result")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_sees_billable_tampered_and_too_early_records_verified_in_the_browser() {
    let Some(b) = browser().await else { return };
    let s = scene().await;
    let base = format!("http://{}", s.web);
    let times = ["2026-02-10T18:03:15,000+0100 S", "2026-02-10T19:41:02,000+0100 S"];
    let good = ocmf(&s.first, "1234567", "DE*ABC*E1", times, ["1520.118", "1548.730"]);

    let text = paste_and_check(&b.client, &base, &good).await;
    assert!(text.contains("Billable"), "{text}");
    assert!(text.contains("Checked in your browser"), "{text}");
    assert!(
        text.contains("Meter signature checked in your browser (ECDSA-secp256r1-SHA256): valid"),
        "{text}"
    );
    assert!(text.contains("the key was valid at every reading"), "{text}");
    assert!(text.contains("DE*ABC*E1") && text.contains("DE*ABC"), "{text}");
    assert!(text.contains("28.612 kWh"), "the energy is end minus begin: {text}");
    screenshot(&b.client, "billable").await;
    // The checkpoint it checked against is shown.
    let trust = b.client.find(Locator::Id("last-checkpoint")).await.unwrap().text().await.unwrap();
    assert!(trust.contains(&s.f.origin()), "{trust}");

    // The log grows; the next answer's checkpoint is accepted only with a consistency proof
    // from the one this browser saw (and remembered across page loads).
    let seen = s.f.log_size();
    registry_tests::register_at_evse(&s.f, &s.abc, "DE*ABC*E3").await;
    assert!(s.f.log_size() > seen);
    let text = paste_and_check(&b.client, &base, &good).await;
    assert!(text.contains("Billable"), "{text}");
    let trust = b.client.find(Locator::Id("last-checkpoint")).await.unwrap().text().await.unwrap();
    assert!(
        trust.contains(&format!("\n{}\n", s.f.log_size())),
        "the newer checkpoint is kept: {trust}"
    );

    let tampered = good.replace("1548.730", "1648.730");
    let text = paste_and_check(&b.client, &base, &tampered).await;
    assert!(text.contains("Not billable"), "{text}");
    assert!(text.contains("Signature: does not verify"), "{text}");
    assert!(!text.contains("Billable\n"), "{text}");
    screenshot(&b.client, "tampered").await;

    let early = ["2025-12-01T10:00:00,000+0100 S", "2025-12-01T11:00:00,000+0100 S"];
    let too_early = ocmf(&s.first, "1234567", "DE*ABC*E1", early, ["10.0", "20.5"]);
    let text = paste_and_check(&b.client, &base, &too_early).await;
    assert!(text.contains("Not billable"), "{text}");
    assert!(text.contains("Key valid at the time: key"), "{text}");
    assert!(text.contains("the key was not valid (not yet commissioned)"), "{text}");
    screenshot(&b.client, "before-commissioning").await;

    // A meter the registry does not know, at a charge point it does not know: nothing to check
    // the signature against.
    let stranger = ocmf(&meter_key(), "9999999", "DE*ABC*E77", times, ["1.0", "2.0"]);
    let text = paste_and_check(&b.client, &base, &stranger).await;
    assert!(text.contains("Not billable") && text.contains("Key registered: no key"), "{text}");
    assert!(!text.contains("signature ("), "no signature line without a key: {text}");
    // The same stranger at a known charge point: the registry takes that EVSE's key, and the
    // browser finds the signature does not verify with it.
    let stranger = ocmf(&meter_key(), "9999999", "DE*ABC*E1", times, ["1.0", "2.0"]);
    let text = paste_and_check(&b.client, &base, &stranger).await;
    assert!(text.contains("Not billable"), "{text}");
    assert!(text.contains("Meter signature checked in your browser: invalid"), "{text}");

    // The same page in German, the default of a German registry, and on a phone's screen.
    b.client.goto(&base).await.unwrap();
    b.client.wait().for_element(Locator::Css("body[data-ready]")).await.unwrap();
    let heading = b.client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(heading, "Schlüsselregister für Ladepunkte");
    b.client.set_window_size(390, 844).await.unwrap();
    let text = {
        b.client
            .execute(
                "document.getElementById('signed-data').value = arguments[0];",
                vec![json!(good)],
            )
            .await
            .unwrap();
        b.client.find(Locator::Css("#check-form button")).await.unwrap().click().await.unwrap();
        b.client.wait().for_element(Locator::Css("#check-result .verdict")).await.unwrap();
        b.client.find(Locator::Id("check-result")).await.unwrap().text().await.unwrap()
    };
    assert!(text.contains("Abrechenbar"), "{text}");
    let overflow: Value = b
        .client
        .execute(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth
                 || [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let wide: Value = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('body *'))
                 .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 || e.scrollWidth > e.clientWidth + 1)
                 .map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
            vec![],
        )
        .await
        .unwrap();
    b.client
        .execute("document.getElementById('check-result').scrollIntoView();", vec![])
        .await
        .unwrap();
    screenshot(&b.client, "phone-de").await;
    assert_eq!(overflow, json!(true), "the page fits a phone's width; wider: {wide}");
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_draws_the_charge_points_key_timeline() {
    let Some(b) = browser().await else { return };
    let s = scene().await;
    let base = format!("http://{}", s.web);
    b.client.goto(&format!("{base}/?lang=en")).await.unwrap();
    b.client.wait().for_element(Locator::Css("body[data-ready]")).await.unwrap();
    // Keyboard only: focus the field, type, press Enter.
    let field = b.client.find(Locator::Id("lookup-value")).await.unwrap();
    field.send_keys("DE*ABC*E1\u{E007}").await.unwrap();
    let drawn = b.client.wait().for_element(Locator::Css("#lookup-result svg.timeline")).await;
    if drawn.is_err() {
        let text = b.client.find(Locator::Id("lookup-result")).await.unwrap().text().await.unwrap();
        panic!("no timeline; the page shows: {text}");
    }
    let text = b.client.find(Locator::Id("lookup-result")).await.unwrap().text().await.unwrap();
    assert!(text.contains("Checked in your browser"), "{text}");
    let rows: Vec<String> = {
        let mut out = Vec::new();
        for row in
            b.client.find_all(Locator::Css("#lookup-result table.events tbody tr")).await.unwrap()
        {
            out.push(row.text().await.unwrap());
        }
        out
    };
    // Newest first: the takeover, the replacement (end of the old key, registration of the new
    // one, in one entry), the first registration; each with its entry number and author.
    let kinds = [
        ("Takeover", "DE*XYZ (key"),
        ("Taken out of service", "DE*ABC (key"),
        ("Registration", "DE*ABC (key"),
        ("Registration", "DE*ABC (key"),
    ];
    assert_eq!(rows.len(), kinds.len(), "{rows:?}");
    for (row, (kind, author)) in rows.iter().zip(kinds) {
        assert!(row.starts_with('#') && row.contains(kind) && row.contains(author), "{row}");
    }
    assert!(text.contains("meter replaced"), "{text}");
    assert!(text.contains("DE*XYZ"), "the takeover names the new operator: {text}");
    // One row per key, one bar per binding, one mark per event, each with its entry number.
    let counts: Value = b
        .client
        .execute(
            "const svg = document.querySelector('#lookup-result svg.timeline');
             return { rows: svg.querySelectorAll('.row-label').length,
                      bars: svg.querySelectorAll('.binding').length,
                      marks: Array.from(svg.querySelectorAll('.mark-label'), m => m.textContent) };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(counts["rows"], json!(2), "{counts}");
    assert_eq!(
        counts["bars"],
        json!(3),
        "first key at E1, second at E1 then at DE*XYZ*E9: {counts}"
    );
    let marks = counts["marks"].as_array().unwrap();
    assert!(marks.iter().all(|m| m.as_str().unwrap().starts_with('#')));
    // Each key's whole life, from its own proven history: registration and confirmation of both
    // keys, the first one's end, the second one's release and takeover.
    assert_eq!(marks.len(), 7, "{counts}");
    let confirmations: Value = b
        .client
        .execute(
            "return document.querySelectorAll('#lookup-result svg .mark-confirmed').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(confirmations, json!(2), "both confirmations are drawn");
    screenshot(&b.client, "timeline").await;

    // Every form control has a label, so a screen reader names it.
    let unlabelled: Value = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('input, select, textarea'))
                 .filter(e => e.labels.length === 0).map(e => e.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]));
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curve_browsers_lack_is_left_to_the_registry_and_the_page_says_so() {
    use ecdsa::elliptic_curve::Generate;
    use ecdsa::elliptic_curve::pkcs8::EncodePublicKey;
    use sha2::Digest;
    let Some(b) = browser().await else { return };
    let s = scene().await;
    let meter = ecdsa::SigningKey::<bp256::BrainpoolP256r1>::generate();
    let spki = meter.verifying_key().to_public_key_der().unwrap();
    let order = Order::Register {
        key: KeySubmission {
            meter_serial: Some("BP-1".into()),
            manufacturer: Some("ACME".into()),
            ..KeySubmission::new(hex::encode(spki.as_bytes()))
        },
        evse_ids: vec!["DE*ABC*E5".into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    };
    s.f.client.submit(&s.abc, &order).await.expect("a brainpool key is registered");
    let times = ["2026-02-10T18:03:15,000+0100 S", "2026-02-10T19:41:02,000+0100 S"];
    let payload = payload("BP-1", "DE*ABC*E5", times, ["3.5", "9.25"]);
    let digest: [u8; 32] = sha2::Sha256::digest(payload.as_bytes()).into();
    let (signature, _): (ecdsa::Signature<bp256::BrainpoolP256r1>, _) =
        ecdsa::hazmat::sign_prehashed_rfc6979::<_, sha2::Sha256>(
            meter.as_nonzero_scalar(),
            &digest,
            &[],
        );
    let sd = hex::encode_upper(signature.to_der().as_bytes());
    let record = format!(r#"OCMF|{payload}|{{"SA":"ECDSA-brainpool256r1-SHA256","SD":"{sd}"}}"#);
    let text = paste_and_check(&b.client, &format!("http://{}", s.web), &record).await;
    assert!(text.contains("Billable"), "{text}");
    assert!(
        text.contains("The registry checked the signature (ECDSA-brainpool256r1-SHA256); browsers cannot check this algorithm."),
        "{text}"
    );
    assert!(!text.contains("Meter signature checked in your browser"), "{text}");
    assert!(
        text.contains("the key was valid at every reading"),
        "the rest is still checked here: {text}"
    );
    b.client.clone().close().await.unwrap();
}

/// How the lying server lies.
#[derive(Clone, Copy)]
enum Lie {
    /// Every record is billable, every check passed.
    Billable,
    /// The evidence's first entry has one byte changed.
    Entry,
}

/// A test double of the server only: passes everything through to the real web face, but lies
/// in every answer to `ValidateSignedMeterValues`.
async fn lying_server(real: SocketAddr, how: Lie) -> SocketAddr {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let app =
        axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| async move {
            let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let lie = path.ends_with("/ValidateSignedMeterValues");
            let reply = tokio::task::spawn_blocking(move || {
                let body = (method == Method::POST).then_some(body);
                http(real, &path, body.as_ref().map(|b| ("application/json", b.as_ref())))
            })
            .await
            .unwrap();
            let mut body = reply.body.clone();
            if lie {
                let mut answer: Value = serde_json::from_slice(&body).unwrap();
                match how {
                    Lie::Billable => {
                        for result in answer["results"].as_array_mut().unwrap() {
                            result["valid"] = json!(true);
                            result["billable"] = json!(true);
                            for check in result["checks"].as_array_mut().unwrap() {
                                check["outcome"] = json!("CHECK_OUTCOME_PASS");
                            }
                        }
                    }
                    Lie::Entry => {
                        use base64::Engine as _;
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let entry = &mut answer["proof"]["entries"][0]["entry"];
                        let mut bytes = b64.decode(entry.as_str().unwrap()).unwrap();
                        let last = bytes.len() - 1;
                        bytes[last] ^= 1;
                        *entry = json!(b64.encode(bytes));
                    }
                }
                body = serde_json::to_vec(&answer).unwrap();
            }
            let mut headers = HeaderMap::new();
            if let Some(kind) = reply.header("content-type") {
                headers.insert("content-type", kind.parse().unwrap());
            }
            (axum::http::StatusCode::from_u16(reply.status).unwrap(), headers, body)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refuses_a_server_that_lies_in_its_answer() {
    let Some(b) = browser().await else { return };
    let s = scene().await;
    let early = ["2025-12-01T10:00:00,000+0100 S", "2025-12-01T11:00:00,000+0100 S"];
    let too_early = ocmf(&s.first, "1234567", "DE*ABC*E1", early, ["10.0", "20.5"]);
    let liar = lying_server(s.web, Lie::Billable).await;
    let text = paste_and_check(&b.client, &format!("http://{liar}"), &too_early).await;
    assert!(text.contains("The page refuses the registry's answer"), "{text}");
    assert!(!text.contains("Billable"), "{text}");
    assert!(text.contains("NOT_YET"), "the refusal says what the evidence shows: {text}");
    screenshot(&b.client, "refused").await;

    let times = ["2026-02-10T18:03:15,000+0100 S", "2026-02-10T19:41:02,000+0100 S"];
    let good = ocmf(&s.first, "1234567", "DE*ABC*E1", times, ["1520.118", "1548.730"]);
    let liar = lying_server(s.web, Lie::Entry).await;
    let text = paste_and_check(&b.client, &format!("http://{liar}"), &good).await;
    assert!(text.contains("The page refuses the registry's answer"), "{text}");
    assert!(text.contains("is not proven to be in the log"), "{text}");
    assert!(!text.contains("Billable"), "{text}");
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_small_self_contained_and_its_verifier_passes_the_shared_vectors() {
    let Some(b) = browser().await else { return };
    let s = scene().await;
    let base = format!("http://{}", s.web);
    b.client.goto(&base).await.unwrap();
    b.client.wait().for_element(Locator::Css("body[data-ready]")).await.unwrap();
    let load: Value = b
        .client
        .execute(
            "const nav = performance.getEntriesByType('navigation')[0];
             const res = performance.getEntriesByType('resource');
             const paint = performance.getEntriesByName('first-contentful-paint')[0];
             return { bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
                      body: nav.decodedBodySize + res.reduce((n, r) => n + r.decodedBodySize, 0),
                      origins: [...new Set(res.map(r => new URL(r.name).origin))],
                      firstPaint: paint ? paint.startTime : null,
                      loaded: nav.loadEventEnd };",
            vec![],
        )
        .await
        .unwrap();
    println!("page load on loopback (first render and load in ms): {load}");
    let bytes = load["bytes"].as_f64().unwrap();
    assert!(bytes > 10_000.0 && bytes < 200_000.0, "transferred {bytes} bytes: {load}");
    assert_eq!(load["origins"], json!([base]), "no request leaves the registry's origin");
    let page = http(s.web, "/", None);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");

    // The verifier, an independent implementation, against the vectors the Rust code passes.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry-core/testdata");
    let ocmf: Vec<Value> = vectors::load(&root.join("ocmf/vectors.txt"))
        .into_iter()
        .map(|v| json!({ "name": v.name, "record": v.record, "publicKey": v.public_key, "valid": v.valid }))
        .collect();
    let merkle = |kind: &str| -> Vec<Value> {
        let mut out = Vec::new();
        let mut dirs = vec![root.join("merkle").join(kind)];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir)
                .expect("the Merkle vectors (copied from ../shared/testdata/merkle)")
            {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    out.push(serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap());
                }
            }
        }
        out
    };
    let (inclusion, consistency) = (merkle("inclusion"), merkle("consistency"));
    assert!(inclusion.len() > 50 && consistency.len() > 50);
    let script = include_str!("browser/vectors.js");
    let out = b
        .client
        .execute_async(script, vec![json!(ocmf), json!(inclusion), json!(consistency)])
        .await
        .unwrap();
    assert!(out.get("error").is_none(), "{out}");
    for (v, got) in ocmf.iter().zip(out["ocmf"].as_array().unwrap()) {
        assert_eq!(got["verdict"], v["valid"], "OCMF vector {}: {got}", v["name"]);
    }
    for (kind, expected) in [("inclusion", &inclusion), ("consistency", &consistency)] {
        let got = out[kind].as_array().unwrap();
        assert_eq!(got.len(), expected.len());
        for (v, g) in expected.iter().zip(got) {
            let want = !v["wantErr"].as_bool().unwrap();
            assert_eq!(g["accepted"], json!(want), "{kind} vector {:?}: {g}", v["desc"]);
        }
    }
    b.client.clone().close().await.unwrap();
}
