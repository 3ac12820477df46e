//! Conntrack over netlink (ctnetlink), as much as the NFQUEUE path needs:
//! create an entry with DNAT (and SNAT) for a new TCP flow, look one entry
//! up, and read the update/destroy event stream.
//!
//! Encoding and decoding are pure functions over byte buffers (unit-tested);
//! [`CtSocket`] and [`CtEvents`] are the only effects. Every address and port
//! goes on the wire in network byte order, as ctnetlink expects; the
//! conversion happens in [`put_addr`] and [`put_port`] only.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
const NETLINK_NO_ENOBUFS: libc::c_int = 5;

// linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_NAT_DST: u16 = 13;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_PROTO: u16 = 3;
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;

/// `IPS_SEEN_REPLY` (linux/netfilter/nf_conntrack_common.h).
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPPROTO_TCP: u8 = 6;

/// TCP conntrack states (linux/netfilter/nf_conntrack_tcp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    /// FIN_WAIT .. TIME_WAIT: the flow was answered and is ending.
    Closing,
    /// CLOSE: reset (refused) or closed.
    Close,
    Other(u8),
}

impl TcpState {
    fn from_kernel(v: u8) -> Self {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4..=7 => TcpState::Closing,
            8 => TcpState::Close,
            v => TcpState::Other(v),
        }
    }
}

/// A TCP flow as the client sent it: the conntrack original tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What an event or lookup says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    pub flow: Flow,
    pub state: Option<TcpState>,
    pub seen_reply: bool,
    /// A destroy event (the entry is gone).
    pub destroyed: bool,
}

impl CtEntry {
    /// The backend answered the connect (SYN-ACK seen). A destroy event
    /// never counts: it may be the end of an older flow with the same tuple.
    pub fn answered(&self) -> bool {
        !self.destroyed
            && (matches!(
                self.state,
                Some(TcpState::SynRecv | TcpState::Established | TcpState::Closing)
            ) || (self.seen_reply && self.state.is_none()))
    }

    /// The connect failed: reset by the backend, or gone before any answer.
    pub fn failed(&self) -> bool {
        if self.destroyed {
            !self.seen_reply
        } else {
            self.state == Some(TcpState::Close)
        }
    }
}

