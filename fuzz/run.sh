#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a fixed time each, one
# after the other, single process.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 300. Stable Rust builds without a
# sanitizer (`-s none`: panics, failed assertions and overflow checks are
# found, memory errors only if they panic); FUZZ_NIGHTLY=1 uses nightly
# with AddressSanitizer instead. cargo-fuzz is installed if missing.
#
# Inputs: the committed seeds (fuzz/corpus/TARGET) and past crashes
# (fuzz/regressions/TARGET) are read; new interesting inputs go to
# fuzz/work/corpus/TARGET (not committed), crashes to fuzz/artifacts/TARGET.
# Exits non-zero if any target found a crash, a timeout or ran out of
# memory, and prints the reproducer and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-300}"
shift || true
case "$secs" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz@0.13.2
fi

if [ "${FUZZ_NIGHTLY:-0}" = 1 ]; then
    toolchain=(+nightly)
    flags=(-s address -a)
else
    toolchain=()
    flags=(-s none -a)
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
echo "build: $(($(date +%s) - start)) s"

mkdir -p work/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/corpus/$t" "artifacts/$t"
    dirs=("work/corpus/$t")
    for d in "corpus/$t" "regressions/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    log="work/logs/$t.log"
    echo "== $t: ${secs} s"
    status=0
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$status" != 0 ]; then
        tail -n 40 "$log"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [ -z "$artifact" ]; then
            # Without a sanitizer a stack overflow kills the process before
            # libFuzzer can save the input; ASan catches it.
            echo "no reproducer saved (SIGSEGV? often a stack overflow): rerun with FUZZ_NIGHTLY=1 fuzz/run.sh $secs $t"
        fi
        failed+=("$t")
        summary+=("$t: FAILED after ${runs:-?} runs; reproducer: fuzz/${artifact:-artifacts/$t/}")
        echo "reproduce: (cd fuzz && cargo ${toolchain[*]} fuzz run ${flags[*]} $t ${artifact:-artifacts/$t/CRASH})"
        echo "minimise:  (cd fuzz && cargo ${toolchain[*]} fuzz tmin ${flags[*]} $t ${artifact:-artifacts/$t/CRASH})"
    else
        summary+=("$t: ok, ${runs:-?} runs, ${rate:-?} exec/s")
    fi
done

echo "== summary (${secs} s per target, $(($(date +%s) - start)) s in all)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
