//! Which proxies a command asks: `--admin ADDR` (repeatable), an inventory
//! file (`--inventory FILE`) and a DNS SRV name (`--srv NAME`, through
//! [`dns`](crate::dns)), in that order, duplicates dropped; none of them:
//! `$MESH_ADMIN`, else the default address.
//!
//! An inventory file has one proxy per line, `NAME ADDR` or just `ADDR`;
//! blank lines and `#` comments are skipped:
//!
//! ```text
//! # name   admin address
//! web      10.0.0.5:15000
//! orders   10.0.0.6:15000
//! ```
//!
//! Errors: an unreadable file, a malformed line (with its number), a DNS
//! failure; each a message for the user.

use std::path::Path;
use std::time::Duration;

/// Where to find proxies besides `--admin`.
#[derive(Debug, Default, Clone)]
pub struct Sources<'a> {
    pub admins: &'a [String],
    pub inventory: Option<&'a Path>,
    pub srv: Option<&'a str>,
    pub dns: Option<&'a str>,
}

/// The admin addresses of every source, in order, without duplicates;
/// empty when no source was given.
pub fn admins(sources: &Sources<'_>, timeout: Duration) -> Result<Vec<String>, String> {
    let mut all: Vec<String> = sources.admins.to_vec();
    if let Some(path) = sources.inventory {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("inventory {}: {e}", path.display()))?;
        let entries =
            parse_inventory(&text).map_err(|e| format!("inventory {}: {e}", path.display()))?;
        all.extend(entries.into_iter().map(|(_, addr)| addr));
    }
    if let Some(name) = sources.srv {
        let server = crate::dns::nameserver(sources.dns)?;
        all.extend(crate::dns::resolve_srv(name, server, timeout)?);
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|addr| seen.insert(addr.clone()));
    Ok(all)
}

/// `(name, addr)` per line; the name is the address when only that is given.
pub fn parse_inventory(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, addr) = match fields.as_slice() {
            [addr] => (*addr, *addr),
            [name, addr] => (*name, *addr),
            _ => {
                return Err(format!(
                    "line {}: expected `NAME ADDR` or `ADDR`, got {line:?}",
                    number + 1
                ))
            }
        };
        if !addr.contains(':') {
            return Err(format!("line {}: {addr:?} is not HOST:PORT", number + 1));
        }
        entries.push((name.to_string(), addr.to_string()));
    }
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inventory_lines_are_name_and_address() {
        let text = "# proxies\nweb 127.0.0.1:1\n\n127.0.0.1:2  # no name\norders\t127.0.0.1:3\n";
        assert_eq!(
            parse_inventory(text).unwrap(),
            [
                ("web".to_string(), "127.0.0.1:1".to_string()),
                ("127.0.0.1:2".into(), "127.0.0.1:2".into()),
                ("orders".into(), "127.0.0.1:3".into()),
            ]
        );
        assert!(parse_inventory("web 127.0.0.1:1 extra")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_inventory("\nweb nowhere")
            .unwrap_err()
            .contains("line 2"));
    }

    #[test]
    fn sources_are_merged_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory");
        std::fs::write(&path, "a 127.0.0.1:1\nb 127.0.0.1:2\n").unwrap();
        let given = ["127.0.0.1:2".to_string(), "127.0.0.1:9".to_string()];
        let sources = Sources {
            admins: &given,
            inventory: Some(&path),
            ..Sources::default()
        };
        assert_eq!(
            admins(&sources, Duration::from_secs(1)).unwrap(),
            ["127.0.0.1:2", "127.0.0.1:9", "127.0.0.1:1"]
        );
        let missing = Sources {
            inventory: Some(Path::new("/nonexistent/inventory")),
            ..Sources::default()
        };
        assert!(admins(&missing, Duration::from_secs(1)).is_err());
    }
}
