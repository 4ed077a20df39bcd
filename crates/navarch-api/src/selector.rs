//! Label and field selectors with the syntax, semantics and error messages of
//! `k8s.io/apimachinery/pkg/labels` and `pkg/fields`.
//!
//! Label selectors: comma-separated requirements, all of which must hold:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k`
//! (does not exist), `k>5`, `k<5` (integer comparisons). `!=` and `notin`
//! also match objects without the key. The empty selector matches everything.
//!
//! Field selectors: comma-separated `field=value`, `field==value`,
//! `field!=value`; `\,`, `\=` and `\\` escape those characters in values.

use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

// ---------------------------------------------------------------------------
// Validation of label keys and values (upstream `IsQualifiedName`,
// `IsValidLabelValue`), with upstream's messages.

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = msg.to_string();
    if examples.is_empty() {
        return format!("{s} (regex used for validation is '{fmt}')");
    }
    s.push_str(" (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(e);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain_syntax(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let ok_end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => {
                ok_end(f) && ok_end(l) && b.iter().all(|c| ok_end(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !is_dns1123_subdomain_syntax(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `validation.IsQualifiedName`: the messages for an invalid label key.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `validation.IsValidLabelValue`: the messages for an invalid label value.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Go's `%q` for a string (close enough: printable text unchanged, control
/// characters escaped).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `field.Invalid` error rendered as upstream's `Error()` does.
fn invalid(path: &str, bad_value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {bad_value}: {detail}")
}

/// An aggregate of errors rendered as upstream's `utilerrors.Aggregate`.
fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut uniq: Vec<String> = Vec::new();
    for e in errs {
        if !uniq.contains(&e) {
            uniq.push(e);
        }
    }
    match uniq.len() {
        0 => None,
        1 => uniq.pop(),
        _ => Some(format!("[{}]", uniq.join(", "))),
    }
}

// ---------------------------------------------------------------------------
// Label selectors.

/// A requirement's operator (upstream `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's string for the operator (`=`, `in`, `exists`, `gt`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One requirement of a label selector, validated on construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Upstream `labels.NewRequirement` (with an empty field path): checks
    /// the key, the number of values for the operator, and each value.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        let mut errs = Vec::new();
        let key_errs = label_key_errors(&key);
        if !key_errs.is_empty() {
            errs.push(invalid("key", &go_quote(&key), &key_errs.join("; ")));
        }
        let json_values = || serde_json::to_string(&values).unwrap_or_default();
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &json_values(),
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &json_values(),
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &json_values(),
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &json_values(),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            &go_quote(v),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let verrs = label_value_errors(v);
            if !verrs.is_empty() {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    &go_quote(v),
                    &verrs.join("; "),
                ));
            }
        }
        match aggregate(errs) {
            Some(msg) => Err(SelectorError(msg)),
            None => Ok(Requirement {
                key,
                operator,
                values,
            }),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn operator(&self) -> Operator {
        self.operator
    }
    /// The values in the order given (sorted for parsed selectors).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        let present = labels.is_some_and(|l| l.contains_key(&self.key));
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => present,
            Operator::DoesNotExist => !present,
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        let mut vals: Vec<&str> = self.values.iter().map(String::as_str).collect();
        vals.sort_unstable();
        f.write_str(&vals.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: requirements sorted by key, all of which must hold.
///
/// Besides the usual selectors there is a "nothing" selector (upstream
/// `labels.Nothing()`), which matches no object and renders as `""`; it is
/// what a null `metav1.LabelSelector` means where upstream uses
/// `LabelSelectorAsSelector` (see [`LabelSelector::from_label_selector_or_nothing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Upstream `labels.Parse`. The empty string (or only whitespace) is the
    /// selector that matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Parser::new(s).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The selector matching every object.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// The selector matching no object (upstream `labels.Nothing()`).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// A selector from requirements (sorted by key, stably).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// True for the match-everything selector (upstream `Empty()`; false for
    /// the nothing selector).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the match-nothing selector.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether an object with these labels (`metadata.labels`, absent =
    /// no labels) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Upstream `RequiresExactMatch`: the value `key` must have, if the
    /// selector pins it (`=`, `==`, or `in` with one value on the first
    /// requirement for that key).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }

    /// Converts a `metav1.LabelSelector` JSON object (`matchLabels`,
    /// `matchExpressions` with operators `In`, `NotIn`, `Exists`,
    /// `DoesNotExist`), as upstream `LabelSelectorAsSelector` does, except
    /// that a null or absent selector is taken as the empty one: both select
    /// everything. Use [`LabelSelector::from_label_selector_or_nothing`]
    /// where upstream treats a null selector as selecting nothing.
    pub fn from_label_selector(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(LabelSelector::everything()),
            Value::Object(o) => o,
            other => return err(format!("a label selector must be an object, got {other}")),
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let Some(val) = m[k].as_str() else {
                        return err(format!(
                            "matchLabels[{k}]: the value must be a string, got {}",
                            m[k]
                        ));
                    };
                    requirements.push(Requirement::new(
                        k.clone(),
                        Operator::Equals,
                        vec![val.to_string()],
                    )?);
                }
            }
            Some(other) => return err(format!("matchLabels must be an object, got {other}")),
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    let Some(e) = e.as_object() else {
                        return err(format!("matchExpressions[{i}] must be an object, got {e}"));
                    };
                    let key = match e.get("key") {
                        Some(Value::String(k)) => k.clone(),
                        None | Some(Value::Null) => String::new(),
                        Some(other) => {
                            return err(format!(
                                "matchExpressions[{i}].key must be a string, got {other}"
                            ))
                        }
                    };
                    let op_name = match e.get("operator") {
                        Some(Value::String(o)) => o.as_str(),
                        None | Some(Value::Null) => "",
                        Some(other) => {
                            return err(format!(
                                "matchExpressions[{i}].operator must be a string, got {other}"
                            ))
                        }
                    };
                    let op = match op_name {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        other => {
                            return err(format!(
                                "{} is not a valid label selector operator",
                                go_quote(other)
                            ))
                        }
                    };
                    let values = match e.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(vs)) => {
                            let mut out = Vec::with_capacity(vs.len());
                            for v in vs {
                                match v.as_str() {
                                    Some(s) => out.push(s.to_string()),
                                    None => {
                                        return err(format!(
                                            "matchExpressions[{i}].values must be strings, got {v}"
                                        ))
                                    }
                                }
                            }
                            out
                        }
                        Some(other) => {
                            return err(format!(
                                "matchExpressions[{i}].values must be a list, got {other}"
                            ))
                        }
                    };
                    requirements.push(Requirement::new(key, op, values)?);
                }
            }
            Some(other) => return err(format!("matchExpressions must be a list, got {other}")),
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// As [`LabelSelector::from_label_selector`], but a null or absent
    /// selector selects nothing (upstream `LabelSelectorAsSelector(nil)`),
    /// while `{}` still selects everything.
    pub fn from_label_selector_or_nothing(v: &Value) -> Result<Self, SelectorError> {
        if v.is_null() {
            Ok(LabelSelector::nothing())
        } else {
            LabelSelector::from_label_selector(v)
        }
    }
}

