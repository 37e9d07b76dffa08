# shellcheck shell=bash
# Shared helpers for scripts/*: repository root, tool paths, stage timing. Source it; do not run it.

KRONOS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KRONOS_ROOT

# Foundry's native binaries from npm (the node_modules/.bin shims cost ~0.6 s per call).
for tool in forge anvil cast; do
  d="$KRONOS_ROOT/node_modules/@foundry-rs/$tool-linux-amd64/bin"
  case ":$PATH:" in *":$d:"*) ;; *) PATH="$d:$PATH" ;; esac
done
export PATH

# Each clone builds in its own target dir unless CARGO_TARGET_DIR says otherwise (.ci/run points CI's clone at one
# outside it, reused between its runs). Clones at different paths must not share one: cargo reuses a crate built in
# another clone when the sources look unchanged, with that clone's paths compiled in (`env!("CARGO_MANIFEST_DIR")`),
# so its tests read the other clone's files — a run here once failed reading data from CI's clone, since deleted.
KRONOS_TARGET="${CARGO_TARGET_DIR:-$KRONOS_ROOT/target}"
export KRONOS_TARGET

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Stage timing: `stage NAME cmd args...` runs the command, records its wall time, stops on failure.
STAGE_NAMES=()
STAGE_SECS=()
stage() {
  local name="$1"; shift
  say "$name"
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@"; then
    t1=$(date +%s.%N)
    STAGE_NAMES+=("$name (FAILED)")
    STAGE_SECS+=("$(echo "$t1 - $t0" | bc)")
    stage_report
    report_disk
    die "stage failed: $name"
  fi
  t1=$(date +%s.%N)
  STAGE_NAMES+=("$name")
  STAGE_SECS+=("$(echo "$t1 - $t0" | bc)")
}
# Free space where the build goes: a full cold run of scripts/test writes several GB there.
report_disk() {
  local dir="$KRONOS_TARGET" avail_kb
  while [ ! -d "$dir" ]; do dir="$(dirname "$dir")"; done
  avail_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  say "disk: $((avail_kb / 1024 / 1024)) GB free under $dir"
  if [ "$avail_kb" -lt $((10 * 1024 * 1024)) ]; then
    warn "less than 10 GB free under $dir: a cold build of every test writes several GB (8.2 GB measured here with incremental state, which CI now leaves off) and may fail with 'No space left on device'"
  fi
}
stage_report() {
  [ ${#STAGE_NAMES[@]} -gt 0 ] || return 0
  printf '\n%-40s %10s\n' "stage" "seconds"
  printf '%-40s %10s\n' "----------------------------------------" "----------"
  local total=0 i
  for i in "${!STAGE_NAMES[@]}"; do
    printf '%-40s %10.1f\n' "${STAGE_NAMES[$i]}" "${STAGE_SECS[$i]}"
    total=$(echo "$total + ${STAGE_SECS[$i]}" | bc)
  done
  printf '%-40s %10.1f\n' "total" "$total"
}
