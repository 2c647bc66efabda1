"""Time training steps of a Llama-family model in plain PyTorch + Hugging Face transformers (+ PEFT).

This is the PyTorch side of `runner bench RECIPE`: runner times training steps of its own model,
writes the same model, batch and precision as a JSON spec, runs this script on it and divides the
two results, so one run reports runner/PyTorch ratios for step time, throughput and peak memory.
The script does what a PyTorch user would write: an HF model built from the config values with
SDPA attention, HF's causal-LM loss, PEFT for LoRA, torch.optim.AdamW and clip_grad_norm_.

How to run:

  .venv/bin/python scripts/bench_pytorch.py SPEC.json      (or `-` to read the spec from stdin)

The spec (every key required unless marked optional):

  {"arch": {"family": "llama" | "mistral" | "qwen2",
            "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2,          optional, null = one per attention head
            "max_position_embeddings": 128,
            "rope_theta": 10000.0,             optional, default 10000
            "rms_norm_eps": 1e-6,              optional, default 1e-6
            "attention_bias": false,           optional; must be true for qwen2, false for mistral
            "sliding_window": null,            optional, mistral/qwen2 only; null = full attention
            "tie_word_embeddings": false},     optional, default false
   "rope_factor": 2.0,                         linear RoPE scaling (position interpolation); 1 = none
   "batch_size": 2, "seq_len": 256,
   "precision": "fp32" | "bf16_mixed" | "bf16",
        fp32       fp32 weights and compute
        bf16_mixed fp32 weights, forward under torch.autocast(device, dtype=torch.bfloat16)
        bf16       the whole model in bfloat16 (LoRA adapters stay fp32, as PEFT does)
   "gradient_checkpointing": true,             non-reentrant activation checkpointing per layer
   "lora": null | {"rank": 8, "alpha": 16, "dropout": 0.0,
                   "targets": ["q_proj", "v_proj"],     PEFT target_modules
                   "also_train": ["embed", "norm"]},    optional; see below
        null = full fine-tuning. also_train has runner's meaning: parameters whose names contain
        an entry train too. They become PEFT modules_to_save (the modules owning those
        parameters, so "embed" -> embed_tokens and "norm" -> every RMSNorm, the layers' and the
        final one); PEFT trains a copy of each and keeps the original frozen.
   "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
   "max_grad_norm": 1.0,                       null = no clipping
   "warmup_steps": 3, "steps": 10,             untimed steps, then timed steps
   "device": "cpu" | "cuda",
   "threads": 2,                               torch.set_num_threads on CPU; null = torch's default
   "seed": 0}                                  model init, LoRA init and the batch

The batch is batch_size x seq_len random token ids in [0, vocab_size), labels = the ids (HF shifts
them), the same batch every step. The learning rate is constant.

Output: one line of JSON on stdout, everything else (warnings, progress) on stderr:

  {"framework": "pytorch", "torch": "2.11.0", "transformers": "5.23.0", "peft": "0.21.2" | null,
   "step_time_s": median of the timed steps, "step_times_s": [...],
   "tokens_per_s": batch_size * seq_len / step_time_s,
   "peak_memory_mib": ..., "memory_kind": "cuda_max_allocated" | "cpu_peak_rss_growth",
   "peak_rss_mib": the process's absolute peak resident set (VmHWM),
   "trainable_params": number of trainable parameters,
   "loss_first": loss of the first step (warmup included), "loss_last": loss of the last step}

Under torchrun (WORLD_SIZE > 1: `torchrun --standalone --nproc-per-node N bench_pytorch.py
SPEC.json`, as `runner bench recipe … --nproc N` runs it) every rank joins a process group (Gloo
on CPU, NCCL on CUDA, device cuda:LOCAL_RANK), trains the same batch through
DistributedDataParallel, and rank 0 alone prints the result, whose tokens_per_s counts every
rank's batch.

Step times end with torch.cuda.synchronize() on CUDA. Peak memory on CUDA is
torch.cuda.max_memory_allocated() over the timed steps (the statistics are reset after warmup, so
weights, gradients and optimizer state are included); on CPU it is the growth of the process's
peak resident set (VmHWM in /proc/self/status, Linux only) from before the model is built to
after the last step, the way `runner bench checkpointing` measures runner. Non-finite numbers are
written as null.

Exit status: 0 on success, 2 for a bad spec (the message on stderr names the key), 1 for any other
failure (out of memory, for instance; the traceback goes to stderr).
"""

import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback

PRECISIONS = ("fp32", "bf16_mixed", "bf16")
DEVICES = ("cpu", "cuda")
# The transformers class each family builds (AutoModelForCausalLM picks it from the config).
MODEL_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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


ARCH_KEYS = (
    "family", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta",
    "rms_norm_eps", "attention_bias", "sliding_window", "tie_word_embeddings",
)
LORA_KEYS = ("rank", "alpha", "dropout", "targets", "also_train")
SPEC_KEYS = (
    "arch", "rope_factor", "batch_size", "seq_len", "precision", "gradient_checkpointing", "lora",
    "lr", "weight_decay", "betas", "eps", "max_grad_norm", "warmup_steps", "steps", "device",
    "threads", "seed",
)


