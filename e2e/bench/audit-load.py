#!/usr/bin/env python3
"""Loader for e2e/bench/audit-scale.sh: creates many objects fast over a few keep-alive HTTPS
connections (stdlib only), instead of one kubectl process per object.

    audit-load.py STATE UNRELATED GOVERNED NAMESPACES [THREADS]

STATE is the plane's state directory (its pki/ and the API server port in the kubeconfig).
Creates NAMESPACES namespaces `scale-NNN` (no region label), UNRELATED objects spread over
them as Pods (unschedulable: schedulerName bench-none, so nothing updates them), ConfigMaps and
Secrets without a data class, and GOVERNED ConfigMaps labelled with the `pii` class in the eu
region's namespace `sovereign-eu` (compliant: that namespace is eu's). Prints objects/s.
"""
import http.client
import json
import os
import ssl
import sys
import threading
import time

state, unrelated, governed, namespaces = sys.argv[1], *map(int, sys.argv[2:5])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 16
pki = os.path.join(state, "pki")
server = next(l.split("server:")[1].strip() for l in open(os.path.join(state, "kubeconfig")) if "server:" in l)
host, port = server.removeprefix("https://").split(":")
context = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
context.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))


def jobs():
    for n in range(namespaces):
        yield "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"scale-{n:03d}"}}
    yield None, None  # barrier: namespaces first
    for i in range(unrelated):
        ns = f"scale-{i % namespaces:03d}"
        meta = {"name": f"u-{i}", "namespace": ns, "labels": {"app": f"app-{i % 50}"}}
        kind = i % 3
        if kind == 0:
            yield f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"schedulerName": "bench-none", "containers": [{"name": "c", "image": "registry.example/app:1",
                    "env": [{"name": "MODE", "value": "x"}]}]}}
        elif kind == 1:
            yield f"/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"config.yaml": "key: value\n" * 8}}
        else:
            yield f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                "stringData": {"token": "x" * 32}}
    for i in range(governed):
        yield "/api/v1/namespaces/sovereign-eu/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"g-{i}", "namespace": "sovereign-eu", "labels": {"sovereign.ai/data-class": "pii"}},
            "data": {"k": "v"}}


lock = threading.Lock()
queue = []
errors = []


def worker(batch):
    conn = http.client.HTTPSConnection(host, int(port), context=context)
    for path, body in batch:
        for attempt in range(30):
            try:
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status in (201, 409):
                    break
                # A namespace's default ServiceAccount appears a moment after the namespace;
                # until then its Pods are refused.
                retry = resp.status == 403 and b"serviceaccount" in data
                if retry or resp.status == 429 or resp.status >= 500:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                with lock:
                    errors.append(f"{path}: {resp.status} {data[:200]!r}")
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPSConnection(host, int(port), context=context)
                time.sleep(0.2)


def run(items):
    chunks = [items[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


start = time.time()
phase = []
for path, body in jobs():
    if path is None:
        run(phase)
        phase = []
        continue
    phase.append((path, body))
run(phase)
elapsed = time.time() - start
total = namespaces + unrelated + governed
print(f"[load] {total} objects in {elapsed:.1f} s ({total / elapsed:.0f} objects/s), {len(errors)} errors", file=sys.stderr)
for e in errors[:5]:
    print(f"[load]   {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
