//! The layering of docs/architecture.md, checked against the code: every `crate::X` path
//! in a module's non-test code must name a module of a lower layer (or the module itself),
//! so dependencies point down only and there are no cycles between modules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> layer` from the `<!-- layers -->` block of docs/architecture.md: lines
/// "N. `a` `b` ..." (layer N, lowest first).
fn layers() -> BTreeMap<String, usize> {
    let doc =
        std::fs::read_to_string(repo().join("docs/architecture.md")).expect("docs/architecture.md");
    let a = doc
        .find("<!-- layers -->")
        .expect("a <!-- layers --> block");
    let b = doc
        .find("<!-- /layers -->")
        .expect("the end of the layers block");
    let mut m = BTreeMap::new();
    for l in doc[a..b].lines() {
        let l = l.trim();
        let Some((n, rest)) = l.split_once(". ") else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        for name in rest.split('`').skip(1).step_by(2) {
            assert!(
                m.insert(name.to_string(), n).is_none(),
                "{name} in two layers"
            );
        }
    }
    assert!(m.len() >= 8, "too few modules in the layers block: {m:?}");
    m
}

/// Rust files under src/ by top-level module (src/X.rs and src/X/**.rs -> X), without
/// lib.rs, main.rs and src/bin/.
fn files() -> Vec<(String, PathBuf)> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = repo().join("src");
    let mut all = Vec::new();
    walk(&src, &mut all);
    all.sort();
    all.into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_path_buf();
            let first = rel
                .components()
                .next()?
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            if rel.components().count() == 1 {
                let stem = first.trim_end_matches(".rs").to_string();
                if stem == "lib" || stem == "main" {
                    return None;
                }
                Some((stem, p))
            } else if first == "bin" {
                None
            } else {
                Some((first, p))
            }
        })
        .collect()
}

/// The code of a file without its test modules (`#[cfg(test)]` followed by `mod`) and
/// without comments.
fn non_test_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if next.is_some_and(|n| n.trim_start().starts_with("mod ")) {
                end = i;
                break;
            }
        }
    }
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named by `crate::X` and `crate::{X, Y::..}` paths.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // not part of a longer path such as `streamml_sensor::...`'s `_crate::`
        let ok = i == 0
            || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        rest = &rest[i + "crate::".len()..];
        if !ok {
            continue;
        }
        if let Some(inner) = rest.strip_prefix('{') {
            // top-level names of a group: split at commas outside nested braces
            let mut depth = 0;
            let mut cur = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_ident(&cur));
                        cur.clear();
                        continue;
                    }
                    _ => {}
                }
                cur.push(c);
            }
            out.push(first_ident(&cur));
        } else {
            out.push(first_ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn modules_import_only_lower_layers() {
    let layers = layers();
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for (module, path) in files() {
        let Some(&mine) = layers.get(&module) else {
            unknown.push(format!("{module} ({})", path.display()));
            continue;
        };
        let code = non_test_code(&std::fs::read_to_string(&path).unwrap());
        for r in crate_refs(&code) {
            if r == module {
                continue;
            }
            match layers.get(&r) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => bad.push(format!(
                    "{} (layer {mine}, {module}) imports {r} (layer {theirs})",
                    path.strip_prefix(repo()).unwrap().display()
                )),
                None => unknown.push(format!("{r} (named in {})", path.display())),
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "modules missing from the layers block of docs/architecture.md:\n{}",
        unknown.join("\n")
    );
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "{} imports that do not point down (docs/architecture.md):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The checker itself finds what it must.
#[test]
fn checker_sees_paths_groups_and_skips_tests() {
    let code = "use crate::wire::{self, X};\nuse crate::{flow::table::T, shard};\nfn f() { crate::stats::merge_into(); }\n// crate::cmd in a comment\n#[cfg(test)]\nmod tests {\n    use crate::engine;\n}\n";
    let mut r = crate_refs(&non_test_code(code));
    r.sort();
    assert_eq!(r, ["flow", "shard", "stats", "wire"]);
}
