#!/bin/bash
# Usage: scripts/kill_loop.sh (after cargo build --release). Kill times are drawn over the
# run (1.4 s with the release binary on 2 cores); the run directories go to /tmp/kl.
# 20 SIGKILLs at random times over a whole tiny run (12 steps, checkpoints every 3), then reruns;
# compares each final adapter with an uninterrupted run's.
cd "$(dirname "$0")/.."
R=./target/release/runner
ARGS="recipes/tiny/longlora_sft.yaml training.max_steps=12 evaluation.every_steps=6 logging.every_steps=1 output.checkpoint_every_steps=3 training.micro_batch_size=1 --device cpu"
rm -rf /tmp/kl && mkdir -p /tmp/kl
$R run $ARGS --out /tmp/kl/whole > /dev/null 2>&1
ref=$(sha256sum /tmp/kl/whole/adapter/adapter_model.safetensors | cut -d' ' -f1)
ok=0
for i in $(seq 1 20); do
  d=/tmp/kl/run$i
  # kill times spread over the run, the last ones near its end (after the last checkpoint)
  delay=$(python3 -c "import random; random.seed($i); print(round(random.uniform(0.5, 1.3), 2))")
  $R run $ARGS --out $d > /dev/null 2>&1 &
  pid=$!
  sleep $delay; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  state=$(ls $d/checkpoints 2>/dev/null | tail -1); had_summary=$([ -f $d/summary.json ] && echo yes || echo no)
  $R run $ARGS --out $d > /dev/null 2>&1
  got=$(sha256sum $d/adapter/adapter_model.safetensors 2>/dev/null | cut -d' ' -f1)
  sum=$([ -f $d/summary.json ] && echo summary || echo NO-SUMMARY)
  same=$([ "$got" = "$ref" ] && echo same || echo DIFFERENT)
  [ "$same" = same ] && [ "$sum" = summary ] && ok=$((ok+1))
  echo "kill $i after ${delay}s: latest checkpoint ${state:-none}, summary before rerun: $had_summary; rerun: $sum, weights $same"
done
echo "$ok of 20 reruns finished with summary.json and the uninterrupted run's weights"
