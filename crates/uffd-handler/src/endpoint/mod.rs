//! The scrape endpoint (`--metrics`): plain HTTP/1.1 `GET /metrics` on a Unix socket (mode
//! 0600, created as the VMM socket is) or a loopback TCP address, answered in the Prometheus
//! text format (OpenMetrics when the scraper asks for it).
//!
//! The main loop accepts; each connection has its own thread (at most
//! [`MAX_SCRAPE_CONNECTIONS`] at once, more are answered 503 and closed), which reads one
//! request, asks the main loop for the statistics of this moment, writes one response and
//! closes. A connection that sends nothing within the idle timeout is closed.

mod exposition;
mod families;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::bounded;
use rustix::net::SocketFlags;
use tracing::{debug, info, warn};

use super::mailbox::{MailboxSender, Message};
use crate::parse::{MetricsAddr, ScrapeRequest, parse_request_line};
use exposition::{Format, render};
use uffd_handshake::BoundSocket;

/// Scrape connections served at once.
pub(crate) const MAX_SCRAPE_CONNECTIONS: usize = 8;
/// The longest request head read (request line and headers).
const MAX_REQUEST_HEAD: u64 = 8192;
/// How long a scrape waits for the main loop (busy writing a generation or graduating).
const STATS_WAIT: Duration = Duration::from_secs(30);

/// Why the endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr}: {message}")]
pub(crate) struct EndpointError {
    /// The address, as given.
    pub addr: String,
    /// What is wrong.
    pub message: String,
}

/// The listening socket.
#[derive(Debug)]
enum Listener {
    /// Its file is removed on drop (if it is still ours).
    Unix(BoundSocket),
    Tcp(TcpListener),
}

/// The scrape endpoint.
#[derive(Debug)]
pub(crate) struct MetricsEndpoint {
    listener: Listener,
    active: Arc<AtomicUsize>,
    idle_timeout: Duration,
}

impl MetricsEndpoint {
    /// Listens on `addr` (non-blocking; the main loop polls it).
    pub(crate) fn bind(addr: &MetricsAddr, idle_timeout: Duration) -> Result<Self, EndpointError> {
        let fail = |message: String| EndpointError {
            addr: match addr {
                MetricsAddr::Unix(path) => path.display().to_string(),
                MetricsAddr::Tcp(a) => a.to_string(),
            },
            message,
        };
        let listener = match addr {
            MetricsAddr::Unix(path) => {
                let socket =
                    BoundSocket::bind(path, 0o600, None).map_err(|e| fail(e.to_string()))?;
                rustix::net::listen(&socket, 16).map_err(|e| fail(format!("listening: {e}")))?;
                Listener::Unix(socket)
            }
            MetricsAddr::Tcp(a) => {
                let socket = TcpListener::bind(a).map_err(|e| fail(format!("binding: {e}")))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| fail(format!("making it non-blocking: {e}")))?;
                Listener::Tcp(socket)
            }
        };
        let endpoint = MetricsEndpoint {
            listener,
            active: Arc::default(),
            idle_timeout,
        };
        info!(addr = %endpoint.local_addr(), "metrics endpoint listening");
        Ok(endpoint)
    }

    /// Where it listens (a TCP port 0 resolved to the port bound).
    pub(crate) fn local_addr(&self) -> String {
        match &self.listener {
            Listener::Unix(socket) => socket.path().display().to_string(),
            Listener::Tcp(socket) => socket
                .local_addr()
                .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string()),
        }
    }

    /// Accepts every pending connection, each served on its own thread.
    pub(crate) fn accept_pending(&self, events: &MailboxSender) {
        loop {
            let accepted: io::Result<Box<dyn Connection>> = match &self.listener {
                Listener::Unix(socket) => rustix::net::accept_with(socket, SocketFlags::CLOEXEC)
                    .map(|fd| Box::new(UnixStream::from(fd)) as Box<dyn Connection>)
                    .map_err(io::Error::from),
                Listener::Tcp(socket) => socket
                    .accept()
                    .map(|(conn, _)| Box::new(conn) as Box<dyn Connection>),
            };
            let mut conn = match accepted {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accepting a metrics connection failed");
                    return;
                }
            };
            // Counted here, released by the connection's thread when it ends.
            if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_SCRAPE_CONNECTIONS {
                self.active.fetch_sub(1, Ordering::AcqRel);
                // Whatever of the request has arrived is read first, so closing with it
                // unread does not reset the connection before the client reads the answer.
                let _ = conn.set_nonblocking_now();
                let _ = conn.read(&mut [0u8; MAX_REQUEST_HEAD as usize]);
                let _ = respond(
                    &mut *conn,
                    503,
                    "text/plain",
                    b"too many scrapes at once\n",
                    true,
                );
                continue;
            }
            let events = events.clone();
            let active = self.active.clone();
            let idle_timeout = self.idle_timeout;
            let spawned = std::thread::Builder::new()
                .name("metrics-conn".into())
                .spawn(move || {
                    serve_scrape(conn, &events, idle_timeout);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            if let Err(e) = spawned {
                self.active.fetch_sub(1, Ordering::AcqRel);
                warn!(error = %e, "cannot serve a metrics connection");
            }
        }
    }
}

