"""Time training steps of runner's models in plain PyTorch + Hugging Face transformers (+ PEFT).

This is the PyTorch side of `runner bench recipe`: runner times training steps of its own model,
then writes the same model (as the transformers config.json it would save), its initial weights
and the batch it timed, and runs this script on them, so one run reports runner/PyTorch ratios of
step time, throughput and peak memory, and both sides' first losses, which agree when both do the
same arithmetic. The script does what a PyTorch user would write: transformers models with SDPA
attention, PEFT for LoRA, fused torch.optim.AdamW (the Trainer's default) and clip_grad_norm_.

How to run (runner writes the files; see runner/commands/bench/pytorch.rs):

  .venv/bin/python scripts/bench_pytorch.py SPEC.json      (or `-` to read the spec from stdin)

The spec (every key required; null only where marked):

  {"task": "causal_lm" | "fid_distill" | "vlm",
   "model": {...},                              per task, below
   "weights": "weights.safetensors" | null,    the initial weights by transformers state-dict
        name (per task, below), loaded before LoRA and cast to the models' dtype. Every parameter
        needs a value but tied aliases (T5's encoder/decoder.embed_tokens, a tied lm_head), and
        every name must be a parameter; runner's own LoRA tensors (`lora_` in the name) are
        skipped, PEFT makes its own (LoRA B starts at zero on both sides).
        null = random initialisation from "seed".
   "batch": "batch.safetensors",               the batch, the same every step (below)
   "precision": "fp32" | "bf16_mixed" | "bf16",
        fp32       fp32 weights and compute
        bf16_mixed fp32 weights, forward under torch.autocast(device, dtype=torch.bfloat16)
        bf16       every model in bfloat16 (LoRA adapters stay fp32, as PEFT does)
   "gradient_checkpointing": true,             non-reentrant activation checkpointing per layer,
        of the models runner checkpoints: the decoder (causal_lm, vlm), the trained T5s (fid)
   "lora": null | {"rank": 8, "alpha": 16, "dropout": 0.0,
                   "targets": ["q_proj", "v_proj"],     PEFT target_modules
                   "also_train": ["embed", "norm"]},    see below
        null = full fine-tuning. LoRA (PEFT task CAUSAL_LM, or SEQ_2_SEQ_LM for T5, whose module
        names are "q", "v", …) applies to the causal LM, the FiD student, the VLM's decoder only.
        also_train has runner's meaning: parameters of that model whose names contain an entry
        train too. They become PEFT modules_to_save (the modules owning those parameters, so
        "embed" -> embed_tokens and "norm" -> every norm); PEFT trains a copy, keeps the original.
   "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
   "max_grad_norm": 1.0 | null,                null = no clipping
   "warmup_steps": 3, "steps": 10,             untimed steps, then timed steps
   "device": "cpu" | "cuda",
   "threads": 2 | null,                        torch.set_num_threads on CPU; null = torch's default
   "seed": 0}                                  random initialisation (weights null) and LoRA's A

"model" per task:

  causal_lm    {"config": {config.json}}   a Llama, Mistral or Qwen2 (model_type) causal LM.
               Built by AutoModelForCausalLM.from_config (SDPA attention, no KV cache).
               Weights: its state-dict names (model.embed_tokens.weight, …, lm_head.weight).
               Loss: transformers' causal-LM loss on labels (shifted inside), attention_mask given.
  fid_distill  IAG's distillation step: a T5 student and a Fusion-in-Decoder T5 teacher.
               {"student": {T5 config.json}, "teacher": {T5 config.json},
                "teacher_trains": bool,          trained in full beside the student, else frozen
                "alpha_kd": 0.4, "alpha_on": "kd" | "ce", "temperature": 3.0,
                "extra_kl": null | {"temperature": 1.0, "scale": 1.0}}
               Both T5ForConditionalGeneration.from_config; tie_word_embeddings false gives an
               lm_head of its own (transformers 5's T5Config ties it always otherwise). The student
               trains (in full, or its LoRA); a frozen teacher is in eval mode, without gradients.
               Weights: the student's names (shared.weight, encoder.block.0.layer.0.SelfAttention
               .q.weight, …), the teacher's prefixed "teacher.". Loss, IAG's code, with decoder
               inputs = labels shifted right (start token 0 first, the last dropped, -100 -> 0):
               the teacher encodes each of the N passages apart and its decoder reads them joined;
               CE = the student's cross-entropy (mean over targets, -100 ignored); KD = the mean over
               every target position (padding included) of KL(softmax(t/T) || softmax(s/T)) in
               fp32, no T^2; loss = a*KD + (1-a)*CE for alpha_on "kd", a*CE + (1-a)*KD for "ce";
               extra_kl adds sigmoid(k)*k with k = the summed KL at its temperature / B / scale;
               a trained teacher adds its own CE (its logits are detached for KD).
  vlm          CoE's vision-language model: CLIP's vision tower, LLaVA's MLP projector, a decoder.
               {"decoder": {config.json}, "vision": {"hidden_size", "intermediate_size",
                "num_hidden_layers", "num_attention_heads", "image_size", "patch_size",
                "num_channels", "layer_norm_eps"},
                "connector_layers": 2,           Linear, then (exact GELU, Linear) x (layers - 1)
                "vision_trains": bool, "connector_trains": bool,
                "image_pad": 5}                  the placeholder token the image features replace
               The vision tower is CLIPVisionModel(CLIPVisionConfig(**vision, hidden_act
               "quick_gelu", attention_dropout 0)), the decoder as for causal_lm. The vision tower
               trains iff vision_trains (but its post_layernorm, unused: never), the projector iff
               connector_trains, the decoder in full or its LoRA.
               Weights: the decoder's names; "vision.vision_model." + transformers 5's
               CLIPVisionModel names (vision.vision_model.embeddings.class_embedding, …);
               "connector.connector.I" + ".weight"/".bias" for the I-th module of the projector
               (0, 2, 4, …). The last layer's patch states (class token dropped, no post-norm) go
               through the projector and replace the placeholders' embeddings in reading order;
               loss: token-mean causal-LM cross-entropy, logits[:, :-1] on labels[:, 1:] (-100
               ignored), in fp32.

The batch file (int64 except pixels, float32): input_ids [B, T], attention_mask [B, T], labels
([B, T]; fid_distill: [B, A] targets), and for fid_distill passage_ids and passage_mask [B, N, L],
for vlm pixels [images, channels, size, size]. Labels: causal_lm the input ids, vlm the ids with
-100 on prompt and padding, fid_distill the targets with -100 on padding. Tokens a step = B x T of
input_ids, as runner counts.

Output: one line of JSON on stdout, everything else (warnings, progress) on stderr:

  {"framework": "pytorch", "task": ..., "torch": "2.11.0", "transformers": "5.23.0",
   "peft": "0.21.2" | null, "step_time_s": median of the timed steps, "step_times_s": [...],
   "phases_s": {"forward", "backward", "update"}: medians of each phase (update: zero_grad,
        clipping, AdamW; on CUDA each phase ends with a synchronize), as runner splits its step,
   "ranks": 1, "tokens_per_s": ranks * B * T / step_time_s,
   "peak_memory_mib": ..., "memory_kind": "cuda_max_allocated" | "cpu_peak_rss_growth",
   "peak_rss_mib": the process's absolute peak resident set (VmHWM),
   "trainable_params": number of trainable parameters,
   "loss_first": loss of the first step (warmup included), "loss_last": loss of the last step}

Under torchrun (WORLD_SIZE > 1, as `runner bench recipe … --nproc N` runs it) every rank joins a
process group (Gloo on CPU, NCCL on CUDA, device cuda:LOCAL_RANK) and trains the same batch through
one DistributedDataParallel around the task's models (so the gradients of every trained parameter,
whichever model holds it, are averaged), and rank 0 alone prints the result.

Peak memory is measured as runner measures its own. On CUDA: torch.cuda.max_memory_allocated()
over the timed steps (reset after warmup; weights, gradients and optimizer state included). On
the CPU: the peak resident set (VmHWM) over the steps, less what the process holds besides the
models (the resident set once they are built, loaded and adapted, freed memory returned, less
their parameters' and buffers' bytes: libraries, the batch), with the high-water mark reset
(gc, malloc_trim, /proc/self/clear_refs 5) once the optimizer is made, so that building and
loading do not count. runner does the same, which leaves out the data, tokenizer and metrics it
loads and the script does not. Non-finite numbers are written as null.

Exit status: 0 on success, 2 for a bad spec (the message on stderr names the key), 1 for any other
failure (out of memory, for instance; the traceback goes to stderr).
"""

