#![doc = include_str!("../README.md")]

mod layout;

pub use layout::{GuestLayout, GuestRegion, LayoutError};
