#!/bin/bash
# The measurement run behind BENCHMARKS.md. Run from the repository root after
# `cargo build --release --bin keygate --bin keygate-bench`. Logs go to $OUT.
set -x
R=${R:-benches/report}
OUT=${OUT:-/tmp/bench-out}
D1M=${D1M:-/tmp/kgdata/d1m}
mkdir -p $R $OUT
uptime
# The 1M data dir: 1M apps (default key pair + AppCode each), 10 APIs, 1M grants.
[ -d $D1M ] || ./target/release/keygate-bench populate --data-dir $D1M --apps 1000000 --apis 10
for i in 1 2 3; do
  cargo bench --features test-util --bench decide -- --warm-up-time 1 --measurement-time 4 > $OUT/decide.$i.log 2>&1
done
cargo bench --features test-util --bench index -- --warm-up-time 1 --measurement-time 3 > $OUT/index.log 2>&1
cargo bench --features test-util --bench canonical -- --warm-up-time 1 --measurement-time 3 > $OUT/canonical.log 2>&1
cargo bench --features test-util --bench store -- --warm-up-time 1 --measurement-time 5 > $OUT/store.log 2>&1
uptime
./target/release/keygate-bench load --apps 1000 --front grpc --front http --baseline --repeat 3 \
  --duration 4 --warmup 1 --concurrency 32 --connections 4 --sweep 25,50,75 \
  --report-dir $R > $OUT/load.log 2>&1
./target/release/keygate-bench load --data-dir $D1M --front grpc --baseline --repeat 3 \
  --duration 4 --warmup 1 --concurrency 32 --connections 4 \
  --report-dir $R/1m > $OUT/load1m.log 2>&1
./target/release/keygate-bench admin-writes --clients 16 --repeat 3 --duration 5 --report-dir $R > $OUT/admin.log 2>&1
./target/release/keygate-bench startup --data-dir $D1M --repeat 3 --report-dir $R > $OUT/startup.log 2>&1
uptime
echo ALL DONE
