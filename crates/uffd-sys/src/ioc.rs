//! The generic `_IOC` request-number encoding of `asm-generic/ioctl.h` (x86_64, arm64, riscv).
//!
//! The request numbers in this crate are written out as literals; these functions exist so the
//! literals can be checked at compile time against the encoding the kernel applies.

/// Direction bit: userspace writes the argument (the kernel reads it).
pub const IOC_WRITE: u32 = 1;
/// Direction bit: userspace reads the argument (the kernel writes it).
pub const IOC_READ: u32 = 2;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEMASK: usize = (1 << 14) - 1;

/// `_IOC(dir, type, nr, size)`. Panics at compile time if `size` does not fit in 14 bits.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size <= IOC_SIZEMASK, "ioctl argument too large for _IOC");
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IO(type, nr)`: no argument.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(0, ty, nr, 0)
}

/// `_IOR(type, nr, T)` with `size_of::<T>() == size`.
pub const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}

/// `_IOWR(type, nr, T)` with `size_of::<T>() == size`.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size)
}
