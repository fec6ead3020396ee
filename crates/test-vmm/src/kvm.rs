//! A KVM guest over the test VMM's guest memory: each region is a memory slot (guest-physical
//! address = image offset), and vCPUs run a tiny program that reads (and optionally writes)
//! every 4 KiB block of a range, so the faults reach the handler through KVM as they do under
//! Firecracker. The program runs in 64-bit mode at CPL 3 over an identity map of 2 MiB pages
//! (user mode runs natively even under software virtualisation such as PVM, where ring-0 guest
//! code is emulated). Per-block sums go to a results array in a slot of the test VMM's own (not
//! registered with the uffd); the vCPU reports completion by writing to an address no slot
//! backs (an MMIO exit).

use std::time::Instant;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use parking_lot::Mutex;
use rustix::mm::{MapFlags, ProtFlags};

use crate::control::{BLOCK, KvmReport, RemoteError, RemoteErrorKind};
use crate::memory::GuestMemory;

const GIB: u64 = 1 << 30;
const HUGE: u64 = 2 << 20;

/// Where KVM keeps the TSS on Intel (three pages); above every slot.
const TSS_GPA: usize = 0xfffb_d000;

/// Page-table entry flags: present, writable, user; `PS` makes a 2 MiB page.
const PTE: u64 = 0x7;
const PS: u64 = 0x80;

/// Offsets in the auxiliary slot: the program, then PML4, PDPT, page directories, results.
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PDS: u64 = 0x3000;

/// The guest program (`as --64`). In: rsi = GPA of the first block, rcx = blocks, ebx = seed,
/// ebp = write flag, rdi = GPA of the results array (one u32 per image block), r9 = an
/// unbacked GPA to write when done.
const PROGRAM: &[u8] = &[
    0x48, 0x89, 0xf0, //             next: mov  %rsi,%rax
    0x48, 0xc1, 0xe8, 0x0c, //             shr  $12,%rax          (block index)
    0x85, 0xed, //                         test %ebp,%ebp
    0x74, 0x0b, //                         je   sum
    0x01, 0xd8, //                         add  %ebx,%eax         (seed + block index)
    0x89, 0x06, //                         mov  %eax,(%rsi)       (the block's first word)
    0x48, 0x89, 0xf0, //                   mov  %rsi,%rax
    0x48, 0xc1, 0xe8, 0x0c, //             shr  $12,%rax
    0x48, 0x8d, 0x14, 0x87, //       sum:  lea  (%rdi,%rax,4),%rdx (this block's result)
    0x31, 0xc0, //                         xor  %eax,%eax
    0x41, 0xb8, 0x00, 0x04, 0x00, 0x00, // mov  $1024,%r8d        (words per block)
    0x03, 0x06, //                   word: add  (%rsi),%eax
    0x48, 0x83, 0xc6, 0x04, //             add  $4,%rsi
    0x41, 0xff, 0xc8, //                   dec  %r8d
    0x75, 0xf5, //                         jne  word
    0x89, 0x02, //                         mov  %eax,(%rdx)
    0x48, 0xff, 0xc9, //                   dec  %rcx
    0x75, 0xcc, //                         jne  next
    0x41, 0x89, 0x01, //                   mov  %eax,(%r9)        (done: an MMIO exit)
    0xf4, //                               hlt                    (never reached)
];

/// The VM, its vCPUs, and the auxiliary memory (program, page tables, results).
pub(crate) struct KvmGuest {
    _kvm: Kvm,
    _vm: VmFd,
    vcpus: Vec<Mutex<VcpuFd>>,
    aux_gpa: u64,
    results_gpa: u64,
    done_gpa: u64,
    /// Host address of the results array.
    results: usize,
    blocks: u64,
}

impl std::fmt::Debug for KvmGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmGuest")
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