import contextlib
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback

TASKS = ("causal_lm", "fid_distill", "vlm")
PRECISIONS = ("fp32", "bf16_mixed", "bf16")
DEVICES = ("cpu", "cuda")
IGNORE = -100


class SpecError(Exception):
    """A problem with the spec; the message starts with the key."""


# ----------------------------------------------------------------------------------------------
# Reading and checking the spec (before importing torch, so a bad spec fails fast).


_REQUIRED = object()


class Fields:
    """Typed access to one JSON object of the spec; every error names the key's full path.

    Each getter takes `default`: leave it out for a required key; a missing or null key then
    is an error. With a default (None for an optional value) a missing or null key gives it.
    """

    def __init__(self, obj, path, known):
        if not isinstance(obj, dict):
            raise SpecError(f"{path or 'spec'}: expected a JSON object, found {json.dumps(obj)}")
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise SpecError(
                f"{self._key(path, unknown[0])}: unknown key (expected one of {', '.join(known)})"
            )
        self.obj = obj
        self.path = path

    @staticmethod
    def _key(path, key):
        return f"{path}.{key}" if path else key

    def _get(self, key, default):
        value = self.obj.get(key)
        if value is None:
            if default is _REQUIRED:
                what = "missing" if key not in self.obj else "must not be null"
                raise SpecError(f"{self._key(self.path, key)}: {what}")
            return default
        return value

    def _fail(self, key, expected, value):
        raise SpecError(f"{self._key(self.path, key)}: expected {expected}, found {json.dumps(value)}")

    def int(self, key, minimum=None, default=_REQUIRED):
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(key, "an integer", value)
        if minimum is not None and value < minimum:
            self._fail(key, f"an integer >= {minimum}", value)
        return value

    def float(self, key, minimum=None, positive=False, below=None, default=_REQUIRED):
        value = self._get(key, default)
        if value is None:
            return None
        if not is_number(value):
            self._fail(key, "a finite number", value)
        if positive and value <= 0:
            self._fail(key, "a number > 0", value)
        if minimum is not None and value < minimum:
            self._fail(key, f"a number >= {minimum}", value)
        if below is not None and value >= below:
            self._fail(key, f"a number < {below}", value)
        return float(value)

    def bool(self, key, default=_REQUIRED):
        value = self._get(key, default)
        if not isinstance(value, bool):
            self._fail(key, "true or false", value)
        return value

    def choice(self, key, options):
        value = self._get(key, _REQUIRED)
        if value not in options:
            self._fail(key, "one of " + ", ".join(json.dumps(o) for o in options), value)
        return value

    def strings(self, key, nonempty=False, default=_REQUIRED):
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            self._fail(key, "a list of non-empty strings", value)
        if nonempty and not value:
            self._fail(key, "a non-empty list of strings", value)
        return value

    def betas(self, key):
        value = self._get(key, _REQUIRED)
        if not (isinstance(value, list) and len(value) == 2 and all(is_number(b) and 0 <= b < 1 for b in value)):
            self._fail(key, "two numbers in [0, 1)", value)
        return (float(value[0]), float(value[1]))

    def object(self, key, known, default=_REQUIRED):
        value = self._get(key, default)
        return None if value is None else Fields(value, self._key(self.path, key), known)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


