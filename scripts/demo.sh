#!/usr/bin/env bash
# demo.sh: build corio (Release) and run the main demo, corio-demo.
# Arguments are passed to corio-demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCORIO_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
exec build-release/bin/corio-demo "$@"
