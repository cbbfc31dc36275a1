//! DB Bench answer scoring, as AgentBench's `calculate_overall` does it.
//!
//! The text after `Final Answer:` is read as a Python literal and turned into a list
//! (`list(eval(text))`; anything that fails becomes `[text]`). One value against one label:
//! equal as floats when both convert, else equal as values. Several: equal as sets.

use serde_json::Value;

use crate::python::{PyValue, parse_literal};

/// A label value (JSON) as the Python value AgentBench compares with.
fn label_value(v: &Value) -> PyValue {
    match v {
        Value::Null => PyValue::None,
        Value::Bool(b) => PyValue::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || PyValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            PyValue::Int,
        ),
        Value::String(s) => PyValue::Str(s.clone()),
        Value::Array(items) => PyValue::List(items.iter().map(label_value).collect()),
        Value::Object(_) => PyValue::Str(v.to_string()),
    }
}

/// `list(eval(raw))`, or `[raw]` where Python would raise.
pub fn answer_list(raw: &str) -> Vec<PyValue> {
    match parse_literal(raw) {
        Some(PyValue::List(items) | PyValue::Tuple(items)) => items,
        Some(PyValue::Str(s)) => s.chars().map(|c| PyValue::Str(c.to_string())).collect(),
        _ => vec![PyValue::Str(raw.to_string())],
    }
}

/// Python's `set(a) == set(b)`; `false` where building a set would raise.
fn set_eq(a: &[PyValue], b: &[PyValue]) -> bool {
    if !a.iter().chain(b).all(PyValue::hashable) {
        return false;
    }
    let contains = |set: &[PyValue], v: &PyValue| set.iter().any(|x| x.py_eq(v));
    a.iter().all(|v| contains(b, v)) && b.iter().all(|v| contains(a, v))
}

/// Whether a final answer (the raw text after `Final Answer:`) matches the label list.
pub fn answer_matches(raw: &str, label: &[Value]) -> bool {
    let answer = answer_list(raw);
    let label: Vec<PyValue> = label.iter().map(label_value).collect();
    if answer.len() == 1 && label.len() == 1 {
        return match (answer[0].to_float(), label[0].to_float()) {
            (Some(a), Some(b)) => a == b,
            _ => answer[0].py_eq(&label[0]),
        };
    }
    set_eq(&answer, &label)
}

/// Jaccard overlap of a final answer's values with the label's, in [0, 1] (partial credit for
/// a wrong answer: values compare as numbers where both convert, else as Python values).
pub fn answer_overlap(raw: &str, label: &[Value]) -> f64 {
    let answer = answer_list(raw);
    let label: Vec<PyValue> = label.iter().map(label_value).collect();
    let same = |a: &PyValue, b: &PyValue| match (a.to_float(), b.to_float()) {
        (Some(x), Some(y)) => x == y,
        _ => a.py_eq(b),
    };
    let mut distinct: Vec<&PyValue> = Vec::new();
    for v in answer.iter().chain(&label) {
        if !distinct.iter().any(|d| same(d, v)) {
            distinct.push(v);
        }
    }
    if distinct.is_empty() {
        return 0.0;
    }
    let both = distinct
        .iter()
        .filter(|d| answer.iter().any(|a| same(a, d)) && label.iter().any(|l| same(l, d)))
        .count();
    both as f64 / distinct.len() as f64
}

/// Python's `str(value)` of a JSON-loaded value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => label_value(other).repr(),
    }
}

/// Python's `s.strip().strip("'\"")`.
fn strip_quotes(s: &str) -> &str {
    s.trim().trim_matches(['\'', '"'])
}

/// `_normalize_special_values` of AgentBench's function-calling scorer: percent signs and
/// thousands separators dropped, none/null/nan/inf/empty read as `"0"`.
fn normalize(s: &str) -> String {
    let v = s.trim();
    if let Some(p) = v.strip_suffix('%') {
        return p.trim().to_string();
    }
    let v = if v.contains(',') && !v.starts_with('[') && !v.ends_with(']') {
        v.replace(',', "")
    } else {
        v.to_string()
    };
    match v.to_lowercase().as_str() {
        "none" | "null" | "undefined" | "nan" | "inf" | "infinity" | "-inf" | "-infinity" | "" => {
            "0".into()
        }
        _ => v,
    }
}

/// One item of an evaluated list: a one-value tuple stands for its value.
fn item_text(item: &PyValue) -> String {
    let inner = match item {
        PyValue::Tuple(t) if t.len() == 1 => &t[0],
        other => other,
    };
    let text = match inner {
        PyValue::Str(s) => s.clone(),
        other => other.repr(),
    };
    normalize(strip_quotes(&text))
}

