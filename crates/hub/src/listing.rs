//! Directory listings of a revision's tree, built one page at a time.
//!
//! A tree stores only files; directories are implied by their paths. A recursive listing
//! names every directory once, which for deep trees is many more entries than files (1,000
//! files 100 levels deep imply up to 100,000 directories), so listings never materialise
//! them: [`page`] walks the files in byte order, where everything under a directory `d/` is
//! contiguous, and emits a directory when the first file under it appears (the previous
//! file was not under it). Skipping to a page only counts; only the page's entries are built,
//! and the walk stops one entry past the page.

use store::hub::TreeEntry;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// A directory's full path.
    Directory(String),
    File(&'a TreeEntry),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a> {
    pub nodes: Vec<Node<'a>>,
    /// More entries follow this page.
    pub more: bool,
    /// Anything at all lies under the prefix (an empty listing of a missing directory is
    /// "not found", of an existing one past its end just empty).
    pub found: bool,
}

/// Entries `skip..skip + take` of the listing of `prefix` (`""`: the root) in `tree`, which
/// must be sorted by path, bytewise (as [`crate::Hub::tree`] returns it). Not recursive:
/// the files directly in `prefix` and its immediate subdirectories; recursive: every file
/// and directory below it, each directory just before its contents.
pub fn page<'a>(
    tree: &'a [TreeEntry],
    prefix: &str,
    recursive: bool,
    skip: usize,
    take: usize,
) -> Page<'a> {
    let base = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut out = Page {
        nodes: Vec::with_capacity(take.min(1024)),
        more: false,
        found: false,
    };
    let mut index = 0usize;
    // Emits the entry at `index` if it is on the page; false once the page is full and one
    // more entry was seen.
    let mut emit = |node: &dyn Fn() -> Node<'a>, out: &mut Page<'a>| -> bool {
        let at = index;
        index += 1;
        if at < skip {
            return true;
        }
        if out.nodes.len() < take {
            out.nodes.push(node());
            return true;
        }
        out.more = true;
        false
    };
    let mut prev: &str = "";
    for entry in tree {
        let Some(rest) = entry.path.strip_prefix(base.as_str()) else {
            continue;
        };
        out.found = true;
        if recursive {
            for (i, _) in rest.match_indices('/') {
                // `rest[..=i]` is a directory with its slash: new unless the previous file
                // was under it too.
                if !prev.starts_with(&rest[..=i]) {
                    let dir = &rest[..i];
                    if !emit(&|| Node::Directory(format!("{base}{dir}")), &mut out) {
                        return out;
                    }
                }
            }
            if !emit(&|| Node::File(entry), &mut out) {
                return out;
            }
        } else {
            match rest.find('/') {
                Some(i) => {
                    if !prev.starts_with(&rest[..=i]) {
                        let dir = &rest[..i];
                        if !emit(&|| Node::Directory(format!("{base}{dir}")), &mut out) {
                            return out;
                        }
                    }
                }
                None => {
                    if !emit(&|| Node::File(entry), &mut out) {
                        return out;
                    }
                }
            }
        }
        prev = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn entry(path: &str) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            sha256: "0".repeat(64),
            git_oid: "0".repeat(40),
            size: 1,
        }
    }

    fn tree(paths: &[&str]) -> Vec<TreeEntry> {
        let mut t: Vec<TreeEntry> = paths.iter().map(|p| entry(p)).collect();
        t.sort_by(|a, b| a.path.cmp(&b.path));
        t
    }

    fn names(p: &Page<'_>) -> Vec<String> {
        p.nodes
            .iter()
            .map(|n| match n {
                Node::Directory(d) => format!("{d}/"),
                Node::File(f) => f.path.clone(),
            })
            .collect()
    }

    /// What the listing must hold, built the obvious (quadratic) way.
    fn naive(tree: &[TreeEntry], prefix: &str, recursive: bool) -> BTreeSet<String> {
        let base = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut all = BTreeSet::new();
        for e in tree {
            let Some(rest) = e.path.strip_prefix(&base) else {
                continue;
            };
            let segments: Vec<&str> = rest.split('/').collect();
            for depth in 1..segments.len() {
                if depth > 1 && !recursive {
                    break;
                }
                all.insert(format!("{base}{}/", segments[..depth].join("/")));
            }
            if recursive || segments.len() == 1 {
                all.insert(e.path.clone());
            }
        }
        all
    }

    #[test]
    fn lists_levels_and_pages() {
        let t = tree(&["a", "a-x", "b/c", "b/d/e", "b/d/f", "b.txt", "c/x"]);
        assert_eq!(
            names(&page(&t, "", false, 0, 100)),
            ["a", "a-x", "b.txt", "b/", "c/"]
        );
        assert_eq!(
            names(&page(&t, "", true, 0, 100)),
            ["a", "a-x", "b.txt", "b/", "b/c", "b/d/", "b/d/e", "b/d/f", "c/", "c/x"]
        );
        assert_eq!(names(&page(&t, "b", false, 0, 100)), ["b/c", "b/d/"]);
        let p = page(&t, "", true, 2, 3);
        assert_eq!(
            (names(&p), p.more),
            (vec!["b.txt".into(), "b/".into(), "b/c".into()], true)
        );
        let end = page(&t, "", true, 9, 3);
        assert_eq!((end.nodes.len(), end.more, end.found), (1, false, true));
        let missing = page(&t, "zz", true, 0, 3);
        assert!(!missing.found && missing.nodes.is_empty());
        assert!(page(&t, "", true, usize::MAX, usize::MAX).nodes.is_empty());
    }

    #[test]
    fn deep_trees_cost_one_page() {
        // 200 files, 120 levels each: 24,000 directories, of which one page is built.
        let t: Vec<TreeEntry> = tree(
            &(0..200)
                .map(|i| format!("f{i:03}/{}/x", vec!["d"; 119].join("/")))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let p = page(&t, "", true, 0, 1000);
        assert_eq!((p.nodes.len(), p.more), (1000, true));
        let last = page(&t, "", true, 200 * 121 - 1, 1000);
        assert_eq!((last.nodes.len(), last.more), (1, false));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "a-", "a.b", "c"]), 1..5)
            .prop_map(|v| v.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Paged in any page size, the listing is exactly the naive one, each entry once,
        /// for any tree where no file is also a directory.
        #[test]
        fn pages_match_the_naive_listing(
            paths in prop::collection::btree_set(path_strategy(), 0..30),
            prefix in prop::sample::select(vec!["", "a", "b", "a/b", "a-"]),
            recursive in any::<bool>(),
            take in 1usize..7,
        ) {
            let paths: Vec<&str> = paths
                .iter()
                .filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}/"))))
                .map(String::as_str)
                .collect();
            let t = tree(&paths);
            let want = naive(&t, prefix, recursive);
            let mut got = Vec::new();
            let mut skip = 0;
            loop {
                let p = page(&t, prefix, recursive, skip, take);
                prop_assert!(p.nodes.len() <= take);
                skip += p.nodes.len();
                got.extend(names(&p));
                if !p.more {
                    break;
                }
            }
            let set: BTreeSet<String> = got.iter().cloned().collect();
            prop_assert_eq!(set.len(), got.len(), "duplicates in {:?}", got);
            prop_assert_eq!(set, want);
        }
    }
}
