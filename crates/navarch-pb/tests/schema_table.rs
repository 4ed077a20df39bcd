//! Keeps `data/schema.txt` (the decoder's embedded schema table) honest.
//!
//! * `schema_table_matches_k8s_pb` (always runs): every message and field of the
//!   locked `k8s-pb` crate (read as source text from the registry cache, at the version in Cargo.lock)
//!   is in the table with the same field number, cardinality and type, and the
//!   table has nothing else.
//! * `regenerate_schema_table` (ignored): rewrites the table from the `k8s-pb`
//!   sources plus upstream Go sources, which give the JSON names, Go pointer-ness,
//!   `omitempty` and inlining. Run it as
//!   `NAVARCH_PB_GO_SOURCES=/src/api:/src/apimachinery:... cargo test -p navarch-pb
//!   --test schema_table -- --ignored`, each directory being a checkout of a
//!   `k8s.io/*` Go module (api, apimachinery, apiextensions-apiserver,
//!   kube-aggregator, metrics) at the Kubernetes release k8s-pb was generated
//!   from (k8s-pb 0.9 ↔ the `v0.35.0` tags). `NAVARCH_PB_GO_REVISIONS` (free
//!   text) is recorded in the header. The run prints notes for messages or
//!   fields with no Go counterpart; their JSON names are then guessed from
//!   prost's snake case and their rule is `?`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const TABLE: &str = "data/schema.txt";

// ---------------------------------------------------------------------------
// k8s-pb sources

#[derive(Debug, Clone, PartialEq, Eq)]
enum Card {
    One,
    Rep,
    Map,
}

#[derive(Debug, Clone)]
struct PbField {
    num: u32,
    rust_name: String,
    card: Card,
    /// Scalar type name, or the full (prost-cased) message name.
    ty: String,
    is_msg: bool,
}

#[derive(Debug, Clone)]
struct PbMsg {
    package: String,
    name: String,
    fields: Vec<PbField>,
}

struct Resource {
    package: String,
    message: String,
    api_version: String,
    kind: String,
}

fn k8s_pb_src() -> PathBuf {
    // The version locked in Cargo.lock, then its unpacked sources in the
    // registry cache (always there: k8s-pb is a dev-dependency of this test).
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let lock = loop {
        let candidate = dir.join("Cargo.lock");
        if candidate.exists() {
            break std::fs::read_to_string(candidate).expect("read Cargo.lock");
        }
        assert!(dir.pop(), "no Cargo.lock above the crate");
    };
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"k8s-pb\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("k8s-pb in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry = cargo_home.join("registry").join("src");
    for entry in std::fs::read_dir(&registry).expect("registry sources") {
        let src = entry
            .unwrap()
            .path()
            .join(format!("k8s-pb-{version}"))
            .join("src");
        if src.join("lib.rs").exists() {
            return src;
        }
    }
    // Elsewhere (vendored sources, another cache): ask cargo.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "k8s-pb-{version} not under {} and cargo metadata failed: {}",
            registry.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "k8s-pb"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("k8s-pb in cargo metadata");
    Path::new(manifest).parent().unwrap().join("src")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn strip_wrappers(mut t: &str) -> &str {
    for w in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ] {
        if let Some(rest) = t.strip_prefix(w) {
            t = rest
                .strip_suffix('>')
                .expect("balanced wrapper")
                .trim_end_matches(',');
            return strip_wrappers(t);
        }
    }
    t
}

/// Splits `A<B,C<D,E>>`'s arguments at top level.
fn generic_args(t: &str) -> Vec<&str> {
    let open = t.find('<').expect("generic");
    let inner = t[open + 1..t.len() - 1].trim_end_matches(',');
    let mut args = vec![];
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                args.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(&inner[start..]);
    args
}

fn resolve(module: &[String], path: &str) -> String {
    let mut segs: Vec<String> = module.to_vec();
    let parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (last, prefix) = parts.split_last().expect("path");
    for p in prefix {
        match *p {
            "super" => {
                segs.pop();
            }
            "crate" => segs.clear(),
            "self" => {}
            other => segs.push(other.to_string()),
        }
    }
    format!("k8s.io.{}.{}", segs.join("."), last)
}

