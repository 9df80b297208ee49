#!/usr/bin/env bash
# Durable admin writes through two replicas on a 3-member etcd (fsync on), the
# binaries before and after write batching, alternating, 3 rounds.
set -u
B=/tmp/bench-etcd; rm -rf $B; mkdir -p $B
ETCD=$(command -v etcd)
CL="m0=http://127.0.0.1:32380,m1=http://127.0.0.1:32390,m2=http://127.0.0.1:32400"
for i in 0 1 2; do
  c=$((32379 + i*10)); p=$((32380 + i*10))
  $ETCD --name m$i --data-dir $B/m$i --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
    --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
    --initial-cluster $CL --initial-cluster-state new --initial-cluster-token bench \
    --logger zap --log-level warn > $B/m$i.log 2>&1 &
  echo $! >> $B/pids
done
EPS=http://127.0.0.1:32379,http://127.0.0.1:32389,http://127.0.0.1:32399
sleep 3
export KEYGATE_ADMIN_TOKEN=bench-token-0123456789abcdef
printf '4b657967617465207265706c6963612074657374206d6173746572206b657921' > $B/master.key
run() { # variant round
  local v=$1 r=$2 d=$B/$1-$2; mkdir -p $d
  for x in a b; do
    /tmp/kg-$v/keygate serve --store etcd --etcd-endpoints $EPS --etcd-prefix /bench/$v$r \
      --master-key-file $B/master.key --data-dir $d/$x --check-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
      --admin-addr 127.0.0.1:0 --ready-file $d/$x.ready --decision-log off > $d/$x.log 2>&1 &
    echo $! > $d/$x.pid
    for _ in $(seq 300); do [ -s $d/$x.ready ] && break; sleep 0.1; done
  done
  local aa=$(python3 -c "import json;print(json.load(open('$d/a.ready'))['admin'])")
  local ab=$(python3 -c "import json;print(json.load(open('$d/b.ready'))['admin'])")
  /tmp/kg-$v/keygate-bench admin-writes --admin $aa --clients 8 --duration 5 --warmup 1 --repeat 1 --report-dir $d/ra > $d/wa.txt 2>&1 &
  local w=$!; sleep 0.3
  /tmp/kg-$v/keygate-bench admin-writes --admin $ab --clients 8 --duration 5 --warmup 1 --repeat 1 --report-dir $d/rb > $d/wb.txt 2>&1
  wait $w
  curl -s http://$(python3 -c "import json;print(json.load(open('$d/a.ready'))['http'])")/metrics | grep -E "^keygate_store_(write_batches|batched_writes|write_retries)" > $d/metrics-a.txt
  kill $(cat $d/a.pid) $(cat $d/b.pid); wait $(cat $d/a.pid) $(cat $d/b.pid) 2>/dev/null
  echo "== $v round $r"; grep -h "writes/s\|p99\|p50" $d/wa.txt $d/wb.txt | head -6; cat $d/metrics-a.txt
}
for r in 1 2 3; do run before $r; run after $r; done
kill $(cat $B/pids)
