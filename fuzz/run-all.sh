#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another,
# from the seed corpus in fuzz/corpus/<target> (new inputs go to a scratch
# copy, so the repository's corpus stays the reviewed seeds). Needs the
# nightly toolchain and cargo-fuzz; says so and exits 0 when either is
# missing, so that CI on a stable-only machine still runs everything else.
# A crash or hang (a run over 10 s on one input) fails the script and
# leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain here, fuzz targets not run"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ "${YRD_FUZZ_INSTALL:-1}" = 1 ]; then
        cargo install --locked cargo-fuzz
    else
        echo "fuzz: cargo-fuzz is not installed, fuzz targets not run"
        exit 0
    fi
fi

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build --release $targets >/dev/null 2>&1 || cargo +nightly fuzz build --release
for target in $targets; do
    scratch="$(mktemp -d)"
    log="$(mktemp)"
    cp -r "corpus/$target/." "$scratch/"
    echo "fuzz: $target for ${seconds}s"
    status=0
    cargo +nightly fuzz run --release "$target" "$scratch" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)|panicked|ERROR' "$log" || true
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        rm -f "$log"
        echo "fuzz: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: every target ran ${seconds}s without a crash or hang"
