#!/usr/bin/env bash
# A real, container-free local Kubernetes control plane for end-to-end tests.
#
#   e2e/controlplane.sh build    compile etcd, kube-apiserver, kube-controller-manager,
#                                kube-scheduler, kubectl and kwok from source (cached)
#   e2e/controlplane.sh up       start the plane on loopback and create simulated nodes
#   e2e/controlplane.sh down     stop what `up` started and remove the state directory
#   e2e/controlplane.sh status   show component health and the node layout
#   e2e/controlplane.sh apiserver-stop|apiserver-start
#                                stop / start the API server alone (a partition: etcd and
#                                the rest stay up; the two-cluster e2e uses it)
#   eval "$(e2e/controlplane.sh env)"   point kubectl / KUBECONFIG at the plane
#
# Why from source: the machines that run this have no container runtime and cannot
# download release binaries; only the Go module proxy is reachable.  Everything (Go
# module cache, build cache, binaries, runtime state) lives outside the repository.
#
# Needs: Go >= 1.26 for `build` only; openssl, curl, setsid (util-linux), base64/awk/sed
# and, optionally, ss (iproute2) for `up`.  No root, no containers, loopback only.
#
# Environment knobs (all optional):
#   SOVEREIGN_CACHE          cache root            (default ~/.cache/sovereign-operator)
#   SOVEREIGN_E2E_STATE      runtime state dir     (default $SOVEREIGN_CACHE/e2e-state)
#   SOVEREIGN_APISERVER_PORT kube-apiserver port   (default 16443)
#   SOVEREIGN_PORT_BASE      base for other ports  (default 16380, see below)
#   GO                       go binary             (default: go on PATH, else /usr/local/go/bin/go)
#   SOVEREIGN_E2E_NODE_REGIONS  space-separated topology regions: only their nodes of
#                            e2e/nodes.yaml are created (one cluster per jurisdiction);
#                            every node when unset
set -euo pipefail

# ---------------------------------------------------------------------------------------
# Versions.  Kubernetes staging modules are tagged v0.X.Y for release v1.X.Y.
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.8.0"

CACHE="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
BIN_ROOT="${CACHE}/bin"
STATE="${SOVEREIGN_E2E_STATE:-${CACHE}/e2e-state}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODES_FILE="${SCRIPT_DIR}/nodes.yaml"

# Ports: loopback only, away from the usual 2379/2380/6443/8080/10250-10259 so a
# developer's own cluster (kind, minikube, k3s) keeps working alongside this one.
APISERVER_PORT="${SOVEREIGN_APISERVER_PORT:-16443}"
PORT_BASE="${SOVEREIGN_PORT_BASE:-16380}"
ETCD_CLIENT_PORT=$((PORT_BASE + 0))
ETCD_PEER_PORT=$((PORT_BASE + 1))
KCM_PORT=$((PORT_BASE + 2))
SCHEDULER_PORT=$((PORT_BASE + 3))
KWOK_PORT=$((PORT_BASE + 4))
SERVICE_CIDR="10.0.0.0/16"
SERVICE_IP="10.0.0.1"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Directory holding one built component, keyed by version so an upgrade never reuses
# a stale binary and several versions can coexist in the cache.
bin_dir() {
  local component=$1 version
  case "${component}" in
    etcd) version="${ETCD_VERSION}" ;;
    kwok) version="${KWOK_VERSION}" ;;
    *) version="${K8S_VERSION}" ;;
  esac
  printf '%s/%s-%s\n' "${BIN_ROOT}" "${component}" "${version}"
}
bin_path() { printf '%s/%s\n' "$(bin_dir "$1")" "$1"; }

# ---------------------------------------------------------------------------------------
# build

find_go() {
  if [[ -n "${GO:-}" ]]; then
    printf '%s\n' "${GO}"
  elif command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    printf '%s\n' /usr/local/go/bin/go
  else
    die "no Go toolchain found (set GO=/path/to/go)"
  fi
}

