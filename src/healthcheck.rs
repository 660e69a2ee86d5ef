//! `apuntador-backend healthcheck`: the container health check. The runtime image has no shell
//! and no curl, so the binary checks itself: `GET /health` on the loopback port it serves
//! (`PORT`, default 8000, or `--url http://127.0.0.1:PORT/health`), exit 0 on a 200 within the
//! timeout, 1 otherwise, with one line on stderr saying why.
//!
//! A plain HTTP/1.1 request over a std `TcpStream`: nothing of the server (no runtime, no TLS,
//! no telemetry) starts for a probe that ECS runs every few seconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// How long the whole probe may take; ECS's own timeout should be larger.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where to probe: `host:port` and path, from `--url` or `PORT`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host_port: String,
    path: String,
}

fn target(args: &[String], port: Option<String>) -> Result<Target, String> {
    match args {
        [] => {
            let port = port.unwrap_or_else(|| "8000".to_owned());
            let port: u16 = port
                .parse()
                .map_err(|_| format!("PORT={port:?} is not a port number"))?;
            Ok(Target {
                host_port: format!("127.0.0.1:{port}"),
                path: "/health".to_owned(),
            })
        }
        [flag, url] if flag == "--url" => {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| format!("--url {url:?}: only http:// URLs are probed"))?;
            let (host_port, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/health"),
            };
            if host_port.is_empty() {
                return Err(format!("--url {url:?} has no host"));
            }
            Ok(Target {
                host_port: host_port.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Err("usage: apuntador-backend healthcheck [--url http://HOST:PORT/health]".to_owned()),
    }
}

fn probe(target: &Target) -> Result<(), String> {
    let address: SocketAddr = target
        .host_port
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", target.host_port))?
        .next()
        .ok_or_else(|| format!("{}: no address", target.host_port))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: apuntador-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.host_port
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "GET {} answered {:?}",
            target.path,
            status_line.lines().next().unwrap_or_default()
        ))
    }
}

/// Runs the probe; `args` are the words after `healthcheck`.
pub fn run(args: &[String]) -> ExitCode {
    let outcome = target(args, std::env::var("PORT").ok()).and_then(|t| probe(&t));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("healthcheck failed: {reason}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn words(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_target_comes_from_port_or_url() {
        assert_eq!(
            target(&[], Some("9001".into())).unwrap(),
            Target {
                host_port: "127.0.0.1:9001".into(),
                path: "/health".into()
            }
        );
        assert_eq!(target(&[], None).unwrap().host_port, "127.0.0.1:8000");
        assert_eq!(
            target(
                &words(&["--url", "http://localhost:8080/health/public"]),
                None
            )
            .unwrap(),
            Target {
                host_port: "localhost:8080".into(),
                path: "/health/public".into()
            }
        );
        assert!(target(&[], Some("http".into())).is_err());
        assert!(target(&words(&["--url", "https://x/health"]), None).is_err());
        assert!(target(&words(&["--verbose"]), None).is_err());
    }

    fn answering(status_line: &'static str) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
                let _ = stream
                    .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        Target {
            host_port: format!("127.0.0.1:{port}"),
            path: "/health".into(),
        }
    }

    #[test]
    fn only_a_200_is_healthy() {
        assert_eq!(probe(&answering("HTTP/1.1 200 OK")), Ok(()));
        let error = probe(&answering("HTTP/1.1 503 Service Unavailable")).unwrap_err();
        assert!(error.contains("503"), "{error}");
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let error = probe(&Target {
            host_port: format!("127.0.0.1:{closed}"),
            path: "/health".into(),
        })
        .unwrap_err();
        assert!(error.starts_with("connect"), "{error}");
    }
}
