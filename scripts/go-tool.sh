#!/usr/bin/env bash
# Builds a Go tool once into the cache and prints its path; sourced or run by the scripts that
# need one (promtool.sh, netpol-check.sh, argocd-health.sh, bench harnesses). One place for the
# build settings: modules and build cache under the project cache, no checksum database (only
# the module proxy is reachable), the machine's own Go, static binaries, two jobs (2 cores).
# Concurrent callers wait on a lock instead of building twice. Fails — never skips — when Go is
# missing or the build fails.
#
#   go-tool.sh install NAME MODULE/CMD@VERSION   # `go install` of a released module
#   go-tool.sh build   NAME SOURCE_DIR           # `go build` of a module of this repository;
#                                                # the cache directory names its source hash,
#                                                # so editing main.go or the pins rebuilds
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/bin/NAME-<version or hash>/NAME
set -euo pipefail

go_tool() {
  local mode="$1" name="$2" target="$3"
  local cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
  local dir
  case "${mode}" in
    install) dir="${cache}/bin/${name}-${target##*@}" ;;
    build)
      local stamp
      stamp="$(cat "${target}"/*.go "${target}"/go.mod "${target}"/go.sum | sha256sum | cut -c1-16)"
      dir="${cache}/bin/${name}-${stamp}"
      ;;
    *) echo "go-tool.sh: unknown mode ${mode} (install|build)" >&2; return 2 ;;
  esac
  local bin="${dir}/${name}"
  if [ ! -x "${bin}" ]; then
    local go
    go="$(command -v go || echo /usr/local/go/bin/go)"
    [ -x "${go}" ] || { echo "go-tool.sh: Go is required to build ${name}" >&2; return 1; }
    mkdir -p "${cache}/bin"
    (
      exec 9>"${cache}/bin/${name}.lock"
      flock 9
      [ -x "${bin}" ] && exit 0
      echo "go-tool.sh: building ${name} into ${dir} (once)" >&2
      mkdir -p "${dir}"
      export GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" GOPATH="${cache}/go/path" \
        GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
      if [ "${mode}" = install ]; then
        GOFLAGS="-mod=mod -buildvcs=false -p=2" GOBIN="${dir}" "${go}" install "${target}"
        [ -x "${bin}" ] || { echo "go-tool.sh: ${target} built no ${name}" >&2; exit 1; }
      else
        cd "${target}"
        GOFLAGS="-mod=readonly -buildvcs=false -p=2" "${go}" build -o "${bin}.tmp" .
        mv "${bin}.tmp" "${bin}"
      fi
    )
  fi
  printf '%s\n' "${bin}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  go_tool "$@"
fi
