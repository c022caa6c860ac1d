#!/usr/bin/env python3
"""Generates the OPA comparison corpus: N Pods, Deployments and PVCs (compliant and violating),
and the context both tools need, from one description so that they cannot disagree:

- OUT/corpus.json   a `kind: List` of the N objects (`check -f` flattens Lists; OPA reads it as
                    `input`, iterating `input.items`);
- OUT/context.json  a `kind: List` of the SovereignRegions, the ResidencyPolicy and the
                    Namespaces (`check --policies`: context, not judged);
- OUT/data.json     the same facts as OPA data (`data.residency`: governed classes, regions →
                    locations / storage classes, namespace → region).

Usage: gen.py N OUT_DIR [SEED]. Deterministic for a given seed. Standard library only.
"""

import json
import os
import random
import sys

TOPO = "topology.kubernetes.io/region"
REGION = "sovereign.ai/region"
CLASS = "sovereign.ai/data-class"

REGIONS = {
    "eu": {
        "jurisdiction": "EU",
        "locations": ["europe-west9", "eu-central-1", "fr-par"],
        "storageClasses": ["eu-regional-ssd"],
        "namespace": "sovereign-eu",
    },
    "in": {
        "jurisdiction": "IN",
        "locations": ["ap-south-1", "asia-south1"],
        "storageClasses": ["in-regional-ssd"],
        "namespace": "sovereign-in",
    },
}
OUTSIDE = ["us-east-1", "us-west-2"]
CLASSES = ["pii"]


def namespaces():
    """(name, region or None, whether a Namespace object declares it)."""
    out = [(r["namespace"], name, False) for name, r in REGIONS.items()]
    for name in REGIONS:
        out += [(f"team-{name}-{i}", name, True) for i in range(10)]
    # Namespaces nobody placed: governed objects there have no home region unless labelled.
    out += [(f"team-none-{i}", None, False) for i in range(3)]
    return out


def pick(rng, weighted):
    """One value of [(weight, value)]."""
    total = sum(w for w, _ in weighted)
    x = rng.uniform(0, total)
    for w, v in weighted:
        x -= w
        if x <= 0:
            return v
    return weighted[-1][1]


def pod_spec(rng, region):
    """A pod spec pinned, mis-pinned or unpinned for `region` (a declared region or None)."""
    inside = REGIONS[region]["locations"] if region else REGIONS["eu"]["locations"]
    spec = {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]}
    shape = pick(rng, [(40, "selector-in"), (10, "selector-out"), (20, "affinity-in"),
                       (5, "affinity-stray"), (5, "preferred"), (20, "none")])
    if shape == "selector-in":
        spec["nodeSelector"] = {TOPO: rng.choice(inside)}
    elif shape == "selector-out":
        spec["nodeSelector"] = {TOPO: rng.choice(OUTSIDE)}
    elif shape in ("affinity-in", "affinity-stray"):
        values = rng.sample(inside, k=min(2, len(inside)))
        if shape == "affinity-stray":
            values.append(rng.choice(OUTSIDE))
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": TOPO, "operator": "In", "values": values}]}]}}}
    elif shape == "preferred":
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [
                {"key": TOPO, "operator": "In", "values": [inside[0]]}]}}]}}
    return spec


def labels(rng, region):
    """Data class (mostly governed) and sometimes an own region label, at times a wrong one."""
    out = {"app": "bench"}
    data_class = pick(rng, [(70, "pii"), (20, "public"), (10, None)])
    if data_class:
        out[CLASS] = data_class
    own = pick(rng, [(85, None), (10, "same"), (5, "other")])
    if own == "same" and region:
        out[REGION] = region
    elif own == "other":
        out[REGION] = rng.choice([r for r in REGIONS if r != region])
    return out


def obj(rng, i, all_namespaces):
    namespace, region, _ = rng.choice(all_namespaces)
    name = f"obj-{i}"
    kind = pick(rng, [(40, "Pod"), (30, "Deployment"), (30, "PersistentVolumeClaim")])
    meta_labels = labels(rng, region)
    home = meta_labels.get(REGION, region)
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
                "spec": pod_spec(rng, home)}
    if kind == "Deployment":
        # The data class sits on the pod template (as usual) or on the Deployment itself.
        on_template = rng.random() < 0.7
        template_labels = dict(meta_labels) if on_template else {"app": "bench"}
        own_labels = {"app": "bench"} if on_template else meta_labels
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": own_labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bench"}},
                         "template": {"metadata": {"labels": template_labels},
                                      "spec": pod_spec(rng, home)}}}
    classes = REGIONS[home]["storageClasses"] if home in REGIONS else ["eu-regional-ssd"]
    others = [c for r in REGIONS.values() for c in r["storageClasses"] if c not in classes]
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    storage = pick(rng, [(60, "in"), (15, "other"), (15, "gp3"), (10, "none")])
    if storage == "in":
        spec["storageClassName"] = rng.choice(classes)
    elif storage == "other":
        spec["storageClassName"] = rng.choice(others)
    elif storage == "gp3":
        spec["storageClassName"] = "gp3"
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
            "spec": spec}


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: gen.py N OUT_DIR [SEED]")
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    os.makedirs(out, exist_ok=True)
    all_namespaces = namespaces()
    items = [obj(rng, i, all_namespaces) for i in range(n)]
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)

    context = [{"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
                "metadata": {"name": name}, "spec": spec} for name, spec in REGIONS.items()]
    context.append({"apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
                    "metadata": {"name": "bench-pii"},
                    "spec": {"mode": "Enforce", "dataClasses": CLASSES,
                             "residency": {"kind": "HomeRegion"},
                             "rules": {"dataLocation": True, "pinWorkloads": True,
                                       "pinStorage": True}}})
    context += [{"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": ns, "labels": {REGION: region}}}
                for ns, region, declared in all_namespaces if declared]
    with open(os.path.join(out, "context.json"), "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": context}, f, indent=1)

    data = {"residency": {
        "classes": CLASSES,
        "regions": {name: {"locations": r["locations"], "storageClasses": r["storageClasses"]}
                    for name, r in REGIONS.items()},
        "namespaces": {ns: region for ns, region, _ in all_namespaces if region},
    }}
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
