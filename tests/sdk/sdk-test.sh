#!/usr/bin/env bash
# sdk: installs this build into a scratch prefix, builds the two template plugins
# (backends/template, plugins/template) out of tree against it, with CMake's
# find_package and with pkg-config, and runs them: the installed ioplexd serves the
# template service on the template backend, and the installed iop-client talks to it.
# usage: sdk-test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null || true
    [ -n "$daemon" ] && wait "$daemon" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
prefix=$tmp/prefix
fail() { echo "sdk: FAIL: $*"; exit 1; }

echo "== install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "install"; }
# A prefix other than the configured one, as the README's command allows: the
# installed programs start without LD_LIBRARY_PATH, search the prefix's module dirs,
# and ioplex.pc and the CMake package point into the prefix.
unset LD_LIBRARY_PATH
"$prefix/bin/iop-plugins" --help >/dev/null || fail "the installed iop-plugins does not start"
# (Its output is taken whole first: with pipefail, grep -q leaving at the first match
# can fail the pipe with the writer's SIGPIPE.)
listing=$("$prefix/bin/iop-plugins") || fail "the installed iop-plugins failed"
grep -q "^search path: .*$prefix/lib[^:]*/ioplex/backends" <<<"$listing" ||
    fail "the installed library does not search $prefix's backend dir"
# Its own modules, never the build tree's: those may be rebuilt after the install.
grep -q "^search path: .*$(realpath "$build")/" <<<"$listing" &&
    { echo "$listing"; fail "the installed library searches the build tree"; }
grep -q "^  file .*$prefix/lib[^/]*/ioplex/backends/iop_backend_epoll.so" <<<"$listing" ||
    { echo "$listing"; fail "the installed iop-plugins does not use the prefix's epoll"; }
pcdir=$(dirname "$(find "$prefix" -name ioplex.pc | head -n1)")
[ -n "$pcdir" ] || fail "no ioplex.pc installed"

echo "== CMake: find_package(ioplex)"
for t in backends/template plugins/template; do
    name=$(basename "$(dirname "$t")")
    cmake -S "$src/$t" -B "$tmp/cm-$name" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cm-$name.log" 2>&1 &&
        cmake --build "$tmp/cm-$name" >>"$tmp/cm-$name.log" 2>&1 || { cat "$tmp/cm-$name.log"; fail "cmake build of $t"; }
done
ls "$tmp/cm-backends/iop_backend_mine.so" "$tmp/cm-plugins/iop_service_upper.so" >/dev/null

# A program linked with each of the package's libraries, shared and static, runs a
# loop on the prefix's epoll module.
mkdir -p "$tmp/app"
cat >"$tmp/app/app.c" <<'APP'
#include <stdio.h>
#include <ioplex.h>
static void done(iop_op_t *op, int res) { (void)op; printf("nop %d\n", res); }
int main(int argc, char **argv)
{
    iop_loop_t *loop;
    iop_loop_opts_t o = { .size = sizeof o, .backend = "epoll", .plugin_path = argc > 1 ? argv[1] : NULL };
    if (iop_loop_create(&loop, &o) < 0) {
        fprintf(stderr, "%s\n", iop_last_error());
        return 1;
    }
    iop_op_t op;
    iop_prep_nop(&op, done, NULL);
    iop_submit(loop, &op);
    iop_loop_run(loop, IOP_RUN_DEFAULT);
    iop_loop_destroy(loop);
    return 0;
}
APP
cat >"$tmp/app/CMakeLists.txt" <<'APP'
cmake_minimum_required(VERSION 3.20)
project(app LANGUAGES C)
find_package(ioplex REQUIRED)
add_executable(app_shared app.c)
target_link_libraries(app_shared PRIVATE ioplex::ioplex)
add_executable(app_static app.c)
target_link_libraries(app_static PRIVATE ioplex::ioplex_static)
APP
# A sanitizer build's library needs its runtime in the program too.
case $(sed -n 's/^IOPLEX_SANITIZE:STRING=//p' "$build/CMakeCache.txt") in
    thread) app_flags=-fsanitize=thread ;;
    ON | address) app_flags=-fsanitize=address,undefined ;;
    *) app_flags="" ;;
esac
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$app_flags" \
    >"$tmp/app.log" 2>&1 &&
    cmake --build "$tmp/app/build" >>"$tmp/app.log" 2>&1 || { cat "$tmp/app.log"; fail "cmake build of a program against ioplex"; }
