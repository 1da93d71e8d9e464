//! Client authentication: bearer tokens for gRPC, SCRAM-SHA-256 passwords
//! for the PostgreSQL protocol, both from the coordinator's config
//! (`[auth]`). Tokens are kept as SHA-256 digests and compared in constant
//! time; passwords are kept as SCRAM verifiers, so the coordinator never
//! holds a password after startup.
//!
//! Credentials are required unless `auth.trust` is set (as `tessera demo`
//! does): a coordinator with neither users nor tokens refuses to start.

use crate::config::AuthConfig;
use base64::Engine as _;
use ring::digest;
use std::collections::HashMap;
use tonic::{Request, Status};

/// SCRAM iterations of verifiers made from clear-text passwords.
pub const SCRAM_ITERATIONS: usize = 4096;

/// Who made a call: a token's or a user's name (`trust` when none is needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// A SCRAM-SHA-256 verifier, as PostgreSQL stores it.
#[derive(Clone)]
pub struct ScramVerifier {
    pub iterations: usize,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

impl ScramVerifier {
    /// A verifier for `password` with a random salt.
    pub fn from_password(password: &str) -> ScramVerifier {
        let salt: [u8; 16] = rand::random();
        let salted = pgwire::api::auth::sasl::scram::gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key).as_ref().to_vec();
        ScramVerifier { iterations: SCRAM_ITERATIONS, salt: salt.to_vec(), stored_key, server_key: hmac(&salted, b"Server Key") }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`
    /// (base64 fields), the format of PostgreSQL's `pg_authid.rolpassword`.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let bad = || "expected SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>".to_string();
        let rest = text.trim().strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (head, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = head.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("invalid base64 \"{s}\": {e}"));
        let verifier = ScramVerifier {
            iterations: iterations.parse().map_err(|_| format!("invalid iteration count \"{iterations}\""))?,
            salt: b64(salt)?,
            stored_key: b64(stored)?,
            server_key: b64(server)?,
        };
        if verifier.iterations == 0 || verifier.stored_key.len() != 32 || verifier.server_key.len() != 32 {
            return Err("the iteration count must be positive and both keys 32 bytes long".into());
        }
        Ok(verifier)
    }

    /// The PostgreSQL text form (what `tessera passwd` prints).
    pub fn to_text(&self) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        format!("SCRAM-SHA-256${}:{}${}:{}", self.iterations, b64(&self.salt), b64(&self.stored_key), b64(&self.server_key))
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The credentials the coordinator accepts.
#[derive(Debug, Default)]
pub struct Authenticator {
    trust: bool,
    /// (name, SHA-256 of the token)
    tokens: Vec<(String, [u8; 32])>,
    users: HashMap<String, ScramVerifier>,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, String> {
        let mut tokens = Vec::new();
        for t in &config.tokens {
            let digest = match (&t.token, &t.sha256) {
                (Some(token), None) => sha256(token.as_bytes()),
                (None, Some(hex)) => decode_hex32(hex).map_err(|e| format!("auth token \"{}\": sha256: {e}", t.name))?,
                _ => return Err(format!("auth token \"{}\" needs exactly one of token and sha256", t.name)),
            };
            tokens.push((t.name.clone(), digest));
        }
        let mut users = HashMap::new();
        for u in &config.users {
            let verifier = match (&u.password, &u.scram) {
                (Some(password), None) => ScramVerifier::from_password(password),
                (None, Some(text)) => ScramVerifier::parse(text).map_err(|e| format!("auth user \"{}\": scram: {e}", u.name))?,
                _ => return Err(format!("auth user \"{}\" needs exactly one of password and scram", u.name)),
            };
            users.insert(u.name.clone(), verifier);
        }
        Ok(Authenticator { trust: config.trust, tokens, users })
    }

    /// Accepts everyone (tests, `tessera demo`).
    pub fn trusting() -> Authenticator {
        Authenticator { trust: true, ..Default::default() }
    }

    pub fn trusts_everyone(&self) -> bool {
        self.trust
    }

    /// The verifier of a PostgreSQL user; `None` for an unknown user.
    pub fn scram_verifier(&self, user: &str) -> Option<&ScramVerifier> {
        self.users.get(user)
    }

    /// Who presents `authorization: Bearer <token>`.
    pub fn check_bearer<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        if self.trust {
            return Ok(Principal("trust".into()));
        }
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated("authentication required: send the metadata \"authorization: Bearer <token>\""));
        };
        let text = value.to_str().unwrap_or_default();
        let Some(token) = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")) else {
            return Err(Status::unauthenticated("the authorization metadata must be \"Bearer <token>\""));
        };
        let presented = sha256(token.trim().as_bytes());
        // Compare against every token, always, so timing tells nothing.
        let mut found = None;
        for (name, digest) in &self.tokens {
            if presented.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 {
                found = Some(name.clone());
            }
        }
        found.map(Principal).ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }
}

fn decode_hex32(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(format!("expected 64 hex digits, got {}", text.len()));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| format!("\"{pair}\" is not hex"))?;
    }
    Ok(out)
}

/// The hex SHA-256 of a token, for `sha256 = "..."` in the config.
pub fn token_digest_hex(token: &str) -> String {
    sha256(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TokenConfig, UserConfig};

    fn config() -> AuthConfig {
        AuthConfig {
            trust: false,
            users: vec![UserConfig { name: "app".into(), password: Some("pencil".into()), scram: None, operator: false }],
            tokens: vec![
                TokenConfig { name: "app".into(), token: Some("secret-token".into()), sha256: None, operator: false },
                TokenConfig { name: "ops".into(), token: None, sha256: Some(token_digest_hex("ops-token")), operator: false },
            ],
        }
    }

    fn request(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        request
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let auth = Authenticator::from_config(&config()).unwrap();
        assert_eq!(auth.check_bearer(&request(Some("Bearer secret-token"))).unwrap(), Principal("app".into()));
        assert_eq!(auth.check_bearer(&request(Some("Bearer ops-token"))).unwrap(), Principal("ops".into()));
        assert!(auth.check_bearer(&request(None)).unwrap_err().message().contains("authentication required"));
        assert!(auth.check_bearer(&request(Some("Bearer nope"))).unwrap_err().message().contains("invalid bearer token"));
        assert!(auth.check_bearer(&request(Some("Basic abc"))).unwrap_err().message().contains("Bearer <token>"));
        assert!(Authenticator::trusting().check_bearer(&request(None)).is_ok());
    }

    #[test]
    fn scram_verifiers_round_trip_through_their_text_form() {
        let verifier = ScramVerifier::from_password("pencil");
        let parsed = ScramVerifier::parse(&verifier.to_text()).unwrap();
        assert_eq!(parsed.stored_key, verifier.stored_key);
        assert_eq!(parsed.salt, verifier.salt);
        assert!(ScramVerifier::parse("md5abc").is_err());
        let auth = Authenticator::from_config(&config()).unwrap();
        assert!(auth.scram_verifier("app").is_some() && auth.scram_verifier("nobody").is_none());
    }
}
