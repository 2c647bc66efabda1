#!/usr/bin/env bash
# The GPU check (issue 18), one self-contained command for a GPU machine that has PyTorch,
# transformers and PEFT but no Rust toolchain and no network:
#
#   scripts/gpu_check.sh OUT_DIR            on a GPU: CUDA, bf16, realistic sizes (under 8 minutes)
#   scripts/gpu_check.sh --cpu OUT_DIR      the same steps on the CPU at tiny sizes (CI, ~2 minutes)
#
# It runs, each step logged to OUT_DIR/gpu_check.log and summed up in OUT_DIR/gpu_check.json:
#   1. `runner doctor` (device, bf16, cuDNN, NCCL);
#   2. the parity tests that matter on CUDA (models::parity, models::precision,
#      models::shifted_sparse of the integration-test binary, RUNNER_TEST_DEVICE=cuda): Llama, T5,
#      FiD, ViT forward and backward in fp32 against the committed CPU fixtures (1e-4), bf16
#      against fp32, S²-Attn against its loop reference;
#   3. each tiny recipe (LongLoRA, IAG with its FiD teacher trained beside the student, CoE,
#      QA-Expert's QLoRA) in bf16 for a few hundred steps: the loss falls and stays finite;
#   4. `runner bench recipe` against scripts/bench_pytorch.py on the same device: a Llama ~1B
#      (hidden 2048, 16 layers, GQA) with LoRA and gradient checkpointing in bf16 at 2,048 tokens
#      (tokens/s, MFU against 790 TFLOP/s, peak memory), again with S²-Attn on the runner side
#      (transformers has none), a T5-base FiD distillation step (10 passages) and a CoE VLM step.
#
# The binaries are built on a CPU machine (`cargo build --release && cargo test --release
# --no-run`), stripped, and found through RUNNER (default target/release/runner, else
# target/debug/runner) and RUNNER_TESTS (default: the newest target/{release,debug}/deps/
# integration-*). libtorch is the local PyTorch's (`python3 -c 'import torch'`), as the device
# machine has no .venv; PYTHON picks the interpreter (default .venv/bin/python, else python3).
# Exit status: 0 when every check passed, 1 when one failed (the JSON says which), 2 for usage.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
if [[ "${1:-}" == "--cpu" ]]; then
    mode=cpu
    shift
fi
if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: scripts/gpu_check.sh [--cpu] OUT_DIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
: >"$log"
steps=$out/steps.jsonl
: >"$steps"

python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
torch_lib=$("$python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || {
    echo "error: $python cannot import torch; set PYTHON to an interpreter with PyTorch" >&2
    exit 2
}
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

newest() { ls -t "$@" 2>/dev/null | head -1; }
runner=${RUNNER:-$(newest target/release/runner target/debug/runner)}
tests=${RUNNER_TESTS:-$(ls -t target/release/deps/integration-* target/debug/deps/integration-* 2>/dev/null | grep -v '\.d$' | head -1)}
for bin in "$runner" "$tests"; do
    [[ -x "$bin" ]] || { echo "error: no runner or test binary found (set RUNNER and RUNNER_TESTS; got '$runner', '$tests')" >&2; exit 2; }
done

if [[ $mode == gpu ]]; then
    device=cuda
    test_device=cuda
    recipe_steps=300
    bench_steps=(--steps 10 --warmup 3)
else
    device=cpu
    test_device=cpu
    recipe_steps=30
    bench_steps=(--steps 2 --warmup 1)
fi
runs=$out/runs
bench=$out/bench
rm -rf "$runs" "$bench"
mkdir -p "$runs" "$bench"

# Runs one step: its name, a time limit in seconds, then the command; its output goes to the
# log, its outcome to steps.jsonl.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee -a "$log" >&2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s" | tee -a "$log" >&2
    printf '{"name": "%s", "exit": %d, "seconds": %d}\n' "$name" "$rc" "$((SECONDS - start))" >>"$steps"
}

# 1. What the machine has.
step doctor 60 "$runner" doctor

# 2. Parity on the device against the CPU fixtures.
step parity 300 env RUNNER_TEST_DEVICE=$test_device "$tests" --test-threads 1 \
    models::parity models::precision models::shifted_sparse

# 3. The tiny recipes in bf16 (the loss curves are read from their metrics.csv below).
common=(--device "$device" training.precision=bf16 "training.max_steps=$recipe_steps"
        "evaluation.every_steps=$recipe_steps")
