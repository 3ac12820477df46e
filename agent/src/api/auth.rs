//! Who may call the agent's API (the decisions are pure; [`guard`] applies
//! them to every request of every route, over TCP and the Unix socket).
//!
//! - **Host** (every route): the `Host` header must be an IP literal
//!   (`10.0.0.1`, `[fd00::1]`, with an optional port) or `localhost[:port]`,
//!   so a web page whose name was re-pointed at this host (DNS rebinding)
//!   cannot read or drive the API from a browser. An HTTP/1.1 request without
//!   `Host` is refused too (HTTP/1.0 may omit it).
//! - **Mutations** (every method but GET, HEAD and OPTIONS, on every route):
//!   the agent's API token as `Authorization: Bearer <token>` or
//!   `Authorization: token=<token>` (compared in constant time), or a request
//!   over the Unix socket from a peer whose uid is 0 (`SO_PEERCRED`).
//! - **Reads** need neither.
//!
//! A refusal is `{"error": code, "message": what is missing}` with a 4xx.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use axum::{
    Json,
    extract::{ConnectInfo, Request, State, connect_info::Connected},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header},
    middleware::Next,
    response::{IntoResponse, Response},
    serve::IncomingStream,
};

/// What a request is checked against.
pub struct ApiAccess {
    token: String,
    /// Where the token is, for error messages.
    pub token_file: PathBuf,
    /// The Unix socket's path, if one is served (for error messages).
    pub socket: Option<PathBuf>,
}

impl ApiAccess {
    pub fn new(token: String, token_file: PathBuf, socket: Option<PathBuf>) -> Self {
        ApiAccess {
            token,
            token_file,
            socket,
        }
    }
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("token", &"(hidden)")
            .field("token_file", &self.token_file)
            .field("socket", &self.socket)
            .finish()
    }
}

/// The peer of a Unix-socket connection: its uid from `SO_PEERCRED`
/// (`None` if the kernel would not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeer {
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        UnixPeer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// How a request reached the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix(UnixPeer),
}

/// A refused request: status, error code and what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.code, "message": self.message }));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"garrison-agent\""),
            );
        }
        r
    }
}

/// Whether `port` is a port number (1 to 5 digits, at most 65535).
fn is_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

/// Whether a `Host` value names this host without DNS: an IPv4 literal, a
/// bracketed IPv6 literal or `localhost`, each with an optional port.
pub fn host_is_literal(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok && ip.parse::<Ipv6Addr>().is_ok();
    }
    let (name, port_ok) = match host.split_once(':') {
        Some((name, port)) => (name, is_port(port)),
        None => (host, true),
    };
    port_ok && (name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok())
}

/// The Host rule, on every route (see the module documentation).
pub fn check_host(headers: &HeaderMap, version: Version) -> Result<(), Refusal> {
    let refuse = |status, code, message: String| Refusal {
        status,
        code,
        message,
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(value) = hosts.next() else {
        if version == Version::HTTP_10 || version == Version::HTTP_09 {
            return Ok(());
        }
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "missing_host",
            "the request has no Host header: send Host: localhost or the IP address you connect to"
                .into(),
        ));
    };
    if hosts.next().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_host",
            "the request has more than one Host header".into(),
        ));
    }
    let host = value.to_str().unwrap_or("");
    if host_is_literal(host) {
        return Ok(());
    }
    Err(refuse(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        format!(
            "Host {:?} is not an IP address or localhost: the agent's API answers only requests addressed to an IP literal or localhost (a DNS name could be re-pointed at this host by a web page: DNS rebinding)",
            String::from_utf8_lossy(value.as_bytes())
        ),
    ))
}

/// Whether `method` changes something (needs the token or root over the
/// Unix socket).
pub fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token a request presents: `Authorization: Bearer <t>` (scheme in any
/// case) or `Authorization: token=<t>` (DC/OS).
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(t) = value.strip_prefix("token=") {
        return Some(t.trim());
    }
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right (the length is not secret).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// The mutation rule: the token, or root over the Unix socket.
pub fn check_mutation(
    access: &ApiAccess,
    transport: Transport,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if !is_mutation(method) {
        return Ok(());
    }
    if let Transport::Unix(UnixPeer { uid: Some(0) }) = transport {
        return Ok(());
    }
    let how = match &access.socket {
        Some(s) => format!(
            "send the agent's API token as Authorization: Bearer <token> (it is in {}, readable by root), or call over the Unix socket {} as root",
            access.token_file.display(),
            s.display()
        ),
        None => format!(
            "send the agent's API token as Authorization: Bearer <token> (it is in {}, readable by root)",
            access.token_file.display()
        ),
    };
    let peer = match transport {
        Transport::Unix(UnixPeer { uid: Some(uid) }) => {
            format!(" (Unix socket peer uid {uid} is not root)")
        }
        Transport::Unix(UnixPeer { uid: None }) => " (Unix socket peer uid unknown)".into(),
        Transport::Tcp => String::new(),
    };
    match presented_token(headers) {
        Some(given) if token_matches(&access.token, given) => Ok(()),
        Some(_) => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: format!(
                "{method} {path}: the API token given does not match the agent's{peer}; {how}"
            ),
        }),
        None => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: format!(
                "{method} {path} changes the agent and needs its API token{peer}: {how}"
            ),
        }),
    }
}