impl KvmGuest {
    /// A VM whose memory slots are `mem`'s regions, with `vcpus` vCPUs.
    pub(crate) fn new(mem: &GuestMemory, vcpus: u32) -> Result<Self, String> {
        let image: u64 = mem.regions().iter().map(|r| r.size).sum();
        let blocks = image / BLOCK;
        // The auxiliary slot starts at the next GiB; the identity map covers it and the
        // unbacked page after it.
        let aux_gpa = image.next_multiple_of(GIB);
        let gibs = aux_gpa / GIB + 1;
        if gibs > 512 {
            return Err(format!(
                "a {image:#x}-byte image is too large for the KVM guest"
            ));
        }
        let results_off = PDS + gibs * BLOCK;
        let aux_len = results_off + (blocks * 4).next_multiple_of(BLOCK);
        let done_gpa = aux_gpa + aux_len.next_multiple_of(HUGE);
        if done_gpa + HUGE > aux_gpa + GIB {
            return Err(format!("the results of a {image:#x}-byte image do not fit"));
        }
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        vm.set_tss_address(TSS_GPA)
            .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
        let aux = Aux::map(usize::try_from(aux_len).map_err(|e| e.to_string())?)?;
        aux.write(0, PROGRAM);
        aux.write_u64(PML4, (aux_gpa + PDPT) | PTE);
        for g in 0..gibs {
            aux.write_u64(PDPT + 8 * g, (aux_gpa + PDS + g * BLOCK) | PTE);
            for i in 0..512 {
                aux.write_u64(PDS + g * BLOCK + 8 * i, (g * GIB + i * HUGE) | PTE | PS);
            }
        }
        let mut slots: Vec<(u64, u64, usize)> = mem
            .regions()
            .iter()
            .map(|r| (r.offset, r.size, r.addr))
            .collect();
        slots.push((aux_gpa, aux_len, aux.addr));
        for (slot, (gpa, size, addr)) in slots.into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: u32::try_from(slot).map_err(|e| e.to_string())?,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: addr as u64,
            };
            // SAFETY: the host range is a live read-write mapping of this process that is
            // never unmapped (guest memory and the auxiliary mapping live as long as the
            // process), and the slots do not overlap in guest-physical space.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION slot {slot}: {e}"))?;
        }
        let vcpus = (0..u64::from(vcpus.max(1)))
            .map(|id| {
                let vcpu = vm
                    .create_vcpu(id)
                    .map_err(|e| format!("KVM_CREATE_VCPU {id}: {e}"))?;
                long_mode_user(&vcpu, aux_gpa + PML4)
                    .map_err(|e| format!("vCPU {id} special registers: {e}"))?;
                Ok(Mutex::new(vcpu))
            })
            .collect::<Result<_, String>>()?;
        Ok(KvmGuest {
            _kvm: kvm,
            _vm: vm,
            vcpus,
            aux_gpa,
            results_gpa: aux_gpa + results_off,
            done_gpa,
            results: aux.addr + results_off as usize,
            blocks,
        })
    }

    /// Runs the program over `[offset, offset + len)` (whole blocks) on `vcpus` vCPUs, each on
    /// a contiguous chunk. Concurrent touches must cover disjoint ranges (they share the
    /// results array).
    pub(crate) fn touch(
        &self,
        offset: u64,
        len: u64,
        vcpus: u32,
        write: Option<u32>,
    ) -> Result<KvmReport, RemoteError> {
        let n = u64::from(vcpus.max(1));
        if n > self.vcpus.len() as u64 {
            return Err(RemoteError::new(
                RemoteErrorKind::TooLarge,
                format!("{n} vCPUs asked, the guest has {}", self.vcpus.len()),
            ));
        }
        let (first, blocks) = (offset / BLOCK, len / BLOCK);
        assert!(first + blocks <= self.blocks, "checked by the caller");
        let start = Instant::now();
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..n)
                .map(|i| {
                    let (from, to) = (first + i * blocks / n, first + (i + 1) * blocks / n);
                    scope.spawn(move || self.run(i as usize, from, to - from, write))
                })
                .collect();
            runs.into_iter().try_for_each(|r| {
                r.join().unwrap_or_else(|_| {
                    Err(RemoteError::new(
                        RemoteErrorKind::Panicked,
                        "a vCPU thread panicked",
                    ))
                })
            })
        })?;
        let elapsed_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let sums = (first..first + blocks)
            .map(|b| {
                let ptr = std::ptr::with_exposed_provenance::<u32>(self.results + b as usize * 4);
                // SAFETY: entry `b` < `self.blocks` lies inside the results part of the live
                // auxiliary mapping; the guest wrote it before its vCPU exited.
                u32::from_le(unsafe { ptr.read_volatile() })
            })
            .collect();
        Ok(KvmReport { sums, elapsed_ns })
    }

    /// One vCPU over `blocks` blocks from block `first`.
    fn run(
        &self,
        vcpu: usize,
        first: u64,
        blocks: u64,
        write: Option<u32>,
    ) -> Result<(), RemoteError> {
        if blocks == 0 {
            return Ok(());
        }
        let error = |what: String| {
            RemoteError::new(RemoteErrorKind::System, format!("vCPU {vcpu}: {what}"))
        };
        let mut fd = self.vcpus[vcpu].lock();
        let mut regs = fd
            .get_regs()
            .map_err(|e| error(format!("KVM_GET_REGS: {e}")))?;
        regs.rip = self.aux_gpa;
        regs.rflags = 2;
        regs.rsi = first * BLOCK;
        regs.rcx = blocks;
        regs.rbx = u64::from(write.unwrap_or(0));
        regs.rbp = u64::from(write.is_some());
        regs.rdi = self.results_gpa;
        regs.r9 = self.done_gpa;
        fd.set_regs(&regs)
            .map_err(|e| error(format!("KVM_SET_REGS: {e}")))?;
        loop {
            let exit = match fd.run() {
                Ok(VcpuExit::MmioWrite(addr, _)) if addr == self.done_gpa => break,
                Ok(exit) => format!("{exit:?}"),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(error(format!("KVM_RUN: {e}"))),
            };
            let regs = fd.get_regs().map_err(|e| error(format!("{e}")))?;
            return Err(error(format!(
                "unexpected exit {exit} at rip {:#x}, rsi {:#x}",
                regs.rip, regs.rsi
            )));
        }
        // Complete the MMIO write without running the guest on, so the next run starts clean.
        fd.set_kvm_immediate_exit(1);
        let completed = match fd.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            other => Err(error(format!(
                "completing the done write: {:?}",
                other.map(|e| format!("{e:?}"))
            ))),
        };
        fd.set_kvm_immediate_exit(0);
        completed
    }
}

