//! `sidecar iptables print|apply|remove`: the NAT rules that redirect a
//! workload's TCP traffic to this proxy (transparent interception). Not on
//! the request path: a one-shot command, usually run by an init container
//! with `NET_ADMIN`.
//!
//! Two chains per address family, in the `nat` table: `MESH_INBOUND`
//! (jumped to from `PREROUTING`: TCP arriving for the service goes to the
//! inbound listener) and `MESH_OUTBOUND` (from `OUTPUT`: TCP the app opens
//! goes to the transparent listener, except the proxy's own traffic, by
//! UID/GID, loopback, and the excluded ports and networks). Each chain is
//! only written when its listener is configured.
//!
//! `apply` is idempotent: it creates or flushes its own chains and adds each
//! jump only when `-C` says it is not there. `remove` deletes the jumps and
//! the chains, touching nothing else. Shells out to `iptables`/`ip6tables`.
//! Errors: [`IptablesError`].

use std::fmt::Write as _;
use std::process::Command;

use crate::config::Settings;

/// The inbound chain (from `PREROUTING`).
pub const INBOUND_CHAIN: &str = "MESH_INBOUND";
/// The outbound chain (from `OUTPUT`).
pub const OUTBOUND_CHAIN: &str = "MESH_OUTBOUND";

/// Why the rules could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// Neither listener the rules would redirect to is configured.
    #[error("nothing to redirect: the config has neither `inbound` nor `outbound.transparent`")]
    NothingToRedirect,
    /// The binary is not installed.
    #[error("`{0}` not found in PATH (install the iptables package)")]
    Missing(&'static str),
    /// A command ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Io {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One chain and the jump into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `MESH_INBOUND` or `MESH_OUTBOUND`.
    pub name: &'static str,
    /// The built-in chain that jumps here.
    pub hook: &'static str,
    /// The rules, in order, each as arguments after `-A <name>`.
    pub rules: Vec<Vec<String>>,
}

/// The rules of one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// `iptables` or `ip6tables`.
    pub binary: &'static str,
    /// The chains to write.
    pub chains: Vec<Chain>,
}

/// Everything `apply` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// IPv4, then IPv6 when enabled.
    pub families: Vec<Family>,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A rule that lets TCP to `port` through unredirected.
fn return_port(port: u16) -> Vec<String> {
    args(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"])
}

/// The rules for `settings`.
pub fn plan(settings: &Settings) -> Result<Plan, IptablesError> {
    let inbound = settings.inbound.as_ref().map(|i| i.listen.port());
    let transparent = settings.outbound.transparent.map(|t| t.port());
    if inbound.is_none() && transparent.is_none() {
        return Err(IptablesError::NothingToRedirect);
    }
    let rules = &settings.interception;
    let mut families = vec![(false, "iptables")];
    if rules.ipv6 {
        families.push((true, "ip6tables"));
    }
    let families = families
        .into_iter()
        .map(|(v6, binary)| {
            let mut chains = Vec::new();
            if let Some(port) = inbound {
                let mut list = Vec::new();
                let mut excluded = vec![settings.admin.port()];
                for p in &rules.exclude_inbound_ports {
                    if !excluded.contains(p) {
                        excluded.push(*p);
                    }
                }
                for p in excluded {
                    list.push(return_port(p));
                }
                let to = port.to_string();
                if rules.inbound_ports.is_empty() {
                    list.push(args(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to]));
                }
                for p in &rules.inbound_ports {
                    list.push(args(&[
                        "-p",
                        "tcp",
                        "--dport",
                        &p.to_string(),
                        "-j",
                        "REDIRECT",
                        "--to-ports",
                        &to,
                    ]));
                }
                chains.push(Chain {
                    name: INBOUND_CHAIN,
                    hook: "PREROUTING",
                    rules: list,
                });
            }
            if let Some(port) = transparent {
                let mut list = vec![args(&[
                    "-m",
                    "owner",
                    "--uid-owner",
                    &rules.proxy_uid.to_string(),
                    "-j",
                    "RETURN",
                ])];
                if let Some(gid) = rules.proxy_gid {
                    list.push(args(&[
                        "-m",
                        "owner",
                        "--gid-owner",
                        &gid.to_string(),
                        "-j",
                        "RETURN",
                    ]));
                }
                let loopback = if v6 { "::1/128" } else { "127.0.0.1/32" };
                list.push(args(&["-d", loopback, "-j", "RETURN"]));
                for p in &rules.exclude_outbound_ports {
                    list.push(return_port(*p));
                }
                for cidr in &rules.exclude_outbound_cidrs {
                    if cidr.is_ipv6() == v6 {
                        list.push(args(&["-d", &cidr.to_string(), "-j", "RETURN"]));
                    }
                }
                list.push(args(&[
                    "-p",
                    "tcp",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &port.to_string(),
                ]));
                chains.push(Chain {
                    name: OUTBOUND_CHAIN,
                    hook: "OUTPUT",
                    rules: list,
                });
            }
            Family { binary, chains }
        })
        .collect();
    Ok(Plan { families })
}

