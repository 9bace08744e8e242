#!/usr/bin/env bash
# iop-echo-server --workers 2 given a listen address whose host is a name for both
# loopbacks (::1 and 127.0.0.1, from an /etc/hosts of our own bind-mounted in a
# private mount namespace): it prints a "listening on" line per address, on one
# port, and echoes on both (each worker accepts on every listener, not listener 0
# only); the per-worker counts add up to every connection. Skipped (77) where a
# mount namespace cannot be made.
# usage: echo-server-names.sh IOP-ECHO-SERVER IOP-CLIENT BACKEND
set -uo pipefail
skip() { echo "echo-server-names: skipped: $*"; exit 77; }
. "$(dirname "$0")/dual-stack-name.sh"
dual_stack_enter "$0" "$@"

server=$1 client=$2 backend=$3 dir=$DUAL_STACK_DIR name=$DUAL_STACK_NAME
dual_stack_mount

pid=
fail() {
    echo "echo-server-names: FAIL ($backend): $*"
    [ -f "$dir/out" ] && sed 's/^/    | /' "$dir/out"
    exit 1
}
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null' EXIT

"$server" --backend "$backend" --listen "$name:0" --workers 2 >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do
    [ "$(grep -c ': listening on ' "$dir/out")" -ge 2 ] && break
    kill -0 "$pid" 2>/dev/null || fail "the server ended: exit $(wait "$pid"; echo $?)"
    sleep 0.1
done
mapfile -t addrs < <(sed -n 's/^iop-echo-server: listening on \([^,]*\),.*$/\1/p' "$dir/out")
[ "${#addrs[@]}" -eq 2 ] || fail "want 2 listening lines, got ${#addrs[@]}"
p6=${addrs[0]#\[::1\]:} p4=${addrs[1]#127.0.0.1:}
[ "${addrs[0]}" = "[::1]:$p6" ] && [ "${addrs[1]}" = "127.0.0.1:$p4" ] && [ "$p6" = "$p4" ] ||
    fail "want [::1]:P then 127.0.0.1:P, got ${addrs[*]}"

# Four connections on each address: with SO_REUSEPORT they spread over both workers.
for a in "${addrs[@]}"; do
    for i in 1 2 3 4; do
        got=$(echo "hello $a $i" | timeout 10 "$client" echo "$a" --backend "$backend") ||
            fail "echo $i on $a failed: $got"
        [ "$got" = "hello $a $i" ] || fail "echo $i on $a answered '$got'"
    done
done

kill -TERM "$pid"
wait "$pid"
st=$?
pid=
[ "$st" -eq 0 ] || fail "exit $st after SIGTERM"
line=$(grep 'connections per worker:' "$dir/out") || fail "no per-worker counts"
total=$(sed 's/.*connections per worker://' <<<"$line" | tr ',' '\n' | awk -F': ' '{ s += $2 } END { print s + 0 }')
[ "$total" -eq 8 ] || fail "the workers counted $total connections, not 8: $line"
echo "echo-server-names: ok ($backend): ${addrs[*]}"
