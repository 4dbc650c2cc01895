#!/usr/bin/env bash
# `make fuzz-coverage`: coverage-guided fuzzing (cargo fuzz, libFuzzer, with
# AddressSanitizer, debug assertions and overflow checks) of every target in
# fuzz/fuzz_targets/, FUZZ_SECONDS each (default 60), FUZZ_JOBS at a time
# (default: the number of cores). FUZZ_TARGETS="config policy" picks some.
#
# cargo-fuzz is installed (once) into .tools/. The toolchain is the pinned
# stable one (rust-toolchain.toml): RUSTC_BOOTSTRAP=1 lets it take the -Z
# flags cargo fuzz passes. Each target starts from fuzz/seeds/<target>/
# (committed) and grows fuzz/corpus/<target>/ (ignored), so later runs go on
# where earlier ones stopped; logs go to fuzz/logs/, crashing inputs to
# fuzz/artifacts/<target>/ (reproduce one with
# fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
cargo=${CARGO:-cargo}
tools=$PWD/.tools
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1

if ! [[ -x $tools/bin/cargo-fuzz ]] || ! "$tools/bin/cargo-fuzz" --version | grep -q " $CARGO_FUZZ_VERSION\$"; then
    "$cargo" install --locked --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH=$tools/bin:$PATH

mapfile -t all < <(cargo-fuzz list)
read -r -a targets <<< "${FUZZ_TARGETS:-${all[*]}}"
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz-coverage: no target $t (targets: ${all[*]})" >&2; exit 1; }
done

# One build for every target: release (-O: the profile in fuzz/Cargo.toml turns
# debug assertions and overflow checks on), AddressSanitizer.
cargo-fuzz build -O

mkdir -p fuzz/logs
echo "fuzz-coverage: ${#targets[@]} targets, $seconds s each, $jobs at a time"
export seconds triple
# One line per target: executions, executions per second, corpus size, and
# whether it crashed (then the log's tail and the crashing input).
printf '%s\0' "${targets[@]}" | xargs -0 -n 1 -P "$jobs" bash -c '
    t=$1 bin=fuzz/target/$triple/release/$1 log=fuzz/logs/$1.log
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    dict=(); [[ -f fuzz/dicts/$t.dict ]] && dict=(-dict="fuzz/dicts/$t.dict")
    [[ ${#dict[@]} -eq 0 && -f fuzz/dicts/json.dict && $t != header_map && $t != form ]] && dict=(-dict=fuzz/dicts/json.dict)
    if "$bin" "fuzz/corpus/$t" "fuzz/seeds/$t" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
        status=ok
    else
        status=CRASHED
    fi
    runs=$(sed -n "s/^stat::number_of_executed_units: *//p" "$log" | tail -1)
    rate=$(sed -n "s/^stat::average_exec_per_sec: *//p" "$log" | tail -1)
    cov=$(grep -o "cov: [0-9]*" "$log" | tail -1)
    printf "%-16s %10s runs %7s exec/s  %-10s corpus %5s  %s\n" "$t" "${runs:-?}" "${rate:-?}" "$cov" \
        "$(ls "fuzz/corpus/$t" | wc -l)" "$status"
    if [[ $status != ok ]]; then
        tail -40 "$log"
        echo "crashing input: $(grep -o "fuzz/artifacts/$t/[^ ]*" "$log" | tail -1) (log: $log)"
        exit 1
    fi
' _ || { echo "fuzz-coverage: a target crashed (above)" >&2; exit 1; }
echo "fuzz-coverage: no crash in ${#targets[@]} targets x $seconds s"
