//! Long-run fault campaigns against the real `registry-server` binary, runnable by anyone
//! (`tests/faults/*.sh`, the `faults` binary) and, a few cycles of each, in the test suite.
//!
//! - [`kill_campaign`]: SIGKILL at random moments (during start-up too) while concurrent writers
//!   register keys; after every restart each registration acknowledged before the kill is
//!   answered `VALID` with its key, and at the end the whole log is exported and verified.
//! - [`tamper_campaign`]: single bits flipped across every file of a stopped registry's data
//!   directory, one flip per copy; each start is classified as refused (with the process's
//!   message), harmless (the same log and the same answers as before) or silently different,
//!   and a panic is told apart from a refusal.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use registry_client::archive::Archive;
use registry_client::{AsOf, KeySubmission, KeyTarget, Order, RegistryClient, View, audit};
use registry_core::keys::P256KeyPair;
use registry_proto::pb;

/// The `registry-server` binary: `REGISTRY_SERVER_BIN`, or the one Cargo built next to the
/// running executable's directory (`target/<profile>/`).
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_SERVER_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("registry-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no registry-server binary next to {}: build it first (cargo build -p registry-server) \
         or set REGISTRY_SERVER_BIN",
        exe.display()
    )
}

/// A registry-server process on a loopback port.
struct Process {
    child: Child,
    /// The address once it logged that it listens.
    addr: std::sync::mpsc::Receiver<String>,
    /// What it wrote to stderr, once it has exited.
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(bin: &Path, data: &Path, admin: &Path) -> anyhow::Result<Process> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"])
        .arg("--data-dir")
        .arg(data)
        .arg("--admin-key")
        .arg(admin)
        // A ballast of the default 64 MiB would be copied with every damaged copy.
        .env("REGISTRY_EMERGENCY_BALLAST_MIB", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, addr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["message"] == "listening for gRPC"
                && let Some(a) = event["addr"].as_str()
            {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok(Process { child, addr, stderr })
}

impl Process {
    /// Waits up to `limit` for the address; `Err` with the exit status and stderr if the
    /// process ended first.
    fn wait_listening(&mut self, limit: Duration) -> Result<Option<String>, (i32, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(a) = self.addr.recv_timeout(Duration::from_millis(20)) {
                return Ok(Some(a));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // It may have listened and exited; either way it is gone.
                let code = status.code().unwrap_or(-1);
                let Process { stderr, .. } = self;
                let text = std::mem::replace(stderr, std::thread::spawn(String::new))
                    .join()
                    .unwrap_or_default();
                return Err((code, text));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(mut self) -> anyhow::Result<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                self.kill();
                anyhow::bail!("the server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Settings of a [`kill_campaign`].
#[derive(Debug, Clone)]
pub struct KillOptions {
    /// How many times the server is killed.
    pub cycles: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// The longest a server runs before it is killed (a random moment up to this; early ones
    /// land in the start-up).
    pub longest_run: Duration,
    /// Where the data directory, keys and the final archive live.
    pub dir: PathBuf,
}

/// What a [`kill_campaign`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KillReport {
    /// Kills.
    pub cycles: u64,
    /// Kills that landed before the server listened.
    pub kills_during_start_up: u64,
    /// Registrations acknowledged over the whole campaign.
    pub acknowledged: u64,
    /// Acknowledged registrations not answered VALID with their key after a restart.
    pub lost: Vec<String>,
    /// Starts that ended with an error instead of serving.
    pub failed_starts: Vec<String>,
    /// Entries in the log at the end.
    pub entries: u64,
    /// Whether the exported log verified (chain, signatures, rules, Merkle and map roots).
    pub export_verified: bool,
    /// Temporary files left in the data directory after the final clean stop.
    pub leftover_files: Vec<String>,
}

const OPERATOR: &str = "DE*KIL";

/// Acknowledged registrations not yet checked after a restart: (EVSE ID, fingerprint).
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// See the module documentation.
pub async fn kill_campaign(options: &KillOptions) -> anyhow::Result<KillReport> {
    let bin = server_binary()?;
    std::fs::create_dir_all(&options.dir)?;
    let data = options.dir.join("data");
    let admin = P256KeyPair::generate();
    let admin_file = options.dir.join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem())?;
    let operator = P256KeyPair::generate();
    let mut operator_added = false;
    let mut report = KillReport::default();
    let unchecked: Acked = Arc::default();
    let mut rng = rand::rng();
    for cycle in 0..=options.cycles {
        let mut process = spawn(&bin, &data, &admin_file)?;
        let last = cycle == options.cycles;
        let run = if last {
            Duration::from_secs(120)
        } else {
            options.longest_run.mul_f64(rng.random_range(0.0..1.0))
        };
        let started = Instant::now();
        let addr = match process.wait_listening(run) {
            Ok(Some(a)) => a,
            Ok(None) => {
                report.kills_during_start_up += 1;
                report.cycles += 1;
                process.kill();
                continue;
            }
            Err((code, stderr)) => {
                report.failed_starts.push(format!("cycle {cycle}: exit {code}: {stderr}"));
                return Ok(report);
            }
        };
        let client = RegistryClient::connect(&format!("http://{addr}")).await?;
        // Everything acknowledged before the last kill, answered now.
        let checking: Vec<_> = std::mem::take(&mut *unchecked.lock().expect("not poisoned"));
        report.lost.extend(lost(&client, &checking).await?);
        if !operator_added {
            add_operator(&client, &admin, &operator, OPERATOR).await?;
            operator_added = true;
        }
        if last {
            report.entries = client.checkpoint(0).await?.tree_size;
            let archive = Archive::new(&options.dir.join("archive"));
            audit::export(&client, &archive, None, &indicatif::ProgressBar::hidden()).await?;
            let pem = std::fs::read_to_string(data.join("registry-key.pub.pem"))?;
            let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
            report.export_verified =
                audit::verify(&archive, &key, None, &indicatif::ProgressBar::hidden()).is_ok();
            drop(client);
            let code = process.terminate()?;
            if code != 0 {
                report.failed_starts.push(format!("the final stop exited {code}"));
            }
            report.leftover_files = files(&data)?
                .into_iter()
                .map(|(f, _)| f.display().to_string())
                .filter(|f| f.ends_with(".tmp"))
                .collect();
            break;
        }
        let writers: Vec<_> = (0..options.writers)
            .map(|w| {
                let (client, operator, acked) =
                    (client.clone(), operator.clone(), unchecked.clone());
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let meter = P256KeyPair::generate();
                        let evse = format!("{OPERATOR}*E{cycle}W{w}N{i}");
                        let action = Order::Register {
                            key: KeySubmission::new(hex::encode(meter.public_key_der())),
                            evse_ids: vec![evse.clone()],
                            effective_at: Some(crate::t("2026-01-01T00:00:00Z")),
                        };
                        match client.submit(&operator, &action).await {
                            Ok(_) => acked
                                .lock()
                                .expect("not poisoned")
                                .push((evse, meter.fingerprint_hex())),
                            Err(_) => return i,
                        }
                    }
                    0
                })
            })
            .collect();
        tokio::time::sleep(run.saturating_sub(started.elapsed())).await;
        process.kill();
        for w in writers {
            w.await?;
        }
        report.acknowledged += unchecked.lock().expect("not poisoned").len() as u64;
        report.cycles += 1;
        if report.cycles % 100 == 0 {
            eprintln!(
                "{} kills, {} acknowledged, {} lost so far",
                report.cycles,
                report.acknowledged,
                report.lost.len()
            );
        }
    }
    Ok(report)
}

/// Adds operator `id`, or finds it added by a cycle killed before its answer came. The server
/// listens before it has written its administrators (the bootstrap entry), so an administrator
/// command right after the start may find the key unknown for a moment: it is retried.
async fn add_operator(
    client: &RegistryClient,
    admin: &P256KeyPair,
    operator: &P256KeyPair,
    id: &str,
) -> anyhow::Result<()> {
    let action = Order::AddOperator {
        operator_id: id.into(),
        name: "Fault campaign".into(),
        public_keys: vec![operator.public_key_pem()],
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.submit(admin, &action).await {
            Ok(_) => return Ok(()),
            Err(_) if client.operator(id).await.is_ok() => return Ok(()),
            Err(e)
                if e.code() == Some(tonic::Code::Unauthenticated) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The registrations in `acked` that the registry does not answer VALID with their key.
async fn lost(client: &RegistryClient, acked: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let at = crate::t("2026-06-01T00:00:00Z");
    let mut lost = Vec::new();
    for chunk in acked.chunks(5_000) {
        let queries: Vec<_> = chunk.iter().map(|(e, _)| (KeyTarget::Evse(e.clone()), at)).collect();
        let answers = client.check_batch(&queries, AsOf::Head, View::Basic).await?;
        for ((evse, fingerprint), v) in chunk.iter().zip(answers.results) {
            if v.verdict != pb::Verdict::Valid as i32 || &v.fingerprint != fingerprint {
                lost.push(format!("{evse} ({fingerprint}): answered {v:?}"));
            }
        }
    }
    Ok(lost)
}

/// Settings of a [`tamper_campaign`].
#[derive(Debug, Clone)]
pub struct TamperOptions {
    /// How many single-bit flips (each on a fresh copy of the data directory).
    pub flips: u64,
    /// Registrations in the registry that is damaged.
    pub registrations: u64,
    /// Where the original and the copies live.
    pub dir: PathBuf,
}

/// How one damaged start ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// The process exited with an error message and no panic.
    Refused {
        /// Its exit status.
        code: i32,
        /// Its last line on stderr.
        message: String,
    },
    /// It started and serves the same log with the same answers.
    Harmless,
    /// It started on a log or with answers that differ from what was there.
    SilentlyDifferent(String),
    /// It panicked (a bug whatever the damage).
    Panicked(String),
}

/// One flip and how the start ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flip {
    /// The file, relative to the data directory.
    pub file: String,
    /// The byte offset and the bit.
    pub offset: u64,
    /// Which bit.
    pub bit: u8,
    /// How the start ended.
    pub outcome: Outcome,
}

/// What a [`tamper_campaign`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TamperReport {
    /// Every flip.
    pub flips: Vec<Flip>,
}

impl TamperReport {
    /// (refused, harmless, silently different, panicked).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |f: fn(&Outcome) -> bool| self.flips.iter().filter(|x| f(&x.outcome)).count();
        (
            count(|o| matches!(o, Outcome::Refused { .. })),
            count(|o| matches!(o, Outcome::Harmless)),
            count(|o| matches!(o, Outcome::SilentlyDifferent(_))),
            count(|o| matches!(o, Outcome::Panicked(_))),
        )
    }
}

