//! Commit ids and tree edits. A commit id is the sha1 of a canonical text naming the tree
//! (every path with its sha256 and size), the parent, the author, the time and the message:
//! 40 hex digits, as git-based clients expect, and different for any different revision.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};
use store::hub::TreeEntry;
use store::Timestamp;

/// The id of a commit with these contents.
pub fn commit_id(
    files: &[TreeEntry],
    parent: Option<&str>,
    author: &str,
    message: &str,
    at: Timestamp,
) -> String {
    let mut tree = Sha1::new();
    let mut sorted: Vec<&TreeEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for f in sorted {
        tree.update(f.path.as_bytes());
        tree.update([0]);
        tree.update(f.sha256.as_bytes());
        tree.update(format!(" {}\n", f.size).as_bytes());
    }
    let mut h = Sha1::new();
    h.update(format!("tree {}\n", hex::encode(tree.finalize())).as_bytes());
    h.update(format!("parent {}\n", parent.unwrap_or("-")).as_bytes());
    h.update(format!("author {author}\n").as_bytes());
    h.update(format!("time {}\n\n", at.to_rfc3339()).as_bytes());
    h.update(message.as_bytes());
    hex::encode(h.finalize())
}

/// A tree being edited: starts from the parent's files.
#[derive(Debug, Default, Clone)]
pub struct TreeEdit {
    files: BTreeMap<String, TreeEntry>,
}

impl TreeEdit {
    pub fn from_parent(files: Vec<TreeEntry>) -> Self {
        Self {
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        }
    }

    pub fn put(&mut self, entry: TreeEntry) {
        self.files.insert(entry.path.clone(), entry);
    }

    /// Removes a file, or every file under a directory; returns whether anything went.
    pub fn delete(&mut self, path: &str) -> bool {
        let before = self.files.len();
        let dir = format!("{path}/");
        self.files.retain(|p, _| p != path && !p.starts_with(&dir));
        self.files.len() != before
    }

    /// A file may not also be a directory (`a` and `a/b`). The files under `a/` sort
    /// together, but not necessarily right after `a` (`a-x` and `a.txt` come between), so
    /// each file looks up the first path at or after `a/`: one ordered lookup per file.
    pub fn conflicting_path(&self) -> Option<String> {
        let mut dir = String::new();
        for path in self.files.keys() {
            dir.clear();
            dir.push_str(path);
            dir.push('/');
            let next = self.files.range::<str, _>((
                std::ops::Bound::Included(dir.as_str()),
                std::ops::Bound::Unbounded,
            ));
            if let Some((under, _)) = next.into_iter().next() {
                if under.starts_with(dir.as_str()) {
                    return Some(path.clone());
                }
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn into_files(self) -> Vec<TreeEntry> {
        self.files.into_values().collect()
    }

    /// The sha256 of every file.
    pub fn sha256s(&self) -> impl Iterator<Item = String> + '_ {
        self.files.values().map(|f| f.sha256.clone())
    }

    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.files.get(path)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn entry(path: &str, n: u8) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            sha256: format!("{n:064x}"),
            git_oid: format!("{n:040x}"),
            size: i64::from(n),
        }
    }

    #[test]
    fn ids_are_40_hex_and_depend_on_everything() {
        let t = chrono::Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        let a = commit_id(&[entry("a", 1)], None, "x", "m", t);
        assert_eq!(a.len(), 40);
        assert_ne!(a, commit_id(&[entry("a", 2)], None, "x", "m", t));
        assert_ne!(a, commit_id(&[entry("a", 1)], Some(&a), "x", "m", t));
        assert_ne!(a, commit_id(&[entry("a", 1)], None, "x", "n", t));
        assert_eq!(a, commit_id(&[entry("a", 1)], None, "x", "m", t));
    }

    #[test]
    fn edits() {
        let mut e = TreeEdit::from_parent(vec![entry("a/b", 1), entry("a/c", 2), entry("ab", 3)]);
        assert!(e.delete("a"));
        assert_eq!(e.len(), 1);
        e.put(entry("ab/x", 4));
        assert_eq!(e.conflicting_path().as_deref(), Some("ab"));
    }

    #[test]
    fn a_file_and_a_directory_apart_in_sort_order_conflict() {
        // '-' and '.' sort before '/', so `a-x` and `a.txt` come between `a` and `a/b`.
        let e = TreeEdit::from_parent(vec![
            entry("a", 1),
            entry("a-x", 2),
            entry("a.txt", 3),
            entry("a/b", 4),
        ]);
        assert_eq!(e.conflicting_path().as_deref(), Some("a"));
        let fine = TreeEdit::from_parent(vec![entry("a", 1), entry("a-x/b", 2), entry("ab/c", 3)]);
        assert_eq!(fine.conflicting_path(), None);
    }
}
