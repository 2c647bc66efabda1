"""Generate the bitsandbytes 4-bit (NF4 / FP4) and QLoRA reference fixtures that the Rust tests compare against.

What it generates (all under tests/fixtures/):

  nf4/blocks.safetensors      bitsandbytes' own blockwise 4-bit quantisation and dequantisation
                              (bitsandbytes.functional on CPU tensors), NF4 and FP4, with and
                              without double quantisation, plus tie / zero-block edge cases
  models/llama-qlora-base/    a tiny fp32 Llama (hidden 64, GQA, linear RoPE scaling) whose linear
                              layers' rows are multiples of 64 values (see "A bitsandbytes CPU bug")
  models/llama-qlora-base-nf4/  that base loaded in 4 bits (NF4, double quantisation) and saved
                              by transformers' save_pretrained, with its logits
  models/llama-qlora-runner-lora/ is not generated here: runner's Rust test writes it (a QLoRA
                              adapter runner saved, with runner's logits on its own 4-bit base);
                              this script checks that PEFT on bitsandbytes' 4-bit base agrees
  models/llama-qlora/         one QLoRA training step: a random LoRA adapter on every linear layer
                              of that 4-bit base; logits, loss and the LoRA gradients

How to run (from the repository root):

  .venv/bin/pip install -r scripts/fixtures-requirements.txt && .venv/bin/python scripts/make_qlora_fixtures.py

  .venv/bin/python scripts/make_qlora_fixtures.py check-adapter --base DIR --adapter DIR --expected FILE [--load-in-4bit]
      loads the base model (with --load-in-4bit: quantised at load to NF4 with double quantisation,
      fp32 compute, exactly as for llama-qlora; a base folder whose config.json already holds a
      quantization_config is loaded as saved), applies the PEFT adapter, and compares the logits
      over attention_mask positions with FILE's `logits` (exit 1 if max abs diff > 1e-4). Forwards
      run in train mode without grad (see below), so FILE's logits must be dropout-free.

Everything runs on CPU in fp32, single-threaded, with fixed seeds and eager attention, so reruns
are bit-identical on the same machine. It imports helpers from make_fixtures.py. The
script asserts its own results: every bitsandbytes block result equals an independent reference
of the rules below (packed bytes, absmax, offset and nested absmax, dequantised values, all
bit-exact), the saved 4-bit folder reloads to the same logits, quantise-at-load equals
quantize_4bit of the fp32 weight, and the adapter round-trips through PeftModel.from_pretrained
on both the quantise-at-load and the saved 4-bit base. A full run takes about 25 s on 2 cores,
half of it torch.compile inside bitsandbytes (its generic dequantisation kernel, used for odd
last dims; about 10 s in all once inductor's cache is warm).

Model forwards run in train mode (no_grad where no gradient is wanted): every dropout is 0, and in
eval mode bitsandbytes' Linear4bit repacks its weight for a bf16 AVX512 kernel on CPUs that have
AVX512-BF16, which would change the numbers. QLoRA here is deliberately plain:
prepare_model_for_kbit_training is NOT called (it would cast the norms to fp32 — already fp32
here — and enable gradient-checkpointing / input-grad hooks); the base is frozen by PEFT alone.

bitsandbytes 0.50.2 CPU semantics the fixtures pin (checked by the script's reference):

  - Blocks: flatten row-major, blocks of `blocksize`; the last block may be short. absmax = max|x|
    per block in fp32. Full blocks are scaled as x * (1 / max(absmax, 1e-38)) (reciprocal then
    multiply); the short last block as x / max(absmax, 1e-38) (a true division), and its stored
    absmax is the clamped value, so an all-zero short last block stores 1e-38 (an fp32 subnormal,
    9.99999935e-39: flush-to-zero arithmetic would differ) while an all-zero full block stores
    0.0. Scaled values are clamped to [-1, 1] (a no-op in practice).
  - Code choice: the 16 codes sorted by value (stable argsort, so FP4's two +0.0 codes sort as
    index 0 then index 8); boundaries are the fp32 midpoints (c[i] + c[i+1]) / 2 computed in
    fp32 (often not the exact real midpoint); a scaled value exactly on a boundary takes the
    lower code (torch.bucketize, right=False). FP4: x <= 0 maps to code 0, 0 < x <= 0.0026 to
    code 8 (both decode to 0.0).
  - Packing: element 2i in the high nibble, 2i+1 in the low nibble, uint8 [ceil(n/2), 1]. For
    odd n the scaled values are padded with 0.0 before choosing codes, so the last low nibble is
    the code of 0.0 (NF4: 7, FP4: 0), not necessarily a zero nibble.
  - Double quantisation: offset = absmax.mean() (torch fp32 mean); (absmax - offset) quantised
    by quantize_blockwise in nested blocks of 256 (the last may be short) with the signed
    8-bit dynamic map; its CPU kernel picks codes through a lookup table, not plain nearest.
    Dequantised absmax = dynamic_map[q] * nested_absmax[i // 256] + offset, in fp32.
  - Dequantisation: code[q] * absmax in fp32, cast to the output dtype (bf16 results are the
    fp32 results rounded to nearest even; the script asserts they are bit-identical).

Fixture format:

  nf4/blocks.safetensors
    nf4_code, fp4_code   float32 [16]   get_4bit_type(quant_type, device="cpu"), index = 4-bit code
    dynamic_map          float32 [256]  create_dynamic_map(signed=True), the nested 8-bit code book
    per case <case> = {quant_type}_{rows}x{cols}_{dq|plain}[_b128][_bf16in][_ties|_zeros]:
      <case>.input          float32 [rows, cols] (bfloat16 for _bf16in: quantised as is)
      <case>.packed         uint8 [ceil(rows*cols/2), 1]   exactly what quantize_4bit returns
      plain: <case>.absmax  float32 [blocks]
      dq:    <case>.absmax          uint8 [blocks]    8-bit codes of absmax - offset
             <case>.nested_absmax   float32 [ceil(blocks/256)]
             <case>.offset          float32 [1]
             <case>.absmax_dequant  float32 [blocks]  bitsandbytes' dequantised absmax (incl. offset)
      <case>.dequant_f32    float32 [rows, cols]   dequantize_4bit with the state, dtype float32
      <case>.dequant_bf16   bfloat16 [rows, cols]  bitsandbytes' own bf16 dequantisation: the
                            dequantize_4bit op called with dtype=torch.bfloat16 and the fp32
                            absmax, which is what MatMul4Bit / gemm_4bit do for bf16 activations
                            (and equal to F.dequantize_4bit with a bf16 QuantState, as for a model
                            loaded in bf16; asserted)
    blocksize is 64 unless the name has _b128 (128). The safetensors metadata has one key,
    "fixture": JSON {"bitsandbytes": version, "cases": {<case>: {"quant_type", "blocksize",
    "double_quant", "shape", "input_dtype"}}} (a single key because safetensors writes metadata
    keys in hash order, which would make the file bytes differ between runs).
    _ties cases: block 0 has absmax 1.0 and every fp32 boundary and its two fp32 neighbours;
    block 1 is all zeros; block 2 (full, multiplied by the reciprocal) and the short last block
    (divided) share an absmax and hold values whose code differs between x * (1/absmax) and
    x / absmax; block 3 is random with a negative absmax element. _zeros cases: the short last
    block is all zeros.

A bitsandbytes CPU bug: bitsandbytes 0.50.2's AVX-512 dequantisation kernel (used on CPUs with
AVX-512 when the last dimension is even) is wrong when a weight's rows are not whole blocks of 64:
it scales some values by another block's absmax. A [32, 32] weight dequantises with errors of 0.3
where the format allows 0.08 (the flattened rule `code[q] · absmax[i // 64]`, which the generic
path, bitsandbytes' CUDA kernels and runner follow, gives 0.07). The model fixtures therefore use
a base whose in_features are 64 and 128, and the script asserts that bitsandbytes' dequantised
weights equal the flattened rule for every layer.

  models/llama-qlora-base/: config.json + model.safetensors of LlamaForCausalLM (vocab 96, hidden
  64, intermediate 128, 2 layers, 4 heads of 16, 2 key/value heads, linear RoPE factor 2, std 0.2),
  and expected.safetensors with the batch every model fixture here uses (input_ids,
  attention_mask, labels: int64 [2, 12]) and the fp32 model's eval logits.

  models/llama-qlora-base-nf4/: exactly what save_pretrained writes for llama-qlora-base loaded with
  BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
  bnb_4bit_compute_dtype=torch.float32): config.json with quantization_config,
  generation_config.json, model.safetensors with, per linear layer except lm_head, `.weight` U8
  [n/2, 1], `.weight.absmax` U8, `.weight.nested_absmax` F32, `.weight.nested_quant_map` F32
  [256], `.weight.quant_map` F32 [16], `.weight.quant_state.bitsandbytes__nf4` U8 (JSON bytes);
  embeddings, norms and lm_head stay F32.
  expected.safetensors:
    input_ids       int64 [2, 12]   make_fixtures.causal_lm_batch (row 2 right padded on 3 positions)
    attention_mask  int64 [2, 12]
    logits          float32 [2, 12, 96]  train-mode, no-grad forward of the 4-bit model

  models/llama-qlora/: the same 4-bit base (quantised at load from models/llama-qlora-base) with
  PEFT LoraConfig(r=4, lora_alpha=8, lora_dropout=0, target_modules = all seven linear layers,
  init_lora_weights=False, so lora_B is random too; seeded).
    adapter_config.json, adapter_model.safetensors  PEFT save_pretrained of the initial adapter
        (target_modules sorted, base_model_name_or_path = tests/fixtures/models/llama-qlora-base,
        PEFT's README.md dropped)
    expected.safetensors:
      input_ids, attention_mask, labels  int64 [2, 12]  the base's batch (labels -100 on
                                         padding; HF shifts internally)
      logits         float32 [2, 12, 96]  train-mode forward (4-bit base + adapter) of that batch
      loss           float32 [1]          HF causal-LM loss of the same forward
      grad.<name>    float32              gradient of loss for every lora_A / lora_B parameter,
                                          <name> as in adapter_model.safetensors
                                          (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)
      dequant.model.layers.0.self_attn.q_proj.weight  float32 [64, 64]  bitsandbytes' dequantised
                                          weight of that module as loaded (fp32)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import bitsandbytes
import bitsandbytes.functional as bnbF
import torch
from bitsandbytes.nn import Linear4bit
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from transformers import LlamaConfig, LlamaForCausalLM

from make_fixtures import (
    ADAPTER_TOLERANCE,
    DECODER_ONLY_SIZES,
    FIXTURES,
    IGNORE,
    MODELS,
    PAD,
    causal_lm_batch,
    fresh_dir,
    save_tensors,
)

NF4_DIR = FIXTURES / "nf4"
BASE_NAME = "llama-qlora-base"
BASE_DIR = MODELS / BASE_NAME
NF4_BASE_DIR = MODELS / "llama-qlora-base-nf4"
QLORA_DIR = MODELS / "llama-qlora"

BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
ABSMAX_FLOOR = 1e-38  # bitsandbytes clamps absmax to this before scaling
LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEQUANT_MODULE = "model.layers.0.self_attn.q_proj"


def qlora_quantization_config():
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


# ---------------------------------------------------------------------------------------------
# Blockwise 4-bit quantisation (bitsandbytes.functional)
# ---------------------------------------------------------------------------------------------


def code_book(quant_type):
    return bnbF.get_4bit_type(quant_type, device="cpu")


def sorted_boundaries(code):
    """Code indices sorted by value (stable) and the fp32 midpoints between neighbours."""
    order = torch.argsort(code, stable=True)
    values = code[order]
    return order, (values[:-1] + values[1:]) / 2


def next_float(x, towards):
    return torch.nextafter(x, torch.full_like(x, towards))


def reference_quantize_4bit(x, code, blocksize):
    """Code index per element and the stored absmax, written from the rules in the docstring."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    order, bounds = sorted_boundaries(code)
    scaled = torch.empty(n)
    absmax = []
    for start in range(0, n, blocksize):
        block = flat[start : start + blocksize]
        peak = block.abs().max()
        floor = peak.clamp(min=ABSMAX_FLOOR)
        if block.numel() == blocksize:
            scaled[start : start + blocksize] = block * (1.0 / floor)
            absmax.append(peak)
        else:
            scaled[start:] = block / floor
            absmax.append(floor)
    index = order[torch.searchsorted(bounds, scaled.clamp(-1, 1), right=False)]
    return index, torch.stack(absmax)


