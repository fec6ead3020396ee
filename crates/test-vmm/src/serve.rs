//! The `test-vmm` process: Firecracker's restore steps, then the request loop.

use std::io::{BufRead, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use uffd_core::{Features, PageSize, Range, RegisterMode, Uffd, UffdBuilder};

use crate::control::{
    Command, ReadyInfo, RemoteError, RemoteErrorKind, Reply, Request, Response, Startup,
};
use crate::kvm::KvmGuest;
use crate::memory::GuestMemory;
use crate::ops::Guest;
use crate::{HandshakeRegion, VmmArgs, handshake_json, ops};

/// Exit status of a test VMM whose startup failed (after its `failed` line).
pub const EXIT_STARTUP_FAILED: u8 = 2;

/// Runs the test VMM: maps guest memory, creates and registers the uffd, sends the handshake,
/// prints the startup line, then serves requests from stdin until `exit` or end of input.
pub fn run(args: &VmmArgs) -> ExitCode {
    match start(args) {
        Ok(vmm) => {
            let ready = Startup::Ready(vmm.info.clone());
            print_line(&ready);
            tracing::info!(
                pid = vmm.info.pid,
                regions = vmm.info.regions.len(),
                "handshake sent"
            );
            vmm.serve();
            ExitCode::SUCCESS
        }
        Err((stage, message)) => {
            tracing::error!(stage, %message, "startup failed");
            print_line(&Startup::Failed {
                stage: stage.into(),
                message,
            });
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

/// A test VMM that has sent its handshake.
struct Vmm {
    guest: Arc<Guest>,
    /// Kept open for the process's lifetime, as Firecracker keeps its copy.
    _uffd: Uffd,
    socket: Mutex<Option<UnixStream>>,
    info: ReadyInfo,
}

fn start(args: &VmmArgs) -> Result<Vmm, (&'static str, String)> {
    args.validate().map_err(|e| ("args", e))?;
    let page_size = PageSize::from_bytes(args.page_size).expect("validated");
    let memory = GuestMemory::map(&args.regions, args.page_size, args.hugetlb, args.gap)
        .map_err(|e| ("mmap", e.to_string()))?;
    let uffd = UffdBuilder::new()
        .non_blocking(!args.blocking_uffd)
        .close_on_exec(true)
        .user_mode_only(false)
        .features(Features::EVENT_REMOVE)
        .create()
        .map_err(|e| ("uffd", e.to_string()))?;
    let regions: Vec<HandshakeRegion> = memory
        .regions()
        .iter()
        .map(|r| HandshakeRegion {
            base_host_virt_addr: r.addr as u64,
            size: r.size,
            offset: r.offset,
            page_size: args.page_size,
        })
        .collect();
    for r in &regions {
        let range = Range::new(r.base_host_virt_addr, r.size, page_size)
            .map_err(|e| ("register", e.to_string()))?;
        uffd.register(range, RegisterMode::MISSING)
            .map_err(|e| ("register", format!("{range}: {e}")))?;
    }
    let kvm = (args.kvm_vcpus > 0)
        .then(|| KvmGuest::new(&memory, args.kvm_vcpus))
        .transpose()
        .map_err(|e| ("kvm", e))?;
    let declared = if args.hide_last_region && regions.len() > 1 {
        &regions[..regions.len() - 1]
    } else {
        &regions[..]
    };
    let handshake = handshake_json(declared, args.payload);
    let socket = UnixStream::connect(&args.socket)
        .map_err(|e| ("connect", format!("{}: {e}", args.socket.display())))?;
    send_with_fd(&socket, handshake.as_bytes(), &uffd).map_err(|e| ("send", e.to_string()))?;
    let socket = args.keeps_socket().then_some(socket);
    Ok(Vmm {
        guest: Arc::new(Guest { memory, kvm }),
        info: ReadyInfo {
            pid: std::process::id(),
            regions,
            handshake,
            uffd_fd: uffd.as_raw_fd(),
            kvm_vcpus: args.kvm_vcpus,
        },
        _uffd: uffd,
        socket: Mutex::new(socket),
    })
}

/// Sends `data` with `fd` attached to its first byte (SCM_RIGHTS), then the rest if the
/// kernel took only part.
fn send_with_fd(socket: &UnixStream, data: &[u8], fd: &impl AsFd) -> std::io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    let mut rest = &data[sent..];
    while !rest.is_empty() {
        let n = rustix::net::send(socket, rest, SendFlags::NOSIGNAL)?;
        rest = &rest[n..];
    }
    Ok(())
}

impl Vmm {
    fn serve(self) {
        let vmm = Arc::new(self);
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let request: Request = match serde_json::from_str(&line) {
                Ok(request) => request,
                Err(e) => {
                    let id = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("id")?.as_u64())
                        .unwrap_or(0);
                    let error = RemoteError::new(RemoteErrorKind::BadRequest, e.to_string());
                    respond(id, Err(error));
                    continue;
                }
            };
            tracing::debug!(?request, "request");
            match request.command {
                Command::Exit => {
                    respond(request.id, Ok(Reply::Exiting));
                    std::process::exit(0);
                }
                Command::CloseSocket => {
                    drop(vmm.socket.lock().expect("socket").take());
                    respond(request.id, Ok(Reply::SocketClosed));
                }
                command => {
                    let guest = Arc::clone(&vmm.guest);
                    let id = request.id;
                    let spawned = std::thread::Builder::new()
                        .name(format!("req-{id}"))
                        .spawn(move || respond(id, execute_caught(&guest, command)));
                    if let Err(e) = spawned {
                        let error = RemoteError::new(
                            RemoteErrorKind::System,
                            format!("starting a request thread: {e}"),
                        );
                        respond(id, Err(error));
                    }
                }
            }
        }
        tracing::info!("end of requests; exiting");
    }
}

/// Runs a memory command; a panic (a bug) becomes a typed error rather than a lost answer.
fn execute_caught(guest: &Guest, command: Command) -> Result<Reply, RemoteError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ops::execute(guest, command)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(RemoteError::new(RemoteErrorKind::Panicked, what.to_owned()))
    })
}

fn respond(id: u64, result: Result<Reply, RemoteError>) {
    print_line(&Response { id, result });
}

/// Prints one JSON line on stdout, atomically with respect to other threads.
fn print_line(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).expect("control types serialise");
    let mut out = std::io::stdout().lock();
    // A driver that went away cannot be told anything; the test VMM exits at end of input.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
