//! The PostgreSQL wire protocol front end, so `psql`, `pgbench` and
//! ordinary drivers can talk to the coordinator.
//!
//! - [`startup`]: TLS (SSLRequest), SCRAM-SHA-256 authentication (or trust),
//!   and the `max_sessions` limit, which a connection counts against.
//! - This file: accepting connections, the simple query protocol
//!   (`;`-separated statements run in order, each sends its result, the
//!   first error ends the batch, as in PostgreSQL) and the responses.
//! - [`extended`]: the extended query protocol (Parse, Bind, Describe,
//!   Execute) with `$1`, `$2`, ... parameters.
//! - [`catalog`]: answers to psql's `\d` queries from Tessera's catalog.
//! - [`frames`]: every frontend message's layout is checked before pgwire
//!   decodes it (08P01 for a malformed one, 22021 for text that is not UTF-8).
//!
//! Each connection is a [`Session`]: a transaction opened by BEGIN lives as
//! long as the connection, and closing the connection rolls it back.
//! Statements run in a task of their own, as over gRPC: a client that
//! disconnects does not cancel a commit halfway. Errors carry the SQLSTATE
//! of [`CoordError::sqlstate`].

mod catalog;
mod extended;
pub mod frames;
mod prepare;
mod reply;
mod startup;

use crate::auth::Authenticator;
use crate::background::Background;
use crate::exec::Engine;
use crate::session::{Session, Sessions};
use async_trait::async_trait;
use pgwire::api::portal::Format;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::Response;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::sqlstate;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// What every connection shares.
pub struct Frontend {
    engine: Arc<Engine>,
    sessions: Arc<Sessions>,
    auth: Arc<Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    authenticating: Arc<Authenticating>,
}

/// What one PostgreSQL connection may take (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From the first byte to the end of authentication.
    pub auth_timeout: Duration,
    /// The largest frontend message.
    pub max_message: usize,
    /// Connections authenticating at once; one more closes the oldest.
    pub max_authenticating: usize,
}

impl Frontend {
    pub fn new(
        engine: Arc<Engine>,
        sessions: Arc<Sessions>,
        auth: Arc<Authenticator>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        limits: ConnectionLimits,
    ) -> Frontend {
        let authenticating = Arc::new(Authenticating::new(limits.max_authenticating));
        Frontend { engine, sessions, auth, tls, limits, authenticating }
    }
}

/// Connections that have not finished authenticating, oldest first. One
/// more than `max` closes the oldest: connections parked at the password
/// exchange cannot keep a real client (or an operator) from starting its
/// own. Each also holds a session place, so the queue bounds those too.
struct Authenticating {
    queue: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
    next: std::sync::atomic::AtomicU64,
    max: usize,
}

/// A connection's place in [`Authenticating`]; given back on drop.
struct AuthTicket {
    id: u64,
    evicted: Arc<tokio::sync::Notify>,
    owner: Arc<Authenticating>,
}

impl Authenticating {
    fn new(max: usize) -> Authenticating {
        Authenticating { queue: Default::default(), next: Default::default(), max: max.max(1) }
    }

    fn enter(self: &Arc<Self>) -> AuthTicket {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = Arc::new(tokio::sync::Notify::new());
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back((id, evicted.clone()));
        while queue.len() > self.max {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        AuthTicket { id, evicted, owner: self.clone() }
    }
}

impl Drop for AuthTicket {
    fn drop(&mut self) {
        self.owner.queue.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != self.id);
    }
}

/// Accepts PostgreSQL connections until the coordinator stops; then its
/// connections end too (each is a background task).
pub async fn serve(listener: TcpListener, front: Arc<Frontend>, background: Background) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let connection = Arc::new(Connection::new(front.clone()));
                    let tls = front.tls.clone();
                    let (limits, ticket) = (front.limits, front.authenticating.enter());
                    background.spawn_until_stopped(async move {
                        if let Err(e) = serve_connection(socket, tls, connection, limits, ticket).await {
                            tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a postgres connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = background.stopped() => return,
        }
    }
}