/// ctnetlink failures.
#[derive(Debug, thiserror::Error)]
pub enum CtError {
    #[error("conntrack entry exists")]
    Exists,
    #[error("ctnetlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("ctnetlink {op}: malformed reply")]
    Malformed { op: &'static str },
}

// ---- pure encoding ---------------------------------------------------------

/// A netlink message under construction (attributes nest by offsets).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version 0, res_id 0
        buf.extend_from_slice(&[family, 0, 0, 0]);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn family_of(a: &SocketAddr) -> u8 {
    if a.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// Puts an address attribute: network byte order (the octets as they are).
fn put_addr(m: &mut Msg, v4: u16, v6: u16, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => m.attr(v4, &a.octets()),
        IpAddr::V6(a) => m.attr(v6, &a.octets()),
    }
}

/// Puts a port attribute in network byte order.
fn put_port(m: &mut Msg, kind: u16, port: u16) {
    m.attr(kind, &port.to_be_bytes());
}

fn put_tuple(m: &mut Msg, kind: u16, src: SocketAddr, dst: SocketAddr) {
    m.begin(kind);
    m.begin(CTA_TUPLE_IP);
    put_addr(m, CTA_IP_V4_SRC, CTA_IP_V6_SRC, src.ip());
    put_addr(m, CTA_IP_V4_DST, CTA_IP_V6_DST, dst.ip());
    m.end();
    m.begin(CTA_TUPLE_PROTO);
    m.attr(CTA_PROTO_NUM, &[IPPROTO_TCP]);
    put_port(m, CTA_PROTO_SRC_PORT, src.port());
    put_port(m, CTA_PROTO_DST_PORT, dst.port());
    m.end();
    m.end();
}

fn put_nat(m: &mut Msg, kind: u16, ip: IpAddr, port: Option<u16>) {
    m.begin(kind);
    put_addr(m, CTA_NAT_V4_MINIP, CTA_NAT_V6_MINIP, ip);
    if let Some(p) = port {
        m.begin(CTA_NAT_PROTO);
        put_port(m, CTA_PROTONAT_PORT_MIN, p);
        put_port(m, CTA_PROTONAT_PORT_MAX, p);
        m.end();
    }
    m.end();
}

/// `IPCTNL_MSG_CT_NEW` creating the entry of `flow` in state SYN_SENT with
/// DNAT to `backend` and, if given, SNAT to `snat` (source port kept when
/// free). The reply tuple is the inverse of the original one; the kernel
/// rewrites it from the NAT ranges.
pub fn encode_create(
    seq: u32,
    flow: &Flow,
    backend: SocketAddr,
    snat: Option<IpAddr>,
    timeout_secs: u32,
) -> Vec<u8> {
    let mut m = Msg::new(
        IPCTNL_MSG_CT_NEW,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        family_of(&flow.src),
    );
    put_tuple(&mut m, CTA_TUPLE_ORIG, flow.src, flow.dst);
    put_tuple(&mut m, CTA_TUPLE_REPLY, flow.dst, flow.src);
    m.begin(CTA_PROTOINFO);
    m.begin(CTA_PROTOINFO_TCP);
    m.attr(CTA_PROTOINFO_TCP_STATE, &[1]); // SYN_SENT
    m.end();
    m.end();
    m.attr(CTA_TIMEOUT, &timeout_secs.to_be_bytes());
    put_nat(&mut m, CTA_NAT_DST, backend.ip(), Some(backend.port()));
    if let Some(ip) = snat {
        put_nat(&mut m, CTA_NAT_SRC, ip, None);
    }
    m.finish()
}

/// `IPCTNL_MSG_CT_DELETE` of the entry whose original tuple is `flow`.
pub fn encode_delete(seq: u32, flow: &Flow) -> Vec<u8> {
    let mut m = Msg::new(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family_of(&flow.src),
    );
    put_tuple(&mut m, CTA_TUPLE_ORIG, flow.src, flow.dst);
    m.finish()
}

/// `IPCTNL_MSG_CT_GET` of the entry whose original tuple is `flow`.
pub fn encode_get(seq: u32, flow: &Flow) -> Vec<u8> {
    let mut m = Msg::new(IPCTNL_MSG_CT_GET, NLM_F_REQUEST, seq, family_of(&flow.src));
    put_tuple(&mut m, CTA_TUPLE_ORIG, flow.src, flow.dst);
    m.finish()
}

// ---- pure decoding ---------------------------------------------------------

/// Iterates the attributes in `buf`: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, payload))
    })
}

fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

