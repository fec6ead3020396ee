//! The test VMM's workload: each command run against guest memory, touches and hashes from
//! several threads released together.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::control::{
    BLOCK, Command, MAX_INLINE_BYTES, RemoteError, RemoteErrorKind, Reply, Split, Touch,
    TouchAccess, TouchReport, WriteData, from_hex, to_hex,
};
use crate::kvm::KvmGuest;
use crate::memory::GuestMemory;
use crate::pattern::touch_word;

/// Most threads one command may start.
pub(crate) const MAX_THREADS: u32 = 1024;

/// What the commands act on: guest memory, and the KVM guest over it if there is one.
#[derive(Debug)]
pub(crate) struct Guest {
    /// The guest memory.
    pub(crate) memory: GuestMemory,
    /// The KVM guest.
    pub(crate) kvm: Option<KvmGuest>,
}

/// Runs a memory command (not `CloseSocket` or `Exit`, which the serving loop handles).
pub(crate) fn execute(guest: &Guest, command: Command) -> Result<Reply, RemoteError> {
    let mem = &guest.memory;
    match command {
        Command::KvmTouch {
            offset,
            len,
            vcpus,
            write,
        } => {
            let kvm = guest.kvm.as_ref().ok_or_else(|| {
                RemoteError::new(
                    RemoteErrorKind::BadRequest,
                    "the test VMM was started without KVM vCPUs (--kvm-vcpus)",
                )
            })?;
            mem.check(offset, len, BLOCK)?;
            kvm.touch(offset, len, vcpus, write).map(Reply::KvmTouched)
        }
        Command::Touch(touch) => self::touch(mem, touch).map(Reply::Touched),
        Command::Hash {
            offset,
            len,
            threads,
        } => hash(mem, offset, len, threads).map(Reply::Hashes),
        Command::SyscallHash { offset, len } => {
            mem.check(offset, len, BLOCK)?;
            let hashes = mem
                .hash_via_kernel(offset, len)
                .map_err(|e| system("write(2) of guest memory into a pipe", e))?;
            Ok(Reply::Hashes(hashes))
        }
        Command::Read { offset, len } => {
            inline_limit(len)?;
            mem.check(offset, len, 1)?;
            let mut buf = vec![0; len as usize];
            mem.read(offset, &mut buf);
            Ok(Reply::Bytes(to_hex(&buf)))
        }
        Command::Write { offset, data } => write(mem, offset, data).map(Reply::Written),
        Command::MadviseDontneed { offset, len } => {
            mem.check(offset, len, mem.page_size())?;
            let start = Instant::now();
            mem.madvise_dontneed(offset, len)
                .map_err(|e| system("madvise(MADV_DONTNEED)", e))?;
            Ok(Reply::Madvised {
                elapsed_ns: elapsed_ns(start),
            })
        }
        Command::Pagemap { offset, len } => {
            mem.check(offset, len, BLOCK)?;
            let flags = mem
                .pagemap(offset, len)
                .map_err(|e| system("reading /proc/self/pagemap", e))?;
            Ok(Reply::Pagemap(flags))
        }
        Command::CloseSocket | Command::Exit => Err(RemoteError::new(
            RemoteErrorKind::BadRequest,
            "not a memory command",
        )),
    }
}

fn inline_limit(len: u64) -> Result<(), RemoteError> {
    if len > MAX_INLINE_BYTES {
        return Err(RemoteError::new(
            RemoteErrorKind::TooLarge,
            format!("{len} bytes inline; at most {MAX_INLINE_BYTES}"),
        ));
    }
    Ok(())
}

