//! Application-layer parsers, fed from reassembled TCP streams (or UDP datagrams).
//!
//! Each module is small and self-contained, depends only on std and a few small crates, and never
//! panics on any input: captures are hostile and can be many GB, so nothing here allocates in
//! proportion to payload sizes beyond small fixed caps.
//!
//! ```text
//! http       HTTP/1.1 Upgrade handshake (RFC 7230, RFC 6455 §4)       httparse
//! websocket  RFC 6455 framing, streaming, per direction                hand-written
//! sip        RFC 3261 messages on streams / WS messages, dialogs       hand-written
//! tls        ClientHello SNI / ALPN (RFC 8446 §4.1.2, RFC 6066 §3)     hand-written
//! heartbeat  keep-alive rhythm: WS ping, CRLF, app messages, TCP KA    pure functions
//! ```
//!
//! Wiring to the TCP reassembly, per connection (client = the side that sent the SYN):
//!
//! 1. First client bytes: [`tls::looks_like_tls`] → [`tls::client_hello`] for SNI/ALPN, then
//!    only sizes ([`tls::TlsRecordScanner`] per direction → [`heartbeat::SmallMsg`]);
//!    `GET `/`POST ` … → [`http::parse_request`]; a SIP start line → [`sip::parse_message`].
//! 2. HTTP: buffer each direction up to [`MAX_HEAD`]; after the request, parse responses with
//!    [`http::parse_response`] (skip bodies with [`http::response_body_len`]) until a final
//!    status. [`http::upgrade_outcome`] = `WebSocket` → frames follow in both directions.
//! 3. WebSocket: one [`websocket::WsParser`] per direction (`with_extensions` when the 101 has
//!    `Sec-WebSocket-Extensions`; `set_prefix_cap(4096)` when `Sec-WebSocket-Protocol: sip`),
//!    `push` every in-order segment, `gap` on a hole. Summarise with [`websocket::WsStats`].
//!    Text/binary frames with `fin`: [`sip::is_crlf_keepalive`] on the prefix, else
//!    [`sip::parse_ws_message`] (RFC 7118 §4) → [`sip::SipDialogs::add`].
//! 4. At the connection's end (RST, FIN, silence): [`sip::SipDialogs::mark_connection_died`] when
//!    it died, and [`heartbeat::analyse`] over ping/pong/CRLF/keep-alive events and the small
//!    messages of each direction.

pub mod heartbeat;
pub mod http;
pub mod session;
pub mod sip;
#[cfg(test)]
mod sip_reference;
pub mod tls;
pub mod websocket;

/// Outcome of parsing one message at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// A whole message; `consumed` bytes of the buffer belong to it.
    Complete { value: T, consumed: usize },
    /// Need more bytes. Callers give up past [`MAX_HEAD`] bytes (the parsers themselves answer
    /// `Invalid` once a head is longer than that).
    Partial,
    /// Not this protocol, or broken beyond use.
    Invalid(String),
}

impl<T> Parse<T> {
    /// The value, if complete.
    pub fn complete(self) -> Option<(T, usize)> {
        match self {
            Parse::Complete { value, consumed } => Some((value, consumed)),
            _ => None,
        }
    }

    pub fn is_partial(&self) -> bool {
        matches!(self, Parse::Partial)
    }
}

/// Largest message head (start line + headers) any parser here waits for: 16 KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// Lossy UTF-8 of at most `cap` bytes, for values we only display.
pub(crate) fn lossy_capped(bytes: &[u8], cap: usize) -> std::borrow::Cow<'_, str> {
    let b = bytes.get(..cap.min(bytes.len())).unwrap_or(bytes);
    // Borrowed when the bytes are UTF-8 (nearly always): a header parsed is not a string made
    // unless it is kept (DHAT: two allocations per header, a fifth of a diagnosis' mallocs).
    // Checked first with `from_utf8`, which reads ASCII a word at a time; `from_utf8_lossy`
    // walks it a character at a time even when it has nothing to replace (its `Utf8Chunks`
    // were 2 % of a diagnosis' instructions on the churn synth, nearly all in header values).
    // The same answer either way: lossy borrows valid UTF-8 as it is.
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Which end of a connection sent something: the side that opened the TCP connection (client)
/// or the other (server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn from_client(from_client: bool) -> Side {
        if from_client {
            Side::Client
        } else {
            Side::Server
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}
