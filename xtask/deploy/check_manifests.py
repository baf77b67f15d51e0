"""Checks Siphon's rendered Kubernetes manifests (`kubectl kustomize deploy/kubernetes` output).

    python3 check_manifests.py --rules deploy/prometheus/rules.yaml BASE.yaml [OVERLAY.yaml ...]

Every object is validated in strict mode (unknown fields are errors): the Kubernetes kinds
against the Kubernetes OpenAPI schemas with kubernetes-validate, ServiceMonitor and
PrometheusRule against crd_schemas.json (kubernetes-validate carries no CRD schemas). Then
Siphon's own rules: every kind the base must ship is there, the DaemonSet is locked down
(`daemonset_problems`), the Service is headless with port `metrics` 9947, and the
PrometheusRule holds exactly the groups of deploy/prometheus/rules.yaml.

Run by `cargo xtask test`; exits 1 with one line per problem.
"""

import argparse
import json
import os
import sys

import yaml

# The oldest Kubernetes minor the manifests must be valid for.
KUBERNETES_VERSION = "1.29"
REQUIRED_KINDS = {
    "Namespace", "ServiceAccount", "PriorityClass", "ConfigMap", "DaemonSet", "Service",
    "ServiceMonitor", "PrometheusRule",
}
CAPABILITIES = {"BPF", "NET_ADMIN", "PERFMON"}
HERE = os.path.dirname(os.path.abspath(__file__))


def load_crd_schemas():
    with open(os.path.join(HERE, "crd_schemas.json")) as f:
        doc = json.load(f)
    defs = doc["definitions"]
    return {kind: dict(doc[kind], definitions=defs) for kind in ("ServiceMonitor", "PrometheusRule")}


def schema_problems(obj, crd_schemas, version=KUBERNETES_VERSION):
    """Strict schema validation of one object; returns problem strings."""
    import jsonschema
    import kubernetes_validate

    kind = obj.get("kind")
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if kind in crd_schemas:
        validator = jsonschema.Draft7Validator(crd_schemas[kind])
        return [f"{name}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{name}: no schema for this kind ({e})"]
    return []


def daemonset_problems(ds):
    """What makes the DaemonSet more privileged, or less supervised, than Siphon needs."""
    out = []
    spec = ds.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    strategy = spec.get("updateStrategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or \
            strategy.get("rollingUpdate", {}).get("maxUnavailable") != 1:
        out.append("updateStrategy must be a rolling update with maxUnavailable: 1")
    for key in ("hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{key} must not be set")
    if pod.get("automountServiceAccountToken") is not False:
        out.append("automountServiceAccountToken must be false")
    pod_seccomp = pod.get("securityContext", {}).get("seccompProfile", {}).get("type")
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    if not pod.get("containers"):
        out.append("no containers")
    for c in containers:
        who = f"container {c.get('name')}"
        sc = c.get("securityContext", {})
        if "privileged" in sc:
            out.append(f"{who}: `privileged` must not appear")
        caps = sc.get("capabilities", {})
        added = set(caps.get("add", []))
        if added != CAPABILITIES:
            out.append(f"{who}: capabilities added are {sorted(added)}, must be exactly {sorted(CAPABILITIES)}")
        if caps.get("drop") != ["ALL"]:
            out.append(f"{who}: capabilities must drop [ALL]")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{who}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{who}: readOnlyRootFilesystem must be true")
        if sc.get("seccompProfile", {}).get("type", pod_seccomp) != "RuntimeDefault":
            out.append(f"{who}: seccompProfile must be RuntimeDefault")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c and c in pod.get("containers", []):
                out.append(f"{who}: no {probe}")
    return out


def service_problems(svc):
    spec = svc.get("spec", {})
    out = []
    if spec.get("clusterIP") != "None":
        out.append("Service must be headless (clusterIP: None)")
    if not any(p.get("name") == "metrics" and p.get("port") == 9947 for p in spec.get("ports", [])):
        out.append("Service must expose port `metrics` 9947")
    return out


def check_file(path, rules_groups, crd_schemas):
    with open(path) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    problems = []
    kinds = {o.get("kind") for o in objs}
    for missing in sorted(REQUIRED_KINDS - kinds):
        problems.append(f"no {missing}")
    for obj in objs:
        problems += schema_problems(obj, crd_schemas)
        kind = obj.get("kind")
        if kind == "DaemonSet":
            problems += [f"DaemonSet: {p}" for p in daemonset_problems(obj)]
        elif kind == "Service":
            problems += service_problems(obj)
        elif kind == "PrometheusRule" and obj.get("spec", {}).get("groups") != rules_groups:
            problems.append("PrometheusRule differs from deploy/prometheus/rules.yaml: run `cargo xtask deploy-render`")
    return [f"{path}: {p}" for p in problems], len(objs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", required=True)
    ap.add_argument("rendered", nargs="+")
    args = ap.parse_args()
    with open(args.rules) as f:
        rules_groups = yaml.safe_load(f)["groups"]
    crd_schemas = load_crd_schemas()
    failed = False
    for path in args.rendered:
        problems, count = check_file(path, rules_groups, crd_schemas)
        for p in problems:
            print(p, file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{path}: {count} objects valid (strict, Kubernetes {KUBERNETES_VERSION}), DaemonSet locked down")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
