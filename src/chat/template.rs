//! A model's own Jinja chat template, rendered as transformers' `apply_chat_template` does.
//!
//! transformers renders with jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls), a `tojson`
//! filter that is Python's `json.dumps(ensure_ascii=False)`, and the globals `raise_exception`
//! and `strftime_now`; templates call Python string methods (`.startswith`, `.split`, `.strip`).
//! minijinja with its Python-compatibility callback plus the same filter and globals gives the
//! same bytes.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde_json::{Map, Value};

use crate::python::JsonStyle;

use super::message::{Message, Tool};
use crate::error::{Error, Result};

/// Options of one rendering (transformers' `apply_chat_template` keyword arguments).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// Append the header of a new assistant turn (for generation).
    pub add_generation_prompt: bool,
    /// Qwen3's thinking switch; `None` leaves it undefined (the template's default).
    pub enable_thinking: Option<bool>,
    /// Further template variables, e.g. `{"date_string": "26 Jul 2024"}`.
    pub extra: Map<String, Value>,
}

impl RenderOptions {
    /// Options for a prompt that the model continues: the generation prompt on.
    pub fn generation() -> Self {
        Self {
            add_generation_prompt: true,
            ..Self::default()
        }
    }

    /// These options with Qwen3's thinking switched on or off.
    pub fn with_thinking(mut self, on: bool) -> Self {
        self.enable_thinking = Some(on);
        self
    }
}

/// A compiled chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source` (Jinja); `bos_token`/`eos_token` are the strings templates may print.
    pub fn new(
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.clone())
            .map_err(|e| Error::Chat(format!("the chat template does not compile: {e:#}")))?;
        Ok(Self {
            env,
            source,
            bos_token,
            eos_token,
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The end-of-sequence token string (`<|im_end|>` for ChatML models), if known.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Renders `messages` (and `tools`, when the template supports them) to the prompt text.
    pub fn render(
        &self,
        messages: &[Message],
        tools: &[Tool],
        options: &RenderOptions,
    ) -> Result<String> {
        let mut ctx = options.extra.clone();
        ctx.insert(
            "messages".into(),
            Value::Array(messages.iter().map(Message::template_value).collect()),
        );
        if !tools.is_empty() {
            ctx.insert(
                "tools".into(),
                Value::Array(tools.iter().map(|t| t.0.clone()).collect()),
            );
        }
        ctx.insert(
            "add_generation_prompt".into(),
            options.add_generation_prompt.into(),
        );
        if let Some(on) = options.enable_thinking {
            ctx.insert("enable_thinking".into(), on.into());
        }
        for (key, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            ctx.entry(key).or_insert_with(|| {
                token
                    .clone()
                    .map_or(Value::String(String::new()), Value::from)
            });
        }
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Chat(e.to_string()))?;
        template
            .render(Value::Object(ctx))
            .map_err(|e| Error::Chat(format!("rendering the chat template failed: {e:#}")))
    }
}

/// `raise_exception(message)`: templates reject conversations they cannot render.
fn raise_exception(message: String) -> std::result::Result<JinjaValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC date and time in a C `strftime` format.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(secs, &format)
}

/// Formats Unix time `secs` (UTC) with the common `strftime` directives.
pub(crate) fn strftime(secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('-') if chars.clone().next() == Some('d') => {
                chars.next();
                write!(out, "{day}")
            }
            Some('B') => write!(out, "{month_name}"),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{weekday}"),
            Some('a') => write!(out, "{}", &weekday[..3]),
            Some('H') => write!(out, "{:02}", rem / 3600),
            Some('M') => write!(out, "{:02}", rem / 60 % 60),
            Some('S') => write!(out, "{:02}", rem % 60),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The `tojson` filter: Python's `json.dumps(value, ensure_ascii=False)` with optional
/// `indent`, `sort_keys` and `ensure_ascii`, as transformers defines it.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "cannot serialise to JSON")
            .with_source(e)
    })?;
    let style = JsonStyle {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(JinjaValue::from_safe_string(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 12:34:56 UTC was a Friday.
        let t = 1_721_997_296;
        assert_eq!(strftime(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            strftime(t, "%A %B %-d, %H:%M:%S %%"),
            "Friday July 26, 12:34:56 %"
        );
        assert_eq!(strftime(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
    }

    #[test]
    fn renders_python_style_templates() {
        let source = "{%- for m in messages %}{% if m.content.startswith('x') %}{{ m.content.split('|')[-1].strip() }}{% endif %}{% endfor %}{{ tools | tojson }}{% if add_generation_prompt %}!{% endif %}";
        let t = ChatTemplate::new(source, None, None).unwrap();
        let msgs = [Message::user("xa| b "), Message::user("no")];
        let tools = [Tool(json!({"n": "é", "p": 1}))];
        let out = t
            .render(&msgs, &tools, &RenderOptions::generation())
            .unwrap();
        assert_eq!(out, r#"b[{"n": "é", "p": 1}]!"#);
    }

    #[test]
    fn raise_exception_and_bad_syntax_are_clear_errors() {
        let t = ChatTemplate::new("{{ raise_exception('only user turns') }}", None, None).unwrap();
        let err = t.render(&[], &[], &RenderOptions::default()).unwrap_err();
        assert!(err.to_string().contains("only user turns"), "{err}");
        let err = ChatTemplate::new("{% for %}", None, None).unwrap_err();
        assert!(err.to_string().contains("does not compile"), "{err}");
    }
}
