//! Free loopback ports for ports the spec leaves at `0` or absent.
//!
//! Each port is found by binding `127.0.0.1:0`; the sockets stay open until the allocator is
//! dropped, so one pipeline never gets the same port twice. Between the drop and the child's
//! own bind another program could take the port; the child then fails to bind and is
//! restarted like any failing component.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

pub struct Allocator {
    taken: BTreeSet<u16>,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Allocator {
    /// `taken`: ports that must not be handed out (fixed ports of this pipeline, ports other
    /// pipelines use).
    pub fn new(taken: impl IntoIterator<Item = u16>) -> Self {
        Self {
            taken: taken.into_iter().collect(),
            tcp: Vec::new(),
            udp: Vec::new(),
        }
    }

    /// A free port for `protocol` (`tcp` or `udp`), distinct from every other it returned.
    pub fn allocate(&mut self, protocol: &str) -> io::Result<u16> {
        for _ in 0..64 {
            let port = if protocol == "udp" {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
                let port = s.local_addr()?.port();
                self.udp.push(s);
                port
            } else {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
                let port = l.local_addr()?.port();
                self.tcp.push(l);
                port
            };
            if self.taken.insert(port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free loopback port found",
        ))
    }
}