/// Middleware over every route: the Host rule, then the mutation rule.
pub async fn guard(State(access): State<Arc<ApiAccess>>, req: Request, next: Next) -> Response {
    let transport = match req.extensions().get::<ConnectInfo<UnixPeer>>() {
        Some(ConnectInfo(peer)) => Transport::Unix(*peer),
        None => Transport::Tcp,
    };
    let checked = check_host(req.headers(), req.version()).and_then(|()| {
        check_mutation(
            &access,
            transport,
            req.method(),
            req.uri().path(),
            req.headers(),
        )
    });
    if let Err(refusal) = checked {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| format!("{transport:?}"));
        tracing::info!(%peer, method = %req.method(), path = %req.uri().path(), code = refusal.code, "API request refused");
        return refusal.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_must_be_an_ip_literal_or_localhost() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:61421",
            "10.0.0.5:1",
            "[::1]",
            "[::1]:61421",
            "[fd00::5]:80",
            "localhost",
            "LOCALHOST:61421",
        ] {
            assert!(host_is_literal(ok), "{ok} accepted");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:61421",
            "127.0.0.1.nip.io",
            "localhost.",
            "localhost.evil.example",
            "0x7f.0.0.1",
            "127.1",
            "::1",
            "[::1",
            "[::1]x",
            "[fe80::1%eth0]",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:80:80",
            "[::1]:",
            "localhost:http",
        ] {
            assert!(!host_is_literal(bad), "{bad:?} refused");
        }
    }

    #[test]
    fn the_host_rule_refuses_names_missing_and_repeated_hosts() {
        assert!(check_host(&headers(&[("host", "127.0.0.1:61421")]), Version::HTTP_11).is_ok());
        let r = check_host(
            &headers(&[("host", "rebind.evil.example:61421")]),
            Version::HTTP_11,
        )
        .unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.message.contains("rebind.evil.example"), "{}", r.message);
        let r = check_host(&HeaderMap::new(), Version::HTTP_11).unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_REQUEST, "missing_host")
        );
        assert!(
            check_host(&HeaderMap::new(), Version::HTTP_10).is_ok(),
            "HTTP/1.0 may omit Host"
        );
        let r = check_host(
            &headers(&[("host", "127.0.0.1"), ("host", "evil.example")]),
            Version::HTTP_11,
        )
        .unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    fn access() -> ApiAccess {
        ApiAccess::new(
            "0123456789abcdef0123456789abcdef".into(),
            "/var/lib/garrison/api-token".into(),
            Some("/var/lib/garrison/agent.sock".into()),
        )
    }

    #[test]
    fn mutations_need_the_token_or_root_over_the_unix_socket() {
        let a = access();
        let post = Method::POST;
        let path = "/v1/tasks";
        let check = |t: Transport, m: &Method, h: &HeaderMap| check_mutation(&a, t, m, path, h);
        let none = HeaderMap::new();
        assert!(
            check(Transport::Tcp, &Method::GET, &none).is_ok(),
            "reads are open"
        );
        assert!(check(Transport::Tcp, &Method::HEAD, &none).is_ok());

        let r = check(Transport::Tcp, &post, &none).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(
            r.message.contains("/var/lib/garrison/api-token")
                && r.message.contains("/var/lib/garrison/agent.sock")
                && r.message.contains("POST /v1/tasks"),
            "the error names what is missing: {}",
            r.message
        );
        assert!(check(Transport::Tcp, &Method::DELETE, &none).is_err());
        assert!(check(Transport::Tcp, &Method::PUT, &none).is_err());

        let token = "0123456789abcdef0123456789abcdef";
        for good in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("token={token}"),
            format!("  Bearer   {token}  "),
        ] {
            let h = headers(&[("authorization", &good)]);
            assert!(check(Transport::Tcp, &post, &h).is_ok(), "{good:?}");
        }
        for bad in [
            "Bearer 0123456789abcdef0123456789abcdee".to_string(),
            format!("Bearer {token}x"),
            "Bearer".to_string(),
            format!("Basic {token}"),
            token.to_string(),
        ] {
            let h = headers(&[("authorization", &bad)]);
            let r = check(Transport::Tcp, &post, &h).unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }

        let root = Transport::Unix(UnixPeer { uid: Some(0) });
        let user = Transport::Unix(UnixPeer { uid: Some(1000) });
        assert!(check(root, &post, &none).is_ok(), "root over the socket");
        let r = check(user, &post, &none).unwrap_err();
        assert!(r.message.contains("uid 1000"), "{}", r.message);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert!(
            check(user, &post, &h).is_ok(),
            "the token works over the socket too"
        );
        let unknown = Transport::Unix(UnixPeer { uid: None });
        assert!(check(unknown, &post, &none).is_err());
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }
}