LORA_KEYS = ("rank", "alpha", "dropout", "targets", "also_train")
SPEC_KEYS = (
    "task", "model", "weights", "batch", "precision", "gradient_checkpointing", "lora", "lr",
    "weight_decay", "betas", "eps", "max_grad_norm", "warmup_steps", "steps", "device", "threads",
    "seed",
)
MODEL_KEYS = {
    "causal_lm": ("config",),
    "fid_distill": ("student", "teacher", "teacher_trains", "alpha_kd", "alpha_on", "temperature", "extra_kl"),
    "vlm": ("decoder", "vision", "connector_layers", "vision_trains", "connector_trains", "image_pad"),
}
VISION_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
    "patch_size", "num_channels", "layer_norm_eps",
)


def config_dict(fields, key, model_types):
    """A config.json object whose model_type is one of `model_types`."""
    value = fields._get(key, _REQUIRED)
    where = fields._key(fields.path, key)
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a config.json object, found {json.dumps(value)}")
    if value.get("model_type") not in model_types:
        raise SpecError(f"{where}.model_type: expected one of {', '.join(model_types)}, found {json.dumps(value.get('model_type'))}")
    return value


def parse_model(task, m):
    """The task's "model" object, checked."""
    decoders = ("llama", "mistral", "qwen2")
    if task == "causal_lm":
        return {"config": config_dict(m, "config", decoders)}
    if task == "fid_distill":
        extra = m.object("extra_kl", ("temperature", "scale"), default=None)
        return {
            "student": config_dict(m, "student", ("t5",)),
            "teacher": config_dict(m, "teacher", ("t5",)),
            "teacher_trains": m.bool("teacher_trains"),
            "alpha_kd": m.float("alpha_kd", minimum=0.0),
            "alpha_on": m.choice("alpha_on", ("kd", "ce")),
            "temperature": m.float("temperature", positive=True),
            "extra_kl": None if extra is None else {
                "temperature": extra.float("temperature", positive=True),
                "scale": extra.float("scale", positive=True),
            },
        }
    v = m.object("vision", VISION_KEYS)
    return {
        "decoder": config_dict(m, "decoder", decoders),
        "vision": {k: v.float(k, positive=True) if k == "layer_norm_eps" else v.int(k, minimum=1) for k in VISION_KEYS},
        "connector_layers": m.int("connector_layers", minimum=1),
        "vision_trains": m.bool("vision_trains"),
        "connector_trains": m.bool("connector_trains"),
        "image_pad": m.int("image_pad", minimum=0),
    }