/// `_clean_answer` of AgentBench's function-calling scorer; `None` where it returns nothing.
fn clean_answer(answer: &Value) -> Option<Vec<String>> {
    let text = match answer {
        Value::Null => return Some(vec!["0".into()]),
        Value::Array(items) => {
            return Some(
                items
                    .iter()
                    .map(|i| normalize(strip_quotes(&py_str(i))))
                    .collect(),
            );
        }
        Value::String(s) => s.as_str(),
        other => return Some(vec![normalize(strip_quotes(&py_str(other)))]),
    };
    // A MySQL result rendered as text, `[('v',), ...]`.
    if text.starts_with('[') && text.ends_with(']') {
        if let Some(PyValue::List(rows)) = parse_literal(text)
            && rows.iter().all(|r| matches!(r, PyValue::Tuple(_)))
        {
            let values = rows
                .iter()
                .filter(|r| matches!(r, PyValue::Tuple(t) if t.len() == 1))
                .map(item_text)
                .collect();
            return Some(values);
        }
        let inner = text.trim_matches(['[', ']']);
        if inner.matches('(').count() == 1 && inner.starts_with('(') && inner.ends_with(",)") {
            return Some(vec![normalize(strip_quotes(&inner[1..inner.len() - 2]))]);
        }
    }
    let text = text.trim();
    if !(text.starts_with('[') && text.ends_with(']')) {
        return Some(vec![normalize(strip_quotes(text))]);
    }
    match parse_literal(text) {
        Some(PyValue::List(items)) => Some(items.iter().map(item_text).collect()),
        Some(_) => None,
        None => {
            // By hand: split on commas outside quotes.
            let mut items = Vec::new();
            let mut current = String::new();
            let mut quoted = false;
            for c in text[1..text.len() - 1].chars() {
                match c {
                    '"' | '\'' => quoted = !quoted,
                    ',' if !quoted => {
                        if !current.is_empty() {
                            items.push(normalize(strip_quotes(&current)));
                            current.clear();
                        }
                    }
                    c => current.push(c),
                }
            }
            if !current.is_empty() {
                items.push(normalize(strip_quotes(&current)));
            }
            Some(items)
        }
    }
}

fn as_float(s: &str) -> Option<f64> {
    PyValue::Str(s.to_string()).to_float()
}

fn float_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-2
}

/// Whether an answer committed with `commit_final_answer` matches the label, as AgentBench's
/// function-calling scorer decides: values normalised (percent, thousands separators,
/// none/null/nan → 0), floats equal within 1e-2, several values matched one to one.
pub fn fc_answer_matches(answer: &Value, label: &[Value]) -> bool {
    let (Some(answer), Some(truth)) = (
        clean_answer(answer),
        clean_answer(&Value::Array(label.to_vec())),
    ) else {
        return false;
    };
    if answer.len() == 1 && truth.len() == 1 {
        let (a, t) = (&answer[0], &truth[0]);
        if a == "0" && t == "0" {
            return true;
        }
        return match (as_float(a), as_float(t)) {
            (Some(x), Some(y)) => float_close(x, y),
            _ => a == t,
        };
    }
    let floats = |v: &[String]| v.iter().map(|s| as_float(s)).collect::<Option<Vec<f64>>>();
    if let (Some(a), Some(t)) = (floats(&answer), floats(&truth)) {
        if a.len() != t.len() {
            return false;
        }
        let mut used = vec![false; t.len()];
        for x in a {
            match (0..t.len()).find(|&i| !used[i] && float_close(x, t[i])) {
                Some(i) => used[i] = true,
                None => return false,
            }
        }
        return true;
    }
    let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    set(&answer) == set(&truth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overlap_is_the_jaccard_of_answer_and_label_values() {
        let label = [json!("3"), json!("4")];
        assert_eq!(answer_overlap("['3', '4']", &label), 1.0);
        assert!((answer_overlap("['3', '5']", &label) - 1.0 / 3.0).abs() < 1e-12);
        // Numbers compare as numbers, as the scorer does.
        assert_eq!(answer_overlap("[3.0]", &[json!("3")]), 1.0);
        assert_eq!(answer_overlap("nothing", &label), 0.0);
    }

    fn check(raw: &str, label: Value) -> bool {
        answer_matches(raw, label.as_array().unwrap())
    }

    #[test]
    fn single_values_compare_as_floats_then_as_values() {
        assert!(check(" [\"3\"]", json!(["3.0"])));
        assert!(check(" [3]", json!(["3"])));
        assert!(check(" 3", json!(["3"]))); // eval gives 3, list(3) raises: [" 3"], float(" 3")
        assert!(check(" [\"March 19, 1998\"]", json!(["March 19, 1998"])));
        assert!(!check(" [\"march 19, 1998\"]", json!(["March 19, 1998"])));
        assert!(!check(" [\"nan\"]", json!(["nan"]))); // nan != nan
        assert!(!check(" [\"3\", \"4\"]", json!(["3"])));
    }

    #[test]
    fn several_values_compare_as_sets() {
        assert!(check(" [\"b\", \"a\", \"a\"]", json!(["a", "b"])));
        assert!(!check(" [\"a\"]", json!(["a", "b"])));
        assert!(!check(" [[\"a\"], \"b\"]", json!(["a", "b"]))); // unhashable: no credit
        // a bare string is a list of its characters
        assert!(check(" \"ab\"", json!(["b", "a"])));
    }

    #[test]
    fn unreadable_answers_are_one_string() {
        assert_eq!(answer_list(" [oops"), vec![PyValue::Str(" [oops".into())]);
        assert!(!check("", json!(["1"])));
    }

    #[test]
    fn function_calling_answers_follow_agentbench_fc() {
        let fc = |a: Value, l: Value| fc_answer_matches(&a, l.as_array().unwrap());
        assert!(fc(json!(["3.004"]), json!(["3"]))); // within 1e-2
        assert!(!fc(json!(["3.02"]), json!(["3"])));
        assert!(fc(json!(["1,234"]), json!(["1234"]))); // thousands separator
        assert!(fc(json!(["45%"]), json!(["45"])));
        assert!(fc(json!([null]), json!(["None"]))); // both read as 0
        assert!(fc(json!("[('Paris',)]"), json!(["Paris"]))); // a pasted MySQL result
        assert!(fc(json!(["2", "1.001"]), json!(["1", "2"]))); // matched one to one
        assert!(!fc(json!(["2", "2"]), json!(["1", "2"])));
        assert!(fc(json!(["b", "a"]), json!(["a", "b"])));
        assert!(!fc(json!(["Paris"]), json!(["paris"])));
        assert!(fc(json!("'Paris'"), json!(["Paris"])));
    }
}
