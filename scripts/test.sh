#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and black-box tests, the real-browser
# tests (Debian's Chromium and Firefox ESR, driven from Node), the doc tests and the fuzz
# targets (a bounded run each).
#
#   ./scripts/test.sh            everything; installs what a fresh machine lacks first
#   ./scripts/test.sh --heavy    also the heavy scenarios (#[ignore = "heavy: ..."]: soaks, sweeps)
#   FUZZ_SECS=300 ./scripts/test.sh   fuzz each target 5 minutes instead of 20 s
#   ./scripts/test.sh --help     this text
#
# Every step runs even when an earlier one fails; a summary of what failed comes last,
# and the exit status is non-zero if anything did. Logs: target/test-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."

heavy=()
case "${1:-}" in
  --heavy) heavy=(-- --include-ignored) ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "test.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

started=$SECONDS
logs=target/test-logs
mkdir -p "$logs"
failed=()
timings=()

# step NAME COMMAND...: runs it, logs it to $logs/NAME.log, records failure and time.
step() {
  local name=$1 t0=$SECONDS
  shift
  echo "==> $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log"
  local status=${PIPESTATUS[0]}
  timings+=("$(printf '%-8s %5ds' "$name" $((SECONDS - t0)))")
  if [ "$status" -ne 0 ]; then
    failed+=("$name (exit $status; log: $logs/$name.log)")
  fi
  return 0
}

# Chromium, Firefox ESR, Node.js and the browser drivers: without them nothing below is meaningful.
if ! ./scripts/install-deps.sh; then
  echo "test.sh: could not install what the suite needs (see above)" >&2
  exit 1
fi

# The cluster test (tests/cluster.rs) skips without redis-server unless this is set: here,
# where install-deps.sh has just installed it, a missing one is a failure, never a skip.
export GATEHOUSE_REQUIRE_REDIS=1
# Likewise PostgreSQL, for the store's tests on both databases and the cluster test.
export GATEHOUSE_REQUIRE_POSTGRES=1

step fmt cargo fmt --all -- --check

# Lints and tests share one build. `cargo clippy` is `cargo check` with clippy-driver as
# the workspace's rustc wrapper; a separate check build would compile every dependency a
# second time (about a third of a fresh machine's suite). Here clippy-driver compiles the
# workspace's crates for the test build itself, linting them on the way (dependencies are
# built by plain rustc), and any warning it or rustc reports fails the `lint` step, as
# `cargo clippy --workspace --all-targets -- -D warnings` would.
if driver=$(command -v clippy-driver); then
  export RUSTC_WORKSPACE_WRAPPER=$driver
else
  failed+=("lint (clippy-driver not found: rustup component add clippy)")
fi

# A first build (a fresh clone: CI) gains nothing from incremental compilation and pays
# for its bookkeeping on every workspace crate; a warm target/ keeps what it was built with.
if [ ! -d target/debug/incremental ] && [ -z "${CARGO_INCREMENTAL:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

step test cargo test --workspace --all-targets --no-fail-fast "${heavy[@]}"
step doc cargo test --workspace --doc --no-fail-fast

# Fuzzing (fuzz/: its own crate and target dir, built with AddressSanitizer): every target
# over its checked-in corpus, so a known crash that comes back fails, then FUZZ_SECS (20 by
# default) of new inputs each. fuzz.sh's default build is unoptimised (cargo fuzz build
# --dev): about a third of the release build's CPU time, which was most of this step on a
# fresh machine (docs/RELIABILITY.md, "Fuzzing").
# Not linted by the clippy wrapper above: it is not a workspace member.
step fuzz env -u RUSTC_WORKSPACE_WRAPPER ./scripts/fuzz.sh "${FUZZ_SECS:-20}"

if [ -n "${RUSTC_WORKSPACE_WRAPPER:-}" ]; then
  # Cargo replays the warnings of crates it did not rebuild, so this sees them all.
  lint=$(grep -hE '^(warning|error): `[^`]+` \(.+\) generated [0-9]+ (warning|error)' "$logs/test.log" "$logs/doc.log" | sort -u)
  if [ -n "$lint" ]; then
    echo "$lint"
    failed+=("lint ($(echo "$lint" | wc -l) target(s) with warnings; see $logs/test.log)")
  fi
fi

echo
echo "==> timings"
printf '    %s\n' "${timings[@]}"
printf '    %-8s %5ds\n' total $((SECONDS - started))
# Where the test step's time went: its build, then the slowest test binaries (each one's
# "finished in" line; cargo runs the binaries one after another, their tests in parallel).
if [ -f "$logs/test.log" ]; then
  sed -nE 's/^ *Finished `test` profile .* in (.+)$/    build of the test step: \1/p' "$logs/test.log" | tail -1
  slowest=$(awk '/^ +Running /{name=$0; sub(/^ +Running /, "", name); sub(/target\/debug\/deps\//, "", name); next}
      /^test result:/ && name != "" {s=$0; sub(/.*finished in /, "", s); sub(/s$/, "", s); printf "%7.1fs  %s\n", s, name; name=""}' \
    "$logs/test.log" | sort -rn | head -10)
  if [ -n "$slowest" ]; then
    echo "    slowest test binaries:"
    echo "$slowest" | sed 's/^/    /'
  fi
fi
if [ ${#failed[@]} -eq 0 ]; then
  echo "==> all steps passed"
  exit 0
fi
echo "==> FAILED:"
printf '    %s\n' "${failed[@]}"
tests=$(grep -hE '^test .+ \.\.\. FAILED$' "$logs/test.log" "$logs/doc.log" 2>/dev/null | sed -E 's/^test (.+) \.\.\. FAILED$/\1/' | sort -u)
if [ -n "$tests" ]; then
  echo "==> failed tests:"
  printf '    %s\n' $tests
fi
exit 1
