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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
