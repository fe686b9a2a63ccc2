//! Text from outside (a socket client's ids, a received checkpoint's
//! strings, a receiver's error message) made safe to print on a terminal.
//!
//! A terminal acts on control characters: ESC starts sequences that clear
//! the screen, set the window title or move the cursor, `\r` rewrites the
//! line, BEL rings, and C1 controls (U+0080..U+009F, e.g. U+009B, a
//! one-character CSI) act like ESC sequences on terminals that honour
//! them. Bidirectional overrides and isolates (U+202A..U+202E,
//! U+2066..U+2069) reorder what follows them, so a printed line can show
//! something other than its text, and U+2028/U+2029 break lines on some.
//! [`escape_for_terminal`] writes all of these as visible text: C0 controls
//! and DEL as `\xNN` (`\x1b`, `\x0d`), the others as `\u{NNNN}`. Newlines
//! are escaped too: a caller prints its own. A backslash is left as it is,
//! so an escape can be told from the same text only by where it came from;
//! nothing a terminal does depends on that.
//!
//! It also caps the text at a number of characters, so that a peer cannot
//! fill the screen (or a log) with one message: what is cut is said, as
//! `… (N more characters)`.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether a terminal could act on `c` (see the module doc).
fn is_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{2028}'
        | '\u{2029}')
}

/// `s` as visible text (see the module doc), at most `max_chars`
/// characters of it (escapes counted as written), then a note of how many
/// of `s`'s characters were left out. Borrowed when nothing needs doing.
pub fn escape_for_terminal(s: &str, max_chars: usize) -> Cow<'_, str> {
    let mut n = 0;
    let clean = s.chars().all(|c| {
        n += 1;
        !is_control(c) && n <= max_chars
    });
    if clean {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)) + 32);
    let mut written: usize = 0;
    for (i, c) in s.chars().enumerate() {
        let mut esc = String::new();
        let piece: &str = if !is_control(c) {
            esc.push(c);
            &esc
        } else if c < '\u{80}' {
            let _ = write!(esc, "\\x{:02x}", c as u32);
            &esc
        } else {
            let _ = write!(esc, "\\u{{{:x}}}", c as u32);
            &esc
        };
        let len = piece.chars().count();
        if written.saturating_add(len) > max_chars {
            let left = s.chars().count() - i;
            let _ = write!(out, "… ({left} more characters)");
            return Cow::Owned(out);
        }
        out.push_str(piece);
        written += len;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            escape_for_terminal("task.0001 ünïcode ✓", 100),
            Cow::Borrowed("task.0001 ünïcode ✓")
        ));
    }

    #[test]
    fn controls_are_written_visibly() {
        let e = escape_for_terminal("a\u{1b}]0;x\u{7}b\r\nc\u{0}\u{7f}", 100);
        assert_eq!(e, "a\\x1b]0;x\\x07b\\x0d\\x0ac\\x00\\x7f");
        let e = escape_for_terminal("\u{9b}2J\u{85}|\u{202e}txt.exe|\u{2066}\u{2028}", 100);
        assert_eq!(e, "\\u{9b}2J\\u{85}|\\u{202e}txt.exe|\\u{2066}\\u{2028}");
        // Nothing a terminal acts on is left, whatever the input.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!escape_for_terminal(&all, usize::MAX)
            .chars()
            .any(is_control));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much() {
        assert_eq!(
            escape_for_terminal("abcdef", 4),
            "abcd… (2 more characters)"
        );
        assert_eq!(escape_for_terminal("abcd", 4), "abcd");
        // An escape is not split: it goes whole or not at all.
        assert_eq!(
            escape_for_terminal("ab\u{1b}cd", 4),
            "ab… (3 more characters)"
        );
        assert_eq!(escape_for_terminal("", 0), "");
        let big = "x".repeat(60_000);
        assert_eq!(
            escape_for_terminal(&big, 100).chars().count(),
            100 + "… (59900 more characters)".chars().count()
        );
    }
}
