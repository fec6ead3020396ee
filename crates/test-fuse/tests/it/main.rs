//! The test FUSE file system against the real kernel: reads pass through, and each kind of
//! injected fault reaches a reader through the kernel as the crate documents it.

mod passthrough;
