//! `mesh-ctl apikey create` and `mesh-ctl apikey revoke`: edge API keys.
//! `create` makes a random key (32 bytes, base64url), prints it once and the
//! `{ consumer, sha256 }` entry the config (or a keys file) stores: the
//! proxy only ever sees the digest. `revoke` removes a consumer's entries
//! from a keys file, or says which lines to delete when the keys sit inline
//! in a config.
//! Writes: the keys file (`revoke`, replaced whole through a temporary file).
//! Errors: an unreadable or unwritable file, no entry for the consumer.

use std::fmt::Write as _;
use std::path::Path;

use mesh_api::config::ApiKey;

use crate::commands::Report;

/// `mesh-ctl apikey create`: a new key for `consumer`.
pub fn create(consumer: &str, name: Option<&str>) -> Report {
    if consumer.is_empty() || consumer.chars().any(char::is_control) {
        return failed(format!("invalid consumer {consumer:?}"));
    }
    let Some(key) = mesh_api::apikey::generate() else {
        return failed("the system's random source failed".into());
    };
    let entry = entry_line(consumer, &mesh_api::apikey::digest(&key));
    let target = match name {
        Some(name) => format!("edge.auth.api_keys.{name}.keys"),
        None => "the `keys:` of an edge.auth.api_keys entry".into(),
    };
    let mut stdout = String::new();
    let _ = writeln!(
        stdout,
        "# API key for consumer {consumer}: shown this once, keep it secret"
    );
    let _ = writeln!(stdout, "key: {key}");
    let _ = writeln!(stdout, "# add to {target} (or to its keys file):");
    let _ = writeln!(stdout, "{entry}");
    Report {
        stdout,
        problems: Vec::new(),
    }
}

/// `mesh-ctl apikey revoke`: removes `consumer`'s keys from `file`.
pub fn revoke(consumer: &str, file: &Path) -> Report {
    let shown = file.display();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => return failed(format!("cannot read {shown}: {err}")),
    };
    let Ok(keys) = ApiKey::parse_file(&text) else {
        return inline(consumer, file, &text);
    };
    let before = keys.len();
    let kept: Vec<ApiKey> = keys
        .into_iter()
        .filter(|k| k.consumer != consumer)
        .collect();
    let removed = before - kept.len();
    if removed == 0 {
        return failed(format!("no key of consumer {consumer:?} in {shown}"));
    }
    let mut out = String::from("# API keys: { consumer, sha256 } (mesh-ctl apikey create)\n");
    if kept.is_empty() {
        out.push_str("[]\n");
    }
    for key in &kept {
        out.push_str(&entry_line(&key.consumer, &key.sha256));
        out.push('\n');
    }
    if let Err(err) = replace(file, &out) {
        return failed(format!("cannot write {shown}: {err}"));
    }
    Report {
        stdout: format!(
            "removed {removed} key{} of consumer {consumer} from {shown}; reload the proxies to apply it\n",
            if removed == 1 { "" } else { "s" }
        ),
        problems: Vec::new(),
    }
}

/// Keys inline in a config: says which lines name the consumer.
fn inline(consumer: &str, file: &Path, text: &str) -> Report {
    let plain = format!("consumer: {consumer}");
    let quoted = format!("consumer: \"{consumer}\"");
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            line.split([',', '{', '}'])
                .map(|part| part.trim().trim_start_matches("- ").trim())
                .any(|part| part == plain || part == quoted)
        })
        .collect();
    if lines.is_empty() {
        return failed(format!(
            "no key of consumer {consumer:?} in {}",
            file.display()
        ));
    }
    let mut stdout = format!(
        "{} is not a keys file; delete these entries (with their sha256) and reload:\n",
        file.display()
    );
    for (i, line) in lines {
        let _ = writeln!(stdout, "{}:{}: {}", file.display(), i + 1, line.trim());
    }
    Report {
        stdout,
        problems: Vec::new(),
    }
}

/// Writes `text` to `file` through a temporary file in the same directory.
fn replace(file: &Path, text: &str) -> std::io::Result<()> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = file.with_file_name(name);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// One entry as a YAML flow mapping.
fn entry_line(consumer: &str, sha256: &str) -> String {
    let plain = consumer
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        && consumer.starts_with(|c: char| c.is_ascii_alphanumeric());
    let consumer = if plain {
        consumer.to_string()
    } else {
        serde_json::Value::from(consumer).to_string()
    };
    format!("- {{ consumer: {consumer}, sha256: {sha256} }}")
}

fn failed(problem: String) -> Report {
    Report {
        stdout: String::new(),
        problems: vec![problem],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_prints_a_key_and_its_entry() {
        let report = create("acme", Some("partners"));
        assert!(report.problems.is_empty());
        let key = report
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("key: "))
            .unwrap();
        assert_eq!(key.len(), 43);
        let entry = report.stdout.lines().last().unwrap();
        let parsed = ApiKey::parse_file(entry).unwrap();
        assert_eq!(parsed[0].consumer, "acme");
        assert_eq!(parsed[0].sha256, mesh_api::apikey::digest(key));
        assert!(report.stdout.contains("edge.auth.api_keys.partners.keys"));
        assert_ne!(create("acme", None).stdout, report.stdout);
    }

    #[test]
    fn revoke_removes_the_consumers_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.yaml");
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        std::fs::write(
            &file,
            format!("- {{ consumer: acme, sha256: {a} }}\n- consumer: other\n  sha256: {b}\n- {{ consumer: acme, sha256: {b}{b} }}\n"),
        )
        .unwrap();
        let report = revoke("acme", &file);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.stdout.contains("removed 2 keys"));
        let left = ApiKey::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].consumer, "other");
        assert!(!revoke("acme", &file).problems.is_empty());
        // Inline keys: the lines to delete.
        let config = dir.path().join("edge.yaml");
        std::fs::write(
            &config,
            format!("edge:\n  auth:\n    api_keys:\n      k:\n        keys:\n          - {{ consumer: other, sha256: {a} }}\n"),
        )
        .unwrap();
        let report = revoke("other", &config);
        assert!(report.problems.is_empty());
        assert!(report.stdout.contains("edge.yaml:6:"), "{}", report.stdout);
    }
}
