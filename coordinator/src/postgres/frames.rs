//! A check of every frontend message's layout before pgwire decodes it.
//!
//! pgwire's decoders trust the lengths and counts inside a message (a Bind
//! that announces more parameters than it carries makes them read past the
//! message, or panic), and they turn invalid UTF-8 into U+FFFD. So the
//! socket is wrapped in [`Checked`], which cuts the byte stream into
//! messages by their length words and walks each one against the protocol:
//!
//! - a message whose layout is wrong (lengths, counts, missing terminators,
//!   trailing bytes, unknown types) ends the connection with FATAL 08P01,
//!   as PostgreSQL does for an invalid message;
//! - a Query or Parse whose text is not valid UTF-8, or holds a NUL byte,
//!   reaches the handlers as a marked text ([`rejected_text`]) that they
//!   answer with an ordinary error (22021 or 08P01), so the connection and
//!   its transaction go on as in PostgreSQL.
//!
//! Text parameters of Bind are raw bytes to pgwire; the extended-protocol
//! handler checks them (22021).

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tessera_model::sqlstate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Protocol 3.0's codes in the startup phase.
const PROTOCOL_3: i32 = 3 << 16;
const CANCEL_REQUEST: i32 = 80877102;
/// Startup packets are small; PostgreSQL allows 10,000 bytes.
const MAX_STARTUP_BYTES: usize = 10_000;

/// Marks a Query or Parse text that [`Checked`] refused: the marker, then
/// the SQLSTATE, a colon, and the message.
const MARK: &str = "\u{FFFF}tessera-rejected-text\u{FFFF}";

/// The error a text marked by [`Checked`] gets: (SQLSTATE, message).
pub fn rejected_text(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(MARK)?.split_once(':')
}

/// Why a message was refused; carried in an `io::Error` to the connection
/// loop, which answers FATAL 08P01.
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// The violation behind an I/O error, if it is one.
pub fn violation(e: &io::Error) -> Option<&Violation> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Violation>())
}

/// A stream whose reads yield only checked frontend messages.
pub struct Checked<S> {
    inner: S,
    /// Read from `inner`, not yet checked.
    raw: BytesMut,
    /// Checked, not yet read.
    ready: BytesMut,
    /// Still in the startup phase (messages without a type byte).
    startup: bool,
    /// Password-family messages seen: the first is SCRAM's initial response.
    password_messages: u32,
    max_message: usize,
    /// End of input from `inner`.
    eof: bool,
}

impl<S> Checked<S> {
    /// `already_read`: bytes taken from the socket before it was wrapped.
    pub fn new(inner: S, already_read: BytesMut, max_message: usize) -> Checked<S> {
        Checked { inner, raw: already_read, ready: BytesMut::new(), startup: true, password_messages: 0, max_message, eof: false }
    }

    /// Moves every complete message of `raw` to `ready`, checked.
    fn check_complete(&mut self) -> Result<(), Violation> {
        loop {
            let taken = if self.startup { self.startup_message()? } else { self.typed_message()? };
            let Some(message) = taken else { return Ok(()) };
            self.ready.extend_from_slice(&message);
        }
    }

    fn startup_message(&mut self) -> Result<Option<BytesMut>, Violation> {
        if self.raw.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes(self.raw[..4].try_into().expect("4 bytes"));
        if !(8..=MAX_STARTUP_BYTES as i32).contains(&len) {
            return Err(Violation(format!("invalid length of startup packet: {len}")));
        }
        if self.raw.len() < len as usize {
            return Ok(None);
        }
        let message = self.raw.split_to(len as usize);
        let code = i32::from_be_bytes(message[4..8].try_into().expect("4 bytes"));
        match code {
            CANCEL_REQUEST if len == 16 => {}
            c if c >> 16 == PROTOCOL_3 >> 16 => startup_parameters(&message[8..])?,
            c => return Err(Violation(format!("unsupported frontend protocol {}.{}", c >> 16, c & 0xffff))),
        }
        self.startup = false;
        Ok(Some(message))
    }

