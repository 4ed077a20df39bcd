//! The embedded schema table (`data/schema.txt`), parsed once on first use.
//!
//! The table is generated (see `tests/schema_table.rs`): message and field
//! structure from the `k8s-pb` crate's prost sources, JSON names and Go
//! marshalling rules (pointer, `omitempty`, inlining) from upstream's Go types.

use std::collections::HashMap;
use std::sync::OnceLock;

const TEXT: &str = include_str!("../data/schema.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    One,
    Rep,
    Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    Msg(usize),
}

/// How upstream's Go JSON marshalling treats the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// A Go pointer: on the wire only when set, so whatever is there is emitted.
    Ptr,
    /// A Go value with `omitempty`: a zero value is dropped.
    Omit,
    /// A Go value without `omitempty`: emitted even when zero.
    Keep,
    /// An embedded struct: its JSON keys are merged into the parent.
    Inline,
    /// `json:"-"`: never emitted.
    Skip,
    /// No Go field known: empty strings are dropped, other values emitted.
    Unknown,
}

impl Rule {
    /// Whether a zero value (0, false, "", empty bytes) is dropped.
    pub(crate) fn drops_zero(self, ty: Ty) -> bool {
        match self {
            Rule::Omit => true,
            Rule::Unknown => matches!(ty, Ty::Str | Ty::Bytes),
            _ => false,
        }
    }
}

/// Message types whose JSON form is not their protobuf structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// meta/v1 Time: RFC 3339 at second precision; zero is null.
    Time,
    /// meta/v1 MicroTime: RFC 3339 with microseconds; zero is null.
    MicroTime,
    /// meta/v1 Duration: Go's duration string.
    Duration,
    /// api/resource Quantity: its string.
    Quantity,
    /// util/intstr IntOrString: a number or a string.
    IntOrString,
    /// runtime RawExtension: the embedded object.
    RawExtension,
    /// meta/v1 FieldsV1, apiextensions JSON: raw JSON bytes.
    RawJson,
    /// apiextensions JSONSchemaPropsOrArray.
    SchemaOrArray,
    /// apiextensions JSONSchemaPropsOrBool.
    SchemaOrBool,
    /// apiextensions JSONSchemaPropsOrStringArray.
    SchemaOrStringArray,
}

fn special_for(name: &str) -> Special {
    const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
    const APIEXT: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.";
    if let Some(n) = name.strip_prefix(META) {
        return match n {
            "Time" => Special::Time,
            "MicroTime" => Special::MicroTime,
            "Duration" => Special::Duration,
            "FieldsV1" => Special::RawJson,
            _ => Special::None,
        };
    }
    if let Some(rest) = name.strip_prefix(APIEXT) {
        let n = rest.split_once('.').map_or("", |(_, n)| n);
        return match n {
            "JSON" => Special::RawJson,
            "JSONSchemaPropsOrArray" => Special::SchemaOrArray,
            "JSONSchemaPropsOrBool" => Special::SchemaOrBool,
            "JSONSchemaPropsOrStringArray" => Special::SchemaOrStringArray,
            _ => Special::None,
        };
    }
    match name {
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => Special::Quantity,
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => Special::RawExtension,
        _ => Special::None,
    }
}

#[derive(Debug)]
pub(crate) struct Field {
    pub num: u32,
    pub json: &'static str,
    pub card: Card,
    pub ty: Ty,
    pub rule: Rule,
}

#[derive(Debug)]
pub(crate) struct Msg {
    pub name: &'static str,
    /// A Go named slice type (`type ExtraValue []string`): JSON is the items array.
    pub slice: bool,
    pub special: Special,
    /// In upstream's JSON (Go struct) order.
    pub fields: Vec<Field>,
    /// (field number, index into `fields`), sorted by number.
    by_num: Vec<(u32, usize)>,
}

impl Msg {
    pub(crate) fn field_index(&self, num: u32) -> Option<usize> {
        self.by_num
            .binary_search_by_key(&num, |(n, _)| *n)
            .ok()
            .map(|i| self.by_num[i].1)
    }
}

#[derive(Debug)]
pub(crate) struct Schema {
    pub msgs: Vec<Msg>,
    index: HashMap<&'static str, usize>,
}

