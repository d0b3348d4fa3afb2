//! `healthcheck`: one `GET /healthz` against the daemon's own listener, for container
//! `HEALTHCHECK`s in images that carry no curl or shell (README "Commands"). Plain HTTP
//! over a blocking socket, everything within one deadline.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use url::Url;

/// The whole probe (resolve, connect, send, read the status line) ends within this.
pub const DEADLINE: Duration = Duration::from_secs(3);

/// Longest status line read; a longer answer is not an HTTP status line.
const MAX_STATUS_LINE: usize = 1024;

/// The URL of `/healthz` on a listener bound to `listen`: a wildcard address
/// (`0.0.0.0`, `::`) is probed on loopback of the same family.
pub fn url_for_listen(listen: SocketAddr) -> Url {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let text = format!("http://{}/healthz", SocketAddr::new(ip, listen.port()));
    Url::parse(&text).expect("a socket address makes a valid http url")
}

/// Parses the `--url` argument: an `http://` URL with a host.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("--url {text:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "--url {text:?}: only http:// is supported (the daemon's listener is plain HTTP)"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("--url {text:?} has no host"));
    }
    Ok(url)
}

/// The addresses of `host`, looked up on a thread of its own so that a resolver that does
/// not answer cannot hold the probe past `within`.
fn resolve(host: &str, port: u16, within: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::spawn(move || {
        let found = (name.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|e| e.to_string());
        let _ = tx.send(found);
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| Err(format!("no answer from the resolver within {within:?}")))
}

/// GETs `url` and returns the HTTP status, within `deadline`. The error names the URL
/// and what failed.
pub fn probe(url: &Url, deadline: Duration) -> Result<u16, String> {
    let start = Instant::now();
    let fail = |what: String| format!("{url}: {what}");
    let left = || deadline.saturating_sub(start.elapsed());
    let host = url.host_str().ok_or_else(|| fail("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    // `Url` keeps IPv6 hosts in brackets; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs =
        resolve(bare, port, left()).map_err(|e| fail(format!("cannot resolve {host}: {e}")))?;
    let mut last_err = String::from("no address to connect to");
    let mut stream = None;
    for addr in addrs {
        let budget = left();
        if budget.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, budget) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or_else(|| fail(last_err))?;
    let timeout = |s: &TcpStream| -> Result<(), String> {
        let budget = left().max(Duration::from_millis(1));
        s.set_read_timeout(Some(budget))
            .and_then(|()| s.set_write_timeout(Some(budget)))
            .map_err(|e| fail(format!("socket: {e}")))
    };
    timeout(&stream)?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: vpcep-approver-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(format!("sending the request: {e}")))?;
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= MAX_STATUS_LINE {
            return Err(fail("the answer is not HTTP (no status line)".into()));
        }
        timeout(&stream)?;
        match stream.read(&mut byte) {
            Ok(0) => return Err(fail("connection closed before a status line".into())),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(fail(format!("reading the answer: {e}"))),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(fail("the answer is not HTTP (bad status line)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        let u = |s: &str| url_for_listen(s.parse().expect("addr")).to_string();
        assert_eq!(u("0.0.0.0:9464"), "http://127.0.0.1:9464/healthz");
        assert_eq!(u("[::]:9464"), "http://[::1]:9464/healthz");
        assert_eq!(u("127.0.0.2:1"), "http://127.0.0.2:1/healthz");
        assert_eq!(u("[::1]:80"), "http://[::1]/healthz");
    }

    #[test]
    fn only_plain_http_urls_with_a_host() {
        assert!(parse_url("http://127.0.0.1:9464/healthz").is_ok());
        assert!(parse_url("https://127.0.0.1/healthz").is_err());
        assert!(parse_url("127.0.0.1:9464").is_err());
        assert!(parse_url("nope").is_err());
    }

    fn serve_once(answer: &'static [u8]) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        port
    }

    #[test]
    fn status_codes_come_back() {
        let port = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        let url = parse_url(&format!("http://127.0.0.1:{port}/healthz")).expect("url");
        assert_eq!(probe(&url, DEADLINE), Ok(200));
        let port = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let url = parse_url(&format!("http://127.0.0.1:{port}/healthz")).expect("url");
        assert_eq!(probe(&url, DEADLINE), Ok(503));
        let port = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let url = parse_url(&format!("http://127.0.0.1:{port}/healthz")).expect("url");
        assert!(probe(&url, DEADLINE).is_err());
    }

    #[test]
    fn a_silent_server_fails_within_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let url = parse_url(&format!("http://127.0.0.1:{port}/healthz")).expect("url");
        let started = Instant::now();
        let e = probe(&url, Duration::from_millis(300)).expect_err("no answer");
        assert!(started.elapsed() < Duration::from_secs(2), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        drop(l);
    }

    #[test]
    fn nothing_listening_names_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let url = parse_url(&format!("http://127.0.0.1:{port}/healthz")).expect("url");
        let e = probe(&url, DEADLINE).expect_err("refused");
        assert!(e.contains("cannot connect"), "{e}");
    }
}
