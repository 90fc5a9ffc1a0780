#!/usr/bin/env python3
"""Checks the Kubernetes manifests under deploy/k8s, as `make test` runs it.

Every resource a kustomization lists is validated strictly against the Kubernetes
OpenAPI schemas (kubernetes-validate, for the oldest version we support); the
ServiceMonitor, a custom resource without a bundled schema, is checked for the
fields Prometheus Operator needs. Every file a kustomization names must exist,
and every patch must target a resource of its bases. Usage: validate.py [VERSION]
"""

import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = sys.argv[1] if len(sys.argv) > 1 else "1.30.0"
failures = []


def documents(path):
    with open(path) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def resources_of(kustomization_dir):
    """(kind, name) of every resource a kustomization builds, following bases."""
    built = set()
    path = os.path.join(kustomization_dir, "kustomization.yaml")
    for doc in documents(path):
        for entry in doc.get("resources", []):
            target = os.path.normpath(os.path.join(kustomization_dir, entry))
            if os.path.isdir(target):
                built |= resources_of(target)
            elif os.path.isfile(target):
                built |= {(d["kind"], d["metadata"]["name"]) for d in documents(target)}
                check_resource_file(target)
            else:
                failures.append(f"{path}: resource {entry} does not exist")
        for patch in doc.get("patches", []):
            target = os.path.join(kustomization_dir, patch["path"])
            if not os.path.isfile(target):
                failures.append(f"{path}: patch {patch['path']} does not exist")
                continue
            for d in documents(target):
                if (d["kind"], d["metadata"]["name"]) not in built:
                    failures.append(
                        f"{target}: patches {d['kind']}/{d['metadata']['name']}, "
                        "which no base defines"
                    )
        for replica in doc.get("replicas", []):
            if not any(name == replica["name"] for _, name in built):
                failures.append(f"{path}: replicas of unknown {replica['name']}")
    return built


checked = set()


def check_resource_file(path):
    if path in checked:
        return
    checked.add(path)
    custom = [d for d in documents(path) if d["apiVersion"].startswith("monitoring.coreos.com/")]
    for doc in custom:
        spec = doc.get("spec", {})
        if doc["kind"] != "ServiceMonitor" or "selector" not in spec or not spec.get("endpoints"):
            failures.append(f"{path}: {doc['kind']} needs spec.selector and spec.endpoints")
        for endpoint in spec.get("endpoints", []):
            if "port" not in endpoint:
                failures.append(f"{path}: a ServiceMonitor endpoint names no port")
    if custom:
        return
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "--quiet", "-k", VERSION, path],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        failures.append(result.stdout.strip() or result.stderr.strip())


for overlay in sorted(os.listdir(os.path.join(HERE, "overlays"))):
    resources_of(os.path.join(HERE, "overlays", overlay))
resources_of(os.path.join(HERE, "base"))

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"deploy/k8s: {len(checked)} manifest files valid against Kubernetes {VERSION}")
