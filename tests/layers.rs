//! The crate's layers, checked: each module of `src/` may use only the modules below it
//! (the README's "Layers" section and the crate docs list the same order). A `use` that
//! reaches up — the agent naming the socket API, the engine naming the agent — fails here
//! with the file and line, before it becomes a cycle nobody can take apart.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Every top-level module and the modules it may use, bottom to top.
const LAYERS: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("wire", &[]),
    ("integrity", &["wire"]),
    ("flow", &["wire"]),
    ("engine", &["flow", "integrity", "wire"]),
    ("policy", &["flow", "integrity", "wire", "sys"]),
    ("enforce", &["flow", "policy", "wire", "sys"]),
    ("error", &["engine", "flow", "wire"]),
    (
        "agent",
        &[
            "enforce",
            "engine",
            "error",
            "flow",
            "integrity",
            "policy",
            "sys",
            "wire",
        ],
    ),
    (
        "net",
        &["agent", "engine", "error", "flow", "policy", "wire"],
    ),
    // qosd's server (feature `daemon`): a front end over the agent, like the socket API.
    (
        "daemon",
        &["agent", "engine", "error", "flow", "policy", "wire"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of a top-level module: `src/NAME.rs` or everything under `src/NAME/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let single = src().join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src().join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "module `{module}` has no files");
    files
}

/// `crate::NAME` paths in code (not in comments or docs), with their line numbers.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups: every name in the braces.
            if name.is_empty() && after.starts_with('{') {
                let group = after[1..].split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        found.push((number + 1, item.to_owned()));
                    }
                }
            } else if !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let modules: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, allowed) in LAYERS {
        for file in files_of(module) {
            let text = fs::read_to_string(&file).expect("readable source");
            for (line, used) in crate_paths(&text) {
                if used == *module || !modules.contains_key(used.as_str()) {
                    // Itself, or a crate-root item (`crate::Agent` is a re-export of a
                    // lower layer only if that layer is allowed: checked below).
                    if !modules.contains_key(used.as_str())
                        && is_root_reexport_of_upper(&used, module)
                    {
                        violations.push(format!("{}:{line}: uses crate::{used}", file.display()));
                    }
                    continue;
                }
                if !allowed.contains(&used.as_str()) {
                    violations.push(format!(
                        "{}:{line}: `{module}` uses `{used}`, which is not below it",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

/// The socket API's crate-root re-exports (`crate::QosStream`, …): the top layer, so only
/// `net` itself may name them.
const SOCKET_API: &[&str] = &[
    "QosListener",
    "QosListenerBuilder",
    "QosStream",
    "QosStreamBuilder",
    "QosEvents",
    "QosEvent",
    "QosSpec",
    "Signaling",
];

fn is_root_reexport_of_upper(used: &str, module: &str) -> bool {
    SOCKET_API.contains(&used) && module != "net"
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let found = crate_paths(
        "use crate::{net::QosError, wire};\n// crate::agent in a comment\nlet x = crate::agent::Agent::new(); // crate::net",
    );
    assert_eq!(
        found,
        vec![
            (1, "net".to_owned()),
            (1, "wire".to_owned()),
            (3, "agent".to_owned())
        ]
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let listed: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    for entry in fs::read_dir(src()).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned();
        if name == "lib" || name == "bin" {
            continue;
        }
        assert!(
            listed.contains(&name.as_str()),
            "src/{name} is not in LAYERS: add it where it belongs"
        );
    }
}

/// `src/wire/`'s own layers (its module docs list them): a module may import only modules of
/// a lower rank, so the codec stays a DAG with the byte-level primitives at the bottom.
const WIRE_LAYERS: &[(&str, u8)] = &[
    ("primitive", 0),
    ("class", 0),
    ("header", 0),
    ("session", 1),
    ("hop", 1),
    ("style", 1),
    ("error_spec", 1),
    ("intserv", 1),
    ("integrity", 1),
    ("refresh", 1),
    ("error", 2),
    ("validate", 3),
    ("object", 4),
    ("message", 5),
    ("dump", 6),
];

/// Module names a `super::` path names: `super::a::X` or each of `super::{a, b::Y}`.
fn super_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in code.split("super::").skip(1) {
        match part.strip_prefix('{') {
            Some(group) => {
                for item in group.split('}').next().unwrap_or("").split(',') {
                    names.push(item.trim().split("::").next().unwrap_or("").to_owned());
                }
            }
            None => names.push(
                part.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            ),
        }
    }
    names
}

#[test]
fn wire_modules_form_a_dag_in_the_documented_order() {
    let rank: BTreeMap<&str, u8> = WIRE_LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    for file in files_of("wire") {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if name == "mod" {
            continue;
        }
        let Some(&own) = rank.get(name) else {
            panic!("src/wire/{name}.rs is not in WIRE_LAYERS: add it where it belongs");
        };
        let text = fs::read_to_string(&file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for used in super_paths(code) {
                let Some(&theirs) = rank.get(used.as_str()) else {
                    continue;
                };
                if theirs >= own && used != name {
                    violations.push(format!(
                        "src/wire/{name}.rs:{}: uses `{used}` (rank {theirs}), not below `{name}` (rank {own})",
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "wire layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_wire_checker_sees_groups() {
    assert_eq!(
        super_paths("use super::{error::WireError, style};  let x = super::object::f();"),
        vec!["error", "style", "object"]
    );
}
