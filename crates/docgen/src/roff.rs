//! Escaping plain text (clap's help, the key docs, the example's comments) for roff.

/// One line of text as roff: backslashes and hyphens escaped (a `-` is a hyphen,
/// `\-` the minus of an option), a leading `.` or `'` made literal.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\e"),
            '-' => o.push_str("\\-"),
            _ => o.push(c),
        }
    }
    if o.starts_with('.') || o.starts_with('\'') {
        o.insert_str(0, "\\&");
    }
    o
}

/// Text of one or more paragraphs (blank-line separated) as roff lines ending in a
/// newline; paragraphs are kept apart with `.sp`, which keeps the indentation of a
/// `.TP` body. `code` in backquotes is set in bold, and a sentence gets back the
/// final period that clap takes off a one-line help. Empty text gives nothing.
pub fn esc_text(s: &str) -> String {
    let mut text = s.trim().to_string();
    if !text.is_empty() && !text.ends_with(['.', '!', '?', ':']) {
        text.push('.');
    }
    let mut out = String::new();
    for (i, para) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str(".sp\n");
        }
        for line in para.lines() {
            let line = line.trim();
            if !line.is_empty() {
                out.push_str(&bold_code(&esc(line)));
                out.push('\n');
            }
        }
    }
    out
}

/// `a` `b` pairs of backquotes to bold; an unpaired one is left as it is.
fn bold_code(line: &str) -> String {
    let parts: Vec<&str> = line.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return line.to_string();
    }
    let mut o = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i % 2 == 1 {
            o.push_str("\\fB");
            o.push_str(p);
            o.push_str("\\fR");
        } else {
            o.push_str(p);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_control_characters_are_escaped() {
        assert_eq!(esc("--time 7d"), "\\-\\-time 7d");
        assert_eq!(esc(".hidden"), "\\&.hidden");
        assert_eq!(esc("a\\b"), "a\\eb");
        assert_eq!(esc_text("one\ntwo\n\nthree"), "one\ntwo\n.sp\nthree.\n");
        assert_eq!(esc_text("use `ban --x`"), "use \\fBban \\-\\-x\\fR.\n");
        assert_eq!(esc_text(""), "");
    }
}
