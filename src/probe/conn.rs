//! One probe connection: a WebSocket (ws, wss) or a raw TCP connection to an echo server, with
//! the few operations the search needs: open it, wait for what the path sends, ping it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Expiry, Scheme, Target};

/// What arrived on a connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// The answer to our ping: a pong with our payload, or the echoed byte.
    Answer,
    /// Something else from the server (it is not silent).
    Data,
    /// The connection ended: a FIN (or a WebSocket Close frame, or a TLS stream cut short) or a
    /// RST. The string says which, when it is not a plain FIN or RST.
    Ended(Expiry, Option<String>),
    /// Another error.
    Failed(String),
}

pub(crate) enum Conn {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Tcp(TcpStream),
}

/// How connections are opened: the same for every connection of a probe.
#[derive(Clone)]
pub(crate) struct Opener {
    pub target: Target,
    pub subprotocol: Option<String>,
    pub connector: Option<tokio_tungstenite::Connector>,
    pub connect_timeout: Duration,
}

const PING: &[u8] = b"vantage-probe";

impl Opener {
    pub fn new(
        target: &Target,
        subprotocol: Option<String>,
        insecure: bool,
        connect_timeout: Duration,
    ) -> Self {
        let connector = (target.scheme == Scheme::Wss && insecure).then(insecure_connector);
        Opener {
            target: target.clone(),
            subprotocol,
            connector,
            connect_timeout,
        }
    }

    /// Connects (and does the WebSocket handshake); returns the connection and the TCP
    /// handshake time.
    pub async fn open(&self, keepalive: Option<Duration>) -> anyhow::Result<(Conn, Duration)> {
        let t = &self.target;
        let fut = async {
            let started = Instant::now();
            let stream = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| anyhow::anyhow!("connecting to {}:{}: {e}", t.host, t.port))?;
            let rtt = started.elapsed();
            stream.set_nodelay(true)?;
            if let Some(ka) = keepalive {
                let ka = socket2::TcpKeepalive::new().with_time(ka).with_interval(ka);
                socket2::SockRef::from(&stream).set_tcp_keepalive(&ka)?;
            }
            let conn = match t.scheme {
                Scheme::Tcp => Conn::Tcp(stream),
                Scheme::Ws | Scheme::Wss => {
                    let mut request = t.url.as_str().into_client_request()?;
                    if let Some(p) = &self.subprotocol {
                        request
                            .headers_mut()
                            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
                    }
                    let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
                        request,
                        stream,
                        None,
                        self.connector.clone(),
                    )
                    .await
                    .map_err(|e| {
                        let hint = if e.to_string().contains("certificate") {
                            " (--insecure accepts a self-signed lab certificate)"
                        } else {
                            ""
                        };
                        anyhow::anyhow!("WebSocket handshake with {}: {e}{hint}", t.url)
                    })?;
                    Conn::Ws(Box::new(ws))
                }
            };
            anyhow::Ok((conn, rtt))
        };
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: no connection within {:?}",
                    self.target.url,
                    self.connect_timeout
                )
            })?
    }
}

impl Conn {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(s) => Some(s),
            Conn::Ws(ws) => match ws.get_ref() {
                MaybeTlsStream::Plain(s) => Some(s),
                MaybeTlsStream::Rustls(s) => Some(s.get_ref().0),
                #[allow(unreachable_patterns)]
                _ => None,
            },
        }
    }

    /// Waits for the next thing from the path. Cancel-safe (used in `select!`).
    pub async fn recv(&mut self) -> Event {
        match self {
            Conn::Tcp(s) => {
                let mut buf = [0u8; 512];
                match s.read(&mut buf).await {
                    Ok(0) => Event::Ended(Expiry::Fin, None),
                    Ok(_) => Event::Answer,
                    Err(e) => io_event(&e),
                }
            }
            Conn::Ws(ws) => match ws.next().await {
                None => Event::Ended(Expiry::Fin, None),
                Some(Ok(Message::Pong(p))) if p.as_ref() == PING => Event::Answer,
                Some(Ok(Message::Close(frame))) => Event::Ended(
                    Expiry::Fin,
                    Some(match frame {
                        Some(f) => format!("a WebSocket Close frame ({} {})", f.code, f.reason),
                        None => "a WebSocket Close frame".into(),
                    }),
                ),
                Some(Ok(_)) => Event::Data,
                Some(Err(e)) => ws_event(e),
            },
        }
    }

    /// Sends the ping (a WebSocket ping, or one byte for raw TCP).
    pub async fn ping(&mut self) -> Result<(), Event> {
        match self {
            Conn::Tcp(s) => s.write_all(b"?").await.map_err(|e| io_event(&e)),
            Conn::Ws(ws) => ws
                .send(Message::Ping(Bytes::from_static(PING)))
                .await
                .map_err(ws_event),
        }
    }

    /// A RST that followed the FIN (HAProxy's `option nolinger` does that): the socket's pending
    /// error after the FIN.
    pub fn rst_after_fin(&self) -> bool {
        self.tcp()
            .and_then(|s| socket2::SockRef::from(s).take_error().ok().flatten())
            .is_some()
    }

    /// What the kernel knows about our unanswered ping: unacknowledged segments and
    /// retransmissions (Linux TCP_INFO).
    pub fn tcp_info(&self) -> Option<TcpInfo> {
        self.tcp().and_then(tcp_info)
    }
}

fn io_event(e: &std::io::Error) -> Event {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => Event::Ended(Expiry::Rst, None),
        UnexpectedEof => Event::Ended(Expiry::Fin, Some("a FIN without TLS close_notify".into())),
        _ => Event::Failed(e.to_string()),
    }
}

fn ws_event(e: WsError) -> Event {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Io(e) => io_event(&e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Event::Ended(Expiry::Fin, None),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Event::Ended(Expiry::Fin, None)
        }
        e => Event::Failed(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpInfo {
    pub unacked: u32,
    pub retransmits: u32,
}

#[cfg(target_os = "linux")]
fn tcp_info(s: &TcpStream) -> Option<TcpInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len` bytes into it, and
    // the descriptor is alive for the duration of the borrow of `s`.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(TcpInfo {
            unacked: info.tcpi_unacked,
            retransmits: info.tcpi_total_retrans,
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn tcp_info(_s: &TcpStream) -> Option<TcpInfo> {
    None
}

/// `--insecure`: a rustls client that accepts any server certificate (self-signed lab
/// certificates). The signatures of the handshake are still checked.
fn insecure_connector() -> tokio_tungstenite::Connector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tokio_tungstenite::Connector::Rustls(Arc::new(config))
}
