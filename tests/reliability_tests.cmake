# Reliability tests (docs/RELIABILITY.md): fault injection and bounded
# stress, appended to the one list in CMakeLists.txt.
list(APPEND corio_tests
  faults
  stress
)
set(corio_test_timeout_faults 600)
set(corio_test_timeout_stress 600)

# The gdb commands (tools/gdb/corio.py) against a program with suspended
# tasks. Native builds with gdb only; not under a wrapper or emulator.
find_program(CORIO_GDB gdb)
if(CORIO_GDB AND NOT corio_test_runner)
  add_executable(gdb_target gdb_target.c)
  target_link_libraries(gdb_target PRIVATE corio_static)
  target_compile_options(gdb_target PRIVATE -O0 -g)
  add_test(NAME gdb COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_gdb.sh
           $<TARGET_FILE:gdb_target> ${PROJECT_SOURCE_DIR}/tools/gdb/corio.py
           ${corio_ctx_backend})
  set_tests_properties(gdb PROPERTIES TIMEOUT 120 LABELS core)
endif()

# The assembly switches' unwind tables, for both targets whatever the host
# (clang assembles either): no register saved below the stack pointer.
find_program(CORIO_CLANG clang)
find_program(CORIO_READELF readelf)
if(CORIO_CLANG AND CORIO_READELF)
  add_test(NAME cfi COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_cfi.sh ${CORIO_CLANG}
           ${CORIO_READELF} ${PROJECT_SOURCE_DIR}/src)
  set_tests_properties(cfi PROPERTIES TIMEOUT 60 LABELS core)
endif()

# The watchdog's dump calls only async-signal-safe functions (it runs in
# a SIGALRM handler): read from debug.c's object in the static library.
if(CMAKE_NM)
  add_test(NAME signal_safe COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_signal_safe.sh ${CMAKE_NM}
           $<TARGET_FILE:corio_static>)
  set_tests_properties(signal_safe PROPERTIES TIMEOUT 60 LABELS core)
endif()

# Installing: header, libraries, pkg-config, CMake package, exports.
# Native builds only (it compiles and runs consumers with the host cc).
if(NOT CMAKE_CROSSCOMPILING AND NOT CORIO_TEST_WRAPPER AND CORIO_SANITIZE STREQUAL "none")
  add_test(NAME install COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_install.sh
           ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
  set_tests_properties(install PROPERTIES TIMEOUT 300 LABELS core)
endif()
