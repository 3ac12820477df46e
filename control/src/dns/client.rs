//! A minimal DNS client for A queries over UDP (tests, demo, benchmarks):
//! what `dig +short NAME` shows, without dig.
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// The answer to an A query: the response code and the addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AAnswer {
    pub rcode: ResponseCode,
    pub addresses: Vec<Ipv4Addr>,
}

/// Asks `server` for the A records of `name` (one UDP exchange, 2 s timeout).
pub fn query_a(server: SocketAddr, name: &str) -> std::io::Result<AAnswer> {
    let name = Name::from_ascii(name).map_err(std::io::Error::other)?;
    let mut q = Message::new();
    let id = (std::process::id() as u16) ^ 0x5a5a;
    q.set_id(id).set_recursion_desired(true);
    q.add_query(Query::query(name, RecordType::A));
    let bytes = q.to_vec().map_err(std::io::Error::other)?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send_to(&bytes, server)?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf)?;
    let reply = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
    if reply.id() != id {
        return Err(std::io::Error::other("DNS answer with another id"));
    }
    let addresses = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    Ok(AAnswer {
        rcode: reply.response_code(),
        addresses,
    })
}
