//! bothy-agent