def parse_spec(raw):
    """The checked spec as a plain dict."""
    top = Fields(raw, "", SPEC_KEYS)
    task = top.choice("task", TASKS)
    lora = None
    lo = top.object("lora", LORA_KEYS, default=None)
    if lo is not None:
        lora = {
            "rank": lo.int("rank", minimum=1),
            "alpha": lo.float("alpha"),
            "dropout": lo.float("dropout", minimum=0.0, below=1.0, default=0.0),
            "targets": lo.strings("targets", nonempty=True),
            "also_train": lo.strings("also_train", default=[]),
        }
    weights = top._get("weights", None)
    batch = top._get("batch", _REQUIRED)
    for key, value in (("weights", weights), ("batch", batch)):
        if value is not None and not isinstance(value, str):
            top._fail(key, "a file path", value)
    return {
        "task": task,
        "model": parse_model(task, top.object("model", MODEL_KEYS[task])),
        "weights": weights,
        "batch": batch,
        "precision": top.choice("precision", PRECISIONS),
        "gradient_checkpointing": top.bool("gradient_checkpointing"),
        "lora": lora,
        "lr": top.float("lr", minimum=0.0),
        "weight_decay": top.float("weight_decay", minimum=0.0),
        "betas": top.betas("betas"),
        "eps": top.float("eps", positive=True),
        "max_grad_norm": top.float("max_grad_norm", positive=True, default=None),
        "warmup_steps": top.int("warmup_steps", minimum=0),
        "steps": top.int("steps", minimum=1),
        "device": top.choice("device", DEVICES),
        "threads": top.int("threads", minimum=1, default=None),
        "seed": top.int("seed", minimum=0),
    }


