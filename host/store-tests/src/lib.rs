//! # settle-store-tests
//!
//! The behaviour every store backend must show, written once against the
//! store traits of `settle-types` and run for each backend.
