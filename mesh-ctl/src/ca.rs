//! `mesh-ctl ca init` and `mesh-ctl ca issue`: the mesh CA and workload
//! certificates, made by `mesh_api::ca`; this module only says what was written.
//! Reads and writes: the CA and workload directories (see `mesh_api::ca`).
//! Errors: a `CaError` becomes the command's one problem (exit status 1).

use std::path::Path;
use std::time::Duration;

use mesh_api::ca::{self, CaError, CaPaths, IssuedPaths};

use crate::commands::{human_duration, Report};

/// `mesh-ctl ca init`: a root and an intermediate CA for `trust_domain` in `out`.
pub fn init(trust_domain: &str, out: &Path, force: bool) -> Report {
    outcome(ca::init(trust_domain, out, force).map(|paths| init_text(trust_domain, out, &paths)))
}

/// `mesh-ctl ca issue`: a workload certificate for `service`, signed by the
/// CA in `ca_dir`, valid for `ttl`, written in `out`.
pub fn issue(ca_dir: &Path, service: &str, ttl: Duration, out: &Path, force: bool) -> Report {
    outcome(
        ca::issue(ca_dir, service, ttl, out, force)
            .map(|issued| issue_text(&issued.spiffe_id, &issued, ttl)),
    )
}

/// `mesh-ctl ca issue --host ...`: a server certificate for DNS names
/// (public TLS on edge listeners), signed by the CA in `ca_dir`.
pub fn issue_server(
    ca_dir: &Path,
    hosts: &[String],
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Report {
    outcome(
        ca::issue_server(ca_dir, hosts, ttl, out, force).map(|issued| {
            issue_text(
                &format!("server certificate for {}", hosts.join(", ")),
                &issued,
                ttl,
            )
        }),
    )
}

fn outcome(result: Result<String, CaError>) -> Report {
    match result {
        Ok(stdout) => Report {
            stdout,
            problems: Vec::new(),
        },
        Err(err) => Report {
            stdout: String::new(),
            problems: vec![err.to_string()],
        },
    }
}

fn init_text(trust_domain: &str, out: &Path, paths: &CaPaths) -> String {
    let mut text = format!(
        "created the mesh CA of trust domain {trust_domain} in {}\n",
        out.display()
    );
    for (what, path) in [
        ("root CA", &paths.root),
        ("root CA key", &paths.root_key),
        ("intermediate CA", &paths.intermediate),
        ("intermediate key", &paths.intermediate_key),
        ("trust bundle", &paths.bundle),
        ("trust domain", &paths.trust_domain),
    ] {
        text.push_str(&format!("  {what:<17} {}\n", path.display()));
    }
    text.push_str(&format!(
        "keys are mode 0600; keep root-key.pem offline.\n\
         the intermediate expires {}; issue workload certificates with\n  \
         mesh-ctl ca issue --ca {} --service NAME --out DIR\n",
        ca::format_utc(paths.intermediate_not_after),
        out.display()
    ));
    text
}

fn issue_text(what: &str, issued: &IssuedPaths, ttl: Duration) -> String {
    let mut text = format!("issued {what}\n");
    for (what, value) in [
        ("serial", issued.serial.clone()),
        (
            "expires",
            format!(
                "{} (in {})",
                ca::format_utc(issued.not_after),
                human_duration(ttl.as_secs())
            ),
        ),
        (
            "certificate",
            format!("{} (leaf, then intermediate)", issued.cert.display()),
        ),
        ("key", format!("{} (mode 0600)", issued.key.display())),
        ("trust bundle", issued.bundle.display().to_string()),
    ] {
        text.push_str(&format!("  {what:<13} {value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_issue_say_what_they_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let report = init("mesh.local", &ca_dir, false);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.stdout.starts_with(&format!(
            "created the mesh CA of trust domain mesh.local in {}\n  root CA           {}\n",
            ca_dir.display(),
            ca_dir.join("root.pem").display()
        )));

        let web = dir.path().join("web");
        let report = issue(&ca_dir, "web", Duration::from_secs(86_400), &web, false);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let lines: Vec<&str> = report.stdout.lines().collect();
        assert_eq!(lines[0], "issued spiffe://mesh.local/svc/web");
        assert!(lines[1].starts_with("  serial        "), "{}", lines[1]);
        assert!(lines[2].ends_with("Z (in 1d)"), "{}", lines[2]);
        assert_eq!(
            lines[4],
            format!(
                "  key           {} (mode 0600)",
                web.join("key.pem").display()
            )
        );

        let api = dir.path().join("api");
        let hosts = ["api.example.test".to_string(), "*.example.test".to_string()];
        let report = issue_server(&ca_dir, &hosts, Duration::from_secs(3600), &api, false);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report
            .stdout
            .starts_with("issued server certificate for api.example.test, *.example.test\n"));
        let bad = issue_server(
            &ca_dir,
            &["bad name".to_string()],
            Duration::from_secs(3600),
            &api,
            true,
        );
        assert_eq!(bad.problems.len(), 1);

        // Again without --force: refused, exit status 1.
        let report = issue(&ca_dir, "web", Duration::from_secs(86_400), &web, false);
        assert_eq!(report.stdout, "");
        assert_eq!(
            report.problems,
            [format!(
                "{} exists; pass --force to replace it",
                web.join("cert.pem").display()
            )]
        );
    }
}