def zero_code(code):
    """The code index bitsandbytes gives a scaled 0.0 (NF4: 7, FP4: 0)."""
    order, bounds = sorted_boundaries(code)
    return order[torch.searchsorted(bounds, torch.zeros(1), right=False)]


def pack_nibbles(index, code):
    """Odd n: bitsandbytes pads the *scaled values* with 0.0, so the last low nibble is the code
    of 0.0 (7 for NF4), not a zero nibble."""
    q = index
    if q.numel() % 2:
        q = torch.cat([q, zero_code(code)])
    q = q.to(torch.uint8)
    return ((q[0::2] << 4) | q[1::2]).unsqueeze(1)


def unpack_nibbles(packed, n):
    flat = packed.reshape(-1)
    return torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)[:n].long()


def reference_nested(absmax):
    """Offset and per-256-block absmax of (absmax - offset); the 8-bit codes come from bitsandbytes."""
    offset = absmax.mean()
    centred = absmax - offset
    nested = torch.stack(
        [centred[i : i + NESTED_BLOCKSIZE].abs().max() for i in range(0, centred.numel(), NESTED_BLOCKSIZE)]
    )
    return offset, centred, nested


def with_dtype(state, dtype):
    return bnbF.QuantState(
        absmax=state.absmax,
        shape=state.shape,
        code=state.code,
        blocksize=state.blocksize,
        quant_type=state.quant_type,
        dtype=dtype,
        offset=state.offset,
        state2=state.state2,
    )


