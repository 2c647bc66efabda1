//! HF `tokenizer.json` files, through the `tokenizers` crate (the same Rust code transformers'
//! fast tokenizers run).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// A token's byte range in the encoded text.
pub type Offsets = (usize, usize);

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            anyhow!(
                "{}: cannot load a tokenizer: {e}\n  hint: point model.tokenizer at an HF tokenizer.json",
                path.display()
            )
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (BOS, EOS).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("{}: cannot encode text: {e}", self.path.display()))?;
        Ok(encoding.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// As [`Tokenizer::encode`], with each token's byte range in `text` (empty for tokens the
    /// post-processor adds).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        special: bool,
    ) -> Result<(Vec<i64>, Vec<Offsets>)> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("{}: cannot encode text: {e}", self.path.display()))?;
        let ids = encoding.get_ids().iter().map(|&i| i as i64).collect();
        Ok((ids, encoding.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, skip_special)
            .map_err(|e| anyhow!("{}: cannot decode: {e}", self.path.display()))
    }

    /// The id of a special or ordinary token.
    pub fn id(&self, token: &str) -> Result<i64> {
        self.inner
            .token_to_id(token)
            .map(i64::from)
            .ok_or_else(|| {
                anyhow!(
                    "{}: has no token {token:?}\n  hint: add it to the tokenizer or name another in the recipe",
                    self.path.display()
                )
            })
    }

    /// The id of `token`, adding it as a special token at the end of the vocabulary if the
    /// tokenizer lacks it (as transformers' `add_special_tokens`).
    pub fn id_or_add(&mut self, token: &str) -> i64 {
        if let Some(id) = self.inner.token_to_id(token) {
            return i64::from(id);
        }
        self.inner
            .add_special_tokens(&[tokenizers::AddedToken::from(token.to_string(), true)]);
        self.inner
            .token_to_id(token)
            .map_or(self.vocab_size() as i64 - 1, i64::from)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
