//! No silent keys: every key of every role's effective config (the file `config check` prints
//! for `fixtures/keys/ROLE.yaml`, which sets every optional block) has a row in
//! `docs/config-keys.md`, and that row names a test that shows the key's effect. The test must
//! exist (`fn NAME` in its file), and its file, or the helper the row names after `via`, must
//! say the key's last segment. A key with no such test fails here: give it one, or refuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;
use shoal_config::{
    AgentConfig, BuildIndexConfig, DevConfig, OriginConfig, ProxyConfig, RoleConfig, TrackerConfig,
    load, render,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Keys whose effect no test shows yet, by role: each is a gap of issue 14's "no silent keys",
/// listed so that a new key cannot join them unnoticed. A listed key that gets its test fails
/// here too, until it is taken off the list.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Maps whose keys are names the operator chooses, written `<...>` in the table.
const NAMED: &[(&str, &str)] = &[
    ("registry.mirrors", "<host>"),
    ("metainfogen.piece_lengths", "<size>"),
    ("auth.s3", "<name>"),
    ("auth.gcs", "<name>"),
    ("auth.plugin", "<name>"),
    ("auth.plugin.<name>", "<key>"),
];

/// Values that are the plugin's own business: one key however deep.
const OPAQUE: &[&str] = &[
    "backends[].backend.plugin.config",
    "cluster.healthcheck.config",
    "tracker.cluster.healthcheck.config",
];

/// Every leaf key path of `value` under `at`.
fn walk(at: &str, value: &Value, out: &mut BTreeSet<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    if OPAQUE.contains(&at) {
        out.insert(at.to_owned());
        return;
    }
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            let named = NAMED.iter().find(|(p, _)| *p == at).map(|(_, n)| *n);
            for (k, v) in map {
                let k = k.as_str().expect("keys are strings");
                walk(&join(named.unwrap_or(k)), v, out);
            }
        }
        Value::Sequence(items) if items.iter().any(Value::is_mapping) => {
            for item in items {
                walk(&format!("{at}[]"), item, out);
            }
        }
        // An unset option: the fixture sets each one somewhere, so this is another variant's.
        Value::Null => {}
        _ => {
            out.insert(at.to_owned());
        }
    }
}

fn keys_of<C: RoleConfig>(role: &str) -> BTreeSet<String> {
    let fixture = repo().join(format!("config/tests/fixtures/keys/{role}.yaml"));
    let no_env = |_: &str| None;
    let config: C = load(&fixture, &no_env).unwrap_or_else(|e| panic!("{role}: {e}"));
    let text = render(&config).unwrap();
    let value: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    walk("", &value, &mut out);
    out
}

/// One row: the key and where its effect is shown (`None`: nowhere).
#[derive(Debug)]
struct Row {
    key: String,
    shown: Option<Shown>,
}

#[derive(Debug)]
struct Shown {
    file: String,
    function: String,
    via: Option<String>,
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

/// `file::function`, optionally followed by ` via `helper``.
fn parse_shown(cell: &str) -> Option<Shown> {
    let cell = cell.trim();
    if cell == "NONE" {
        return None;
    }
    let (test, via) = match cell.split_once(" via ") {
        Some((t, v)) => (t, Some(unquote(v).to_owned())),
        None => (cell, None),
    };
    let (file, function) = unquote(test)
        .rsplit_once("::")
        .unwrap_or_else(|| panic!("not file::function: {cell}"));
    Some(Shown {
        file: file.to_owned(),
        function: function.to_owned(),
        via,
    })
}

/// The tables of docs/config-keys.md, by role.
fn tables() -> BTreeMap<String, Vec<Row>> {
    let text = std::fs::read_to_string(repo().join("docs/config-keys.md")).unwrap();
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut role = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            role = Some(h.trim().to_owned());
            continue;
        }
        let (Some(role), Some(row)) = (&role, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<String> = format!("| `{row}")
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect();
        assert_eq!(cells.len(), 3, "a row has key, effect and test: {line}");
        out.entry(role.clone()).or_default().push(Row {
            key: unquote(&cells[0]).to_owned(),
            shown: parse_shown(&cells[2]),
        });
    }
    out
}

/// The last named segment of a key: what a test's file must say.
fn last_segment(key: &str) -> &str {
    key.split('.')
        .rev()
        .map(|s| s.trim_end_matches("[]"))
        .find(|s| !s.starts_with('<'))
        .unwrap_or(key)
}

/// Why `row` does not show its key, if it does not.
fn unshown(row: &Row) -> Option<String> {
    let Some(shown) = &row.shown else {
        return Some("NONE".into());
    };
    let read = |f: &str| std::fs::read_to_string(repo().join(f)).ok();
    let Some(text) = read(&shown.file) else {
        return Some(format!("{} does not exist", shown.file));
    };
    if !text.contains(&format!("fn {}(", shown.function)) {
        return Some(format!("no fn {} in {}", shown.function, shown.file));
    }
    let word = last_segment(&row.key);
    let says = text.contains(word)
        || shown
            .via
            .as_deref()
            .and_then(read)
            .is_some_and(|t| t.contains(word));
    (!says).then(|| format!("{} never says {word:?}", shown.file))
}

#[test]
fn every_key_of_every_role_has_a_test_that_shows_it() {
    let walked: Vec<(&str, BTreeSet<String>)> = vec![
        ("agent", keys_of::<AgentConfig>("agent")),
        ("origin", keys_of::<OriginConfig>("origin")),
        ("tracker", keys_of::<TrackerConfig>("tracker")),
        ("build-index", keys_of::<BuildIndexConfig>("build-index")),
        ("proxy", keys_of::<ProxyConfig>("proxy")),
        ("dev", keys_of::<DevConfig>("dev")),
    ];
    let tables = tables();
    let mut failures = Vec::new();
    let gap = |role: &str, key: &str| KNOWN_GAPS.contains(&(role, key));
    let mut check = |role: &str, key: &str, why: Option<String>| match (why, gap(role, key)) {
        (Some(why), false) => failures.push(format!("{role}: `{key}`: {why}")),
        (None, true) => failures.push(format!(
            "{role}: `{key}` is shown now: take it off KNOWN_GAPS"
        )),
        _ => {}
    };
    for (role, keys) in &walked {
        let rows = tables
            .get(*role)
            .unwrap_or_else(|| panic!("no `## {role}` table"));
        let by_key: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
        for key in keys {
            match by_key.get(key.as_str()) {
                None => check(role, key, Some("has no row".into())),
                Some(row) => check(role, key, unshown(row)),
            }
        }
        // Rows for variants the fixture does not pick are checked all the same.
        for row in rows.iter().filter(|r| !keys.contains(&r.key)) {
            check(role, &row.key, unshown(row));
        }
    }
    assert!(
        failures.is_empty(),
        "{} keys without a test that shows them:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_walk_sees_lists_named_maps_and_leaves() {
    let v: Value = serde_yaml_ng::from_str(
        "a: {b: 1}\nregistry: {mirrors: {docker.io: x}}\nl: [{k: 1}]\ns: [1, 2]\n",
    )
    .unwrap();
    let mut out = BTreeSet::new();
    walk("", &v, &mut out);
    let want: BTreeSet<String> = ["a.b", "registry.mirrors.<host>", "l[].k", "s"]
        .map(String::from)
        .into();
    assert_eq!(out, want);
    assert_eq!(
        last_segment("auth.s3.<name>.s3.aws_session_token"),
        "aws_session_token"
    );
    assert_eq!(last_segment("registry.mirrors.<host>"), "mirrors");
    assert_eq!(last_segment("backends[]"), "backends");
}
