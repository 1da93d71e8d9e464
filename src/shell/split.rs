//! Splitting SQL text into `;`-terminated statements.
//!
//! The splitter understands single-quoted strings (`'it''s'`), double-quoted
//! identifiers (`"a;b"`), `--` line comments and `/* block comments */`
//! (nested, as in PostgreSQL). Comments are removed from the statements it
//! returns; the incomplete tail is returned verbatim so more input can be
//! appended to it.

/// Where the scanner is inside the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    SingleQuoted,
    DoubleQuoted,
    LineComment,
    /// Inside a block comment, with its nesting depth.
    BlockComment(u32),
}

/// Splits SQL text into complete statements ended by `;`.
///
/// Returns the complete statements (comments removed, without the trailing
/// `;`, trimmed, empty ones dropped) and the leftover incomplete text. The
/// leftover is empty when the tail holds nothing but whitespace and finished
/// comments.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut state = State::Normal;
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        state = match state {
            State::Normal => {
                if c == ';' {
                    push_statement(&mut statements, &mut current);
                    start = index + 1;
                    State::Normal
                } else if c == '-' && next == Some('-') {
                    chars.next();
                    State::LineComment
                } else if c == '/' && next == Some('*') {
                    chars.next();
                    current.push(' ');
                    State::BlockComment(1)
                } else {
                    current.push(c);
                    match c {
                        '\'' => State::SingleQuoted,
                        '"' => State::DoubleQuoted,
                        _ => State::Normal,
                    }
                }
            }
            State::SingleQuoted => {
                current.push(c);
                if c == '\'' {
                    State::Normal
                } else {
                    State::SingleQuoted
                }
            }
            State::DoubleQuoted => {
                current.push(c);
                if c == '"' {
                    State::Normal
                } else {
                    State::DoubleQuoted
                }
            }
            State::LineComment => {
                if c == '\n' {
                    current.push('\n');
                    State::Normal
                } else {
                    State::LineComment
                }
            }
            State::BlockComment(depth) => block_comment(depth, c, next, &mut chars),
        };
    }
    (statements, leftover(&text[start..], &current, state))
}

/// Advances through a (possibly nested) block comment.
fn block_comment(depth: u32, c: char, next: Option<char>, chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> State {
    if c == '*' && next == Some('/') {
        chars.next();
        if depth <= 1 {
            State::Normal
        } else {
            State::BlockComment(depth - 1)
        }
    } else if c == '/' && next == Some('*') {
        chars.next();
        State::BlockComment(depth + 1)
    } else {
        State::BlockComment(depth)
    }
}

/// Adds the statement collected so far, unless it is empty.
fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
    current.clear();
}

/// The incomplete tail: dropped when it only holds whitespace and comments
/// that are already closed (a line comment ends with its line).
fn leftover(rest: &str, current: &str, state: State) -> String {
    let finished = matches!(state, State::Normal | State::LineComment);
    if finished && current.trim().is_empty() {
        String::new()
    } else {
        rest.trim_start().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    fn split(text: &str) -> (Vec<String>, String) {
        split_statements(text)
    }

    #[test]
    fn semicolons_inside_quotes_do_not_split() {
        let (statements, rest) = split("SELECT 'a;b', \"c;d\" FROM t; SELECT 'it''s;';");
        assert_eq!(statements, vec!["SELECT 'a;b', \"c;d\" FROM t", "SELECT 'it''s;'"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn doubled_quote_in_identifier() {
        let (statements, rest) = split("SELECT \"a\"\";b\" FROM t;");
        assert_eq!(statements, vec!["SELECT \"a\"\";b\" FROM t"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn comments_are_removed_and_hide_semicolons() {
        let (statements, rest) = split("SELECT 1 -- not; the end\n+ 2; /* ; */ SELECT 3;");
        assert_eq!(statements, vec!["SELECT 1 \n+ 2", "SELECT 3"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn block_comment_in_the_middle_becomes_a_space() {
        let (statements, _) = split("SELECT 1/* x */+2;");
        assert_eq!(statements, vec!["SELECT 1 +2"]);
    }

    #[test]
    fn nested_block_comments() {
        let (statements, rest) = split("/* a /* b */ ; */ SELECT 1;");
        assert_eq!(statements, vec!["SELECT 1"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn several_statements_on_one_line() {
        let (statements, rest) = split("SELECT 1;SELECT 2;  SELECT 3;");
        assert_eq!(statements, vec!["SELECT 1", "SELECT 2", "SELECT 3"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn empty_statements_are_dropped() {
        let (statements, rest) = split(";; ;\n SELECT 1;;");
        assert_eq!(statements, vec!["SELECT 1"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn incomplete_tail_is_returned() {
        let (statements, rest) = split("SELECT 1;  \n  INSERT INTO t\nVALUES (1)");
        assert_eq!(statements, vec!["SELECT 1"]);
        assert_eq!(rest, "INSERT INTO t\nVALUES (1)");
    }

    #[test]
    fn unterminated_string_keeps_semicolon_in_leftover() {
        let (statements, rest) = split("SELECT 1; SELECT 'x;");
        assert_eq!(statements, vec!["SELECT 1"]);
        assert_eq!(rest, "SELECT 'x;");
        let (statements, rest) = split(&format!("{rest}\ny';"));
        assert_eq!(statements, vec!["SELECT 'x;\ny'"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn comment_only_tail_is_dropped_but_open_block_is_kept() {
        assert_eq!(split("SELECT 1; -- done"), (vec!["SELECT 1".to_string()], String::new()));
        assert_eq!(split("/* closed */  "), (Vec::new(), String::new()));
        assert_eq!(split("/* open ; still"), (Vec::new(), "/* open ; still".to_string()));
    }

    #[test]
    fn statement_with_trailing_line_comment_is_incomplete() {
        let (statements, rest) = split("SELECT 1 -- no end");
        assert!(statements.is_empty());
        assert_eq!(rest, "SELECT 1 -- no end");
    }

    #[test]
    fn multibyte_text_is_preserved() {
        let (statements, rest) = split("INSERT INTO t VALUES ('héllo; wörld'); SELECT 'ü");
        assert_eq!(statements, vec!["INSERT INTO t VALUES ('héllo; wörld')"]);
        assert_eq!(rest, "SELECT 'ü");
    }
}
