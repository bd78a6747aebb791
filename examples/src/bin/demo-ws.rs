//! `demo-ws`: a WebSocket echo service. hyper answers the HTTP/1.1 upgrade
//! (and a plain `GET /healthz`), then tokio-tungstenite runs the WebSocket on
//! the upgraded connection: text and binary messages come back unchanged, a
//! text `close:<code>:<reason>` makes the server close with that code and
//! reason, and a client's close is echoed with its code (tungstenite's
//! default). Reads: HTTP requests, WebSocket messages. Writes: the echoes.
//! Errors: 400 for a malformed handshake, 426 for a plain request elsewhere;
//! WebSocket errors end that session only.

use std::convert::Infallible;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_examples::http_server::{self, empty, text, Body};
use mesh_examples::lifecycle::{self, ListenArgs};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument as _;

/// Largest message and frame the server accepts.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// How long the server waits for the client's answer to a close it started.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest close reason that fits a close frame (125 bytes minus the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// WebSocket echo demo service; `close:<code>:<reason>` makes it close.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    /// Service name, for logs only.
    #[arg(long, default_value = "ws")]
    name: String,
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_tracing();
    let args = Args::parse();
    let span = tracing::info_span!("demo-ws", service = %args.name);
    async {
        let listener = lifecycle::bind_and_announce(args.listen.listen).await?;
        http_server::serve(listener, |_peer| {
            hyper::service::service_fn(|request| async { Ok::<_, Infallible>(handle(request)) })
        })
        .await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Answers the HTTP part: the 101 for a WebSocket handshake (the session runs
/// in its own task once hyper hands over the connection), or a plain answer.
fn handle(mut request: Request<Incoming>) -> Response<Body> {
    if !wants_websocket(request.headers()) {
        return match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            _ => text(StatusCode::UPGRADE_REQUIRED, "websocket upgrade required\n"),
        };
    }
    let headers = request.headers();
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing sec-websocket-key\n");
    };
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported websocket version\n",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };

    let upgrade = hyper::upgrade::on(&mut request);
    let span = tracing::debug_span!("session", path = request.uri().path());
    tokio::spawn(
        async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "upgrade failed");
                    return;
                }
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            match echo(socket).await {
                Ok(()) => tracing::debug!("session closed"),
                Err(error) => tracing::debug!(%error, "session ended with an error"),
            }
        }
        .instrument(span),
    );

    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// `Connection: upgrade` and `Upgrade: websocket`, case-insensitively and
/// within comma-separated lists.
fn wants_websocket(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}

/// Echoes messages until either side closes.
async fn echo(mut socket: Socket) -> Result<(), tungstenite::Error> {
    while let Some(message) = socket.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                // Tell the client why before dropping it, where the protocol has a code for it.
                if let Some(frame) = close_frame_for(&error) {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
                }
                return Err(error);
            }
        };
        match message {
            Message::Text(text) => {
                if let Some(frame) = close_command(&text) {
                    tracing::debug!(code = %frame.code, "closing on request");
                    socket.close(Some(frame)).await?;
                    // Wait (bounded) for the client's close reply; tungstenite
                    // ends the stream when it arrives.
                    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
                    return Ok(());
                }
                socket.send(Message::Text(text)).await?;
            }
            Message::Binary(bytes) => socket.send(Message::Binary(bytes)).await?,
            // tungstenite answers pings and echoes the client's close itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}

/// The close frame that reports a read error to the client, if it has a code.
fn close_frame_for(error: &tungstenite::Error) -> Option<CloseFrame> {
    let code = match error {
        tungstenite::Error::Capacity(_) => CloseCode::Size,
        tungstenite::Error::Protocol(_) => CloseCode::Protocol,
        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
        _ => return None,
    };
    let reason = error.to_string();
    let reason = truncate(&reason, MAX_CLOSE_REASON_BYTES);
    Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    })
}

/// `close:<code>:<reason>` with a code a server may send and a reason that
/// fits a close frame; any other text is echoed as usual.
fn close_command(text: &str) -> Option<CloseFrame> {
    let (code, reason) = text.strip_prefix("close:")?.split_once(':')?;
    let code = CloseCode::from(code.parse::<u16>().ok()?);
    (code.is_allowed() && reason.len() <= MAX_CLOSE_REASON_BYTES).then(|| CloseFrame {
        code,
        reason: reason.to_owned().into(),
    })
}

/// The longest prefix of `text` that fits `max` bytes without splitting a character.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
