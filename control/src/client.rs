//! A minimal blocking HTTP/1.1 client for the control's and the agents' APIs
//! (tests, demo, benchmarks, `garrison-control agent revoke`): one request
//! per connection, `Connection: close`; TLS (rustls, our CA) and a session
//! token when given.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A response: status, headers (lowercase names), body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where and how to reach an API.
#[derive(Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Sent as `Authorization: token=…`.
    pub token: Option<String>,
}

impl ApiClient {
    /// Plain HTTP (loopback APIs).
    pub fn plain(addr: SocketAddr) -> ApiClient {
        ApiClient {
            addr,
            tls: None,
            token: None,
        }
    }

    /// HTTPS, trusting the CA certificates in `ca_pem`.
    pub fn tls(addr: SocketAddr, ca_pem: &[u8]) -> Result<ApiClient, crate::tls::TlsError> {
        Ok(ApiClient {
            addr,
            tls: Some(crate::tls::client_config(ca_pem)?),
            token: None,
        })
    }

    /// The same client with a session token.
    pub fn with_token(mut self, token: impl Into<String>) -> ApiClient {
        self.token = Some(token.into());
        self
    }

    /// The same client without a token.
    pub fn anonymous(&self) -> ApiClient {
        ApiClient {
            token: None,
            ..self.clone()
        }
    }

    /// `method path` with an optional JSON body: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let r = self.request_full(method, path, json, &[])?;
        Ok((r.status, r.body))
    }

    /// The same with extra headers, answering headers too.
    pub fn request_full(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
        extra: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = &self.token {
            headers.push(("Authorization".into(), format!("token={t}")));
        }
        let request = format_request(self.addr, method, path, json, &headers);
        let raw = match &self.tls {
            None => exchange(tcp, request.as_bytes())?,
            Some(config) => {
                let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                exchange(rustls::StreamOwned::new(conn, tcp), request.as_bytes())?
            }
        };
        parse_reply(&raw)
    }

    /// Logs in with a password: the session token.
    pub fn login(&self, uid: &str, password: &str) -> std::io::Result<String> {
        let body = serde_json::json!({"uid": uid, "password": password}).to_string();
        let (status, text) =
            self.anonymous()
                .request("POST", "/acs/api/v1/auth/login", Some(&body))?;
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "login as {uid}: {status} {text}"
            )));
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .ok_or_else(|| std::io::Error::other(format!("login as {uid}: no token in {text}")))
    }
}

fn format_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    headers: &[(String, String)],
) -> String {
    let body = json.unwrap_or("");
    let ctype = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{ctype}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes the request in one go (a server answering after the first segment
/// must not see the rest arrive after it closed) and reads to the end. A
/// TLS peer closing without close_notify ends the reply too.
fn exchange(mut s: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(request)?;
    s.flush()?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}

fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The body of a chunked reply (sizes in hex, each chunk then CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// `method path` over plain HTTP with an optional JSON body: (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    ApiClient::plain(addr).request(method, path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_headers_and_chunks() {
        let r = parse_reply(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: oauthjwt\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("oauthjwt"));
        assert_eq!(r.body, "{}");
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
        assert!(parse_reply(b"garbage").is_err());
    }
}