# A private module and build cache under $CACHE: CI can cache that one directory, and
# the developer's own GOPATH is never touched.  GOSUMDB=off because the checksum
# database is not reachable from every machine; go.sum is still written and checked
# locally, and the proxy serves immutable versions.  GOTOOLCHAIN=local stops Go from
# trying to download a newer toolchain named by a dependency's `toolchain` line.
# -p=2: the build machines have two cores; more parallelism only costs memory.
go_env() {
  export GOMODCACHE="${CACHE}/go/mod"
  export GOCACHE="${CACHE}/go/cache"
  export GOPATH="${CACHE}/go/path"
  export GOSUMDB=off
  export GOTOOLCHAIN=local
  export GOFLAGS="-mod=mod -buildvcs=false -p=2"
  export CGO_ENABLED=0
  GO_BIN="$(find_go)"
  mkdir -p "${GOMODCACHE}" "${GOCACHE}" "${GOPATH}"
}

# Install a freshly built binary atomically, so an interrupted build never leaves a
# half-written file that a later run would mistake for a finished one.
install_bin() {
  local component=$1 built=$2 dir
  dir="$(bin_dir "${component}")"
  mkdir -p "${dir}"
  mv -f "${built}" "${dir}/${component}.tmp"
  mv -f "${dir}/${component}.tmp" "${dir}/${component}"
}

