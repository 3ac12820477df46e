//! Backend choice and address rewriting shared by every hook.
//!
//! Steering reads the destination the application asked for; if it is a
//! service in [`SERVICES`], it picks one of the service's selection slots
//! (uniformly at random for TCP, by socket cookie for UDP so one socket keeps
//! one backend), rewrites the destination to the slot's backend, records the
//! reverse translation and bumps the backend's counter. A service with no slot
//! refuses the call with `ECONNREFUSED` (the packet never leaves for the VIP).
use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::generated::{
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_set_retval,
    },
    programs::SockAddrContext,
};
use garrison_common::{
    BackendSlot, Counter, FAMILY_V4, IpAddrBytes, PROTO_TCP, PROTO_UDP, PendingConnect, RevNatKey,
    RevNatValue, ServiceKey, ServiceValue, SlotKey,
};

use crate::maps::{BACKEND_STATS, CONNECTS, REVNAT, SERVICES, SLOTS, bump};

/// Return value letting the syscall proceed.
pub const ALLOW: i32 = 1;
/// Return value rejecting the syscall (with the errno set by `bpf_set_retval`).
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

/// Reads the destination (or, for recvmsg/getpeername, the peer) address.
#[inline(always)]
pub fn read_addr(sa: *const bpf_sock_addr, family: u8) -> (IpAddrBytes, u16) {
    // SAFETY: `sa` is the context pointer the kernel passed to this program.
    unsafe {
        let port = (*sa).user_port as u16;
        if family == FAMILY_V4 {
            (IpAddrBytes([(*sa).user_ip4, 0, 0, 0]), port)
        } else {
            let ip6 = &(*sa).user_ip6;
            (IpAddrBytes([ip6[0], ip6[1], ip6[2], ip6[3]]), port)
        }
    }
}

/// Writes the destination (or peer) address.
#[inline(always)]
pub fn write_addr(sa: *mut bpf_sock_addr, family: u8, addr: &IpAddrBytes, port: u16) {
    // SAFETY: `sa` is the context pointer; these fields are writable for the
    // sock_addr hooks this module is used from.
    unsafe {
        if family == FAMILY_V4 {
            (*sa).user_ip4 = addr.0[0];
        } else {
            (*sa).user_ip6[0] = addr.0[0];
            (*sa).user_ip6[1] = addr.0[1];
            (*sa).user_ip6[2] = addr.0[2];
            (*sa).user_ip6[3] = addr.0[3];
        }
        (*sa).user_port = port as u32;
    }
}

#[inline(always)]
fn lookup_slot(svc: &ServiceValue, pick: u32) -> Option<BackendSlot> {
    if svc.slot_count == 0 {
        return None;
    }
    let key = SlotKey {
        service_id: svc.service_id,
        revision: svc.revision,
        slot: pick % svc.slot_count,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    unsafe { SLOTS.get(key) }.copied()
}

#[inline(always)]
fn refuse(counter: Counter) -> i32 {
    bump(counter);
    // SAFETY: plain helper call; available to cgroup programs since Linux 5.18.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    REJECT
}

/// Mixes a socket cookie into a slot choice that is stable for the socket.
#[inline(always)]
fn cookie_pick(cookie: u64) -> u32 {
    let x = (cookie ^ (cookie >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 32) as u32
}

/// Steers a connect/sendmsg destination that is a VIP to one of its backends.
#[inline(always)]
pub fn steer(ctx: &SockAddrContext, family: u8) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: context field read.
    let proto = unsafe { (*sa).protocol } as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return ALLOW;
    }
    let (addr, port) = read_addr(sa, family);
    let key = ServiceKey {
        addr,
        port,
        proto,
        family,
    };
    // SAFETY: the value is copied out at once.
    let Some(svc) = (unsafe { SERVICES.get(key) }).copied() else {
        return ALLOW;
    };
    if svc.slot_count == 0 {
        return refuse(Counter::NoBackend);
    }
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let pick = if proto == PROTO_TCP {
        // SAFETY: plain helper call.
        unsafe { bpf_get_prandom_u32() }
    } else {
        cookie_pick(cookie)
    };
    let backend = match lookup_slot(&svc, pick) {
        Some(b) => b,
        None => {
            // The agent flipped the service to a new revision and removed the
            // old slots between our two lookups: read the service once more.
            // SAFETY: the value is copied out at once.
            let Some(fresh) = (unsafe { SERVICES.get(key) }).copied() else {
                return refuse(Counter::SlotMiss);
            };
            if fresh.slot_count == 0 {
                return refuse(Counter::NoBackend);
            }
            match lookup_slot(&fresh, pick) {
                Some(b) => b,
                None => return refuse(Counter::SlotMiss),
            }
        }
    };
    write_addr(sa, family, &backend.addr, backend.port);
    match BACKEND_STATS.get_ptr_mut(backend.backend_id) {
        // SAFETY: per-CPU slot; no other writer on this CPU while we run.
        Some(stats) => unsafe { (*stats).selected += 1 },
        None => bump(Counter::StatsMiss),
    }
    let rev_key = RevNatKey {
        cookie,
        addr: backend.addr,
        port: backend.port,
        family,
        _pad: [0; 5],
    };
    let rev_val = RevNatValue {
        addr,
        port,
        _pad: [0; 6],
    };
    if REVNAT.insert(rev_key, rev_val, 0).is_err() {
        bump(Counter::RevNatStoreFailed);
    }
    if proto == PROTO_TCP {
        // The sockops program turns this into a success (ESTABLISHED) or a
        // failure (SYN_SENT → CLOSE) for the backend's failure detector.
        let pending = PendingConnect {
            // SAFETY: plain helper call.
            start_ns: unsafe { bpf_ktime_get_ns() },
            backend_id: backend.backend_id,
            _pad: 0,
        };
        if CONNECTS.insert(cookie, pending, 0).is_err() {
            bump(Counter::PendingStoreFailed);
        }
    }
    bump(Counter::Steered);
    ALLOW
}

/// Rewrites a peer address (recvmsg source, getpeername result) that is a
/// backend this socket was steered to back into the VIP the application used.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext, family: u8) -> i32 {
    let sa = ctx.sock_addr;
    let (addr, port) = read_addr(sa, family);
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevNatKey {
        cookie,
        addr,
        port,
        family,
        _pad: [0; 5],
    };
    // SAFETY: the value is copied out at once.
    if let Some(vip) = (unsafe { REVNAT.get(key) }).copied() {
        write_addr(sa, family, &vip.addr, vip.port);
        bump(Counter::RevNatApplied);
    }
    ALLOW
}
