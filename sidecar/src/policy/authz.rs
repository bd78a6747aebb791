//! Authorization as data: a pure function of the rules, the caller's
//! verified identity and (for HTTP) the method and path. A request is
//! allowed when any rule matches; rules that name methods or paths apply to
//! HTTP requests only, so opaque TCP needs a rule with identities alone.

use crate::config::AuthzRule;

/// What is being authorized: an HTTP request, or an opaque connection.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// An HTTP request (gRPC methods are paths).
    Http {
        /// Upper-case method.
        method: &'a str,
        /// Request path.
        path: &'a str,
    },
    /// A whole opaque TCP connection.
    Tcp,
}

/// Whether `caller` (its SPIFFE ID, if verified) may have `access`.
pub fn allows(rules: &[AuthzRule], caller: Option<&str>, access: Access<'_>) -> bool {
    rules.iter().any(|rule| {
        rule.allow
            .iter()
            .any(|pattern| identity_matches(pattern, caller))
            && match access {
                Access::Tcp => rule.methods.is_empty() && rule.paths.is_empty(),
                Access::Http { method, path } => {
                    (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
                        && (rule.paths.is_empty()
                            || rule.paths.iter().any(|p| pattern_matches(p, path)))
                }
            }
    })
}

/// `"*"` matches any caller, even an unauthenticated one; other patterns
/// need a verified identity.
fn identity_matches(pattern: &str, caller: Option<&str>) -> bool {
    pattern == "*" || caller.is_some_and(|caller| pattern_matches(pattern, caller))
}

/// Exact, or a prefix when the pattern ends in `*`.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: &[&str], methods: &[&str], paths: &[&str]) -> AuthzRule {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        AuthzRule {
            allow: owned(allow),
            methods: owned(methods),
            paths: owned(paths),
        }
    }

    const WEB: &str = "spiffe://mesh.local/svc/web";

    #[test]
    fn first_matching_rule_allows() {
        let rules = [
            rule(
                &[WEB],
                &["GET", "POST"],
                &["/orders.v1.Orders/*", "/healthz"],
            ),
            rule(&["spiffe://mesh.local/svc/edge*"], &[], &[]),
        ];
        let get = |path| Access::Http {
            method: "GET",
            path,
        };
        assert!(allows(&rules, Some(WEB), get("/orders.v1.Orders/GetOrder")));
        assert!(allows(&rules, Some(WEB), get("/healthz")));
        assert!(!allows(&rules, Some(WEB), get("/healthz/x")));
        assert!(!allows(
            &rules,
            Some(WEB),
            Access::Http {
                method: "DELETE",
                path: "/healthz"
            }
        ));
        assert!(allows(
            &rules,
            Some("spiffe://mesh.local/svc/edge-eu"),
            get("/anything")
        ));
        assert!(!allows(
            &rules,
            Some("spiffe://mesh.local/svc/billing"),
            get("/healthz")
        ));
        assert!(
            !allows(&rules, None, get("/healthz")),
            "unauthenticated callers match no identity"
        );
    }

    #[test]
    fn tcp_needs_an_identity_only_rule() {
        let http_only = [rule(&[WEB], &["GET"], &[])];
        assert!(!allows(&http_only, Some(WEB), Access::Tcp));
        let any = [rule(&["*"], &[], &[])];
        assert!(allows(&any, None, Access::Tcp));
        assert!(
            !allows(&[], Some(WEB), Access::Tcp),
            "no rule: nothing is allowed"
        );
    }
}