fn ip_of(buf: &[u8], v4: u16, v6: u16) -> Option<IpAddr> {
    if let Some(p) = find(buf, v4) {
        let o: [u8; 4] = p.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    let o: [u8; 16] = find(buf, v6)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

fn port_of(buf: &[u8], kind: u16) -> Option<u16> {
    let p: [u8; 2] = find(buf, kind)?.try_into().ok()?;
    Some(u16::from_be_bytes(p))
}

fn decode_tuple(buf: &[u8]) -> Option<Flow> {
    let ip = find(buf, CTA_TUPLE_IP)?;
    let proto = find(buf, CTA_TUPLE_PROTO)?;
    if find(proto, CTA_PROTO_NUM)? != [IPPROTO_TCP] {
        return None;
    }
    let src = ip_of(ip, CTA_IP_V4_SRC, CTA_IP_V6_SRC)?;
    let dst = ip_of(ip, CTA_IP_V4_DST, CTA_IP_V6_DST)?;
    Some(Flow {
        src: SocketAddr::new(src, port_of(proto, CTA_PROTO_SRC_PORT)?),
        dst: SocketAddr::new(dst, port_of(proto, CTA_PROTO_DST_PORT)?),
    })
}

/// Decodes one ctnetlink message (an event, or a GET answer) about a TCP
/// entry; anything else (other protocols, errors, other subsystems) is `None`.
pub fn decode_entry(msg: &[u8]) -> Option<CtEntry> {
    if msg.len() < NLMSG_HDRLEN + 4 {
        return None;
    }
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    let destroyed = match kind & 0xff {
        IPCTNL_MSG_CT_NEW => false,
        IPCTNL_MSG_CT_DELETE => true,
        _ => return None,
    };
    let body = &msg[NLMSG_HDRLEN + 4..];
    let flow = decode_tuple(find(body, CTA_TUPLE_ORIG)?)?;
    let status = find(body, CTA_STATUS)
        .and_then(|p| <[u8; 4]>::try_from(p).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    let state = find(body, CTA_PROTOINFO)
        .and_then(|p| find(p, CTA_PROTOINFO_TCP))
        .and_then(|p| find(p, CTA_PROTOINFO_TCP_STATE))
        .and_then(|p| p.first().copied())
        .map(TcpState::from_kernel);
    Some(CtEntry {
        flow,
        state,
        seen_reply: status & IPS_SEEN_REPLY != 0,
        destroyed,
    })
}

/// Splits a datagram into netlink messages.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let m = &buf[..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(m)
    })
}

fn msg_type(m: &[u8]) -> u16 {
    u16::from_ne_bytes([m[4], m[5]])
}

/// The errno of an `NLMSG_ERROR` message (0 = an ACK).
fn error_code(m: &[u8]) -> Option<i32> {
    (msg_type(m) == NLMSG_ERROR && m.len() >= NLMSG_HDRLEN + 4).then(|| {
        -i32::from_ne_bytes(
            m[NLMSG_HDRLEN..NLMSG_HDRLEN + 4]
                .try_into()
                .expect("4 bytes"),
        )
    })
}

// ---- effects: sockets ------------------------------------------------------

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; pid 0 lets the kernel choose.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: bind(2) with a sockaddr_nl of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) with an int option.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const i32 as *const libc::c_void,
            4,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: send(2) of an initialised buffer.
    let r = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) into a buffer we own.
    let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// A request socket: one per worker thread (requests are synchronous).
