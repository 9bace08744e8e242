# The process pipe and the process pool (core/src/ipc/ppipe*.c, pool*.c).
# argv[1] = "plain" runs the plain-process group; a backend name the coroutine group.
foreach(t ppipe pool)
  ioplex_test_executable(test_${t} "${CMAKE_CURRENT_LIST_DIR}/test_${t}.c" "${CMAKE_CURRENT_LIST_DIR}/kids.c"
    "${PROJECT_SOURCE_DIR}/tests/coro/sched_test.c" "${PROJECT_SOURCE_DIR}/tests/common/test_util.c")
  # test_ppipe forges fragments on the wire (core/src/ipc/ppipe_wire.h).
  target_include_directories(test_${t} PRIVATE "${PROJECT_SOURCE_DIR}/tests/coro"
    "${PROJECT_SOURCE_DIR}/core/src")
  get_property(pipe_pool_backends GLOBAL PROPERTY IOPLEX_BACKENDS)
  foreach(b IN LISTS pipe_pool_backends)
    add_dependencies(test_${t} iop_backend_${b})
  endforeach()
  add_test(NAME ipc.${t}.plain COMMAND test_${t} plain)
  set_tests_properties(ipc.${t}.plain PROPERTIES TIMEOUT 60 LABELS ipc)
  foreach(backend IN LISTS IOPLEX_TEST_BACKENDS)
    add_test(NAME ipc.${t}.${backend} COMMAND test_${t} ${backend})
    set_tests_properties(ipc.${t}.${backend} PROPERTIES TIMEOUT 60 LABELS ipc)
  endforeach()
endforeach()
