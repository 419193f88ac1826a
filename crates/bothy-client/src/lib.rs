//! bothy-client
