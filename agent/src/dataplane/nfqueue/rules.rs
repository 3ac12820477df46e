//! The NFQUEUE path's netfilter state: the ipsets of VIP:port pairs and the
//! iptables rules that send SYNs to them into the queues. The rule list is a
//! pure function of the configuration ([`rules`]); installing, checking and
//! removing them run `iptables`/`ip6tables`/`ipset` (effects, at the bottom).
//!
//! The rules, per family (`minuteman` is the IPv4 set, `minuteman6` IPv6):
//! - raw PREROUTING and OUTPUT: `-p tcp -m set --match-set minuteman dst,dst
//!   -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j NFQUEUE --queue-balance 50:58
//!   --queue-bypass`, as DC/OS 1.8 installs them plus `--queue-bypass` (a SYN
//!   is never left hanging when no worker is bound).
//! - filter OUTPUT and FORWARD: the same match `-j REJECT`. A SYN the agent
//!   NATed no longer matches (its destination is the backend by then); one it
//!   did not (agent down, VIP without backends) is refused at once.
//!   With `fail_open`, the REJECT rules also match the agent's "no backend"
//!   mark, so only VIPs without backends are refused and a SYN the agent never
//!   saw continues to the VIP address unbalanced.
//! - nat PREROUTING, INPUT, OUTPUT and POSTROUTING: one counting rule with a
//!   conntrack match, a comment and no target. It changes nothing; it makes
//!   the kernel track connections and register its NAT hooks in this
//!   namespace (both happen only when some rule needs them), without which
//!   entries made over ctnetlink would carry NAT bindings nobody applies.
//!
//! Rules are inserted only when `-C` does not find them (idempotent) and
//! deleted by exact specification: rules that are not Garrison's are never
//! touched.
use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
};

/// The mark the agent sets on a SYN it refuses (VIP without a backend).
pub const NO_BACKEND_MARK: u32 = 0x4c42_0000;
/// The bits of the packet mark Garrison uses.
pub const MARK_MASK: u32 = 0xffff_0000;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The ipset holding this family's VIPs.
    pub fn set(self) -> &'static str {
        match self {
            Family::V4 => "minuteman",
            Family::V6 => "minuteman6",
        }
    }

    fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Settings the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleConfig {
    /// First and last NFQUEUE number (`--queue-balance first:last`).
    pub queues: (u16, u16),
    pub fail_open: bool,
}

/// Where a rule is inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// First in the chain (it must see the packet before anyone accepts it).
    First,
    /// Last (a no-op whose position does not matter).
    Last,
}

/// One rule: family, table, chain, match and target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: &'static str,
    pub chain: &'static str,
    pub args: Vec<String>,
    pub position: Position,
}

impl Rule {
    /// The rule as `iptables -S` prints it (for messages and tests).
    pub fn describe(&self) -> String {
        format!(
            "{} -t {} -A {} {}",
            self.family.iptables(),
            self.table,
            self.chain,
            self.args.join(" ")
        )
    }
}