fn parse_k8s_pb(src: &Path) -> (Vec<PbMsg>, Vec<Resource>) {
    let mut files = vec![];
    walk(src, &mut files);
    let mut msgs = vec![];
    let mut resources = vec![];
    for file in files.iter().filter(|f| f.ends_with("mod.rs")) {
        let rel = file.parent().unwrap().strip_prefix(src).unwrap();
        let module: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.is_empty() {
            continue;
        }
        let package = format!("k8s.io.{}", module.join("."));
        let text = std::fs::read_to_string(file).expect("read k8s-pb source");
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.split([' ', '{']).next().unwrap().to_string();
                let mut fields = vec![];
                if !rest.trim_end().ends_with("{}") {
                    i += 1;
                    while lines[i] != "}" {
                        let t = lines[i].trim();
                        if let Some(attr) = t.strip_prefix("#[prost(") {
                            let attr = attr.strip_suffix(")]").expect("one-line prost attr");
                            let mut decl = String::new();
                            i += 1;
                            loop {
                                let l = lines[i].trim();
                                decl.push_str(l);
                                let depth = decl.matches('<').count() as i64
                                    - decl.matches('>').count() as i64;
                                if depth == 0 && decl.ends_with(',') {
                                    break;
                                }
                                i += 1;
                            }
                            fields.push(parse_pb_field(&module, attr, &decl));
                        }
                        i += 1;
                    }
                }
                msgs.push(PbMsg {
                    package: package.clone(),
                    name,
                    fields,
                });
            } else if let Some(rest) = line.strip_prefix("impl crate::Resource for ") {
                let message = rest.trim_end_matches(" {").to_string();
                let mut api_version = String::new();
                let mut kind = String::new();
                while lines[i] != "}" {
                    let t = lines[i].trim();
                    let val = || t.split('"').nth(1).unwrap_or_default().to_string();
                    if t.starts_with("const API_VERSION") {
                        api_version = val();
                    } else if t.starts_with("const KIND") {
                        kind = val();
                    }
                    i += 1;
                }
                resources.push(Resource {
                    package: package.clone(),
                    message,
                    api_version,
                    kind,
                });
            }
            i += 1;
        }
    }
    (msgs, resources)
}

