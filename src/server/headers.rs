//! Security headers on every answer: a Content-Security-Policy that lets pages run only
//! our own scripts and styles and never be framed (an admit click must not be
//! clickjacked), no referrer (a join link's code is in the URL), no MIME sniffing, HSTS
//! when the operator's own certificate is served, and no caching of API answers (some
//! carry tokens).

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::{self, HeaderName};
use axum::middleware::Next;
use axum::response::Response;

/// HSTS lifetime: one year, the value browsers' preload lists expect.
const HSTS: &str = "max-age=31536000";

/// What this server adds to its answers; built once at start.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// The whole Content-Security-Policy value.
    csp: HeaderValue,
    /// Only with a configured certificate: a generated development certificate is
    /// trusted by nobody, and pinning HTTPS to it would lock browsers out of a host
    /// that later serves plain HTTP or another name.
    hsts: bool,
}

impl SecurityHeaders {
    /// `public_url` is the gateway's advertised `https://host[:port]`; `hsts` whether a
    /// real (configured) certificate is in use.
    pub fn new(public_url: &str, hsts: bool) -> Self {
        let csp = content_security_policy(public_url);
        SecurityHeaders {
            csp: HeaderValue::from_str(&csp).expect("the policy is built from a parsed URL's ASCII origin"),
            hsts,
        }
    }

    /// The headers an answer to `path` carries.
    pub fn for_path(&self, path: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![
            (header::CONTENT_SECURITY_POLICY, self.csp.clone()),
            // For browsers that predate `frame-ancestors`.
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        if self.hsts {
            headers.push((header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS)));
        }
        if path == "/api" || path.starts_with("/api/") {
            headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        }
        headers
    }
}

/// Our own scripts, styles and connections only. `connect-src 'self'` covers the page's
/// own `wss:` origin in current browsers; the public origin's `wss:` form is named too,
/// for browsers that read `'self'` as `https:` only.
fn content_security_policy(public_url: &str) -> String {
    let wss = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| o.ascii_serialization())
        .and_then(|o| {
            o.strip_prefix("https://")
                .map(|rest| format!(" wss://{rest}"))
                .or_else(|| o.strip_prefix("http://").map(|rest| format!(" ws://{rest}")))
        })
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; \
         connect-src 'self'{wss}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Middleware: adds [`SecurityHeaders::for_path`] to every answer, replacing any value
/// a handler set for the same names.
pub async fn add(State(security): State<std::sync::Arc<SecurityHeaders>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in security.for_path(&path) {
        headers.insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn pages_get_the_policy_and_no_cache_rule() {
        let h = SecurityHeaders::new("https://meet.example.org", false).for_path("/j/abc");
        let csp = get(&h, &header::CONTENT_SECURITY_POLICY).unwrap();
        for directive in [
            "script-src 'self';",
            "style-src 'self';",
            "frame-ancestors 'none'",
            "connect-src 'self' wss://meet.example.org;",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(get(&h, &header::REFERRER_POLICY), Some("no-referrer"));
        assert_eq!(get(&h, &header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
        assert_eq!(get(&h, &header::X_FRAME_OPTIONS), Some("DENY"));
        assert_eq!(get(&h, &header::CACHE_CONTROL), None, "pages may be cached");
        assert_eq!(
            get(&h, &header::STRICT_TRANSPORT_SECURITY),
            None,
            "no HSTS without a real certificate"
        );
    }

    #[test]
    fn api_answers_are_not_stored() {
        let s = SecurityHeaders::new("https://localhost:7880", true);
        for path in ["/api/v1/links/x/redeem", "/api", "/api/v1/meetings"] {
            assert_eq!(
                get(&s.for_path(path), &header::CACHE_CONTROL),
                Some("no-store"),
                "{path}"
            );
        }
        for path in ["/apis", "/static/api.js", "/console"] {
            assert_eq!(get(&s.for_path(path), &header::CACHE_CONTROL), None, "{path}");
        }
        assert_eq!(get(&s.for_path("/"), &header::STRICT_TRANSPORT_SECURITY), Some(HSTS));
    }

    #[test]
    fn the_public_origin_names_its_socket_scheme() {
        assert!(
            content_security_policy("https://localhost:7880/").contains("connect-src 'self' wss://localhost:7880;")
        );
        assert!(content_security_policy("http://10.0.0.1:8080").contains("connect-src 'self' ws://10.0.0.1:8080;"));
        // A URL that does not parse still gives a working (same-origin only) policy.
        assert!(content_security_policy("not a url").contains("connect-src 'self';"));
    }
}
