#![no_std]
//! Raw userfaultfd ABI (in progress).
