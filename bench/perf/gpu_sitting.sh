#!/usr/bin/env bash
# One GPU sitting, prepared (docs/scaling.md): the loop's speed first, then the `gpu` suite's block,
# each cell's folder packed into $OUT as soon as the store renames it into place, every step under a
# timeout so what finished comes back before the call's limit.
#
#   OUT=/path/to/out BUDGET_S=540 [RESULTS=results] bash bench/perf/gpu_sitting.sh [SUITE]
#
# Run from the repository root, with the offline wheels unpacked on PYTHONPATH where the machine
# reaches no registry (python3 -m bench.execute.offline unpack ...). Tables are rebuilt afterwards,
# here: `python -m bench table --suite gpu`.
set -euo pipefail
suite="${1:-gpu}"
out="${OUT:?set OUT to the folder that comes back}"
budget="${BUDGET_S:-540}"
results="${RESULTS:-results}"
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/device.txt" 2>&1 || true
timeout "${MFU_S:-150}" python3 -m bench.perf.calrec --mfu --device cuda --batches 16,64,128 --steps 10 --pack 2048 --compile \
  > "$out/calrec_mfu.txt" 2>&1 || echo "mfu: ended with $?" >> "$out/calrec_mfu.txt"

runs="$results/runs/$(basename "$suite" .yaml)"
timeout "$(( $(left) - 20 ))" python3 -m bench run --suite "$suite" --results "$results" --yes > "$out/run.log" 2>&1 &
runner=$!
packed=" "
pack_new() {
  for cell in "$runs"/*/*/seed*; do  # a folder appears whole (the store renames it into place)
    [ -f "$cell/run.json" ] || continue
    case "$packed" in *" $cell "*) continue ;; esac
    tar -czf "$out/$(echo "${cell#"$results"/runs/}" | tr / _).tgz" -C "$results/runs" "${cell#"$results"/runs/}" \
      && packed="$packed$cell "
  done
}
while kill -0 "$runner" 2>/dev/null && [ "$(left)" -gt 10 ]; do
  pack_new
  sleep 5
done
wait "$runner" || echo "run: ended with $?" >> "$out/run.log"
pack_new
echo "packed:$packed" >> "$out/run.log"
