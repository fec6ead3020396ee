//! A fault-injecting HTTP/1.1 proxy in front of the S3 server: added latency, stalls,
//! connection resets, truncated bodies and 503s, chosen per request at run time, and a record
//! of every request (method and path) it saw.
//!
//! Each client connection carries one request: the proxy rewrites its `Connection` header to
//! `close`, so the server closes after answering and the response needs no parsing beyond
//! the end of its head.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Reset the client's connection before forwarding anything.
    Reset,
    /// Forward the response head and `after` body bytes, then reset the connection.
    ResetMidBody { after: usize },
    /// Forward the response head and `body` body bytes, then close cleanly (a short body).
    Truncate { body: usize },
    /// Forward the response head and `after` body bytes, then send nothing for `pause`
    /// before going on.
    Stall { after: usize, pause: Duration },
    /// Forward the response head and `after` body bytes, then send nothing until
    /// [`Proxy::release`] (or [`test_support::TIMEOUT`]) before going on.
    Hold { after: usize },
    /// Answer `503 Slow Down` without contacting the server.
    Unavailable,
}

/// Which requests a fault applies to: a method and a substring of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Match {
    pub(crate) method: &'static str,
    pub(crate) path_contains: String,
}

impl Match {
    /// GETs of data objects (`<uuid>.data`).
    pub(crate) fn data_gets() -> Match {
        Match {
            method: "GET",
            path_contains: ".data".into(),
        }
    }

    /// PUTs of objects whose path contains `name`.
    pub(crate) fn puts_of(name: &str) -> Match {
        Match {
            method: "PUT",
            path_contains: name.into(),
        }
    }

    fn matches(&self, request: &Request) -> bool {
        request.method == self.method && request.path.contains(&self.path_contains)
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
}

#[derive(Default)]
struct Rules {
    latency: Duration,
    /// Faults for the next matching requests, first match first.
    queued: VecDeque<(Match, Fault)>,
    /// Faults applied to every matching request until cleared.
    always: Vec<(Match, Fault)>,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Rules>,
    seen: Mutex<Vec<Request>>,
    stop: AtomicBool,
    /// Set by [`Proxy::release`]: held responses go on.
    released: Mutex<bool>,
    release: Condvar,
}

/// The running proxy; stops accepting when dropped.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Rules::default()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            released: Mutex::new(false),
            release: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                thread::spawn(move || serve(client, &shared));
            }
        });
        Proxy { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Delay added before every request is forwarded.
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.shared.rules.lock().unwrap().latency = latency;
    }

    /// `fault` for the next `times` requests that `matching` selects.
    pub(crate) fn fail_next(&self, matching: Match, fault: Fault, times: usize) {
        let mut rules = self.shared.rules.lock().unwrap();
        for _ in 0..times {
            rules.queued.push_back((matching.clone(), fault));
        }
    }

    /// `fault` for every request `matching` selects, until [`Proxy::heal`].
    pub(crate) fn fail_always(&self, matching: Match, fault: Fault) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .always
            .push((matching, fault));
    }

    /// Removes every fault and the latency.
    pub(crate) fn heal(&self) {
        *self.shared.rules.lock().unwrap() = Rules::default();
    }

    /// Lets every held response go on (see [`Fault::Hold`]).
    pub(crate) fn release(&self) {
        *self.shared.released.lock().unwrap() = true;
        self.shared.release.notify_all();
    }

    /// Requests seen so far that `matching` selects.
    pub(crate) fn count(&self, matching: &Match) -> usize {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter().filter(|r| matching.matches(r)).count()
    }

    /// Forgets the requests seen so far.
    pub(crate) fn reset_counts(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the accepting thread so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut client: TcpStream, shared: &Shared) {
    let Some((head, rest)) = read_head(&mut client) else {
        return;
    };
    let Some(request) = parse_request(&head) else {
        return;
    };
    let (latency, fault) = {
        let mut rules = shared.rules.lock().unwrap();
        let queued = rules.queued.iter().position(|(m, _)| m.matches(&request));
        let fault = match queued {
            Some(i) => rules.queued.remove(i).map(|(_, f)| f),
            None => rules
                .always
                .iter()
                .find(|(m, _)| m.matches(&request))
                .map(|(_, f)| *f),
        };
        (rules.latency, fault)
    };
    shared.seen.lock().unwrap().push(request);
    if !latency.is_zero() {
        thread::sleep(latency);
    }
    match fault {
        Some(Fault::Reset) => return reset(client),
        Some(Fault::Unavailable) => {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                        <Error><Code>SlowDown</Code><Message>injected</Message></Error>";
            let response = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        _ => {}
    }
    let Ok(mut upstream) = TcpStream::connect(shared.upstream) else {
        return reset(client);
    };
    if upstream.write_all(&close_after(&head)).is_err() || upstream.write_all(&rest).is_err() {
        return reset(client);
    }
    // The rest of the request body, if any, goes on in its own thread.
    let (mut from_client, mut to_upstream) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let copier = thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_upstream);
    });
    forward_response(&mut upstream, client, fault, copier, shared);
}