step recipe_longlora 300 "$runner" run recipes/tiny/longlora_sft.yaml --out "$runs/longlora" "${common[@]}"
step recipe_iag 300 "$runner" run recipes/tiny/iag_teacher.yaml --out "$runs/iag" "${common[@]}" method.alpha_kd=0.4
step recipe_coe 300 "$runner" run recipes/tiny/coe_multitask.yaml --out "$runs/coe" "${common[@]}" \
    evaluation.at_start=false
step recipe_qlora 300 "$runner" run recipes/tiny/qa_expert_qlora.yaml --out "$runs/qlora" "${common[@]}" \
    training.adapter.quantize.compute_dtype=bf16

# 4. Against PyTorch on the same device.
if [[ $mode == gpu ]]; then
    llama=(recipes/bench/gpu_llama_1b.yaml)
    iag=(recipes/bench/gpu_iag_t5_base.yaml)
    coe=(recipes/bench/gpu_coe.yaml)
else
    llama=(recipes/tiny/longlora_sft.yaml training.precision=bf16)
    iag=(recipes/tiny/iag_teacher.yaml training.precision=bf16 method.alpha_kd=0.4)
    coe=(recipes/tiny/coe_multitask.yaml training.precision=bf16)
fi
bench() {
    local name=$1
    shift
    step "bench_$name" 200 "$runner" bench recipe "$@" --device "$device" "${bench_steps[@]}" \
        --json "$bench/$name.json"
}
bench llama "${llama[@]}"
bench llama_s2attn "${llama[@]}" --keep-method
bench iag "${iag[@]}"
bench coe "${coe[@]}"

# The summary: every step's outcome, the loss curves, the benchmarks with MFU.
"$python" - "$out" "$mode" "$runner" <<'PY'
import csv, json, math, pathlib, platform, subprocess, sys

out, mode, runner = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
PEAK_TFLOPS = 790.0  # H200 bf16 dense, measured there (issue 18)
steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines()]
failures = [s["name"] for s in steps if s["exit"] != 0]


def curve(run):
    """First and last training losses of a run, and whether every one was finite."""
    path = out / "runs" / run / "metrics.csv"
    if not path.exists():
        return None
    losses = [float(r["value"]) for r in csv.DictReader(path.open()) if r["split"] == "train" and r["metric"] == "loss"]
    if not losses:
        return None
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    finite = all(math.isfinite(x) for x in losses)
    return {"steps": len(losses), "loss_first": first, "loss_last": last, "finite": finite, "falls": finite and last < first}


recipes = {run: curve(run) for run in ("longlora", "iag", "coe", "qlora")}
for run, c in recipes.items():
    if c is None or not c["falls"]:
        failures.append(f"recipe_{run}_loss")


def mfu(record):
    """Model FLOPs utilisation of a decoder's step (PaLM's 6N + 12·L·d·T FLOPs a token, N every
    weight, recomputation not counted), for each side: the GPU's bf16 peak is the bound."""
    if mode != "gpu" or record["kind"] != "longlora_sft":
        return None
    command = [runner, "plan", record["recipe_file"], *record["overrides"], "--format", "json"]
    plan = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    arch = plan["plan"]["model"]["arch"]
    per_token = 6 * record["parameters"] + 12 * arch["num_hidden_layers"] * arch["hidden_size"] * record["batch"][1]
    sides = {"runner": record["runner"], "pytorch": record.get("pytorch") or {}}
    return {side: r["tokens_per_s"] * per_token / (PEAK_TFLOPS * 1e12) for side, r in sides.items() if r.get("tokens_per_s")}


benches = {}
for path in sorted((out / "bench").glob("*.json")):
    record = json.loads(path.read_text())
    ours, theirs = record["runner"], record.get("pytorch") or {}
    ratio = lambda k: ours[k] / theirs[k] if ours.get(k) and theirs.get(k) else None
    benches[path.stem] = {
        "recipe": record["recipe"],
        "batch": record["batch"],
        "precision": record["precision"],
        "runner": ours,
        "pytorch": theirs or None,
        "tokens_per_s_ratio": ratio("tokens_per_s"),
        "peak_memory_ratio": ratio("peak_memory_mib"),
        "mfu": mfu(record),
        "note": record.get("no_pytorch_reference") or ("runner with S²-Attn, PyTorch with full attention (transformers has none)" if record.get("keep_method") else None),
    }

summary = {
    "mode": mode,
    "host": platform.node(),
    "steps": steps,
    "tiny_recipes_bf16": recipes,
    "benchmarks": benches,
    "failures": failures,
    "passed": not failures,
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({"passed": summary["passed"], "failures": failures}))
sys.exit(0 if summary["passed"] else 1)
PY
