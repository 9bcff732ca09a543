//! Routing: which provider a request goes to and the upstream URI it becomes.
//!
//! Pure: a function of the request path and the provider table, nothing else.

use crate::config::Provider;
use std::collections::BTreeMap;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: &'a Provider,
    /// The path after the provider prefix, e.g. `/v1/chat/completions`. The parsers read this.
    pub rest_path: String,
    /// The full upstream path and query: base path prefix + rest + `?query`.
    pub upstream_path_and_query: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no provider for path {path}; use /{{provider}}/... with one of: {known}")]
    UnknownProvider { path: String, known: String },
    /// `.` or `..` segments (also percent-encoded, or hidden behind `%2f` or `\\`): on a
    /// server that normalises paths they would climb out of the provider's base path.
    #[error("the path has a dot-segment (. or ..), which llmtap does not forward")]
    DotSegment,
}

/// Whether a path has a `.` or `..` segment once percent-decoded, counting `/` and `\\`
/// (encoded or not) as separators, as some servers do.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = crate::headers::percent_decode(&segment.replace('+', "%2B"));
        decoded
            .split(['/', '\\'])
            .any(|part| part == "." || part == "..")
    })
}

/// Paths that identify their provider without a prefix.
const UNPREFIXED: &[(&str, &str)] = &[
    ("/v1/messages", "anthropic"),
    ("/v1/chat/completions", "openai"),
    ("/v1/responses", "openai"),
    ("/v1/embeddings", "openai"),
    ("/v1beta/models/", "gemini"),
];

