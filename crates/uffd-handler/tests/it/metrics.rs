//! The scrape endpoint (`--metrics`) through the daemon binary: its output parsed by a
//! Prometheus text parser (`prometheus-parse`) and checked against the JSON `stats` of the
//! same moment (the VMM quiescent between the two), the fault timeline summing to the faults
//! counted, loopback-only TCP, bounded connections, and prefetch precision/recall reported as
//! unknown with the reason where the kernel cannot tell.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use test_vmm::Touch;

use crate::common::{Daemon, MIB, PAGE, TIMEOUT, TestDir, exit_code, model_image, start_vmm};

const SEED: u64 = 0x3e7c;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An HTTP/1.1 GET over `conn`: the status line, the head and the body.
pub(crate) fn get(
    mut conn: impl Read + Write,
    target: &str,
    accept: Option<&str>,
) -> (String, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        conn,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\n{accept}\r\n"
    )
    .unwrap();
    // Read until the daemon closes; what arrived before a reset counts (a refused
    // connection may be closed with part of its request unread).
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let answer = String::from_utf8(bytes).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {answer:?}"));
    (head.to_string(), body.to_string())
}

pub(crate) fn scrape_unix(socket: &Path) -> Scrape {
    let conn = UnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (head, body) = get(conn, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(&body)
}

pub(crate) fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text scrape")
}

/// The value of the one sample named `name` whose labels include `labels`.
#[track_caller]
pub(crate) fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:#?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn seconds(json: &serde_json::Value) -> f64 {
    json["secs"].as_u64().unwrap() as f64 + json["nanos"].as_u64().unwrap() as f64 / 1e9
}

#[test]
fn the_scrape_agrees_with_the_json_stats_of_the_same_moment() {
    let dir = TestDir::new("metrics-agree");
    let memory = dir.join("memory");
    let model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let endpoint = dir.join("metrics.sock");
    let daemon = Daemon::start(
        &dir,
        &["--memory-file", path(&memory), "--metrics", path(&endpoint)],
    );
    // Before any VMM: the daemon's own figures, no per-VMM series.
    let waiting = scrape_unix(&endpoint);
    assert_eq!(value(&waiting, "uffd_generations_written_total", &[]), 0.0);
    assert!(
        !waiting
            .samples
            .iter()
            .any(|s| s.labels.get("vmm").is_some()),
        "{:?}",
        waiting.samples
    );

    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    // A known workload: 40 pages read, 3 written, 8 given back and read again (zeros).
    vmm.touch(Touch::read(0, 40 * PAGE, 2)).unwrap();
    vmm.touch(Touch::write(2 * MIB, 3 * PAGE, 1, 7)).unwrap();
    vmm.madvise_dontneed(0, 8 * PAGE).unwrap();
    vmm.touch(Touch::read(0, 8 * PAGE, 1)).unwrap();

    // The VMM is quiescent: the JSON and the scrape see the same counters.
    let stats = daemon.control("stats");
    let scrape = scrape_unix(&endpoint);
    let m = &stats["metrics"];
    let vmm_label = stats["vmm"]["session"].to_string();
    let v = |name: &str| value(&scrape, name, &[("vmm", &vmm_label)]);
    let outcome = |o: &str| value(&scrape, "uffd_fault_outcomes_total", &[("outcome", o)]);
    let n = |key: &str| m[key].as_u64().unwrap() as f64;

    assert_eq!(vmm_label, "1");
    let info = value(
        &scrape,
        "uffd_vmm_info",
        &[("vmm", "1"), ("pid", &vmm.pid().to_string())],
    );
    assert_eq!(info, 1.0);
    assert_eq!(v("uffd_fault_messages_total"), n("faults"));
    assert_eq!(
        outcome("installed_source"),
        n("installed_source") - n("fault_around_pages")
    );
    assert_eq!(outcome("installed_zero"), n("installed_zero"));
    assert_eq!(outcome("already_present"), n("already_present"));
    assert_eq!(outcome("retried"), n("retried"));
    assert_eq!(v("uffd_retries_total"), n("retried"));
    assert_eq!(outcome("discarded"), n("discarded"));
    assert_eq!(v("uffd_fatal_errors_total"), 0.0);
    assert_eq!(v("uffd_removes_total"), n("removes"));
    assert!(n("removes") >= 1.0, "{stats:#}");
    assert_eq!(v("uffd_removed_pages_total"), n("removed_pages"));
    assert_eq!(n("removed_pages"), 8.0, "{stats:#}");
    // Every page touched was installed by a fault of its own (no fault-around, no prefetch).
    assert_eq!(
        n("installed_source") + n("installed_zero"),
        (40 + 3 + 8) as f64,
        "{stats:#}"
    );

    // The histogram: its count is the faults timed, its sum the stall time.
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "uffd_fault_latency_seconds")
        .expect("a latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}");
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(inf.count, n("latency_samples"));
    assert!(buckets.iter().all(|b| b.count <= inf.count), "{buckets:?}");
    assert_eq!(v("uffd_fault_latency_seconds_count"), n("latency_samples"));
    let stall = seconds(&m["stall_time"]);
    let sum = v("uffd_fault_latency_seconds_sum");
    assert!(
        (sum - stall).abs() <= 1e-9 * stall.max(1.0),
        "{sum} vs {stall}"
    );
    assert!((v("uffd_vcpu_stall_seconds_total") - stall).abs() <= 1e-9 * stall.max(1.0));

    // Time to first fault served: the same figure.
    let first = stats["time_to_first_fault_ms"].as_f64().unwrap() / 1e3;
    assert!(
        (v("uffd_first_fault_served_seconds") - first).abs() < 1e-9,
        "{first}"
    );

    // Pages by state: without --dirty-tracking the written count is installed_by_write.
    let pages = &stats["pages"];
    for state in ["missing", "clean", "zero", "removed", "installed_by_write"] {
        let scraped = value(&scrape, "uffd_pages", &[("vmm", "1"), ("state", state)]);
        assert_eq!(scraped, pages[state].as_u64().unwrap() as f64, "{state}");
    }
    assert_eq!(pages["installed_by_write"], 3, "{stats:#}");

    // The timeline sums to the faults counted, in the JSON and in the scrape.
    let timeline = &m["timeline"];
    assert_eq!(timeline["bucket_ms"], 10);
    let json_sum: u64 = timeline["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum::<u64>()
        + timeline["after"].as_u64().unwrap();
    assert_eq!(json_sum as f64, n("latency_samples"), "{timeline:#}");
    let scraped_sum: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "uffd_fault_timeline_faults")
        .map(|s| match s.value {
            Value::Gauge(v) => v,
            _ => panic!("{s:?}"),
        })
        .sum::<f64>()
        + v("uffd_fault_timeline_after_faults");
    assert_eq!(scraped_sum, n("latency_samples"));

    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(stderr.contains("faults per 10 ms (first 5 s)"), "{stderr}");
    assert!(
        !endpoint.exists(),
        "the endpoint's socket file was left behind"
    );
}

