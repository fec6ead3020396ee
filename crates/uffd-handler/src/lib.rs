//! The userfaultfd page-fault handler engine (skeleton; filled by the engine issue).
