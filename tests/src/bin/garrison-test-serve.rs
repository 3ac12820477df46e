//! A tiny HTTP server for tasks in the tests: `garrison-test-serve PORT NAME`
//! listens on 0.0.0.0:PORT; `GET /health` answers 200, or 503 while a file
//! named `unhealthy` exists in the working directory (the task's sandbox);
//! every other path answers 200 with NAME as the body.
use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: garrison-test-serve PORT NAME");
    let name = args.next().unwrap_or_else(|| "unnamed".into());
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let name = name.clone();
        std::thread::spawn(move || {
            // Read the whole head (closing with unread data would reset).
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = if path == "/health" {
                if std::path::Path::new("unhealthy").exists() {
                    ("503 Service Unavailable", "unhealthy".to_string())
                } else {
                    ("200 OK", "ok".to_string())
                }
            } else {
                ("200 OK", name)
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}
