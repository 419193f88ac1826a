//! Evaluating a sandbox's [`EgressPolicy`] for a destination host and port.
//!
//! Order, first match wins: `deny` globs, `rules`, `allow` globs, `default`. An entry without a
//! port applies to the HTTP(S) ports 80 and 443 only; any other port must be named (`host:port`)
//! by a rule or an `allow` entry, and `default: allow` never opens it.

use bothy_api::network::{EgressPolicy, HostRule, PolicyAction};

/// Ports an entry without a port applies to.
pub const WEB_PORTS: [u16; 2] = [80, 443];

/// The outcome of a policy for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// What decided: `deny[0] *.evil.test`, `rules[1] api.example.test`, `allow[2] *`,
    /// `default`.
    pub matched: String,
    /// Index into `policy.rules` when a rule decided.
    pub rule: Option<usize>,
}

impl Verdict {
    /// The rule that allowed the destination, if a rule did.
    pub fn rule<'p>(&self, policy: &'p EgressPolicy) -> Option<&'p HostRule> {
        self.rule.and_then(|i| policy.rules.get(i))
    }
}

/// Applies `policy` to `host` (a name or an IP literal, any case) and `port`.
pub fn evaluate(policy: &EgressPolicy, host: &str, port: u16) -> Verdict {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(i) = first_match(&policy.deny, &host, port) {
        return Verdict {
            allowed: false,
            matched: format!("deny[{i}] {}", policy.deny[i]),
            rule: None,
        };
    }
    if let Some(i) = policy
        .rules
        .iter()
        .position(|r| entry_matches(&r.host, &host, port))
    {
        return Verdict {
            allowed: true,
            matched: format!("rules[{i}] {}", policy.rules[i].host),
            rule: Some(i),
        };
    }
    if let Some(i) = first_match(&policy.allow, &host, port) {
        return Verdict {
            allowed: true,
            matched: format!("allow[{i}] {}", policy.allow[i]),
            rule: None,
        };
    }
    let allowed = policy.default == PolicyAction::Allow && WEB_PORTS.contains(&port);
    Verdict {
        allowed,
        matched: if allowed || policy.default == PolicyAction::Deny {
            "default".into()
        } else {
            "default (port not named by any entry)".into()
        },
        rule: None,
    }
}

fn first_match(entries: &[String], host: &str, port: u16) -> Option<usize> {
    entries.iter().position(|e| entry_matches(e, host, port))
}

/// Whether a policy entry (`glob` or `glob:port`) matches a lowercase host and a port.
pub fn entry_matches(entry: &str, host: &str, port: u16) -> bool {
    let (glob, entry_port) = split_port(entry);
    let port_ok = match entry_port {
        Some(p) => p == port,
        None => WEB_PORTS.contains(&port),
    };
    port_ok && glob_matches(&glob.to_ascii_lowercase(), host)
}

/// `db.internal:5432` → (`db.internal`, Some(5432)); `[::1]:80` → (`::1`, Some(80)); a bare
/// IPv6 literal keeps its colons.
pub fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match entry.rsplit_once(':') {
        Some((h, p))
            if !h.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (h, p.parse().ok())
        }
        _ => (entry, None),
    }
}

/// `*` matches any run of characters, dots included; everything else matches itself.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_api::network::HostRule;

    fn rule(host: &str) -> HostRule {
        HostRule {
            host: host.into(),
            headers: Default::default(),
            upstream: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*.example.com", "a.b.example.com"));
        assert!(!glob_matches("*.example.com", "example.com"));
        assert!(glob_matches("*", "anything.at.all"));
        assert!(glob_matches("api.*.test", "api.x.y.test"));
        assert!(!glob_matches("api.test", "api.test.evil"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn ports() {
        assert_eq!(split_port("db.internal:5432"), ("db.internal", Some(5432)));
        assert_eq!(split_port("*.x"), ("*.x", None));
        assert_eq!(split_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_port("::1"), ("::1", None));
        assert!(entry_matches("db.internal:5432", "db.internal", 5432));
        assert!(!entry_matches("db.internal:5432", "db.internal", 443));
        assert!(entry_matches("db.internal", "db.internal", 443));
        assert!(!entry_matches("db.internal", "db.internal", 5432));
    }

    #[test]
    fn order_deny_rules_allow_default() {
        let p = EgressPolicy {
            deny: vec!["*.evil.test".into()],
            allow: vec!["pkg.test".into(), "db.test:5432".into()],
            rules: vec![rule("api.example.test"), rule("*.evil.test")],
            default: PolicyAction::Deny,
        };
        let v = evaluate(&p, "x.EVIL.test", 443);
        assert!(!v.allowed);
        assert_eq!(v.matched, "deny[0] *.evil.test");
        let v = evaluate(&p, "api.example.test.", 443);
        assert!(v.allowed);
        assert_eq!(v.rule, Some(0));
        assert_eq!(v.rule(&p).unwrap().host, "api.example.test");
        let v = evaluate(&p, "pkg.test", 80);
        assert_eq!((v.allowed, v.matched.as_str()), (true, "allow[0] pkg.test"));
        assert!(evaluate(&p, "db.test", 5432).allowed);
        let v = evaluate(&p, "other.test", 443);
        assert_eq!((v.allowed, v.matched.as_str()), (false, "default"));
    }

    #[test]
    fn default_allow_opens_web_ports_only() {
        let p = EgressPolicy::default();
        assert!(evaluate(&p, "anything.test", 443).allowed);
        assert!(evaluate(&p, "anything.test", 80).allowed);
        assert!(!evaluate(&p, "anything.test", 22).allowed);
    }
}
