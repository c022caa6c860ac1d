#!/usr/bin/env bash
# Builds the operator's OCI image archive without a container engine (umoci and skopeo from
# Debian), checks it with skopeo, and prints KEY=VALUE lines:
#   IMAGE_ARCHIVE  the oci-archive file (a tar of an OCI image layout)
#   IMAGE_REF      the reference it carries: the chart's default image
#
#   scripts/image.sh [BINARY [ARCHIVE]]
#
# BINARY defaults to target/release/sovereign-operator (`make image` builds it first); the e2e
# suite passes the debug binary it has already built. ARCHIVE defaults to
# ${SOVEREIGN_CACHE:-~/.cache/sovereign-operator}/image/sovereign-operator-<tag>.oci.tar.
#
# The image is what the Dockerfile describes (tests/image.rs holds the two, the chart's values
# and Chart.yaml together): one layer with
#   /usr/local/bin/sovereign-operator      the binary, debug info stripped
#   the shared libraries it links (ldd)    glibc's libc, libm, libgcc_s and the loader, copied
#                                          from the build machine (Debian 12, as distroless/cc-debian12)
#   /etc/ssl/certs/ca-certificates.crt     public roots (Debian ca-certificates), as in distroless
# and no shell, no package manager, no /etc/passwd: the process runs as 65532:65532 with no
# account, as the chart's securityContext says. Step times go to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"

# The image definition (the Dockerfile's final stage says the same; tests/image.rs checks it).
IMAGE_ENTRYPOINT=/usr/local/bin/sovereign-operator
IMAGE_CMD=run
IMAGE_USER=65532:65532
IMAGE_PORT=8080
# The chart's default image: values.yaml's repository, the chart's appVersion as the tag.
repository="$(sed -n '/^image:/,/^[^ ]/s/^  repository: *//p' "${root}/charts/sovereign-operator/values.yaml")"
tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${root}/charts/sovereign-operator/Chart.yaml")"
[[ -n "${repository}" && -n "${tag}" ]] || {
    echo "image.sh: cannot read image.repository (values.yaml) or appVersion (Chart.yaml)" >&2
    exit 2
}
ref="${repository}:${tag}"

binary="${1:-${root}/target/release/sovereign-operator}"
archive="${2:-${cache}/image/sovereign-operator-${tag}.oci.tar}"
[[ -x "${binary}" ]] || { echo "image.sh: ${binary} is not an executable (build it first)" >&2; exit 2; }

timed() {
    local name="$1" start end
    shift
    start="$(date +%s.%N)"
    "$@"
    end="$(date +%s.%N)"
    awk -v n="${name}" -v s="${start}" -v e="${end}" 'BEGIN { printf "image.sh: %s %.1f s\n", n, e - s }' >&2
}

tools() {
    local missing=()
    command -v umoci >/dev/null 2>&1 || missing+=(umoci)
    command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
    command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
    if ((${#missing[@]})); then
        echo "image.sh: installing ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
    fi
}

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
layout="${work}/layout"
bundle="${work}/bundle"

rootfs() {
    local rootfs="${bundle}/rootfs" lib
    install -d -m 0755 "${rootfs}/usr/local/bin" "${rootfs}/etc/ssl/certs"
    objcopy --strip-debug "${binary}" "${rootfs}${IMAGE_ENTRYPOINT}"
    chmod 0755 "${rootfs}${IMAGE_ENTRYPOINT}"
    # Every library the dynamic loader resolves, and the loader itself, at the paths the binary
    # names (the ELF interpreter is /lib64/ld-linux-x86-64.so.2).
    for lib in $(ldd "${binary}" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        # As Debian installs them: the loader must be executable (the kernel execs it).
        install -D -m 0755 "$(readlink -f "${lib}")" "${rootfs}${lib}"
    done
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "${rootfs}/etc/ssl/certs/ca-certificates.crt"
}

build() {
    umoci init --layout "${layout}"
    umoci new --image "${layout}:${tag}"
    umoci unpack --image "${layout}:${tag}" "${bundle}" >/dev/null
    rootfs
    umoci repack --image "${layout}:${tag}" "${bundle}"
    umoci config --image "${layout}:${tag}" --os linux --architecture amd64 \
        --config.entrypoint "${IMAGE_ENTRYPOINT}" --config.cmd "${IMAGE_CMD}" \
        --config.user "${IMAGE_USER}" --config.exposedports "${IMAGE_PORT}/tcp" \
        --config.workingdir / --config.env PATH=/usr/local/bin:/usr/bin:/bin \
        --config.label "org.opencontainers.image.title=sovereign-operator" \
        --config.label "org.opencontainers.image.version=${tag}" \
        --config.label "org.opencontainers.image.source=https://github.com/sovereign-ai/sovereign-operator"
    umoci gc --layout "${layout}"
    mkdir -p "$(dirname "${archive}")"
    rm -f "${archive}"
    # Local files only: no signature policy applies.
    skopeo --insecure-policy copy --quiet "oci:${layout}:${tag}" "oci-archive:${archive}:${ref}"
}

check() {
    # A real OCI tool reads the archive back: its reference, platform and run configuration.
    local config
    config="$(skopeo inspect --config "oci-archive:${archive}")"
    skopeo inspect "oci-archive:${archive}" >"${work}/inspect.json"
    for want in "\"User\": \"${IMAGE_USER}\"" "\"${IMAGE_ENTRYPOINT}\"" "\"${IMAGE_PORT}/tcp\""; do
        grep -qF "${want}" <<<"${config}" || {
            echo "image.sh: skopeo inspect --config ${archive} lacks ${want}:" >&2
            echo "${config}" >&2
            exit 1
        }
    done
    echo "image.sh: ${ref} $(du -h "${archive}" | cut -f1) in ${archive}" >&2
}

timed tools tools
timed build build
timed check check
echo "IMAGE_ARCHIVE=${archive}"
echo "IMAGE_REF=${ref}"
