#!/usr/bin/env bash
# Keeps the build cache (${SOVEREIGN_CACHE:-~/.cache/sovereign-operator}) from growing without
# bound over many CI runs. `.ci/run` calls it before every run.
#
# Why it grows: every fresh clone lives at another path, and cargo keys the artifacts of a
# path crate (this one) by its path, so each clone adds its own copy of this crate's
# libraries, test binaries and incremental state (~1–2 GB) to the shared target directory,
# while the dependencies' artifacts are reused. Those per-clone copies are never read again.
#
# What it does, in order:
#  1. deletes this crate's own artifacts and all incremental state in the cargo target dir
#     (rebuilt in about a minute; dependencies stay);
#  2. if the target dir is still larger than SOVEREIGN_CACHE_MAX_TARGET_GB (default 16) —
#     stale dependency versions after many Cargo.lock changes — deletes it entirely (the next
#     build compiles every dependency again, ~7 minutes on 2 cores);
#  3. `go clean -cache` when the Go build cache exceeds SOVEREIGN_CACHE_MAX_GO_GB (default 8);
#     the module cache and the built binaries (bin/) stay.
#  4. removes the logs of failed e2e runs older than a week.
set -euo pipefail

cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
target="${CARGO_TARGET_DIR:-${cache}/cargo-target}"
max_target_gb="${SOVEREIGN_CACHE_MAX_TARGET_GB:-16}"
max_go_gb="${SOVEREIGN_CACHE_MAX_GO_GB:-8}"

size_gb() { du -s --block-size=1G "$1" 2>/dev/null | awk '{print $1}'; }

if [[ -d "${target}" ]]; then
  before="$(size_gb "${target}")"
  for profile in "${target}"/debug "${target}"/release; do
    [[ -d "${profile}" ]] || continue
    rm -rf "${profile}/incremental"
    # Each unit of this crate (library, binary, every test and bench target) has a
    # fingerprint directory `sovereign-operator-<hash>`; its files in deps/ end in that hash.
    for fingerprint in "${profile}"/.fingerprint/sovereign-operator-*; do
      [[ -d "${fingerprint}" ]] || continue
      hash="${fingerprint##*-}"
      rm -rf "${profile}"/deps/*-"${hash}" "${profile}"/deps/*-"${hash}".* \
        "${profile}/build/sovereign-operator-${hash}" "${fingerprint}"
    done
  done
  after="$(size_gb "${target}")"
  if ((after > max_target_gb)); then
    echo "prune-cache: ${target} is ${after} GB (> ${max_target_gb}): removing it" >&2
    rm -rf "${target}"
  fi
  echo "prune-cache: cargo target ${before} GB -> $(size_gb "${target}" || echo 0) GB" >&2
fi

if [[ -d "${cache}/go/cache" ]] && (($(size_gb "${cache}/go/cache") > max_go_gb)); then
  echo "prune-cache: Go build cache over ${max_go_gb} GB: cleaning it" >&2
  GOCACHE="${cache}/go/cache" "$(command -v go || echo /usr/local/go/bin/go)" clean -cache || true
fi

find "${cache}/e2e-failed-logs" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} + 2>/dev/null || true
