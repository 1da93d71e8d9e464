//! One shell session: the connection, the display settings, and the rules
//! for turning input lines into statements and meta-commands.
//!
//! Both the interactive loop and script mode (`-e` or stdin) feed lines
//! through [`Session::feed_line`]; they differ only in whether an error stops
//! the session and whether Ctrl-C may abandon a running statement.

use super::format::format_result;
use super::meta::{parse_meta, Meta, HELP};
use super::split::split_statements;
use crate::client::{Client, StatementResult};
use std::time::{Duration, Instant};

/// Whether the session goes on after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

pub(crate) struct Session {
    client: Client,
    /// Print `Time: ... ms` after each statement.
    timing: bool,
    /// Script mode: stop at the first failing statement.
    stop_on_error: bool,
    /// Interactive mode: Ctrl-C abandons the running statement.
    cancellable: bool,
    /// Some statement or meta-command failed.
    failed: bool,
}

impl Session {
    /// A session for a terminal: timing on, errors do not stop it.
    pub(crate) fn interactive(client: Client) -> Session {
        Session { client, timing: true, stop_on_error: false, cancellable: true, failed: false }
    }

    /// A session for `-e` or piped input: no timing, first error stops it.
    pub(crate) fn script(client: Client) -> Session {
        Session { client, timing: false, stop_on_error: true, cancellable: false, failed: false }
    }

    pub(crate) fn address(&self) -> &str {
        self.client.address()
    }

    /// True when nothing has failed so far.
    pub(crate) fn succeeded(&self) -> bool {
        !self.failed
    }

    /// Handles one input line. `buffer` holds the incomplete statement
    /// typed so far; a line starting with `\` on an empty buffer is a
    /// meta-command.
    pub(crate) async fn feed_line(&mut self, buffer: &mut String, line: &str) -> Flow {
        if buffer.is_empty() && line.trim_start().starts_with('\\') {
            return self.meta(line).await;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(line);
        let (statements, leftover) = split_statements(buffer);
        *buffer = leftover;
        self.run_statements(&statements).await
    }

    /// Runs statements in order, stopping early in script mode on error.
    pub(crate) async fn run_statements(&mut self, statements: &[String]) -> Flow {
        for statement in statements {
            if self.execute(statement).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Runs one statement and prints its results (or its error on stderr).
    pub(crate) async fn execute(&mut self, sql: &str) -> Flow {
        let started = Instant::now();
        let outcome = self.send(sql).await;
        let elapsed = started.elapsed();
        match outcome {
            Some(Ok(results)) => {
                print_results(&results);
                self.print_timing(elapsed);
                Flow::Continue
            }
            Some(Err(error)) => {
                eprintln!("{error}");
                self.print_timing(elapsed);
                if let Some(saga_id) = &error.saga_id {
                    self.print_saga_timeline(saga_id).await;
                }
                self.fail()
            }
            None => {
                eprintln!("Cancelled: stopped waiting for the statement; it may still take effect on the cluster.");
                self.fail()
            }
        }
    }

    /// Sends a statement; `None` when Ctrl-C abandoned it.
    async fn send(&mut self, sql: &str) -> Option<Result<Vec<StatementResult>, crate::client::ClientError>> {
        if !self.cancellable {
            return Some(self.client.execute(sql).await);
        }
        tokio::select! {
            result = self.client.execute(sql) => Some(result),
            _ = interrupted() => None,
        }
    }

    /// After a saga failed (rolled back or parked), shows what ran and
    /// what was undone, as `SHOW SAGA <id>` would.
    async fn print_saga_timeline(&mut self, saga_id: &str) {
        match self.client.execute(&format!("SHOW SAGA '{saga_id}'")).await {
            Ok(results) => print_results(&results),
            Err(e) => eprintln!("(cannot show the timeline of saga {saga_id}: {})", e.message),
        }
    }

    fn print_timing(&self, elapsed: Duration) {
        if self.timing {
            println!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Records a failure; stops the session in script mode.
    fn fail(&mut self) -> Flow {
        self.failed = true;
        if self.stop_on_error {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Carries out a meta-command line.
    async fn meta(&mut self, line: &str) -> Flow {
        match parse_meta(line) {
            Meta::Quit => Flow::Stop,
            Meta::Help => {
                println!("{HELP}");
                Flow::Continue
            }
            Meta::Timing(setting) => {
                self.timing = setting.unwrap_or(!self.timing);
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
                Flow::Continue
            }
            Meta::Sql(sql) => self.execute(&sql).await,
            Meta::Usage(message) => {
                eprintln!("{message}");
                self.fail()
            }
            Meta::Invalid(command) => {
                eprintln!("invalid command {command}. Try \\? for help.");
                self.fail()
            }
        }
    }
}

/// Resolves on Ctrl-C; never resolves if the signal cannot be watched.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Prints each result; tables are followed by a blank line, as in psql.
fn print_results(results: &[StatementResult]) {
    for result in results {
        println!("{}", format_result(result));
        if !result.columns.is_empty() {
            println!();
        }
    }
}

/// Runs a whole script (the `-e` string or piped stdin) line by line.
/// A final statement without `;` is run too. Returns true when every
/// statement succeeded.
pub(crate) async fn run_script(session: &mut Session, text: &str) -> bool {
    let mut buffer = String::new();
    for line in text.lines() {
        if session.feed_line(&mut buffer, line).await == Flow::Stop {
            return session.succeeded();
        }
    }
    let rest = buffer.trim();
    if !rest.is_empty() {
        session.execute(rest).await;
    }
    session.succeeded()
}
