//! The direct route's HTTP/1 client: keep-alive connections to one endpoint, each driven by
//! the task that is using it.
//!
//! hyper-util's pooled client runs every connection on a task of its own: a request reaches
//! that task through a channel, the response comes back through another, and after each
//! response one more task is spawned to put the connection back in the pool once the body has
//! been read. Here the caller polls the connection itself while it waits for the response and
//! reads the body, and puts the connection back when the body ends: no task per connection or
//! per response, and no wake-ups passed between tasks. A connection sits in the pool unpolled;
//! one the server closed meanwhile is noticed (its read side at end of file) and dropped when
//! it is taken out.

use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::transport::TransportError;

type ReqBody = Full<Bytes>;

/// A pooled connection unused for this long is closed (reqwest's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// At most this many idle connections are kept; more are closed as they come back.
const MAX_IDLE: usize = 256;

/// A client of one HTTP/1 endpoint (plain TCP) with a pool of keep-alive connections.
pub(crate) struct DirectClient {
    pool: Arc<Pool>,
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The request target in origin form (path and query).
    target: Uri,
    connect_timeout: Duration,
}

/// The idle connections, the most recently used last.
struct Pool {
    idle: Mutex<Vec<(Box<Conn>, Instant)>>,
    /// A connection idle this long is not used again.
    idle_timeout: Duration,
}

impl Pool {
    fn new(idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::default(),
            idle_timeout,
        }
    }

    /// The most recently used idle connection that can still take a request.
    fn take(&self) -> Option<Box<Conn>> {
        loop {
            // Polled below outside the lock; one that can't take a request is dropped.
            let (mut conn, since) = self.lock().pop()?;
            if since.elapsed() >= self.idle_timeout {
                // The rest were returned earlier still, but for any put back meanwhile.
                self.lock()
                    .retain(|(_, since)| since.elapsed() < self.idle_timeout);
                return None;
            }
            if conn.can_send() {
                return Some(conn);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Box<Conn>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `conn` for the next request if it can take one.
    fn put(&self, mut conn: Box<Conn>) {
        if !conn.can_send() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }
}

/// One connection: the handle requests are sent through and the state machine that does the
/// reading and writing, polled by whoever holds it. Kept boxed (it is large) so that handing it
/// to a response and back to the pool moves a pointer.
struct Conn {
    sender: SendRequest<ReqBody>,
    driver: Connection<TokioIo<TcpStream>, ReqBody>,
    /// The driver has finished (the connection is closed or broke); it is not polled again.
    done: bool,
    /// The error it finished with, if any.
    error: Option<hyper::Error>,
}

impl Conn {
    /// Lets the connection read and write what it can; `cx` is woken when it can do more.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Poll::Ready(result) = Pin::new(&mut self.driver).poll(cx) {
            self.done = true;
            self.error = result.err();
        }
    }

    /// Whether the connection is open and waiting for a request.
    fn can_send(&mut self) -> bool {
        // Only this connection's own progress matters here; whoever takes it next polls it
        // with their own waker.
        self.drive(&mut Context::from_waker(Waker::noop()));
        !self.done && self.sender.is_ready()
    }

    /// Why the connection ended while a response was still expected.
    fn closed_error(&mut self) -> TransportError {
        match self.error.take() {
            Some(e) => TransportError::body(e),
            None => TransportError::eof(),
        }
    }
}

impl DirectClient {
    /// A client of `host:port` (`address`), sending `target` with `host` as its `Host`.
    pub(crate) fn new(
        address: String,
        host: HeaderValue,
        target: Uri,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            pool: Arc::new(Pool::new(IDLE_TIMEOUT)),
            address,
            host,
            target,
            connect_timeout,
        }
    }

    /// Where requests go: the address connected to, the `Host` header and the request target.
    #[cfg(test)]
    pub(crate) fn destination(&self) -> (&str, &str, &Uri) {
        let host = self.host.to_str().unwrap_or_default();
        (&self.address, host, &self.target)
    }

    /// Sends `request` (its URI and `Host` set here) on a pooled connection, or a new one;
    /// a request that a pooled connection could not take is sent again on a new one.
    pub(crate) async fn send(
        &self,
        mut request: Request<ReqBody>,
    ) -> Result<DirectResponse, TransportError> {
        *request.uri_mut() = self.target.clone();
        request.headers_mut().insert(HOST, self.host.clone());
        let (mut conn, pooled) = match self.pool.take() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        let response = match exchange(&mut conn, request).await {
            Ok(response) => response,
            Err(Failure::Unsent(request, _)) if pooled => {
                conn = self.connect().await?;
                exchange(&mut conn, *request)
                    .await
                    .map_err(Failure::into_error)?
            }
            Err(failure) => return Err(failure.into_error()),
        };
        let (head, body) = response.into_parts();
        Ok(DirectResponse {
            head,
            body,
            lease: Some(Lease {
                conn,
                pool: Arc::clone(&self.pool),
            }),
        })
    }

    /// A new connection, within the connect limit.
    async fn connect(&self) -> Result<Box<Conn>, TransportError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
            .await
            .map_err(|_| TransportError::connect_timeout())?
            .map_err(TransportError::connect)?;
        // Requests are written whole; don't hold their last segment back.
        stream.set_nodelay(true).map_err(TransportError::connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::other)?;
        Ok(Box::new(Conn {
            sender,
            driver,
            done: false,
            error: None,
        }))
    }
}