def block_case(tensors, metadata, stats, name, weight, quant_type, double_quant, blocksize=BLOCKSIZE):
    """Quantise `weight` with bitsandbytes, check it against the reference, store the results."""
    packed, state = bnbF.quantize_4bit(
        weight, blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type
    )
    code = code_book(quant_type)
    n = weight.numel()
    index, absmax = reference_quantize_4bit(weight, code, blocksize)
    assert packed.dtype == torch.uint8 and packed.shape == ((n + 1) // 2, 1), (name, packed.shape)
    assert torch.equal(packed, pack_nibbles(index, code)), f"{name}: packed codes differ from the reference"
    assert torch.equal(unpack_nibbles(packed, n), index)

    if double_quant:
        dynamic_map = bnbF.create_dynamic_map(signed=True)
        offset, centred, nested = reference_nested(absmax)
        assert state.nested and state.state2.blocksize == NESTED_BLOCKSIZE
        assert torch.equal(state.offset.reshape(1), offset.reshape(1)), name
        assert torch.equal(state.state2.absmax, nested), name
        assert torch.equal(state.state2.code, dynamic_map), name
        assert state.absmax.dtype == torch.uint8 and state.absmax.shape == absmax.shape, name
        # bitsandbytes' own dequantised absmax: the one every dequantisation uses.
        absmax_used = bnbF.dequantize_blockwise(state.absmax, state.state2) + state.offset
        per_block = nested.repeat_interleave(NESTED_BLOCKSIZE)[: absmax.numel()]
        assert torch.equal(absmax_used, dynamic_map[state.absmax.long()] * per_block + offset), name
        # How far the CPU kernel's table lookup is from plain nearest (for the report only).
        ratio = centred / per_block
        nearest = (ratio[:, None] - dynamic_map[None, :]).abs().argmin(dim=1)
        stats["nested_not_nearest"] += int((nearest != state.absmax.long()).sum())
        stats["nested_codes"] += absmax.numel()
        tensors[f"{name}.absmax"] = state.absmax
        tensors[f"{name}.nested_absmax"] = state.state2.absmax
        tensors[f"{name}.offset"] = state.offset.reshape(1).float()
        tensors[f"{name}.absmax_dequant"] = absmax_used
    else:
        assert state.absmax.dtype == torch.float32 and torch.equal(state.absmax, absmax), name
        absmax_used = state.absmax
        tensors[f"{name}.absmax"] = state.absmax

    expected_f32 = (code[index] * absmax_used.repeat_interleave(blocksize)[:n]).reshape(weight.shape)
    dequant_f32 = bnbF.dequantize_4bit(packed, with_dtype(state, torch.float32))
    assert dequant_f32.dtype == torch.float32 and torch.equal(dequant_f32, expected_f32), name
    # bf16 as bitsandbytes produces it for bf16 compute: MatMul4Bit's gemm_4bit calls the op with
    # the activation dtype; F.dequantize_4bit with a bf16 state (a bf16-loaded model) is the same.
    dequant_bf16 = torch.ops.bitsandbytes.dequantize_4bit.default(
        packed, absmax_used, blocksize, quant_type, list(weight.shape), torch.bfloat16
    )
    assert torch.equal(dequant_bf16, bnbF.dequantize_4bit(packed, with_dtype(state, torch.bfloat16))), name
    rounded = dequant_f32.to(torch.bfloat16)
    stats["bf16_mismatches"] += int((dequant_bf16.view(torch.int16) != rounded.view(torch.int16)).sum())
    stats["bf16_values"] += n

    tensors[f"{name}.input"] = weight.clone()  # shared inputs: one copy per case
    tensors[f"{name}.packed"] = packed
    tensors[f"{name}.dequant_f32"] = dequant_f32
    tensors[f"{name}.dequant_bf16"] = dequant_bf16
    metadata[name] = {
        "quant_type": quant_type,
        "blocksize": blocksize,
        "double_quant": double_quant,
        "shape": list(weight.shape),
        "input_dtype": str(weight.dtype).removeprefix("torch."),
    }


def scaled_weight(generator, rows, cols):
    """Gaussian rows with varied scales, so absmax (and its nested quantisation) spreads."""
    scale = torch.exp(torch.randn(rows, 1, generator=generator) * 0.5) * 0.05
    return torch.randn(rows, cols, generator=generator) * scale


def scaling_sensitive_values(bounds, generator):
    """An absmax and values near boundary * absmax whose code differs between x * (1/absmax)
    (bitsandbytes' full blocks) and x / absmax (its short last block)."""
    for absmax in torch.rand(64, generator=generator) * 2 + 0.1:
        centre = bounds * absmax
        candidates, up, down = [centre], centre, centre
        for _ in range(16):
            up, down = next_float(up, 2.0), next_float(down, -2.0)
            candidates += [up, down]
        x = torch.cat(candidates)
        multiplied = torch.searchsorted(bounds, x * (1.0 / absmax))
        divided = torch.searchsorted(bounds, x / absmax)
        sensitive = x[multiplied != divided]
        if sensitive.numel() >= 6:
            return absmax, sensitive[:40]
    raise AssertionError("no absmax with rounding-sensitive values found")


def ties_weight(quant_type, generator):
    """[5, 60] = 4 full blocks of 64 + a short block of 44; see the docstring (_ties)."""
    _, bounds = sorted_boundaries(code_book(quant_type))

    def block(values, size, absmax):
        fill = (torch.rand(size - values.numel(), generator=generator) * 2 - 1) * absmax * 0.9
        return torch.cat([values, fill])

    one = torch.tensor(1.0)
    edges = torch.cat([bounds, next_float(bounds, 2.0), next_float(bounds, -2.0)])
    block0 = block(torch.cat([one.reshape(1), -one.reshape(1), edges]), 64, 0.0)  # zero fill
    block1 = torch.zeros(64)
    absmax, sensitive = scaling_sensitive_values(bounds, generator)
    block2 = block(torch.cat([absmax.reshape(1), sensitive]), 64, absmax)
    block3 = torch.randn(64, generator=generator) * 0.1
    block3[17] = -block3.abs().max() * 1.5  # absmax from a negative element: scaled -1 -> lowest code
    tail = block(torch.cat([absmax.reshape(1), sensitive]), 44, absmax)
    weight = torch.cat([block0, block1, block2, block3, tail]).reshape(5, 60)
    for values in [block2, tail]:  # both blocks really have absmax `absmax`
        assert values.abs().max() == absmax
    return weight


def zeros_weight(generator):
    """[2, 50] = one full block of 64 + an all-zero short block of 36."""
    weight = scaled_weight(generator, 2, 50)
    weight.view(-1)[64:] = 0.0
    return weight


def make_blocks():
    generator = torch.Generator().manual_seed(7000)
    tensors = {
        "nf4_code": code_book("nf4"),
        "fp4_code": code_book("fp4"),
        "dynamic_map": bnbF.create_dynamic_map(signed=True),
    }
    assert tensors["nf4_code"].shape == (16,) and tensors["dynamic_map"].shape == (256,)
    metadata = {}
    stats = dict(nested_not_nearest=0, nested_codes=0, bf16_mismatches=0, bf16_values=0)

    # [7, 33]: odd element count (zero nibble pad), short last block, odd last dim (bitsandbytes'
    # generic dequantisation path); [130, 66]: blocks straddle rows; [300, 70]: 329 blocks, so
    # the nested blocks of 256 end with a short one.
    weights = {shape: scaled_weight(generator, *shape) for shape in [(32, 64), (7, 33), (130, 66), (300, 70)]}
    for quant_type in ["nf4", "fp4"]:
        for double_quant in [False, True]:
            for (rows, cols), weight in weights.items():
                name = f"{quant_type}_{rows}x{cols}_{'dq' if double_quant else 'plain'}"
                block_case(tensors, metadata, stats, name, weight, quant_type, double_quant)

    block_case(tensors, metadata, stats, "nf4_130x66_dq_b128", weights[(130, 66)], "nf4", True, blocksize=128)
    bf16 = weights[(130, 66)].to(torch.bfloat16)
    block_case(tensors, metadata, stats, "nf4_130x66_dq_bf16in", bf16, "nf4", True)

    for quant_type, double_quant in [("nf4", False), ("nf4", True), ("fp4", False)]:
        suffix = "dq" if double_quant else "plain"
        block_case(tensors, metadata, stats, f"{quant_type}_5x60_{suffix}_ties", ties_weight(quant_type, generator), quant_type, double_quant)
        block_case(tensors, metadata, stats, f"{quant_type}_2x50_{suffix}_zeros", zeros_weight(generator), quant_type, double_quant)

    # The edge cases exercise what they claim.
    assert tensors["nf4_5x60_plain_ties.absmax"][1] == 0.0
    assert tensors["nf4_2x50_plain_zeros.absmax"][-1] == torch.tensor(ABSMAX_FLOOR)
    ties = tensors["nf4_5x60_plain_ties.input"].reshape(-1)
    assert ties[128:192].abs().max() == ties[256:].abs().max()

    NF4_DIR.mkdir(parents=True, exist_ok=True)
    path = NF4_DIR / "blocks.safetensors"
    fixture = json.dumps({"bitsandbytes": bitsandbytes.__version__, "cases": metadata}, sort_keys=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata={"fixture": fixture})
    reloaded = load_file(str(path))
    assert all(torch.equal(reloaded[k], v) for k, v in tensors.items())
    cases = len(metadata)
    print(
        f"nf4/blocks.safetensors: {cases} cases; bf16 dequant vs fp32 dequant rounded to bf16: "
        f"{stats['bf16_mismatches']} of {stats['bf16_values']} differ; nested codes not plain "
        f"nearest: {stats['nested_not_nearest']} of {stats['nested_codes']}"
    )
    assert stats["bf16_mismatches"] == 0, "bitsandbytes' bf16 dequantisation is not fp32 rounded to bf16"


# ---------------------------------------------------------------------------------------------
# 4-bit Llama and QLoRA (transformers + bitsandbytes + PEFT)
# ---------------------------------------------------------------------------------------------


def load_4bit(path):
    """A base folder that is already 4-bit carries its own quantization_config."""
    config = json.loads((Path(path) / "config.json").read_text())
    kwargs = {} if "quantization_config" in config else {"quantization_config": qlora_quantization_config()}
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kwargs)


