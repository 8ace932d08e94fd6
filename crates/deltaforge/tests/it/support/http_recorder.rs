//! HTTP sink: a real HTTP server (axum) the `http` sink posts to, which
//! records every request and answers as told.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// How the [`HttpRecorder`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    /// 204 No Content.
    Ok = 0,
    /// 503 with `Retry-After: 1`.
    Unavailable = 1,
    /// 400 with a body naming the problem.
    BadRequest = 2,
    /// 400 with the request's headers in the body, as debugging endpoints
    /// do (the sink must not quote them back in its error).
    EchoHeaders = 3,
}

/// One request the [`HttpRecorder`] received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as JSON (`Null` when not JSON).
    pub body: Value,
    /// Whether it was acknowledged with 2xx.
    pub accepted: bool,
}

impl Received {
    /// The value of header `name` ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

/// HTTP sink: a real HTTP server (axum on 127.0.0.1:0, on a thread of its
/// own) that records every request and answers as [`HttpRecorder::answer`]
/// says (204 at first).
#[derive(Clone, Default)]
pub struct HttpRecorder {
    mode: Arc<AtomicU8>,
    log: Arc<Mutex<Vec<Received>>>,
}

async fn record(State(hook): State<HttpRecorder>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mode = hook.mode.load(Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let accepted = mode == Answer::Ok as u8;
    hook.log.lock().unwrap().push(Received { path: uri.path().to_string(), headers, body, accepted });
    if mode == Answer::Ok as u8 {
        StatusCode::NO_CONTENT.into_response()
    } else if mode == Answer::Unavailable as u8 {
        (StatusCode::SERVICE_UNAVAILABLE, [("Retry-After", "1")], "maintenance").into_response()
    } else if mode == Answer::BadRequest as u8 {
        (StatusCode::BAD_REQUEST, "bad schema xyz: field amount must be a number").into_response()
    } else {
        let echoed = hook.log.lock().unwrap().last().map(|r| {
            r.headers.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?"))).collect::<Vec<_>>().join("\n")
        });
        (StatusCode::BAD_REQUEST, format!("rejected; you sent:\n{}", echoed.unwrap_or_default())).into_response()
    }
}

impl HttpRecorder {
    /// Starts the server; returns it and its base URL (`http://127.0.0.1:PORT`).
    pub fn start() -> (HttpRecorder, String) {
        let hook = HttpRecorder::default();
        let app = axum::Router::new().fallback(record).with_state(hook.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (hook, format!("http://{}", rx.recv().unwrap()))
    }

    /// Sets how later requests are answered.
    pub fn answer(&self, answer: Answer) {
        self.mode.store(answer as u8, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests acknowledged with 2xx so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.log.lock().unwrap().iter().filter(|r| r.accepted).cloned().collect()
    }
}
