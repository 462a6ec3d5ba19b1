//! `vantage probe` against a test path on loopback: a WebSocket echo server (or a raw TCP echo
//! server) behind a small TCP proxy that kills connections idle for 3 s, by RST, by FIN, or by
//! silently no longer forwarding while keeping both sockets open. The proxy's timer counts
//! payload only, like HAProxy's, so TCP keep-alives do not reset it.
//!
//! Only 127.0.0.1 is used. The probes of one test run at the same time, as processes.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const IDLE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Rst,
    Fin,
    Silent,
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    WebSocket,
    Echo,
}

/// Starts a server and a proxy in front of it on a thread of their own; returns the proxy's
/// address. They live until the test process ends.
fn start_path(server: Server, behaviour: Behaviour, idle: Duration) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream_addr = upstream.local_addr().unwrap();
            let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(proxy.local_addr().unwrap()).unwrap();
            tokio::spawn(async move {
                while let Ok((s, _)) = upstream.accept().await {
                    match server {
                        Server::WebSocket => tokio::spawn(ws_echo(s)),
                        Server::Echo => tokio::spawn(tcp_echo(s)),
                    };
                }
            });
            while let Ok((client, _)) = proxy.accept().await {
                tokio::spawn(relay(client, upstream_addr, behaviour, idle));
            }
        });
    });
    rx.recv().unwrap()
}

/// The handshake: answers `Sec-WebSocket-Protocol: sip` when the client asks for it.
#[allow(clippy::result_large_err)] // the signature is tungstenite's `Callback`
fn accept_sip(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let asks_sip = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "sip"));
    if asks_sip {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    }
    Ok(resp)
}

/// A WebSocket server that accepts the `sip` subprotocol, echoes messages and answers pings
/// (tungstenite answers them while reading).
async fn ws_echo(s: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, accept_sip).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

