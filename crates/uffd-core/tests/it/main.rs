//! The integration tests of uffd-core, in one test binary, against the real kernel: creation
//! and negotiation, registration, every range operation and the statuses it meets, events,
//! hugetlbfs, MINOR faults, MOVE, POISON, write protection and PAGEMAP_SCAN.
//!
//! Some tests re-execute this binary to run one test alone in a child process with a role
//! (`common::ChildProc`): a process that owns memory and exits, forks, crashes on a poisoned
//! page, drops its privileges, or unmaps memory it then names to the kernel.

mod common;
mod copy;
mod copy_status;
mod create;
mod events;
mod fork;
mod hugetlb;
mod minor;
mod move_pages;
mod pagemap;
mod poison;
mod range;
mod register;
mod wp;
mod zeropage_wake;
