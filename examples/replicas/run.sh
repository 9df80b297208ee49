#!/usr/bin/env bash
# Two keygate replicas sharing one 3-member etcd cluster (state) and one Redis (nonces),
# all on loopback, in the foreground; Ctrl-C stops everything.
#
#   examples/replicas/run.sh            # needs etcd, etcdctl, redis-server, protoc
#
# Replica 1: check 127.0.0.1:50051, http 127.0.0.1:8081, admin 127.0.0.1:50052
# Replica 2: check 127.0.0.1:50061, http 127.0.0.1:8091, admin 127.0.0.1:50062
# etcd clients: 127.0.0.1:2379, :12379, :22379. Redis: 127.0.0.1:6379.
# Everything lives in ./replicas-run (RUN_DIR to change); the admin token is in
# replicas-run/admin.token, the shared master key in replicas-run/master.key.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
run=${RUN_DIR:-$PWD/replicas-run}
mkdir -p "$run"
for tool in etcd etcdctl redis-server protoc; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install etcd-server etcd-client redis-server protobuf-compiler" >&2
        exit 1
    }
done
cargo build --release --features etcd --bin keygate
bin=$PWD/target/release/keygate

umask 077
# Every replica must hold the same master key: it opens the secrets in etcd.
[[ -s $run/master.key ]] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$run/master.key"
[[ -s $run/admin.token ]] || python3 -c 'import secrets; print(secrets.token_hex(24))' >"$run/admin.token"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

cluster=m0=http://127.0.0.1:2380,m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380
for i in 0 1 2; do
    port=$((2379 + i * 10000))
    etcd --name "m$i" --data-dir "$run/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token keygate-example \
        --max-txn-ops 10000 --logger zap --log-level warn >"$run/etcd$i.log" 2>&1 &
    pids+=($!)
done
endpoints=http://127.0.0.1:2379,http://127.0.0.1:12379,http://127.0.0.1:22379
redis-server --port 6379 --bind 127.0.0.1 --dir "$run" --appendonly yes --appendfsync always \
    --maxmemory-policy noeviction --save "" >"$run/redis.log" 2>&1 &
pids+=($!)
until ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; do sleep 0.2; done

for r in 1 2; do
    off=$(((r - 1) * 10))
    "$bin" serve --data-dir "$run/keygate$r" --master-key-file "$run/master.key" \
        --admin-token-file "$run/admin.token" \
        --store etcd --etcd-endpoints "$endpoints" --etcd-prefix /keygate/v1 \
        --nonce-store redis --redis-url redis://127.0.0.1:6379/0 \
        --check-addr "127.0.0.1:$((50051 + off))" --http-addr "127.0.0.1:$((8081 + off))" \
        --admin-addr "127.0.0.1:$((50052 + off))" >"$run/keygate$r.log" 2>&1 &
    pids+=($!)
done
echo "etcd: $endpoints"
echo "redis: redis://127.0.0.1:6379/0"
echo "keygate 1: check 127.0.0.1:50051 http 127.0.0.1:8081 admin 127.0.0.1:50052 (log $run/keygate1.log)"
echo "keygate 2: check 127.0.0.1:50061 http 127.0.0.1:8091 admin 127.0.0.1:50062 (log $run/keygate2.log)"
echo "admin token: $run/admin.token. Ctrl-C stops everything."
# Until Ctrl-C, or until one of them exits.
while kill -0 "${pids[@]}" 2>/dev/null; do sleep 1; done
echo "a process exited; stopping the rest (see the logs in $run)" >&2
