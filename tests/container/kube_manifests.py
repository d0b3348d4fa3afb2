"""The Kubernetes manifests in deploy/kubernetes/, checked and made runnable here.

    kube_manifests.py lint FILE...
        The sidecar semantics the manifests promise, one line per Deployment: the
        approver has startup and liveness probes on /healthz and no readiness probe; it
        runs as a non-root user with a read-only root, no privilege escalation and no
        capabilities; its keys and audit signing key are files from Secret volumes; its
        audit chain is its own (stdout, or a claim used by one replica with the Recreate
        strategy, never a volume several replicas or a surge pod would share).

    kube_manifests.py copy --out OUT --prefix P --image I --ak AK --sk SK --seed SEED
                           [--signing-key PEM] FILE...
        One loopback-only copy of the objects of every FILE that `podman kube play` (4.3) can run: every object name
        gets the prefix P; images become I; every container other than the approver
        becomes the simulator on 127.0.0.1:8080, and a Deployment without one gets it,
        so the approver's target is the simulator on the pod's own loopback; Secrets
        become ConfigMaps (podman 4.3 cannot mount Secret volumes) holding AK/SK and
        the signing key; Services are left out; container ports and probes are left out
        (podman would publish the ports on every host address, and runs an httpGet probe
        as curl in a shell). Without --signing-key the config loses its signing_key_file.
        Prints the podman volume names kube play will create for the ConfigMaps and
        claims, one per line, so the caller can remove them.

Needs PyYAML (the kubernetes-validate venv has it).
"""

import argparse
import re
import sys

import yaml

APPROVER = "vpcep-approver"
PROBE_PATH = "/healthz"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def approver_of(pod_spec):
    for c in pod_spec.get("containers", []):
        if c["name"] == APPROVER:
            return c
    return None