libdir=$(dirname "$pcdir")
for kind in shared static; do
    got=$(LD_LIBRARY_PATH="$libdir" "$tmp/app/build/app_$kind" "$libdir/ioplex/backends") ||
        fail "the program linked with ioplex::ioplex${kind/shared/} failed"
    [ "$got" = "nop 0" ] || fail "the program linked with ioplex::ioplex${kind/shared/} printed '$got'"
done
# installing a template puts it where this copy of ioplex looks
cmake --install "$tmp/cm-backends" >"$tmp/cm-install.log" 2>&1 || { cat "$tmp/cm-install.log"; fail "install of the template backend"; }
[ -n "$(find "$prefix" -name iop_backend_mine.so)" ] || { cat "$tmp/cm-install.log"; fail "the template backend was not installed into $prefix"; }

echo "== pkg-config ioplex"
pc() { PKG_CONFIG_PATH=$pcdir pkg-config "$@" ioplex; }
[ "$(pc --variable=backenddir)" -ef "$(find "$prefix" -type d -path '*ioplex/backends' | head -n1)" ] ||
    fail "ioplex.pc's backenddir ($(pc --variable=backenddir)) is not the prefix's"
mkdir -p "$tmp/pc"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden $(pc --cflags) \
    "$src/backends/template/mine.c" -o "$tmp/pc/iop_backend_mine.so" -Wl,-z,defs || fail "pkg-config build of the backend"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden $(pc --cflags) \
    "$src/plugins/template/upper.c" -o "$tmp/pc/iop_service_upper.so" $(pc --libs) -Wl,-z,defs ||
    fail "pkg-config build of the service"
# pkg-config --static names what the static library needs: a program links with it alone
libs=$(pc --static --libs | sed 's/\(^\| \)-lioplex\( \|$\)/ -l:libioplex.a /')
# shellcheck disable=SC2046,SC2086
cc -std=c11 $app_flags $(pc --cflags) "$tmp/app/app.c" -o "$tmp/pc/app_static" $libs ||
    fail "pkg-config --static build of a program against libioplex.a"
got=$("$tmp/pc/app_static" "$libdir/ioplex/backends") || fail "the program linked by pkg-config --static failed"
[ "$got" = "nop 0" ] || fail "the program linked by pkg-config --static printed '$got'"

for dir in "$tmp/cm-backends:$tmp/cm-plugins" "$tmp/pc"; do
    echo "== run from $dir"
    out=$("$prefix/bin/iop-plugins" --plugin-path "$dir")
    grep -q '^mine .*probe: ok' <<<"$out" || { echo "$out"; fail "iop-plugins does not show mine as usable"; }
    grep -q '^upper .*service' <<<"$out" || { echo "$out"; fail "iop-plugins does not list upper"; }
    # Emptied here, not by the redirection below: that happens in the background
    # job, and the wait loop could still read the last run's lines.
    : >"$tmp/d.out"
    : >"$tmp/d.err"
    "$prefix/bin/ioplexd" --workers 0 --backend mine --plugin-path "$dir" \
        --service 'upper=127.0.0.1:0,prefix=>' >"$tmp/d.out" 2>"$tmp/d.err" &
    daemon=$!
    addr=""
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/^ioplexd: upper listening on \([^ ]*\).*/\1/p' "$tmp/d.out")
        [ -n "$addr" ] && break
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$tmp/d.out" "$tmp/d.err"; fail "ioplexd did not come up"; }
    grep -q '^ioplexd: backend mine' "$tmp/d.out" || { cat "$tmp/d.out"; fail "ioplexd is not on the template backend"; }
    got=$(printf 'hello, sdk\n' | "$prefix/bin/iop-client" echo "$addr" --timeout 5)
    [ "$got" = ">HELLO, SDK" ] || fail "the template service answered '$got'"
    # lines, not reads: a line in two pieces, then two lines in one read
    two=$({ printf 'ab'; sleep 0.3; printf 'cd\nef\n'; } | "$prefix/bin/iop-client" echo "$addr" --timeout 5)
    [ "$two" = "$(printf '>ABCD\n>EF')" ] || fail "the template service answered '$two' to 'ab', 'cd\\nef\\n'"
    kill -TERM "$daemon"
    wait "$daemon" || fail "ioplexd exited with status $?"
    daemon=""
    echo "   ok: '$got' from the template service on the template backend"
done
echo "sdk: ok"
