//! Import cycles between a crate's modules, for `cargo xtask lint`.
//!
//! A module depends on another when it names it in a `use` or in a path
//! (`crate::a::b`, `super::c`); a name re-exported by a parent (`pub use
//! child::Name`) counts as the child that defines it. Tests (`mod tests`
//! after `#[cfg(test)]`) and comments are left out. A cycle is an error
//! unless one of its modules says why it is the design, in a comment holding
//! `import cycle by design`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// What is allowed in a path segment.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A crate's modules by path (`""` for the root, `a::b`), with their files.
fn modules(src: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts
                .last()
                .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
            {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    Ok(out)
}

/// The text without comments and without the unit tests at its end.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a file names that starts at `crate`, `super` or `self`, as
/// segments: use trees expanded (`use super::{a::{B, C}, d}` gives
/// `super::a::B`, `super::a::C`, `super::d`), other paths as written.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| bytes[i..].iter().take(p.len()).copied().eq(p.chars()));
        let boundary = i == 0 || !ident_char(bytes[i - 1]) && bytes[i - 1] != ':';
        if let (Some(_), true) = (starts, boundary) {
            let (mut found, end) = tree(&bytes, i);
            out.append(&mut found);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The paths of the use tree (or plain path) starting at `at`, and where it ends.
fn tree(s: &[char], at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = at;
    loop {
        let start = i;
        while i < s.len() && ident_char(s[i]) {
            i += 1;
        }
        if i > start {
            prefix.push(s[start..i].iter().collect::<String>());
        }
        if s.get(i..i + 2) == Some(&[':', ':']) {
            i += 2;
            if s.get(i) == Some(&'{') {
                let mut out = Vec::new();
                i += 1;
                loop {
                    while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                        i += 1;
                    }
                    if i >= s.len() || s[i] == '}' {
                        return (out, i + 1);
                    }
                    let (inner, end) = tree(s, i);
                    if names_self(s, i, end) {
                        out.push(prefix.clone());
                    } else {
                        for p in inner {
                            out.push(prefix.iter().cloned().chain(p).collect());
                        }
                    }
                    i = end.max(i + 1);
                }
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// Whether the use-tree item between `from` and `to` is `self`, which
/// names the prefix itself.
fn names_self(s: &[char], from: usize, to: usize) -> bool {
    s[from..to.min(s.len())].iter().collect::<String>().trim() == "self"
}

/// `pub use child::{A, B}` and `pub use child::A` of module `module`:
/// `(module, name) -> child module`.
fn reexports(
    module: &str,
    code: &str,
    known: &BTreeMap<String, PathBuf>,
) -> Vec<((String, String), String)> {
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((child, names)) = rest.split_once("::") else {
            continue;
        };
        let child_path = if module.is_empty() {
            child.to_owned()
        } else {
            format!("{module}::{child}")
        };
        if !known.contains_key(&child_path) {
            continue;
        }
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.split_whitespace().next().unwrap_or("");
            let name = name.rsplit("::").next().unwrap_or(name);
            if !name.is_empty() {
                out.push(((module.to_owned(), name.to_owned()), child_path.clone()));
            }
        }
    }
    out
}

/// The module a path starting at module `from` names.
fn resolve(
    from: &str,
    path: &[String],
    known: &BTreeMap<String, PathBuf>,
    alias: &BTreeMap<(String, String), String>,
) -> Option<String> {
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    let mut segs = path;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segs = &segs[1..];
        }
        Some("self") => segs = &segs[1..],
        Some("super") => {
            while segs.first().is_some_and(|s| s == "super") {
                base.pop();
                segs = &segs[1..];
            }
        }
        _ => return None,
    }
    for n in (0..=segs.len()).rev() {
        let mut parts: Vec<&str> = base.clone();
        parts.extend(segs[..n].iter().map(String::as_str));
        let module = parts.join("::");
        if known.contains_key(&module) {
            if let Some(next) = segs.get(n)
                && let Some(child) = alias.get(&(module.clone(), next.clone()))
            {
                return Some(child.clone());
            }
            return Some(module);
        }
    }
    None
}

/// The module cycles of the crate whose sources are under `src` that no
/// module of theirs declares by design; each as its modules, sorted.
pub fn cycles(src: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let known = modules(src)?;
    let mut texts = BTreeMap::new();
    for (m, path) in &known {
        texts.insert(m.clone(), fs::read_to_string(path)?);
    }
    let mut alias = BTreeMap::new();
    for (m, text) in &texts {
        alias.extend(reexports(m, &code(text), &known));
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &texts {
        let deps = paths(&code(text))
            .iter()
            .filter_map(|p| resolve(m, p, &known, &alias))
            .filter(|d| d != m)
            .collect();
        edges.insert(m.clone(), deps);
    }
    let by_design = |m: &String| texts[m].contains("import cycle by design");
    Ok(strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1 && !c.iter().any(by_design))
        .collect())
}

/// Tarjan's strongly connected components, each sorted.
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                comp.sort();
                self.out.push(comp);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split("::").map(str::to_owned).collect()
    }

    #[test]
    fn use_trees_expand_to_every_path() {
        let got = paths("use super::{a::{B, C}, d, self};\nlet x = crate::e::f(1);");
        assert_eq!(
            got,
            vec![
                p("super::a::B"),
                p("super::a::C"),
                p("super::d"),
                p("super"),
                p("crate::e::f")
            ]
        );
    }

    #[test]
    fn a_cycle_is_found_and_a_declared_one_is_not() {
        let dir = std::env::temp_dir().join(format!("xtask-cycles-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
        fs::write(dir.join("a.rs"), "use crate::b::X;\n").unwrap();
        fs::write(dir.join("b.rs"), "pub struct X;\nuse super::a;\n").unwrap();
        fs::write(dir.join("c.rs"), "// comment: crate::a\n").unwrap();
        assert_eq!(
            cycles(&dir).unwrap(),
            vec![vec!["a".to_owned(), "b".to_owned()]]
        );
        fs::write(
            dir.join("b.rs"),
            "// import cycle by design: a test\nuse super::a;\n",
        )
        .unwrap();
        assert_eq!(cycles(&dir).unwrap(), Vec::<Vec<String>>::new());
        fs::remove_dir_all(&dir).unwrap();
    }
}