def parse_spec(raw):
    """The checked spec as a plain dict with every optional value filled in."""
    top = Fields(raw, "", SPEC_KEYS)
    a = top.object("arch", ARCH_KEYS)
    family = a.choice("family", tuple(MODEL_CLASSES))
    heads = a.int("num_attention_heads", minimum=1)
    hidden = a.int("hidden_size", minimum=1)
    kv_heads = a.int("num_key_value_heads", minimum=1, default=None) or heads
    arch = {
        "family": family,
        "vocab_size": a.int("vocab_size", minimum=1),
        "hidden_size": hidden,
        "intermediate_size": a.int("intermediate_size", minimum=1),
        "num_hidden_layers": a.int("num_hidden_layers", minimum=1),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": a.int("max_position_embeddings", minimum=1),
        "rope_theta": a.float("rope_theta", positive=True, default=10000.0),
        "rms_norm_eps": a.float("rms_norm_eps", positive=True, default=1e-6),
        "attention_bias": a.bool("attention_bias", default=False),
        "sliding_window": a.int("sliding_window", minimum=1, default=None),
        "tie_word_embeddings": a.bool("tie_word_embeddings", default=False),
    }
    if hidden % heads or (hidden // heads) % 2:
        raise SpecError(
            f"arch.hidden_size: {hidden} / {heads} heads (arch.num_attention_heads) must be an even integer head width"
        )
    if heads % kv_heads:
        raise SpecError(
            f"arch.num_key_value_heads: {kv_heads} does not divide {heads} attention heads (arch.num_attention_heads)"
        )
    # The HF classes fix the bias: Qwen2 always has q/k/v biases, Mistral never.
    if family == "qwen2" and not arch["attention_bias"]:
        raise SpecError("arch.attention_bias: qwen2 has biases on q, k, v; must be true")
    if family == "mistral" and arch["attention_bias"]:
        raise SpecError("arch.attention_bias: mistral has no attention biases; must be false")
    if family == "llama" and arch["sliding_window"] is not None:
        raise SpecError("arch.sliding_window: llama has no sliding-window attention; must be null")

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

    spec = {
        "arch": arch,
        "rope_factor": top.float("rope_factor", positive=True),
        "batch_size": top.int("batch_size", minimum=1),
        "seq_len": top.int("seq_len", minimum=2),
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
    return spec


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
# Model, optimizer, batch.


def peak_rss_mib():
    """The process's peak resident set (VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def hf_config(spec):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    a = spec["arch"]
    rope = {"rope_type": "default", "rope_theta": a["rope_theta"]}
    if spec["rope_factor"] != 1.0:
        rope = {"rope_type": "linear", "factor": spec["rope_factor"], "rope_theta": a["rope_theta"]}
    common = dict(
        vocab_size=a["vocab_size"],
        hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"],
        num_hidden_layers=a["num_hidden_layers"],
        num_attention_heads=a["num_attention_heads"],
        num_key_value_heads=a["num_key_value_heads"],
        max_position_embeddings=a["max_position_embeddings"],
        rms_norm_eps=a["rms_norm_eps"],
        rope_parameters=rope,
        tie_word_embeddings=a["tie_word_embeddings"],
        hidden_act="silu",
        attention_dropout=0.0,
        use_cache=False,
    )
    window = a["sliding_window"]
    if a["family"] == "llama":
        return LlamaConfig(attention_bias=a["attention_bias"], **common)
    if a["family"] == "mistral":
        # null means full attention (MistralConfig's own default would be a 4096 window).
        return MistralConfig(sliding_window=window, **common)
    # Qwen2: the window, when there is one, on every layer (max_window_layers = 0).
    return Qwen2Config(
        use_sliding_window=window is not None,
        sliding_window=window,
        max_window_layers=0 if window is not None else a["num_hidden_layers"],
        **common,
    )


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


def build_model(spec, torch):
    """The HF model on the device, checkpointing and LoRA applied, in train mode."""
    from transformers import AutoModelForCausalLM

    device = torch.device(spec["device"])
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    torch.manual_seed(spec["seed"])
    with device:
        model = AutoModelForCausalLM.from_config(hf_config(spec), dtype=dtype, attn_implementation="sdpa")
    if spec["gradient_checkpointing"]:
        # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias). With PEFT
        # it also calls enable_input_require_grads(), harmless for non-reentrant checkpointing.
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    lora = spec["lora"]
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["targets"],
            modules_to_save=modules_to_save(model, lora["also_train"]) or None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as e:
            raise SpecError(f"lora: PEFT refused the adapter config: {e}") from None
    model.train()
    return model


def train(spec, torch, model):
    """Warmup and timed steps: the step times, the first and last loss, the CUDA peak in MiB."""
    device = spec["device"]
    cuda = device == "cuda"
    generator = torch.Generator().manual_seed(spec["seed"])
    ids = torch.randint(
        0, spec["arch"]["vocab_size"], (spec["batch_size"], spec["seq_len"]), generator=generator
    ).to(device)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=spec["lr"], betas=spec["betas"], eps=spec["eps"], weight_decay=spec["weight_decay"]
    )
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16)
        if spec["precision"] == "bf16_mixed"
        else contextlib.nullcontext()
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        if spec["max_grad_norm"] is not None:
            torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])
        optimizer.step()
        return loss.detach()

    losses = []
    for _ in range(spec["warmup_steps"]):
        losses.append(step())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return times, losses[0].item(), losses[-1].item(), cuda_peak


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

    # transformers loads its modeling code lazily, and that alone raises the peak RSS by about
    # 150 MiB: load everything before the baseline, so the growth is the model and its training.
    getattr(transformers, MODEL_CLASSES[spec["arch"]["family"]])
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
    rss_before = peak_rss_mib()
    model = build_model(spec, torch)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    times, loss_first, loss_last, cuda_peak = train(spec, torch, model)
    rss_peak = peak_rss_mib()
    if world > 1:
        dist.destroy_process_group()

    median = statistics.median(times)
    return {
        "framework": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_version,
        "step_time_s": median,
        "step_times_s": times,
        "ranks": world,
        "tokens_per_s": world * spec["batch_size"] * spec["seq_len"] / median,
        "peak_memory_mib": cuda_peak if cuda_peak is not None else rss_peak - rss_before,
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
