# Reliability tests (docs/RELIABILITY.md): fault injection and bounded
# stress, appended to the one list in CMakeLists.txt.
list(APPEND corio_tests
  faults
  stress
)
set(corio_test_timeout_faults 600)
set(corio_test_timeout_stress 600)
