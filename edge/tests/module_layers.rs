//! The node's top-level modules form layers: no module of `edge/src` uses a
//! module that uses it back, directly or through others (issue 10: "no
//! folder imports a folder that imports it back"). Read from the source:
//! every `crate::<module>` and `crate::{<module>, …}` (a group on one line)
//! outside comments, per top-level module (a folder or a file).
//!
//! A per-part setting (`OutboxLimits`, `PulsarConfig`, `MesConfig`,
//! `HealthBounds`) is defined by its part and built by `config`, never the
//! other way round; keys, tokens, replay and audit are `trust`'s, used by
//! `models` and `commands` alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> modules it uses`, from every `.rs` file under `src`.
fn uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
            let module = top.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let used = graph.entry(module.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    // `crate::a::…`, or a group `crate::{a, b::c}` (on one line).
                    let heads: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                        None => vec![rest],
                    };
                    for head in heads {
                        let name: String = head
                            .trim_start()
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                            .collect();
                        if !name.is_empty() && name != module {
                            used.insert(name);
                        }
                    }
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_module_uses_a_module_that_uses_it_back() {
    let graph = uses(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "read too few modules: {graph:?}");
    // The check itself finds a cycle when there is one.
    let mut looped = graph.clone();
    looped.entry("control".into()).or_default().insert("node".into());
    assert!(cycle(&looped).is_some(), "a control -> node edge must close a cycle");
    if let Some(c) = cycle(&graph) {
        panic!(
            "modules of edge/src use each other in a circle: {} (move the shared part down a layer)",
            c.join(" -> ")
        );
    }
}
