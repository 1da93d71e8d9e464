//! Connection startup: the session limit, then SCRAM-SHA-256 (users from
//! `[[auth.users]]`) or, with `auth.trust`, no authentication.
//!
//! A wrong password and an unknown user get the same answer (SQLSTATE
//! 28P01), so the error does not tell which users exist.

use crate::auth::Authenticator;
use crate::session::{ConnectionSlot, Sessions};
use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tessera_model::sqlstate;

/// The parameters a client learns at startup.
fn parameters() -> DefaultServerParameterProvider {
    let mut provider = DefaultServerParameterProvider::default();
    provider.server_version = format!("15.0 (Tessera {})", env!("CARGO_PKG_VERSION"));
    provider
}

pub(super) fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_string(), code.to_string(), message)))
}

/// The users' SCRAM verifiers, as pgwire asks for them. An unknown user
/// gets a made-up verifier (stable per user, matching no password), so the
/// exchange fails at the same step, with the same error, as a wrong password.
#[derive(Debug)]
struct Users {
    auth: Arc<Authenticator>,
}

/// Random per process: the made-up verifiers' salts and keys.
fn decoy() -> &'static [u8; 32] {
    static DECOY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    DECOY.get_or_init(rand::random)
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(refused(login.user()))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or("");
        let secret = match self.auth.scram_verifier(user) {
            Some(v) => {
                ScramSecret::Verifier { salt: v.salt.clone(), iterations: v.iterations, stored_key: v.stored_key.clone(), server_key: v.server_key.clone() }
            }
            None => {
                let made_up = |what: &[u8]| ring::digest::digest(&ring::digest::SHA256, &[&decoy()[..], what, user.as_bytes()].concat()).as_ref().to_vec();
                ScramSecret::Verifier {
                    salt: made_up(b"salt")[..16].to_vec(),
                    iterations: crate::auth::SCRAM_ITERATIONS,
                    stored_key: made_up(b"stored"),
                    server_key: made_up(b"server"),
                }
            }
        };
        Ok((secret, None))
    }
}

fn refused(user: Option<&str>) -> PgWireError {
    fatal(sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{}\"", user.unwrap_or("")))
}

enum Method {
    Trust,
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

/// The startup handler of one connection.
pub struct Startup {
    sessions: Arc<Sessions>,
    method: Method,
    /// With certificates configured, plain-text connections are refused.
    require_tls: bool,
    /// The connection's place in the session count, taken at startup.
    slot: Mutex<Option<ConnectionSlot>>,
}

impl Startup {
    pub fn new(sessions: Arc<Sessions>, auth: Arc<Authenticator>, require_tls: bool) -> Startup {
        let method = if auth.trusts_everyone() {
            Method::Trust
        } else {
            let scram = ScramAuth::new(Arc::new(Users { auth }));
            Method::Scram(Box::new(SASLAuthStartupHandler::new(Arc::new(parameters())).with_scram(scram)))
        };
        Startup { sessions, method, require_tls, slot: Mutex::new(None) }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if self.require_tls && !client.is_secure() {
                return Err(fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "this server requires TLS: connect with sslmode=require (or verify-full)".into(),
                ));
            }
            let user = startup.parameters.get("user").map(String::as_str).unwrap_or("");
            let slot = self.sessions.connection(user).map_err(|e| fatal(e.sqlstate(), e.to_string()))?;
            *self.slot.lock().unwrap() = Some(slot);
        }
        match &self.method {
            Method::Scram(handler) => handler.on_startup(client, message).await,
            Method::Trust => trust(client, message).await,
        }
    }
}

/// Startup without authentication.
async fn trust<C>(client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    let PgWireFrontendMessage::Startup(startup) = &message else { return Ok(()) };
    pgwire::api::auth::protocol_negotiation(client, startup).await?;
    pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
    let (pid, key) = RandomPidSecretKeyGenerator::default().generate(client);
    client.set_pid_and_secret_key(pid, key);
    // Sends AuthenticationOk, the parameters, the key and ReadyForQuery.
    pgwire::api::auth::finish_authentication(client, &parameters()).await
}

/// Names the user in a failed SCRAM exchange (the client's SCRAM messages
/// leave the name out; the startup message has it), as PostgreSQL does.
pub struct NameTheUser;

impl pgwire::api::ErrorHandler for NameTheUser {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        if let PgWireError::InvalidPassword(_) = error {
            let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
            *error = refused(user.as_deref());
        }
    }
}
