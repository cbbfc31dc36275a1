//! Python's text forms, byte for byte: `json.dumps`, `repr` of floats, strings and rows, and a
//! reader for the literals models write (`["a", 1.5]`).
//!
//! transformers' `tojson` is `json.dumps`; AgentBench shows query results as `str()` of the
//! fetched rows and reads final answers with `eval`. Matching them exactly is what makes
//! prompts equal the reference and scores equal AgentBench's.

use std::fmt::Write as _;

use serde_json::Value;

/// How Python's `json.dumps` lays out a value (the default is transformers' `tojson`:
/// one line, `ensure_ascii=False`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonStyle {
    /// Spaces per level; `None` is one line with `", "` and `": "` separators.
    pub indent: Option<usize>,
    /// Sort object keys.
    pub sort_keys: bool,
    /// Escape every non-ASCII character as `\uXXXX`.
    pub ensure_ascii: bool,
}

impl JsonStyle {
    /// Appends `value` at nesting `level` to `out`.
    pub fn write(&self, value: &Value, level: usize, out: &mut String) {
        let newline = |out: &mut String, level: usize| {
            if let Some(n) = self.indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * level));
            }
        };
        let item_sep = if self.indent.is_some() { "," } else { ", " };
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => out.push_str(&float_repr(f)),
                _ => out.push_str(&n.to_string()),
            },
            Value::String(s) => self.write_str(s, out),
            Value::Array(items) if items.is_empty() => out.push_str("[]"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    newline(out, level + 1);
                    self.write(item, level + 1, out);
                }
                newline(out, level);
                out.push(']');
            }
            Value::Object(map) if map.is_empty() => out.push_str("{}"),
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    newline(out, level + 1);
                    self.write_str(k, out);
                    out.push_str(": ");
                    self.write(v, level + 1, out);
                }
                newline(out, level);
                out.push('}');
            }
        }
    }

    fn write_str(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A float as Python's `repr` writes it: shortest round-trip digits, `1.0` for integral
/// values, exponent form (`1e-05`, `1e+16`) outside `1e-4 ≤ |x| < 1e16`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f == 0.0 || (-4..16).contains(&exp) {
        let s = f.to_string();
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// `repr(s)` of a Python `str`: single quotes unless the text has a `'` and no `"`;
/// backslash, the quote, `\n`, `\r`, `\t` and other control characters escaped.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A Python value as models write them in answers and SQL results come back.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list `[..]`.
    List(Vec<PyValue>),
    /// A tuple `(..)`.
    Tuple(Vec<PyValue>),
}

impl PyValue {
    /// `repr(value)`.
    pub fn repr(&self) -> String {
        match self {
            PyValue::None => "None".into(),
            PyValue::Bool(b) => if *b { "True" } else { "False" }.into(),
            PyValue::Int(i) => i.to_string(),
            PyValue::Float(f) => match float_repr(*f).as_str() {
                "NaN" => "nan".into(),
                "Infinity" => "inf".into(),
                "-Infinity" => "-inf".into(),
                s => s.into(),
            },
            PyValue::Str(s) => str_repr(s),
            PyValue::List(items) => {
                let inner: Vec<String> = items.iter().map(PyValue::repr).collect();
                format!("[{}]", inner.join(", "))
            }
            PyValue::Tuple(items) if items.len() == 1 => format!("({},)", items[0].repr()),
            PyValue::Tuple(items) => {
                let inner: Vec<String> = items.iter().map(PyValue::repr).collect();
                format!("({})", inner.join(", "))
            }
        }
    }

    /// Python's `float(value)`: numbers, and strings that spell one (surrounding whitespace,
    /// `_` between digits, `inf`, `nan`); `None` where Python raises.
    pub fn to_float(&self) -> Option<f64> {
        match self {
            PyValue::Bool(b) => Some(f64::from(u8::from(*b))),
            PyValue::Int(i) => Some(*i as f64),
            PyValue::Float(f) => Some(*f),
            PyValue::Str(s) => parse_float(s),
            _ => None,
        }
    }

