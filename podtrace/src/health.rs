//! `podtrace health`: asks a running tracer's `/healthz` (on `--metrics-addr`) whether its
//! event loop is making progress. A tiny HTTP/1.0 client over a std `TcpStream`, all within
//! one deadline, so that an exec liveness probe inside the scratch image can run it (kubelet's
//! `httpGet` probes cannot reach a port bound to the pod's loopback).
//!
//! Healthy is a `200` answer. Anything else is unhealthy, with the reason: nothing listening,
//! no answer within the timeout (the tracer's single-threaded runtime serves `/healthz` on the
//! same thread as its event loop, so a stalled loop does not answer at all), or a `503` whose
//! body says how long ago the loop last ticked.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response larger than this is not a `/healthz` answer.
const MAX_RESPONSE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unhealthy {
    #[error("cannot connect to {addr}: {why} (is `podtrace run --metrics-addr {addr}` running?)")]
    Connect { addr: SocketAddr, why: String },
    #[error(
        "no answer from {addr} within {timeout:?}: the tracer's event loop is stalled (it \
         serves /healthz on the same thread), or this is not podtrace"
    )]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: {why}")]
    Io { addr: SocketAddr, why: String },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("{addr} did not answer HTTP: {why}")]
    Malformed { addr: SocketAddr, why: String },
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The status code and body of an HTTP/1.x response.
pub fn parse_response(bytes: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| "no end of the response head".to_string())?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => {
            let code = code
                .parse()
                .map_err(|_| format!("bad status line `{status_line}`"))?;
            Ok((code, body.trim().to_string()))
        }
        _ => Err(format!("bad status line `{status_line}`")),
    }
}

/// GET /healthz at `addr`, within `timeout` in all. Ok: the body of the `200` answer.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<String, Unhealthy> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let timed_out = || Unhealthy::Timeout { addr, timeout };
    let io = |e: std::io::Error| {
        if is_timeout(&e) {
            timed_out()
        } else {
            Unhealthy::Io {
                addr,
                why: e.to_string(),
            }
        }
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        if is_timeout(&e) {
            timed_out()
        } else {
            Unhealthy::Connect {
                addr,
                why: e.to_string(),
            }
        }
    })?;
    stream.set_write_timeout(Some(left())).map_err(io)?;
    stream
        .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(io)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        stream.set_read_timeout(Some(left())).map_err(io)?;
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_RESPONSE {
            return Err(Unhealthy::Malformed {
                addr,
                why: format!("more than {MAX_RESPONSE} bytes"),
            });
        }
    }
    let (status, body) =
        parse_response(&response).map_err(|why| Unhealthy::Malformed { addr, why })?;
    if status == 200 {
        Ok(body)
    } else {
        Err(Unhealthy::Status { addr, status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"),
            Ok((200, "ok".into()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 503 Service Unavailable\n\nstalled"),
            Ok((503, "stalled".into()))
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    /// A server that answers one connection with `reply` (after reading the request head),
    /// or holds it open without answering when `reply` is None.
    fn server(reply: Option<&'static str>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut head = Vec::new();
            let mut b = [0u8; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&b[..n]);
            }
            match reply {
                Some(r) => s.write_all(r.as_bytes()).expect("write"),
                None => std::thread::sleep(Duration::from_millis(1500)),
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, h)
    }

    #[test]
    fn a_200_is_healthy_and_the_request_is_a_get_of_healthz() {
        let (addr, h) = server(Some(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok: ticked\n",
        ));
        assert_eq!(probe(addr, Duration::from_secs(2)), Ok("ok: ticked".into()));
        let head = h.join().expect("server");
        assert!(head.starts_with("GET /healthz HTTP/1.0\r\n"), "{head}");
    }

    #[test]
    fn a_503_is_unhealthy_with_its_reason() {
        let (addr, h) = server(Some(
            "HTTP/1.1 503 Service Unavailable\r\n\r\nstalled: 12 s\n",
        ));
        let e = probe(addr, Duration::from_secs(2)).expect_err("503");
        assert!(matches!(&e, Unhealthy::Status { status: 503, .. }), "{e:?}");
        assert!(e.to_string().contains("stalled: 12 s"), "{e}");
        h.join().expect("server");
    }

    #[test]
    fn no_answer_is_unhealthy_within_the_timeout() {
        let (addr, h) = server(None);
        let t = Instant::now();
        let e = probe(addr, Duration::from_millis(300)).expect_err("no answer");
        assert!(matches!(e, Unhealthy::Timeout { .. }), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        h.join().expect("server");
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let e = probe(addr, Duration::from_secs(1)).expect_err("refused");
        assert!(matches!(e, Unhealthy::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("--metrics-addr"), "{e}");
    }
}