/// Between VMMs (`--keep-listening`) the endpoint serves the last VMM's final figures, the
/// same as `stats`, with `uffd_vmm_serving` 0.
#[test]
fn between_vmms_the_last_final_figures_are_served() {
    let dir = TestDir::new("metrics-between");
    let memory = dir.join("memory");
    std::fs::write(&memory, model_image(SEED, MIB, PAGE).bytes).unwrap();
    let endpoint = dir.join("metrics.sock");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--metrics",
            path(&endpoint),
            "--keep-listening",
            "--accept-timeout",
            "0",
        ],
    );
    let vmm = start_vmm(&daemon, vec![MIB], false);
    vmm.touch(Touch::read(0, 12 * PAGE, 1)).unwrap();
    let live = scrape_unix(&endpoint);
    assert_eq!(value(&live, "uffd_vmm_serving", &[("vmm", "1")]), 1.0);
    assert!(vmm.exit().unwrap().success());
    // The session's end is an ordering fact `stats` shows: state "waiting" after a VMM.
    let deadline = Instant::now() + TIMEOUT;
    let stats = loop {
        let stats = daemon.control("stats");
        if stats["state"] == "waiting" && stats["vmm"].is_object() {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the session never ended: {stats:#}"
        );
        daemon.exited(Duration::from_millis(10));
    };
    let scrape = scrape_unix(&endpoint);
    assert_eq!(value(&scrape, "uffd_vmm_serving", &[("vmm", "1")]), 0.0);
    assert_eq!(
        value(&scrape, "uffd_fault_messages_total", &[("vmm", "1")]),
        stats["metrics"]["faults"].as_u64().unwrap() as f64
    );
    assert_eq!(
        value(&scrape, "uffd_pages", &[("vmm", "1"), ("state", "clean")]),
        stats["pages"]["clean"].as_u64().unwrap() as f64
    );
    daemon.control("stop");
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

/// The port the daemon's log says it bound (`--metrics 127.0.0.1:0`).
fn bound_port(daemon: &Daemon) -> u16 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stderr = daemon.stderr();
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))
        {
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next();
            return addr.unwrap().rsplit(':').next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no endpoint log line: {stderr}");
        daemon.exited(Duration::from_millis(5));
    }
}