fn parse_pb_field(module: &[String], attr: &str, decl: &str) -> PbField {
    let decl: String = decl.chars().filter(|c| !c.is_whitespace()).collect();
    let decl = decl.strip_prefix("pub").expect("pub field");
    let (rust_name, ty_text) = decl.split_once(':').expect("field decl");
    let ty_text = ty_text.trim_end_matches(',');
    let rust_name = rust_name.trim_start_matches("r#").to_string();
    let num: u32 = attr
        .split("tag = \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("tag");
    let first = attr.split([',', ' ']).next().unwrap();
    let (card, kind) = if first == "btree_map" || first == "hash_map" {
        let spec = attr.split('"').nth(1).expect("map spec");
        let (k, v) = spec.split_once(", ").expect("map kv");
        assert_eq!(k, "string", "map key type");
        (Card::Map, v.to_string())
    } else if attr.contains("repeated") {
        (Card::Rep, first.to_string())
    } else {
        (Card::One, first.to_string())
    };
    let (ty, is_msg) = if kind == "message" {
        let inner = if card == Card::Map {
            generic_args(ty_text)[1].to_string()
        } else {
            strip_wrappers(ty_text).to_string()
        };
        (resolve(module, &inner), true)
    } else {
        let scalar = match kind.as_str() {
            "string" | "bytes" | "bool" | "int32" | "int64" | "double" => kind,
            other => panic!("unsupported scalar {other} in {decl}"),
        };
        (scalar, false)
    };
    PbField {
        num,
        rust_name,
        card,
        ty,
        is_msg,
    }
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn split_full(full: &str) -> (&str, &str) {
    full.rsplit_once('.').expect("qualified name")
}

// ---------------------------------------------------------------------------
// the table as written

struct TableField {
    card: Card,
    ty: String,
}

fn parse_table(text: &str) -> BTreeMap<String, BTreeMap<u32, TableField>> {
    let mut out: BTreeMap<String, BTreeMap<u32, TableField>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols[0] == "M" {
            current = cols[1].to_string();
            out.insert(norm_full(&current), BTreeMap::new());
            continue;
        }
        // num json card type rule
        let num: u32 = cols[0].parse().expect("field number");
        let card = match cols[2] {
            "1" => Card::One,
            "*" => Card::Rep,
            "{}" => Card::Map,
            other => panic!("card {other}"),
        };
        let ty = if cols[3].contains('.') || is_scalar(cols[3]) {
            cols[3].to_string()
        } else {
            format!("{}.{}", split_full(&current).0, cols[3])
        };
        out.get_mut(&norm_full(&current))
            .unwrap()
            .insert(num, TableField { card, ty });
    }
    out
}

fn is_scalar(t: &str) -> bool {
    matches!(
        t,
        "string" | "bytes" | "bool" | "int32" | "int64" | "double"
    )
}

fn norm_full(full: &str) -> String {
    let (pkg, name) = split_full(full);
    format!("{pkg}.{}", name.to_ascii_lowercase())
}

#[test]
fn schema_table_matches_k8s_pb() {
    let (msgs, resources) = parse_k8s_pb(&k8s_pb_src());
    assert!(msgs.len() > 1000, "parsed only {} messages", msgs.len());
    let table_text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE)).unwrap();
    let table = parse_table(&table_text);
    let mut problems = vec![];
    for m in &msgs {
        let full = format!("{}.{}", m.package, m.name);
        let Some(t) = table.get(&norm_full(&full)) else {
            problems.push(format!("{full}: missing from table"));
            continue;
        };
        if t.len() != m.fields.len() {
            problems.push(format!(
                "{full}: {} fields in table, {} in k8s-pb",
                t.len(),
                m.fields.len()
            ));
        }
        for f in &m.fields {
            match t.get(&f.num) {
                None => problems.push(format!("{full}.{}: missing", f.rust_name)),
                Some(tf) => {
                    let ty_ok = if f.is_msg {
                        norm_full(&tf.ty) == norm_full(&f.ty)
                    } else {
                        tf.ty == f.ty
                    };
                    if tf.card != f.card || !ty_ok {
                        problems.push(format!(
                            "{full}.{}: table has {:?} {}, k8s-pb {:?} {}",
                            f.rust_name, tf.card, tf.ty, f.card, f.ty
                        ));
                    }
                }
            }
        }
    }
    if table.len() != msgs.len() {
        problems.push(format!(
            "{} messages in table, {} in k8s-pb",
            table.len(),
            msgs.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "{TABLE} is out of date with k8s-pb ({} problems; regenerate it):\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Every resource k8s-pb knows is reachable from its apiVersion and kind,
    // and resolves to that very message.
    for r in &resources {
        let found = navarch_pb::message_name(&r.api_version, &r.kind)
            .unwrap_or_else(|| panic!("no message for {} {}", r.api_version, r.kind));
        assert_eq!(
            norm_full(found),
            norm_full(&format!("{}.{}", r.package, r.message)),
            "{} {}",
            r.api_version,
            r.kind
        );
    }
}

// ---------------------------------------------------------------------------
// Go sources

#[derive(Debug, Clone)]
struct GoField {
    num: u32,
    json: String,
    proto_name: String,
    rule: &'static str,
}

#[derive(Debug, Default)]
struct GoMsg {
    name: String,
    fields: Vec<GoField>,
    named_slice: bool,
}

fn go_tag<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}:\"");
    let start = tag.find(&pat)? + pat.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

fn parse_go_field(line: &str) -> Option<GoField> {
    let line = line.trim();
    let tick = line.find('`')?;
    let tag = line[tick + 1..].trim_end_matches('`');
    let proto = go_tag(tag, "protobuf")?;
    let mut parts = proto.split(',');
    let _wire = parts.next()?;
    let num: u32 = parts.next()?.parse().ok()?;
    let proto_name = parts
        .find_map(|p| p.strip_prefix("name="))
        .unwrap_or_default()
        .to_string();
    let decl: Vec<&str> = line[..tick].split_whitespace().collect();
    let (go_name, go_type, embedded) = match decl.as_slice() {
        [ty] => (ty.trim_start_matches('*').rsplit('.').next()?, *ty, true),
        [name, ty, ..] => (*name, *ty, false),
        [] => return None,
    };
    let json = go_tag(tag, "json");
    let (json_name, opts) = match json {
        Some(j) => {
            let mut it = j.splitn(2, ',');
            (it.next().unwrap_or_default(), it.next().unwrap_or_default())
        }
        None => ("", ""),
    };
    let omit = opts.split(',').any(|o| o == "omitempty" || o == "omitzero");
    let (json, rule) = if json_name == "-" {
        ("-".to_string(), "skip")
    } else if json_name.is_empty() && embedded {
        ("-".to_string(), "inline")
    } else {
        let name = if json_name.is_empty() {
            go_name
        } else {
            json_name
        };
        let rule = if go_type.starts_with('*') {
            "ptr"
        } else if omit {
            "omit"
        } else {
            "keep"
        };
        (name.to_string(), rule)
    };
    Some(GoField {
        num,
        json,
        proto_name,
        rule,
    })
}

