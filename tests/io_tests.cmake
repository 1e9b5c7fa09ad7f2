# Tests of the async IO, deadline, cancellation and synchronisation layer,
# appended to the one list in CMakeLists.txt.
list(APPEND corio_tests
  io_fd
  io_edges
  io_tcp
  io_vec
  io_reset
  io_emfile
  signal
  cancel_waits
  deadline
  chan
  select
  sync
  cond
  rwlock
  process
  group
)

# test_examples runs the example programs (examples/), so it is built
# here rather than from the list: it needs their paths, which it gets as
# compile definitions (its command line names the tests to run).
if(TARGET hello-server AND TARGET echo-server AND TARGET echo-client AND TARGET parallel-run)
  add_executable(test_examples test_examples.c)
  target_link_libraries(test_examples PRIVATE corio_static m)
  target_include_directories(test_examples PRIVATE
    ${PROJECT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(test_examples PRIVATE
    HELLO_SERVER="$<TARGET_FILE:hello-server>"
    ECHO_SERVER="$<TARGET_FILE:echo-server>"
    ECHO_CLIENT="$<TARGET_FILE:echo-client>"
    PARALLEL_RUN="$<TARGET_FILE:parallel-run>")
  add_dependencies(test_examples hello-server echo-server echo-client parallel-run)
  add_test(NAME examples COMMAND ${corio_test_runner} $<TARGET_FILE:test_examples>)
  set_tests_properties(examples PROPERTIES TIMEOUT 180 LABELS core)
endif()

# corio-demo's contract (modes, JSON fields, bad options). Runs the demo
# natively: not in cross builds, and not under the test wrapper.
if(TARGET corio-demo AND NOT CMAKE_CROSSCOMPILING)
  add_test(NAME demo COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_demo.sh $<TARGET_FILE:corio-demo>)
  set_tests_properties(demo PROPERTIES TIMEOUT 120 LABELS core)
endif()
