//! A model's tokenizer and chat template, from `tokenizer.json` + `tokenizer_config.json` or
//! from GGUF metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::gguf_file;
use serde_json::{Value, json};

use super::message::Conversation;
use super::template::{ChatTemplate, RenderOptions};
use crate::error::{Error, Result};
use crate::model::{ModelFiles, ModelSource};

/// Text ↔ token ids for one model, with its chat template and special tokens.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    eos_token_ids: Vec<u32>,
    pad_token_id: Option<u32>,
    source_name: String,
}

/// Byte spans of a text and the token ids covering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` byte offsets of each token in the text.
    pub offsets: Vec<(usize, usize)>,
}

fn tokenizer_error(source_name: &str, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        source_name: source_name.to_string(),
        reason: reason.into(),
    }
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` (the `default` one is used).
fn template_source(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => {
            let pick = |name: &str| {
                named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            pick("default")
        }
        _ => None,
    }
}

impl Tokenizer {
    /// The tokenizer of a model source (directory, `.gguf` or hub repo id).
    pub fn load(source: &ModelSource) -> Result<Self> {
        Self::from_files(&source.resolve()?)
    }

    /// The tokenizer of resolved model files: the GGUF's metadata, or `tokenizer.json` with
    /// `tokenizer_config.json`.
    pub fn from_files(files: &ModelFiles) -> Result<Self> {
        if let Some(gguf) = &files.gguf {
            return Self::from_gguf(gguf);
        }
        let Some(json) = &files.tokenizer else {
            let dir = files
                .config
                .as_deref()
                .and_then(Path::parent)
                .map_or_else(|| "the model directory".into(), |d| d.display().to_string());
            return Err(Error::MissingFile {
                path: Path::new(&dir).join("tokenizer.json"),
                hint: "the model has no tokenizer.json; copy it from the base model's repository"
                    .into(),
            });
        };
        Self::from_json_files(json, files.tokenizer_config.as_deref())
    }

    /// A tokenizer from `tokenizer.json` and (for the chat template and special tokens)
    /// `tokenizer_config.json`.
    pub fn from_json_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let source_name = tokenizer_json.display().to_string();
        if !tokenizer_json.is_file() {
            return Err(Error::MissingFile {
                path: tokenizer_json.to_path_buf(),
                hint: "a tokenizer.json from the model's repository is needed".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| tokenizer_error(&source_name, format!("cannot be read: {e}")))?;
        let config: Value = match tokenizer_config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            None => Value::Null,
        };
        let bos = token_string(config.get("bos_token"));
        let eos = token_string(config.get("eos_token"));
        let pad = token_string(config.get("pad_token"));
        let template = template_source(config.get("chat_template"))
            .map(|t| ChatTemplate::new(t, bos.clone(), eos.clone()))
            .transpose()?;
        let eos_token_ids = eos
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .into_iter()
            .collect();
        let pad_token_id = pad.as_deref().and_then(|t| inner.token_to_id(t));
        Ok(Self {
            inner,
            template,
            eos_token_ids,
            pad_token_id,
            source_name,
        })
    }

    /// A tokenizer from a GGUF file's metadata (byte-level BPE vocabularies: `gpt2` model).
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let source_name = path.display().to_string();
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    hint: crate::model::source::GGUF_HINT.into(),
                }
            } else {
                Error::io("opening", path, e)
            }
        })?;
        let content = gguf_file::Content::read(&mut BufReader::new(file))
            .map_err(|e| tokenizer_error(&source_name, format!("not a readable GGUF file: {e}")))?;
        Self::from_gguf_metadata(&content.metadata, &source_name)
    }

    fn from_gguf_metadata(
        meta: &HashMap<String, gguf_file::Value>,
        source_name: &str,
    ) -> Result<Self> {
        let err = |reason: String| tokenizer_error(source_name, reason);
        let get = |key: &str| meta.get(key);
        let strings = |key: &str| -> Result<Vec<String>> {
            get(key)
                .and_then(|v| v.to_vec().ok())
                .ok_or_else(|| err(format!("missing {key}")))?
                .iter()
                .map(|v| v.to_string().cloned())
                .collect::<candle_core::Result<Vec<String>>>()
                .map_err(|e| err(format!("{key}: {e}")))
        };
        let id = |key: &str| {
            get(key).and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_i32().ok().map(|i| i as u32))
            })
        };
        let model = get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if model != "gpt2" {
            return Err(err(format!(
                "GGUF tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\"); \
                 load the model from a directory with tokenizer.json instead"
            )));
        }
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();
        let pre = get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added: Vec<Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(i, t)| {
                json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": *t == 3})
            })
            .collect();
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer(&pre),
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner = tokenizers::Tokenizer::from_str(&spec.to_string())
            .map_err(|e| err(format!("cannot build the BPE tokenizer: {e}")))?;
        let token = |key: &str| id(key).and_then(|i| tokens.get(i as usize).cloned());
        let bos = token("tokenizer.ggml.bos_token_id");
        let eos = token("tokenizer.ggml.eos_token_id");
        let template = get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .map(|t| ChatTemplate::new(t.clone(), bos, eos))
            .transpose()?;
        Ok(Self {
            inner,
            template,
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            pad_token_id: id("tokenizer.ggml.padding_token_id"),
            source_name: source_name.to_string(),
        })
    }

    /// The chat template, or an error naming the model when it has none.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.template.as_ref().ok_or_else(|| {
            Error::Chat(format!(
                "{} has no chat template (tokenizer_config.json `chat_template` or GGUF \
                 `tokenizer.chat_template`); use an instruct model or set one with \
                 Tokenizer::set_template",
                self.source_name
            ))
        })
    }

    /// Replaces the chat template.
    pub fn set_template(&mut self, template: ChatTemplate) {
        self.template = Some(template);
    }

    /// Renders a conversation with the model's chat template.
    pub fn render(&self, conversation: &Conversation, options: &RenderOptions) -> Result<String> {
        self.template()?
            .render(&conversation.messages, &conversation.tools, options)
    }

    /// The prompt ids for continuing a conversation: rendered with the generation prompt.
    pub fn encode_prompt(
        &self,
        conversation: &Conversation,
        options: &RenderOptions,
    ) -> Result<Vec<u32>> {
        let options = RenderOptions {
            add_generation_prompt: true,
            ..options.clone()
        };
        self.encode(&self.render(conversation, &options)?)
    }

    /// Token ids of `text`, special-token strings included as their ids, nothing added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text)?.ids)
    }

    /// Token ids of `text` with each token's byte span.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tokenizer_error(&self.source_name, format!("encoding failed: {e}")))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// The text of `ids`; special tokens are written out unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tokenizer_error(&self.source_name, format!("decoding failed: {e}")))
    }

    /// The id of a token string (e.g. `<|im_end|>`), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids that end a turn or the sequence: the eos token and the template's end-of-turn token.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The padding id: the configured pad token, else the first eos id, else 0.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
            .or_else(|| self.eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// Adds stop ids (e.g. the model config's `eos_token_id` list).
    pub fn add_eos_token_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_token_ids.contains(&id) {
                self.eos_token_ids.push(id);
            }
        }
    }
}

/// The pre-tokenizer of a GGUF `tokenizer.ggml.pre` name, as in the model's own
/// `tokenizer.json` (llama.cpp's names).
fn pre_tokenizer(pre: &str) -> Value {
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
               "use_regex": use_regex})
    };
    let split = |pattern: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
             "invert": false},
            byte_level(false)]})
    };
    match pre {
        // SmolLM/SmolLM2: every digit alone, then GPT-2's byte-level split.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => split(LLAMA3),
        _ => byte_level(true),
    }
}
