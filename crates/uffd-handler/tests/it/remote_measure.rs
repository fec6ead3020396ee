//! A measurement for docs/storage.md, not a test: run by hand with
//! `cargo test --release -p uffd-handler --all-features --test it measure_remote -- --ignored
//! --nocapture`. It prints figures and asserts only that every byte the VMM reads is right;
//! nothing is timed against a limit.

use std::time::{Duration, Instant};

use test_support::s3::{BUCKET, S3Server};

use crate::common::{
    Daemon, MIB, Model, PAGE, TIMEOUT, TestDir, exit_code, model_image, start_vmm, verify,
};

const SIZE: u64 = 128 * MIB;

/// One whole-image restore: from the VMM's handshake to every byte hashed (4 threads);
/// the daemon's `store` statistics then.
fn restore(daemon: Daemon, model: &Model) -> (Duration, serde_json::Value) {
    let vmm = start_vmm(&daemon, vec![SIZE / 2, SIZE / 2], false);
    let start = Instant::now();
    verify(&daemon, &vmm, model);
    let took = start.elapsed();
    let stats = daemon.control("stats");
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    (took, stats["store"].clone())
}

fn mib_s(took: Duration) -> f64 {
    SIZE as f64 / MIB as f64 / took.as_secs_f64()
}

#[test]
#[ignore = "a measurement, run by hand (see the module's doc)"]
fn measure_remote_restore_through_the_daemon() {
    let test = "measure-remote";
    let Some(server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(0x3ea5, SIZE, PAGE);
    let snapshot = dir.join("gen0");
    std::fs::create_dir_all(&snapshot).unwrap();
    let build = uuid::Uuid::new_v4();
    let mut file =
        std::fs::File::create(snapshot_format::snapshot_dir::data_path(&snapshot, build)).unwrap();
    let header =
        snapshot_format::write_generation_zero(&model.bytes[..], PAGE, build, &mut file).unwrap();
    drop(file);
    std::fs::write(
        snapshot_format::snapshot_dir::header_path(&snapshot),
        header.encode_native(),
    )
    .unwrap();
    let url = format!("s3://{BUCKET}/measure/gen-0");
    let options: Vec<String> = server
        .options()
        .into_iter()
        .flat_map(|(k, v)| ["--store-option".to_owned(), format!("{k}={v}")])
        .collect();
    let pushed = std::process::Command::new(crate::common::DAEMON_BIN)
        .args(["snapshot", "push", snapshot.to_str().unwrap(), &url])
        .args(&options)
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{pushed:?}");

    println!(
        "image {} MiB (7/8 data), 4 KiB guest pages, no prefetch, no fault-around; \
         s3s-fs on loopback, no added latency; time from handshake to every byte hashed",
        SIZE / MIB
    );
    println!("| source | run | time | MiB/s | GETs | MiB fetched |");
    println!("|---|---|---|---|---|---|");
    let mut socket = 0;
    let mut next_socket = || {
        socket += 1;
        format!("m{socket}.sock")
    };
    for run in 1..=3 {
        let daemon = Daemon::start_at(
            &dir,
            &next_socket(),
            &["--snapshot-dir", snapshot.to_str().unwrap()],
        );
        let (took, _) = restore(daemon, &model);
        println!(
            "| local --snapshot-dir | {run} | {took:.2?} | {:.0} | - | - |",
            mib_s(took)
        );
        for chunk in ["1M", "4M"] {
            let cache = dir.join(&format!("cache-{chunk}-{run}"));
            for state in ["cold", "warm"] {
                let mut args = vec![
                    "--snapshot-url",
                    url.as_str(),
                    "--cache-dir",
                    cache.to_str().unwrap(),
                    "--chunk-size",
                    chunk,
                ];
                args.extend(options.iter().map(String::as_str));
                let daemon = Daemon::start_at(&dir, &next_socket(), &args);
                let (took, store) = restore(daemon, &model);
                println!(
                    "| s3 {chunk} chunks, {state} cache | {run} | {took:.2?} | {:.0} | {} | {:.1} |",
                    mib_s(took),
                    store["gets"],
                    store["bytes_fetched"].as_u64().unwrap() as f64 / MIB as f64
                );
            }
        }
    }
}
