//! Shared helpers of the integration tests: real GnuPG for keys and fixtures,
//! free loopback ports, child processes stopped by PID, and a local
//! pipeline set up in a temporary data directory.

pub mod counting_alloc;
pub mod dovecot;
pub mod faults;
pub mod fixtures;
pub mod gpg;
pub mod hostile;
#[cfg(feature = "aws")]
pub mod lambda_chain;
pub mod latency;
pub mod local;
#[cfg(feature = "aws")]
pub mod moto;
pub mod process;
pub mod readback;
pub mod soak;
pub mod sshd;
pub mod synth;
pub mod token_endpoint;

/// A free TCP port on 127.0.0.1 (the OS picks it; another process could take
/// it before use, which tests treat as a retryable start-up failure).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
