//! Safe userfaultfd wrapper (in progress).
