//! The parsers of text from outside that the daemon owns: the size, duration, window and
//! metrics address flags, the control socket's command lines and the metrics endpoint's
//! request lines. Standard library only, so the fuzz targets (`fuzz/`) compile this very file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Parses `30`, `2.5`, `500ms`, `10s` or `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30, 2.5, 500ms, 10s, 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{text:?} is not a non-negative duration"))
}

/// A size in bytes with an optional K, M or G suffix (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

/// `--fault-around`: the window a read fault installs around itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAround {
    /// One page per fault (`off`, or `1`).
    Off,
    /// A window of this many bytes (`64K`, `256K`, `1M`: a size with a suffix).
    Bytes(u64),
    /// A window of this many pages (a plain number: 4, 16, 64; the flag's older form).
    Pages(u64),
}

/// The largest fault-around window: one 2 MiB copy inside a demand fault. On a 2 MiB-page
/// guest every window is therefore one page.
pub(crate) const FAULT_AROUND_MAX_BYTES: u64 = 2 << 20;

impl FaultAround {
    /// The window in pages of `page_size` bytes: a power of two, at least 1, at most
    /// [`FAULT_AROUND_MAX_BYTES`].
    pub(crate) fn pages(self, page_size: u64) -> u64 {
        let bytes = match self {
            FaultAround::Off => return 1,
            FaultAround::Bytes(bytes) => bytes,
            FaultAround::Pages(pages) => pages.saturating_mul(page_size),
        };
        let pages = (bytes.min(FAULT_AROUND_MAX_BYTES) / page_size.max(1)).max(1);
        // Round down to a power of two: windows are aligned.
        1 << pages.ilog2()
    }
}

/// Parses `--fault-around`: `off`, a page count (a plain number) or a size with a suffix.
pub(crate) fn parse_fault_around(s: &str) -> Result<FaultAround, String> {
    let s = s.trim();
    if s == "off" {
        return Ok(FaultAround::Off);
    }
    let has_suffix = s.ends_with(['K', 'k', 'M', 'm', 'G', 'g']);
    let n = parse_size(s)?;
    match (has_suffix, n) {
        (_, 0) => Err(format!("{s:?}: the window must not be empty (say `off`)")),
        (false, 1) => Ok(FaultAround::Off),
        (false, pages) if pages.is_power_of_two() => Ok(FaultAround::Pages(pages)),
        (false, _) => Err(format!("{s:?}: a page count must be a power of two")),
        (true, bytes) if bytes.is_power_of_two() && bytes >= 4096 => Ok(FaultAround::Bytes(bytes)),
        (true, _) => Err(format!(
            "{s:?}: a window in bytes must be a power of two of at least 4K"
        )),
    }
}

/// A control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlCommand {
    /// Report the statistics.
    Stats,
    /// Write the next generation.
    Snapshot,
    /// Stop gracefully.
    Stop,
}

impl ControlCommand {
    /// The command on a line the control socket read: `Ok(None)` for a blank line, an error
    /// naming the commands for anything else.
    pub(crate) fn parse(line: &str) -> Result<Option<ControlCommand>, String> {
        match line.trim() {
            "" => Ok(None),
            "stats" => Ok(Some(ControlCommand::Stats)),
            "snapshot" => Ok(Some(ControlCommand::Snapshot)),
            "stop" => Ok(Some(ControlCommand::Stop)),
            other => Err(format!(
                "unknown command {other:?}; the commands are stats, snapshot and stop"
            )),
        }
    }
}

/// `--metrics`: where the scrape endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetricsAddr {
    /// A Unix socket path (anything with a `/`).
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

/// Parses `--metrics`: a Unix socket path (it has a `/`: `/run/uffd-metrics.sock`,
/// `./m.sock`) or a loopback `host:port` (`127.0.0.1:9100`, `[::1]:9100`, `localhost:9100`).
/// Any other host is refused: the endpoint has no authentication, so it never listens beyond
/// this machine.
pub(crate) fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.contains('/') {
        return Ok(MetricsAddr::Unix(PathBuf::from(s)));
    }
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .map_err(|e| format!("{s:?}: bad port {port:?}: {e}"))?,
        None => s.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{s:?} is neither a Unix socket path (one with a `/`) nor a loopback host:port \
                 (127.0.0.1:9100, [::1]:9100, localhost:9100)"
            )
        })?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{s:?}: {} is not a loopback address; the endpoint has no authentication and \
             listens on this machine only (127.0.0.1, ::1, localhost, or a Unix socket path)",
            addr.ip()
        ));
    }
    Ok(MetricsAddr::Tcp(addr))
}

