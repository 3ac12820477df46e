//! Fetching a source document from a URL: `http://HOST[:PORT]/PATH` (plain
//! HTTP/1.1, as a Mesos agent serves `/state` on 5051) or `file:///PATH`.
//! Bounded in time and size; errors say which URL and why.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest document accepted (a large master state is a few MB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{url}: unsupported URL (use http://HOST:PORT/PATH or file:///PATH; https is not supported)"
    )]
    Unsupported { url: String },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: malformed HTTP response: {why}")]
    Malformed { url: String, why: String },
    #[error("{url}: document larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Splits an `http://` URL; `None` for anything else.
pub fn parse_http_url(url: &str) -> Option<HttpUrl> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h.split_once(']')?;
        (
            h.to_string(),
            p.strip_prefix(':').map_or(Some(80), |p| p.parse().ok())?,
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 80),
        }
    };
    (!host.is_empty()).then(|| HttpUrl {
        host,
        port,
        path: path.to_string(),
    })
}

/// Fetches `url` within `timeout`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<String, FetchError> {
    match tokio::time::timeout(timeout, fetch_inner(url)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout {
            url: url.to_string(),
            secs: timeout.as_secs(),
        }),
    }
}

async fn fetch_inner(url: &str) -> Result<String, FetchError> {
    let io = |source| FetchError::Io {
        url: url.to_string(),
        source,
    };
    if let Some(path) = url.strip_prefix("file://") {
        return tokio::fs::read_to_string(path).await.map_err(io);
    }
    let u = parse_http_url(url).ok_or_else(|| FetchError::Unsupported {
        url: url.to_string(),
    })?;
    let mut stream = tokio::net::TcpStream::connect((u.host.as_str(), u.port))
        .await
        .map_err(io)?;
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: garrison-agent\r\n\r\n",
        u.path, u.port
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_BODY {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
            });
        }
    }
    parse_response(url, &raw)
}

/// Status, headers and body (plain or chunked) of a complete HTTP/1.1 response.
pub fn parse_response(url: &str, raw: &[u8]) -> Result<String, FetchError> {
    let bad = |why: &str| FetchError::Malformed {
        url: url.to_string(),
        why: why.to_string(),
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    if !(200..300).contains(&status) {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
        });
    }
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked encoding"))?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://10.0.0.1:5051/state").unwrap(),
            HttpUrl {
                host: "10.0.0.1".into(),
                port: 5051,
                path: "/state".into()
            }
        );
        assert_eq!(
            parse_http_url("http://leader.mesos/state").unwrap().port,
            80
        );
        assert_eq!(
            parse_http_url("http://[::1]:5051/state").unwrap().host,
            "::1"
        );
        assert!(parse_http_url("https://x/state").is_none());
        assert!(parse_http_url("http://:80/").is_none());
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response("u", ok).unwrap(), "{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response("u", chunked).unwrap(), "{\"a\":1}");
        let e = parse_response("http://x/state", b"HTTP/1.1 503 Busy\r\n\r\n").unwrap_err();
        assert!(
            e.to_string().contains("http://x/state") && e.to_string().contains("503"),
            "{e}"
        );
        assert!(matches!(
            parse_response("u", b"garbage"),
            Err(FetchError::Malformed { .. })
        ));
    }

    #[tokio::test]
    async fn unsupported_and_unreachable() {
        let e = fetch("https://example.invalid/state", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Unsupported { .. }), "{e}");
        let e = fetch(
            "file:///nonexistent/garrison/state.json",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/garrison/state.json"),
            "{e}"
        );
    }
}
