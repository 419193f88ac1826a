//! The host firewall: one nftables table per daemon, loaded at start, closed at shutdown.
//!
//! Rules match the daemon's sandbox links by *interface group* (every host-side veth is
//! created in the daemon's group), so nothing changes per sandbox and several daemons on one
//! machine (tests) keep to their own links. From a sandbox link:
//! - packets whose source is not the address routed to that link (reverse-path check) or not
//!   IPv4 are dropped before anything else;
//! - TCP and UDP to port 53 (any destination) are redirected to the daemon's DNS stub;
//! - every other TCP connection is redirected to the egress proxy's port, where
//!   `SO_ORIGINAL_DST` gives the destination the sandbox asked for;
//! - everything else is dropped in `input` and `forward`: the sandbox reaches no other
//!   sandbox, no host service (also not on the gateway address, nor the daemon's API), no
//!   link-local metadata address, and nothing is ever forwarded (no `ip_forward` needed: the
//!   proxy opens outbound connections itself).
//!
//! At shutdown the table is replaced by one that only drops (sandboxes outlive the daemon and
//! must stay closed while it is away); the next start replaces it again.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "nft (nftables) is not installed: proxy networking needs it (apt-get install nftables)"
    )]
    Missing,
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("run nft")]
    Io(#[source] std::io::Error),
}

/// What the rules need to know.
#[derive(Debug, Clone)]
pub struct Rules {
    /// nftables table name (family `inet`).
    pub table: String,
    /// Interface group of this daemon's host-side links.
    pub group: u32,
    pub proxy_port: u16,
    pub dns_port: u16,
}

impl Rules {
    /// The ruleset that (re)creates the table atomically.
    pub fn ruleset(&self) -> String {
        let Rules {
            table,
            group,
            proxy_port,
            dns_port,
        } = self;
        let comment = owner_comment(*group);
        format!(
            r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    comment "{comment}"
    chain guard {{
        type filter hook prerouting priority raw; policy accept;
        iifgroup {group} meta nfproto != ipv4 drop
        iifgroup {group} fib saddr . iif oif missing drop
    }}
    chain divert {{
        type nat hook prerouting priority dstnat; policy accept;
        iifgroup {group} meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns_port}
        iifgroup {group} meta l4proto tcp redirect to :{proxy_port}
    }}
    chain inbound {{
        type filter hook input priority filter; policy accept;
        iifgroup {group} ct status dnat tcp dport {proxy_port} accept
        iifgroup {group} ct status dnat meta l4proto {{ tcp, udp }} th dport {dns_port} accept
        iifgroup {group} drop
    }}
    chain transit {{
        type filter hook forward priority filter; policy accept;
        iifgroup {group} drop
        oifgroup {group} drop
    }}
}}
"#
        )
    }

    /// The ruleset left behind at shutdown: sandbox links closed, nothing redirected.
    pub fn closed(&self) -> String {
        let Rules { table, group, .. } = self;
        let comment = owner_comment(*group);
        format!(
            r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    comment "{comment}"
    chain guard {{
        type filter hook prerouting priority raw; policy accept;
        iifgroup {group} drop
    }}
    chain transit {{
        type filter hook forward priority filter; policy accept;
        oifgroup {group} drop
    }}
}}
"#
        )
    }

    pub fn load(&self) -> Result<(), FirewallError> {
        nft(&self.ruleset())
    }

    pub fn close(&self) -> Result<(), FirewallError> {
        nft(&self.closed())
    }

    /// Removes the table (when no sandbox link of this daemon is left).
    pub fn remove(&self) -> Result<(), FirewallError> {
        nft(&format!(
            "table inet {0} {{}}\ndelete table inet {0}\n",
            self.table
        ))
    }
}

/// The comment that says which daemon owns a table: `bothy daemon pid=P group=G`.
fn owner_comment(group: u32) -> String {
    format!("bothy daemon pid={} group={group}", std::process::id())
}

