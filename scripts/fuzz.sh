#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ once (cargo-fuzz: libFuzzer with AddressSanitizer, on
# the stable toolchain through RUSTC_BOOTSTRAP=1) and runs each one: first over its
# checked-in corpus, fuzz/corpus/<target> (seeds from real traffic and every crash input
# found so far, so a known crash that comes back fails here), then on new inputs until
# SECONDS have passed. Exit status non-zero if any target crashed, hung or leaked.
#
#   ./scripts/fuzz.sh                    30 s per target (scripts/test.sh runs 20 s)
#   ./scripts/fuzz.sh 0                  only the checked-in corpora (known crashes), no new inputs
#   ./scripts/fuzz.sh --release 3600     an hour per target, optimised build (long campaigns)
#   ./scripts/fuzz.sh --release 600 media_datagram   one target for ten minutes
#
# The default build is cargo-fuzz's --dev one (unoptimised; debug assertions, overflow
# checks, AddressSanitizer and coverage as in the release one): it compiles in a fraction
# of the time; inputs run tens of times slower, which a short CI run can afford (the corpus
# pass, the known-crash check, is complete either way).
# --release optimises (cargo-fuzz's default), for runs long enough that speed per input
# matters. The two builds live side by side in fuzz/target (debug/ and release/).
# See docs/RELIABILITY.md, "Fuzzing".
#
# Inputs that reach new coverage go to fuzz/target/new-corpus/<target>, never into the
# checked-in corpus (minimise before adding them: see docs/RELIABILITY.md, "Fuzzing");
# a crash's input goes to fuzz/artifacts/<target>/, its report to fuzz/target/logs/.
set -uo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../fuzz"

profile=debug build=(--dev)
case "${1:-}" in
  -h|--help) sed -n '2,23p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --release) profile=release build=(--release); shift ;;
  -*) echo "fuzz.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^gatehouse-fuzz$')
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing: ./scripts/install-deps.sh installs it" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1

t0=$SECONDS
echo "==> building ${#targets[@]} fuzz targets (cargo fuzz build ${build[*]})"
if ! cargo fuzz build "${build[@]}"; then
  echo "fuzz.sh: the fuzz targets do not build" >&2
  exit 1
fi
echo "    built in $((SECONDS - t0)) s"

# The binaries `cargo fuzz build` made, run as `cargo fuzz run` would run them (without
# its rebuild check, which a source file touched meanwhile turns into a rebuild per target).
bin=target/$(rustc -vV | sed -n 's/^host: //p')/$profile
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
mkdir -p target/logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "target/new-corpus/$target" "corpus/$target" "artifacts/$target"
  log="target/logs/$target.log"
  t=$SECONDS
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: a leak or a blow-up.
  # (libFuzzer reads -max_total_time=0 as "no limit": 0 s means the corpus only, -runs=0.)
  if [ "$seconds" -gt 0 ]; then limit=-max_total_time="$seconds"; else limit=-runs=0; fi
  "$bin/$target" -artifact_prefix="artifacts/$target/" "$limit" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 "target/new-corpus/$target" "corpus/$target" >"$log" 2>&1
  status=$?
  # The last status line and the final stats: executions and coverage reached.
  stats=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  printf '    %-16s %4ds  %s execs  %s\n' "$target" $((SECONDS - t)) "${execs:-?}" "${stats:-no status line}"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    grep -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/      /'
  fi
done
echo "    total $((SECONDS - t0)) s"
if [ ${#failed[@]} -ne 0 ]; then
  echo "==> fuzz targets that failed: ${failed[*]} (logs: fuzz/target/logs/)"
  exit 1
fi
