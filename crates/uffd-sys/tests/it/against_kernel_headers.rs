//! Every number and layout of this crate, checked against `linux-raw-sys` (bindings generated
//! from the kernel's UAPI headers). `linux-raw-sys` lacks the request numbers added after 6.1
//! (MOVE, POISON, PAGEMAP_SCAN, USERFAULTFD_IOC_NEW); those are recomputed from its command
//! numbers and struct sizes. Its bindings also omit the mode bits written as 64-bit shifts;
//! the C probe checks those the installed headers have, and uffd-core's kernel tests exercise
//! the rest (CONTINUE_MODE_WP, POISON and MOVE modes) against the running kernel.

use core::mem::{align_of, offset_of, size_of};

use linux_raw_sys::general as k;
use linux_raw_sys::ioctl as kio;
use uffd_sys as u;

#[test]
fn request_numbers_match_kernel() {
    assert_eq!(u::UFFDIO_API, kio::UFFDIO_API);
    assert_eq!(u::UFFDIO_REGISTER, kio::UFFDIO_REGISTER);
    assert_eq!(u::UFFDIO_UNREGISTER, kio::UFFDIO_UNREGISTER);
    assert_eq!(u::UFFDIO_WAKE, kio::UFFDIO_WAKE);
    assert_eq!(u::UFFDIO_COPY, kio::UFFDIO_COPY);
    assert_eq!(u::UFFDIO_ZEROPAGE, kio::UFFDIO_ZEROPAGE);
    assert_eq!(u::UFFDIO_WRITEPROTECT, kio::UFFDIO_WRITEPROTECT);
    assert_eq!(u::UFFDIO_CONTINUE, kio::UFFDIO_CONTINUE);
    let wr = u::IOC_READ | u::IOC_WRITE;
    let ty = k::USERFAULTFD_IOC as u8;
    assert_eq!(
        u::UFFDIO_MOVE,
        u::ioc(wr, ty, k::_UFFDIO_MOVE as u8, size_of::<k::uffdio_move>())
    );
    assert_eq!(
        u::UFFDIO_POISON,
        u::ioc(
            wr,
            ty,
            k::_UFFDIO_POISON as u8,
            size_of::<k::uffdio_poison>()
        )
    );
    assert_eq!(u::USERFAULTFD_IOC_NEW, u::ioc(0, ty, 0, 0));
    assert_eq!(
        u::PAGEMAP_SCAN,
        u::ioc(wr, b'f', 16, size_of::<k::pm_scan_arg>())
    );
}

#[test]
fn command_numbers_match_kernel() {
    let pairs = [
        (u::_UFFDIO_REGISTER, k::_UFFDIO_REGISTER),
        (u::_UFFDIO_UNREGISTER, k::_UFFDIO_UNREGISTER),
        (u::_UFFDIO_WAKE, k::_UFFDIO_WAKE),
        (u::_UFFDIO_COPY, k::_UFFDIO_COPY),
        (u::_UFFDIO_ZEROPAGE, k::_UFFDIO_ZEROPAGE),
        (u::_UFFDIO_MOVE, k::_UFFDIO_MOVE),
        (u::_UFFDIO_WRITEPROTECT, k::_UFFDIO_WRITEPROTECT),
        (u::_UFFDIO_CONTINUE, k::_UFFDIO_CONTINUE),
        (u::_UFFDIO_POISON, k::_UFFDIO_POISON),
        (u::_UFFDIO_API, k::_UFFDIO_API),
    ];
    for (ours, kernel) in pairs {
        assert_eq!(ours, kernel);
    }
    assert_eq!(u::UFFD_API, u64::from(k::UFFD_API));
    assert_eq!(u::UFFDIO, k::UFFDIO as u8);
    assert_eq!(u::USERFAULTFD_IOC, k::USERFAULTFD_IOC as u8);
    assert_eq!(u::UFFD_USER_MODE_ONLY, k::UFFD_USER_MODE_ONLY);
}