def check_not_repacked(model):
    for name, module in model.named_modules():
        if isinstance(module, Linear4bit):
            assert not getattr(module.weight.quant_state, "packing_format_for_cpu", False), name


def forward_logits(model, input_ids, attention_mask):
    """Train mode (dropout is 0), no grad: the 4-bit weights stay in bitsandbytes' standard layout."""
    model.train()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    check_not_repacked(model)
    return logits


def make_base():
    """The fp32 base: make_fixtures' tiny Llama sizes, widened so every row is whole blocks."""
    torch.manual_seed(2101)
    sizes = dict(DECODER_ONLY_SIZES, hidden_size=64, intermediate_size=128, head_dim=16)
    config = LlamaConfig(**sizes, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    model = LlamaForCausalLM._from_config(config, attn_implementation="eager")
    out_dir = fresh_dir(BASE_DIR)
    model.save_pretrained(out_dir, safe_serialization=True)
    input_ids, attention_mask, labels = causal_lm_batch(12)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    save_tensors(
        out_dir / "expected.safetensors",
        {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "logits": logits},
    )
    return input_ids, attention_mask, labels


def check_flattened_rule(model):
    """bitsandbytes' dequantised weights equal code[q] · absmax[i // 64] over the flattened weight."""
    for name, module in model.named_modules():
        if isinstance(module, Linear4bit):
            state = module.weight.quant_state
            absmax = bnbF.dequantize_blockwise(state.absmax, state.state2) + state.offset
            n = state.shape[0] * state.shape[1]
            q = unpack_nibbles(module.weight.data.reshape(-1), n)
            rule = (state.code[q].view(-1, BLOCKSIZE) * absmax.view(-1, 1)).reshape(state.shape)
            assert torch.equal(bnbF.dequantize_4bit(module.weight.data, state), rule), name


def make_llama_nf4(input_ids, attention_mask):
    model = load_4bit(BASE_DIR)
    check_flattened_rule(model)
    quantised = sorted(n for n, m in model.named_modules() if isinstance(m, Linear4bit))
    assert quantised == sorted(f"model.layers.{i}.{p}.{m}" for i in range(2) for p, ms in
                               [("self_attn", LINEAR_MODULES[:4]), ("mlp", LINEAR_MODULES[4:])] for m in ms), quantised
    logits = forward_logits(model, input_ids, attention_mask)

    out_dir = fresh_dir(NF4_BASE_DIR)
    model.save_pretrained(out_dir, safe_serialization=True)
    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == "bitsandbytes", saved
    prefix = f"{DEQUANT_MODULE}.weight"
    with safe_open(str(out_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    for suffix in ["", ".absmax", ".nested_absmax", ".nested_quant_map", ".quant_map", ".quant_state.bitsandbytes__nf4"]:
        assert prefix + suffix in keys, (prefix + suffix, sorted(keys))

    reloaded = load_4bit(out_dir)
    assert torch.equal(forward_logits(reloaded, input_ids, attention_mask), logits), "reloading changed logits"
    save_tensors(out_dir / "expected.safetensors", {"input_ids": input_ids, "attention_mask": attention_mask, "logits": logits})
    print(f"{out_dir.name}: saved and reloaded, identical logits")


def peft_grad_name(name):
    assert ".default." in name, name
    return "grad." + name.replace(".default.", ".")


def make_llama_qlora(input_ids, attention_mask, labels):
    base = load_4bit(BASE_DIR)
    # Quantise-at-load is quantize_4bit(fp32 weight, nf4, double quantisation, blocksize 64).
    weight = base.get_submodule(DEQUANT_MODULE).weight
    dequant = bnbF.dequantize_4bit(weight.data, weight.quant_state)
    fp32 = load_file(str(BASE_DIR / "model.safetensors"))[f"{DEQUANT_MODULE}.weight"]
    packed, state = bnbF.quantize_4bit(fp32, blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4")
    assert torch.equal(weight.data, packed) and torch.equal(dequant, bnbF.dequantize_4bit(packed, state))
    assert dequant.dtype == torch.float32 and dequant.shape == fp32.shape

    torch.manual_seed(6000)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=LINEAR_MODULES,
        init_lora_weights=False,  # random lora_B, so lora_A gets gradients and the output changes
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)  # no prepare_model_for_kbit_training (see the docstring)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * 2 * len(LINEAR_MODULES), sorted(trainable)
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable), sorted(trainable)
    with torch.no_grad():
        for name, param in trainable.items():
            assert param.dtype == torch.float32 and param.abs().min() > 0, name

    model.train()
    model.zero_grad(set_to_none=True)
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    output.loss.backward()
    check_not_repacked(model)
    grads = {}
    for name, param in trainable.items():
        assert param.grad is not None and param.grad.abs().max() > 0, f"no gradient for {name}"
        grads[peft_grad_name(name)] = param.grad.detach().clone()
    logits = output.logits.detach()
    assert torch.equal(forward_logits(model, input_ids, attention_mask), logits)

    saved_config = model.peft_config["default"]
    saved_config.target_modules = sorted(saved_config.target_modules)
    saved_config.base_model_name_or_path = f"tests/fixtures/models/{BASE_NAME}"
    out_dir = fresh_dir(QLORA_DIR)
    model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink()  # PEFT's boilerplate model card; nothing the tests use
    adapter = load_file(str(out_dir / "adapter_model.safetensors"))
    assert sorted(f"grad.{k}" for k in adapter) == sorted(grads), (sorted(adapter), sorted(grads))

    expected_path = out_dir / "expected.safetensors"
    save_tensors(
        expected_path,
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "logits": logits,
            "loss": output.loss.detach().reshape(1),
            **grads,
            f"dequant.{DEQUANT_MODULE}.weight": dequant,
        },
    )

    # Round trips through the saved files, as the Rust side will: on the quantise-at-load base and
    # on the saved 4-bit folder.
    for base_dir in [BASE_DIR, NF4_BASE_DIR]:
        diff = adapter_logits_diff(base_dir, out_dir, expected_path, load_in_4bit=True)
        assert diff == 0.0, (base_dir, diff)
    print(f"{out_dir.name}: loss {output.loss.item():.6f}, reload max abs diff 0 (both bases)")


def adapter_logits_diff(base_dir, adapter_dir, expected_path, load_in_4bit):
    """Max abs logits difference, over unmasked positions, between FILE and base+adapter."""
    expected = load_file(str(expected_path))
    if load_in_4bit:
        base = load_4bit(base_dir)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir)
    logits = forward_logits(model, expected["input_ids"], expected["attention_mask"])
    keep = expected["attention_mask"].bool()
    return (logits[keep] - expected["logits"][keep]).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def check_runner_adapter():
    """The other direction: a QLoRA adapter runner trained on the 4-bit base (committed by the
    Rust test `runner_qlora_adapters_load_in_peft_on_the_4bit_base`, RUNNER_BLESS=1 rewrites it)
    loads in PEFT on bitsandbytes' 4-bit base and gives the logits runner computed."""
    adapter_dir = MODELS / "llama-qlora-runner-lora"
    if not adapter_dir.is_dir():
        print(f"{adapter_dir.name}: absent, run the Rust tests with RUNNER_BLESS=1 first")
        return
    diff = adapter_logits_diff(BASE_DIR, adapter_dir, adapter_dir / "expected.safetensors", load_in_4bit=True)
    assert diff <= ADAPTER_TOLERANCE, f"runner's QLoRA adapter gives other logits in PEFT: {diff}"
    print(f"{adapter_dir.name}: PEFT on the 4-bit base matches runner's logits, max abs diff {diff:.3g}")


def generate_all():
    start = time.perf_counter()
    make_blocks()
    input_ids, attention_mask, labels = make_base()
    make_llama_nf4(input_ids, attention_mask)
    make_llama_qlora(input_ids, attention_mask, labels)
    check_runner_adapter()
    print(f"done in {time.perf_counter() - start:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-adapter", help="compare a (4-bit) base model + PEFT adapter with expected logits")
    check.add_argument("--base", required=True, type=Path)
    check.add_argument("--adapter", required=True, type=Path)
    check.add_argument("--expected", required=True, type=Path)
    check.add_argument("--load-in-4bit", action="store_true", help="quantise the base at load: NF4, double quantisation, fp32 compute")
    args = parser.parse_args()

    # Single-threaded CPU fp32 keeps reductions in a fixed order, so reruns are bit-identical.
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    if args.command == "check-adapter":
        diff = adapter_logits_diff(args.base, args.adapter, args.expected, args.load_in_4bit)
        print(f"max abs logits diff: {diff:.3g}")
        sys.exit(1 if diff > ADAPTER_TOLERANCE else 0)
    generate_all()


if __name__ == "__main__":
    main()
