//! Reads `dist/portsentry.toml`, the example with every default, as documentation:
//! its tables and keys in order, each with the comment lines above it. The file's
//! first comment block (up to the first blank line) is its header and not a key's.
//! Only the shape the example uses is read: `[table]` and `key = value` lines, each
//! after its `#` comments; anything else is an error, so the page cannot silently
//! lose a key.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlKey {
    pub name: String,
    /// The value as written (TOML syntax).
    pub value: String,
    pub doc: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlTable {
    /// Dotted, as in the header: `bans.unverified`.
    pub name: String,
    pub doc: String,
    pub keys: Vec<TomlKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TomlDoc {
    pub tables: Vec<TomlTable>,
}

impl TomlDoc {
    pub fn parse(text: &str) -> Result<TomlDoc, String> {
        let mut doc = TomlDoc::default();
        let mut comment: Vec<&str> = Vec::new();
        let mut in_header = true;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let at = || format!("line {}", n + 1);
            if line.is_empty() {
                if !comment.is_empty() && !in_header {
                    return Err(format!("{}: a comment must be right above its key", at()));
                }
                comment.clear();
                in_header = false;
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                comment.push(c.strip_prefix(' ').unwrap_or(c));
                continue;
            }
            in_header = false;
            let about = comment.join("\n");
            comment.clear();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if about.is_empty() {
                    return Err(format!("{}: table [{name}] has no comment", at()));
                }
                doc.tables.push(TomlTable {
                    name: name.to_string(),
                    doc: about,
                    keys: Vec::new(),
                });
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("{}: not a `key = value` line", at()))?;
            if about.is_empty() {
                return Err(format!("{}: key `{}` has no comment", at(), key.trim()));
            }
            let table = doc
                .tables
                .last_mut()
                .ok_or_else(|| format!("{}: key before any [table]", at()))?;
            table.keys.push(TomlKey {
                name: key.trim().to_string(),
                value: value.trim().to_string(),
                doc: about,
            });
        }
        Ok(doc)
    }

    /// The key set of a table (dotted name), if the example has it.
    pub fn table(&self, name: &str) -> Option<&TomlTable> {
        self.tables.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_keys_keep_their_comments() {
        let d = TomlDoc::parse("# header\n\n# t doc\n[t]\n# k doc\n# more\nk = \"v\"\n").unwrap();
        assert_eq!(d.tables.len(), 1);
        assert_eq!(d.tables[0].doc, "t doc");
        assert_eq!(d.tables[0].keys[0].name, "k");
        assert_eq!(d.tables[0].keys[0].value, "\"v\"");
        assert_eq!(d.tables[0].keys[0].doc, "k doc\nmore");
    }

    #[test]
    fn an_undocumented_key_is_an_error() {
        assert!(TomlDoc::parse("# h\n\n# t\n[t]\nk = 1\n").is_err());
        assert!(TomlDoc::parse("# h\n\n[t]\n# k\nk = 1\n").is_err());
        assert!(TomlDoc::parse("# h\n\n# t\n[t]\n# k\nnot a key\n").is_err());
    }
}