/// The jump from a chain's hook.
fn jump(chain: &Chain) -> Vec<String> {
    args(&[chain.hook, "-p", "tcp", "-j", chain.name])
}

impl Plan {
    /// The commands `apply` runs on a table without our chains, one a line.
    pub fn print(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            let bin = family.binary;
            for chain in &family.chains {
                let _ = writeln!(out, "{bin} -t nat -N {}", chain.name);
                for rule in &chain.rules {
                    let _ = writeln!(out, "{bin} -t nat -A {} {}", chain.name, rule.join(" "));
                }
                let _ = writeln!(out, "{bin} -t nat -A {}", jump(chain).join(" "));
            }
        }
        out
    }

    /// Writes the rules; running it twice leaves one copy.
    pub fn apply(&self) -> Result<(), IptablesError> {
        for family in &self.families {
            let bin = family.binary;
            for chain in &family.chains {
                if run(bin, &["-t", "nat", "-n", "-L", chain.name])?.success {
                    check(bin, &["-t", "nat", "-F", chain.name])?;
                } else {
                    check(bin, &["-t", "nat", "-N", chain.name])?;
                }
                for rule in &chain.rules {
                    let mut full = vec!["-t", "nat", "-A", chain.name];
                    full.extend(rule.iter().map(String::as_str));
                    check(bin, &full)?;
                }
                let jump = jump(chain);
                let mut probe = vec!["-t", "nat", "-C"];
                probe.extend(jump.iter().map(String::as_str));
                if !run(bin, &probe)?.success {
                    probe[2] = "-A";
                    check(bin, &probe)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the jumps and chains `apply` wrote (both chains, whatever the
    /// config says now); nothing else is touched.
    pub fn remove(&self) -> Result<(), IptablesError> {
        for family in &self.families {
            let bin = family.binary;
            for (name, hook) in [(INBOUND_CHAIN, "PREROUTING"), (OUTBOUND_CHAIN, "OUTPUT")] {
                let chain = Chain {
                    name,
                    hook,
                    rules: Vec::new(),
                };
                let jump = jump(&chain);
                let mut probe = vec!["-t", "nat", "-C"];
                probe.extend(jump.iter().map(String::as_str));
                while run(bin, &probe)?.success {
                    let mut delete = probe.clone();
                    delete[2] = "-D";
                    check(bin, &delete)?;
                }
                if run(bin, &["-t", "nat", "-n", "-L", name])?.success {
                    check(bin, &["-t", "nat", "-F", name])?;
                    check(bin, &["-t", "nat", "-X", name])?;
                }
            }
        }
        Ok(())
    }
}

struct Outcome {
    success: bool,
    stderr: String,
}

/// Runs `bin args`; a missing binary is its own error.
fn run(bin: &'static str, args: &[&str]) -> Result<Outcome, IptablesError> {
    let command = format!("{bin} {}", args.join(" "));
    // `-w`: wait for the xtables lock rather than fail when another writer holds it.
    let output = Command::new(bin)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => IptablesError::Missing(bin),
            _ => IptablesError::Io { command, source },
        })?;
    Ok(Outcome {
        success: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Runs `bin args`; failure is an error.
fn check(bin: &'static str, args: &[&str]) -> Result<(), IptablesError> {
    let outcome = run(bin, args)?;
    if outcome.success {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            command: format!("{bin} {}", args.join(" ")),
            stderr: outcome.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_lists_both_chains_for_both_families() {
        let settings = crate::config::load_str(
            "service: web\nadmin: { listen: 127.0.0.1:15000 }\ninbound: { listen: 0.0.0.0:15006, app: 127.0.0.1:8080 }\noutbound: { transparent: \"[::]:15002\" }\ninterception: { proxy_gid: 1337, exclude_outbound_ports: [22], exclude_outbound_cidrs: [10.0.0.0/8, \"fd00::/8\"] }\n",
        )
        .unwrap();
        let text = plan(&settings).unwrap().print();
        let expected = "\
iptables -t nat -N MESH_INBOUND
iptables -t nat -A MESH_INBOUND -p tcp --dport 15000 -j RETURN
iptables -t nat -A MESH_INBOUND -p tcp -j REDIRECT --to-ports 15006
iptables -t nat -A PREROUTING -p tcp -j MESH_INBOUND
iptables -t nat -N MESH_OUTBOUND
iptables -t nat -A MESH_OUTBOUND -m owner --uid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTBOUND -m owner --gid-owner 1337 -j RETURN
iptables -t nat -A MESH_OUTBOUND -d 127.0.0.1/32 -j RETURN
iptables -t nat -A MESH_OUTBOUND -p tcp --dport 22 -j RETURN
iptables -t nat -A MESH_OUTBOUND -d 10.0.0.0/8 -j RETURN
iptables -t nat -A MESH_OUTBOUND -p tcp -j REDIRECT --to-ports 15002
iptables -t nat -A OUTPUT -p tcp -j MESH_OUTBOUND
";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.contains("ip6tables -t nat -A MESH_OUTBOUND -d ::1/128 -j RETURN\n"));
        assert!(text.contains("ip6tables -t nat -A MESH_OUTBOUND -d fd00::/8 -j RETURN\n"));
        assert!(!text.contains("ip6tables -t nat -A MESH_OUTBOUND -d 10.0.0.0/8"));
    }

    #[test]
    fn chosen_inbound_ports_only_and_no_ipv6() {
        let settings = crate::config::load_str(
            "service: web\ninbound: { app: 127.0.0.1:8080 }\ninterception: { inbound_ports: [80, 443], ipv6: false }\n",
        )
        .unwrap();
        let text = plan(&settings).unwrap().print();
        assert!(text.contains("-A MESH_INBOUND -p tcp --dport 80 -j REDIRECT --to-ports 15006\n"));
        assert!(!text.contains("-p tcp -j REDIRECT"));
        assert!(!text.contains("ip6tables"));
        assert!(!text.contains("MESH_OUTBOUND"));
    }

    #[test]
    fn nothing_to_redirect_is_an_error() {
        let settings = crate::config::load_str("service: web\n").unwrap();
        assert!(matches!(
            plan(&settings),
            Err(IptablesError::NothingToRedirect)
        ));
    }

    #[test]
    fn bad_networks_are_config_errors() {
        let errors = crate::config::load_str(
            "service: web\ninterception: { exclude_outbound_cidrs: [10.0.0.0/33, nonsense] }\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].path, "interception.exclude_outbound_cidrs[0]");
    }
}
