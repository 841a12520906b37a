#!/usr/bin/env bash
# Regenerates benches/startup.order: the functions a release daemon runs while it starts and
# idles, which build.rs turns into a linker script that puts them first in .text, ahead of
# the rest of the code. The kernel maps 64 KB of code around every
# page fault (fault-around); spread over the 30 MB segment, the ~4 MB of start-up code touched
# ~320 places and left about 20 MB of it resident at rest.
#
# Usage: benches/startup-order.sh [path/to/release/switchboard] [postgres url]
# (KEEP=1 keeps the callgrind outputs and daemon logs in the temporary directory it prints.)
# Needs valgrind (callgrind), curl and psql. Runs the daemon under callgrind on the embedded
# SQLite default and on a fresh PostgreSQL database, each started twice (a first start, which
# migrates and makes its keys, then a restart on what it left), each time until ready and then
# idle for 12 s.
# A stale list costs only memory: names no longer in the binary match nothing. Rebuild after
# regenerating (cargo build --release) and read the idle RSS off `switchboard bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/switchboard}")
pg=${2:-postgres://postgres@127.0.0.1:5432/test}
work=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "working in $work"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

run() { # run NAME START PORT [database url]
    local name=$1 start=$2 port=$3 url=${4:-}
    mkdir -p "$work/$name"
    env SWITCHBOARD_DATA_DIR="$work/$name" SWITCHBOARD_SERVER__LISTEN="127.0.0.1:$port" \
        ${url:+SWITCHBOARD_DATABASE__URL="$url"} RUST_LOG=warn \
        valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.$start.out" \
        "$bin" run >"$work/$name.$start.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 1
    done
    sleep 12
    kill -INT "$pid"
    wait "$pid" || true
}

run sqlite 1 18561
run sqlite 2 18561
db="sb_startup_order_$$"
psql "$pg" -qc "CREATE DATABASE $db"
run postgres 1 18562 "${pg%/*}/$db"
run postgres 2 18562 "${pg%/*}/$db"
psql "$pg" -qc "DROP DATABASE $db"

# Functions of the binary itself (callgrind's `ob=` object, then `fn=` entries; an object or a
# function is named where it first appears, which may be a call's `cob=` or `cfn=`), kept only
# when the symbol table has them. Those all four runs ran come first, then those three ran,
# and so on (each group in callgrind's order of first sight), so that a daemon on one database
# finds what it runs packed together, whichever start it is.
nm --defined-only "$bin" | awk '$2 ~ /^[tT]$/ { print $3 }' | sort -u >"$work/symbols"
for out in "$work"/sqlite.1.out "$work"/sqlite.2.out "$work"/postgres.1.out "$work"/postgres.2.out; do
    awk -v bin="$bin" '
        function named(line, key) { sub("^" key "=\\([0-9]+\\) ?", "", line); return line }
        /^ob=\(/ { id = $1; sub(/^ob=/, "", id); if (NF > 1) obs[id] = named($0, "ob"); ours = (obs[id] == bin); next }
        /^fn=\(/ { id = $1; sub(/^fn=/, "", id); if (NF > 1) fns[id] = named($0, "fn"); if (ours && !(fns[id] in seen)) { seen[fns[id]] = 1; print fns[id] } next }
        /^cfn=\(/ { id = $1; sub(/^cfn=/, "", id); if (NF > 1) fns[id] = named($0, "cfn"); next }
        /^cob=\(/ { id = $1; sub(/^cob=/, "", id); if (NF > 1) obs[id] = named($0, "cob"); next }
    ' "$out"
done | awk 'NR == FNR { have[$0] = 1; next }
    ($0 in have) { if (!($0 in runs)) order[n++] = $0; runs[$0]++ }
    END { for (k = 4; k >= 1; k--) for (i = 0; i < n; i++) if (runs[order[i]] == k) print order[i] }
' "$work/symbols" - >"$work/order"
# A few thousand is right; a few dozen means the runs failed or the objects went unnamed.
count=$(wc -l <"$work/order")
if [ "$count" -lt 2000 ]; then
    echo "only $count functions recorded; benches/startup.order left as it was (logs: KEEP=1)" >&2
    exit 1
fi
mv "$work/order" benches/startup.order
echo "benches/startup.order: $count functions"
