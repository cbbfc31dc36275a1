//! A model with its tokenizer: load once, then answer conversations (a notebook cell, the CLI).

use std::path::Path;

use candle_core::{DType, Device};

use super::generator::{GenerateOptions, Generation, generate};
use crate::chat::{Conversation, Message, RenderOptions, Tokenizer};
use crate::error::Result;
use crate::model::{Decoder, ModelSource};

/// A decoder, its tokenizer (with the chat template) and optional adapters.
#[derive(Debug)]
pub struct ChatModel {
    /// The model.
    pub decoder: Decoder,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Template options used for every prompt (e.g. Qwen3's thinking switch).
    pub render: RenderOptions,
}

impl ChatModel {
    /// Loads a model (directory, `.gguf`, hub repo id or `default`) and, if given, a PEFT
    /// adapter directory on top.
    pub fn load(
        source: &ModelSource,
        adapter: Option<&Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let files = source.resolve()?;
        let mut decoder = Decoder::from_files(&files, device, dtype)?;
        if let Some(dir) = adapter {
            decoder.load_adapter(dir)?;
        }
        let mut tokenizer = Tokenizer::from_files(&files)?;
        tokenizer.add_eos_token_ids(&decoder.config().eos_token_ids);
        Ok(Self {
            decoder,
            tokenizer,
            render: RenderOptions::default(),
        })
    }

    /// The model's reply to each conversation, generated as one batch.
    pub fn reply_all(
        &self,
        conversations: &[Conversation],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let prompts = conversations
            .iter()
            .map(|c| self.tokenizer.encode_prompt(c, &self.render))
            .collect::<Result<Vec<_>>>()?;
        generate(&self.decoder, &self.tokenizer, &prompts, options)
    }

    /// The model's reply to one conversation.
    pub fn reply(
        &self,
        conversation: &Conversation,
        options: &GenerateOptions,
    ) -> Result<Generation> {
        let mut out = self.reply_all(std::slice::from_ref(conversation), options)?;
        Ok(out.remove(0))
    }

    /// The reply to a single user message.
    pub fn ask(&self, question: &str, options: &GenerateOptions) -> Result<String> {
        let conversation = Conversation::new(vec![Message::user(question)]);
        Ok(self.reply(&conversation, options)?.text)
    }
}
