# The process queue (core/src/ipc/pqueue*.c). One program: without an argument the
# plain-process tests, including processes killed mid-operation (ipc.pqueue); with
# a backend name the coroutine tests on that backend (ipc.pqueue.<backend>). The
# dead-process cases write slot words directly, so it links the static library,
# whose hidden symbols are visible inside one link, and reads the private layout.
add_executable(test_pqueue
  "${CMAKE_CURRENT_LIST_DIR}/test_pqueue.c"
  "${CMAKE_CURRENT_LIST_DIR}/test_pqueue_chaos.c"
  "${CMAKE_CURRENT_LIST_DIR}/kids.c" "${PROJECT_SOURCE_DIR}/tests/coro/sched_test.c"
  "${PROJECT_SOURCE_DIR}/tests/common/test_util.c")
target_link_libraries(test_pqueue PRIVATE ioplex_static cmocka)
target_include_directories(test_pqueue PRIVATE "${PROJECT_SOURCE_DIR}/tests/common"
  "${PROJECT_SOURCE_DIR}/tests/coro" "${PROJECT_SOURCE_DIR}/core/src/ipc")
foreach(b epoll poll uring)
  add_dependencies(test_pqueue iop_backend_${b})
endforeach()
add_test(NAME ipc.pqueue COMMAND test_pqueue)
set_tests_properties(ipc.pqueue PROPERTIES TIMEOUT 90 LABELS ipc)
foreach(backend epoll poll uring)
  add_test(NAME ipc.pqueue.${backend} COMMAND test_pqueue ${backend})
  set_tests_properties(ipc.pqueue.${backend} PROPERTIES TIMEOUT 60 LABELS ipc)
endforeach()
