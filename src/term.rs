//! Text from peers, made safe to print on a terminal.
//!
//! tal prints what others wrote: an OTLP receiver's error message, an HTTP
//! error body, a socket client's task id. Printed raw, such text can drive
//! the terminal (clear the screen, set the window title, move the cursor
//! to print a fake status line) and can be as long as its sender likes.
//! [`escape_for_terminal`] is the one place that makes such text inert and
//! short; everything from a peer goes through it before it reaches stderr
//! or stdout.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every character a terminal would act on written as a visible
/// escape, cut to about `max_chars` characters.
///
/// Escaped: all of C0 (`\0`..`\x1f`, newline and tab included: a peer's
/// message is printed on one line of tal's own), DEL, C1 (U+0080..U+009F,
/// which some terminals take as ESC sequences: U+009B is CSI), and the
/// Unicode bidirectional controls (U+202A..U+202E, U+2066..U+2069, which
/// reorder what follows on the line). `\n`, `\r` and `\t` print as those
/// two characters, the rest as `\xNN` or `\u{NNNN}`. An ESC sequence thus
/// prints as text (`\x1b[2J`), never runs.
///
/// `max_chars` bounds the printed characters (an escape counts as the
/// characters it prints as); what is cut is said, as
/// `… (N more characters)`, counting the characters of `s` left out.
/// Text with nothing to escape or cut is returned as it is.
pub fn escape_for_terminal(s: &str, max_chars: usize) -> Cow<'_, str> {
    let needs_escape =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(needs_escape) && s.chars().nth(max_chars).is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for (taken, c) in s.chars().enumerate() {
        let start = out.len();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        let width = out[start..].chars().count();
        if used + width > max_chars {
            out.truncate(start);
            let left = s.chars().count() - taken;
            let _ = write!(out, "… ({left} more characters)");
            break;
        }
        used += width;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_for_terminal as esc;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        let s = "the receiver said: no (ünïcødé ok)";
        assert!(matches!(esc(s, 100), std::borrow::Cow::Borrowed(_)));
        assert_eq!(esc(s, 100), s);
        assert_eq!(esc("", 0), "");
    }

    #[test]
    fn controls_print_as_visible_escapes() {
        // Clear screen, set title (OSC ... BEL), CSI as one C1 character,
        // DEL, NUL, a bidi override, a newline starting a fake status.
        let hostile = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\x7f\0\u{202e}x\n[ok] done\ttab\r";
        let out = esc(hostile, 1000);
        assert_eq!(
            out,
            "\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x7f\\x00\\u{202e}x\\n[ok] done\\ttab\\r"
        );
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
    }

    #[test]
    fn long_text_is_cut_and_says_how_much() {
        let long = "a".repeat(60_000);
        let out = esc(&long, 200);
        assert_eq!(out, format!("{}… (59800 more characters)", "a".repeat(200)));
        // Exactly the limit: nothing cut.
        assert_eq!(esc(&long[..200], 200), long[..200]);
        // Escapes count as what they print, and are never cut in half.
        let escs = "\x1b".repeat(100);
        let out = esc(&escs, 10);
        assert_eq!(out, format!("{}… (98 more characters)", "\\x1b".repeat(2)));
    }
}