/// What a scrape asked for, from its HTTP request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScrapeRequest {
    /// `GET /metrics` (or `/`): the metrics.
    Metrics,
    /// `HEAD` of the same: the headers only.
    MetricsHead,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    BadMethod,
}

/// Parses an HTTP/1.x request line (`GET /metrics HTTP/1.1`); `Err` for anything that is
/// not one (answered 400).
pub(crate) fn parse_request_line(line: &str) -> Result<ScrapeRequest, String> {
    let mut parts = line.trim_end_matches(['\r', '\n']).split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{line:?} is not an HTTP request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("{version:?}: only HTTP/1.x is served"));
    }
    let path = target.split('?').next().unwrap_or_default();
    let known = matches!(path, "/metrics" | "/");
    Ok(match (method, known) {
        ("GET", true) => ScrapeRequest::Metrics,
        ("HEAD", true) => ScrapeRequest::MetricsHead,
        ("GET" | "HEAD", false) => ScrapeRequest::NotFound,
        _ => ScrapeRequest::BadMethod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn fault_around_in_bytes_or_pages_capped_at_2m() {
        let at = |s: &str, page: u64| parse_fault_around(s).unwrap().pages(page);
        assert_eq!(at("off", 4096), 1);
        assert_eq!(at("1", 4096), 1);
        assert_eq!(at("64K", 4096), 16);
        assert_eq!(at("16", 4096), 16);
        assert_eq!(at("64", 4096), 64);
        assert_eq!(at("4M", 4096), 512, "capped at 2 MiB");
        // A 2 MiB-page guest: every window is one page (the old `64` meant 128 MiB there).
        assert_eq!(at("64", 2 << 20), 1);
        assert_eq!(at("64K", 2 << 20), 1);
        for bad in ["0", "3", "12K", "1K", "x", ""] {
            assert!(parse_fault_around(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn metrics_addresses_are_unix_paths_or_loopback_only() {
        assert_eq!(
            parse_metrics_addr("/run/m.sock"),
            Ok(MetricsAddr::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            parse_metrics_addr("localhost:9100"),
            Ok(MetricsAddr::Tcp("127.0.0.1:9100".parse().unwrap()))
        );
        assert!(matches!(
            parse_metrics_addr("[::1]:0"),
            Ok(MetricsAddr::Tcp(_))
        ));
        let refused = parse_metrics_addr("0.0.0.0:9100").unwrap_err();
        assert!(refused.contains("not a loopback address"), "{refused}");
        assert!(parse_metrics_addr("10.0.0.1:9100").is_err());
        assert!(parse_metrics_addr("metrics.sock").is_err());
        assert!(parse_metrics_addr("localhost:x").is_err());
    }

    #[test]
    fn request_lines() {
        let parse = parse_request_line;
        assert_eq!(
            parse("GET /metrics HTTP/1.1\r\n"),
            Ok(ScrapeRequest::Metrics)
        );
        assert_eq!(parse("GET /?x=1 HTTP/1.0"), Ok(ScrapeRequest::Metrics));
        assert_eq!(
            parse("HEAD /metrics HTTP/1.1"),
            Ok(ScrapeRequest::MetricsHead)
        );
        assert_eq!(parse("GET /x HTTP/1.1"), Ok(ScrapeRequest::NotFound));
        assert_eq!(
            parse("POST /metrics HTTP/1.1"),
            Ok(ScrapeRequest::BadMethod)
        );
        assert!(parse("GET /metrics").is_err());
        assert!(parse("GET /metrics HTTP/2 x").is_err());
    }

    #[test]
    fn control_lines() {
        assert_eq!(
            ControlCommand::parse(" stats\r"),
            Ok(Some(ControlCommand::Stats))
        );
        assert_eq!(ControlCommand::parse(""), Ok(None));
        assert!(
            ControlCommand::parse("stop now")
                .unwrap_err()
                .contains("stop now")
        );
    }
}
