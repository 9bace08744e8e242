#!/bin/sh
# Builds one fuzz harness with clang + libFuzzer (ASan, UBSan) and runs it briefly
# from its seed corpus (tests/fuzz/corpus/NAME). Exit 77 (skipped) without clang or
# libFuzzer.
# usage: run-fuzz.sh SOURCE_DIR WORK_DIR NAME [CLANG] [RUNS] [SECONDS]
set -u
src=$1
work=$2
name=$3
clang=${4:-clang}
runs=${5:-200000}
seconds=${6:-20}
case $name in
    http_parse) dir=plugins/http; code="http_parse.c http_date.c" ;;
    http_resp) dir=apps/fetch; code="http_resp.c url.c" ;;
    url) dir=apps/fetch; code="url.c" ;;
    chat_lines) dir=plugins/chat; code="chat_lines.c" ;;
    hostport) dir=apps/common; code="hostport.c ../../core/src/addr/addr_spec.c" ;;
    ppipe) dir=core/src/ipc; code="ppipe.c ppipe_io.c" ;;
    module_check) dir=core/src; code="module_check.c" ;;
    shdict_repair) dir=core/src/ipc; code="shdict.c shdict_check.c shdict_store.c" ;;
    *) echo "fuzz: no harness named $name"; exit 1 ;;
esac
command -v "$clang" >/dev/null 2>&1 || { echo "fuzz: $clang not found: skipped"; exit 77; }
mkdir -p "$work/corpus" || exit 1
bin=$work/fuzz_$name
sources="$src/tests/fuzz/fuzz_$name.c"
for f in $code; do
    sources="$sources $src/$dir/$f"
done
if ! "$clang" -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
       -I"$src/$dir" -I"$src/core/include" -I"$src/core/src" $sources -o "$bin" 2>"$work/build.log"; then
    # A toolchain without libFuzzer is a skip; our code failing to build is a failure.
    echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
        >"$work/probe.c"
    if ! "$clang" -fsanitize=fuzzer "$work/probe.c" -o "$work/probe" >/dev/null 2>&1; then
        echo "fuzz: $clang has no libFuzzer: skipped"
        exit 77
    fi
    cat "$work/build.log"
    exit 1
fi
cd "$work" || exit 1
# New inputs go to the work corpus; the seeds in the source tree stay as they are.
# libFuzzer exits with 77 on a finding by default: that would read as a skip.
exec "$bin" -runs="$runs" -max_total_time="$seconds" -max_len=9000 -timeout=10 \
     -error_exitcode=1 -timeout_exitcode=1 \
     -rss_limit_mb=2048 -print_final_stats=1 "$work/corpus" "$src/tests/fuzz/corpus/$name"
