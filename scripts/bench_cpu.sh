#!/usr/bin/env bash
# runner against PyTorch on this machine's CPU, all three recipe kinds in one run (`./dev bench`
# runs it after building the release binary): `runner bench recipe` on
# recipes/bench/cpu_{longlora,iag,coe}.yaml (width 512, at least 1,024 tokens a step) in fp32 and
# bf16_mixed, each against scripts/bench_pytorch.py on the same model, weights, batch and
# precision. Writes results/bench/cpu-DATE.md (the table the README quotes) and .json.
#
#   scripts/bench_cpu.sh [OUT_PREFIX]     (default results/bench/cpu-$(date +%F))
#
# RUNNER picks the binary (default target/release/runner); STEPS and WARMUP the timed and untimed
# steps of each side (default 10 and 2).
set -euo pipefail
cd "$(dirname "$0")/.."
runner=${RUNNER:-target/release/runner}
prefix=${1:-results/bench/cpu-$(date +%F)}
steps=${STEPS:-10}
warmup=${WARMUP:-2}
[[ -x "$runner" ]] || { echo "error: no $runner; run ./dev bench (or set RUNNER)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for kind in longlora iag coe; do
    for precision in fp32 bf16_mixed; do
        echo "== $kind, $precision" >&2
        "$runner" bench recipe "recipes/bench/cpu_$kind.yaml" "training.precision=$precision" \
            --device cpu --steps "$steps" --warmup "$warmup" --json "$work/$kind-$precision.json" >&2
    done
done
mkdir -p "$(dirname "$prefix")"
.venv/bin/python - "$work" "$prefix" "$steps" "$warmup" <<'PY'
import json, os, pathlib, platform, subprocess, sys

work, prefix, steps, warmup = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
order = ["longlora_sft", "iag_distill", "coe_multitask"]
records = sorted(
    (json.loads(p.read_text()) for p in work.glob("*.json")),
    key=lambda r: (order.index(r["kind"]), r["precision"] != "fp32"),
)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
versions = next((r["pytorch"] for r in records if r["pytorch"] and r["pytorch"].get("peft")), {})
lines = [
    f"# runner against PyTorch on the CPU, {pathlib.Path(prefix).name}",
    "",
    f"Machine: {cpu}, {os.cpu_count()} cores, {records[0]['threads'] if records else '?'} threads a side. "
    f"Commit {commit}; torch {versions.get('torch')}, transformers {versions.get('transformers')}, peft {versions.get('peft')}.",
    f"Command: `./dev bench` (scripts/bench_cpu.sh: `runner bench recipe recipes/bench/cpu_KIND.yaml training.precision=P --device cpu --steps {steps} --warmup {warmup}`).",
    "Both sides start from the same weights and train on the same batch (their first losses below). Tokens/s: the",
    "batch's input tokens over the median step time. Peak: the resident set's high-water mark over the steps, less",
    "what the process holds besides the models (libraries, data), measured the same way on both sides.",
    "",
    "| recipe | precision | batch | runner tokens/s | PyTorch tokens/s | ratio | runner peak MiB | PyTorch peak MiB | ratio | first loss runner / PyTorch |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in records:
    ours, theirs = r["runner"], r["pytorch"] or {}
    ratio = lambda k: f"{ours[k] / theirs[k]:.2f}×" if ours.get(k) and theirs.get(k) else "n/a"
    num = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "n/a"
    lines.append(
        f"| {r['recipe']} | {r['precision']} | {r['batch'][0]} × {r['batch'][1]} | {num(ours['tokens_per_s'], ',.0f')} | "
        f"{num(theirs.get('tokens_per_s'), ',.0f')} | {ratio('tokens_per_s')} | {num(ours['peak_memory_mib'], ',.0f')} | "
        f"{num(theirs.get('peak_memory_mib'), ',.0f')} | {ratio('peak_memory_mib')} | "
        f"{num(ours['loss_first'], '.5f')} / {num(theirs.get('loss_first'), '.5f')} |"
    )
pathlib.Path(prefix + ".md").write_text("\n".join(lines) + "\n")
pathlib.Path(prefix + ".json").write_text(json.dumps(records, indent=2) + "\n")
print("\n".join(lines))
PY
