"""Every manifest under deploy/, validated offline, and checked for consistency.

- Kubernetes resources: `kubernetes-validate` (PyPI) against the Kubernetes 1.34 OpenAPI schemas
  it ships, strict (an unknown field is an error, as `kubectl apply`'s default strict field
  validation makes it).
- KServe resources: KServe's CRD schemas vendored in deploy/kserve/schema/ (SOURCE.md), with
  `jsonschema`; strict too: every object that lists its properties refuses others (the API
  server would prune them silently, which hides typos).
- kustomization.yaml: built with `kubectl kustomize` (scripts/test installs Debian's
  `kubernetes-client` when no kubectl is there), and resolved by a small resolver here (every
  listed file exists and parses, no resource twice) — the resolver runs everywhere.
- The negative tests break a manifest (a wrong field type, an unknown field) and check that each
  validator refuses it, so the passing tests cannot pass vacuously.
- Consistency: selectors, named ports, probes, the HPA's metric and the adapter rule, Secret
  keys, the shutdown timing (preStop + --shutdown-grace < terminationGracePeriodSeconds), the
  uid of the Dockerfile, KServe's container name and port order.
"""

import copy
import json
import pathlib
import re
import shutil
import subprocess
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KSERVE_SCHEMAS = DEPLOY / "kserve" / "schema"
# The Kubernetes version the manifests are written for (preStop `sleep` needs >= 1.30).
K8S_VERSION = "1.34.0"

KSERVE_GROUP = "serving.kserve.io/"


def yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents(under=DEPLOY):
    return [(p, d) for p in yaml_files() if p.is_relative_to(under) for d in documents(p)]


def by_kind(kind, name=None, under=DEPLOY):
    found = [
        d
        for _, d in all_documents(under)
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert found, f"no {kind} {name or ''} under {under}"
    return found


def one(kind, name=None, under=DEPLOY):
    """The one resource of that kind (and name) under `under` (deploy/kubernetes or
    deploy/kserve: both have a Secret `regserve-registry`)."""
    (doc,) = by_kind(kind, name, under)
    return doc


K8S = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"


# ---------------------------------------------------------------------------------------------
# KServe: the vendored CRD schemas, made strict


def strict(schema):
    """A copy of a CRD schema where an object listing its properties refuses unknown ones
    (unless it says `x-kubernetes-preserve-unknown-fields`)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def kserve_schemas():
    out = {}
    for path in KSERVE_SCHEMAS.glob("*.json"):
        doc = json.loads(path.read_text())
        out[(doc["x-apiVersion"], doc["x-kind"])] = strict(doc["schema"])
    return out


SCHEMAS = kserve_schemas()


def validate_kserve(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    assert key in SCHEMAS, f"no vendored KServe schema for {key}; have {sorted(SCHEMAS)}"
    # The metadata the CRD leaves open is a Kubernetes ObjectMeta.
    jsonschema.validate(doc, SCHEMAS[key], cls=jsonschema.Draft7Validator)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]


def validate_k8s(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def validate(doc):
    if doc["apiVersion"].startswith(KSERVE_GROUP):
        validate_kserve(doc)
    else:
        validate_k8s(doc)


# ---------------------------------------------------------------------------------------------
# Every YAML file under deploy/


def test_the_vendored_kserve_schemas_are_there():
    assert set(SCHEMAS) == {
        ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("serving.kserve.io/v1alpha1", "ClusterStorageContainer"),
    }
    source = (KSERVE_SCHEMAS / "SOURCE.md").read_text()
    assert re.search(r"commit `[0-9a-f]{40}`", source) and "Apache License 2.0" in source
    assert (KSERVE_SCHEMAS / "LICENSE").read_text().lstrip().startswith("Apache License")


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid(path):
    docs = documents(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        if doc.get("kind") == "Kustomization":
            resolve_kustomization(path.parent)
            continue
        validate(doc)


def test_every_kind_under_deploy_was_validated_by_a_schema():
    kinds = {(d["apiVersion"], d["kind"]) for _, d in all_documents()}
    for api_version, kind in kinds:
        if kind == "Kustomization":
            continue
        if api_version.startswith(KSERVE_GROUP):
            assert (api_version, kind) in SCHEMAS
        else:
            # kubernetes_validate raises SchemaNotFoundError for a kind it has no schema of;
            # an empty object of the kind must fail on its missing or wrong fields instead.
            try:
                kubernetes_validate.validate({"apiVersion": api_version, "kind": kind, "metadata": {"name": 5}},
                                             K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError:
                pass
            else:
                pytest.fail(f"{api_version} {kind}: a metadata.name of 5 passed, so nothing was checked")


# ---------------------------------------------------------------------------------------------
# The validators do refuse broken manifests


def test_kubernetes_validate_refuses_a_wrong_type_and_an_unknown_field():
    good = one("Deployment", "regserve")
    validate_k8s(good)
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight-thousand"
    with pytest.raises(kubernetes_validate.ValidationError, match="containerPort|eight-thousand"):
        validate_k8s(bad)
    bad = copy.deepcopy(good)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(bad)
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = bad["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        validate_k8s(bad)
    hpa = copy.deepcopy(one("HorizontalPodAutoscaler"))
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = {"value": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(hpa)


def test_the_kserve_schemas_refuse_a_wrong_type_and_an_unknown_field():
    runtime = one("ClusterServingRuntime")
    validate_kserve(runtime)
    bad = copy.deepcopy(runtime)
    bad["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    with pytest.raises(jsonschema.ValidationError, match="'yes' is not of type 'boolean'"):
        validate_kserve(bad)
    bad = copy.deepcopy(runtime)
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(runtime)
    bad["spec"]["protocolVersion"] = ["v2"]  # the field is protocolVersions
    with pytest.raises(jsonschema.ValidationError, match="protocolVersion"):
        validate_kserve(bad)

    isvc = one("InferenceService")
    validate_kserve(isvc)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["model"]["storageURI"] = bad["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        validate_kserve(bad)

    csc = one("ClusterStorageContainer")
    validate_kserve(csc)
    bad = copy.deepcopy(csc)
    bad["spec"]["supportedUriFormats"] = "models:/"
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(csc)
    bad["spec"]["container"]["command"] = "regserve pull"
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)


# ---------------------------------------------------------------------------------------------
# kustomize


def resolve_kustomization(directory):
    """The resources a kustomization lists: every file exists, parses, and no resource (kind,
    name) appears twice. Returns the documents."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    allowed = {"apiVersion", "kind", "resources", "images"}
    assert set(k) <= allowed, f"keys beyond what the resolver checks: {set(k) - allowed}"
    docs = []
    for entry in k["resources"]:
        path = directory / entry
        assert path.is_file(), f"{directory}/kustomization.yaml lists {entry}, which does not exist"
        docs += documents(path)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), names
    for image in k.get("images", []):
        assert any(
            c["image"].split(":")[0] == image["name"]
            for d in docs
            for c in containers_of(d)
        ), f"images: {image['name']} matches no container"
    return docs


