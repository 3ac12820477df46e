//! The load generator (`xtask bench-load`), run in the lab's client namespace
//! and cgroup: new TCP connections (connect, request, response, close with RST
//! so TIME_WAIT never decides the figures), requests on kept-alive
//! connections, or UDP request/response (one unconnected socket per worker,
//! `sendto` each request, as resolvers do), for a fixed time, with
//! per-operation latencies.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::Workload;
use crate::lab;

/// One measurement, as printed by `xtask bench-load` (one line of key=value).
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub cpu_secs: f64,
}

impl Measure {
    pub fn to_line(self) -> String {
        format!(
            "ops_per_sec={:.1} p50_us={:.1} p99_us={:.1} errors={} cpu_secs={:.3}",
            self.ops_per_sec, self.p50_us, self.p99_us, self.errors, self.cpu_secs
        )
    }

    pub fn parse(line: &str) -> Result<Self> {
        let mut m = Measure::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("bad field {kv:?}"))?;
            match k {
                "ops_per_sec" => m.ops_per_sec = v.parse()?,
                "p50_us" => m.p50_us = v.parse()?,
                "p99_us" => m.p99_us = v.parse()?,
                "errors" => m.errors = v.parse()?,
                "cpu_secs" => m.cpu_secs = v.parse()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx])
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

/// Reads one HTTP response (headers + Content-Length body).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn close_with_rst(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `xtask bench-load`: runs in the client namespace and the lab cgroup.
pub fn load(
    cgroup: &Path,
    targets: &[SocketAddr],
    workload: Workload,
    seconds: u64,
    concurrency: u32,
) -> Result<()> {
    lab::join_cgroup(cgroup)?;
    if targets.is_empty() {
        bail!("no targets");
    }
    let deadline = Duration::from_secs(seconds);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency as usize)
        .map(|w| {
            let targets = targets.to_vec();
            std::thread::spawn(move || -> (Vec<u32>, u64) {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut buf = Vec::with_capacity(1024);
                let begin = Instant::now();
                let mut i = w;
                let mut conn: Option<TcpStream> = None;
                let mut udp: Option<UdpSocket> = None;
                let mut dgram = [0u8; 512];
                while begin.elapsed() < deadline {
                    let target = targets[i % targets.len()];
                    i += 1;
                    let t0 = Instant::now();
                    let ok = match workload {
                        Workload::New => (|| {
                            let mut s =
                                TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                            s.set_nodelay(true)?;
                            s.write_all(REQUEST)?;
                            read_response(&mut s, &mut buf)?;
                            close_with_rst(s);
                            std::io::Result::Ok(())
                        })(),
                        Workload::Keepalive => (|| {
                            if conn.is_none() {
                                let s = TcpStream::connect_timeout(
                                    &targets[w % targets.len()],
                                    Duration::from_secs(2),
                                )?;
                                s.set_nodelay(true)?;
                                conn = Some(s);
                            }
                            let s = conn.as_mut().expect("connected");
                            s.write_all(REQUEST)?;
                            read_response(s, &mut buf)
                        })(),
                        Workload::Udp => (|| {
                            if udp.is_none() {
                                let any: SocketAddr = if target.is_ipv4() {
                                    "0.0.0.0:0".parse().expect("address")
                                } else {
                                    "[::]:0".parse().expect("address")
                                };
                                let s = UdpSocket::bind(any)?;
                                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                                udp = Some(s);
                            }
                            let s = udp.as_ref().expect("bound");
                            s.send_to(b"ping", target)?;
                            s.recv_from(&mut dgram).map(drop)
                        })(),
                    };
                    match ok {
                        Ok(()) => {
                            lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                        }
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w
            .join()
            .map_err(|_| anyhow::anyhow!("load worker panicked"))?;
        all.extend(lat);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let m = Measure {
        ops_per_sec: all.len() as f64 / secs,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        errors,
        cpu_secs: cpu_seconds() - cpu0,
    };
    println!("{}", m.to_line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_line_round_trips() {
        let m = Measure {
            ops_per_sec: 1234.5,
            p50_us: 80.0,
            p99_us: 300.0,
            errors: 2,
            cpu_secs: 1.5,
        };
        let back = Measure::parse(&m.to_line()).unwrap();
        assert_eq!(
            (back.ops_per_sec, back.p99_us, back.errors),
            (1234.5, 300.0, 2)
        );
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
