#!/usr/bin/env bash
# Devices and processes on this CPU (docs/benchmarks.md, "Devices and processes"): meta-training tasks/s of
# `jmeta train` (the mean of the logged blocks after the first, which includes compilation) for
#   1. sinusoid MAML on 1 and 8 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8);
#   2. weak scaling: 1 process pinned to one core (taskset -c 0, meta_batch 24) against 2 processes pinned
#      to a core each (taskset -c 0 / -c 1, meta_batch 48 = 24 per process), gloo collectives on 127.0.0.1.
#   3. the same for MAML Omniglot 5-way 1-shot (16 tasks per process, 40 meta-steps logged every 10), if
#      OMNIGLOT_DIR holds the data.
# Usage: bash benchmarks/scaling_cpu.sh [STEPS] [OMNIGLOT_DIR]   (default 3000 sinusoid meta-steps, logged
# every 500; ../shared/data/omniglot)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
steps=${1:-3000}
omniglot=${2:-../shared/data/omniglot}
out=$(mktemp -d)
run=(-m jmeta.cli train experiments/sinusoid_maml.py "steps=$steps" log_every=500 "val_every=$steps"
  val_tasks=20 eval_tasks=20 "eval_steps=(1,)")

rate() {  # mean tasks/s of the blocks after the first
  "$python" -c 'import json, sys
rates = [json.loads(line)["tasks_per_s"] for line in open(sys.argv[1])][1:]
print(round(sum(rates) / len(rates)))' "$1/metrics.jsonl"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for devices in 1 8; do
  XLA_FLAGS=--xla_force_host_platform_device_count=8 "$python" "${run[@]}" --workdir "$out/d$devices" \
    meta_batch=24 "devices=$devices" >/dev/null 2>&1
  echo "sinusoid-maml, meta_batch 24, $devices of 8 simulated devices, 1 process: tasks/s $(rate "$out/d$devices")"
done

weak() {  # NAME PER_PROCESS_BATCH ARGS...: 1 process on core 0, then 2 processes on cores 0 and 1
  local name=$1 batch=$2; shift 2
  XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 "$python" "$@" --workdir "$out/$name-1" \
    "meta_batch=$batch" >/dev/null 2>&1
  echo "$name, 1 process on core 0, meta_batch $batch: tasks/s $(rate "$out/$name-1")"
  local port=$(( 20000 + RANDOM % 20000 ))
  for i in 0 1; do
    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c "$i" "$python" "$@" --workdir "$out/$name-2" \
      "meta_batch=$((2 * batch))" --coordinator "127.0.0.1:$port" --num-processes 2 --process-id "$i" >/dev/null 2>&1 &
  done
  wait
  echo "$name, 2 processes on cores 0 and 1, meta_batch $((2 * batch)) ($batch each): tasks/s $(rate "$out/$name-2")"
}

weak sinusoid-maml 24 "${run[@]}"
if [[ -f $omniglot/images_background.zip ]]; then
  weak omniglot-maml 16 -m jmeta.cli train experiments/omniglot_maml.py "data_dir=$omniglot" steps=40 log_every=10 \
    val_every=40 val_tasks=16 eval_tasks=16
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$out"
