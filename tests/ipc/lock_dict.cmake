# The robust process lock and the shared dict (core/src/ipc/plock.c, shdict*.c).
# Both suites take the backend as argv[1] and reuse the coroutine test harness.
foreach(t plock shdict)
  ioplex_test_executable(test_${t} "${CMAKE_CURRENT_LIST_DIR}/test_${t}.c"
    "${CMAKE_CURRENT_LIST_DIR}/kids.c" "${PROJECT_SOURCE_DIR}/tests/coro/sched_test.c" "${PROJECT_SOURCE_DIR}/tests/common/test_util.c")
  # test_shdict scribbles on the dict's memory (core/src/ipc/shdict_internal.h).
  target_include_directories(test_${t} PRIVATE "${PROJECT_SOURCE_DIR}/tests/coro"
    "${PROJECT_SOURCE_DIR}/core/src")
  foreach(b epoll poll uring)
    add_dependencies(test_${t} iop_backend_${b})
  endforeach()
endforeach()
find_package(Threads REQUIRED)
target_link_libraries(test_plock PRIVATE Threads::Threads)
foreach(backend epoll poll uring)
  add_test(NAME ipc.plock.${backend} COMMAND test_plock ${backend})
  set_tests_properties(ipc.plock.${backend} PROPERTIES TIMEOUT 60 LABELS ipc)
endforeach()
# The dict's coroutine paths are the lock's; one readiness and one completion backend.
foreach(backend epoll uring)
  add_test(NAME ipc.shdict.${backend} COMMAND test_shdict ${backend})
  set_tests_properties(ipc.shdict.${backend} PROPERTIES TIMEOUT 60 LABELS ipc)
endforeach()
