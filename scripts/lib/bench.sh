# Shared by scripts/bench and scripts/bench-evolve (sourced, not run).
#
# The caller sets: LOGS (per-step logs), RESULTS (JSON lines), RUN_ID,
# COMMIT, JSON_EXTRA (fields added to every JSON line, e.g. "scale":1),
# COLD (1: drop the page cache before every step), and declares the
# associative arrays SECS, RSS and MBPS that measure() fills.

APT_UPDATED=0
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ "$APT_UPDATED" = 0 ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

size_of() { du -sb "$1" | cut -f1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

json() { # json TOOL STEP EXTRA-FIELDS
  printf '{"run":"%s","commit":"%s","tool":"%s","step":"%s",%s%s}\n' \
    "$RUN_ID" "$COMMIT" "$1" "$2" "${JSON_EXTRA:+$JSON_EXTRA,}" "$3" >>"$RESULTS"
}

# measure TOOL STEP BYTES CMD...: run CMD under GNU time; BYTES (or "")
# gives the MB/s figure. The step starts after a `sync` and (as root) with
# the page cache dropped, so every step of every tool starts from the same
# memory state; the `sync` after CMD is timed too: what the command wrote
# is durable when the step ends, for every tool alike.
measure() {
  local tool=$1 step=$2 bytes=$3
  shift 3
  local tf="$LOGS/$tool-$step.time" log="$LOGS/$tool-$step.log" secs rss
  sync
  if [ "$COLD" = 1 ]; then
    echo 3 >/proc/sys/vm/drop_caches
  fi
  if ! /usr/bin/time -f '%e %M' -o "$tf" sh -c '"$@" && sync' sh "$@" >"$log" 2>&1; then
    echo "bench: $tool $step failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  read -r secs rss < <(tail -n 1 "$tf")
  SECS[$tool.$step]=$secs
  RSS[$tool.$step]=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
  if [ -n "$bytes" ]; then
    MBPS[$tool.$step]=$(awk -v b="$bytes" -v s="$secs" 'BEGIN {if (s > 0) printf "%.1f", b / 1e6 / s; else print "inf"}')
  else
    MBPS[$tool.$step]=""
  fi
  [ "${MEASURE_QUIET:-0}" = 1 ] || printf '  %-7s %-12s %8ss  %8s MiB RSS\n' "$tool" "$step" "$secs" "${RSS[$tool.$step]}"
  json "$tool" "$step" "\"seconds\":$secs,\"rss_mib\":${RSS[$tool.$step]}${bytes:+,\"data_bytes\":$bytes,\"mb_per_s\":${MBPS[$tool.$step]/inf/null}}"
}

# median SECONDS...: the median of the arguments.
median() {
  printf '%s\n' "$@" | sort -g |
    awk '{v[NR]=$1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# manifest DIR: type, mode, path and link target of everything below DIR.
manifest() { (cd "$1" && find . -mindepth 1 -printf '%y %m %p -> %l\n' | LC_ALL=C sort); }
mtimes() { (cd "$1" && find . -mindepth 1 ! -type d -printf '%T@ %p\n' | LC_ALL=C sort -k2); }

# same_tree A B LOG: A and B hold the same bytes, types, modes and links.
same_tree() {
  diff -r --no-dereference -q "$1" "$2" >"$3" 2>&1 &&
    diff <(manifest "$1") <(manifest "$2") >>"$3" 2>&1
}

# strata_binary ROOT: sets STRATA to $STRATA_BIN, else to the release
# binary of the current source, built first (a stale binary would bench
# old code; a no-op when the release build is fresh).
strata_binary() {
  if [ -n "${STRATA_BIN:-}" ]; then
    STRATA=$STRATA_BIN
  else
    local target_dir=${CARGO_TARGET_DIR:-target}
    case "$target_dir" in /*) ;; *) target_dir="$1/$target_dir" ;; esac
    STRATA="$target_dir/release/strata"
    (cd "$1" && cargo build --release --locked -p strata-cli)
  fi
  [ -x "$STRATA" ] || { echo "bench: strata binary not found or not executable: $STRATA" >&2; exit 1; }
}
