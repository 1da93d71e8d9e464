//! Bytes from a PostgreSQL client, as the coordinator reads them: the
//! message check (`postgres::frames`) first, then pgwire's decoder on what
//! the check let through, with the startup packet or after it. A violation
//! is the expected answer to garbage; a panic in either is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
use tessera_coordinator::postgres::frames::check_messages;

/// The coordinator's default limits.max_message_bytes is larger; a smaller
/// one lets the fuzzer reach the limit.
const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let startup = mode & 1 == 0;
    let (mut ready, _violation) = check_messages(bytes, startup, MAX_MESSAGE);
    let mut ctx = DecodeContext::new(ProtocolVersion::default());
    // SSL negotiation happens before the check wraps the socket.
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = startup;
    // The first password-family message is SCRAM's initial response, the
    // next ones its continuations (or a cleartext password).
    let mut passwords = 0;
    while !ready.is_empty() {
        match PgWireFrontendMessage::decode(&mut ready, &ctx) {
            Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(p))) => {
                passwords += 1;
                let _ = if passwords == 1 { p.into_sasl_initial_response().map(drop) } else { p.into_sasl_response().map(drop) };
            }
            Ok(Some(_)) => ctx.awaiting_frontend_startup = false,
            Ok(None) | Err(_) => break,
        }
    }
});
