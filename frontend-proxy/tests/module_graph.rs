//! Imports point one way: no cycle between the proxy's top-level modules,
//! nor between the submodules of any module (`config::validate`'s among
//! them), as ARCHITECTURE.md's first rule asks.
//!
//! The source files are read as Rust tokens (comments and strings are not
//! code; attribute arguments such as clap's `default_value_t = crate::x::Y`
//! are), and every path that starts with `crate::`, `super::` or `self::` —
//! in `use` trees and in expressions, types and attributes alike — is
//! resolved against the module the file (or an inline `mod`) defines. A
//! module reached through another's re-export (`pub use`) is seen where it
//! is re-exported; that is the edge a reader follows too. Unit tests
//! (`#[cfg(test)] mod ...`) are not part of the layering: a test may build
//! its fixture from a higher room (parse a bootstrap to get a cluster).
//!
//! Written here rather than taken from a crate: the tools that find module
//! cycles either build the crate with rust-analyzer (minutes of CI for one
//! check) or treat a parent using its own child as a cycle; this needs only
//! a tokenizer.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root, e.g. `["config", "validate", "route"]`.
type ModPath = Vec<String>;

/// One reference from code in module `from` to the item at path `to`.
#[derive(Debug, Clone)]
struct Reference {
    from: ModPath,
    to: ModPath,
    file: String,
}

/// The module a source file defines, from its place under `src/`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "lib" && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::`/`super::`/`self::` path in `source`, resolved.
fn references(module: &ModPath, file: &str, source: &str) -> Vec<Reference> {
    let tokens: TokenStream = source.parse().unwrap_or_else(|e| panic!("{file}: not Rust tokens: {e:?}"));
    let mut out = Vec::new();
    scan(tokens, module, file, &mut out);
    out
}

fn is_ident(t: Option<&TokenTree>, name: &str) -> bool {
    matches!(t, Some(TokenTree::Ident(i)) if i == name)
}

fn is_punct(t: Option<&TokenTree>, c: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// Whether `tokens[i..]` starts with `::`.
fn path_sep(tokens: &[TokenTree], i: usize) -> bool {
    is_punct(tokens.get(i), ':') && is_punct(tokens.get(i + 1), ':')
}

/// Whether `t` is the attribute body `[cfg(test)]`.
fn is_cfg_test(t: Option<&TokenTree>) -> bool {
    match t {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => {
            g.stream().to_string().split_whitespace().collect::<String>() == "cfg(test)"
        }
        _ => false,
    }
}

fn scan(stream: TokenStream, module: &ModPath, file: &str, out: &mut Vec<Reference>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        // `#[cfg(test)] mod name { ... }`: unit tests, skipped whole.
        if is_punct(tokens.get(i), '#') && is_cfg_test(tokens.get(i + 1)) && is_ident(tokens.get(i + 2), "mod") {
            i += 5;
            continue;
        }
        // `mod name { ... }`: an inline module, whose `super` is this module.
        if is_ident(tokens.get(i), "mod") {
            if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) = (tokens.get(i + 1), tokens.get(i + 2))
            {
                if body.delimiter() == Delimiter::Brace {
                    let mut inner = module.clone();
                    inner.push(name.to_string());
                    scan(body.stream(), &inner, file, out);
                    i += 3;
                    continue;
                }
            }
        }
        match &tokens[i] {
            TokenTree::Ident(id) if path_sep(&tokens, i + 1) && (id == "crate" || id == "super" || id == "self") => {
                // `foo::crate::x` is not a thing, but `x::super` is not either: a
                // path only starts here when the previous token is not `::`.
                let starts = i < 2 || !path_sep(&tokens, i - 2);
                let base = match id.to_string().as_str() {
                    "crate" => Vec::new(),
                    "super" => module[..module.len().saturating_sub(1)].to_vec(),
                    _ => module.clone(),
                };
                if starts {
                    i = path(&tokens, i + 3, base, module, file, out);
                    continue;
                }
                i += 1;
            }
            TokenTree::Group(g) => {
                scan(g.stream(), module, file, out);
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Reads the rest of a path (or `use` tree) from `tokens[i..]`, below
/// `base`, records what it reaches, and returns the index after it.
fn path(
    tokens: &[TokenTree],
    mut i: usize,
    mut base: ModPath,
    module: &ModPath,
    file: &str,
    out: &mut Vec<Reference>,
) -> usize {
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) if id == "super" => {
                base.pop();
            }
            Some(TokenTree::Ident(id)) if id == "self" => {}
            Some(TokenTree::Ident(id)) => base.push(id.to_string()),
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                // A `use` group: each comma-separated item continues the path.
                let items: Vec<TokenTree> = g.stream().into_iter().collect();
                let mut j = 0;
                while j < items.len() {
                    j = path(&items, j, base.clone(), module, file, out);
                    // Skip to the next item (`as alias`, then the comma).
                    while j < items.len() && !is_punct(items.get(j), ',') {
                        j += 1;
                    }
                    j += 1;
                }
                return i + 1;
            }
            _ => break,
        }
        if path_sep(tokens, i + 1) {
            i += 3;
        } else {
            i += 1;
            break;
        }
    }
    out.push(Reference { from: module.clone(), to: base, file: file.to_string() });
    i
}

