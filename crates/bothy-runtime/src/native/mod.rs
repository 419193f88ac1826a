//! The native runtime.
