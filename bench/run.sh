#!/usr/bin/env bash
# `make bench` runs this: its own venv (bench/.venv) with the peers and spoold (-e ..), a private
# redis-server on a free loopback port (no persistence, stopped by pid on any exit), then bench.py.
#   BENCH_SCALE=small   a quick run (about two minutes) instead of the full sizes
#   PYTHON=python3.11   the interpreter the venv is made from
#   bench/run.sh profile [JOBS ISOLATION DURABILITY]   where the CPU goes instead (bench/profile.py)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$here/requirements.txt" -nt "$stamp" ] || [ "$here/../pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
    "$venv/bin/python" -m pip install --quiet -e "$here/.."
    touch "$stamp"
fi

if [ "${1:-}" = "profile" ]; then  # `make bench-profile`: no peers, no redis; see bench/profile.py
    shift
    exec "$venv/bin/python" "$here/profile.py" "$@"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench: installing redis-server (Debian package)" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

redis_dir="$(mktemp -d "${TMPDIR:-/tmp}/spoold-bench-redis.XXXXXX")"
redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill "$redis_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$redis_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --dir "$redis_dir" \
    --save "" --appendonly no --daemonize no --logfile "$redis_dir/redis.log" &
redis_pid=$!
"$venv/bin/python" - "$port" <<'PY'
import sys, time
import redis
client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
deadline = time.monotonic() + 10
while True:
    try:
        client.ping()
        break
    except redis.ConnectionError:
        if time.monotonic() > deadline:
            sys.exit("bench: redis-server did not answer on 127.0.0.1:%s" % sys.argv[1])
        time.sleep(0.05)
PY

BENCH_REDIS_PORT="$port" BENCH_REDIS_PID="$redis_pid" "$venv/bin/python" "$here/bench.py" "$@"