fn parse_go_sources(roots: &[PathBuf]) -> HashMap<String, GoMsg> {
    let mut out: HashMap<String, GoMsg> = HashMap::new();
    for root in roots {
        let mut files = vec![];
        walk(root, &mut files);
        for proto in files.iter().filter(|f| f.ends_with("generated.proto")) {
            let s = proto.to_string_lossy();
            if s.contains("/vendor/") || s.contains("/testdata/") {
                continue;
            }
            let text = std::fs::read_to_string(proto).unwrap();
            let Some(package) = text.lines().find_map(|l| {
                l.strip_prefix("package ")
                    .map(|p| p.trim_end_matches(';').trim().to_string())
            }) else {
                continue;
            };
            let dir = proto.parent().unwrap();
            let mut gofiles: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.ends_with(".go")
                        && !n.ends_with("_test.go")
                        && !n.starts_with("zz_generated")
                        && !n.starts_with("generated.")
                })
                .collect();
            gofiles.sort();
            for gf in gofiles {
                parse_go_file(&package, &std::fs::read_to_string(&gf).unwrap(), &mut out);
            }
        }
    }
    out
}

fn parse_go_file(package: &str, text: &str, out: &mut HashMap<String, GoMsg>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let decl = line
            .strip_prefix("type ")
            .or_else(|| line.strip_prefix('\t').filter(|_| in_type_block(&lines, i)));
        if let Some(decl) = decl {
            let mut words = decl.split_whitespace();
            let name = words.next().unwrap_or_default();
            let ty = words.next().unwrap_or_default();
            if ty == "struct" && decl.trim_end().ends_with('{') {
                let indent = &line[..line.len() - line.trim_start().len()];
                let close = format!("{indent}}}");
                let mut fields = vec![];
                let mut depth = 0;
                i += 1;
                while i < lines.len() && !(depth == 0 && lines[i] == close) {
                    let l = lines[i].trim();
                    if !l.starts_with("//") {
                        if depth == 0 {
                            if let Some(f) = parse_go_field(l) {
                                fields.push(f);
                            }
                        }
                        depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                    }
                    i += 1;
                }
                out.insert(
                    format!("{package}.{}", name.to_ascii_lowercase()),
                    GoMsg {
                        name: name.to_string(),
                        fields,
                        named_slice: false,
                    },
                );
            } else if ty == "struct{}" {
                out.insert(
                    format!("{package}.{}", name.to_ascii_lowercase()),
                    GoMsg {
                        name: name.to_string(),
                        fields: vec![],
                        named_slice: false,
                    },
                );
            } else if ty.starts_with("[]") && !ty.starts_with("[]byte") {
                out.insert(
                    format!("{package}.{}", name.to_ascii_lowercase()),
                    GoMsg {
                        name: name.to_string(),
                        fields: vec![],
                        named_slice: true,
                    },
                );
            }
        }
        i += 1;
    }
}

