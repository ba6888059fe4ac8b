#!/usr/bin/env bash
# Issue 10's scale numbers in one go: xiaozhi bench at 10/100/200/300 conversing devices
# with instant (fake) providers, 1 vs 2 workers at the same load, and the lane hot path.
#
#   bash bench/benchmarks/issue10_scale.sh [OUT_DIR]          # default bench/benchmarks/results/issue10
#   DEVICES="10 100" WORKERS_AT=100 bash bench/benchmarks/issue10_scale.sh /tmp/x
#   BASE=/path/to/other/checkout bash bench/benchmarks/issue10_scale.sh   # A/B, see below
#   (WORKERS_AT= skips the workers runs, LANE=0 the lane benchmark)
#
# Every run writes its JSON to OUT_DIR and one summary line per run goes to
# OUT_DIR/summary.txt: later-turn TTFA p50/p95 (end of speech -> first audio, client side),
# first turns, server CPU per conversing device (server process(es) only), lane lag p99,
# server overhead p50 and how busy the rest of the machine was. Numbers only compare when
# "other cores" is near 0: run it on a quiet machine.
#
# BASE=DIR (optional): also run each device count against the xiaozhi_core of another
# checkout DIR (its directory holding xiaozhi_core/, e.g. `git worktree add /tmp/base main`
# or `git archive main xiaozhi_core | tar -x -C /tmp/base`), at the same time as this one
# (both servers see the same machine; each gets N devices): the ratio of the two is
# meaningful even on a shared machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/bench/benchmarks/results/issue10}"
DEVICES="${DEVICES:-10 100 200 300}"
WORKERS_AT="${WORKERS_AT-200}"
DURATION="${DURATION:-25}"
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT"
cd "$OUT"  # not the checkout: BASE's core must win over the editable install

bench() {  # bench NAME N [extra args...]
  local name=$1 n=$2
  shift 2
  local ramp=$((n / 20 > 2 ? n / 20 : 2))
  "$PY" -m xiaozhi_core bench --phases ingest --devices "$n" --delays 0,0,0 \
    --silence-ms 200 --duration "$DURATION" --ramp "$ramp" --json "$OUT/$name.json" -q "$@" \
    > "$OUT/$name.txt" 2>&1 || echo "($name: bench reported a failed check, see $name.txt)"
}

summary() {  # summary NAME...
  "$PY" - "$OUT" "$@" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in sys.argv[2:]:
    try:
        r = json.loads((out / f"{name}.json").read_text())["ingest"]
    except (OSError, KeyError, ValueError) as exc:
        print(f"{name}: no result ({exc})")
        continue
    t, i = r["turns"], r.get("ingest", {})
    by = t["first_audio_by_turn"]
    load = r.get("machine_load") or {}
    print(
        f"{name}: devices {r['devices']} turns {t['completed']}/{t['started']} | "
        f"TTFA later p50/p95 {by['later']['p50']}/{by['later']['p95']} ms, "
        f"first p50 {by['first']['p50']} ms | CPU/device {i.get('cpu_percent_per_stream')}% "
        f"(server {i.get('server_cpu_cores')} cores"
        + (f", {r['server_workers']['count']} workers" if r.get("server_workers") else "")
        + f") | lane lag p99 {i.get('lane_lag_ms', {}).get('p99')} ms | overhead p50 "
        f"{t.get('server_ms', {}).get('server_overhead', {}).get('p50')} ms | "
        f"other cores {load.get('other_processes_cores')}"
    )
EOF
}

echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD)" >> "$OUT/summary.txt"
for n in $DEVICES; do
  if [ -n "${BASE:-}" ]; then
    PYTHONPATH="$BASE" bench "base_$n" "$n" &
    bench "devices_$n" "$n"
    wait
    summary "base_$n" "devices_$n"
  else
    bench "devices_$n" "$n"
    summary "devices_$n"
  fi
done
# 1 vs 2 workers, same load: both through `xiaozhi serve --workers N` (WORKERS_AT= skips)
if [ -n "$WORKERS_AT" ]; then
  for w in 1 2; do
    bench "workers${w}_$WORKERS_AT" "$WORKERS_AT" --workers "$w"
    summary "workers${w}_$WORKERS_AT"
  done
fi
# the lane's hot path (no sockets): lag p50/p99 and CPU per frame at 150 streams (LANE=0 skips)
if [ "${LANE:-1}" != 0 ]; then
  "$PY" "$ROOT/bench/benchmarks/bench_lane.py" --streams 150 --ticks 10 --inflight 2 \
    --seconds 10 --out "$OUT/lane150.json" | tail -1 | tee -a "$OUT/summary.txt"
fi