pub struct CtSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl CtSocket {
    pub fn open() -> Result<Self, CtError> {
        let fd = netlink_socket().map_err(|source| CtError::Io { op: "open", source })?;
        Ok(CtSocket {
            fd,
            seq: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Creates the NAT entry of a new flow (see [`encode_create`]).
    pub fn create(
        &mut self,
        flow: &Flow,
        backend: SocketAddr,
        snat: Option<IpAddr>,
        timeout_secs: u32,
    ) -> Result<(), CtError> {
        let seq = self.next_seq();
        let msg = encode_create(seq, flow, backend, snat, timeout_secs);
        self.request("create", &msg, seq).map(|_| ())
    }

    /// Deletes the entry whose original tuple is `flow` (gone already: Ok).
    pub fn delete(&mut self, flow: &Flow) -> Result<(), CtError> {
        let seq = self.next_seq();
        let msg = encode_delete(seq, flow);
        match self.request("delete", &msg, seq) {
            Err(CtError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// The entry whose original tuple is `flow`, if it exists.
    pub fn get(&mut self, flow: &Flow) -> Result<Option<CtEntry>, CtError> {
        let seq = self.next_seq();
        let msg = encode_get(seq, flow);
        match self.request("get", &msg, seq) {
            Err(CtError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(None)
            }
            other => other,
        }
    }

    /// Sends `msg` and reads until its ACK or error; returns the entry the
    /// kernel sent back, if any.
    fn request(
        &mut self,
        op: &'static str,
        msg: &[u8],
        seq: u32,
    ) -> Result<Option<CtEntry>, CtError> {
        send(&self.fd, msg).map_err(|source| CtError::Io { op, source })?;
        let mut entry = None;
        // Bounded: a reply is at most a few messages.
        for _ in 0..16 {
            let n = recv(&self.fd, &mut self.buf).map_err(|source| CtError::Io { op, source })?;
            for m in messages(&self.buf[..n]) {
                let m_seq = u32::from_ne_bytes(m[8..12].try_into().expect("4 bytes"));
                if m_seq != seq {
                    continue;
                }
                match error_code(m) {
                    Some(0) => return Ok(entry),
                    Some(libc::EEXIST) => return Err(CtError::Exists),
                    Some(e) => {
                        return Err(CtError::Io {
                            op,
                            source: io::Error::from_raw_os_error(e),
                        });
                    }
                    None if msg_type(m) == NLMSG_DONE => return Ok(entry),
                    None => {
                        entry = decode_entry(m);
                        // A GET without NLM_F_ACK ends with its one answer.
                        if op == "get" {
                            return Ok(entry);
                        }
                    }
                }
            }
        }
        Err(CtError::Malformed { op })
    }
}

/// The conntrack update and destroy event stream of this network namespace.
pub struct CtEvents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl CtEvents {
    /// Subscribes; `rcvbuf` bytes of socket buffer (events are lost, not
    /// blocked, when it overflows: lookups cover the lost ones).
    pub fn open(rcvbuf: i32) -> Result<Self, CtError> {
        let io = |source| CtError::Io {
            op: "subscribe",
            source,
        };
        let fd = netlink_socket().map_err(io)?;
        for group in [NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY] {
            setsockopt_int(&fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group as i32).map_err(io)?;
        }
        // Overflow is reported as ENOBUFS unless disabled; we tolerate loss.
        setsockopt_int(&fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1).map_err(io)?;
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf).is_err() {
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf).map_err(io)?;
        }
        // A receive timeout lets the reader notice it should stop.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setsockopt(2) with a timeval.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r < 0 {
            return Err(io(io::Error::last_os_error()));
        }
        Ok(CtEvents {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits (at most 200 ms) for events and passes each TCP entry to `f`.
    pub fn read(&mut self, mut f: impl FnMut(CtEntry)) -> Result<(), CtError> {
        let n = match recv(&self.fd, &mut self.buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
            Err(source) => {
                return Err(CtError::Io {
                    op: "events",
                    source,
                });
            }
        };
        for m in messages(&self.buf[..n]) {
            if let Some(e) = decode_entry(m) {
                f(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "11.1.2.3:80".parse().unwrap(),
        }
    }

    #[test]
    fn create_message_has_header_family_and_both_tuples() {
        let m = encode_create(7, &flow(), "10.0.1.2:8080".parse().unwrap(), None, 120);
        assert_eq!(
            u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(msg_type(&m), (1 << 8) | IPCTNL_MSG_CT_NEW);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m[16], libc::AF_INET as u8);
        let body = &m[20..];
        let orig = decode_tuple(find(body, CTA_TUPLE_ORIG).unwrap()).unwrap();
        assert_eq!(orig, flow());
        let reply = decode_tuple(find(body, CTA_TUPLE_REPLY).unwrap()).unwrap();
        assert_eq!((reply.src, reply.dst), (flow().dst, flow().src));
        assert_eq!(find(body, CTA_TIMEOUT).unwrap(), 120u32.to_be_bytes());
        assert!(find(body, CTA_NAT_SRC).is_none());
    }

    #[test]
    fn nat_ranges_are_in_network_order() {
        let m = encode_create(
            1,
            &flow(),
            "10.0.1.2:8080".parse().unwrap(),
            Some("10.0.1.1".parse().unwrap()),
            120,
        );
        let body = &m[20..];
        let dnat = find(body, CTA_NAT_DST).unwrap();
        assert_eq!(find(dnat, CTA_NAT_V4_MINIP).unwrap(), [10, 0, 1, 2]);
        let proto = find(dnat, CTA_NAT_PROTO).unwrap();
        assert_eq!(find(proto, CTA_PROTONAT_PORT_MIN).unwrap(), [0x1f, 0x90]);
        let snat = find(body, CTA_NAT_SRC).unwrap();
        assert_eq!(find(snat, CTA_NAT_V4_MINIP).unwrap(), [10, 0, 1, 1]);
        assert!(find(snat, CTA_NAT_PROTO).is_none(), "SNAT keeps the port");
    }

    #[test]
    fn ipv6_flows_use_v6_attributes() {
        let f = Flow {
            src: "[fd00::1]:40000".parse().unwrap(),
            dst: "[fd00:11::1]:80".parse().unwrap(),
        };
        let m = encode_create(1, &f, "[fd00::2]:80".parse().unwrap(), None, 120);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        let body = &m[20..];
        assert_eq!(decode_tuple(find(body, CTA_TUPLE_ORIG).unwrap()), Some(f));
        let dnat = find(body, CTA_NAT_DST).unwrap();
        assert_eq!(find(dnat, CTA_NAT_V6_MINIP).unwrap().len(), 16);
    }

    /// An event as the kernel sends it: our create message re-typed, with
    /// status and state.
    fn event(kind: u16, state: u8, status: u32) -> Vec<u8> {
        let mut m = Msg::new(kind, 0, 0, libc::AF_INET as u8);
        put_tuple(&mut m, CTA_TUPLE_ORIG, flow().src, flow().dst);
        m.attr(CTA_STATUS, &status.to_be_bytes());
        m.begin(CTA_PROTOINFO);
        m.begin(CTA_PROTOINFO_TCP);
        m.attr(CTA_PROTOINFO_TCP_STATE, &[state]);
        m.end();
        m.end();
        m.finish()
    }

    #[test]
    fn events_decode_to_answered_or_failed() {
        let e = decode_entry(&event(IPCTNL_MSG_CT_NEW, 2, IPS_SEEN_REPLY)).unwrap();
        assert_eq!(e.flow, flow());
        assert!(e.answered() && !e.failed());
        let rst = decode_entry(&event(IPCTNL_MSG_CT_NEW, 8, IPS_SEEN_REPLY)).unwrap();
        assert!(rst.failed() && !rst.answered());
        let gone = decode_entry(&event(IPCTNL_MSG_CT_DELETE, 1, 0)).unwrap();
        assert!(gone.destroyed && gone.failed());
        // The end of an older flow with the same tuple is neither.
        let old = decode_entry(&event(IPCTNL_MSG_CT_DELETE, 7, IPS_SEEN_REPLY)).unwrap();
        assert!(!old.answered() && !old.failed());
        let old_rst = decode_entry(&event(IPCTNL_MSG_CT_DELETE, 8, IPS_SEEN_REPLY)).unwrap();
        assert!(!old_rst.answered() && !old_rst.failed());
        let syn = decode_entry(&event(IPCTNL_MSG_CT_NEW, 1, 0)).unwrap();
        assert!(!syn.answered() && !syn.failed());
    }

    #[test]
    fn truncated_or_foreign_messages_are_ignored() {
        let m = event(IPCTNL_MSG_CT_NEW, 3, 0);
        for cut in [0, 10, 20, 30, m.len() - 3] {
            let mut t = m[..cut].to_vec();
            if t.len() >= 4 {
                t[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            // Never panics; a cut tuple decodes to nothing.
            let _ = decode_entry(&t);
        }
        let mut other = m.clone();
        other[5] = 2; // subsystem 2 (queue)
        assert_eq!(decode_entry(&other), None);
        assert_eq!(messages(&m).count(), 1);
    }
}