impl Schema {
    pub(crate) fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| Schema::parse(TEXT))
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Parses the table. The table is generated and checked by tests, so a
    /// malformed line is a build defect and panics with its line number.
    fn parse(text: &'static str) -> Schema {
        let lines = || {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        };
        let mut msgs = Vec::new();
        let mut index = HashMap::new();
        for (_, line) in lines() {
            if let Some(rest) = line.strip_prefix("M ") {
                let mut words = rest.split(' ');
                let name = words.next().unwrap_or_default();
                let slice = words.next() == Some("slice");
                index.insert(name, msgs.len());
                msgs.push(Msg {
                    name,
                    slice,
                    special: special_for(name),
                    fields: Vec::new(),
                    by_num: Vec::new(),
                });
            }
        }
        let mut current: Option<usize> = None;
        for (n, line) in lines() {
            let bad = |what: &str| -> ! { panic!("data/schema.txt:{}: {what}: {line}", n + 1) };
            if let Some(rest) = line.strip_prefix("M ") {
                let name = rest.split(' ').next().unwrap_or_default();
                current = index.get(name).copied();
                continue;
            }
            let Some(cur) = current else {
                bad("field before any message")
            };
            let cols: Vec<&'static str> = line.split(' ').collect();
            let [num, json, card, ty, rule] = cols[..] else {
                bad("expected 5 columns")
            };
            let num: u32 = num.parse().unwrap_or_else(|_| bad("field number"));
            let card = match card {
                "1" => Card::One,
                "*" => Card::Rep,
                "{}" => Card::Map,
                _ => bad("cardinality"),
            };
            let ty = match ty {
                "string" => Ty::Str,
                "bytes" => Ty::Bytes,
                "bool" => Ty::Bool,
                "int32" => Ty::I32,
                "int64" => Ty::I64,
                "double" => Ty::F64,
                name => {
                    let found = if name.contains('.') {
                        index.get(name).copied()
                    } else {
                        let pkg = msgs[cur].name.rsplit_once('.').map_or("", |(p, _)| p);
                        index.get(format!("{pkg}.{name}").as_str()).copied()
                    };
                    Ty::Msg(found.unwrap_or_else(|| bad("unknown message type")))
                }
            };
            let rule = match rule {
                "ptr" => Rule::Ptr,
                "omit" => Rule::Omit,
                "keep" => Rule::Keep,
                "inline" => Rule::Inline,
                "skip" => Rule::Skip,
                "?" => Rule::Unknown,
                _ => bad("rule"),
            };
            let msg = &mut msgs[cur];
            msg.by_num.push((num, msg.fields.len()));
            msg.fields.push(Field {
                num,
                json,
                card,
                ty,
                rule,
            });
        }
        for m in &mut msgs {
            m.by_num.sort_unstable();
        }
        Schema { msgs, index }
    }
}

/// API group → protobuf package prefix (the version is appended).
const GROUPS: &[(&str, &str)] = &[
    ("", "k8s.io.api.core"),
    ("admission.k8s.io", "k8s.io.api.admission"),
    (
        "admissionregistration.k8s.io",
        "k8s.io.api.admissionregistration",
    ),
    ("apidiscovery.k8s.io", "k8s.io.api.apidiscovery"),
    ("apps", "k8s.io.api.apps"),
    ("authentication.k8s.io", "k8s.io.api.authentication"),
    ("authorization.k8s.io", "k8s.io.api.authorization"),
    ("autoscaling", "k8s.io.api.autoscaling"),
    ("batch", "k8s.io.api.batch"),
    ("certificates.k8s.io", "k8s.io.api.certificates"),
    ("coordination.k8s.io", "k8s.io.api.coordination"),
    ("discovery.k8s.io", "k8s.io.api.discovery"),
    ("events.k8s.io", "k8s.io.api.events"),
    ("extensions", "k8s.io.api.extensions"),
    ("flowcontrol.apiserver.k8s.io", "k8s.io.api.flowcontrol"),
    ("imagepolicy.k8s.io", "k8s.io.api.imagepolicy"),
    ("internal.apiserver.k8s.io", "k8s.io.api.apiserverinternal"),
    ("networking.k8s.io", "k8s.io.api.networking"),
    ("node.k8s.io", "k8s.io.api.node"),
    ("policy", "k8s.io.api.policy"),
    ("rbac.authorization.k8s.io", "k8s.io.api.rbac"),
    ("resource.k8s.io", "k8s.io.api.resource"),
    ("scheduling.k8s.io", "k8s.io.api.scheduling"),
    ("storage.k8s.io", "k8s.io.api.storage"),
    ("storagemigration.k8s.io", "k8s.io.api.storagemigration"),
    (
        "apiextensions.k8s.io",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions",
    ),
    (
        "apiregistration.k8s.io",
        "k8s.io.kube_aggregator.pkg.apis.apiregistration",
    ),
    ("metrics.k8s.io", "k8s.io.metrics.pkg.apis.metrics"),
    (
        "custom.metrics.k8s.io",
        "k8s.io.metrics.pkg.apis.custom_metrics",
    ),
    (
        "external.metrics.k8s.io",
        "k8s.io.metrics.pkg.apis.external_metrics",
    ),
    ("meta.k8s.io", "k8s.io.apimachinery.pkg.apis.meta"),
];

/// meta/v1 kinds that every group version serves (options bodies, Status...).
const META_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "UpdateOptions",
    "Status",
    "WatchEvent",
    "PartialObjectMetadata",
    "PartialObjectMetadataList",
    "Table",
    "TableOptions",
];

/// The schema index of the message for an envelope's apiVersion and kind.
pub(crate) fn message_for(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if version.is_empty() || kind.is_empty() {
        return None;
    }
    let schema = Schema::get();
    if let Some((_, pkg)) = GROUPS.iter().find(|(g, _)| *g == group) {
        if let Some(i) = schema.lookup(&format!("{pkg}.{version}.{kind}")) {
            return Some(i);
        }
    }
    if META_KINDS.contains(&kind) {
        return schema.lookup(&format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"));
    }
    None
}