/// Routes `/{provider}/{rest}?{query}` to `base_url + /{rest}?{query}`, and a few
/// well-known unprefixed paths by their shape.
pub fn route<'a>(
    path: &str,
    query: Option<&str>,
    providers: &'a BTreeMap<String, Provider>,
) -> Result<Route<'a>, RouteError> {
    if has_dot_segment(path) {
        return Err(RouteError::DotSegment);
    }
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let (first, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    };
    let (provider, rest_path) = match providers.get(first) {
        Some(p) => (p, rest.to_string()),
        None => {
            let name = UNPREFIXED
                .iter()
                .find(|(prefix, _)| {
                    path == *prefix
                        || (path.starts_with(prefix)
                            && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
                })
                .map(|(_, name)| *name);
            match name.and_then(|n| providers.get(n)) {
                Some(p) => (p, path.to_string()),
                None => {
                    return Err(RouteError::UnknownProvider {
                        path: path.to_string(),
                        known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
    };
    let rest_path = if rest_path.is_empty() {
        "/".to_string()
    } else {
        rest_path
    };
    let mut upstream = String::with_capacity(
        provider.base.path_prefix.len() + rest_path.len() + query.map_or(0, |q| q.len() + 1),
    );
    upstream.push_str(&provider.base.path_prefix);
    upstream.push_str(&rest_path);
    if let Some(q) = query {
        upstream.push('?');
        upstream.push_str(q);
    }
    Ok(Route {
        provider,
        rest_path,
        upstream_path_and_query: upstream,
    })
}

/// Routes a request a proxy client sent to a provider's own host (`src/intercept/`):
/// the path is the upstream path as sent, and the parsers read it without the
/// provider's base path prefix, as they would on the base-URL path.
pub fn route_for_host<'a>(
    path: &str,
    query: Option<&str>,
    provider: &'a Provider,
) -> Result<Route<'a>, RouteError> {
    if has_dot_segment(path) {
        return Err(RouteError::DotSegment);
    }
    let prefix = provider.base.path_prefix.as_str();
    let rest_path = match path.strip_prefix(prefix) {
        Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
            if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            }
        }
        _ => path.to_string(),
    };
    let mut upstream = path.to_string();
    if let Some(q) = query {
        upstream.push('?');
        upstream.push_str(q);
    }
    Ok(Route {
        provider,
        rest_path,
        upstream_path_and_query: upstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, RawConfig};

    fn providers() -> BTreeMap<String, Provider> {
        RawConfig::from_toml(
            "[providers.mock]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9999\"",
        )
        .unwrap()
        .validate(&Overrides::default())
        .unwrap()
        .providers
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        let providers = providers();
        for path in [
            "/mock/../../x",
            "/mock/v1/./messages",
            "/mock/%2e%2e/x",
            "/mock/.%2E/x",
            "/mock/a%2f..%2fx",
            "/mock/a%5c..%5cx",
            "/mock/..",
        ] {
            assert_eq!(
                route(path, None, &providers),
                Err(RouteError::DotSegment),
                "{path}"
            );
        }
        for path in ["/mock/v1/messages", "/mock/a..b/.x/x."] {
            assert!(route(path, None, &providers).is_ok(), "{path}");
        }
    }

    fn check(path: &str, query: Option<&str>, expected: Option<(&str, &str, &str)>) {
        let providers = providers();
        let got = route(path, query, &providers).ok().map(|r| {
            (
                r.provider.name.clone(),
                r.rest_path.clone(),
                r.upstream_path_and_query.clone(),
            )
        });
        let expected = expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
        assert_eq!(got, expected, "{path} ? {query:?}");
    }

    #[test]
    fn routes() {
        check(
            "/openai/v1/chat/completions",
            None,
            Some(("openai", "/v1/chat/completions", "/v1/chat/completions")),
        );
        check(
            "/groq/v1/chat/completions",
            None,
            Some((
                "groq",
                "/v1/chat/completions",
                "/openai/v1/chat/completions",
            )),
        );
        check(
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Some("alt=sse&key=abc"),
            Some((
                "gemini",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=abc",
            )),
        );
        check(
            "/mock/v1/messages",
            None,
            Some(("mock", "/v1/messages", "/v1/messages")),
        );
        check("/anthropic", None, Some(("anthropic", "/", "/")));
        // Unprefixed, routed by shape.
        check(
            "/v1/messages",
            None,
            Some(("anthropic", "/v1/messages", "/v1/messages")),
        );
        check(
            "/v1/messages/count_tokens",
            None,
            Some((
                "anthropic",
                "/v1/messages/count_tokens",
                "/v1/messages/count_tokens",
            )),
        );
        check(
            "/v1/responses",
            Some("x=1"),
            Some(("openai", "/v1/responses", "/v1/responses?x=1")),
        );
        check(
            "/v1/embeddings",
            None,
            Some(("openai", "/v1/embeddings", "/v1/embeddings")),
        );
        check(
            "/v1beta/models/gemini-pro:generateContent",
            None,
            Some((
                "gemini",
                "/v1beta/models/gemini-pro:generateContent",
                "/v1beta/models/gemini-pro:generateContent",
            )),
        );
        // Ambiguous or unknown.
        check("/v1/models", None, None);
        check("/v1/messagesX", None, None);
        check("/nope/v1/chat/completions", None, None);
        check("/", None, None);
    }

    #[test]
    fn unknown_lists_providers() {
        let providers = providers();
        let err = route("/nope/x", None, &providers).unwrap_err().to_string();
        assert!(err.contains("openai") && err.contains("mock"), "{err}");
    }

    #[test]
    fn host_routes_keep_the_path_and_read_it_without_the_base_prefix() {
        let providers = providers();
        let groq = &providers["groq"];
        let r = route_for_host("/openai/v1/chat/completions", Some("a=1"), groq).unwrap();
        assert_eq!(r.rest_path, "/v1/chat/completions");
        assert_eq!(r.upstream_path_and_query, "/openai/v1/chat/completions?a=1");
        // A path outside the prefix is read as it is.
        let r = route_for_host("/openaiX/v1", None, groq).unwrap();
        assert_eq!(r.rest_path, "/openaiX/v1");
        let openai = &providers["openai"];
        let r = route_for_host("/v1/responses", None, openai).unwrap();
        assert_eq!(r.rest_path, "/v1/responses");
        assert_eq!(
            route_for_host("/v1/%2e%2e/admin", None, openai),
            Err(RouteError::DotSegment)
        );
    }
}