/// The canonical string (upstream `String()`): requirements sorted by key,
/// set values sorted; e.g. `app=web,env in (prod,qa),!legacy`. Used for
/// `Scale.status.selector`. The nothing selector renders as `""`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosePar,
    Comma,
    Bang,
    DoubleEq,
    Eq,
    Gt,
    Ident,
    In,
    Lt,
    NotEq,
    NotIn,
    OpenPar,
}

fn token_of(s: &[u8]) -> Option<Tok> {
    Some(match s {
        b")" => Tok::ClosePar,
        b"," => Tok::Comma,
        b"!" => Tok::Bang,
        b"==" => Tok::DoubleEq,
        b"=" => Tok::Eq,
        b">" => Tok::Gt,
        b"in" => Tok::In,
        b"<" => Tok::Lt,
        b"!=" => Tok::NotEq,
        b"notin" => Tok::NotIn,
        b"(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Byte lexer with upstream's quirks (a NUL byte reads as end of input).
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        if self.pos < self.s.len() {
            self.pos += 1;
            self.s[self.pos - 1]
        } else {
            0
        }
    }
    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }
    fn lex(&mut self) -> (Tok, String) {
        let mut c = self.read();
        while is_ws(c) {
            c = self.read();
        }
        if c == 0 {
            return (Tok::End, String::new());
        }
        self.unread();
        if is_special(c) {
            self.special()
        } else {
            self.ident_or_keyword()
        }
    }
    fn ident_or_keyword(&mut self) -> (Tok, String) {
        let mut buf = Vec::new();
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if is_special(c) || is_ws(c) {
                self.unread();
                break;
            }
            buf.push(c);
        }
        let lit = String::from_utf8_lossy(&buf).into_owned();
        (token_of(&buf).unwrap_or(Tok::Ident), lit)
    }
    fn special(&mut self) -> (Tok, String) {
        let mut buf = Vec::new();
        let mut last: Option<(Tok, usize)> = None;
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if !is_special(c) {
                self.unread();
                break;
            }
            buf.push(c);
            if let Some(t) = token_of(&buf) {
                last = Some((t, buf.len()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        match last {
            Some((t, n)) => (t, String::from_utf8_lossy(&buf[..n]).into_owned()),
            None => (
                Tok::Error,
                format!(
                    "error expected: keyword found '{}'",
                    String::from_utf8_lossy(&buf)
                ),
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn new(s: &str) -> Self {
        let mut lexer = Lexer {
            s: s.as_bytes(),
            pos: 0,
        };
        let mut items = Vec::new();
        loop {
            let (t, lit) = lexer.lex();
            items.push((t, lit));
            if t == Tok::End {
                break;
            }
        }
        Parser { items, pos: 0 }
    }

    fn item(&self, i: usize, ctx: Ctx) -> (Tok, String) {
        let (t, lit) = self.items[i.min(self.items.len() - 1)].clone();
        let t = match (ctx, t) {
            (Ctx::Values, Tok::In | Tok::NotIn) => Tok::Ident,
            _ => t,
        };
        (t, lit)
    }
    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        self.item(self.pos, ctx)
    }
    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let it = self.item(self.pos, ctx);
        if self.pos < self.items.len() - 1 {
            self.pos += 1;
        }
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Ctx::Values);
            match t {
                Tok::Ident | Tok::Bang => {
                    let r = self.requirement().map_err(|e| {
                        SelectorError(format!("unable to parse requirement: {}", e.0))
                    })?;
                    reqs.push(r);
                    let (t, lit) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, lit2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Ident && t2 != Tok::Bang {
                                return err(format!(
                                    "found '{lit2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return err(format!("found '{lit}', expected: ',' or 'end of string'"))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, op) = self.key_and_inferred_operator()?;
        if let Some(op) = op {
            return Requirement::new(key, op, Vec::new());
        }
        let op = self.operator()?;
        let mut values = match op {
            Operator::In | Operator::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        values.sort();
        values.dedup();
        Requirement::new(key, op, values)
    }

    fn key_and_inferred_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let mut op = None;
        let (mut t, mut lit) = self.consume(Ctx::Values);
        if t == Tok::Bang {
            op = Some(Operator::DoesNotExist);
            (t, lit) = self.consume(Ctx::Values);
        }
        if t != Tok::Ident {
            return err(format!("found '{lit}', expected: identifier"));
        }
        let key_errs = label_key_errors(&lit);
        if !key_errs.is_empty() {
            return err(invalid("<nil>", &go_quote(&lit), &key_errs.join("; ")));
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Tok::End || next == Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn operator(&mut self) -> Result<Operator, SelectorError> {
        let (t, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match t {
            Tok::In => Operator::In,
            Tok::Eq => Operator::Equals,
            Tok::DoubleEq => Operator::DoubleEquals,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEq => Operator::NotEquals,
            _ => return err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn set_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (t, lit) = self.consume(Ctx::Values);
        if t != Tok::OpenPar {
            return err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(Ctx::Values);
        match t {
            Tok::Ident | Tok::Comma => {
                let s = self.identifiers()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Tok::ClosePar {
                    return err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosePar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// The inside of `( ... )`; leaves the closing parenthesis to the caller.
    fn identifiers(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (t, lit) = self.consume(Ctx::Values);
            match t {
                Tok::Ident => {
                    s.push(lit);
                    let (t2, lit2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosePar => return Ok(s),
                        _ => return err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosePar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Tok::Comma {
                        s.push(String::new());
                    }
                }
                _ => return err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (t, _) = self.lookahead(Ctx::Values);
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(Ctx::Values);
        if t == Tok::Ident {
            Ok(vec![lit])
        } else {
            err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------
// Field selectors.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Eq,
    /// `!=`.
    NotEq,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    /// The unescaped value.
    pub value: String,
}

impl FieldRequirement {
    pub fn matches(&self, actual: &str) -> bool {
        match self.op {
            FieldOp::Eq => actual == self.value,
            FieldOp::NotEq => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FieldOp::Eq => "=",
            FieldOp::NotEq => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A parsed field selector: terms (sorted as upstream sorts them) that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Upstream `fields.EscapeValue`: `\` → `\\`, `,` → `\,`, `=` → `\=`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`.
pub fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return err("invalid field selector: invalid escape sequence: \\");
    }
    Ok(out)
}

/// Splits on commas not preceded by an escaping backslash.
fn split_field_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The first operator (`!=`, `==`, `=`, tried in that order at each
/// character) splits a term.
fn split_field_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, fop) in [
            ("!=", FieldOp::NotEq),
            ("==", FieldOp::Eq),
            ("=", FieldOp::Eq),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], fop, rhs));
            }
        }
    }
    None
}

impl FieldSelector {
    /// Upstream `fields.ParseSelector`. Field names are not checked here
    /// (each resource supports its own set).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_field_terms(s);
        parts.sort_unstable();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_field_term(part) else {
                return err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            requirements.push(FieldRequirement {
                field: lhs.to_string(),
                op,
                value: unescape_field_value(rhs)?,
            });
        }
        Ok(FieldSelector { requirements })
    }
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
    /// Whether an object is selected; `get(field)` returns the object's value
    /// of a field label, `None` counting as the empty string.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(get(&r.field).as_deref().unwrap_or("")))
    }
    /// The value `field` must equal, if a `field=value` term pins it.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Eq)
            .map(|r| r.value.as_str())
    }
}

/// The canonical string: terms joined by `,`, values escaped.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parse_and_render_table() {
        // (input, canonical rendering)
        let cases = [
            ("", ""),
            ("   ", ""),
            ("x=a", "x=a"),
            ("x==a", "x==a"),
            ("x!=a", "x!=a"),
            ("x = a", "x=a"),
            ("x=", "x="),
            ("x!=", "x!="),
            ("x", "x"),
            ("!x", "!x"),
            (" ! x ", "!x"),
            ("x>1", "x>1"),
            ("x<1", "x<1"),
            ("x in (b,a)", "x in (a,b)"),
            ("x in(a)", "x in (a)"),
            ("x notin (a, b ,c)", "x notin (a,b,c)"),
            ("x in ()", "x in ()"),
            ("x in (,a)", "x in (,a)"),
            ("x in (a,)", "x in (,a)"),
            ("x in (a,,b)", "x in (,a,b)"),
            ("x in (a,a)", "x in (a)"),
            ("z=1,a=2,m", "a=2,m,z=1"),
            ("example.com/app=web", "example.com/app=web"),
            ("in=notin", "in=notin"),
            ("notin in (in,notin)", "notin in (in,notin)"),
            ("x=a,x!=b", "x=a,x!=b"),
            ("a.b-c_D=E_f.g-h", "a.b-c_D=E_f.g-h"),
        ];
        for (input, want) in cases {
            let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.to_string(), *want, "{input:?}");
        }
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_table() {
        let cases: &[(&str, &str)] = &[
            ("x=a b", "found 'b', expected: ',' or 'end of string'"),
            ("x=a,", "found '', expected: identifier after ','"),
            (",x", "found ',', expected: !, identifier, or 'end of string'"),
            ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
            ("x in a", "unable to parse requirement: found 'a' expected: '('"),
            ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("x in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
            ("x in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
            ("x=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("x>a", "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"),
            ("x<", "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer"),
            ("x=a$", "unable to parse requirement: values[0][x]: Invalid value: \"a$\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            ("-x=a", "unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist of alphanumeric characters"),
            ("a/b/c", "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
            ("/a", "unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty"),
            ("Example.com/a", "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            ("a/", "unable to parse requirement: <nil>: Invalid value: \"a/\": name part must be non-empty; name part must consist"),
        ];
        for (input, want) in cases {
            let e = LabelSelector::parse(input).expect_err(input).0;
            assert!(e.starts_with(want), "{input:?}:\n got  {e}\n want {want}");
        }
        let long = "a".repeat(64);
        let e = LabelSelector::parse(&long).unwrap_err().0;
        assert!(
            e.contains("name part must be no more than 63 characters"),
            "{e}"
        );
        let e = LabelSelector::parse(&format!("x={long}")).unwrap_err().0;
        assert!(
            e.contains("values[0][x]: Invalid value: \"aaa")
                && e.contains("must be no more than 63 characters"),
            "{e}"
        );
        // A prefix of exactly 253 characters is allowed, 254 is not.
        let prefix = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(prefix.len(), 253);
        assert!(LabelSelector::parse(&format!("{prefix}/k")).is_ok());
        let e = LabelSelector::parse(&format!("{prefix}d/k")).unwrap_err().0;
        assert!(
            e.contains("prefix part must be no more than 253 characters"),
            "{e}"
        );
    }

    #[test]
    fn matching_table() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "7", "empty": ""}));
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("missing=x", false),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("empty", true),
            ("empty=", true),
            ("empty in ()", true),
            ("missing=", false),
            ("n>5", true),
            ("n>7", false),
            ("n<8", true),
            ("n<7", false),
            ("app>1", false),
            ("missing<1", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app=web, !missing, n>0", true),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(Some(&l)), *want, "{sel:?}");
        }
        // No labels at all.
        assert!(LabelSelector::parse("a!=b").unwrap().matches(None));
        assert!(LabelSelector::parse("!a").unwrap().matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
        assert!(LabelSelector::parse("").unwrap().matches(None));
    }

    #[test]
    fn nul_byte_ends_input_like_upstream() {
        assert_eq!(
            LabelSelector::parse("a=b, \0c=d").unwrap_err().0,
            "found '', expected: identifier after ','"
        );
        // Right after a symbol or an identifier the NUL is swallowed.
        assert_eq!(
            LabelSelector::parse("a=b,\0c=d").unwrap().to_string(),
            "a=b,c=d"
        );
        assert_eq!(LabelSelector::parse("a\0").unwrap().to_string(), "a");
    }

    #[test]
    fn exact_match() {
        let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(s.requires_exact_match("a"), Some("1"));
        assert_eq!(s.requires_exact_match("b"), Some("2"));
        assert_eq!(s.requires_exact_match("c"), None);
        assert_eq!(s.requires_exact_match("d"), None);
        assert_eq!(s.requires_exact_match("e"), None);
    }

    #[test]
    fn from_label_selector_cases() {
        let s = LabelSelector::from_label_selector(&json!({
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["qa", "prod"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "c", "operator": "NotIn", "values": ["x"]},
                {"key": "d", "operator": "Exists", "values": []},
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "a=1,b=2,c notin (x),d,env in (prod,qa),!legacy"
        );
        assert!(s.matches(Some(&labels(
            json!({"a": "1", "b": "2", "d": "", "env": "qa"})
        ))));
        assert!(!s.matches(Some(&labels(
            json!({"a": "1", "b": "2", "d": "", "env": "qa", "legacy": "y"})
        ))));

        // Empty and null select everything; the "or nothing" variant maps null to nothing.
        for v in [
            json!({}),
            json!({"matchLabels": {}}),
            json!({"matchExpressions": []}),
            Value::Null,
        ] {
            let s = LabelSelector::from_label_selector(&v).unwrap();
            assert!(s.is_empty() && s.matches(None), "{v}");
        }
        let n = LabelSelector::from_label_selector_or_nothing(&Value::Null).unwrap();
        assert!(n.is_nothing() && !n.is_empty() && !n.matches(None) && n.to_string().is_empty());
        assert!(LabelSelector::from_label_selector_or_nothing(&json!({}))
            .unwrap()
            .is_empty());

        let bad: &[(Value, &str)] = &[
            (json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}), "\"Equals\" is not a valid label selector operator"),
            (json!({"matchExpressions": [{"key": "a", "operator": "In"}]}), "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"),
            (json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}), "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"),
            (json!({"matchLabels": {"app": "a b"}}), "values[0][app]: Invalid value: \"a b\": a valid label must be an empty string"),
            (json!({"matchLabels": {"a b": "x"}}), "key: Invalid value: \"a b\": name part must consist"),
            (json!({"matchLabels": {"a": 1}}), "matchLabels[a]: the value must be a string"),
            (json!({"matchLabels": []}), "matchLabels must be an object"),
            (json!({"matchExpressions": {}}), "matchExpressions must be a list"),
            (json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}), "matchExpressions[0].values must be strings"),
            (json!("x"), "a label selector must be an object"),
        ];
        for (v, want) in bad {
            let e = LabelSelector::from_label_selector(v).unwrap_err().0;
            assert!(e.starts_with(want), "{v}:\n got  {e}\n want {want}");
        }
        // Key and value errors aggregate like upstream.
        let e = LabelSelector::from_label_selector(&json!({"matchLabels": {"-a": "b c"}}))
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("[key: Invalid value: \"-a\"")
                && e.contains(", values[0][-a]: Invalid value: \"b c\""),
            "{e}"
        );
    }

    #[test]
    fn field_selector_table() {
        type Case<'a> = (&'a str, &'a [(&'a str, FieldOp, &'a str)], &'a str);
        let ok: &[Case] = &[
            ("", &[], ""),
            (
                "metadata.name=x",
                &[("metadata.name", FieldOp::Eq, "x")],
                "metadata.name=x",
            ),
            (
                "metadata.name==x",
                &[("metadata.name", FieldOp::Eq, "x")],
                "metadata.name=x",
            ),
            (
                "spec.nodeName!=",
                &[("spec.nodeName", FieldOp::NotEq, "")],
                "spec.nodeName!=",
            ),
            (
                "status.phase=Running,metadata.namespace!=kube-system",
                &[
                    ("metadata.namespace", FieldOp::NotEq, "kube-system"),
                    ("status.phase", FieldOp::Eq, "Running"),
                ],
                "metadata.namespace!=kube-system,status.phase=Running",
            ),
            (
                "a=b\\,c\\=d\\\\",
                &[("a", FieldOp::Eq, "b,c=d\\")],
                "a=b\\,c\\=d\\\\",
            ),
            ("a=b,,", &[("a", FieldOp::Eq, "b")], "a=b"),
        ];
        for (input, reqs, rendered) in ok {
            let s = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let got: Vec<(&str, FieldOp, &str)> = s
                .requirements
                .iter()
                .map(|r| (r.field.as_str(), r.op, r.value.as_str()))
                .collect();
            assert_eq!(got, *reqs, "{input:?}");
            assert_eq!(s.to_string(), *rendered);
        }
        let bad: &[(&str, &str)] = &[
            ("foo", "invalid selector: 'foo'; can't understand 'foo'"),
            (
                "a=b,foo",
                "invalid selector: 'a=b,foo'; can't understand 'foo'",
            ),
            (
                "a!==b",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=b\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (input, want) in bad {
            assert_eq!(
                FieldSelector::parse(input).unwrap_err().0,
                *want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn field_selector_matching() {
        let s = FieldSelector::parse("spec.nodeName=,status.phase!=Failed").unwrap();
        let get = |phase: &'static str, node: Option<&'static str>| {
            move |f: &str| match f {
                "status.phase" => Some(phase.to_string()),
                "spec.nodeName" => node.map(str::to_string),
                _ => None,
            }
        };
        assert!(s.matches(get("Pending", None)));
        assert!(!s.matches(get("Pending", Some("n1"))));
        assert!(!s.matches(get("Failed", None)));
        assert_eq!(
            FieldSelector::parse("metadata.name=a,metadata.name!=b")
                .unwrap()
                .exact("metadata.name"),
            Some("a")
        );
        assert_eq!(
            FieldSelector::parse("metadata.name!=b")
                .unwrap()
                .exact("metadata.name"),
            None
        );
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9]",
            "[A-Za-z0-9][-A-Za-z0-9_.]{0,8}[A-Za-z0-9]",
            Just("in".to_string()),
            Just("notin".to_string()),
        ]
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z0-9]([-a-z0-9]{0,3}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"),
            name_strategy(),
        )
            .prop_map(|(p, n)| match p {
                Some(p) => format!("{p}/{n}"),
                None => n,
            })
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name_strategy()]
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let ops = prop_oneof![
            Just(Operator::Equals),
            Just(Operator::DoubleEquals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            Just(Operator::GreaterThan),
            Just(Operator::LessThan),
        ];
        (
            key_strategy(),
            ops,
            proptest::collection::vec(value_strategy(), 1..4),
            "[0-9]{1,6}",
        )
            .prop_map(|(k, op, mut vals, num)| {
                let vals = match op {
                    Operator::Exists | Operator::DoesNotExist => vec![],
                    Operator::GreaterThan | Operator::LessThan => vec![num],
                    Operator::In | Operator::NotIn => {
                        vals.sort();
                        vals.dedup();
                        vals
                    }
                    _ => vec![vals.swap_remove(0)],
                };
                Requirement::new(k, op, vals).expect("generated requirement is valid")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn label_selector_round_trips(reqs in proptest::collection::vec(requirement_strategy(), 0..5)) {
            let sel = LabelSelector::from_requirements(reqs);
            let text = sel.to_string();
            let back = LabelSelector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(&back, &sel, "{}", text);
        }

        #[test]
        fn label_parser_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn label_parser_never_panics_on_token_soup(s in "[a-z!=<>(), /.\\-]{0,30}") {
            if let Ok(sel) = LabelSelector::parse(&s) {
                // Whatever parses renders to something that parses to the same.
                prop_assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel);
            }
        }

        #[test]
        fn field_selector_round_trips(terms in proptest::collection::vec(("[a-z.]{1,8}", any::<bool>(), "[a-z,=\\\\ ]{0,6}"), 0..4)) {
            let mut reqs: Vec<FieldRequirement> = terms.into_iter().map(|(f, ne, v)| FieldRequirement {
                field: f, op: if ne { FieldOp::NotEq } else { FieldOp::Eq }, value: v,
            }).collect();
            reqs.sort_by_key(|r| r.to_string());
            let sel = FieldSelector { requirements: reqs };
            let back = FieldSelector::parse(&sel.to_string()).unwrap();
            prop_assert_eq!(back, sel);
        }

        #[test]
        fn field_parser_never_panics(s in "\\PC{0,40}") {
            let _ = FieldSelector::parse(&s);
        }
    }
}