/// A request that failed: `Unsent` when it never left (it comes back to be sent again).
enum Failure {
    Unsent(Box<Request<ReqBody>>, hyper::Error),
    Failed(TransportError),
}

impl Failure {
    fn into_error(self) -> TransportError {
        match self {
            Self::Unsent(_, e) => TransportError::other(e),
            Self::Failed(e) => e,
        }
    }
}

/// Sends `request` on `conn` and waits for the response's head, driving the connection.
async fn exchange(
    conn: &mut Conn,
    request: Request<ReqBody>,
) -> Result<http::Response<Incoming>, Failure> {
    let mut response = pin!(conn.sender.try_send_request(request));
    std::future::poll_fn(|cx| {
        conn.drive(cx);
        // The response comes only from the driver, polled just above with the real waker.
        match response
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
            Poll::Ready(Err(mut e)) => Poll::Ready(Err(match e.take_message() {
                Some(request) => Failure::Unsent(Box::new(request), e.into_error()),
                None => Failure::Failed(TransportError::other(e.into_error())),
            })),
            Poll::Pending if conn.done => Poll::Ready(Err(Failure::Failed(conn.closed_error()))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A connection lent to one response until its body has been read.
struct Lease {
    conn: Box<Conn>,
    pool: Arc<Pool>,
}

/// A response whose head has arrived; the body is read with [`frame`](Self::frame).
pub(crate) struct DirectResponse {
    pub(crate) head: http::response::Parts,
    body: Incoming,
    /// Given back to the pool when the body ends; dropped (and the connection closed) if the
    /// response is dropped before that.
    lease: Option<Lease>,
}

impl DirectResponse {
    /// The next frame of the body, `None` at its end.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        let Some(lease) = &mut self.lease else {
            return Poll::Ready(None);
        };
        lease.conn.drive(cx);
        // As for the head: the body is fed only by the driver.
        match Pin::new(&mut self.body).poll_frame(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(None) => {
                if let Some(Lease { conn, pool }) = self.lease.take() {
                    pool.put(conn);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(TransportError::body))),
            // The connection ended with the body unfinished; it is dropped with the response.
            Poll::Pending if lease.conn.done => Poll::Ready(Some(Err(lease.conn.closed_error()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::serve::ListenerExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering every request with `ok`; counts the connections it accepts.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let listener = listener.tap_io(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, connections)
    }

    /// A client of `address` whose kept connections expire after `idle_timeout`.
    fn client(address: String, idle_timeout: Duration) -> DirectClient {
        let host = HeaderValue::try_from(address.as_str()).unwrap();
        let mut client =
            DirectClient::new(address, host, Uri::from_static("/"), Duration::from_secs(5));
        client.pool = Arc::new(Pool::new(idle_timeout));
        client
    }

    /// Sends a request and reads the whole answer.
    async fn call(client: &DirectClient) {
        let mut response = client.send(Request::new(Full::default())).await.unwrap();
        assert_eq!(response.head.status, 200);
        let mut body = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| response.poll_frame(cx)).await {
            if let Ok(data) = frame.unwrap().into_data() {
                body.extend_from_slice(&data);
            }
        }
        assert_eq!(body, b"ok");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_not_used_again() {
        // Within the limit the one connection serves every call.
        let (address, connections) = server().await;
        let kept = client(address, IDLE_TIMEOUT);
        for _ in 0..3 {
            call(&kept).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        // With no idle time allowed, each kept connection has expired by the next call.
        let (address, connections) = server().await;
        let expiring = client(address, Duration::ZERO);
        for _ in 0..3 {
            call(&expiring).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
        assert_eq!(expiring.pool.lock().len(), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_takes_its_connection_with_it() {
        let (address, connections) = server().await;
        let client = client(address, IDLE_TIMEOUT);
        let unread = client.send(Request::new(Full::default())).await.unwrap();
        drop(unread);
        assert_eq!(client.pool.lock().len(), 0);
        call(&client).await;
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert_eq!(client.pool.lock().len(), 1);
    }
}
