#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs fmt, clippy and every test.
#
#   ./scripts/test.sh
#
# Idempotent and quiet when nothing changed:
#   - .venv (python3 -m venv) with tests/python/requirements.txt installed; reinstalled
#     only when that file (or the Python) changes, tracked by a stamp file in .venv;
#   - nginx via apt-get when missing and running as root (for the NGINX front-door tests);
#   - redis-server, etcd-server, etcd-client and protobuf-compiler the same way (the
#     shared nonce store and multi-replica tests; `--features etcd` needs protoc);
#   - then cargo fmt --check, cargo clippy -D warnings, cargo doc (warnings denied) and
#     cargo test, for the whole workspace (keygate and the keygate-bench load
#     generator); all run even if one fails, so one run shows every problem; exits
#     non-zero if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
venv=$root/.venv
requirements=$root/tests/python/requirements.txt
stamp=$venv/.keygate-requirements.sha256

say() { printf '==> %s\n' "$*"; }

# --- Python environment -------------------------------------------------------------
venv_ok() { [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import sys' 2>/dev/null; }
if ! venv_ok; then
    say "creating $venv"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 needs python3-venv for ensurepip.
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv"
            python3 -m venv "$venv"
        else
            echo "error: python3 -m venv failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi
want=$( { sha256sum "$requirements"; "$venv/bin/python" --version; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    say "installing Python test dependencies ($requirements)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

# --- nginx (for the NGINX auth_request tests) ----------------------------------------
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing nginx"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    else
        echo "warning: nginx is not installed and this is not root: the NGINX tests cannot run" >&2
    fi
fi

# --- redis-server, etcd, protoc (the multi-replica tests; etcd-client's build needs protoc) --
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "warning: missing ${need[*]} and this is not root: the Redis and etcd tests cannot run" >&2
    fi
fi

# --- checks and tests ------------------------------------------------------------------
export KEYGATE_PYTHON=$venv/bin/python
failed=()
step() {
    local name=$1
    shift
    say "$*"
    if ! "$@"; then
        failed+=("$name")
    fi
}
# --all-features: the benches need `test-util` (the shared fixtures); without it clippy
# would skip them.
step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets --all-features -- -D warnings
doc() { RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet; }
step doc doc
# Keep cargo's output for the total below, and show it as it runs.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
run_tests() { cargo test --all-features --no-fail-fast 2>&1 | tee "$test_log"; return "${PIPESTATUS[0]}"; }
step test run_tests

if ((${#failed[@]})); then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
say "all checks passed"
# One closing line with the totals of every test binary (cargo's own last line is the
# doc-test run, which has no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "keygate: %d passed, %d failed\n", p, f }' "$test_log"
