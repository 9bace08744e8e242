# Sharded workers under a supervisor (core/src/shard). Each test program forks its
# supervisor, which forks the workers; see test_shard_harness.h for how nothing
# outlives a test.
set(SHARD_HARNESS test_shard_harness.c "${PROJECT_SOURCE_DIR}/tests/common/test_util.c")
get_property(shard_backend_modules GLOBAL PROPERTY IOPLEX_BACKENDS)
foreach(t shard shard_restart shard_misc shard_names)
  ioplex_test_executable(test_${t} test_${t}.c ${SHARD_HARNESS})
  foreach(b IN LISTS shard_backend_modules)
    add_dependencies(test_${t} iop_backend_${b})
  endforeach()
endforeach()

# The backends the workers' loops run on: the readiness ones that differ (epoll,
# poll) and the completion one (uring).
foreach(backend epoll poll uring)
  add_test(NAME shard.${backend} COMMAND test_shard ${backend})
  set_tests_properties(shard.${backend} PROPERTIES TIMEOUT 60 LABELS "ipc;shard")
  foreach(mode reuseport shared)
    add_test(NAME shard.sighup.${backend}.${mode} COMMAND test_shard_restart ${backend} ${mode})
    set_tests_properties(shard.sighup.${backend}.${mode} PROPERTIES TIMEOUT 60 LABELS "ipc;shard")
  endforeach()
endforeach()
# A listen name for both loopbacks (a private /etc/hosts: skipped without a mount
# namespace): every address served in both modes and across a SIGHUP.
foreach(backend epoll uring)
  foreach(mode reuseport shared)
    add_test(NAME shard.names.${backend}.${mode} COMMAND test_shard_names ${backend} ${mode})
    set_tests_properties(shard.names.${backend}.${mode} PROPERTIES TIMEOUT 60 LABELS "ipc;shard"
      SKIP_RETURN_CODE 77)
  endforeach()
endforeach()
# The misc tests write a stats cell by its private layout.
target_include_directories(test_shard_misc PRIVATE "${PROJECT_SOURCE_DIR}/core/src/shard"
  "${PROJECT_SOURCE_DIR}/core/src")
add_test(NAME shard.misc COMMAND test_shard_misc)
set_tests_properties(shard.misc PROPERTIES TIMEOUT 60 LABELS "ipc;shard")