#[test]
fn events_flags_modes_match_kernel() {
    let events = [
        (u::UFFD_EVENT_PAGEFAULT, k::UFFD_EVENT_PAGEFAULT),
        (u::UFFD_EVENT_FORK, k::UFFD_EVENT_FORK),
        (u::UFFD_EVENT_REMAP, k::UFFD_EVENT_REMAP),
        (u::UFFD_EVENT_REMOVE, k::UFFD_EVENT_REMOVE),
        (u::UFFD_EVENT_UNMAP, k::UFFD_EVENT_UNMAP),
    ];
    for (ours, kernel) in events {
        assert_eq!(u32::from(ours), kernel);
    }
    let bits: [(u64, u32); 10] = [
        (u::UFFD_PAGEFAULT_FLAG_WRITE, k::UFFD_PAGEFAULT_FLAG_WRITE),
        (u::UFFD_PAGEFAULT_FLAG_WP, k::UFFD_PAGEFAULT_FLAG_WP),
        (u::UFFD_PAGEFAULT_FLAG_MINOR, k::UFFD_PAGEFAULT_FLAG_MINOR),
        (
            u::UFFDIO_REGISTER_MODE_MISSING,
            k::UFFDIO_REGISTER_MODE_MISSING,
        ),
        (u::UFFDIO_REGISTER_MODE_WP, k::UFFDIO_REGISTER_MODE_WP),
        (u::UFFDIO_REGISTER_MODE_MINOR, k::UFFDIO_REGISTER_MODE_MINOR),
        (u::UFFDIO_COPY_MODE_DONTWAKE, k::UFFDIO_COPY_MODE_DONTWAKE),
        (u::UFFDIO_COPY_MODE_WP, k::UFFDIO_COPY_MODE_WP),
        (
            u::UFFDIO_ZEROPAGE_MODE_DONTWAKE,
            k::UFFDIO_ZEROPAGE_MODE_DONTWAKE,
        ),
        (u::PM_SCAN_WP_MATCHING, k::PM_SCAN_WP_MATCHING),
    ];
    for (ours, kernel) in bits {
        assert_eq!(ours, u64::from(kernel));
    }
    assert_eq!(
        u::PM_SCAN_CHECK_WPASYNC,
        u64::from(k::PM_SCAN_CHECK_WPASYNC)
    );
}

#[test]
fn features_match_kernel() {
    let features: [(u64, u32); 17] = [
        (
            u::UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            k::UFFD_FEATURE_PAGEFAULT_FLAG_WP,
        ),
        (u::UFFD_FEATURE_EVENT_FORK, k::UFFD_FEATURE_EVENT_FORK),
        (u::UFFD_FEATURE_EVENT_REMAP, k::UFFD_FEATURE_EVENT_REMAP),
        (u::UFFD_FEATURE_EVENT_REMOVE, k::UFFD_FEATURE_EVENT_REMOVE),
        (
            u::UFFD_FEATURE_MISSING_HUGETLBFS,
            k::UFFD_FEATURE_MISSING_HUGETLBFS,
        ),
        (u::UFFD_FEATURE_MISSING_SHMEM, k::UFFD_FEATURE_MISSING_SHMEM),
        (u::UFFD_FEATURE_EVENT_UNMAP, k::UFFD_FEATURE_EVENT_UNMAP),
        (u::UFFD_FEATURE_SIGBUS, k::UFFD_FEATURE_SIGBUS),
        (u::UFFD_FEATURE_THREAD_ID, k::UFFD_FEATURE_THREAD_ID),
        (
            u::UFFD_FEATURE_MINOR_HUGETLBFS,
            k::UFFD_FEATURE_MINOR_HUGETLBFS,
        ),
        (u::UFFD_FEATURE_MINOR_SHMEM, k::UFFD_FEATURE_MINOR_SHMEM),
        (u::UFFD_FEATURE_EXACT_ADDRESS, k::UFFD_FEATURE_EXACT_ADDRESS),
        (
            u::UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            k::UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
        ),
        (
            u::UFFD_FEATURE_WP_UNPOPULATED,
            k::UFFD_FEATURE_WP_UNPOPULATED,
        ),
        (u::UFFD_FEATURE_POISON, k::UFFD_FEATURE_POISON),
        (u::UFFD_FEATURE_WP_ASYNC, k::UFFD_FEATURE_WP_ASYNC),
        (u::UFFD_FEATURE_MOVE, k::UFFD_FEATURE_MOVE),
    ];
    let mut all = 0;
    for (ours, kernel) in features {
        assert_eq!(ours, u64::from(kernel));
        assert_eq!(all & ours, 0, "feature bits collide");
        all |= ours;
    }
    assert_eq!(all, u::UFFD_API_FEATURES);
}