/// Edges between the children of `scope`: `a -> b` when code in `scope::a`
/// (or below) names something in `scope::b` (or below).
fn edges(refs: &[Reference], scope: &[&str], children: &BTreeSet<String>) -> BTreeMap<(String, String), String> {
    let n = scope.len();
    let mut out = BTreeMap::new();
    for r in refs {
        let under = |p: &ModPath| p.len() > n && p[..n].iter().zip(scope).all(|(a, b)| a == b);
        if !under(&r.from) || !under(&r.to) {
            continue;
        }
        let (a, b) = (&r.from[n], &r.to[n]);
        if a != b && children.contains(a) && children.contains(b) {
            out.entry((a.clone(), b.clone())).or_insert_with(|| r.file.clone());
        }
    }
    out
}

/// Every cycle's modules, one per strongly connected component (Tarjan).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let index_of: BTreeMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let names: Vec<&String> = nodes.into_iter().collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (a, b) in edges.keys() {
        next[index_of[a]].push(index_of[b]);
    }
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        counter: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let n = names.len();
    let mut t = Tarjan {
        next: &next,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .found
        .into_iter()
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|i| names[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

/// Explains each cycle with the edges inside it and a file for each.
fn report(scope: &str, edges: &BTreeMap<(String, String), String>, cycles: &[Vec<String>]) -> String {
    let mut text = String::new();
    for c in cycles {
        text.push_str(&format!("import cycle among {scope} modules {c:?}:\n"));
        for ((a, b), file) in edges {
            if c.contains(a) && c.contains(b) {
                text.push_str(&format!("  {a} -> {b} (e.g. in {file})\n"));
            }
        }
    }
    text
}

struct Crate {
    src: PathBuf,
    refs: Vec<Reference>,
}

fn load_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut refs = Vec::new();
    for f in &files {
        // main.rs is the binary: it reaches the library as `frontend_proxy::`.
        if f.file_name().is_some_and(|n| n == "main.rs") && f.parent() == Some(src.as_path()) {
            continue;
        }
        let source = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let name = f.strip_prefix(&src).unwrap_or(f).display().to_string();
        refs.extend(references(&module_of(&src, f), &name, &source));
    }
    Crate { src, refs }
}

/// The modules directly under `scope` (files and directories in its folder).
fn children(src: &Path, scope: &[&str]) -> BTreeSet<String> {
    let dir = scope.iter().fold(src.to_path_buf(), |d, s| d.join(s));
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".rs") {
            if !matches!(stem, "lib" | "main" | "mod") {
                out.insert(stem.to_string());
            }
        } else if path.is_dir() {
            out.insert(name);
        }
    }
    out
}

