//! Child process for the crash tests: runs a full registry on the given data directory with the
//! given snapshot threshold (tiny in the projection crash test, so snapshots are cut all the
//! time) and, if given, the replicas that must hold a write before it is acknowledged; prints
//! its address, then serves until it is killed.

use std::io::Write;

use registry_server::config::Config;
use registry_server::log::system_clock;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(admin), Some(min_records)) = (args.next(), args.next(), args.next())
    else {
        eprintln!(
            "usage: crash-registry DATA_DIR ADMIN_PUBLIC_KEY_PEM SNAPSHOT_MIN_RECORDS [SYNC_REPLICAS]"
        );
        std::process::exit(2);
    };
    let config = Config {
        admin_keys: vec![admin.into()],
        snapshot_min_records: min_records.parse().expect("SNAPSHOT_MIN_RECORDS is a number"),
        sync_replicas: args.next().map_or(0, |n| n.parse().expect("SYNC_REPLICAS is a number")),
        ..registry_tests::test_config(std::path::Path::new(&dir))
    };
    let server = registry_server::registry::start_registry(&config, system_clock())
        .await
        .expect("registry starts");
    let mut out = std::io::stdout();
    writeln!(out, "{}", server.local_addr()).expect("stdout");
    out.flush().expect("stdout");
    std::future::pending::<()>().await;
}
