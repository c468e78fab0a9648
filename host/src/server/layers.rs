//! The guard around the API router: the request body timeout, the
//! whole-request deadline and the panic net, each answering in the API's
//! error envelope.
//!
//! One hand-written tower layer does all three: it runs on every request,
//! and stacking one layer per concern (tower-http's panic and body timeout
//! layers, `from_fn` middlewares) cost about a tenth of the host's
//! throughput on small requests (BENCHMARKS.md, "API under load"): each
//! boxed its future, cloned the rest of the stack and, for the panic net,
//! boxed the response body. The common case (a request without a body,
//! answered in its first poll) allocates nothing here but the one boxed
//! future.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower::{Layer, Service};
use tower_http::timeout::{TimeoutBody, TimeoutError};

use super::Limits;
use crate::api::ApiError;
use crate::api::around::{Around, AroundLayer, AroundService};

/// The API router inside its [`Guard`].
pub type Guarded = AroundService<Guard, Router>;

/// `router` inside [`Guard`] with `limits`' timeouts: the service the
/// server runs.
///
/// Around the whole router rather than on each of its routes
/// (`Router::layer`): a layer on the routes wraps each route in one more
/// boxed service, cloned on every request.
pub fn with_limits(router: Router, limits: &Limits) -> Guarded {
    AroundLayer(Guard {
        body_timeout: limits.body_timeout,
        request_timeout: limits.request_timeout,
    })
    .layer(router)
}

/// Runs a request so that:
///
/// - a panic anywhere below becomes a 500 `internal_error` and one ERROR
///   line naming the panic;
/// - a request still running [`Limits::request_timeout`] after its first
///   poll is dropped (its handler's future and whatever it waited for) and
///   answered 503 `server_timeout`. Most requests are answered in their
///   first poll, so the timer is armed only for one that was not;
/// - a body read that waits longer than [`Limits::body_timeout`] for its
///   next chunk fails, and the request is answered 408 `request_timeout`
///   whatever the handler made of the failure (the JSON extractor, for
///   one, would answer 400);
/// - a response sent before the request's body was read to its end (an
///   upload refused before its body was looked at, a timeout) says
///   `Connection: close`. hyper then closes the connection with the body
///   unread, and a client that sees no `close` would put the connection
///   back in its pool and send its next request into a socket the host has
///   shut (the client sees a broken pipe).
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    body_timeout: Duration,
    request_timeout: Duration,
}

impl Around for Guard {
    async fn around<S>(self, inner: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        guarded(inner, self, request).await
    }
}

async fn guarded<S>(mut inner: S, limits: Guard, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    // hyper knows a request without a body (no length, or length 0) by its
    // headers: nothing to time out on, nothing left unread.
    let body = (!http_body::Body::is_end_stream(request.body())).then(BodyFlags::default);
    let request = match &body {
        Some(flags) => flags.watch(request, limits.body_timeout),
        None => request,
    };
    let (method, uri) = (request.method().clone(), request.uri().clone());

    let mut answer = pin!(async move { inner.call(request).await });
    // A panic while the request is polled is caught there, poll by poll.
    let caught = std::future::poll_fn(|cx: &mut Context<'_>| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| answer.as_mut().poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(Ok(response)),
            Ok(Poll::Ready(Err(never))) => match never {},
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    });
    let outcome = crate::clock::within_after_first_poll(limits.request_timeout, caught).await;
    let mut response = match outcome {
        Some(Ok(response)) => response,
        Some(Err(panic)) => answer_panic(panic),
        None => {
            tracing::warn!(%method, path = uri.path(), "request took too long; answered 503");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_timeout",
                format!(
                    "the host did not finish this request within {} s and abandoned it",
                    limits.request_timeout.as_secs()
                ),
            )
            .into_response()
        }
    };
    if let Some(flags) = body {
        if flags.stalled.load(Ordering::Relaxed) {
            tracing::warn!(%method, path = uri.path(), "request body stalled; answered 408");
            response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body sent nothing for {} s; the host stopped waiting",
                    limits.body_timeout.as_secs()
                ),
            )
            .into_response();
        }
        if !flags.finished.load(Ordering::Acquire) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// What happened to a request's body: it stalled past its timeout, or it
/// was read to its end.
#[derive(Debug, Default)]
struct BodyFlags {
    stalled: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl BodyFlags {
    /// `request` with its body under `body_timeout`, noting on these flags.
    fn watch(&self, request: Request, body_timeout: Duration) -> Request {
        let stalled = self.stalled.clone();
        let finished = self.finished.clone();
        request.map(|body| {
            let timed = TimeoutBody::new(body_timeout, body).map_err(move |err| {
                if err.is::<TimeoutError>() {
                    stalled.store(true, Ordering::Relaxed);
                }
                axum::Error::new(err)
            });
            Body::new(ReadToEnd {
                inner: Body::new(timed),
                finished,
            })
        })
    }
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.finished.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The panic net's answer. `ApiError::new` rather than `ApiError::internal`:
/// this line is the one log line of the panic, whatever the API's own
/// logging of internal errors does.
fn answer_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    tracing::error!(panic = %message, "request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error; the host log has the details",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    /// Log lines written while a test runs, captured instead of printed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn limits() -> Limits {
        Limits {
            body_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            ..Limits::DEFAULT
        }
    }

    fn app() -> Guarded {
        let router = Router::new()
            .route("/panic", get(panics))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "never"
                }),
            )
            .route("/echo", post(|body: String| async move { body }));
        with_limits(router, &limits())
    }

    async fn panics() -> &'static str {
        panic!("the handler broke")
    }

    async fn envelope(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_envelope_and_logs_one_error() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let request = Request::get("/panic").body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = envelope(response).await;
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "internal_error");
        let text = log.text();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "log: {text}");
        assert!(errors[0].contains("the handler broke"), "log: {text}");
    }

    #[tokio::test]
    async fn a_request_past_the_request_timeout_answers_503_in_the_envelope() {
        let request = Request::get("/slow").body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = envelope(response).await;
        assert_eq!(body["error"]["code"], "server_timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("within 2 s")
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_answers_408_in_the_envelope() {
        let request = Request::post("/echo")
            .body(Body::new(Stalling { sent: false }))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let body = envelope(response).await;
        assert_eq!(body["error"]["code"], "request_timeout");
    }

    /// A body that yields one chunk and then never another, as a client that
    /// stops sending would.
    struct Stalling {
        sent: bool,
    }

    impl hyper::body::Body for Stalling {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            if self.sent {
                // The body timeout's timer is what wakes the request.
                return std::task::Poll::Pending;
            }
            self.sent = true;
            let chunk = axum::body::Bytes::from_static(b"0123456789");
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
        }
    }

    #[tokio::test]
    async fn answers_within_the_limits_pass_unchanged() {
        let request = Request::post("/echo").body(Body::from("hello")).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }
}
