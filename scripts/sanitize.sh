#!/usr/bin/env bash
# Builds the unit tests (CTest label unit) with AddressSanitizer and UndefinedBehaviorSanitizer
# into build-asan/ and runs them; the first finding fails the run. Extra arguments go to ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-asan"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPREWARM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g" \
  -DCMAKE_C_FLAGS_SANITIZE="-O1 -g" >/dev/null
cmake --build "$build" -j"$(nproc)" --target unit_tests
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
cd "$build"
ctest --output-on-failure -L unit "$@"