/// Copies the response to the client, applying a body fault at its byte position.
fn forward_response(
    upstream: &mut TcpStream,
    mut client: TcpStream,
    fault: Option<Fault>,
    copier: thread::JoinHandle<()>,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut response: Vec<u8> = Vec::new();
    let mut body_start: Option<usize> = None;
    let mut forwarded = 0usize;
    let mut stalled = false;
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        response.extend_from_slice(&buf[..n]);
        if body_start.is_none() {
            body_start = find_head_end(&response);
            if body_start.is_none() {
                continue;
            }
        }
        let head_len = body_start.unwrap();
        // Where the fault cuts in, as a position in the whole response.
        let cut = match fault {
            Some(Fault::ResetMidBody { after }) => Some(head_len + after),
            Some(Fault::Truncate { body }) => Some(head_len + body),
            Some(Fault::Stall { after, .. } | Fault::Hold { after }) if !stalled => {
                Some(head_len + after)
            }
            _ => None,
        };
        let limit = cut.map_or(response.len(), |c| c.min(response.len()));
        if limit > forwarded {
            if client.write_all(&response[forwarded..limit]).is_err() {
                return;
            }
            forwarded = limit;
        }
        if cut.is_some_and(|c| forwarded >= c) {
            match fault {
                Some(Fault::ResetMidBody { .. }) => {
                    // The copier's clone of the socket must be gone, or closing ours sends
                    // nothing: end its read first.
                    let _ = client.shutdown(Shutdown::Read);
                    let _ = copier.join();
                    return reset(client);
                }
                Some(Fault::Truncate { .. }) => {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                Some(fault @ (Fault::Stall { .. } | Fault::Hold { .. })) if !stalled => {
                    match fault {
                        Fault::Stall { pause, .. } => thread::sleep(pause),
                        _ => {
                            let released = shared.released.lock().unwrap();
                            let _unused = shared
                                .release
                                .wait_timeout_while(released, test_support::TIMEOUT, |r| !*r)
                                .unwrap();
                        }
                    }
                    stalled = true;
                    if forwarded < response.len() {
                        if client.write_all(&response[forwarded..]).is_err() {
                            return;
                        }
                        forwarded = response.len();
                    }
                }
                _ => {}
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Closes with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox would.
fn reset(client: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO));
    drop(client);
}

/// Reads until the end of the request head; returns the head and any bytes past it.
fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = client.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(end) = find_head_end(&bytes) {
            let rest = bytes.split_off(end);
            return Some((bytes, rest));
        }
        if bytes.len() > 1 << 20 {
            return None;
        }
    }
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn parse_request(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut words = text.lines().next()?.split(' ');
    Some(Request {
        method: words.next()?.to_owned(),
        path: words.next()?.to_owned(),
    })
}

/// The request head with its `Connection` header replaced by `Connection: close`.
fn close_after(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}