def kustomize_dirs():
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def containers_of(doc):
    spec = doc.get("spec", {})
    if doc["kind"] == "Deployment":
        return spec["template"]["spec"]["containers"]
    if doc["kind"] == "ClusterServingRuntime":
        return spec["containers"]
    if doc["kind"] == "ClusterStorageContainer":
        return [spec["container"]]
    return []


@pytest.mark.parametrize("directory", kustomize_dirs(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomize_build(directory):
    """`kubectl kustomize` builds each kustomization, and gives the resources it lists (with the
    image rewritten), each valid."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: scripts/test installs Debian's kubernetes-client package"
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    listed = resolve_kustomization(directory)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in listed
    )
    for doc in built:
        validate(doc)
        for c in containers_of(doc):
            assert c["image"] == "regserve:latest", c["image"]


def test_the_resolver_catches_a_missing_file(tmp_path):
    for path in (DEPLOY / "kubernetes").glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    resolve_kustomization(tmp_path)
    (tmp_path / "serve-hpa.yaml").unlink()
    with pytest.raises(AssertionError, match="serve-hpa.yaml"):
        resolve_kustomization(tmp_path)


# ---------------------------------------------------------------------------------------------
# Consistency of the serve manifests


def serve_container():
    dep = one("Deployment", "regserve")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def config_file(deployment, container):
    """(path, parsed TOML) of the file given to --config, from the ConfigMap mounted there."""
    args = container["args"]
    path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for m in container["volumeMounts"]:
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            key = path[len(m["mountPath"].rstrip("/")) + 1 :]
            cm = one("ConfigMap", volumes[m["name"]]["configMap"]["name"], K8S)
            return path, tomllib.loads(cm["data"][key])
    pytest.fail(f"--config {path} is not under a mounted volume")


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    assert m, text
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60}[m.group(2)]


@pytest.mark.parametrize("name", ["regserve", "regserve-server"])
def test_selectors_ports_and_probes_agree(name):
    dep = one("Deployment", name)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc = one("Service", name)
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports, p
    pdb = one("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ports
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"
    # Secret keys exist.
    for env in c["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in one("Secret", ref["name"], K8S)["stringData"], ref
    for v in dep["spec"]["template"]["spec"]["volumes"]:
        if "secret" in v:
            secret = one("Secret", v["secret"]["secretName"], K8S)
            assert all(i["key"] in secret["stringData"] for i in v["secret"]["items"])


def test_serve_deployment_as_the_issue_asks():
    dep, c = serve_container()
    pod = dep["spec"]["template"]["spec"]
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in c["env"]}
    # The data dir (download cache) is a writable emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["REGSERVE_DATA_DIR"]["value"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env["ORT_DYLIB_PATH"]["value"] == re.search(r"ORT_DYLIB_PATH=(\S+)", dockerfile).group(1)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "regserve-registry"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120

    _, config = config_file(dep, c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert config["port"] == ports["http"] == 8080
    # The image's ENV (REGSERVE_PORT=5000, REGSERVE_HOST) beats the file: the container must
    # override what differs from the file.
    image_env = dict(re.findall(r"(REGSERVE_\w+)=(\S+)", dockerfile))
    for var, key in (("REGSERVE_PORT", "port"), ("REGSERVE_HOST", "host")):
        effective = env[var]["value"] if var in env else image_env.get(var)
        assert effective is None or effective == str(config[key]), (var, effective, config[key])
    assert config["grpc_port"] == ports["grpc"] == 8081
    assert config["host"] == "0.0.0.0"
    assert all(u.startswith("models:/") for u in config["model"])
    # SIGTERM comes after the preStop sleep; the drain must end before the kill.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = duration_s(config["shutdown_grace"])
    assert pre_stop >= 5, "endpoints need a few seconds to drop the pod everywhere"
    assert pre_stop + grace < pod["terminationGracePeriodSeconds"]
    svc = one("Service", "regserve")
    assert {p["name"]: p.get("appProtocol") for p in svc["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}


def test_the_hpa_scales_the_serve_deployment_on_the_adapter_rule():
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "regserve"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "regserve_saturation"
    adapter = one("ConfigMap", "prometheus-adapter")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == "regserve_saturation"]
    assert re.fullmatch(rule["name"]["matches"], "regserve_saturation")
    assert rule["seriesQuery"].startswith("regserve_saturation{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # The same rule is quoted in the HPA's comment.
    assert rule["metricsQuery"] in (DEPLOY / "kubernetes" / "serve-hpa.yaml").read_text()


def test_server_deployment_is_stateless_on_postgres_and_a_bucket():
    dep = one("Deployment", "regserve-server")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    _, config = config_file(dep, c)
    assert config["artifacts_destination"].startswith("s3://")
    assert config["port"] == 5000 and config["host"] == "0.0.0.0"
    env = {e["name"]: e for e in c["env"]}
    assert env["REGSERVE_HOST"]["value"] == "0.0.0.0"
    ref = env["REGSERVE_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert one("Secret", ref["name"], K8S)["stringData"][ref["key"]].startswith("postgresql://")
    assert dep["spec"]["replicas"] >= 2
    assert not any("persistentVolumeClaim" in v for v in dep["spec"]["template"]["spec"]["volumes"])
    token_mount = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(pathlib.PurePosixPath(config["auth_token_file"]).parent) in token_mount


# ---------------------------------------------------------------------------------------------
# KServe


def test_the_kserve_runtime_follows_kserve_conventions():
    runtime = one("ClusterServingRuntime")
    (c,) = runtime["spec"]["containers"]
    assert c["name"] == "kserve-container"
    assert c["args"][0] == "serve"
    assert set(c["args"][1:]) == {
        "--model_name={{.Name}}",
        "--model_dir=/mnt/models",
        "--http_port=8080",
        "--grpc_port=8081",
    }
    # HTTP first (KServe routes the Service's port 80 to the first port), gRPC second, named so
    # that KServe gives it appProtocol kubernetes.io/h2c.
    http, grpc = c["ports"]
    assert http["containerPort"] == 8080 and grpc["containerPort"] == 8081
    assert "grpc" in grpc["name"] or "h2c" in grpc["name"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"] if f["autoSelect"]}
    assert formats == {"onnx", "mlflow"}
    assert runtime["spec"]["protocolVersions"] == ["v1", "v2", "grpc-v2"]

    isvc = one("InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert re.fullmatch(r"models:/[\w.-]+@[\w-]+", model["storageUri"])

    csc = one("ClusterStorageContainer")
    prefixes = [f["prefix"] for f in csc["spec"]["supportedUriFormats"]]
    assert any(model["storageUri"].startswith(p) for p in prefixes)
    assert csc["spec"]["container"]["command"] == ["regserve", "pull"]
    assert csc["spec"]["workloadType"] == "initContainer"
    secret = one("Secret", "regserve-registry", KSERVE)
    for e in csc["spec"]["container"]["env"] + c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "regserve-registry" and ref["key"] in secret["stringData"]