    fn typed_message(&mut self) -> Result<Option<BytesMut>, Violation> {
        if self.raw.len() < 5 {
            return Ok(None);
        }
        let kind = self.raw[0];
        let len = i32::from_be_bytes(self.raw[1..5].try_into().expect("4 bytes"));
        if len < 4 {
            return Err(Violation(format!("invalid message length {len} of message type '{}'", char::from(kind))));
        }
        if len as usize > self.max_message {
            return Err(Violation(format!("message of {len} bytes is longer than limits.max_message_bytes ({})", self.max_message)));
        }
        if self.raw.len() < 1 + len as usize {
            return Ok(None);
        }
        let message = self.raw.split_to(1 + len as usize);
        let body = &message[5..];
        match kind {
            b'Q' => return Ok(Some(query(body))),
            b'P' => return Ok(Some(parse(body)?)),
            b'B' => bind(body)?,
            b'D' | b'C' => describe_or_close(kind, body)?,
            b'E' => {
                let mut r = Reader::new(body);
                r.cstring()?;
                r.i32()?;
                r.end()?;
            }
            b'S' | b'H' | b'X' | b'c' => Reader::new(body).end()?,
            b'd' => {}
            b'f' => {
                let mut r = Reader::new(body);
                r.cstring()?;
                r.end()?;
            }
            b'p' => {
                self.password_messages += 1;
                if self.password_messages == 1 {
                    sasl_initial_response(body)?;
                }
            }
            other => return Err(Violation(format!("invalid frontend message type {}", other))),
        }
        Ok(Some(message))
    }
}

/// Checks `bytes` as a connection's reads would, from the startup packet
/// if `startup`: the messages that pass, in order, and the first violation
/// if one stops the stream. The fuzz target `pg_messages` and the tests
/// call it without a socket.
pub fn check_messages(bytes: &[u8], startup: bool, max_message: usize) -> (BytesMut, Result<(), Violation>) {
    let mut checked = Checked::new((), BytesMut::from(bytes), max_message);
    checked.startup = startup;
    let outcome = checked.check_complete();
    (checked.ready, outcome)
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.check_complete().map_err(|v| io::Error::new(io::ErrorKind::InvalidData, v))?;
            if !this.ready.is_empty() {
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => this.raw.put_slice(read.filled()),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A cursor over a message body that fails, instead of panicking, when the
/// body is shorter than what it announces.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn short(&self, what: &str) -> Violation {
        Violation(format!("invalid message format: {what} runs past the end of the message"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Violation> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| self.short(what))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn i16(&mut self) -> Result<i16, Violation> {
        Ok(i16::from_be_bytes(self.take(2, "a 16-bit field")?.try_into().expect("2 bytes")))
    }

    fn i32(&mut self) -> Result<i32, Violation> {
        Ok(i32::from_be_bytes(self.take(4, "a 32-bit field")?.try_into().expect("4 bytes")))
    }

    fn count(&mut self, what: &str) -> Result<usize, Violation> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| Violation(format!("invalid message format: negative {what} count {n}")))
    }

    /// The bytes up to the next NUL (which is consumed).
    fn cstring(&mut self) -> Result<&'a [u8], Violation> {
        let rest = &self.data[self.pos..];
        let nul = rest.iter().position(|b| *b == 0).ok_or_else(|| Violation("invalid message format: a string has no terminating NUL".into()))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    fn utf8_cstring(&mut self, what: &str) -> Result<&'a str, Violation> {
        let bytes = self.cstring()?;
        std::str::from_utf8(bytes).map_err(|_| Violation(format!("invalid message format: {what} is not valid UTF-8")))
    }

    fn end(&self) -> Result<(), Violation> {
        match self.data.len() - self.pos {
            0 => Ok(()),
            n => Err(Violation(format!("invalid message format: {n} bytes past the end of the message's fields"))),
        }
    }
}

fn startup_parameters(body: &[u8]) -> Result<(), Violation> {
    let mut r = Reader::new(body);
    loop {
        let name = r.utf8_cstring("a startup parameter name")?;
        if name.is_empty() {
            return r.end().map_err(|_| Violation("invalid startup packet layout: bytes after the terminator".into()));
        }
        r.utf8_cstring("a startup parameter value")?;
    }
}

/// Why `text` cannot be SQL text: (SQLSTATE, message), as PostgreSQL words it.
pub fn text_error(text: &[u8]) -> Option<(&'static str, String)> {
    if let Some(at) = text.iter().position(|b| *b == 0) {
        return Some((sqlstate::CHARACTER_NOT_IN_REPERTOIRE, format!("invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL byte at offset {at})")));
    }
    match std::str::from_utf8(text) {
        Ok(_) => None,
        Err(e) => {
            let start = e.valid_up_to();
            let len = e.error_len().unwrap_or(text.len() - start).max(1);
            let bytes: Vec<String> = text[start..start + len].iter().map(|b| format!("0x{b:02x}")).collect();
            Some((sqlstate::CHARACTER_NOT_IN_REPERTOIRE, format!("invalid byte sequence for encoding \"UTF8\": {}", bytes.join(" "))))
        }
    }
}