def read_spec(arg):
    try:
        text = sys.stdin.read() if arg == "-" else open(arg, encoding="utf-8").read()
    except OSError as e:
        raise SpecError(f"spec file {arg}: {e.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"spec: not valid JSON ({e})") from None
    return parse_spec(raw)


# ----------------------------------------------------------------------------------------------
# Memory.


def rss_mib(key="VmHWM"):
    """The process's peak (VmHWM) or current (VmRSS) resident set in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def tensor_mib(module):
    """MiB of every parameter and buffer of `module`, shared ones once."""
    sizes = {t.data_ptr(): t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]}
    return sum(sizes.values()) / 2**20


def reset_peak_rss():
    """Starts VmHWM again from the current resident set, freed memory returned first, as runner's
    memory::reset_peak does; where Linux does not allow it the peak counts from the start."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


# ----------------------------------------------------------------------------------------------
# Models.


def hf_config(config):
    """A transformers config object from a config.json dict."""
    from transformers import AutoConfig

    values = dict(config)
    model_type = values.pop("model_type")
    values.pop("architectures", None)
    values["use_cache"] = False
    return AutoConfig.for_model(model_type, **values)


def untied_t5_head(model, config, torch):
    """The T5 with an lm_head of its own when its config.json says tie_word_embeddings false
    (T5 v1.1, Flan-T5). transformers 5's T5Config reads that key only to decide the decoder
    output scaling and ties the head to the embedding always; from_pretrained unties them when a
    checkpoint holds both, from_config cannot know."""
    if config.get("tie_word_embeddings", True) is not False:
        return model
    model.config.tie_word_embeddings = False
    model.all_tied_weights_keys.pop("lm_head.weight", None)
    head = torch.empty_like(model.lm_head.weight)
    # T5's own initialisation of an untied head (used when "weights" is null).
    torch.nn.init.normal_(head, std=model.config.initializer_factor)
    model.lm_head.weight = torch.nn.Parameter(head)
    return model


def checkpointing(model):
    """Non-reentrant activation checkpointing of a transformers model's layers."""
    # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias).
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def modules_to_save(model, also_train):
    """PEFT modules_to_save for runner's also_train: the modules owning every parameter whose
    name contains an entry, by full name (PEFT matches name suffixes)."""
    names = [n for n, _ in model.named_parameters()]
    modules = set()
    for i, entry in enumerate(also_train):
        owners = {n.rsplit(".", 1)[0] for n in names if entry in n}
        if not owners:
            raise SpecError(f"lora.also_train.{i}: {entry!r} is in no parameter name of the model")
        modules |= owners
    return sorted(modules)


def with_lora(model, lora, task_type):
    """The model with PEFT's LoRA (and its modules_to_save), or the model itself."""
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora["rank"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["targets"],
        modules_to_save=modules_to_save(model, lora["also_train"]) or None,
        bias="none",
        task_type=task_type,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise SpecError(f"lora: PEFT refused the adapter config: {e}") from None


def load_weights(parts, path):
    """Copies runner's initial weights into `parts` ({name prefix in the file: module}). Every
    parameter must get a value but tied aliases (T5's embed_tokens, a tied lm_head), which share
    the tensor of one that does; a name in the file that no part has is an error too."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise SpecError(f"weights: cannot read {path}: {e}") from None
    # runner's own LoRA factors: PEFT makes its own (LoRA B starts at zero on both sides).
    tensors = {n: t for n, t in tensors.items() if "lora_" not in n}
    # Each name belongs to the part with the longest matching prefix ("vision.vision_model."
    # before the decoder's "").
    prefixes = sorted(parts, key=len, reverse=True)
    states = {p: {} for p in parts}
    for name, tensor in tensors.items():
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None:
            raise SpecError(f"weights: {name} in {path} is no parameter of the model")
        states[prefix][name[len(prefix):]] = tensor
    del tensors
    for prefix, module in parts.items():
        state = states.pop(prefix)
        current = module.state_dict(keep_vars=True)
        for name, tensor in state.items():
            if name not in current:
                raise SpecError(f"weights: {prefix}{name} in {path} is no parameter of the model")
            shape, expected = list(tensor.shape), list(current[name].shape)
            if shape != expected:
                raise SpecError(f"weights: {prefix}{name} in {path} has shape {shape}, the model's is {expected}")
        # Copies into the model's own tensors: its dtype and device, ties kept.
        module.load_state_dict(state, strict=False)
        loaded = {current[n].data_ptr() for n in state}
        for name, p in module.named_parameters(remove_duplicate=False):
            if p.data_ptr() not in loaded:
                raise SpecError(f"weights: {path} has no {prefix}{name}")
        del state


class CausalLm:
    """A Llama-family decoder and transformers' causal-LM loss (labels shifted inside)."""

    def __init__(self, spec, torch, dtype):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_config(
            hf_config(spec["model"]["config"]), dtype=dtype, attn_implementation="sdpa"
        )
        self.parts = {"": self.model}

    def finish(self, spec):
        """Checkpointing, LoRA, train mode; the modules of the step."""
        if spec["gradient_checkpointing"]:
            checkpointing(self.model)
        self.model = with_lora(self.model, spec["lora"], "CAUSAL_LM")
        self.model.train()
        return [self.model]

    def loss(self, batch):
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss


class FidDistill:
    """IAG's step: a T5 student, and a FiD teacher that encodes each passage apart."""

    def __init__(self, spec, torch, dtype):
        from transformers import AutoModelForSeq2SeqLM

        m = spec["model"]
        self.m, self.torch = m, torch
        self.student, self.teacher = (
            untied_t5_head(
                AutoModelForSeq2SeqLM.from_config(hf_config(m[k]), dtype=dtype, attn_implementation="sdpa"),
                m[k],
                torch,
            )
            for k in ("student", "teacher")
        )
        self.parts = {"": self.student, "teacher.": self.teacher}

    def finish(self, spec):
        trains = self.m["teacher_trains"]
        if spec["gradient_checkpointing"]:
            checkpointing(self.student)
            if trains:
                checkpointing(self.teacher)
        self.student = with_lora(self.student, spec["lora"], "SEQ_2_SEQ_LM")
        self.student.train()
        # A frozen teacher runs without dropout or gradients.
        self.teacher.train(trains)
        self.teacher.requires_grad_(trains)
        return [self.student, self.teacher]

    def loss(self, batch):
        torch, m = self.torch, self.m
        F = torch.nn.functional
        labels = batch["labels"]
        # T5's shift: decoder start (0) first, the last target dropped, -100 read as padding (0).
        shifted = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        decoder_ids = shifted.masked_fill(shifted == IGNORE, 0)
        s = self.student(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_ids
        ).logits
        with contextlib.nullcontext() if m["teacher_trains"] else torch.no_grad():
            t = self.fid_teacher(batch["passage_ids"], batch["passage_mask"], decoder_ids)

        def ce(logits):
            return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

        def kl(temperature):
            """Σ_v p_t·(log p_t − log p_s) per position, softmaxes at the temperature in fp32;
            the teacher's logits are detached (a trained teacher learns from its CE only)."""
            log_s = F.log_softmax(s.float() / temperature, -1)
            log_t = F.log_softmax(t.detach().float() / temperature, -1)
            return (log_t.exp() * (log_t - log_s)).sum(-1)

        a = m["alpha_kd"]
        kd = kl(m["temperature"]).mean()
        loss = a * kd + (1 - a) * ce(s) if m["alpha_on"] == "kd" else a * ce(s) + (1 - a) * kd
        if m["extra_kl"] is not None:
            k = kl(m["extra_kl"]["temperature"]).sum() / labels.shape[0] / m["extra_kl"]["scale"]
            loss = loss + torch.sigmoid(k) * k
        if m["teacher_trains"]:
            loss = loss + ce(t)
        return loss

    def fid_teacher(self, ids, mask, decoder_ids):
        """Fusion-in-Decoder: the encoder reads each of the N passages apart, the decoder attends
        to their states joined."""
        b, n, l = ids.shape
        encoded = self.teacher.encoder(input_ids=ids.view(b * n, l), attention_mask=mask.view(b * n, l))
        joined = encoded.last_hidden_state.view(b, n * l, -1)
        return self.teacher(
            encoder_outputs=(joined,), attention_mask=mask.view(b, n * l), decoder_input_ids=decoder_ids
        ).logits


class Vlm:
    """CoE's model: CLIP's vision tower, LLaVA's projector, a decoder reading the image features
    in place of the placeholder tokens."""

    def __init__(self, spec, torch, dtype):
        from transformers import AutoModel, AutoModelForCausalLM, CLIPVisionConfig

        m = spec["model"]
        self.m, self.torch = m, torch
        self.decoder = AutoModelForCausalLM.from_config(
            hf_config(m["decoder"]), dtype=dtype, attn_implementation="sdpa"
        )
        vision = CLIPVisionConfig(**m["vision"], hidden_act="quick_gelu", attention_dropout=0.0)
        self.vision = AutoModel.from_config(vision, dtype=dtype, attn_implementation="sdpa")
        width = self.decoder.config.hidden_size
        layers = [torch.nn.Linear(vision.hidden_size, width)]
        for _ in range(m["connector_layers"] - 1):
            layers += [torch.nn.GELU(), torch.nn.Linear(width, width)]  # exact (erf) GELU
        # Inside a module of its own so that its names are runner's: connector.I.weight in the
        # file's "connector." part.
        self.connector = torch.nn.Module()
        self.connector.connector = torch.nn.Sequential(*layers).to(dtype)
        # transformers 5's CLIPVisionModel names its parameters without the "vision_model." its
        # checkpoints (and runner) put in front.
        self.parts = {"": self.decoder, "vision.vision_model.": self.vision, "connector.": self.connector}

    def finish(self, spec):
        if spec["gradient_checkpointing"]:
            checkpointing(self.decoder)
        self.decoder = with_lora(self.decoder, spec["lora"], "CAUSAL_LM")
        self.vision.requires_grad_(self.m["vision_trains"])
        # CLIP's post-norm makes the pooled output, which the model does not read: no gradient.
        self.vision.post_layernorm.requires_grad_(False)
        self.connector.requires_grad_(self.m["connector_trains"])
        for module in (self.decoder, self.vision, self.connector):
            module.train()
        return [self.decoder, self.vision, self.connector]

    def loss(self, batch):
        torch = self.torch
        ids = batch["input_ids"]
        embeds = self.decoder.get_input_embeddings()(ids)
        # The last layer's patch states, class token dropped (no post-norm).
        patches = self.vision(pixel_values=batch["pixels"].to(embeds.dtype)).last_hidden_state[:, 1:]
        visual = self.connector.connector(patches)
        slots = (ids == self.m["image_pad"]).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, visual.reshape(-1, visual.shape[-1]).to(embeds.dtype))
        logits = self.decoder(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
        )


TASK_CLASSES = {"causal_lm": CausalLm, "fid_distill": FidDistill, "vlm": Vlm}
# The transformers classes each task builds, loaded before anything is measured (see bench).
TASK_IMPORTS = {
    "causal_lm": ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"),
    "fid_distill": ("T5ForConditionalGeneration",),
    "vlm": ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "CLIPVisionModel"),
}