# Wrapper module for Kubernetes.  `go install k8s.io/kubernetes/cmd/...@v1.X.Y` is
# refused because k8s.io/kubernetes's go.mod replaces every staging module
# (k8s.io/api, client-go, ...) with ./staging/...; a consumer module must redirect them
# to the published v0.X.Y tags itself.  The list is read from Kubernetes' own go.mod so
# a module added in a later release is never missed (a missing one fails with
# "unknown revision v0.0.0").
k8s_wrapper() {
  local dir="${CACHE}/src/kubernetes-${K8S_VERSION}" gomod staging_version m
  staging_version="v0.${K8S_VERSION#v1.}"
  if [[ -f "${dir}/go.mod" ]]; then
    printf '%s\n' "${dir}"
    return
  fi
  log "kubernetes: resolving staging modules from k8s.io/kubernetes@${K8S_VERSION} go.mod"
  gomod="$(cd "${CACHE}" && "${GO_BIN}" mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "${gomod}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"
  local -a staging
  mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "${gomod}")
  ((${#staging[@]} > 0)) || die "no staging replace directives found in ${gomod}"
  log "kubernetes: ${#staging[@]} staging modules -> ${staging_version}"
  mkdir -p "${dir}"
  {
    printf 'module sovereign-operator.local/kubernetes-build\n\n'
    # Same language version and GODEBUG defaults as the upstream build, which only
    # the main module's go.mod controls.
    printf 'go %s\n\n' "$(awk '$1 == "go" { print $2; exit }' "${gomod}")"
    awk '$1 == "godebug" { print; found=1 } END { if (found) print "" }' "${gomod}"
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "${K8S_VERSION}"
    for m in "${staging[@]}"; do
      printf '\t%s => %s %s\n' "${m}" "${m}" "${staging_version}"
    done
    printf ')\n'
  } >"${dir}/go.mod.tmp"
  mv "${dir}/go.mod.tmp" "${dir}/go.mod"
  printf '%s\n' "${dir}"
}

# Wrapper module for etcd: go.etcd.io/etcd/server/v3 has replace directives, which
# `go install ...@version` rejects; as a plain dependency its main package builds fine.
etcd_wrapper() {
  local dir="${CACHE}/src/etcd-${ETCD_VERSION}"
  if [[ ! -f "${dir}/go.mod" ]]; then
    mkdir -p "${dir}"
    printf 'module sovereign-operator.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
      "${ETCD_VERSION}" >"${dir}/go.mod"
  fi
  printf '%s\n' "${dir}"
}

build_k8s_component() {
  local component=$1 wrapper=$2 major minor ldflags tmp start
  major="${K8S_VERSION#v}"
  major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"
  minor="${minor%%.*}"
  # Stamp the version the way hack/lib/version.sh does, for both the server-side
  # package (component-base, used by /version) and client-go (kubectl's client
  # version); otherwise both report v0.0.0-master and kubectl warns about skew.
  ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${major}"
    ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  done
  tmp="$(mktemp -d "${CACHE}/tmp.XXXXXX")"
  start=${SECONDS}
  log "${component}: building ${K8S_VERSION} ..."
  (cd "${wrapper}" && "${GO_BIN}" build -trimpath -ldflags="${ldflags}" \
    -o "${tmp}/${component}" "k8s.io/kubernetes/cmd/${component}")
  install_bin "${component}" "${tmp}/${component}"
  rmdir "${tmp}"
  log "${component}: built in $((SECONDS - start))s"
}

build_etcd() {
  local wrapper tmp start
  wrapper="$(etcd_wrapper)"
  tmp="$(mktemp -d "${CACHE}/tmp.XXXXXX")"
  start=${SECONDS}
  log "etcd: building ${ETCD_VERSION} ..."
  # The version string is a constant in go.etcd.io/etcd/api/v3/version, so only -s -w.
  (cd "${wrapper}" && "${GO_BIN}" build -trimpath -ldflags="-s -w" \
    -o "${tmp}/etcd" go.etcd.io/etcd/server/v3)
  install_bin etcd "${tmp}/etcd"
  rmdir "${tmp}"
  log "etcd: built in $((SECONDS - start))s"
}

build_kwok() {
  local tmp start
  tmp="$(mktemp -d "${CACHE}/tmp.XXXXXX")"
  start=${SECONDS}
  log "kwok: building ${KWOK_VERSION} ..."
  # kwok has no replace directives, so `go install pkg@version` works without a
  # wrapper module (GOBIN points at a temporary dir, then install_bin moves it).
  GOBIN="${tmp}" "${GO_BIN}" install -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
    "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  install_bin kwok "${tmp}/kwok"
  rmdir "${tmp}"
  log "kwok: built in $((SECONDS - start))s"
}

kwok_stages_file() { printf '%s/stages.yaml\n' "$(bin_dir kwok)"; }

# Standalone kwok has no stages built in: without --config it simulates nothing.  The
# stage definitions ship in the module source (kustomize/stage/); keep a copy next to
# the binary (keyed by the same version) so `up` needs neither Go nor the module cache.
# node-heartbeat-with-lease (not plain node-heartbeat) because kwok renews node Leases
# itself and only needs to refresh status rarely, which keeps apiserver load low.
extract_kwok_stages() {
  local src out f
  src="$(cd "${CACHE}" && "${GO_BIN}" mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "${src}/kustomize/stage" ]] || die "kwok module source not found (got '${src}')"
  out="$(kwok_stages_file)"
  {
    printf '# Generated by e2e/controlplane.sh from sigs.k8s.io/kwok@%s kustomize/stage/\n' \
      "${KWOK_VERSION}"
    for f in node/fast/node-initialize.yaml \
      node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [[ -f "${src}/kustomize/stage/${f}" ]] || die "kwok stage ${f} missing in ${src}"
      printf -- '---\n'
      cat "${src}/kustomize/stage/${f}"
    done
  } >"${out}.tmp"
  mv -f "${out}.tmp" "${out}"
  log "kwok stages written to ${out}"
}

cmd_build() {
  local component wrapper="" total_start=${SECONDS}
  go_env
  mkdir -p "${BIN_ROOT}"
  log "using $("${GO_BIN}" version), cache ${CACHE}"
  # Sequential on purpose: two cores, and the Kubernetes binaries share most packages,
  # so each later build mostly hits the build cache filled by the first.
  if [[ -x "$(bin_path etcd)" ]]; then
    log "etcd ${ETCD_VERSION}: already built"
  else
    build_etcd
  fi
  for component in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [[ -x "$(bin_path "${component}")" ]]; then
      log "${component} ${K8S_VERSION}: already built"
      continue
    fi
    [[ -n "${wrapper}" ]] || wrapper="$(k8s_wrapper)"
    build_k8s_component "${component}" "${wrapper}"
  done
  if [[ -x "$(bin_path kwok)" ]]; then
    log "kwok ${KWOK_VERSION}: already built"
  else
    build_kwok
  fi
  if [[ -s "$(kwok_stages_file)" ]]; then
    log "kwok ${KWOK_VERSION} stages: already extracted"
  else
    extract_kwok_stages
  fi
  log "build done in $((SECONDS - total_start))s; binaries under ${BIN_ROOT}"
}

# ---------------------------------------------------------------------------------------
# runtime layout
#
#   $STATE/.sovereign-e2e-state   marker: `down` only deletes a directory that has it
#   $STATE/pki/                   CA, serving / client certificates, service-account keys
#   $STATE/pids/<component>.pid   PIDs of the processes `up` started
#   $STATE/logs/<component>.log   their stdout/stderr
#   $STATE/etcd/                  etcd data
#   $STATE/kubeconfig             admin kubeconfig (O=system:masters)
#   $STATE/ready                  written last by `up`: the plane is complete

PKI="${STATE}/pki"
PIDS="${STATE}/pids"
LOGS="${STATE}/logs"
KUBECONFIG_PATH="${STATE}/kubeconfig"
MARKER="${STATE}/.sovereign-e2e-state"

kubectl_bin() { bin_path kubectl; }
kc() { "$(kubectl_bin)" --kubeconfig "${KUBECONFIG_PATH}" "$@"; }

# True if the recorded PID is alive *and* is still the program we started (its argv[0]
# is our binary and its arguments point into this state directory), so a recycled PID
# belonging to something else is never reported as ours or signalled.
pid_of() {
  local component=$1 file="${PIDS}/$1.pid" pid
  [[ -f "${file}" ]] || return 1
  pid="$(<"${file}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  local -a argv
  # The process may exit between the checks; that just means "not running".
  { mapfile -d '' -t argv <"/proc/${pid}/cmdline"; } 2>/dev/null || return 1
  ((${#argv[@]} > 0)) || return 1 # zombie or kernel thread
  [[ "${argv[0]}" == "$(bin_path "${component}")" ]] || return 1
  [[ "${argv[*]}" == *"${STATE}/"* ]] || return 1
  printf '%s\n' "${pid}"
}
is_running() { pid_of "$1" >/dev/null; }

# --- certificates ------------------------------------------------------------------------

# openssl (not cfssl or kubeadm) because it is on every Debian/Ubuntu image.
make_ca() {
  local name=$1 cn=$2
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 365 \
    -keyout "${PKI}/${name}.key" -out "${PKI}/${name}.crt" -subj "/CN=${cn}" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# Key + certificate signed by CA $5 (default: the cluster CA).  $2 = subject,
# $3 = extendedKeyUsage, $4 = SAN list (may be empty).
issue_cert() {
  local name=$1 subject=$2 usage=$3 sans=${4:-} ca=${5:-ca}
  openssl genrsa -out "${PKI}/${name}.key" 2048 2>/dev/null
  openssl req -new -key "${PKI}/${name}.key" -subj "${subject}" -out "${PKI}/${name}.csr" 2>/dev/null
  {
    printf 'basicConstraints=critical,CA:FALSE\n'
    printf 'keyUsage=critical,digitalSignature,keyEncipherment\n'
    printf 'extendedKeyUsage=%s\n' "${usage}"
    [[ -z "${sans}" ]] || printf 'subjectAltName=%s\n' "${sans}"
  } >"${PKI}/${name}.ext"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" \
    -CAcreateserial -days 365 -sha256 -extfile "${PKI}/${name}.ext" \
    -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

make_pki() {
  mkdir -p "${PKI}"
  chmod 700 "${PKI}"
  make_ca ca sovereign-e2e-ca
  # Every name a client may use for the API server: loopback for kubectl/tests, the
  # in-cluster names and the first service IP for anything that follows
  # KUBERNETES_SERVICE_HOST conventions.
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:${SERVICE_IP}"
  issue_cert admin "/O=system:masters/CN=sovereign-e2e-admin" clientAuth
  # The controller manager and scheduler get their own identities so the bootstrap RBAC
  # roles (system:kube-controller-manager, system:kube-scheduler) apply, as in a real
  # cluster; permission bugs then show up here rather than in production.
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # Front-proxy (request-header) CA and client, as kubeadm sets up.  Without it the
  # apiserver publishes no requestheader CA in kube-system/extension-apiserver-
  # authentication and the controller manager / scheduler log errors about it every
  # second; it also lets aggregated API servers (e.g. metrics-server) authenticate.
  make_ca front-proxy-ca sovereign-e2e-front-proxy-ca
  issue_cert front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
  # Service-account token signing key pair.
  openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  rm -f "${PKI}/ca.srl" "${PKI}/front-proxy-ca.srl"
}

# Kubeconfig with the certificates embedded, so it stays valid if copied elsewhere.
write_kubeconfig() {
  local out=$1 cert=$2
  local ca crt key
  ca="$(base64 -w0 <"${PKI}/ca.crt")"
  crt="$(base64 -w0 <"${PKI}/${cert}.crt")"
  key="$(base64 -w0 <"${PKI}/${cert}.key")"
  cat >"${out}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sovereign-e2e
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: ${ca}
users:
- name: ${cert}
  user:
    client-certificate-data: ${crt}
    client-key-data: ${key}
contexts:
- name: sovereign-e2e
  context:
    cluster: sovereign-e2e
    user: ${cert}
current-context: sovereign-e2e
EOF
  chmod 600 "${out}"
}

# --- processes ---------------------------------------------------------------------------

# Start a component in its own session (setsid) so it outlives this script and a Ctrl-C
# in the calling terminal; stdin closed, output to its log.  In a non-interactive shell
# a background child is never a process-group leader, so setsid execs in place and $!
# is the component's own PID.
start() {
  local component=$1
  shift
  local bin
  bin="$(bin_path "${component}")"
  log "starting ${component}"
  setsid "${bin}" "$@" </dev/null >>"${LOGS}/${component}.log" 2>&1 &
  local pid=$! i
  printf '%s\n' "${pid}" >"${PIDS}/${component}.pid"
  # Right after the fork the child is still a copy of this shell; wait for the exec so
  # later liveness checks (which look at argv[0]) do not mistake it for a dead process.
  for ((i = 0; i < 100; i++)); do
    is_running "${component}" && return 0
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.05
  done
  tail -n 25 "${LOGS}/${component}.log" >&2 || true
  die "${component} failed to start (log: ${LOGS}/${component}.log)"
}

# Stop one component: SIGTERM, then SIGKILL after a grace period.  Only PIDs that
# pid_of confirms are ours are ever signalled.
stop() {
  local component=$1 pid i
  pid="$(pid_of "${component}")" || {
    rm -f "${PIDS}/${component}.pid"
    return 0
  }
  log "stopping ${component} (pid ${pid})"
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    is_running "${component}" || break
    sleep 0.1
  done
  if is_running "${component}"; then
    log "${component} ignored SIGTERM for 15s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "${PIDS}/${component}.pid"
}

# Poll until "$@" succeeds, failing early (with the log tail) if any started component
# has died, since waiting on a crashed apiserver for two minutes helps nobody.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout)) c
  until "$@" >/dev/null 2>&1; do
    for c in "${COMPONENTS[@]}"; do
      if [[ -f "${PIDS}/${c}.pid" ]] && ! is_running "${c}"; then
        log "${c} exited while waiting for ${what}; last log lines:"
        tail -n 25 "${LOGS}/${c}.log" >&2 || true
        die "${c} died (full log: ${LOGS}/${c}.log)"
      fi
    done
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for ${what} (logs: ${LOGS})"
    sleep 0.5
  done
}

# Output captured rather than piped to `grep -q` (see the health probes below).  Without
# `ss` (iproute2) the check is skipped and a clash shows up as a component failing.
port_free() { [[ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

check_ports() {
  local p
  for p in "${APISERVER_PORT}" "${ETCD_CLIENT_PORT}" "${ETCD_PEER_PORT}" "${KCM_PORT}" \
    "${SCHEDULER_PORT}" "${KWOK_PORT}"; do
    port_free "${p}" || die "port ${p} on loopback is already in use (stale plane from \
another state dir? set SOVEREIGN_APISERVER_PORT / SOVEREIGN_PORT_BASE to move)"
  done
}

# --- health checks -----------------------------------------------------------------------

curl_admin() {
  curl -fsS --max-time 5 --cacert "${PKI}/ca.crt" --cert "${PKI}/admin.crt" \
    --key "${PKI}/admin.key" "https://127.0.0.1:${APISERVER_PORT}$1"
}
# Health probes capture the body instead of piping into `grep -q`: grep exiting early
# makes curl die of SIGPIPE, which pipefail turns into a false "unhealthy".
etcd_healthy() {
  [[ "$(curl -fsS --max-time 5 "http://127.0.0.1:${ETCD_CLIENT_PORT}/health")" == *'"health":"true"'* ]]
}
apiserver_ready() { [[ "$(curl_admin /readyz)" == "ok" ]]; }
# /healthz of KCM and the scheduler is always-allowed, so no client cert is needed; -k
# because their serving certs are self-signed at startup.
kcm_healthy() { [[ "$(curl -ksS --max-time 5 "https://127.0.0.1:${KCM_PORT}/healthz")" == "ok" ]]; }
scheduler_healthy() { [[ "$(curl -ksS --max-time 5 "https://127.0.0.1:${SCHEDULER_PORT}/healthz")" == "ok" ]]; }
kwok_healthy() { [[ "$(curl -fsS --max-time 5 "http://127.0.0.1:${KWOK_PORT}/healthz")" == "ok" ]]; }
component_healthy() {
  case "$1" in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_ready ;;
    kube-controller-manager) kcm_healthy ;;
    kube-scheduler) scheduler_healthy ;;
    kwok) kwok_healthy ;;
    *) return 1 ;;
  esac
}

default_sa_exists() { kc get serviceaccount default -n default; }
# (The apiserver pretty-prints JSON for curl's user agent, so match the bare name.)
vap_served() {
  [[ "$(curl_admin /apis/admissionregistration.k8s.io/v1)" == *'"validatingadmissionpolicies"'* ]]
}
# All nodes Ready and without the not-ready / unreachable taints.  The apiserver's
# TaintNodesByCondition admission plugin puts node.kubernetes.io/not-ready:NoSchedule on
# every new node; the node-lifecycle controller removes it a few seconds after KWOK
# reports Ready.  Until then the scheduler will not use the node.
nodes_ready() {
  local expected=$1 out
  out="$(kc get nodes --no-headers -o \
    'custom-columns=N:.metadata.name,R:.status.conditions[?(@.type=="Ready")].status,T:.spec.taints[*].key')"
  [[ "$(grep -c . <<<"${out}")" -eq "${expected}" ]] || return 1
  ! awk '$2 != "True" || $3 ~ /node\.kubernetes\.io\/(not-ready|unreachable)/ { bad=1 } END { exit !bad }' <<<"${out}"
}

plane_healthy() {
  local c
  [[ -f "${STATE}/ready" ]] || return 1
  for c in "${COMPONENTS[@]}"; do
    is_running "${c}" || return 1
    component_healthy "${c}" || return 1
  done
}

# --- up ----------------------------------------------------------------------------------

start_etcd() {
  # --unsafe-no-fsync: test data is disposable and fsync dominates etcd latency on
  # shared CI disks.  Client and peer URLs on loopback only.
  start etcd \
    --name sovereign-e2e \
    --data-dir "${STATE}/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster "sovereign-e2e=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --unsafe-no-fsync \
    --log-level warn
}

start_apiserver() {
  # Admission: the default-on set stays on (it includes ValidatingAdmissionPolicy and
  # ServiceAccount); ExtendedResourceToleration is added so pods requesting
  # nvidia.com/gpu tolerate the GPU-node taint automatically, like on GKE.
  # --endpoint-reconciler-type=none: the reconciler would publish 127.0.0.1 as the
  # endpoint of the `kubernetes` service, which the API rejects (loopback).
  start kube-apiserver \
    --etcd-servers "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "${APISERVER_PORT}" \
    --tls-cert-file "${PKI}/apiserver.crt" \
    --tls-private-key-file "${PKI}/apiserver.key" \
    --client-ca-file "${PKI}/ca.crt" \
    --requestheader-client-ca-file "${PKI}/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "${PKI}/front-proxy-client.crt" \
    --proxy-client-key-file "${PKI}/front-proxy-client.key" \
    --service-account-key-file "${PKI}/sa.pub" \
    --service-account-signing-key-file "${PKI}/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "${SERVICE_CIDR}" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins ExtendedResourceToleration \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --profiling=false
}

start_controller_manager() {
  # Default controller set ("*"): garbage collector, deployment/replicaset, namespace,
  # service-account(-token), node-lifecycle (removes the not-ready taint), ...
  # --use-service-account-credentials: each controller acts as its own service
  # account, exactly like production RBAC.
  start kube-controller-manager \
    --kubeconfig "${STATE}/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "${STATE}/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "${STATE}/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "${KCM_PORT}" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --root-ca-file "${PKI}/ca.crt" \
    --service-account-private-key-file "${PKI}/sa.key" \
    --cluster-signing-cert-file "${PKI}/ca.crt" \
    --cluster-signing-key-file "${PKI}/ca.key" \
    --service-cluster-ip-range "${SERVICE_CIDR}" \
    --profiling=false
}

start_scheduler() {
  start kube-scheduler \
    --kubeconfig "${STATE}/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "${STATE}/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "${STATE}/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "${SCHEDULER_PORT}" \
    --leader-elect=false \
    --profiling=false
}

start_kwok() {
  # kwok plays the kubelet of every node, so it uses the admin identity (the Node
  # authorizer would confine a kubelet identity to a single node).
  start kwok \
    --kubeconfig "${KUBECONFIG_PATH}" \
    --config "${STATE}/kwok.yaml" \
    --manage-all-nodes=true \
    --server-address "127.0.0.1:${KWOK_PORT}" \
    --node-lease-duration-seconds 40 \
    --cidr 10.244.0.0/16
}

cmd_up() {
  local c start_time=${SECONDS} expected
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is required (apt-get install curl)"
  command -v setsid >/dev/null || die "setsid is required (apt-get install util-linux)"
  for c in "${COMPONENTS[@]}" kubectl; do
    [[ -x "$(bin_path "${c}")" ]] || die "$(bin_path "${c}") missing: run '$0 build' first"
  done
  [[ -s "$(kwok_stages_file)" ]] || die "$(kwok_stages_file) missing: run '$0 build' first"

  if plane_healthy; then
    log "control plane already running and healthy (kubeconfig: ${KUBECONFIG_PATH})"
    return 0
  fi
  if [[ -d "${STATE}" ]]; then
    # Half-started or crashed plane: restarting in place would mix old PKI, etcd data
    # and new processes; a fresh start takes seconds, so clean up completely.
    log "found an incomplete or unhealthy plane in ${STATE}; cleaning it up"
    cmd_down
  fi
  check_ports

  mkdir -p "${STATE}" "${PIDS}" "${LOGS}"
  : >"${MARKER}"
  make_pki
  write_kubeconfig "${KUBECONFIG_PATH}" admin
  write_kubeconfig "${STATE}/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "${STATE}/kube-scheduler.kubeconfig" kube-scheduler
  cp "$(kwok_stages_file)" "${STATE}/kwok.yaml"

  start_etcd
  wait_for "etcd health" 60 etcd_healthy
  start_apiserver
  wait_for "kube-apiserver /readyz" 180 apiserver_ready
  start_controller_manager
  start_scheduler
  start_kwok
  wait_for "kube-controller-manager /healthz" 60 kcm_healthy
  wait_for "kube-scheduler /healthz" 60 scheduler_healthy
  wait_for "kwok /healthz" 60 kwok_healthy
  wait_for "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy API" 30 vap_served
  # The ServiceAccount admission plugin rejects pods until the token controller has
  # created the namespace's `default` service account.
  wait_for "default service account" 60 default_sa_exists

  local nodes="${NODES_FILE}"
  if [[ -n "${SOVEREIGN_E2E_NODE_REGIONS:-}" ]]; then
    # Only the nodes of the given regions: the documents whose region label is listed.
    nodes="${STATE}/nodes.yaml"
    awk -v regions=" ${SOVEREIGN_E2E_NODE_REGIONS} " '
      function flush() { if (doc != "" && keep) printf "---\n%s", doc; doc = ""; keep = 0 }
      /^---$/ { flush(); next }
      { doc = doc $0 "\n" }
      /topology.kubernetes.io\/region: / { if (index(regions, " " $2 " ")) keep = 1 }
      END { flush() }' "${NODES_FILE}" >"${nodes}"
  fi
  log "creating simulated nodes from ${nodes}"
  # `create`, not `apply`: the Node create path keeps .status (capacity, allocatable,
  # addresses), which KWOK then preserves; apply would store it as last-applied too.
  kc create -f "${nodes}" >/dev/null
  expected="$(grep -c '^kind: Node$' "${nodes}")"
  wait_for "${expected} nodes Ready and untainted by node-lifecycle" 120 nodes_ready "${expected}"

  : >"${STATE}/ready"
  log "control plane up in $((SECONDS - start_time))s; use: eval \"\$($0 env)\""
}

# --- down / status / env -----------------------------------------------------------------

cmd_down() {
  local i c
  if [[ ! -d "${STATE}" ]]; then
    log "nothing to stop (${STATE} does not exist)"
    return 0
  fi
  [[ -f "${MARKER}" ]] || die "${STATE} exists but was not created by this script; not touching it"
  # Reverse start order: kwok and the controllers before the apiserver, etcd last.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[i]}"
    stop "${c}"
  done
  rm -rf -- "${STATE}"
  log "control plane down, ${STATE} removed"
}

cmd_status() {
  local c pid rc=0
  if [[ ! -d "${STATE}" ]]; then
    echo "control plane: not started (${STATE} does not exist)"
    return 3
  fi
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "${c}")"; then
      if component_healthy "${c}"; then
        printf '%-24s running  pid %-8s healthy\n' "${c}" "${pid}"
      else
        printf '%-24s running  pid %-8s NOT HEALTHY\n' "${c}" "${pid}"
        rc=1
      fi
    else
      printf '%-24s stopped\n' "${c}"
      rc=1
    fi
  done
  if apiserver_ready 2>/dev/null; then
    echo
    kc get nodes -L topology.kubernetes.io/region,topology.kubernetes.io/zone,nvidia.com/gpu.product
  fi
  return "${rc}"
}

cmd_env() {
  [[ -f "${KUBECONFIG_PATH}" ]] || log "warning: ${KUBECONFIG_PATH} does not exist yet (run '$0 up')"
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_PATH}"
  # shellcheck disable=SC2016 # ${PATH} must expand in the caller's shell, not here
  printf 'export PATH=%q:"${PATH}"\n' "$(bin_dir kubectl)"
}

# ---------------------------------------------------------------------------------------
main() {
  local cmd="${1:-}"
  case "${cmd}" in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    apiserver-stop) stop kube-apiserver ;;
    apiserver-start)
      start_apiserver
      wait_for "kube-apiserver /readyz" 180 apiserver_ready
      ;;
    *)
      printf 'usage: %s build|up|down|status|env|apiserver-stop|apiserver-start\n' "$0" >&2
      exit 2
      ;;
  esac
}

# Run only when executed, so the functions can also be sourced for debugging.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