impl AsFd for MetricsEndpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.listener {
            Listener::Unix(socket) => socket.as_fd(),
            Listener::Tcp(socket) => socket.as_fd(),
        }
    }
}

/// A Unix or TCP stream.
trait Connection: Read + Write + Send {
    /// Blocking, with `timeout` on reads and writes (`None`: none).
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Non-blocking.
    fn set_nonblocking_now(&self) -> io::Result<()>;
}

impl Connection for UnixStream {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    fn set_nonblocking_now(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

impl Connection for TcpStream {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    fn set_nonblocking_now(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

/// One request, one response.
fn serve_scrape(mut conn: Box<dyn Connection>, events: &MailboxSender, idle_timeout: Duration) {
    // An idle connection is closed: it holds one of the few connection slots.
    if conn
        .set_timeouts((!idle_timeout.is_zero()).then_some(idle_timeout))
        .is_err()
    {
        return;
    }
    let (request, format) = match read_request(&mut conn) {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(message) => {
            let _ = respond(&mut *conn, 400, "text/plain", message.as_bytes(), false);
            return;
        }
    };
    debug!(?request, ?format, "scrape");
    let head_only = match request {
        ScrapeRequest::Metrics => false,
        ScrapeRequest::MetricsHead => true,
        ScrapeRequest::NotFound => {
            let _ = respond(
                &mut *conn,
                404,
                "text/plain",
                b"the metrics are at /metrics\n",
                false,
            );
            return;
        }
        ScrapeRequest::BadMethod => {
            let _ = respond(&mut *conn, 405, "text/plain", b"only GET and HEAD\n", false);
            return;
        }
    };
    let (reply, answer) = bounded(1);
    let stats = if events.send(Message::Scrape(reply)) {
        answer.recv_timeout(STATS_WAIT).ok()
    } else {
        None
    };
    let Some(stats) = stats else {
        let _ = respond(
            &mut *conn,
            503,
            "text/plain",
            b"the daemon is busy or exiting\n",
            head_only,
        );
        return;
    };
    match render(*stats, format) {
        Ok(text) => {
            let _ = respond(
                &mut *conn,
                200,
                format.content_type(),
                text.as_bytes(),
                head_only,
            );
        }
        Err(e) => {
            let message = format!("cannot encode the metrics: {e}\n");
            let _ = respond(&mut *conn, 500, "text/plain", message.as_bytes(), head_only);
        }
    }
}

/// Reads the request line and headers; `Ok(None)` when the client closed (or idled out)
/// before sending a request.
fn read_request(conn: &mut Box<dyn Connection>) -> Result<Option<(ScrapeRequest, Format)>, String> {
    let mut head = BufReader::new(conn.take(MAX_REQUEST_HEAD));
    let mut line = String::new();
    match head.read_line(&mut line) {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    let request = parse_request_line(&line)?;
    let mut format = Format::Prometheus;
    loop {
        let mut header = String::new();
        match head.read_line(&mut header) {
            Ok(0) => return Err("the request head ended early or is too long".into()),
            Err(e) => return Err(format!("reading the request head: {e}")),
            Ok(_) => {}
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            return Ok(Some((request, format)));
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("accept")
            && value.contains("application/openmetrics-text")
        {
            format = Format::OpenMetrics;
        }
    }
}

/// Writes one whole response (head and body in one write) and closes the exchange.
fn respond(
    conn: &mut dyn Connection,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let mut whole = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        whole.extend_from_slice(body);
    }
    conn.write_all(&whole)?;
    conn.flush()
}
