#!/usr/bin/env bash
# Installs what `make test` and `make demo` need and a fresh machine may lack: Debian packages
# (openssl, curl, iproute2 for `ss`, python3 with venv, a Lua interpreter for the Argo CD health
# checks), the rustfmt / clippy components, and helm (built from the Go module proxy into the
# cache; `scripts/prereqs.sh helm-path` prints its directory). Go and Rust themselves are
# expected (see README). Idempotent and quick when everything is present.
set -euo pipefail

CACHE="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
# helm v3: the chart is apiVersion v2, which v3 and v4 both read; v3 is what most clusters'
# tooling (Argo CD included) runs today.
HELM_VERSION="v3.22.0"
HELM_DIR="${CACHE}/bin/helm-${HELM_VERSION}"
if [ "${1:-}" = "helm-path" ]; then
  printf '%s\n' "${HELM_DIR}"
  exit 0
fi

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The LiteLLM e2e builds a venv: Debian's python3 needs python3-venv for that.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
if ((${#missing[@]})); then
  echo "prereqs: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || {
  echo "prereqs: Go >= 1.26 is required to build the control plane (https://go.dev/dl)" >&2
  exit 1
}
command -v cargo >/dev/null 2>&1 || {
  echo "prereqs: Rust (cargo) is required (https://rustup.rs)" >&2
  exit 1
}
if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^${component}" ||
      rustup component add "${component}"
  done
fi

# helm, from source through the Go module proxy (no release binaries can be downloaded here),
# with the control plane's private module and build caches. Several minutes the first time.
if [ ! -x "${HELM_DIR}/helm" ]; then
  go="$(command -v go || echo /usr/local/go/bin/go)"
  echo "prereqs: building helm ${HELM_VERSION} into ${HELM_DIR}" >&2
  mkdir -p "${HELM_DIR}"
  GOMODCACHE="${CACHE}/go/mod" GOCACHE="${CACHE}/go/cache" GOPATH="${CACHE}/go/path" \
    GOSUMDB=off GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -p=2" CGO_ENABLED=0 \
    GOBIN="${HELM_DIR}" "${go}" install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi
