//! Middleware written as one async function around the rest of the stack,
//! without `axum::middleware::from_fn`'s extra boxing.
//!
//! `from_fn` boxes the rest of the stack into a `Next` on every request
//! and clones its state; the layers here run on every request (the
//! server's guard, the API's front door), so each is one [`Around`]: a
//! value cloned per request and an async function given the request and
//! the service below it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http;
use axum::response::Response;
use tower::{Layer, Service};

/// A middleware: answers `request`, calling `inner` (the stack below) or
/// not.
pub trait Around: Clone + Send + Sync + 'static {
    /// Answers one request.
    fn around<S>(self, inner: S, request: Request) -> impl Future<Output = Response> + Send
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send;
}

/// The layer that puts an [`Around`] on every route (through
/// `Router::layer`), or around a whole router.
#[derive(Debug, Clone)]
pub struct AroundLayer<A>(pub A);

impl<A: Around, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            around: self.0.clone(),
            inner,
        }
    }
}

/// An [`Around`] over one service.
#[derive(Debug, Clone)]
pub struct AroundService<A, S> {
    around: A,
    inner: S,
}

/// Any request body: hyper's, as the outermost service, or axum's own
/// [`Body`] inside the router (which `Body::new` passes through as it is).
impl<A, S, B> Service<http::Request<B>> for AroundService<A, S>
where
    A: Around,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        // The service that was polled ready serves this request; its clone
        // waits for the next.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let around = self.around.clone();
        Box::pin(async move { Ok(around.around(inner, request).await) })
    }
}