/// One connection: TLS negotiation, then every message checked by
/// [`frames::Checked`] and handed to pgwire's dispatcher. Startup and
/// authentication must end within `auth_timeout`.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connection: Arc<Connection>,
    limits: ConnectionLimits,
    ticket: AuthTicket,
) -> std::io::Result<()> {
    use futures::StreamExt;
    use pgwire::api::PgWireConnectionState as State;
    let deadline = tokio::time::sleep(limits.auth_timeout);
    tokio::pin!(deadline);
    let evicted = ticket.evicted.clone();
    let mut ticket = Some(ticket);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(()),
        _ = evicted.notified() => return Ok(()),
        negotiated = pgwire::tokio::server::negotiate_tls::<prepare::Prepared>(socket, tls) => negotiated?,
    };
    let Some(framed) = negotiated else { return Ok(()) };
    let old = framed.into_parts();
    let io = frames::Checked::new(old.io, old.read_buf, limits.max_message);
    let mut parts = tokio_util::codec::FramedParts::new(io, old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = tokio_util::codec::Framed::from_parts(parts);
    let (startup, simple, extended) = (connection.startup.clone(), connection.backend.clone(), connection.backend.clone());
    let (copy, cancel, errors) = (Arc::new(pgwire::api::NoopHandler), Arc::new(pgwire::api::NoopHandler), startup::NameTheUser);
    loop {
        let authenticating = matches!(socket.state(), State::AwaitingStartup | State::AuthenticationInProgress);
        if !authenticating {
            ticket = None;
        }
        let next = if ticket.is_some() {
            tokio::select! {
                _ = &mut deadline => {
                    return refuse(&mut socket, sqlstate::PROTOCOL_VIOLATION, "canceling authentication due to timeout (limits.auth_timeout_ms)".into()).await;
                }
                _ = evicted.notified() => {
                    let why = "too many connections are authenticating at once (limits.max_authenticating); this one waited longest";
                    return refuse(&mut socket, sqlstate::TOO_MANY_CONNECTIONS, why.into()).await;
                }
                next = socket.next() => next,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            None => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(PgWireError::IoError(e))) if frames::violation(&e).is_some() => {
                let cause = frames::violation(&e).map(|v| v.to_string()).unwrap_or_default();
                tracing::info!(error = %cause, "closing a postgres connection that sent a malformed message");
                return refuse(&mut socket, sqlstate::PROTOCOL_VIOLATION, cause).await;
            }
            Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
        };
        if matches!(message, pgwire::messages::PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let wait_for_sync = match socket.state() {
            State::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let cancel_request = matches!(message, pgwire::messages::PgWireFrontendMessage::CancelRequest(_));
        let outcome =
            pgwire::tokio::server::process_message(message, &mut socket, startup.clone(), simple.clone(), extended.clone(), copy.clone(), cancel.clone()).await;
        if let Err(mut e) = outcome {
            pgwire::api::ErrorHandler::on_error(&errors, &socket, &mut e);
            let fatal = e.is_fatal();
            pgwire::tokio::server::process_error(&mut socket, e, wait_for_sync).await?;
            if fatal {
                return Ok(());
            }
        }
        if cancel_request {
            return Ok(());
        }
    }
}

/// Answers FATAL `code` and closes the connection (pgwire's own error path:
/// no ReadyForQuery follows).
async fn refuse(socket: &mut CheckedSocket, code: &str, message: String) -> std::io::Result<()> {
    pgwire::tokio::server::process_error(socket, startup::fatal(code, message), true).await
}

type CheckedSocket =
    tokio_util::codec::Framed<frames::Checked<pgwire::tokio::server::MaybeTls>, pgwire::tokio::server::PgWireMessageServerCodec<prepare::Prepared>>;

/// The handlers of one connection.
struct Connection {
    startup: Arc<startup::Startup>,
    backend: Arc<Backend>,
}

impl Connection {
    fn new(front: Arc<Frontend>) -> Connection {
        let startup = Arc::new(startup::Startup::new(front.sessions.clone(), front.auth.clone(), front.tls.is_some()));
        let backend = Arc::new(Backend::new(front.engine.clone(), front.sessions.new_session()));
        Connection { startup, backend }
    }
}

/// One connection's session and statement parser.
struct Backend {
    engine: Arc<Engine>,
    session: Arc<Mutex<Session>>,
    parser: Arc<prepare::Parser>,
}

impl Backend {
    fn new(engine: Arc<Engine>, session: Session) -> Backend {
        let parser = Arc::new(prepare::Parser::new(engine.clone()));
        Backend { engine, session: Arc::new(Mutex::new(session)), parser }
    }
}

impl Drop for Backend {
    /// The connection is gone: roll back its open transaction, if any.
    fn drop(&mut self) {
        let Some(txn) = self.session.try_lock().ok().and_then(|mut s| s.txn.take()) else { return };
        let engine = self.engine.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { engine.txns().rollback(txn).await });
        }
    }
}

use reply::{believed_from, error_info, refused_text, response, task_failed};

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let mut believed = believed_from(client.transaction_status());
        if let Some(e) = refused_text(query) {
            let e = self.engine.refuse(&mut *self.session.lock().await, e).await;
            return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
        }
        if let Err(e) = self.engine.check_length(query) {
            return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
        }
        if let Some(result) = catalog::answer(query, self.engine.catalog()) {
            return Ok(vec![response(result, &Format::UnifiedText, &mut believed, false)?]);
        }
        let (engine, session, sql) = (self.engine.clone(), self.session.clone(), query.to_string());
        let outcome = tokio::spawn(crate::api::traced_task(async move {
            let mut session = session.lock_owned().await;
            engine.execute_each(&mut session, &sql).await
        }))
        .await
        .map_err(task_failed)?;
        let mut responses = Vec::new();
        for (result, in_txn) in outcome.results {
            responses.push(response(result, &Format::UnifiedText, &mut believed, in_txn)?);
        }
        if let Some(e) = outcome.error {
            responses.push(Response::Error(Box::new(error_info(&e))));
        }
        Ok(responses)
    }
}