/// Why a Query's or Parse's text cannot be run: a NUL inside it is a
/// malformed message (08P01, as PostgreSQL answers), invalid UTF-8 is 22021.
fn sql_text_error(text: &[u8]) -> Option<(&'static str, String)> {
    match text.iter().position(|b| *b == 0) {
        Some(at) => Some((sqlstate::PROTOCOL_VIOLATION, format!("invalid message format: the query string holds a NUL byte at offset {at}"))),
        None => text_error(text),
    }
}

/// A marked text in place of one that [`text_error`] refuses.
fn marked(sqlstate: &str, message: &str) -> Vec<u8> {
    format!("{MARK}{sqlstate}:{message}").into_bytes()
}

fn framed(kind: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(kind);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

/// A Query: one string filling the message. A NUL inside it, or text that
/// is not UTF-8, is passed on marked.
fn query(body: &[u8]) -> BytesMut {
    let text = match body.split_last() {
        Some((0, text)) => text,
        _ => body,
    };
    let problem = match body.last() {
        Some(0) => sql_text_error(text),
        _ => Some((sqlstate::PROTOCOL_VIOLATION, "invalid message format: the query string has no terminating NUL".into())),
    };
    match problem {
        None => framed(b'Q', body),
        Some((code, message)) => {
            let mut replaced = marked(code, &message);
            replaced.push(0);
            framed(b'Q', &replaced)
        }
    }
}

/// A Parse: statement name, query text, parameter type count and types.
fn parse(body: &[u8]) -> Result<BytesMut, Violation> {
    let mut r = Reader::new(body);
    let name = r.cstring()?;
    let text = r.cstring()?;
    let types_at = r.pos;
    let n = r.count("parameter type")?;
    r.take(4 * n, "parameter types")?;
    r.end()?;
    if std::str::from_utf8(name).is_err() {
        return Err(Violation("invalid message format: a statement name is not valid UTF-8".into()));
    }
    let Some((code, message)) = sql_text_error(text) else { return Ok(framed(b'P', body)) };
    let mut replaced = Vec::with_capacity(body.len());
    replaced.extend_from_slice(name);
    replaced.push(0);
    replaced.extend_from_slice(&marked(code, &message));
    replaced.push(0);
    replaced.extend_from_slice(&body[types_at..]);
    Ok(framed(b'P', &replaced))
}

/// A Bind: portal, statement, parameter formats, parameters (length words,
/// -1 for NULL), result formats; every count within the message.
fn bind(body: &[u8]) -> Result<(), Violation> {
    let mut r = Reader::new(body);
    r.utf8_cstring("a portal name")?;
    r.utf8_cstring("a statement name")?;
    let formats = r.count("parameter format")?;
    for _ in 0..formats {
        format_code(r.i16()?)?;
    }
    let parameters = r.count("parameter")?;
    if formats > 1 && formats != parameters {
        return Err(Violation(format!("bind message has {formats} parameter formats but {parameters} parameters")));
    }
    for i in 0..parameters {
        match r.i32()? {
            -1 => {}
            n if n < 0 => return Err(Violation(format!("invalid message format: parameter {} has length {n}", i + 1))),
            n => {
                r.take(n as usize, "a parameter value")?;
            }
        }
    }
    let results = r.count("result format")?;
    for _ in 0..results {
        format_code(r.i16()?)?;
    }
    r.end()
}

fn format_code(code: i16) -> Result<(), Violation> {
    match code {
        0 | 1 => Ok(()),
        other => Err(Violation(format!("unsupported format code: {other}"))),
    }
}

fn describe_or_close(kind: u8, body: &[u8]) -> Result<(), Violation> {
    let mut r = Reader::new(body);
    match r.take(1, "the target kind")?[0] {
        b'S' | b'P' => {}
        other => {
            let what = if kind == b'D' { "describe" } else { "close" };
            return Err(Violation(format!("invalid {what} message subtype {other}")));
        }
    }
    r.utf8_cstring("a statement or portal name")?;
    r.end()
}

/// SCRAM's first message: mechanism, then the client's data with its length
/// (-1: none).
fn sasl_initial_response(body: &[u8]) -> Result<(), Violation> {
    let mut r = Reader::new(body);
    r.utf8_cstring("the SASL mechanism")?;
    match r.i32()? {
        -1 => {}
        n if n < 0 => return Err(Violation(format!("invalid SASL initial response length {n}"))),
        n => {
            r.take(n as usize, "the SASL initial response")?;
        }
    }
    r.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(messages: &[u8]) -> Result<Vec<u8>, Violation> {
        let (ready, outcome) = check_messages(messages, false, 1 << 20);
        outcome.map(|()| ready.to_vec())
    }

    fn bind_message(parameters: &[(i32, &[u8])], count: i16, formats: &[i16]) -> Vec<u8> {
        let mut body = vec![0u8, 0u8];
        body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&count.to_be_bytes());
        for (len, data) in parameters {
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(data);
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        framed(b'B', &body).to_vec()
    }

    #[test]
    fn well_formed_messages_pass_unchanged() {
        let mut stream = framed(b'Q', b"SELECT 1\0").to_vec();
        stream.extend(bind_message(&[(1, b"7"), (-1, b"")], 2, &[0]));
        stream.extend(framed(b'S', b"").to_vec());
        assert_eq!(check(&stream).unwrap(), stream);
    }

    #[test]
    fn malformed_bind_messages_are_violations() {
        // More parameters announced than sent.
        assert!(check(&bind_message(&[(1, b"7")], 3, &[])).is_err());
        // A parameter length far past the message.
        assert!(check(&bind_message(&[(i32::MAX, b"")], 1, &[])).is_err());
        // 65535 formats and no data.
        let mut body = vec![0u8, 0u8];
        body.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(check(&framed(b'B', &body)).is_err());
        // A format code that is neither text nor binary.
        assert!(check(&bind_message(&[(1, b"7")], 1, &[7])).is_err());
        // A message length below its own length word.
        assert!(check(&[b'B', 0, 0, 0, 2]).is_err());
    }

    #[test]
    fn bad_text_is_marked_not_altered() {
        let out = check(&framed(b'Q', b"SELECT '\xff\xfe\xc3\x28'\0")).unwrap();
        let text = std::str::from_utf8(&out[5..out.len() - 1]).unwrap();
        let (code, message) = rejected_text(text).unwrap();
        assert_eq!(code, "22021");
        assert!(message.contains("0xff"), "{message}");
        let out = check(&framed(b'Q', b"SELECT 1\0SELECT 2\0")).unwrap();
        let (code, _) = rejected_text(std::str::from_utf8(&out[5..out.len() - 1]).unwrap()).unwrap();
        assert_eq!(code, "08P01");
    }

    #[test]
    fn incomplete_messages_wait_for_more_bytes() {
        let whole = framed(b'Q', b"SELECT 1\0").to_vec();
        assert!(check(&whole[..7]).unwrap().is_empty());
    }

    #[test]
    fn unknown_types_and_bad_startup_packets_are_violations() {
        assert!(check(&framed(b'z', b"")).is_err());
        assert!(check_messages(&[0u8, 0, 0, 9, 0, 3, 0, 0, b'u'], true, 1 << 20).1.is_err(), "a parameter name without its NUL");
    }

    /// Random damage to well-formed messages: whatever the check lets
    /// through, pgwire's decoder reads without panicking.
    #[test]
    fn damaged_messages_that_pass_the_check_never_panic_pgwire() {
        use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
        use rand::{Rng, SeedableRng};
        let seeds: Vec<Vec<u8>> = vec![
            framed(b'Q', b"SELECT 1\0").to_vec(),
            framed(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17").to_vec(),
            bind_message(&[(1, b"7"), (-1, b""), (3, b"abc")], 3, &[0, 1, 0]),
            framed(b'D', b"Ss1\0").to_vec(),
            framed(b'E', b"\0\0\0\0\x05").to_vec(),
            framed(b'C', b"Pp1\0").to_vec(),
            framed(b'S', b"").to_vec(),
            framed(b'f', b"stop\0").to_vec(),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let mut passed = 0;
        for _ in 0..50_000 {
            let mut m = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                match rng.gen_range(0..4) {
                    0 => {
                        let i = rng.gen_range(0..m.len());
                        m[i] = rng.gen();
                    }
                    1 => m.truncate(rng.gen_range(1..=m.len())),
                    2 => m.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>())),
                    _ => {
                        // A plausible length word that lies.
                        let len = rng.gen_range(0..(m.len() as i32 + 8));
                        if m.len() >= 5 {
                            m[1..5].copy_from_slice(&len.to_be_bytes());
                        }
                    }
                }
            }
            let mut checked = Checked::new((), BytesMut::from(&m[..]), 1 << 20);
            checked.startup = false;
            checked.password_messages = 1;
            if checked.check_complete().is_err() || checked.ready.is_empty() {
                continue;
            }
            passed += 1;
            let mut buf = checked.ready.clone();
            let outcome = std::panic::catch_unwind(move || {
                let mut ctx = DecodeContext::new(ProtocolVersion::default());
                ctx.awaiting_frontend_ssl = false;
                ctx.awaiting_frontend_startup = false;
                while !buf.is_empty() {
                    match PgWireFrontendMessage::decode(&mut buf, &ctx) {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            });
            assert!(outcome.is_ok(), "pgwire panicked on a message the check let through: {m:?}");
        }
        assert!(passed > 1_000, "only {passed} damaged messages passed the check: the test exercises too little");
    }
}