    /// Python's `==` between two values (numbers compare across int/float/bool).
    pub fn py_eq(&self, other: &PyValue) -> bool {
        use PyValue::*;
        match (self, other) {
            (Int(_) | Float(_) | Bool(_), Int(_) | Float(_) | Bool(_)) => {
                self.to_float() == other.to_float()
            }
            (Str(a), Str(b)) => a == b,
            (None, None) => true,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.py_eq(y))
            }
            _ => false,
        }
    }

    /// Whether Python can hash the value (lists cannot).
    pub fn hashable(&self) -> bool {
        match self {
            PyValue::List(_) => false,
            PyValue::Tuple(items) => items.iter().all(PyValue::hashable),
            _ => true,
        }
    }
}

/// Python's `float(str)`.
fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        let v = if unsigned == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Some(if lower.starts_with('-') { -v } else { v });
    }
    // `_` only between digits; Rust's parser accepts none, Python's accepts those.
    let bytes = t.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let digit = |j: Option<&u8>| j.is_some_and(u8::is_ascii_digit);
            if !digit(i.checked_sub(1).and_then(|j| bytes.get(j))) || !digit(bytes.get(i + 1)) {
                return None;
            }
        }
    }
    let cleaned: String = t.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty()
        || cleaned.contains(|c: char| c.is_ascii_alphabetic() && !"eE".contains(c))
    {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

/// Reads a Python literal (what `eval` would give for the literals models write): strings
/// in either quote with escapes, numbers, `None`, `True`, `False`, lists and tuples.
pub fn parse_literal(text: &str) -> Option<PyValue> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    (p.i == p.s.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<PyValue> {
        match *self.s.get(self.i)? {
            b'[' => self.sequence(b']').map(PyValue::List),
            b'(' => {
                let start = self.i;
                let items = self.sequence(b')')?;
                // `(x)` is x itself; `(x,)` and `()` are tuples.
                let text = &self.s[start..self.i];
                let trailing_comma = text[..text.len() - 1]
                    .iter()
                    .rev()
                    .find(|c| !c.is_ascii_whitespace())
                    == Some(&b',');
                if items.len() == 1 && !trailing_comma {
                    items.into_iter().next()
                } else {
                    Some(PyValue::Tuple(items))
                }
            }
            b'\'' | b'"' => self.string().map(PyValue::Str),
            _ => self.atom(),
        }
    }

    fn sequence(&mut self, close: u8) -> Option<Vec<PyValue>> {
        self.depth += 1;
        if self.depth > 64 {
            return None;
        }
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.s.get(self.i) == Some(&close) {
                self.i += 1;
                break;
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.s.get(self.i)? {
                b',' => self.i += 1,
                c if *c == close => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(items)
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                c if c == quote => break,
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'0' => out.push(0),
                        b'\\' | b'\'' | b'"' => out.push(e),
                        b'\n' => {}
                        b'x' => {
                            let hex = std::str::from_utf8(self.s.get(self.i..self.i + 2)?).ok()?;
                            let ch = char::from(u8::from_str_radix(hex, 16).ok()?);
                            self.i += 2;
                            out.extend(ch.to_string().bytes());
                        }
                        b'u' => {
                            let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            self.i += 4;
                            out.extend(ch.to_string().bytes());
                        }
                        // Python keeps unknown escapes as written.
                        other => out.extend([b'\\', other]),
                    }
                }
                b'\n' => return None,
                c => out.push(c),
            }
        }
        String::from_utf8(out).ok()
    }

    fn atom(&mut self) -> Option<PyValue> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| !c.is_ascii_whitespace() && !b",)]".contains(c))
        {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        match word {
            "None" => return Some(PyValue::None),
            "True" => return Some(PyValue::Bool(true)),
            "False" => return Some(PyValue::Bool(false)),
            _ => {}
        }
        let digits = word.trim_start_matches(['+', '-']);
        if digits.is_empty() || !digits.as_bytes()[0].is_ascii_digit() && !digits.starts_with('.') {
            return None;
        }
        let plain: String = word.chars().filter(|c| *c != '_').collect();
        if let Ok(i) = plain.parse::<i64>() {
            return Some(PyValue::Int(i));
        }
        plain.parse::<f64>().ok().map(PyValue::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dumps(v: Value) -> String {
        let mut out = String::new();
        JsonStyle::default().write(&v, 0, &mut out);
        out
    }

    #[test]
    fn json_matches_python_dumps() {
        // Expected strings are Python 3's json.dumps(v, ensure_ascii=False).
        assert_eq!(
            dumps(json!({"b": [1, 2.5, null], "a": "é\"\n\u{1}", "c": {}})),
            r#"{"b": [1, 2.5, null], "a": "é\"\n\u0001", "c": {}}"#
        );
        assert_eq!(dumps(json!(1.0)), "1.0");
        assert_eq!(dumps(json!(1e-5)), "1e-05");
        assert_eq!(dumps(json!(1.5e16)), "1.5e+16");
        assert_eq!(dumps(json!(0.0001)), "0.0001");
        assert_eq!(dumps(json!(123456789012345.0)), "123456789012345.0");
        let mut out = String::new();
        JsonStyle {
            indent: Some(2),
            sort_keys: true,
            ensure_ascii: true,
        }
        .write(&json!({"b": [1], "a": "é😀"}), 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"a\": \"\\u00e9\\ud83d\\ude00\",\n  \"b\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn str_and_row_reprs_match_python() {
        // Expected strings are Python 3's repr.
        assert_eq!(str_repr("abc"), "'abc'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(str_repr("a\nb\\c\u{1}é"), "'a\\nb\\\\c\\x01é'");
        let rows = PyValue::List(vec![
            PyValue::Tuple(vec![PyValue::Str("Women +60kg Bronze".into())]),
            PyValue::Tuple(vec![PyValue::Int(3), PyValue::Float(2.5), PyValue::None]),
        ]);
        assert_eq!(rows.repr(), "[('Women +60kg Bronze',), (3, 2.5, None)]");
        assert_eq!(PyValue::Float(1e20).repr(), "1e+20");
    }

    #[test]
    fn literals_read_like_eval() {
        let v = parse_literal(r#" ["a", 'b\'c', 1, 2.5, None, (1,), (2), True]"#).unwrap();
        assert_eq!(
            v,
            PyValue::List(vec![
                PyValue::Str("a".into()),
                PyValue::Str("b'c".into()),
                PyValue::Int(1),
                PyValue::Float(2.5),
                PyValue::None,
                PyValue::Tuple(vec![PyValue::Int(1)]),
                PyValue::Int(2),
                PyValue::Bool(true),
            ])
        );
        assert_eq!(parse_literal("[]"), Some(PyValue::List(vec![])));
        for bad in ["[1,", "['a]", "[x]", "", "[1] 2", "1 2"] {
            assert_eq!(parse_literal(bad), None, "{bad}");
        }
        assert_eq!(parse_literal(&"[".repeat(100)), None);
    }

    #[test]
    fn float_conversion_and_equality_follow_python() {
        assert_eq!(PyValue::Str(" 1_000.5 ".into()).to_float(), Some(1000.5));
        assert_eq!(PyValue::Str("1__0".into()).to_float(), None);
        assert_eq!(PyValue::Str("abc".into()).to_float(), None);
        assert_eq!(
            PyValue::Str("-inf".into()).to_float(),
            Some(f64::NEG_INFINITY)
        );
        assert!(PyValue::Int(1).py_eq(&PyValue::Float(1.0)));
        assert!(!PyValue::Int(1).py_eq(&PyValue::Str("1".into())));
    }
}
