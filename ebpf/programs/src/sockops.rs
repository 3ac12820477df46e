//! `sockops`: outcomes of TCP connects steered to a backend, for the passive
//! failure detector. A connect recorded in [`CONNECTS`] by `connect4/6` is
//! counted as a success when it reaches ESTABLISHED (with its connect time) and
//! as a failure when it goes from SYN_SENT to CLOSE (refused, timed out, or
//! given up by the application). Connects the agent finds pending past its
//! threshold are failures too (the agent removes them from the map).
use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_SYN_SENT,
    },
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::sock_ops,
    programs::SockOpsContext,
};
use garrison_common::{Counter, PendingConnect};

use crate::maps::{BACKEND_STATS, CONNECTS, bump};

#[sock_ops]
pub fn garrison_sockops(ctx: SockOpsContext) -> u32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    match ctx.op() {
        // SAFETY (all arms): map values are copied out at once.
        BPF_SOCK_OPS_TCP_CONNECT_CB if unsafe { CONNECTS.get(cookie) }.is_some() => {
            // Ask for state changes of this socket only.
            let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            if let Some(p) = unsafe { CONNECTS.get(cookie) }.copied() {
                record(&p, true);
                let _ = CONNECTS.remove(cookie);
                let _ = ctx.set_cb_flags(0);
            }
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(0) == BPF_TCP_SYN_SENT && ctx.arg(1) == BPF_TCP_CLOSE => {
            if let Some(p) = unsafe { CONNECTS.get(cookie) }.copied() {
                record(&p, false);
                let _ = CONNECTS.remove(cookie);
            }
        }
        _ => {}
    }
    1
}

#[inline(always)]
fn record(p: &PendingConnect, established: bool) {
    match BACKEND_STATS.get_ptr_mut(p.backend_id) {
        // SAFETY: per-CPU slot; no other writer on this CPU while we run.
        Some(stats) => unsafe {
            if established {
                (*stats).established += 1;
                (*stats).connect_ns += bpf_ktime_get_ns().saturating_sub(p.start_ns);
            } else {
                (*stats).failed += 1;
                bump(Counter::ConnectFailed);
            }
        },
        None => bump(Counter::StatsMiss),
    }
}