fn check(c: &Crate, scope: &[&str]) -> String {
    let kids = children(&c.src, scope);
    let e = edges(&c.refs, scope, &kids);
    let name = if scope.is_empty() { "top-level".to_string() } else { scope.join("::") };
    report(&name, &e, &cycles(&e))
}

#[test]
fn top_level_modules_import_one_way() {
    let c = load_crate();
    let problems = check(&c, &[]);
    assert!(problems.is_empty(), "{problems}");
}

/// Folders whose submodules still import each other in a cycle, with why.
/// An entry whose cycle is gone fails the test, so the list only shrinks.
const CYCLES_LEFT: &[(&str, &str)] = &[];

/// The same one floor down, in every module that has a folder of
/// submodules (`config::validate`'s listener, route and action among them).
#[test]
fn submodules_import_one_way() {
    let c = load_crate();
    let mut folders = Vec::new();
    module_folders(&c.src, &mut Vec::new(), &mut folders);
    assert!(folders.iter().any(|f| f == &["config", "validate"]), "{folders:?}");
    let mut problems = String::new();
    for folder in &folders {
        let found = check(&c, &folder.iter().map(String::as_str).collect::<Vec<_>>());
        match CYCLES_LEFT.iter().find(|(name, _)| *name == folder.join("::")) {
            Some((name, _)) if found.is_empty() => {
                problems.push_str(&format!("{name} has no cycle any more: remove it from CYCLES_LEFT\n"))
            }
            Some(_) => {}
            None => problems.push_str(&found),
        }
    }
    assert!(problems.is_empty(), "{problems}");
}

/// Every folder under `src/`, as a module path.
fn module_folders(dir: &Path, path: &mut ModPath, out: &mut Vec<ModPath>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("directory entry").path();
        if entry.is_dir() {
            path.push(entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            out.push(path.clone());
            module_folders(&entry, path, out);
            path.pop();
        }
    }
}

/// The checker itself: it must see each kind of path, and find a cycle
/// that is there.
#[test]
fn the_checker_sees_paths_and_finds_cycles() {
    let m = |s: &str| s.split("::").filter(|p| !p.is_empty()).map(String::from).collect::<ModPath>();
    let source = r#"
        //! Mentions crate::nothing in a comment.
        use crate::{alpha::{self, A}, beta::B as Bee};
        use super::sibling::Thing;
        pub(super) fn f() -> crate::gamma::G { let s = "crate::delta::D"; todo!() }
        #[arg(default_value_t = crate::epsilon::E::X)]
        struct S;
        mod inner { use super::*; use super::super::up::U; }
        #[cfg(test)]
        mod tests { use crate::zeta::Z; }
    "#;
    let refs = references(&m("config::validate::route"), "route.rs", source);
    let seen: BTreeSet<String> = refs.iter().map(|r| r.to.join("::")).collect();
    for expected in ["alpha", "alpha::A", "beta::B", "config::validate::sibling::Thing", "gamma::G", "epsilon::E::X"] {
        assert!(seen.contains(expected), "{expected} not seen in {seen:?}");
    }
    assert!(!seen.iter().any(|s| s.starts_with("nothing") || s.starts_with("delta")), "{seen:?}");
    assert!(!seen.iter().any(|s| s.starts_with("zeta")), "unit tests are skipped: {seen:?}");
    // `super::super` from the inline module is `config::validate`.
    assert!(seen.contains("config::validate::up::U"), "{seen:?}");

    let refs: Vec<Reference> = [("a", "b::X"), ("b::inner", "c::Y"), ("c", "a"), ("c", "d"), ("d", "c::Z")]
        .iter()
        .map(|(from, to)| Reference { from: m(from), to: m(to), file: format!("{from}.rs") })
        .collect();
    let kids: BTreeSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let e = edges(&refs, &[], &kids);
    assert_eq!(cycles(&e), vec![vec!["a".to_string(), "b".into(), "c".into(), "d".into()]]);
    let acyclic = edges(&refs[..2], &[], &kids);
    assert!(cycles(&acyclic).is_empty());
}
