#!/bin/bash
# The recorded run behind BENCHMARKS.md's issue-14 table. From the repository root,
# after `cargo build --release --bin keygate --bin keygate-bench`:
#   BEFORE=/path/to/keygate-of-758a26a benches/report/issue14/run.sh
# BEFORE (optional) is a keygate binary built from the commit before this work; its
# ratios and flame graph are recorded beside the current build's. Needs perf and
# inferno (`cargo install inferno`) for the flame graphs, and .venv/bin/envoy.
set -u
R=benches/report/issue14
OUT=${OUT:-$R/raw}
mkdir -p "$OUT"
BENCH=./target/release/keygate-bench
NOW=./target/release/keygate
# The machine's load during the run, every 5 s.
(while sleep 5; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) > "$OUT/loadavg.log" &
LOADMON=$!
trap 'kill $LOADMON' EXIT
uptime | tee "$OUT/uptime.log"

ratios() { # name keygate-binary
  $BENCH load --ratios --repeat 3 --duration 4 --warmup 1 --concurrency 32 --connections 4 \
    --keygate-bin "$2" --report-dir "$R/$1" > "$OUT/ratios-$1.log" 2>&1
  echo "== $1"; sed -n '/Issue 14 ratios/,$p' "$R/$1/report.md" | head -12
}

flame() { # name keygate-binary: 4 s of perf samples (DWARF stacks: the release build keeps no frame pointers) of keygate under gRPC load
  $BENCH load --front grpc --repeat 1 --duration 10 --warmup 1 --concurrency 32 --connections 4 \
    --keygate-bin "$2" > "$OUT/flame-$1.log" 2>&1 &
  local L=$!
  sleep 4
  local P
  P=$(pgrep -f "$2 serve" | head -1)
  perf record -F 499 --call-graph dwarf,16384 -p "$P" -o "$OUT/perf-$1.data" -- sleep 4 2>/dev/null
  wait $L
  perf script -i "$OUT/perf-$1.data" 2>/dev/null | inferno-collapse-perf > "$OUT/stacks-$1.folded"
  inferno-flamegraph --title "keygate under gRPC Check load ($1)" < "$OUT/stacks-$1.folded" > "$R/flame-$1.svg"
  rm -f "$OUT/perf-$1.data"
}

if [ -z "${FLAMES_ONLY:-}" ]; then
ratios after "$NOW"
[ -n "${BEFORE:-}" ] && ratios before "$BEFORE"
fi
flame after "$NOW"
[ -n "${BEFORE:-}" ] && flame before "$BEFORE"
[ -n "${FLAMES_ONLY:-}" ] && exit 0
# decide, at 10 and 1M keys, three runs.
for i in 1 2 3; do
  cargo bench --features test-util --bench decide -- --warm-up-time 1 --measurement-time 3 \
    'decide/scheme/aliyun$|decide/keys/aliyun/' > "$OUT/decide.$i.log" 2>&1
done
grep -h -A1 "^decide/" "$OUT"/decide.*.log | grep -E "^decide|time:" > "$OUT/decide.summary"
uptime | tee -a "$OUT/uptime.log"
echo ALL DONE
