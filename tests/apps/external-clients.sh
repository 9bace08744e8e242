#!/usr/bin/env bash
# apps.external.BACKEND: ioplexd (two workers, echo and http) driven by clients nobody
# here wrote: curl, wrk, Python's http.client and socket, nc. Each client that is not
# installed is skipped with a note; if none is, the test is skipped (77).
# usage: external-clients.sh IOPLEXD BACKEND ROOT_DIR
set -uo pipefail
ioplexd=$1 backend=$2 root=$3
tmp=$(mktemp -d)
daemon=""
cleanup() {
    if [ -n "$daemon" ]; then
        kill -KILL "$daemon" 2>/dev/null
        wait "$daemon" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
failures=0 ran=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
have() { command -v "$1" >/dev/null 2>&1; }
py=$(command -v /usr/bin/python3 || command -v python3 || true)

"$ioplexd" --backend "$backend" --workers 2 --drain-timeout 2 --service echo=127.0.0.1:0 \
    --service "http=127.0.0.1:0,root=$root" >"$tmp/out" 2>"$tmp/err" &
daemon=$!
for _ in $(seq 1 100); do
    grep -q 'http listening on' "$tmp/out" && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.1
done
echo_addr=$(sed -n 's/^ioplexd: echo listening on \([^ ]*\).*/\1/p' "$tmp/out")
http_addr=$(sed -n 's/^ioplexd: http listening on \([^ ]*\).*/\1/p' "$tmp/out")
if [ -z "$http_addr" ] || [ -z "$echo_addr" ]; then
    cat "$tmp/out" "$tmp/err"
    echo "FAIL: ioplexd did not come up"
    exit 1
fi
echo "ioplexd on $backend: echo $echo_addr, http $http_addr"
echo_port=${echo_addr##*:} http_port=${http_addr##*:}

# ---- curl ----------------------------------------------------------------------------
if have curl; then
    ran=$((ran + 1))
    body=$(curl -sS --max-time 5 "http://$http_addr/hello") || fail "curl /hello"
    [ "$body" = "Hello, World!" ] || fail "curl /hello said '$body'"
    head=$(curl -sS -I --max-time 5 "http://$http_addr/index.html") || fail "curl -I"
    grep -qi '^content-type: text/html' <<<"$head" || fail "curl -I: no text/html Content-Type"
    grep -qi '^last-modified: ' <<<"$head" || fail "curl -I: no Last-Modified"
    part=$(curl -sS -r 0-4 --max-time 5 "http://$http_addr/index.html") || fail "curl -r"
    [ "${#part}" -eq 5 ] || fail "curl -r 0-4 gave ${#part} bytes"
    curl -sS -f --max-time 5 "http://$http_addr/no/such/file" >/dev/null 2>&1
    [ $? -eq 22 ] || fail "curl -f on a missing file did not exit 22"
    curl -sv --max-time 5 "http://$http_addr/hello" "http://$http_addr/hello" >/dev/null 2>"$tmp/curl.v"
    grep -qi 're-using existing connection' "$tmp/curl.v" || fail "curl did not reuse the connection"
    echo "curl: ok"
else
    echo "curl: not installed, skipped"
fi

# ---- wrk -c 200 ---------------------------------------------------------------------
if have wrk; then
    ran=$((ran + 1))
    ulimit -n 4096 2>/dev/null
    # wrk's own 2 s answer timeout counts as a socket error; a sanitizer build
    # answers 200 fresh connections slower than that at first: 10 s is a stall.
    wrk -t1 -c200 -d2s --timeout 10s "http://$http_addr/hello" >"$tmp/wrk" 2>&1 || fail "wrk exited $?"
    sed 's/^/  /' "$tmp/wrk"
    grep -q 'Socket errors' "$tmp/wrk" && fail "wrk saw socket errors"
    grep -q 'Non-2xx' "$tmp/wrk" && fail "wrk saw non-2xx responses"
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$tmp/wrk")
    [ "${reqs:-0}" -gt 100 ] || fail "wrk made only ${reqs:-0} requests"   # TSan: ~1,000
    echo "wrk: ok"
else
    echo "wrk: not installed, skipped"
fi

# ---- Python: http.client and raw sockets ------------------------------------------------
if [ -n "$py" ]; then
    ran=$((ran + 1))
    if "$py" - "$http_port" "$echo_port" <<'PY'
import http.client, socket, sys, time
hport, eport = int(sys.argv[1]), int(sys.argv[2])

# http.client: keep-alive over one connection, HEAD, 404 keeps it open.
c = http.client.HTTPConnection("127.0.0.1", hport, timeout=5)
for _ in range(3):
    c.request("GET", "/hello"); r = c.getresponse(); b = r.read()
    assert r.status == 200 and b == b"Hello, World!", (r.status, b)
c.request("HEAD", "/hello"); r = c.getresponse(); assert r.status == 200 and r.read() == b""
c.request("GET", "/nope"); r = c.getresponse(); r.read(); assert r.status == 404
c.request("GET", "/hello"); r = c.getresponse(); assert r.read() == b"Hello, World!"
c.close()

def recv_until(s, n_responses):
    data = b""
    while data.count(b"Hello, World!") < n_responses:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data

# Pipelining: ten requests in one send, ten responses in order.
s = socket.create_connection(("127.0.0.1", hport), timeout=5)
s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
data = recv_until(s, 10)
assert data.count(b"HTTP/1.1 200") == 10, data[:200]
s.close()

# A slow sender: the request a byte at a time.
s = socket.create_connection(("127.0.0.1", hport), timeout=5)
for ch in b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n":
    s.send(bytes([ch])); time.sleep(0.002)
assert b"Hello, World!" in recv_until(s, 1)
s.close()

# Half-close: the request, then shutdown(SHUT_WR): the response still comes.
s = socket.create_connection(("127.0.0.1", hport), timeout=5)
s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
s.shutdown(socket.SHUT_WR)
assert b"Hello, World!" in recv_until(s, 1)
s.close()

# Echo over a raw socket, with a half-close at the end: everything comes back, then EOF.
s = socket.create_connection(("127.0.0.1", eport), timeout=5)
msg = bytes(range(256)) * 1000
s.sendall(msg)
s.shutdown(socket.SHUT_WR)
back = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    back += chunk
assert back == msg, (len(back), len(msg))
s.close()
print("python: ok")
PY
    then :; else fail "python clients"; fi
else
    echo "python3: not installed, skipped"
fi

# ---- nc ---------------------------------------------------------------------------------
if have nc; then
    ran=$((ran + 1))
    got=$(printf 'through netcat\n' | timeout 10 nc -N 127.0.0.1 "$echo_port")
    [ "$got" = "through netcat" ] || fail "nc echo said '$got'"
    got=$(printf 'GET /hello HTTP/1.0\r\n\r\n' | timeout 10 nc -N 127.0.0.1 "$http_port" | tail -n 1)
    [ "$got" = "Hello, World!" ] || fail "nc http said '$got'"
    echo "nc: ok"
else
    echo "nc: not installed, skipped"
fi

kill -TERM "$daemon"
wait "$daemon"
status=$?
daemon=""
[ "$status" -eq 0 ] || { fail "ioplexd exited $status"; sed 's/^/  /' "$tmp/err"; }
[ "$ran" -gt 0 ] || { echo "no outside client installed: skipped"; exit 77; }
[ "$failures" -eq 0 ] || exit 1
echo "external clients on $backend: ok"
