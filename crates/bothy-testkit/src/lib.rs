//! bothy-testkit
