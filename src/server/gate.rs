//! The HTTP-level gate in front of every service: refuses what is not a gRPC
//! call before any body is read, and authenticates callers of the shredstore
//! services from their headers alone.
//!
//! - A method other than POST: HTTP 405 (gRPC calls are POSTs).
//! - A `content-type` that does not start with `application/grpc`: HTTP 415,
//!   as the gRPC HTTP/2 protocol asks of servers.
//! - For `/shredstore.v1.*` paths, a missing, malformed or unknown bearer
//!   token: `UNAUTHENTICATED` (a trailers-only gRPC response), so anonymous
//!   callers cannot make the server decode request bodies (tonic would answer
//!   a garbage body with INTERNAL and an oversize one with OUT_OF_RANGE).
//!
//! Role checks stay in the handlers, which know the method. Health and
//! reflection are unauthenticated by design.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Method, Request, Response, StatusCode, header};

use super::auth::Auth;

/// Path prefix of the services that need a token.
const AUTHENTICATED_PREFIX: &str = "/shredstore.v1.";

/// Wraps the router in a [`Gate`].
#[derive(Clone)]
pub(crate) struct GateLayer {
    pub(crate) auth: Arc<Auth>,
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    auth: Arc<Auth>,
}

fn http_status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = code;
    r
}

impl<S> Gate<S> {
    /// The response that refuses `req`, or `None` to let it through.
    fn refusal<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if req.method() != Method::POST {
            return Some(http_status(StatusCode::METHOD_NOT_ALLOWED));
        }
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return Some(http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        if req.uri().path().starts_with(AUTHENTICATED_PREFIX)
            && let Err(status) = self.auth.authenticate(req.headers())
        {
            return Some(status.into_http());
        }
        None
    }
}

impl<S, B> Service<Request<B>> for Gate<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(refusal) = self.refusal(&req) {
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        Box::pin(self.inner.call(req))
    }
}