def build(spec, torch):
    """The task's models on the device with runner's weights (or random ones from the seed),
    checkpointing and LoRA applied, in train mode; the step as one module (its forward is the
    loss, what DDP wraps), and the trainable parameters."""
    device = torch.device(spec["device"])
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    torch.manual_seed(spec["seed"])
    with device:
        task = TASK_CLASSES[spec["task"]](spec, torch, dtype)
    if spec["weights"] is not None:
        load_weights(task.parts, spec["weights"])
    step = torch.nn.ModuleList(task.finish(spec))
    step.forward = task.loss
    params = [p for p in step.parameters() if p.requires_grad]
    return step, params


# ----------------------------------------------------------------------------------------------
# Training.


# The batch file's tensors per task, with their number of dimensions.
BATCH_TENSORS = {
    "causal_lm": {"input_ids": 2, "attention_mask": 2, "labels": 2},
    "fid_distill": {"input_ids": 2, "attention_mask": 2, "labels": 2, "passage_ids": 3, "passage_mask": 3},
    "vlm": {"input_ids": 2, "attention_mask": 2, "labels": 2, "pixels": 4},
}


def read_batch(spec):
    """The batch on the device, its tensors checked."""
    from safetensors.torch import load_file

    path = spec["batch"]
    try:
        batch = load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise SpecError(f"batch: cannot read {path}: {e}") from None
    for name, dims in BATCH_TENSORS[spec["task"]].items():
        if name not in batch:
            raise SpecError(f"batch: {path} has no tensor {name}")
        if batch[name].dim() != dims:
            raise SpecError(f"batch: {name} in {path} has shape {list(batch[name].shape)}, expected {dims} dimensions")
    return {n: t.to(spec["device"]) for n, t in batch.items()}