#[test]
fn a_loopback_endpoint_speaks_openmetrics_on_request_and_others_are_refused() {
    let dir = TestDir::new("metrics-tcp");
    let memory = dir.join("memory");
    std::fs::write(&memory, model_image(SEED, MIB, PAGE).bytes).unwrap();
    let refused = Daemon::spawn(
        &dir,
        "refused.sock",
        &["--memory-file", path(&memory), "--metrics", "0.0.0.0:9100"],
    );
    let (status, stderr) = refused.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");

    let daemon = Daemon::start(
        &dir,
        &["--memory-file", path(&memory), "--metrics", "127.0.0.1:0"],
    );
    let port = bound_port(&daemon);
    let vmm = start_vmm(&daemon, vec![MIB], false);
    vmm.touch(Touch::read(0, 4 * PAGE, 1)).unwrap();
    let connect = || {
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        conn
    };
    let (head, body) = get(connect(), "/metrics", Some("application/openmetrics-text"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let scrape = parse(&body);
    let stats = daemon.control("stats");
    assert_eq!(
        value(&scrape, "uffd_fault_messages_total", &[("vmm", "1")]),
        stats["metrics"]["faults"].as_u64().unwrap() as f64
    );
    let (head, _) = get(connect(), "/elsewhere", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let mut post = connect();
    write!(post, "POST /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    post.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let mut head_request = connect();
    write!(
        head_request,
        "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    head_request.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {answer}"
    );
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

/// At most 8 scrape connections are served at once: idle ones hold their slot until the idle
/// timeout closes them, a ninth is answered 503 at once, and once the idle ones are closed a
/// scrape is served again.
#[test]
fn scrape_connections_are_bounded_and_idle_ones_closed() {
    let dir = TestDir::new("metrics-bounded");
    let memory = dir.join("memory");
    std::fs::write(&memory, model_image(SEED, MIB, PAGE).bytes).unwrap();
    let endpoint = dir.join("metrics.sock");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--metrics",
            path(&endpoint),
            "--control-idle-timeout",
            "3s",
        ],
    );
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&endpoint).unwrap())
        .collect();
    let ninth = UnixStream::connect(&endpoint).unwrap();
    ninth.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (head, _) = get(ninth, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // The idle connections are closed by the daemon: each reads end of file.
    for mut conn in idle {
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    let scrape = scrape_unix(&endpoint);
    assert_eq!(value(&scrape, "uffd_generations_written_total", &[]), 0.0);
    daemon.control("stop");
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

/// Precision and recall need to know which prefetched pages the guest touched: where the
/// kernel cannot tell (no idle page tracking here, or hugetlb memory) they are reported as
/// unknown with the reason, in the JSON, the scrape (absent) and the exit table; never a
/// guess.
#[test]
fn prefetch_accuracy_is_unknown_with_its_reason_where_the_kernel_cannot_tell() {
    let dir = TestDir::new("metrics-accuracy");
    let memory = dir.join("memory");
    std::fs::write(&memory, model_image(SEED, 2 * MIB, PAGE).bytes).unwrap();
    let endpoint = dir.join("metrics.sock");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--prefetch",
            "all",
            "--metrics",
            path(&endpoint),
        ],
    );
    let vmm = start_vmm(&daemon, vec![2 * MIB], false);
    vmm.touch(Touch::read(0, 16 * PAGE, 1)).unwrap();
    let stats = daemon.control("stats");
    let accuracy = &stats["prefetch_accuracy"];
    assert!(accuracy["precision"].is_null(), "{stats:#}");
    assert!(accuracy["recall"].is_null(), "{stats:#}");
    let why = accuracy["unknown"].as_str().unwrap();
    if !Path::new("/sys/kernel/mm/page_idle/bitmap").exists() {
        assert!(why.contains("no idle page tracking"), "{why}");
    }
    let scrape = scrape_unix(&endpoint);
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("uffd_prefetch_precision")),
        "an unknown precision was scraped"
    );
    assert_eq!(stats["prefetch"]["total_pages"], 2 * MIB / PAGE);
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(
        stderr.contains("prefetch precision / recall") && stderr.contains("unknown:"),
        "{stderr}"
    );
}
