//! The `tessera sql` shell, in the spirit of psql.
//!
//! Three modes:
//! - `-e SQL`: run the given statements, print their results, exit;
//! - piped stdin: run it as a script, statement by statement;
//! - a terminal: an interactive editor with history, multi-line statements,
//!   `\` meta-commands and a `Time: ... ms` line after each statement.
//!
//! Script modes stop at the first error. Results are printed in psql's
//! aligned format (see [`format_result`]); errors go to stderr.

mod format;
mod meta;
mod repl;
mod session;
mod split;

pub use format::format_result;
pub use split::split_statements;

use crate::client::Client;
use session::Session;
use std::io::IsTerminal;

/// How `tessera sql` was invoked.
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// SQL to run instead of reading input (`-e`).
    pub execute: Option<String>,
    /// Print the greeting line in interactive mode.
    pub echo_banner: bool,
}

/// Runs the shell against `client`.
///
/// With `options.execute`, runs that SQL (several `;`-separated statements
/// allowed, the final `;` optional) and returns. Otherwise, when stdin is not
/// a terminal, runs all of stdin as a script. Otherwise starts the
/// interactive shell.
///
/// Returns `Ok(false)` when a statement failed in a non-interactive mode
/// (which stops at the first error); the interactive shell keeps going after
/// errors and returns `Ok(true)`.
pub async fn run(client: Client, options: ShellOptions) -> anyhow::Result<bool> {
    if let Some(sql) = options.execute {
        let mut session = Session::script(client);
        return Ok(session::run_script(&mut session, &sql).await);
    }
    if !std::io::stdin().is_terminal() {
        let script = read_stdin().await?;
        let mut session = Session::script(client);
        return Ok(session::run_script(&mut session, &script).await);
    }
    let mut session = Session::interactive(client);
    repl::interactive(&mut session, options.echo_banner).await?;
    Ok(true)
}

/// Reads all of stdin (on a blocking thread).
async fn read_stdin() -> anyhow::Result<String> {
    let text = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin())).await??;
    Ok(text)
}
