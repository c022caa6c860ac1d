#!/usr/bin/env bash
# Installs what `make test` and `make demo` need and a fresh machine may lack: Debian packages
# (openssl, curl, iproute2 for `ss`, python3 with venv) and the rustfmt / clippy components. Go and Rust
# themselves are expected (see README). Idempotent and quick when everything is present.
set -euo pipefail

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
