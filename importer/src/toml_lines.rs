//! A line scanner for the few keys the importer reads from a node's TOML files (containerd's
//! `config.toml`, CRI-O's `crio.conf` and its drop-ins): table headers and `key = value` lines,
//! a `#` comment removed outside quotes. Not a TOML parser: the node's importer carries no TOML
//! crate, and one key of each file is all it needs.

/// `line` without a `#` comment (a `#` inside a quoted string is kept).
pub fn uncommented(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The table the lines read so far are in.
#[derive(Debug, Default)]
pub struct Tables {
    table: String,
}

impl Tables {
    /// `line` (a raw line of the file) as its dotted key under the current table
    /// (`plugins.io.containerd.grpc.v1.cri.registry.config_path`, quotes and spaces taken out)
    /// and the text of its value; `None` for a table header (which becomes the current table),
    /// a comment, or any line without `=`.
    pub fn key_value<'a>(&mut self, line: &'a str) -> Option<(String, &'a str)> {
        let line = uncommented(line).trim();
        if line.starts_with('[') {
            self.table = line
                .trim_matches(|c| c == '[' || c == ']')
                .replace(['"', '\'', ' '], "");
            return None;
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim().replace(['"', '\'', ' '], "");
        Some(match self.table.as_str() {
            "" => (key, value.trim()),
            table => (format!("{table}.{key}"), value.trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dotted_under_their_table_and_comments_go_outside_quotes() {
        let mut t = Tables::default();
        assert_eq!(
            t.key_value("version = 2 # the file's"),
            Some(("version".into(), "2"))
        );
        assert_eq!(
            t.key_value(r#"[plugins."io.containerd.grpc.v1.cri".registry]"#),
            None
        );
        assert_eq!(
            t.key_value(r#"  config_path = "/etc/containerd/certs.d#x" # ours"#),
            Some((
                "plugins.io.containerd.grpc.v1.cri.registry.config_path".into(),
                r#""/etc/containerd/certs.d#x""#
            ))
        );
        assert_eq!(t.key_value("# a comment = not a key"), None);
        assert_eq!(t.key_value("[[crio.image]]"), None);
        assert_eq!(
            t.key_value("pinned_images = ["),
            Some(("crio.image.pinned_images".into(), "["))
        );
    }
}
