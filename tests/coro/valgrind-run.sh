#!/bin/sh
# Runs a test program under valgrind's memcheck; any error or definite leak fails
# it. 77 = skipped (valgrind not installed).
command -v valgrind >/dev/null 2>&1 || { echo "valgrind not installed: skipped"; exit 77; }
exec valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite "$@"