/// Whether line `i` (indented by one tab) is inside a `type (` block.
fn in_type_block(lines: &[&str], i: usize) -> bool {
    for l in lines[..i].iter().rev() {
        if *l == "type (" {
            return true;
        }
        if !l.starts_with('\t') && !l.is_empty() && !l.starts_with("//") && *l != ")" {
            return false;
        }
        if *l == ")" {
            return false;
        }
    }
    false
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn render(msgs: &[PbMsg], go: &HashMap<String, GoMsg>, header: &str) -> (String, Vec<String>) {
    let mut notes = vec![];
    let canonical = |full: &str| -> String {
        let (pkg, name) = split_full(full);
        match go.get(&norm_full(full)) {
            Some(g) => format!("{pkg}.{}", g.name),
            None => format!("{pkg}.{name}"),
        }
    };
    let mut sorted: Vec<&PbMsg> = msgs.iter().collect();
    sorted.sort_by_key(|m| canonical(&format!("{}.{}", m.package, m.name)));
    let mut out = String::from(header);
    for m in sorted {
        let full = canonical(&format!("{}.{}", m.package, m.name));
        // A Go defined type over another package's struct (`type List
        // metav1.List`) has no struct of its own: use a struct of the same
        // name with the same field numbers.
        let g = go.get(&norm_full(&full)).or_else(|| {
            let simple = split_full(&full).1.to_ascii_lowercase();
            let mut nums: Vec<u32> = m.fields.iter().map(|f| f.num).collect();
            nums.sort_unstable();
            let mut candidates: Vec<(&String, &GoMsg)> = go
                .iter()
                .filter(|(k, g)| {
                    let mut gn: Vec<u32> = g.fields.iter().map(|f| f.num).collect();
                    gn.sort_unstable();
                    split_full(k).1 == simple && !g.named_slice && gn == nums
                })
                .collect();
            candidates.sort_by_key(|(k, _)| k.as_str());
            candidates.first().map(|(_, g)| *g)
        });
        if g.is_none() {
            notes.push(format!("{full}: no Go type, names guessed"));
        }
        let slice = g.is_some_and(|g| g.named_slice);
        out.push_str(&format!("M {full}{}\n", if slice { " slice" } else { "" }));
        let mut rows: Vec<(usize, u32, String)> = vec![];
        for f in &m.fields {
            let gf = g.and_then(|g| g.fields.iter().enumerate().find(|(_, gf)| gf.num == f.num));
            let (order, json, rule) = match gf {
                Some((idx, gf)) => {
                    if norm(&gf.proto_name) != norm(&f.rust_name) {
                        notes.push(format!(
                            "{full}.{}: Go proto name {} differs",
                            f.rust_name, gf.proto_name
                        ));
                    }
                    (idx, gf.json.clone(), gf.rule)
                }
                None => {
                    if g.is_some() && !slice {
                        notes.push(format!("{full}.{}: no Go field", f.rust_name));
                    }
                    (usize::MAX, lower_camel(&f.rust_name), "?")
                }
            };
            let card = match f.card {
                Card::One => "1",
                Card::Rep => "*",
                Card::Map => "{}",
            };
            let ty = if f.is_msg {
                let c = canonical(&f.ty);
                let (pkg, name) = split_full(&c);
                if pkg == m.package {
                    name.to_string()
                } else {
                    c
                }
            } else {
                f.ty.clone()
            };
            rows.push((
                order,
                f.num,
                format!("{} {json} {card} {ty} {rule}\n", f.num),
            ));
        }
        rows.sort();
        for (_, _, row) in rows {
            out.push_str(&row);
        }
    }
    (out, notes)
}

#[test]
#[ignore = "needs upstream Go sources; see the module docs"]
fn regenerate_schema_table() {
    let roots: Vec<PathBuf> = std::env::var("NAVARCH_PB_GO_SOURCES")
        .expect("NAVARCH_PB_GO_SOURCES")
        .split(':')
        .map(PathBuf::from)
        .collect();
    let revisions = std::env::var("NAVARCH_PB_GO_REVISIONS").unwrap_or_default();
    let src = k8s_pb_src();
    let (msgs, _) = parse_k8s_pb(&src);
    let go = parse_go_sources(&roots);
    let version = src
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut header = String::new();
    header.push_str("# Schema of the Kubernetes protobuf messages, for navarch-pb's decoder.\n");
    header
        .push_str("# Generated by tests/schema_table.rs (regenerate_schema_table); do not edit.\n");
    header.push_str(&format!("# Messages and field types: {version}.\n"));
    header.push_str("# JSON names and Go semantics: upstream Go sources");
    if !revisions.is_empty() {
        header.push_str(&format!(" ({revisions})"));
    }
    header.push_str(".\n");
    header.push_str(
        "# M <message> [slice]          slice: a Go named slice; its JSON is the items array\n",
    );
    header.push_str("# <num> <json> <card> <type> <rule>\n");
    header.push_str("#   card: 1 single, * repeated, {} map<string, type>\n");
    header.push_str("#   type: scalar, message in the same package, or full message name\n");
    header.push_str("#   rule: ptr (Go pointer), omit (Go omitempty value), keep (Go value),\n");
    header.push_str(
        "#         inline (embedded struct, json is -), skip (json:\"-\"), ? (no Go field)\n",
    );
    let (text, notes) = render(&msgs, &go, &header);
    for n in &notes {
        eprintln!("note: {n}");
    }
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE), text).unwrap();
}
