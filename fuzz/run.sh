#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a while. Usage: fuzz/run.sh [SECONDS]
# (default 60). Exits non-zero when a target finds a crash; the input is left in
# fuzz/artifacts/<target>/.
#
# Same instrumentation as `cargo fuzz build` (SanitizerCoverage for libFuzzer), without
# needing cargo-fuzz or a nightly toolchain: RUSTC_BOOTSTRAP unlocks the flags on stable.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
cargo build --release --locked --bins --target "$triple"
for t in api_response audit_verify; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzzing $t for ${secs}s"
  "target/$triple/release/$t" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 | tail -n 12
done
