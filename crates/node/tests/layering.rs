//! The crate's layering, read from its sources: no file imports, through any
//! chain of others, a file that imports it back; a role never imports
//! another role; the shared plumbing below the roles imports no role and
//! nothing of the top (`start`, `devnet`, `testing`, `fuzzing`).
//!
//! An import is any path a file names: `use crate::...`, `super::...`,
//! `self::...`, a child module's `child::...`, also inside `use` groups and
//! `serde(with = "...")` strings; comments, other strings and
//! `#[cfg(test)]` modules are left out (a test may assemble a whole network).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files whose module path starts with one of these sit on top of the roles.
const TOP: [&str; 5] = [
    "crate",
    "crate::start",
    "crate::devnet",
    "crate::testing",
    "crate::fuzzing",
];

#[test]
fn no_file_imports_itself_through_others_and_roles_stay_apart() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 10, "no sources read under {}", src.display());

    let mut problems = Vec::new();
    for cycle in cycles(&graph) {
        problems.push(format!("import circle: {}", cycle.join(" -> ")));
    }
    for (from, tos) in &graph {
        for to in tos {
            if let (Some(a), Some(b)) = (role(from), role(to)) {
                if a != b {
                    problems.push(format!("role imports another role: {from} -> {to}"));
                }
            }
            let below = role(from).is_none() && !is_top(from);
            if below && (role(to).is_some() || is_top(to)) {
                problems.push(format!("shared plumbing imports above it: {from} -> {to}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Sanity of the reader itself on a small made-up crate.
#[test]
fn the_reader_sees_every_kind_of_path_and_finds_a_circle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |p: &str, s: &str| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write(
        "a/mod.rs",
        "mod x;\nuse x::Thing; // crate::c::Nope\nconst S: &str = \"see crate::c\";\n",
    );
    write("a/x.rs", "use super::super::b::{self, Other};\n");
    write(
        "b.rs",
        "#[serde(with = \"crate::a::x::f\")]\nstruct B;\n#[cfg(test)]\nmod tests { use crate::c::T; fn f() { let _ = '{'; } }\n",
    );
    write("c.rs", "fn f() { crate::a::Q; }\n");
    let g = graph(dir.path());
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g["crate::a"], set(&["crate::a::x"]));
    assert_eq!(g["crate::a::x"], set(&["crate::b"]));
    assert_eq!(g["crate::b"], set(&["crate::a::x"]));
    assert_eq!(g["crate::c"], set(&["crate::a"]));
    assert_eq!(
        cycles(&g),
        vec![vec!["crate::a::x", "crate::b", "crate::a::x"]]
    );
}

/// The role a module belongs to, if any.
fn role(module: &str) -> Option<&str> {
    module.strip_prefix("crate::roles::")?.split("::").next()
}

fn is_top(module: &str) -> bool {
    TOP.iter()
        .any(|t| module == *t || (*t != "crate" && module.starts_with(&format!("{t}::"))))
}

/// Every source file's module path and the files (module paths) it imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("read source");
        let code = strip(&text);
        let children: BTreeSet<String> = declared_children(&code);
        let mut deps = BTreeSet::new();
        for p in paths(&code, &children) {
            if let Some(target) = resolve(module, &p, &modules) {
                if target != *module {
                    deps.insert(target);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).expect("under root");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let last = parts.pop().expect("file name");
            let stem = last.trim_end_matches(".rs");
            if stem != "mod" && stem != "lib" {
                parts.push(stem.to_string());
            }
            let module = std::iter::once("crate".to_string())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            out.insert(module, p);
        }
    }
}

/// The code without comments, without string and char contents (a string
/// that names a path, as `serde(with = "...")` does, is kept as that path)
/// and without `#[cfg(test)]` modules.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && at(&c, i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(&c, i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(&c, i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(&c, i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (at(&c, i + 1) == '"' || (at(&c, i + 1) == '#' && !is_ident(at(&c, i + 2))))
            && (i == 0 || !is_ident(c[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut hashes = 0;
            i += 1;
            while i < c.len() && c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let start = i;
            while i < c.len() && !c[i..].iter().collect::<String>().starts_with(&close) {
                i += 1;
            }
            keep_path(&c[start..i.min(c.len())], &mut out);
            i += close.len();
        } else if c[i] == '"' {
            i += 1;
            let start = i;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            keep_path(&c[start..i.min(c.len())], &mut out);
            i += 1;
        } else if c[i] == '\'' && (at(&c, i + 2) == '\'' || (at(&c, i + 1) == '\\')) {
            // A char literal ('x' or an escape), not a lifetime.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    drop_test_modules(&out)
}

/// The char at `i`, a space past the end.
fn at(c: &[char], i: usize) -> char {
    c.get(i).copied().unwrap_or(' ')
}

fn keep_path(s: &[char], out: &mut String) {
    let s: String = s.iter().collect();
    if ["crate::", "super::", "self::"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.chars().all(|c| is_ident(c) || c == ':')
    {
        out.push(' ');
        out.push_str(&s);
        out.push(' ');
    } else {
        out.push_str("\"\"");
    }
}

/// Removes every `#[cfg(test)]` item that is a module with a body.
fn drop_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let head = after.trim_start();
        let is_mod = head.starts_with("mod ") || head.starts_with("pub mod ");
        match (is_mod, after.find('{'), after.find(';')) {
            (true, Some(open), semi) if semi.is_none_or(|s| s > open) => {
                let mut depth = 0;
                let mut end = after.len();
                for (j, ch) in after[open..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `mod x;` declarations.
fn declared_children(code: &str) -> BTreeSet<String> {
    let words: Vec<&str> = code
        .split(|c: char| !(is_ident(c) || c == ';'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|w| w[0] == "mod")
        .filter_map(|w| w[1].strip_suffix(';').map(str::to_string))
        .collect()
}

/// Every path the code names from `crate`, `super`, `self` or a declared
/// child, with `use` groups expanded; each as its segments.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if is_ident(c[i]) && (i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == ':' || c[i - 1] == '.'))
        {
            let mut j = i;
            while j < c.len() && is_ident(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let starts =
                matches!(word.as_str(), "crate" | "super" | "self") || children.contains(&word);
            if starts && c.get(j) == Some(&':') && c.get(j + 1) == Some(&':') {
                let mut k = j;
                tree(&c, &mut k, vec![word], &mut out);
                i = k.max(j);
                continue;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Reads `::seg::seg` or `::{a, b::c}` after `prefix`, from `c[*k]`.
fn tree(c: &[char], k: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        skip_space(c, k);
        if !(c.get(*k) == Some(&':') && c.get(*k + 1) == Some(&':')) {
            out.push(path);
            return;
        }
        *k += 2;
        skip_space(c, k);
        match c.get(*k) {
            Some('{') => {
                *k += 1;
                loop {
                    skip_space(c, k);
                    match c.get(*k) {
                        Some('}') => {
                            *k += 1;
                            return;
                        }
                        Some(',') => *k += 1,
                        Some(ch) if is_ident(*ch) => {
                            let start = *k;
                            while *k < c.len() && is_ident(c[*k]) {
                                *k += 1;
                            }
                            let seg: String = c[start..*k].iter().collect();
                            let mut p = path.clone();
                            if seg != "self" {
                                p.push(seg);
                            }
                            tree(c, k, p, out);
                            // `as name` and the like up to the next separator.
                            while *k < c.len() && !matches!(c[*k], ',' | '}') {
                                *k += 1;
                            }
                        }
                        Some('*') => {
                            *k += 1;
                            out.push(path.clone());
                        }
                        Some(_) => *k += 1,
                        None => return,
                    }
                }
            }
            Some(ch) if is_ident(*ch) => {
                let start = *k;
                while *k < c.len() && is_ident(c[*k]) {
                    *k += 1;
                }
                path.push(c[start..*k].iter().collect());
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

fn skip_space(c: &[char], k: &mut usize) {
    while *k < c.len() && c[*k].is_whitespace() {
        *k += 1;
    }
}

/// The file (module path) a path named in `module` lands in: the longest
/// prefix of its absolute form that is a file's module.
fn resolve(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut abs: Vec<String> = module.split("::").map(str::to_string).collect();
    let mut segs = path.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            abs = vec!["crate".into()];
            segs.next();
        }
        Some("self") => {
            segs.next();
        }
        _ => {}
    }
    while segs.peek().map(|s| s.as_str()) == Some("super") {
        abs.pop();
        segs.next();
    }
    abs.extend(segs.cloned());
    (1..=abs.len())
        .rev()
        .map(|n| abs[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// One circle through every group of files that import each other
/// (strongly connected components of two or more, or a file on its own
/// loop), each printed from its first file back to it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        // The shortest way back to `start`, by breadth-first search.
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.as_str()]);
        let mut back = None;
        while let Some(n) = queue.pop_front() {
            for m in graph.get(n).into_iter().flatten() {
                if m == start {
                    back = Some(n);
                    break;
                }
                if !prev.contains_key(m.as_str()) {
                    prev.insert(m, n);
                    queue.push_back(m);
                }
            }
            if back.is_some() {
                break;
            }
        }
        if let Some(mut n) = back {
            let mut cycle = vec![start.clone()];
            while n != start {
                cycle.push(n.to_string());
                n = prev[n];
            }
            cycle.push(start.clone());
            cycle.reverse();
            seen.extend(cycle.iter().cloned());
            out.push(cycle);
        }
    }
    out
}