async fn tcp_echo(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxy: forwards both ways; `idle` after the last payload byte in either direction, it
/// kills the connection the way `behaviour` says.
async fn relay(mut client: TcpStream, upstream: SocketAddr, behaviour: Behaviour, idle: Duration) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(n) if n > 0 => {
                    if server.write_all(&a[..n]).await.is_err() { return; }
                    deadline = tokio::time::Instant::now() + idle;
                }
                _ => return,
            },
            r = server.read(&mut b) => match r {
                Ok(n) if n > 0 => {
                    if client.write_all(&b[..n]).await.is_err() { return; }
                    deadline = tokio::time::Instant::now() + idle;
                }
                _ => return,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    match behaviour {
        Behaviour::Rst => {
            for s in [&client, &server] {
                socket2::SockRef::from(s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
        }
        Behaviour::Fin => {}
        Behaviour::Silent => {
            // Stop forwarding; keep both sockets open (TCP still acknowledges what arrives)
            // until the probe itself goes away.
            loop {
                tokio::select! {
                    r = client.read(&mut a) => if !matches!(r, Ok(n) if n > 0) { break },
                    r = server.read(&mut b) => if !matches!(r, Ok(n) if n > 0) { break },
                }
            }
        }
    }
    drop(client);
    drop(server);
}

fn vantage(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .output()
        .expect("vantage runs")
}

/// Runs several probes at once.
fn probes(runs: Vec<Vec<String>>) -> Vec<Output> {
    let handles: Vec<_> = runs
        .into_iter()
        .map(|args| std::thread::spawn(move || vantage(&args)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "probe",
        "--min-idle",
        "1s",
        "--max-idle",
        "8s",
        "--tolerance",
        "0.25s",
        "--max-rounds",
        "3",
        "--reply-timeout",
        "1.5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(url.to_string());
    v
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn probe_finds_a_3s_timeout_and_names_rst_fin_and_silent() {
    let behaviours = [Behaviour::Rst, Behaviour::Fin, Behaviour::Silent];
    let runs = behaviours
        .iter()
        .map(|&b| {
            let addr = start_path(Server::WebSocket, b, IDLE);
            args(
                &format!("ws://{addr}/ws"),
                &[
                    "--subprotocol",
                    "sip",
                    "--tcp-keepalive",
                    "1s",
                    "--format",
                    "json",
                ],
            )
        })
        .collect();
    for (b, out) in behaviours.iter().zip(probes(runs)) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{b:?}: {stderr}");
        let j = json(&out);
        let t = j["idle_timeout_s"].as_f64().expect("a timeout");
        assert!((t - 3.0).abs() <= 0.5, "{b:?}: {t} s\n{j:#}");
        let bound = j["bound_s"].as_f64().unwrap();
        assert!(bound <= 0.5, "{b:?}: ± {bound} s");
        let expected = format!("{b:?}").to_lowercase();
        assert_eq!(j["on_timeout"], expected.as_str(), "{b:?}: {j:#}");
        let acts_on = if *b == Behaviour::Silent {
            "next_packet"
        } else {
            "timer"
        };
        assert_eq!(j["acts_on"], acts_on, "{b:?}");
        // The proxy counts payload only: keep-alives do not save the connection.
        assert_eq!(j["keepalive_effective"], false, "{b:?}: {j:#}");
        assert_eq!(j["keepalive_interval_s"], 1.0);
        // Progress went to stderr while it waited.
        assert!(stderr.contains("round 1"), "{b:?}: {stderr}");
    }
}

#[test]
fn fail_below_exits_1_when_the_path_kills_sooner_and_0_otherwise() {
    let addr = start_path(Server::WebSocket, Behaviour::Fin, IDLE);
    let url = format!("ws://{addr}/ws");
    let outs = probes(vec![
        args(&url, &["--fail-below", "10s"]),
        args(&url, &["--fail-below", "2s", "--quiet"]),
    ]);
    assert_eq!(
        outs[0].status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&outs[0].stderr)
    );
    assert_eq!(outs[1].status.code(), Some(0));
    assert!(outs[1].stderr.is_empty(), "--quiet prints no progress");
    let text = String::from_utf8_lossy(&outs[1].stdout);
    assert!(text.contains("Idle timeout: "), "{text}");
    assert!(text.contains("On expiry: FIN"), "{text}");
}

#[test]
fn raw_tcp_probe_through_a_resetting_proxy() {
    let addr = start_path(Server::Echo, Behaviour::Rst, IDLE);
    let out = vantage(&args(&format!("tcp://{addr}"), &["--format", "json", "-q"]));
    assert_eq!(out.status.code(), Some(0));
    let j = json(&out);
    let t = j["idle_timeout_s"].as_f64().unwrap();
    assert!((t - 3.0).abs() <= 0.5, "{t}");
    assert_eq!(j["on_timeout"], "rst");
    assert_eq!(j["keepalive_effective"], serde_json::Value::Null);
}

#[test]
fn nothing_killed_up_to_max_idle_gives_a_null_timeout() {
    let addr = start_path(Server::WebSocket, Behaviour::Fin, Duration::from_secs(30));
    let out = vantage(&[
        "probe".into(),
        "--min-idle".into(),
        "0.5s".into(),
        "--max-idle".into(),
        "1.5s".into(),
        "--parallel".into(),
        "3".into(),
        "--format".into(),
        "json".into(),
        "--fail-below".into(),
        "1s".into(),
        "--tcp-keepalive".into(),
        "1s".into(),
        format!("ws://{addr}/ws"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let j = json(&out);
    assert_eq!(j["idle_timeout_s"], serde_json::Value::Null);
    assert_eq!(j["bound_s"], serde_json::Value::Null);
    assert_eq!(j["on_timeout"], serde_json::Value::Null);
    assert_eq!(j["keepalive_effective"], serde_json::Value::Null);
    assert_eq!(j["lower_s"], 1.5);
}

#[test]
fn errors_exit_2() {
    // Nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = vantage(&args(&format!("ws://127.0.0.1:{port}/ws"), &["-q"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1"));
    let out = vantage(&args("http://127.0.0.1:1/", &[]));
    assert_eq!(out.status.code(), Some(2));
    let out = vantage(&[
        "probe".into(),
        "--min-idle".into(),
        "9s".into(),
        "--max-idle".into(),
        "8s".into(),
        "tcp://127.0.0.1:1".into(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