/// The auxiliary mapping (program, page tables, results), never unmapped.
struct Aux {
    addr: usize,
    len: usize,
}

impl Aux {
    fn map(len: usize) -> Result<Self, String> {
        // SAFETY: a fresh private mapping at an address the kernel picks; it overlaps nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| format!("mmap of the KVM guest's program and results: {e}"))?;
        Ok(Aux {
            addr: ptr.expose_provenance(),
            len,
        })
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        assert!(offset as usize + bytes.len() <= self.len);
        for (i, byte) in bytes.iter().enumerate() {
            let ptr = std::ptr::with_exposed_provenance_mut::<u8>(self.addr + offset as usize + i);
            // SAFETY: inside the live mapping (checked above); it is only accessed through raw
            // pointers, by this process and by the guest.
            unsafe { ptr.write_volatile(*byte) };
        }
    }

    fn write_u64(&self, offset: u64, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }
}

/// 64-bit mode at CPL 3, paging through the identity map at `cr3`, interrupts off.
fn long_mode_user(vcpu: &VcpuFd, cr3: u64) -> Result<(), kvm_ioctls::Error> {
    let mut sregs = vcpu.get_sregs()?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x1b,
        type_: 0xb,
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 0x23,
        type_: 0x3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr3 = cr3;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8001_0011; // PG, WP, ET, PE; caches on
    sregs.efer = 0x500; // LME, LMA
    vcpu.set_sregs(&sregs)
}