/// What a healthy start answers: the head checkpoint's size and root, and every registration.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    size: u64,
    root: Vec<u8>,
    answers: Vec<(i32, String)>,
}

async fn observe(client: &RegistryClient, evses: &[String]) -> anyhow::Result<Observed> {
    let info = client.checkpoint(0).await?;
    let at = crate::t("2026-06-01T00:00:00Z");
    let queries: Vec<_> = evses.iter().map(|e| (KeyTarget::Evse(e.clone()), at)).collect();
    let answers = client.check_batch(&queries, AsOf::Head, View::Basic).await?;
    Ok(Observed {
        size: info.tree_size,
        root: info.root_hash,
        answers: answers.results.into_iter().map(|v| (v.verdict, v.fingerprint)).collect(),
    })
}

/// Every file below `dir` with its length, relative paths, sorted.
fn files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let len = e.metadata()?.len();
                if len > 0 {
                    out.push((e.path().strip_prefix(dir).unwrap_or(&e.path()).to_path_buf(), len));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// See the module documentation.
pub async fn tamper_campaign(options: &TamperOptions) -> anyhow::Result<TamperReport> {
    let bin = server_binary()?;
    std::fs::create_dir_all(&options.dir)?;
    let original = options.dir.join("original");
    let admin = P256KeyPair::generate();
    let admin_file = options.dir.join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem())?;
    let operator = P256KeyPair::generate();
    let evses: Vec<String> = (0..options.registrations).map(|i| format!("DE*TMP*E{i}")).collect();

    // The registry to damage: registrations, a few deactivations, a clean stop.
    let mut process = spawn(&bin, &original, &admin_file)?;
    let addr = process
        .wait_listening(Duration::from_secs(60))
        .map_err(|(c, e)| anyhow::anyhow!("the original did not start ({c}): {e}"))?
        .ok_or_else(|| anyhow::anyhow!("the original did not start within 60 s"))?;
    let client = RegistryClient::connect(&format!("http://{addr}")).await?;
    add_operator(&client, &admin, &operator, "DE*TMP").await?;
    let commands = {
        let mut out = Vec::new();
        for evse in &evses {
            let meter = P256KeyPair::generate();
            let action = Order::Register {
                key: KeySubmission::new(hex::encode(meter.public_key_der())),
                evse_ids: vec![evse.clone()],
                effective_at: Some(crate::t("2026-01-01T00:00:00Z")),
            };
            out.push(client.sign(&operator, &action).await?);
        }
        out
    };
    for chunk in commands.chunks(1_000) {
        for r in client.submit_many(chunk.to_vec()).await? {
            r.map_err(|refusal| anyhow::anyhow!("a registration was refused: {refusal:?}"))?;
        }
    }
    // Confirmations are appended after publication; wait until every key is VALID.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = loop {
        let seen = observe(&client, &evses).await?;
        let valid = seen.answers.iter().all(|(v, _)| *v == pb::Verdict::Valid as i32);
        if valid || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(client);
    let code = process.terminate()?;
    anyhow::ensure!(code == 0, "the original's clean stop exited {code}");
    // Every file but the ballast, which holds no data (its zeros are there to be deleted).
    let targets: Vec<_> = files(&original)?
        .into_iter()
        .filter(|(f, _)| f != Path::new(registry_server::disk::BALLAST_FILE))
        .collect();

    let mut rng = rand::rng();
    let mut report = TamperReport::default();
    let copy = options.dir.join("copy");
    for _ in 0..options.flips {
        let _ = std::fs::remove_dir_all(&copy);
        crate::copy_dir(&original, &copy);
        let (file, len) = &targets[rng.random_range(0..targets.len())];
        let offset = rng.random_range(0..*len);
        let bit = rng.random_range(0..8u8);
        let path = copy.join(file);
        let mut bytes = std::fs::read(&path)?;
        bytes[offset as usize] ^= 1 << bit;
        std::fs::write(&path, &bytes)?;
        let outcome = start_damaged(&bin, &copy, &admin_file, &evses, &expected).await?;
        report.flips.push(Flip { file: file.display().to_string(), offset, bit, outcome });
    }
    let _ = std::fs::remove_dir_all(&copy);
    Ok(report)
}

