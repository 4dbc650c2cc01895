#!/usr/bin/env bash
# `make fuzz`: the property tests of every input reader (tests/prop_inputs.rs,
# tests/prop_inspector.rs) with PROPTEST_CASES cases each (FUZZ_CASES,
# default 1,000,000), one test per process, FUZZ_JOBS at a time (default:
# the number of cores), each test's time printed.
#
# Built in release mode, but with debug assertions and overflow checks on (an
# overflow is a bug even where release wraps silently) and without LTO (a
# faster build; the filter's size settings don't matter here), in a target
# dir of its own, target/fuzz, so the filter's builds are left alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cases=${FUZZ_CASES:-1000000}
jobs=${FUZZ_JOBS:-$(nproc)}
cargo=${CARGO:-cargo}
tests=(--test prop_inspector --test prop_inputs)

export CARGO_TARGET_DIR=target/fuzz
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true

"$cargo" test --release "${tests[@]}" --no-run
mapfile -t bins < <("$cargo" test --release "${tests[@]}" --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | sort -r)
[[ ${#bins[@]} -eq 2 ]] || { echo "fuzz: expected 2 test binaries, found ${#bins[@]}: ${bins[*]}" >&2; exit 1; }

# prop_inspector first (sort -r above): its slowest test (about half the
# total) starts at once, and the others fill in around it.
list=()
for bin in "${bins[@]}"; do
    while IFS= read -r line; do
        list+=("$bin" "${line%: test}")
    done < <("$bin" --list --format terse | grep ': test$')
done
echo "fuzz: $(( ${#list[@]} / 2 )) properties, $cases cases each, $jobs at a time"

export PROPTEST_CASES=$cases
started=$SECONDS
# One line per test: its name, its time, ok or FAILED (with the test's output).
printf '%s\0' "${list[@]}" | xargs -0 -n 2 -P "$jobs" bash -c '
    bin=$1 name=$2 t0=$EPOCHREALTIME
    if out=$("$bin" --exact "$name" --test-threads 1 -q 2>&1); then status=ok; else status=FAILED; fi
    printf "%-55s %7.1f s  %s\n" "$(basename "${bin%-*}")::$name" "$(awk "BEGIN { print $EPOCHREALTIME - $t0 }")" "$status"
    if [[ $status != ok ]]; then printf "%s\n" "$out"; exit 1; fi
' _ || { echo "fuzz: a property failed (above)" >&2; exit 1; }
echo "fuzz: every property held for $cases cases ($((SECONDS - started)) s)"
