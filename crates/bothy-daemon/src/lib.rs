//! bothy-daemon
