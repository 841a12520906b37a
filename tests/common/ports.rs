//! Loopback ports for peers. Picking a free port by binding and dropping a socket races with
//! every other socket on the machine (another test's listener, any outgoing connection's
//! ephemeral port). So, in order of preference:
//!
//! 1. the server binds port 0 and tells us its address (the daemon logs it, see
//!    [`super::process`]; Prism prints it; an in-process listener is passed along bound);
//! 2. a [`Reserved`] port, held bound (never listening) until a peer that binds with
//!    `SO_REUSEPORT` listens on it too (our SMTP sink, Dovecot with `reuse_port = yes`): no
//!    other socket can take it in between, and a connection to it before the peer listens is
//!    refused, as to a port nobody uses;
//! 3. [`free_port`], only for peers that can do neither (Postfix, slapd).

use std::net::{Ipv4Addr, SocketAddr};

/// A loopback port held by a bound socket that never listens (see the module doc).
pub struct Reserved {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl Reserved {
    /// A port a peer will bind with `SO_REUSEPORT`; held until this is dropped.
    pub fn new() -> Self {
        Self::bind(true)
    }

    /// A port nobody listens on while this lives (a connection to it is refused), which no
    /// peer can take either.
    pub fn closed() -> Self {
        Self::bind(false)
    }

    fn bind(reuse_port: bool) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if reuse_port {
            socket.set_reuseport(true).expect("SO_REUSEPORT");
        }
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind a loopback port");
        let port = socket.local_addr().expect("bound address").port();
        Reserved {
            _socket: socket,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Self::new()
    }
}

/// A port free a moment ago (bound and dropped): racy, for peers that can neither bind port
/// 0 and report it nor share a [`Reserved`] port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