def config_of(docs, pod_spec, container):
    """The config.toml text mounted at /etc/vpcep-approver, and the mounts by path."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
    cm = mounts.get("/etc/vpcep-approver", {}).get("configMap", {}).get("name")
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm:
            return d["data"]["config.toml"], mounts
    raise SystemExit(f"no ConfigMap {cm!r} with config.toml mounted at /etc/vpcep-approver")


def toml_value(text, section, key):
    m = re.search(r"^\[" + re.escape(section) + r"\]\n((?:(?!\[).*\n)*)", text, re.M)
    if not m:
        return None
    v = re.search(r"^" + re.escape(key) + r'\s*=\s*"([^"]*)"', m.group(1), re.M)
    return v.group(1) if v else None


def from_secret(mounts, path):
    """True if PATH is a file inside a Secret volume mount."""
    for mount, vol in mounts.items():
        if path.startswith(mount.rstrip("/") + "/") and "secret" in vol:
            return True
    return False


def lint(files):
    problems = 0
    for path in files:
        docs = load(path)
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            name = f"{path}: deployment/{d['metadata']['name']}"
            spec = d["spec"]
            pod = spec["template"]["spec"]
            c = approver_of(pod)
            bad = []
            if c is None:
                print(f"FAILED: {name}: no container named {APPROVER}")
                problems += 1
                continue
            for probe in ("startupProbe", "livenessProbe"):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != PROBE_PATH:
                    bad.append(f"{probe} is on {got!r}, not {PROBE_PATH}")
            if "readinessProbe" in c:
                bad.append("the approver has a readinessProbe (its readiness would take the pod out of service)")
            sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                bad.append("runAsNonRoot is not set")
            if (sc.get("runAsUser") or psc.get("runAsUser") or 0) == 0:
                bad.append("no non-zero runAsUser")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append("allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad.append("readOnlyRootFilesystem is not true")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                bad.append("capabilities do not drop ALL")
            cfg, mounts = config_of(docs, pod, c)
            for section, key in (("auth", "access_key_file"), ("auth", "secret_key_file"),
                                 ("audit", "signing_key_file")):
                v = toml_value(cfg, section, key)
                if v is None or not from_secret(mounts, v):
                    bad.append(f"[{section}] {key} = {v!r} is not a file of a Secret volume")
            audit = toml_value(cfg, "audit", "path")
            replicas = spec.get("replicas", 1)
            strategy = spec.get("strategy", {}).get("type", "RollingUpdate")
            if audit == "-":
                chain = "stdout"
            else:
                vol = None
                for mount, v in mounts.items():
                    if audit and audit.startswith(mount.rstrip("/") + "/"):
                        vol = v
                if vol is None:
                    bad.append(f"[audit] path = {audit!r} is on no volume")
                    chain = "?"
                elif "persistentVolumeClaim" in vol:
                    if replicas != 1 or strategy != "Recreate":
                        bad.append(f"the audit claim would be shared ({replicas} replicas, {strategy})")
                    chain = "its own claim (1 replica, Recreate)"
                elif "emptyDir" in vol:
                    chain = "its own emptyDir"
                else:
                    bad.append(f"[audit] path = {audit!r} is on a volume that is neither a claim nor emptyDir")
                    chain = "?"
            if bad:
                problems += 1
                for b in bad:
                    print(f"FAILED: {name}: {b}")
            else:
                print(f"ok: {name}: probes on {PROBE_PATH} (startup, liveness), no readiness probe; "
                      f"non-root, read-only root, no escalation, no capabilities; keys and signing key "
                      f"from Secrets; audit chain per replica: {chain}")
    return 1 if problems else 0


def sim_container(image, seed_volume, ak, sk):
    return {
        "name": "simulator",
        "image": image,
        "args": ["simulate", "--listen", "127.0.0.1:8080", "--seed", "/seed/seed.json",
                 "--ak", ak, "--sk", sk],
        "volumeMounts": [{"name": seed_volume, "mountPath": "/seed", "readOnly": True}],
    }


def copy(a):
    docs = [d for f in a.files for d in load(f)]
    p = a.prefix
    volumes_made = []
    out = []
    seed_cm = f"{p}-seed"
    with open(a.seed, encoding="utf-8") as f:
        seed = f.read()
    out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": seed_cm},
                "data": {"seed.json": seed}})
    volumes_made.append(seed_cm)
    for d in docs:
        kind = d["kind"]
        d["metadata"]["name"] = f"{p}-{d['metadata']['name']}"
        if kind == "Service":
            continue
        if kind == "Secret":
            data = dict(d.get("stringData", {}))
            for k in list(data):
                if k == "ak":
                    data[k] = a.ak
                elif k == "sk":
                    data[k] = a.sk
                elif k.endswith(".pem"):
                    data[k] = a.signing_key_pem or "unused"
            d = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": d["metadata"], "data": data}
            volumes_made.append(d["metadata"]["name"])
        elif kind == "ConfigMap":
            volumes_made.append(d["metadata"]["name"])
            if "config.toml" in d["data"]:
                cfg = d["data"]["config.toml"]
                cfg = cfg.replace("[[target]]\n", "[[target]]\nname = \"ci\"\n"
                                  "vpcep_endpoint = \"http://127.0.0.1:8080\"\n"
                                  "iam_endpoint = \"http://127.0.0.1:8080\"\n", 1)
                cfg = re.sub(r"^\[policy\]\n", "[poll]\ninterval = \"2s\"\njitter = \"0s\"\n\n[policy]\n",
                             cfg, count=1, flags=re.M)
                if not a.signing_key_pem:
                    cfg = re.sub(r"^signing_key_file\s*=.*\n", "", cfg, flags=re.M)
                d["data"]["config.toml"] = cfg
        elif kind == "PersistentVolumeClaim":
            volumes_made.append(d["metadata"]["name"])
        elif kind == "Deployment":
            pod = d["spec"]["template"]["spec"]
            has_sim = False
            containers = []
            for c in pod["containers"]:
                if c["name"] == APPROVER:
                    c["image"] = a.image
                    containers.append(c)
                elif not has_sim:
                    containers.append(sim_container(a.image, "ci-seed", a.ak, a.sk))
                    has_sim = True
            if not has_sim:
                containers.append(sim_container(a.image, "ci-seed", a.ak, a.sk))
            for c in containers:
                # podman 4.3 publishes every containerPort on 0.0.0.0 of the host: no ports
                # (the pod's containers still reach each other on its loopback). It turns an
                # httpGet probe into a healthcheck that runs curl through a shell, which the
                # image rightly lacks: no probes (the caller sends their GETs itself).
                c.pop("ports", None)
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    c.pop(probe, None)
            pod["containers"] = containers
            for v in pod.get("volumes", []):
                if "configMap" in v:
                    v["configMap"]["name"] = f"{p}-{v['configMap']['name']}"
                    v["configMap"].pop("defaultMode", None)
                elif "secret" in v:
                    v["configMap"] = {"name": f"{p}-{v.pop('secret')['secretName']}"}
                elif "persistentVolumeClaim" in v:
                    v["persistentVolumeClaim"]["claimName"] = f"{p}-{v['persistentVolumeClaim']['claimName']}"
            pod.setdefault("volumes", []).append({"name": "ci-seed", "configMap": {"name": seed_cm}})
        out.append(d)
    with open(a.out, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(out, f, sort_keys=False)
    for v in volumes_made:
        print(v)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("lint")
    lp.add_argument("files", nargs="+")
    cp = sub.add_parser("copy")
    cp.add_argument("files", nargs="+")
    cp.add_argument("--out", required=True)
    cp.add_argument("--prefix", required=True)
    cp.add_argument("--image", required=True)
    cp.add_argument("--ak", required=True)
    cp.add_argument("--sk", required=True)
    cp.add_argument("--seed", required=True)
    cp.add_argument("--signing-key")
    a = ap.parse_args()
    if a.cmd == "lint":
        return lint(a.files)
    a.signing_key_pem = None
    if a.signing_key:
        with open(a.signing_key, encoding="utf-8") as f:
            a.signing_key_pem = f.read()
    return copy(a)


if __name__ == "__main__":
    sys.exit(main())