def train(spec, torch, step_module, params, optimizer, batch):
    """Warmup and timed steps: each timed step's phase times, the first and last loss, the CUDA peak in MiB."""
    device = spec["device"]
    cuda = device == "cuda"
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16)
        if spec["precision"] == "bf16_mixed"
        else contextlib.nullcontext()
    )

    def now():
        # On CUDA a lap waits for the device, so that a phase's time is its kernels', as in runner.
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def step():
        """The loss and the times of the forward, the backward and the update (runner's phases)."""
        start = now()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = step_module(batch)
        forward = now()
        loss.backward()
        backward = now()
        if spec["max_grad_norm"] is not None:
            torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])
        optimizer.step()
        loss = loss.detach()
        loss.item()
        update = now()
        return loss, (forward - start, backward - forward, update - backward)

    losses = []
    for _ in range(spec["warmup_steps"]):
        losses.append(step()[0])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    phases = []
    for _ in range(spec["steps"]):
        loss, laps = step()
        losses.append(loss)
        phases.append(laps)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return phases, losses[0].item(), losses[-1].item(), cuda_peak


def finite(x):
    return x if x is not None and math.isfinite(x) else None


def bench(spec):
    import warnings

    # Deprecation notices and the like from transformers and PEFT; torch's warnings still show.
    warnings.filterwarnings("ignore", module=r"(transformers|peft)(\.|$)")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        raise SpecError("device: \"cuda\" but torch sees no CUDA device")
    if spec["device"] == "cpu" and spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])

    # transformers loads its modeling code lazily, and that alone raises the resident set by about
    # 150 MiB: load it (and PEFT) first, so that what is measured is the models and their training.
    for name in TASK_IMPORTS[spec["task"]]:
        getattr(transformers, name)
    peft_version = None
    if spec["lora"] is not None:
        import peft

        peft_version = peft.__version__
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if spec["device"] == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if spec["device"] == "cuda" else "gloo")
    batch = read_batch(spec)
    step_module, params = build(spec, torch)
    trainable = sum(p.numel() for p in params)
    # What the process holds besides the models (libraries, the batch), as runner counts it:
    # the resident set once they are built, freed memory returned, less their bytes.
    reset_peak_rss()
    besides_models = rss_mib("VmRSS") - tensor_mib(step_module)
    # Fused, as transformers' Trainer builds it by default with torch >= 2.8 (`adamw_torch_fused`).
    optimizer = torch.optim.AdamW(
        params,
        lr=spec["lr"],
        betas=spec["betas"],
        eps=spec["eps"],
        weight_decay=spec["weight_decay"],
        fused=True,
    )
    if world > 1:
        # Averages the trained parameters' gradients over the ranks, whichever model they are in.
        step_module = torch.nn.parallel.DistributedDataParallel(step_module)
    # The peak of the steps, not of building (runner resets its own here too).
    reset_peak_rss()
    phases, loss_first, loss_last, cuda_peak = train(spec, torch, step_module, params, optimizer, batch)
    times = [sum(laps) for laps in phases]
    rss_peak = rss_mib()
    if world > 1:
        dist.destroy_process_group()

    median = statistics.median(times)
    b, t = batch["input_ids"].shape
    return {
        "framework": "pytorch",
        "task": spec["task"],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_version,
        "step_time_s": median,
        "step_times_s": times,
        "phases_s": {
            name: statistics.median(laps[i] for laps in phases)
            for i, name in enumerate(["forward", "backward", "update"])
        },
        "ranks": world,
        "tokens_per_s": world * b * t / median,
        "peak_memory_mib": cuda_peak if cuda_peak is not None else rss_peak - besides_models,
        "memory_kind": "cuda_max_allocated" if cuda_peak is not None else "cpu_peak_rss_growth",
        "peak_rss_mib": rss_peak,
        "trainable_params": trainable,
        "loss_first": finite(loss_first),
        "loss_last": finite(loss_last),
    }


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: bench_pytorch.py SPEC.json | -   (see the docstring for the spec)", file=sys.stderr)
        return 2
    real_stdout = sys.stdout
    try:
        spec = read_spec(argv[1])
        # Libraries print now and then; stdout carries only the result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = bench(spec)
    except SpecError as e:
        print(f"bench_pytorch: bad spec: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc(file=sys.stderr)
        print("bench_pytorch: failed (traceback above)", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
