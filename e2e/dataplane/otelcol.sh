#!/usr/bin/env bash
# Builds, once, the OpenTelemetry collector the data-plane e2e runs, with the official builder
# from the Go module proxy (no release binaries are reachable here), and prints the binary's
# path. Components: otelcol-builder.yaml. Cold: ~1 min for the builder, several minutes and
# ~3 GB of memory for the collector; a second run returns at once.
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/otelcol-<stamp>/otelcol-contrib
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
builder_version="v0.165.0"
stamp="$(cat "${here}/otelcol-builder.yaml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)"
out="${cache}/otelcol-${stamp}"
bin="${out}/otelcol-contrib"

mkdir -p "${cache}"
exec 9>"${cache}/otelcol.lock"
flock 9
if [[ -x "${bin}" && -f "${out}/.sovereign-complete" ]]; then
    echo "${bin}"
    exit 0
fi

go="$(command -v go || echo /usr/local/go/bin/go)"
export GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" GOPATH="${cache}/go/path" \
    GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
builder_dir="${cache}/bin/otelcol-builder-${builder_version}"
if [[ ! -x "${builder_dir}/builder" ]]; then
    echo "otelcol.sh: building the collector builder ${builder_version}" >&2
    mkdir -p "${builder_dir}"
    GOBIN="${builder_dir}" "${go}" install "go.opentelemetry.io/collector/cmd/builder@${builder_version}"
fi

echo "otelcol.sh: building the collector into ${out} (several minutes)" >&2
rm -rf "${out}"
mkdir -p "${out}/src"
sed "s|^dist:|dist:\n  output_path: ${out}/src|" "${here}/otelcol-builder.yaml" >"${out}/manifest.yaml"
# -p 1: the link of the collector peaks at several GB per package built in parallel.
GOFLAGS="${GOFLAGS} -p=1" "${builder_dir}/builder" --config "${out}/manifest.yaml" >&2
mv "${out}/src/otelcol-contrib" "${bin}"
rm -rf "${out}/src"
"${bin}" --version >&2
touch "${out}/.sovereign-complete"
echo "${bin}"