/// Tables of `inet` family named `bothy*` with their owner comment's pid and group.
fn parse_owned_tables(ruleset: &str) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in ruleset.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("table inet ") {
            current = rest
                .trim_end_matches('{')
                .trim()
                .strip_prefix("bothy")
                .map(|s| format!("bothy{s}"));
        } else if let (Some(t), Some(c)) = (&current, l.strip_prefix("comment \"bothy daemon ")) {
            let field = |k: &str| {
                c.split([' ', '"'])
                    .find_map(|kv| kv.strip_prefix(k))
                    .and_then(|v| v.parse::<u32>().ok())
            };
            if let (Some(pid), Some(group)) = (field("pid="), field("group=")) {
                out.push((t.clone(), pid, group));
            }
        }
    }
    out
}

/// Removes tables left by daemons that are gone (killed, so they could not remove their own)
/// and whose links are gone too: a table that still guards a live sandbox link is kept, even if
/// its daemon died (that sandbox must stay closed). Tables without an owner comment are left
/// alone. Returns how many were removed.
pub fn remove_stale(own_table: &str) -> usize {
    let Ok(out) = Command::new("nft")
        .args(["list", "ruleset"])
        .stderr(Stdio::null())
        .output()
    else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let groups_in_use = link_groups();
    let mut removed = 0;
    for (table, pid, group) in parse_owned_tables(&text) {
        if table == own_table || groups_in_use.contains(&group) || process_alive(pid) {
            continue;
        }
        if nft(&format!(
            "table inet {table} {{}}\ndelete table inet {table}\n"
        ))
        .is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Interface groups of the links in the daemon's (host) namespace.
fn link_groups() -> std::collections::HashSet<u32> {
    let mut out = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            if let Ok(g) = std::fs::read_to_string(e.path().join("netdev_group")) {
                if let Ok(g) = g.trim().parse::<u32>() {
                    out.insert(g);
                }
            }
        }
    }
    out
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `nft` can be run at all.
pub fn available() -> Result<(), FirewallError> {
    match Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(FirewallError::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FirewallError::Missing),
        Err(e) => Err(FirewallError::Io(e)),
    }
}

/// Feeds `ruleset` to `nft -f -` (one atomic transaction).
fn nft(ruleset: &str) -> Result<(), FirewallError> {
    let mut child = match Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FirewallError::Missing),
        Err(e) => return Err(FirewallError::Io(e)),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(FirewallError::Io)?;
    }
    let out = child.wait_with_output().map_err(FirewallError::Io)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The table name for a daemon whose sandboxes live under cgroup `instance`: `bothy` for the
/// default, a sanitized derivative for others.
pub fn table_name(instance: &str) -> String {
    if instance == "bothy" {
        return "bothy".into();
    }
    let s: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!("bothy_{s}")
}

/// The interface group for a daemon instance: a stable non-zero hash of its name.
pub fn group_for(instance: &str) -> u32 {
    // FNV-1a: stable across builds (unlike std's hasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in instance.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    // Stay clear of group 0 (every ordinary link) and of small numbers people use by hand.
    h | 0x4000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_groups() {
        assert_eq!(table_name("bothy"), "bothy");
        assert_eq!(table_name("bothy-test-12-3"), "bothy_bothy_test_12_3");
        assert_ne!(group_for("a"), group_for("b"));
        assert_ne!(group_for("bothy"), 0);
        assert_eq!(group_for("bothy"), group_for("bothy"));
    }

    #[test]
    fn owned_tables_are_parsed() {
        let text = "table inet bothy {\n\tcomment \"bothy daemon pid=42 group=7\"\n\tchain guard {\n\t}\n}\ntable inet other {\n\tcomment \"bothy daemon pid=1 group=2\"\n}\ntable inet bothy_t_1 {\n\tcomment \"bothy daemon pid=43 group=8\"\n}\ntable inet bothy_old {\n}\n";
        assert_eq!(
            parse_owned_tables(text),
            vec![
                ("bothy".to_string(), 42, 7),
                ("bothy_t_1".to_string(), 43, 8)
            ]
        );
    }

    #[test]
    fn ruleset_mentions_ports_and_group() {
        let r = Rules {
            table: "t".into(),
            group: 7,
            proxy_port: 1000,
            dns_port: 2000,
        };
        let s = r.ruleset();
        assert!(s.contains("redirect to :2000"));
        assert!(s.contains("tcp redirect to :1000"));
        assert!(s.contains("iifgroup 7 drop"));
        assert!(r.closed().contains("iifgroup 7 drop"));
    }
}