fn syn_to_set(family: Family) -> Vec<String> {
    [
        "-p",
        "tcp",
        "-m",
        "set",
        "--match-set",
        family.set(),
        "dst,dst",
        "-m",
        "tcp",
        "--tcp-flags",
        "FIN,SYN,RST,ACK",
        "SYN",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Comment of the NAT-hook rules.
pub const NAT_HOOK_COMMENT: &str = "garrison: conntrack and NAT hooks for ctnetlink entries";

/// Every rule Garrison installs, in installation order.
pub fn rules(cfg: &RuleConfig) -> Vec<Rule> {
    let mut out = Vec::new();
    for family in Family::BOTH {
        let rule = |table, chain, args: Vec<String>, position| Rule {
            family,
            table,
            chain,
            args,
            position,
        };
        for chain in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            let args = [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                NAT_HOOK_COMMENT,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            out.push(rule("nat", chain, args, Position::Last));
        }
        for chain in ["OUTPUT", "FORWARD"] {
            let mut args = syn_to_set(family);
            if cfg.fail_open {
                args.extend([
                    "-m".into(),
                    "mark".into(),
                    "--mark".into(),
                    format!("{NO_BACKEND_MARK:#x}/{MARK_MASK:#x}"),
                ]);
            }
            args.extend(["-j".into(), "REJECT".into()]);
            out.push(rule("filter", chain, args, Position::First));
        }
        for chain in ["PREROUTING", "OUTPUT"] {
            let mut args = syn_to_set(family);
            args.extend([
                "-j".into(),
                "NFQUEUE".into(),
                "--queue-balance".into(),
                format!("{}:{}", cfg.queues.0, cfg.queues.1),
                "--queue-bypass".into(),
            ]);
            out.push(rule("raw", chain, args, Position::First));
        }
    }
    out
}

/// The `ipset restore` script that rebuilds `family`'s set with `vips`
/// (TCP VIP addresses) through a temporary set and `swap`, so the live set
/// is never empty or half-filled.
pub fn set_rebuild_script(family: Family, vips: &[SocketAddr]) -> String {
    let set = family.set();
    let tmp = format!("{set}-tmp");
    let maxelem = (vips.len() * 2).max(65536);
    let mut s = format!(
        "create {tmp} hash:ip,port family {} maxelem {maxelem} -exist\nflush {tmp}\n",
        family.ipset_family()
    );
    for v in vips.iter().filter(|v| Family::of(v) == family) {
        s.push_str(&format!("add {tmp} {},tcp:{}\n", v.ip(), v.port()));
    }
    s.push_str(&format!("swap {tmp} {set}\ndestroy {tmp}\n"));
    s
}

/// A netfilter command that failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot run `{program}` (is it installed? `cargo xtask deps` installs it): {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// Runs `program args`, with `stdin` if given; `Ok(true)` on exit 0,
/// `Ok(false)` on exit 1 when `one_is_false` (iptables -C: "no such rule").
fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
    one_is_false: bool,
) -> Result<bool, RulesError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RulesError::Spawn { program, source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| RulesError::Spawn { program, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| RulesError::Spawn { program, source })?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) if one_is_false => Ok(false),
        _ => Err(RulesError::Failed {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

fn iptables(rule: &Rule, op: &[&str], one_is_false: bool) -> Result<bool, RulesError> {
    let mut args = vec!["-w", "5", "-t", rule.table];
    args.extend_from_slice(op);
    args.extend(rule.args.iter().map(String::as_str));
    run(rule.family.iptables(), &args, None, one_is_false)
}

/// Whether `rule` is installed.
pub fn is_installed(rule: &Rule) -> Result<bool, RulesError> {
    iptables(rule, &["-C", rule.chain], true)
}

/// Installs `rule` unless it is there already.
pub fn ensure(rule: &Rule) -> Result<(), RulesError> {
    if is_installed(rule)? {
        return Ok(());
    }
    match rule.position {
        Position::First => iptables(rule, &["-I", rule.chain, "1"], false)?,
        Position::Last => iptables(rule, &["-A", rule.chain], false)?,
    };
    Ok(())
}

/// Deletes every copy of `rule` (bounded: at most 16).
pub fn remove(rule: &Rule) -> Result<(), RulesError> {
    for _ in 0..16 {
        if !is_installed(rule)? {
            return Ok(());
        }
        iptables(rule, &["-D", rule.chain], false)?;
    }
    Ok(())
}

/// Creates both VIP sets if missing (the rules refer to them).
pub fn ensure_sets() -> Result<(), RulesError> {
    for family in Family::BOTH {
        run(
            "ipset",
            &[
                "create",
                family.set(),
                "hash:ip,port",
                "family",
                family.ipset_family(),
                "-exist",
            ],
            None,
            false,
        )?;
    }
    Ok(())
}

/// Rebuilds `family`'s set to hold exactly `vips` (see [`set_rebuild_script`]).
pub fn rebuild_set(family: Family, vips: &[SocketAddr]) -> Result<(), RulesError> {
    let script = set_rebuild_script(family, vips);
    run("ipset", &["restore"], Some(&script), false).map(|_| ())
}

/// Destroys both sets (after the rules that use them are gone).
pub fn destroy_sets() -> Result<(), RulesError> {
    for family in Family::BOTH {
        // Exit 1: the set does not exist (already gone).
        run("ipset", &["destroy", family.set()], None, true)?;
    }
    Ok(())
}

/// The local address the kernel would use to reach `ip` (a UDP connect
/// sends nothing); `None` without a route.
pub fn preferred_source(ip: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(SocketAddr::new(ip, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(fail_open: bool) -> RuleConfig {
        RuleConfig {
            queues: (50, 58),
            fail_open,
        }
    }

    #[test]
    fn rules_match_dcos_and_queue_with_bypass() {
        let r = rules(&cfg(false));
        let raw_out = r
            .iter()
            .find(|r| r.family == Family::V4 && r.table == "raw" && r.chain == "OUTPUT")
            .unwrap();
        assert_eq!(
            raw_out.args.join(" "),
            "-p tcp -m set --match-set minuteman dst,dst -m tcp --tcp-flags FIN,SYN,RST,ACK SYN \
             -j NFQUEUE --queue-balance 50:58 --queue-bypass"
        );
        let reject = r
            .iter()
            .find(|r| r.family == Family::V4 && r.table == "filter" && r.chain == "FORWARD")
            .unwrap();
        assert_eq!(
            reject.args.join(" "),
            "-p tcp -m set --match-set minuteman dst,dst -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REJECT"
        );
        assert_eq!(reject.position, Position::First);
        // 4 NAT hooks + 2 REJECT + 2 NFQUEUE, per family.
        assert_eq!(r.len(), 16);
        assert!(
            r.iter()
                .filter(|r| r.family == Family::V6)
                .all(|r| !r.args.contains(&"minuteman".to_string()))
        );
    }

    #[test]
    fn fail_open_rejects_only_marked_syns() {
        let r = rules(&cfg(true));
        for rule in r.iter().filter(|r| r.table == "filter") {
            let s = rule.args.join(" ");
            assert!(s.contains("--mark 0x4c420000/0xffff0000 -j REJECT"), "{s}");
        }
    }

    #[test]
    fn set_rebuild_swaps_a_filled_temporary_set() {
        let vips: Vec<SocketAddr> = vec![
            "11.1.2.3:80".parse().unwrap(),
            "[fd00::1]:443".parse().unwrap(),
        ];
        let s = set_rebuild_script(Family::V4, &vips);
        assert_eq!(
            s,
            "create minuteman-tmp hash:ip,port family inet maxelem 65536 -exist\n\
             flush minuteman-tmp\n\
             add minuteman-tmp 11.1.2.3,tcp:80\n\
             swap minuteman-tmp minuteman\n\
             destroy minuteman-tmp\n"
        );
        let s6 = set_rebuild_script(Family::V6, &vips);
        assert!(s6.contains("add minuteman6-tmp fd00::1,tcp:443\n"), "{s6}");
        assert!(!s6.contains("11.1.2.3"));
    }
}
