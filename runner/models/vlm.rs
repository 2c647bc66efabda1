//! The vision-language model of `coe_multitask`: a vision tower reads each image, a connector
//! turns its patch states into decoder-width tokens, and those replace the image's placeholder
//! tokens (`<imgpad>`, as `data/chatml.rs` lays them out) in the decoder's input embeddings,
//! image after image in reading order, as Qwen-VL splices its visual features in.

use anyhow::{bail, Result};
use tch::Tensor;

use super::checkpoint::Tape;
use super::connector::Connector;
use super::llama::{DecoderCache, Llama};
use super::loss::TokenLosses;
use super::vit::Vit;

pub struct Vlm {
    pub vision: Vit,
    pub connector: Connector,
    pub decoder: Llama,
    /// The placeholder token id.
    pub image_pad: i64,
}

impl Vlm {
    /// Visual tokens `[images, n, d]` of `pixels` `[images, channels, size, size]`: the tower's
    /// patch states (a class token dropped) through the connector.
    pub fn visual(&self, pixels: &Tensor, train: bool) -> Tensor {
        let states = self.vision.forward(pixels, train);
        self.connector.forward(&self.vision.patches(&states), train)
    }

    /// Input embeddings of `ids` with every placeholder replaced, in order, by a visual token.
    pub fn embeds(&self, ids: &Tensor, pixels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let embeds = self.decoder.embed(ids);
        let slots = ids.eq(self.image_pad);
        let wanted = slots.sum(tch::Kind::Int64).int64_value(&[]);
        let Some(pixels) = pixels.filter(|_| wanted > 0) else {
            if wanted > 0 {
                bail!("the batch has {wanted} image placeholder tokens but no images");
            }
            return Ok(embeds);
        };
        let visual = self.visual(pixels, train);
        let (images, n, d) = visual.size3().expect("[images, tokens, d]");
        if images * n != wanted {
            bail!(
                "the batch has {wanted} image placeholder tokens for {images} image(s) of {n} tokens each"
            );
        }
        let visual = visual.reshape([images * n, d]).to_kind(embeds.kind());
        Ok(embeds.masked_scatter(&slots.unsqueeze(-1), &visual))
    }

    /// Logits `[B, T, vocab]` of a batch with its images (in reading order).
    pub fn forward<'a>(
        &'a self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        pixels: Option<&Tensor>,
        tape: &Tape<'a>,
        train: bool,
    ) -> Result<Tensor> {
        let embeds = self.embeds(ids, pixels, train)?;
        Ok(self.decoder.forward_embeds(&embeds, mask, tape, train))
    }

    /// The training loss of a batch with its images against `labels` (the decoder's
    /// [`Llama::causal_lm_loss`]).
    pub fn causal_lm_loss<'a>(
        &'a self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        pixels: Option<&Tensor>,
        labels: &Tensor,
        tape: &Tape<'a>,
    ) -> Result<TokenLosses> {
        let embeds = self.embeds(ids, pixels, true)?;
        Ok(self
            .decoder
            .causal_lm_loss(&embeds, mask, labels, tape, true))
    }

    /// The prompt's pass for generation: logits of `ids` with its images, filling `cache`;
    /// the generated tokens then go through the decoder alone.
    pub fn prefill(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        pixels: Option<&Tensor>,
        cache: &mut DecoderCache,
    ) -> Result<Tensor> {
        let embeds = self.embeds(ids, pixels, false)?;
        Ok(self.decoder.forward_cached_embeds(&embeds, mask, cache))
    }
}
