#![no_std]
#![doc = include_str!("../README.md")]
#![allow(non_camel_case_types)]

mod ioc;
mod pagemap;
mod uffd;

pub use ioc::{IOC_READ, IOC_WRITE, io, ioc, ior, iowr};
pub use pagemap::*;
pub use uffd::*;
