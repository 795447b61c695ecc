#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan+UBSan) into build-fuzz/ and runs each for
# SECONDS (default 20) from its seed corpus fuzz/corpus/<target>/, with fuzz/dict/<target>.dict
# where there is one. Fails on any crash, leak, sanitizer report or timeout, naming the input
# that caused it (build-fuzz/artifacts/). Prints one JSON object: executions, new corpus inputs
# and seconds per target.
set -euo pipefail
secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
# Only the modules the targets link: the CLI, bake, pools and probes are not fuzzed here.
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPREWARM_FUZZ=ON -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_CXX_FLAGS_FUZZ="-O1 -g" \
  -DCMAKE_C_FLAGS_FUZZ="-O1 -g" \
  -DPREWARM_MODULES="base;criu;spec;oci;net;rootfs;image;store;registry;engine;images" >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzzers

export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=()
json="{"
for seeds in "$root"/fuzz/corpus/*/; do
  t=$(basename "$seeds")
  bin="$build/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz target $t has a corpus but no binary $bin" >&2; exit 1; }
  # New inputs go to a work corpus, so the committed seeds change only by hand.
  work="$build/corpus/$t" art="$build/artifacts/$t/"
  mkdir -p "$work" "$art"
  log="$build/fuzz-$t.log"
  start=$(date +%s)
  rc=0
  dict=()
  [ -f "$root/fuzz/dict/$t.dict" ] && dict=(-dict="$root/fuzz/dict/$t.dict")
  # The outer timeout: libFuzzer's own -timeout can deadlock inside ASan's allocator.
  timeout -k 10 $((secs + 300)) "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$art" "$work" "$seeds" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
  inputs=$(find "$work" -type f | wc -l)
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz target $t failed (exit $rc); log $log, input(s) in $art:" >&2
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || tail -n 30 "$log" >&2
  fi
  json+="$( [ "$json" = "{" ] || printf ',')\"$t\": {\"executions\": ${execs:-0}, \"corpus\": $inputs, \"seconds\": $took, \"crashed\": $( [ "$rc" -eq 0 ] && echo false || echo true )}"
done
echo "$json}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
