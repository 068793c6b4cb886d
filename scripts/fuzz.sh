#!/usr/bin/env bash
# Run every fuzz harness of triad for longer than CI does (issue 9).
#
#   scripts/fuzz.sh [SECONDS_PER_HARNESS] [NAME_FILTER]
#
# Each harness is a bolero `check!` inside a plain `cargo test` (stable
# Rust, bolero's random engine); under `cargo test` alone it runs 2 s. Here
# BOLERO_RANDOM_TEST_TIME_MS gives it SECONDS_PER_HARNESS (default 120),
# one harness at a time. The seeds of each target are in fuzz/corpus/<target>/
# and are replayed first by each file's `corpus_replays` test.
#
# Prints one line per harness (inputs run, pass/FAIL) and a total; exits 1
# if any harness failed. A failure prints the panic and the
# BOLERO_RANDOM_SEED=<n> that replays it:
#   BOLERO_RANDOM_SEED=<n> cargo test --workspace --test <file> -- --exact <test>
# Save the failing input as a seed under fuzz/corpus/<target>/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-120}"
filter="${2:-}"
export BOLERO_RANDOM_TEST_TIME_MS=$((secs * 1000))

# file  test  (one line per harness)
harnesses=(
  "fuzz_avro hostile_datums_never_panic_and_allocate_in_proportion"
  "fuzz_avro generated_messages_roundtrip"
  "fuzz_config any_text_is_loaded_or_refused_with_named_problems"
  "fuzz_token any_token_is_verified_or_refused"
  "fuzz_token any_signed_claims_are_verified_or_refused"
  "fuzz_bundle any_archive_is_unpacked_or_refused_within_its_limits"
  "fuzz_bundle any_manifest_is_parsed_or_refused_with_its_problems"
  "fuzz_http every_route_answers_any_request_without_5xx_or_swelling"
  "fuzz_mes any_answer_is_classified_without_losing_the_order"
)

files=()
for h in "${harnesses[@]}"; do
  set -- $h
  [[ -z "$filter" || "$1 $2" == *"$filter"* ]] || continue
  [[ " ${files[*]} " == *" $1 "* ]] || files+=("$1")
done
build_args=()
for f in "${files[@]}"; do build_args+=(--test "$f"); done
echo "building ${files[*]} ..."
cargo test --workspace "${build_args[@]}" --no-run >/dev/null 2>&1 || cargo test --workspace "${build_args[@]}" --no-run

log_dir="$(mktemp -d)"
failed=0
total=0
printf '%-13s %-62s %12s  %s\n' file harness inputs result
for h in "${harnesses[@]}"; do
  set -- $h
  [[ -z "$filter" || "$1 $2" == *"$filter"* ]] || continue
  log="$log_dir/$1.$2.log"
  if cargo test --workspace --test "$1" -- --exact "$2" --nocapture --test-threads=1 >"$log" 2>&1; then
    result=pass
  else
    result=FAIL
    failed=1
  fi
  inputs="$(grep -o 'fuzz-stats harness=[a-z_]* inputs=[0-9]*' "$log" | sed 's/.*inputs=//' | paste -sd+ - | bc 2>/dev/null || echo 0)"
  inputs="${inputs:-0}"
  total=$((total + inputs))
  printf '%-13s %-62s %12s  %s\n' "$1" "$2" "$inputs" "$result"
  if [[ "$result" == FAIL ]]; then
    grep -E "panicked|BOLERO_RANDOM_SEED|^Input|assert" "$log" | head -20 | sed 's/^/    /'
    echo "    full log: $log"
  fi
done
echo "total inputs: $total (${secs} s per harness)"
exit "$failed"