async fn start_damaged(
    bin: &Path,
    data: &Path,
    admin: &Path,
    evses: &[String],
    expected: &Observed,
) -> anyhow::Result<Outcome> {
    let mut process = spawn(bin, data, admin)?;
    let classify_exit = |code: i32, stderr: String| {
        if code == 101 || stderr.contains("panicked") {
            Outcome::Panicked(stderr)
        } else {
            let message = stderr.lines().last().unwrap_or_default().to_string();
            Outcome::Refused { code, message }
        }
    };
    let addr = match process.wait_listening(Duration::from_secs(60)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            process.kill();
            return Ok(Outcome::SilentlyDifferent("neither started nor exited within 60 s".into()));
        }
        Err((code, stderr)) => return Ok(classify_exit(code, stderr)),
    };
    let client = RegistryClient::connect(&format!("http://{addr}")).await?;
    let seen = observe(&client, evses).await;
    drop(client);
    let code = process.terminate()?;
    Ok(match seen {
        Ok(seen) if &seen == expected && code == 0 => Outcome::Harmless,
        Ok(seen) if &seen == expected => classify_exit(code, "stopped with an error".into()),
        Ok(seen) => Outcome::SilentlyDifferent(format!(
            "started on size {} (was {}), {} answers differ",
            seen.size,
            expected.size,
            seen.answers.iter().zip(&expected.answers).filter(|(a, b)| a != b).count()
        )),
        // It serves, but reading the damage fails loudly: nothing wrong is said.
        Err(e) => Outcome::Refused { code, message: format!("started; reads fail: {e}") },
    })
}
