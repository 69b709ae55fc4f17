//! The API on the Unix socket: HTTP/1.1 (hyper's server), routed by the
//! one route table (`api::routes`). A request becomes an [`api::Request`];
//! reads are answered from the published view by the connection, session
//! listings are streamed from a table opened for the walk, everything else
//! goes to the owner task. Every refusal is an [`ApiError`] body with the
//! status its kind means.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{Response, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::UnixListener, sync::oneshot};

use super::{Ends, reads};
use crate::api::{
    self, ApiError, ErrorKind, MAX_REQUEST_BYTES, Reply, Request, STALE_HEADER, SessionRequest,
    routes,
};

/// API connections served at once; more wait in the listen backlog, so a
/// flood of clients costs the agent a bounded amount of memory.
const MAX_CONNECTIONS: usize = 1024;
/// Beyond this many open connections, each is closed after one answer, so
/// that busy clients take turns with new ones (a `status` never waits for a
/// flood of listings to end).
const SHARED_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Sessions per chunk of a streamed listing.
const SESSIONS_PER_CHUNK: usize = 256;

type Body = BoxBody<Bytes, std::io::Error>;

fn json_response(status: u16, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).map_err(|e: Infallible| match e {}).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The response to a refusal.
pub fn refusal(e: &ApiError) -> Response<Body> {
    json_response(
        e.status(),
        Bytes::from(serde_json::to_vec(e).unwrap_or_default()),
    )
}

/// The response to the owner's (or a read's) answer.
fn reply(r: Reply) -> Response<Body> {
    match r {
        Reply::Ok(v) => json_response(200, Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
        Reply::Error(e) => refusal(&e),
        Reply::Stale { value, note } => stale(
            Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            &note,
        ),
    }
}

fn stale(body: Bytes, note: &str) -> Response<Body> {
    let mut r = json_response(200, body);
    // A note is ASCII; anything else is left out rather than refused.
    if let Ok(v) = header::HeaderValue::from_str(note) {
        r.headers_mut().insert(STALE_HEADER, v);
    }
    r
}

/// Reads a request's body, at most [`MAX_REQUEST_BYTES`].
async fn body_of(body: Incoming, declared: Option<u64>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::TooLarge,
            Some("body"),
            format!("the request body is longer than the limit of {MAX_REQUEST_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(body, MAX_REQUEST_BYTES).collect(),
    )
    .await
    {
        Err(_) => Err(ApiError::invalid(
            "body",
            format!("not sent within {} s", BODY_TIMEOUT.as_secs()),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::invalid("body", format!("reading it: {e}"))),
    }
}

/// One HTTP request: routed, decoded, answered.
async fn handle(ends: Ends, request: hyper::Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let decoded = async {
        let (route, params) = routes::find(parts.method.as_str(), parts.uri.path())?;
        if ends.read_only && !routes::is_read(route) {
            return Err(ApiError::new(
                ErrorKind::ReadOnly,
                None,
                format!(
                    "{} {}: this socket is read-only (reads and traces); changes go to the agent's main socket",
                    parts.method,
                    parts.uri.path()
                ),
            ));
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = body_of(body, declared).await?;
        routes::decode(route, params, parts.uri.query(), &bytes)
    };
    match decoded.await {
        Err(e) => refusal(&e),
        Ok(Request::Session(SessionRequest::List { filter, limit })) => {
            list_sessions(&ends, &filter, limit)
        }
        Ok(req) => answer(&ends, req).await,
    }
}

/// Reads from the published view on a blocking thread of the connection's
/// own, session flushes likewise, changes (and whatever needs the data
/// plane) through the owner task.
async fn answer(ends: &Ends, req: Request) -> Response<Body> {
    let view = ends.views.borrow().clone();
    let gone = || refusal(&ApiError::unavailable("the agent is stopping"));
    let read_view = Arc::clone(&view);
    let req = match tokio::task::spawn_blocking(move || match reads::respond(&read_view, &req) {
        Some(Ok((body, None))) => Ok(json_response(200, body)),
        Some(Ok((body, Some(note)))) => Ok(stale(body, &note)),
        Some(Err(e)) => Ok(refusal(&e)),
        None => Err(Box::new(req)),
    })
    .await
    {
        Ok(Ok(response)) => return response,
        Ok(Err(req)) => *req,
        Err(_) => return gone(),
    };
    if let Request::Session(r) = req {
        let table = Arc::clone(&ends.sessions);
        return tokio::task::spawn_blocking(move || {
            reply(match reads::sessions(&view, &table, &r) {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Error(e),
            })
        })
        .await
        .unwrap_or_else(|_| gone());
    }
    let (tx, rx) = oneshot::channel();
    if ends.jobs.send((req, tx)).await.is_err() {
        return gone();
    }
    rx.await.map_or_else(|_| gone(), reply)
}

/// A session listing, streamed as NDJSON from a table opened for this walk
/// (so a slow reader holds nobody else's): one chunk of rows at a time in
/// memory, whatever the table's size. A walk that fails after the first
/// row ends the stream with an `{"error": …}` line.
fn list_sessions(ends: &Ends, filter: &api::SessionFilter, limit: Option<u64>) -> Response<Body> {
    let view = ends.views.borrow().clone();
    let f = match reads::session_filter(&view, filter) {
        Ok(f) => f,
        Err(e) => return refusal(&e),
    };
    let table = match ends.sessions.lock().expect("session table lock").reopen() {
        Ok(t) => t,
        Err(e) => {
            return refusal(&ApiError::unavailable(format!(
                "opening the session table: {e}"
            )));
        }
    };
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let names = reads::nic_names(&view);
        let limit = limit.unwrap_or(u64::MAX);
        let (mut chunk, mut rows, mut sent, mut open) = (Vec::new(), 0usize, 0u64, true);
        let walked = table.walk(&f, |s| {
            if !s.live {
                return true;
            }
            serde_json::to_writer(&mut chunk, &reads::session_row(&names, s)).ok();
            chunk.push(b'\n');
            rows += 1;
            sent += 1;
            if rows == SESSIONS_PER_CHUNK {
                open = rt
                    .block_on(tx.send_data(Bytes::from(std::mem::take(&mut chunk))))
                    .is_ok();
                rows = 0;
            }
            open && sent < limit
        });
        if let Err(e) = walked {
            let e = ApiError::unavailable(format!("reading the session table: {e}"));
            serde_json::to_writer(&mut chunk, &serde_json::json!({ "error": e })).ok();
            chunk.push(b'\n');
        }
        if open && !chunk.is_empty() {
            rt.block_on(tx.send_data(Bytes::from(chunk))).ok();
        }
    });
    let mut r = Response::new(body.boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(routes::NDJSON),
    );
    r
}

/// Accepts API connections, at most [`MAX_CONNECTIONS`] at once, each
/// served by a task of its own.
pub async fn accept(listener: UnixListener, ends: Ends) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let ends = ends.clone();
                let open = Arc::clone(&open);
                let shared = open.fetch_add(1, Ordering::Relaxed) + 1 > SHARED_CONNECTIONS;
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let ends = ends.clone();
                        async move { Ok::<_, Infallible>(handle(ends, req).await) }
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEAD_TIMEOUT)
                        .keep_alive(!shared)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        log::debug!("an API connection ended: {e}");
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("accepting an API connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
