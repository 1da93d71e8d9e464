//! The interactive loop: a rustyline editor on its own thread feeding lines
//! to the async session.
//!
//! rustyline blocks while the user types, so the editor lives on a dedicated
//! std thread. The async side sends it a prompt and awaits the line on a
//! tokio channel. History is loaded from and saved to `$HOME/.tessera_history`
//! when that works; failures there are ignored.

use super::session::{Flow, Session};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::mpsc as async_mpsc;

/// Prompt on a fresh statement.
pub(crate) const PROMPT: &str = "tessera> ";
/// Prompt while a statement is incomplete.
pub(crate) const CONTINUATION_PROMPT: &str = "tessera-> ";

/// What the editor thread read.
enum Input {
    Line(String),
    /// Ctrl-C.
    Interrupted,
    /// Ctrl-D, or the editor thread is gone.
    Eof,
    /// The terminal could not be read.
    Error(String),
}

/// Handle to the editor thread.
struct LineReader {
    prompts: mpsc::Sender<String>,
    inputs: async_mpsc::UnboundedReceiver<Input>,
    thread: JoinHandle<()>,
}

impl LineReader {
    fn start(history: Option<PathBuf>) -> LineReader {
        let (prompts, prompt_rx) = mpsc::channel::<String>();
        let (input_tx, inputs) = async_mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("tessera-readline".to_string())
            .spawn(move || editor_thread(prompt_rx, input_tx, history))
            .expect("spawn the readline thread");
        LineReader { prompts, inputs, thread }
    }

    /// Shows `prompt` and waits for the next line.
    async fn read(&mut self, prompt: &str) -> Input {
        // If the thread has exited, its last message (if any) is still queued.
        let _ = self.prompts.send(prompt.to_string());
        self.inputs.recv().await.unwrap_or(Input::Eof)
    }

    /// Stops the editor thread, letting it save the history.
    async fn finish(self) {
        let LineReader { prompts, inputs, thread } = self;
        drop(prompts);
        drop(inputs);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Body of the editor thread: one `readline` per prompt received.
fn editor_thread(prompts: mpsc::Receiver<String>, inputs: async_mpsc::UnboundedSender<Input>, history: Option<PathBuf>) {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            let _ = inputs.send(Input::Error(error.to_string()));
            return;
        }
    };
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    while let Ok(prompt) = prompts.recv() {
        let input = match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Input::Line(line)
            }
            Err(ReadlineError::Interrupted) => Input::Interrupted,
            Err(ReadlineError::Eof) => Input::Eof,
            Err(error) => Input::Error(error.to_string()),
        };
        if inputs.send(input).is_err() {
            break;
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
}

/// `$HOME/.tessera_history`, when HOME is set.
fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty())?;
    Some(PathBuf::from(home).join(".tessera_history"))
}

/// Runs the interactive loop until `\q` or Ctrl-D.
pub(crate) async fn interactive(session: &mut Session, banner: bool) -> anyhow::Result<()> {
    if banner {
        println!("tessera sql connected to {}. Type \\? for help, \\q to quit.", session.address());
    }
    let mut reader = LineReader::start(history_path());
    let mut buffer = String::new();
    let outcome = loop {
        let prompt = if buffer.is_empty() { PROMPT } else { CONTINUATION_PROMPT };
        match reader.read(prompt).await {
            Input::Line(line) => {
                if session.feed_line(&mut buffer, &line).await == Flow::Stop {
                    break Ok(());
                }
            }
            Input::Interrupted => buffer.clear(),
            Input::Eof => break Ok(()),
            Input::Error(message) => break Err(anyhow::anyhow!("cannot read from the terminal: {message}")),
        }
    };
    reader.finish().await;
    outcome
}