fn system(what: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(RemoteErrorKind::System, format!("{what}: {e}"))
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn write(mem: &GuestMemory, offset: u64, data: WriteData) -> Result<u64, RemoteError> {
    match data {
        WriteData::Hex(hex) => {
            inline_limit(hex.len() as u64 / 2)?;
            let bytes = from_hex(&hex).ok_or_else(|| {
                RemoteError::new(RemoteErrorKind::BadRequest, "write data is not hex")
            })?;
            mem.check(offset, bytes.len() as u64, 1)?;
            mem.write(offset, &bytes);
            Ok(bytes.len() as u64)
        }
        WriteData::Fill { byte, len } => {
            mem.check(offset, len, 1)?;
            mem.fill(offset, len, byte);
            Ok(len)
        }
    }
}

fn thread_count(threads: u32) -> Result<u64, RemoteError> {
    if threads > MAX_THREADS {
        return Err(RemoteError::new(
            RemoteErrorKind::TooLarge,
            format!("{threads} threads; at most {MAX_THREADS}"),
        ));
    }
    Ok(u64::from(threads.max(1)))
}

/// The items (pages or blocks, numbered from 0) thread `i` of `n` handles out of `count`.
fn share(split: Split, i: u64, n: u64, count: u64) -> Box<dyn Iterator<Item = u64>> {
    match split {
        Split::Chunks => Box::new(i * count / n..(i + 1) * count / n),
        Split::Interleaved => Box::new((i..count).step_by(n as usize)),
        Split::Shared => Box::new(0..count),
    }
}

fn touch(mem: &GuestMemory, t: Touch) -> Result<TouchReport, RemoteError> {
    let page = mem.page_size();
    mem.check(t.offset, t.len, page)?;
    let n = thread_count(t.threads)?;
    let pages = t.len / page;
    let (results, elapsed_ns) = together(n, |i| {
        let mut sum = 0u64;
        let mut accesses = 0;
        for p in share(t.split, i, n, pages) {
            let offset = t.offset + p * page;
            let word = match t.access {
                TouchAccess::Read => mem.load_word(offset),
                TouchAccess::Write { seed } => {
                    let word = touch_word(seed, offset / page);
                    mem.store_word(offset, word);
                    word
                }
            };
            sum = sum.wrapping_add(word);
            accesses += 1;
        }
        (accesses, sum)
    })?;
    Ok(TouchReport {
        accesses: results.iter().map(|r| r.0).sum(),
        elapsed_ns,
        checksum: results.iter().fold(0, |s, r| s.wrapping_add(r.1)),
    })
}

fn hash(mem: &GuestMemory, offset: u64, len: u64, threads: u32) -> Result<Vec<u64>, RemoteError> {
    mem.check(offset, len, BLOCK)?;
    let n = thread_count(threads)?;
    let blocks = len / BLOCK;
    let (parts, _) = together(n, |i| {
        share(Split::Chunks, i, n, blocks)
            .map(|b| mem.hash_block(offset + b * BLOCK))
            .collect::<Vec<_>>()
    })?;
    Ok(parts.concat())
}

/// Runs `work(i)` on `n` threads released together once all exist; their results in order,
/// and the time from the release until the last one finished.
fn together<T: Send>(n: u64, work: impl Fn(u64) -> T + Sync) -> Result<(Vec<T>, u64), RemoteError> {
    // The gate: `Some(true)` go, `Some(false)` give up (a thread could not be started).
    let gate = (Mutex::new(None::<bool>), Condvar::new());
    let wait_gate = || {
        let (lock, cvar) = &gate;
        let guard = cvar
            .wait_while(lock.lock().expect("gate"), |g| g.is_none())
            .expect("gate");
        guard.expect("released")
    };
    let open_gate = |go: bool| {
        *gate.0.lock().expect("gate") = Some(go);
        gate.1.notify_all();
    };
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (work, wait_gate) = (&work, &wait_gate);
            let spawned = std::thread::Builder::new()
                .name(format!("work-{i}"))
                .spawn_scoped(scope, move || wait_gate().then(|| work(i)));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    open_gate(false);
                    return Err(system("starting a workload thread", e));
                }
            }
        }
        let start = Instant::now();
        open_gate(true);
        let mut results = Vec::with_capacity(n as usize);
        let mut panicked = false;
        for handle in handles {
            match handle.join() {
                Ok(result) => results.push(result.expect("the gate opened")),
                Err(_) => panicked = true,
            }
        }
        if panicked {
            return Err(RemoteError::new(
                RemoteErrorKind::Panicked,
                "a workload thread panicked (see the test VMM's stderr)",
            ));
        }
        Ok((results, elapsed_ns(start)))
    })
}
