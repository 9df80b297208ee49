#!/bin/bash
# Start-up and memory on the 1M data set, and decide at 10 and 1M apps: the current
# build against a BEFORE build, alternating run by run (issue 14, second part).
# From the repository root:
#   cargo build --release --bin keygate --bin keygate-bench
#   ./target/release/keygate-bench populate --data-dir /tmp/kgdata/d1m --apps 1000000 --apis 10
#   cargo bench --features test-util --bench decide --no-run   # prints the bench binary
#   BEFORE=/path/to/keygate-of-e2ce415 BEFORE_DECIDE=/path/to/decide-bench-of-e2ce415 \
#   NOW_DECIDE=target/release/deps/decide-<hash> DATA=/tmp/kgdata/d1m \
#     benches/report/issue14/startup.sh
set -eu
R=benches/report/issue14/startup
mkdir -p "$R"
BENCH=./target/release/keygate-bench
NOW=./target/release/keygate
DATA=${DATA:-/tmp/kgdata/d1m}
LOG=$R/runs.log
: > "$LOG"
echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
for i in 1 2 3; do
  for side in before after; do
    bin=$NOW; [ $side = before ] && bin=$BEFORE
    $BENCH startup --data-dir "$DATA" --repeat 1 --keygate-bin "$bin" 2>&1 \
      | grep '^run 1' | sed "s/^run 1/$side/" | tee -a "$LOG"
  done
done
echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
if [ -n "${BEFORE_DECIDE:-}" ] && [ -n "${NOW_DECIDE:-}" ]; then
  for i in 1 2 3; do
    for side in before after; do
      b=$NOW_DECIDE; [ $side = before ] && b=$BEFORE_DECIDE
      "$b" --bench --warm-up-time 1 --measurement-time 4 --noplot \
        'decide/scheme/aliyun$|decide/keys/aliyun/(10|1000000)$' > "$R/decide-$side.$i.log" 2>&1
      echo "== decide $side $i" | tee -a "$LOG"
      grep -A1 '^decide/' "$R/decide-$side.$i.log" | grep -E 'time:' | tee -a "$LOG"
    done
  done
  echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
fi
