//! Range-tracked per-page state for guest memory (skeleton; filled by issue 3).
