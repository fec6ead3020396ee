//! Snapshots in object storage through the daemon: `snapshot push` to a real S3-compatible
//! server (`s3s-fs`), then `serve --snapshot-url` restores the test VMM byte for byte through
//! the host's chunk cache, cold (every data chunk fetched once) and warm (no data GET at all);
//! the working set is read from the store; `snapshot pull` gives the directory back; a store
//! that goes down before the first fault gets the VMM killed, never fed zeros.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::s3::{BUCKET, S3Server};
use test_vmm::{Touch, VmmError};

use crate::metrics::{scrape_unix, value};

use crate::common::{
    DAEMON_BIN, Daemon, MIB, Model, PAGE, TIMEOUT, TestDir, assert_hashes, exit_code, model_image,
    start_vmm, verify,
};

const SEED: u64 = 0x53_0b1e;
const SIZE: u64 = 4 * MIB;
/// Small chunks, so the 4 MiB image spans many of them.
const CHUNK: u64 = 256 << 10;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--store-option KEY=VALUE` for every setting that reaches `server`.
fn store_flags(server: &S3Server) -> Vec<String> {
    server
        .options()
        .into_iter()
        .flat_map(|(k, v)| ["--store-option".to_owned(), format!("{k}={v}")])
        .collect()
}

/// Generation 0 of `model` (4 KiB blocks) in `dir/gen0`, with a working set of its first and
/// last 64 KiB: the directory, its data file's length and its header's.
fn snapshot_dir(dir: &TestDir, model: &Model) -> (PathBuf, u64, u64) {
    let snapshot = dir.join("gen0");
    std::fs::create_dir_all(&snapshot).unwrap();
    let build = uuid::Uuid::new_v4();
    let data = snapshot_format::snapshot_dir::data_path(&snapshot, build);
    let mut file = std::fs::File::create(&data).unwrap();
    let header =
        snapshot_format::write_generation_zero(&model.bytes[..], PAGE, build, &mut file).unwrap();
    drop(file);
    let header_bytes = header.encode_native();
    std::fs::write(
        snapshot_format::snapshot_dir::header_path(&snapshot),
        &header_bytes,
    )
    .unwrap();
    let working_set = [0..64 << 10, SIZE - (64 << 10)..SIZE];
    snapshot_format::working_set::write(&snapshot.join("working-set"), &working_set, PAGE, SIZE)
        .unwrap();
    let data_len = std::fs::metadata(&data).unwrap().len();
    (snapshot, data_len, header_bytes.len() as u64)
}

/// Runs `uffd-handler snapshot <args>` with `env` added to its environment: exit code,
/// stdout, stderr.
fn snapshot_command(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new(DAEMON_BIN)
        .arg("snapshot")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run uffd-handler snapshot");
    (
        exit_code(out.status, ""),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pushes `snapshot` to `url` on `server`.
fn push(server: &S3Server, snapshot: &Path, url: &str) {
    let flags = store_flags(server);
    let mut args = vec!["push", path(snapshot), url];
    args.extend(flags.iter().map(String::as_str));
    let (code, stdout, stderr) = snapshot_command(&args, &[]);
    assert_eq!(code, 0, "push failed: {stderr}");
    assert!(stdout.contains("3 object(s) uploaded"), "{stdout}");
}

/// Starts `serve --snapshot-url url --cache-dir cache` against `server` with `extra` flags.
fn serve(
    dir: &TestDir,
    socket: &str,
    server: &S3Server,
    url: &str,
    cache: &Path,
    extra: &[&str],
) -> Daemon {
    let flags = store_flags(server);
    let chunk = CHUNK.to_string();
    let mut args = vec![
        "--snapshot-url",
        url,
        "--cache-dir",
        path(cache),
        "--chunk-size",
        &chunk,
    ];
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(extra);
    Daemon::start_at(dir, socket, &args)
}

/// Restores the whole image in a VMM, checks every byte, and returns the daemon's final
/// statistics (`stats_json`, written at exit, after every chunk transfer ended). With
/// `metrics` (the daemon's `--metrics` socket), a scrape taken once every byte was read must
/// agree with the `stats` of the same moment (for a warm cache: no transfer under way).
fn restore_and_verify(
    daemon: Daemon,
    model: &Model,
    stats_json: &Path,
    metrics: Option<&Path>,
) -> serde_json::Value {
    let vmm = start_vmm(&daemon, vec![SIZE / 2, SIZE / 2], false);
    verify(&daemon, &vmm, model);
    let stats = daemon.control("stats");
    if let Some(socket) = metrics {
        let scrape = scrape_unix(socket);
        let store = &stats["store"];
        for (metric, labels, field) in [
            ("uffd_store_gets_total", &[][..], "gets"),
            ("uffd_store_fetched_bytes_total", &[], "bytes_fetched"),
            ("uffd_store_retries_total", &[], "retries"),
            (
                "uffd_chunk_cache_lookups_total",
                &[("result", "hit")],
                "chunk_hits",
            ),
            (
                "uffd_chunk_cache_lookups_total",
                &[("result", "fetched")],
                "chunk_fetches",
            ),
        ] {
            assert_eq!(
                value(&scrape, metric, labels),
                store[field].as_u64().unwrap() as f64,
                "{metric} {labels:?} against {field} of {stats:#}"
            );
        }
    }
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(
        stderr.contains("object store"),
        "no store line in the table:\n{stderr}"
    );
    serde_json::from_slice(&std::fs::read(stats_json).unwrap()).unwrap()
}

#[test]
fn a_pushed_snapshot_restores_cold_then_warm_without_data_gets() {
    let test = "remote-cold-warm";
    let Some(server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(SEED, SIZE, PAGE);
    let (snapshot, data_len, header_len) = snapshot_dir(&dir, &model);
    let url = format!("s3://{BUCKET}/vm-1/gen-0");
    push(&server, &snapshot, &url);
    // A cache directory that does not exist yet: created, private.
    let cache = dir.join("cache/chunks");

    let cold_json = dir.join("cold.json");
    let cold = restore_and_verify(
        serve(
            &dir,
            "cold.sock",
            &server,
            &url,
            &cache,
            &["--stats-json", path(&cold_json)],
        ),
        &model,
        &cold_json,
        None,
    );
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache directory mode {mode:o}");
    let store = &cold["store"];
    assert_eq!(store["chunk_fetches"], data_len.div_ceil(CHUNK), "{cold:#}");
    assert_eq!(store["bytes_fetched"], header_len + data_len, "{cold:#}");
    assert_eq!(store["retries"], 0, "{cold:#}");

    // Same cache: the header is the only GET.
    let metrics = dir.join("metrics.sock");
    let warm_json = dir.join("warm.json");
    let warm = restore_and_verify(
        serve(
            &dir,
            "warm.sock",
            &server,
            &url,
            &cache,
            &[
                "--metrics",
                path(&metrics),
                "--stats-json",
                path(&warm_json),
            ],
        ),
        &model,
        &warm_json,
        Some(&metrics),
    );
    let store = &warm["store"];
    assert_eq!(store["chunk_fetches"], 0, "{warm:#}");
    assert_eq!(store["gets"], 1, "{warm:#}");
    assert_eq!(store["bytes_fetched"], header_len, "{warm:#}");
    assert!(store["chunk_hits"].as_u64().unwrap() > 0, "{warm:#}");

    // And back: the pulled directory has the same files. The endpoint and credentials come
    // from the environment this time (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, ...), as on a host.
    let pulled = dir.join("pulled");
    let env: Vec<(String, String)> = server
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect();
    let (code, stdout, stderr) = snapshot_command(&["pull", &url, path(&pulled)], &env);
    assert_eq!(code, 0, "pull failed: {stderr}");
    assert!(stdout.contains("pulled"), "{stdout}");
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            std::fs::read(snapshot.join(&name)).unwrap(),
            std::fs::read(pulled.join(&name)).unwrap(),
            "{name:?} differs after push and pull"
        );
    }
}

/// Two daemons restore the same snapshot at once through one cache directory: every byte
/// right in both VMMs, and each data chunk fetched once on the host (by one daemon or the
/// other; the per-chunk locks make the second find it fetched).
#[test]
fn two_daemons_on_one_cache_fetch_each_chunk_once() {
    let test = "remote-two-daemons";
    let Some(server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(SEED + 2, SIZE, PAGE);
    let (snapshot, data_len, header_len) = snapshot_dir(&dir, &model);
    let url = format!("s3://{BUCKET}/vm-5/gen-0");
    push(&server, &snapshot, &url);
    let cache = dir.join("cache");
    let started: Vec<(Daemon, PathBuf)> = ["a", "b"]
        .iter()
        .map(|name| {
            let json = dir.join(&format!("{name}.json"));
            let daemon = serve(
                &dir,
                &format!("{name}.sock"),
                &server,
                &url,
                &cache,
                &["--stats-json", path(&json)],
            );
            (daemon, json)
        })
        .collect();
    let vmms: Vec<_> = started
        .iter()
        .map(|(daemon, _)| start_vmm(daemon, vec![SIZE / 2, SIZE / 2], false))
        .collect();
    // Both hash at once, each from four threads.
    let pending: Vec<_> = vmms
        .iter()
        .map(|vmm| vmm.start_hash(0, SIZE, 4).expect("start hash"))
        .collect();
    for hashes in pending {
        assert_hashes(&hashes.wait().expect("hash every block"), &model, 0, SIZE);
    }
    let mut fetched = 0;
    let mut bytes = 0;
    for (vmm, (daemon, json)) in vmms.into_iter().zip(started) {
        assert!(vmm.exit().unwrap().success());
        let (status, stderr) = daemon.wait(TIMEOUT);
        assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        fetched += stats["store"]["chunk_fetches"].as_u64().unwrap();
        bytes += stats["store"]["bytes_fetched"].as_u64().unwrap();
    }
    assert_eq!(fetched, data_len.div_ceil(CHUNK));
    assert_eq!(bytes, 2 * header_len + data_len);
}

#[test]
fn the_working_set_is_read_from_the_store() {
    let test = "remote-working-set";
    let Some(server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(SEED + 1, SIZE, PAGE);
    let (snapshot, _, _) = snapshot_dir(&dir, &model);
    let url = format!("s3://{BUCKET}/vm-2/gen-0");
    push(&server, &snapshot, &url);
    // The local copy is gone: the working set can only come from the store.
    std::fs::remove_dir_all(&snapshot).unwrap();
    let stats_json = dir.join("stats.json");
    let daemon = serve(
        &dir,
        "ws.sock",
        &server,
        &url,
        &dir.join("cache"),
        &[
            "--prefetch",
            "working-set",
            "--stats-json",
            path(&stats_json),
        ],
    );
    let stats = restore_and_verify(daemon, &model, &stats_json, None);
    // 16 working-set pages, then the whole image.
    assert_eq!(
        stats["prefetch"]["total_pages"],
        2 * 16 + SIZE / PAGE,
        "{stats:#}"
    );
}

#[test]
fn flags_that_cannot_work_with_a_url_are_refused_by_name() {
    let test = "remote-flags";
    let Some(server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(SEED, SIZE, PAGE);
    let (snapshot, _, _) = snapshot_dir(&dir, &model);
    let url = format!("s3://{BUCKET}/vm-3/gen-0");
    push(&server, &snapshot, &url);
    let cache = dir.join("cache");
    let flags = store_flags(&server);
    let memory = path(&snapshot);
    let missing = format!("s3://{BUCKET}/no-such-snapshot");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--snapshot-url", &url, "--snapshot-dir", memory],
            "--snapshot-dir",
        ),
        (
            vec![
                "--snapshot-url",
                &url,
                "--dirty-tracking",
                "--next-generation",
                memory,
            ],
            "--next-generation: not supported with --snapshot-url",
        ),
        (
            vec!["--snapshot-url", &url, "--record-working-set"],
            "--record-working-set: give a FILE",
        ),
        (
            vec!["--snapshot-url", &url, "--chunk-size", "3000"],
            "--chunk-size",
        ),
        (
            vec!["--snapshot-url", &missing],
            "object header is not in the store",
        ),
        (vec!["--snapshot-url", "ftp://host/x"], "--snapshot-url"),
        (
            vec!["--snapshot-url", &url, "--store-option", "no_such_key=1"],
            "--store-option",
        ),
    ];
    for (case, needle) in cases {
        let mut command = Command::new(DAEMON_BIN);
        command
            .args([
                "serve",
                "--socket",
                path(&dir.join("s.sock")),
                "--accept-timeout",
                "1",
            ])
            .args(["--cache-dir", path(&cache)])
            .args(&case);
        command.args(&flags);
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{case:?}: {needle:?} missing from {stderr}"
        );
        assert!(
            !stderr.contains(test_support::s3::SECRET_KEY),
            "{case:?}: the secret key is in the output: {stderr}"
        );
    }
}

/// The store stops answering after the daemon opened the snapshot and before the guest's
/// first fault: every read fails, the store's and then the engine's retries run out, and the
/// VMM is killed (exit 3 naming the store), never handed a page of zeros.
#[test]
fn a_store_down_before_the_first_fault_gets_the_vmm_killed_never_zeros() {
    let test = "remote-store-down";
    let Some(mut server) = S3Server::start(test) else {
        return;
    };
    let dir = TestDir::new(test);
    let model = model_image(SEED, SIZE, PAGE);
    let (snapshot, _, _) = snapshot_dir(&dir, &model);
    let url = format!("s3://{BUCKET}/vm-4/gen-0");
    push(&server, &snapshot, &url);
    let daemon = serve(
        &dir,
        "down.sock",
        &server,
        &url,
        &dir.join("cache"),
        &["--store-attempts", "2", "--read-deadline", "1"],
    );
    let vmm = start_vmm(&daemon, vec![SIZE / 2, SIZE / 2], false);
    server.stop();
    let touched = vmm.touch(Touch::read(0, PAGE, 1));
    assert!(
        matches!(touched, Err(VmmError::Exited { .. })),
        "a page was served with the store down: {touched:?}"
    );
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    for needle in ["snapshot store", "gave up after 2 attempts", "was killed"] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains(test_support::s3::SECRET_KEY), "{stderr}");
}
