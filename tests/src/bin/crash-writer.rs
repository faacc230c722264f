//! Child process for the crash test: opens a registry log in the given data directory and
//! appends from many concurrent tasks until it is killed, printing `<position> <request id>`
//! for every append the log acknowledged.

use std::io::Write;
use std::sync::Arc;

use registry_core::note::NoteSigner;
use registry_server::config::Config;
use registry_server::log::{Log, LogOptions, RawBodies, system_clock};
use registry_server::{registry_key, server};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(tasks)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-writer DATA_DIR TASKS");
        std::process::exit(2);
    };
    let tasks: usize = tasks.parse().expect("TASKS is a number");
    let config = Config { data_dir: dir.into(), ..Config::default() };
    let key = registry_key::load_or_create(&config.data_dir).expect("registry key");
    let store = server::open_store(&config).expect("store opens");
    let signer = NoteSigner::new("crash.test/log", key.key).expect("signer");
    let log = Log::open(store, RawBodies, signer, LogOptions::default(), system_clock())
        .expect("log opens");
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (appender, out) = (log.appender(), stdout.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let id = uuid::Uuid::new_v4();
                    let body = registry_tests::body_for(id);
                    let done = appender
                        .append(id, registry_tests::digest(&body), body)
                        .await
                        .expect("append");
                    let mut out = out.lock().expect("stdout lock");
                    writeln!(out, "{} {id}", done.position).expect("stdout");
                    out.flush().expect("stdout");
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
    });
}
