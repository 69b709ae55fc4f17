//! The client side of the API: HTTP/1.1 over the daemon's Unix socket,
//! one connection reused for every call, blocking for the CLI's sake.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{ApiError, Request, STALE_HEADER, routes};

/// How long a call may take: a 1,000-rule apply compiles and installs in
/// tens of milliseconds, but a daemon that hangs must not hang the CLI.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The longest answer read (a full session table streamed is well under).
pub const MAX_REPLY_BYTES: usize = 256 << 20;

/// A failed call: the daemon's own refusal, or why it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The daemon refused the request; the message is its own, verbatim.
    #[error("{0}")]
    Refused(ApiError),
    #[error(
        "cannot reach sg-agent at {path}: {source} (is `sg-agent run` running? --socket names another)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to sg-agent at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("sg-agent at {path} answered something unreadable: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

/// A connection to the daemon.
pub struct Client {
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to the daemon's socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, CallError> {
        let connect = |source| CallError::Connect {
            path: path.to_owned(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(connect)?;
        let sender = runtime.block_on(async {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| CallError::Io {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            tokio::spawn(connection);
            Ok::<_, CallError>(sender)
        })?;
        Ok(Self {
            path: path.to_owned(),
            runtime,
            sender,
        })
    }

    /// Sends `request` and waits for its answer: the result's JSON (a
    /// streamed listing as an array).
    pub fn call(&mut self, request: &Request) -> Result<Value, CallError> {
        let protocol = |reason: String| CallError::Protocol {
            path: self.path.clone(),
            reason,
        };
        let (method, target, body) = routes::encode(request).map_err(protocol)?;
        let mut builder = hyper::Request::builder()
            .method(method.as_str())
            .uri(target.as_str())
            .header("host", "sg");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let http = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| protocol(e.to_string()))?;
        let path = self.path.clone();
        let io = move |reason: String| CallError::Io {
            path: path.clone(),
            reason,
        };
        let sender = &mut self.sender;
        let (status, stale, ndjson, bytes) = self.runtime.block_on(async {
            let exchange = async {
                sender.ready().await.map_err(|e| io(e.to_string()))?;
                let response = sender
                    .send_request(http)
                    .await
                    .map_err(|e| io(e.to_string()))?;
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let stale = header(STALE_HEADER);
                let ndjson = header("content-type").is_some_and(|t| t.starts_with(routes::NDJSON));
                let bytes = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| io(e.to_string()))?
                    .to_bytes();
                Ok::<_, CallError>((status, stale, ndjson, bytes))
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .map_err(|_| io(format!("no answer within {} s", TIMEOUT.as_secs())))?
        })?;
        if status != 200 {
            let error: ApiError = serde_json::from_slice(&bytes)
                .map_err(|e| protocol(format!("status {status}: {e}")))?;
            return Err(CallError::Refused(error));
        }
        if let Some(note) = stale {
            eprintln!("warning: {note}");
        }
        if ndjson {
            return lines(&bytes).map_err(|e| match e {
                Line::Refused(e) => CallError::Refused(e),
                Line::Unreadable(e) => protocol(e),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| protocol(e.to_string()))
    }
}

/// Why a streamed listing failed.
enum Line {
    /// The daemon ended the stream with an error line.
    Refused(ApiError),
    Unreadable(String),
}

/// A streamed listing's lines as one array; an `{"error": …}` line (the
/// daemon failed while streaming) fails it.
fn lines(bytes: &[u8]) -> Result<Value, Line> {
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| Line::Unreadable(e.to_string()))?;
        if let Some(error) = value.get("error") {
            let error = serde_json::from_value(error.clone())
                .map_err(|e| Line::Unreadable(e.to_string()))?;
            return Err(Line::Refused(error));
        }
        out.push(value);
    }
    Ok(Value::Array(out))
}

/// Connects to `path`, sends one request and returns its answer.
pub fn call(path: &Path, request: &Request) -> Result<Value, CallError> {
    Client::connect(path)?.call(request)
}