#[test]
fn pagemap_categories_match_kernel() {
    let cats: [(u64, u32); 9] = [
        (u::PAGE_IS_WPALLOWED, k::PAGE_IS_WPALLOWED),
        (u::PAGE_IS_WRITTEN, k::PAGE_IS_WRITTEN),
        (u::PAGE_IS_FILE, k::PAGE_IS_FILE),
        (u::PAGE_IS_PRESENT, k::PAGE_IS_PRESENT),
        (u::PAGE_IS_SWAPPED, k::PAGE_IS_SWAPPED),
        (u::PAGE_IS_PFNZERO, k::PAGE_IS_PFNZERO),
        (u::PAGE_IS_HUGE, k::PAGE_IS_HUGE),
        (u::PAGE_IS_SOFT_DIRTY, k::PAGE_IS_SOFT_DIRTY),
        (u::PAGE_IS_GUARD, k::PAGE_IS_GUARD),
    ];
    for (ours, kernel) in cats {
        assert_eq!(ours, u64::from(kernel));
    }
}

macro_rules! same_layout {
    ($ours:ty, $kernel:ty, [$($field:ident $(= $kfield:ident)?),*]) => {{
        assert_eq!(size_of::<$ours>(), size_of::<$kernel>(), stringify!($ours));
        $(
            assert_eq!(
                offset_of!($ours, $field),
                same_layout!(@k $kernel, $field $(, $kfield)?),
                concat!(stringify!($ours), ".", stringify!($field))
            );
        )*
    }};
    (@k $kernel:ty, $field:ident) => { offset_of!($kernel, $field) };
    (@k $kernel:ty, $field:ident, $kfield:ident) => { offset_of!($kernel, $kfield) };
}

#[test]
fn struct_layouts_match_kernel() {
    same_layout!(u::uffdio_api, k::uffdio_api, [api, features, ioctls]);
    same_layout!(u::uffdio_range, k::uffdio_range, [start, len]);
    same_layout!(
        u::uffdio_register,
        k::uffdio_register,
        [range, mode, ioctls]
    );
    same_layout!(u::uffdio_copy, k::uffdio_copy, [dst, src, len, mode, copy]);
    same_layout!(
        u::uffdio_zeropage,
        k::uffdio_zeropage,
        [range, mode, zeropage]
    );
    same_layout!(
        u::uffdio_writeprotect,
        k::uffdio_writeprotect,
        [range, mode]
    );
    same_layout!(
        u::uffdio_continue,
        k::uffdio_continue,
        [range, mode, mapped]
    );
    same_layout!(u::uffdio_poison, k::uffdio_poison, [range, mode, updated]);
    same_layout!(
        u::uffdio_move,
        k::uffdio_move,
        [dst, src, len, mode, move_ = move_]
    );
    same_layout!(u::page_region, k::page_region, [start, end, categories]);
    same_layout!(
        u::pm_scan_arg,
        k::pm_scan_arg,
        [
            size,
            flags,
            start,
            end,
            walk_end,
            vec,
            vec_len,
            max_pages,
            category_inverted,
            category_mask,
            category_anyof_mask,
            return_mask
        ]
    );
    same_layout!(
        u::uffd_msg,
        k::uffd_msg,
        [event, reserved1, reserved2, reserved3, arg]
    );
    assert_eq!(
        size_of::<u::uffd_msg_arg>(),
        size_of::<k::uffd_msg__bindgen_ty_1>()
    );
    same_layout!(
        u::uffd_msg_pagefault,
        k::uffd_msg__bindgen_ty_1__bindgen_ty_1,
        [flags, address, feat]
    );
    same_layout!(
        u::uffd_msg_remap,
        k::uffd_msg__bindgen_ty_1__bindgen_ty_3,
        [from, to, len]
    );
    same_layout!(
        u::uffd_msg_remove,
        k::uffd_msg__bindgen_ty_1__bindgen_ty_4,
        [start, end]
    );
    same_layout!(
        u::uffd_msg_fork,
        k::uffd_msg__bindgen_ty_1__bindgen_ty_2,
        [ufd]
    );
    // Ours is deliberately aligned to 8 (see its docs); never less than the kernel's.
    assert!(align_of::<u::uffd_msg>() >= align_of::<k::uffd_msg>());
}
