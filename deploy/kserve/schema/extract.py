"""Extract the openAPIV3Schema of KServe's CRDs into the JSON files beside this script.

Run from a checkout of github.com/kserve/kserve (see SOURCE.md for the commit):

    python deploy/kserve/schema/extract.py /path/to/kserve

The files are the CRDs' schemas unchanged (only re-serialized as JSON, one version each);
tests/python/test_manifests.py validates deploy/kserve/*.yaml against them.
"""

import json
import sys
from pathlib import Path

import yaml

CRDS = {
    "clusterservingruntime.v1alpha1.json": "config/crd/full/serving.kserve.io_clusterservingruntimes.yaml",
    "inferenceservice.v1beta1.json": "config/crd/full/serving.kserve.io_inferenceservices.yaml",
    "clusterstoragecontainer.v1alpha1.json": (
        "config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml"
    ),
}


def main(kserve: Path) -> None:
    here = Path(__file__).resolve().parent
    for out, crd_path in CRDS.items():
        crd = yaml.safe_load((kserve / crd_path).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        doc = {
            "x-source": f"github.com/kserve/kserve {crd_path}",
            "x-kind": crd["spec"]["names"]["kind"],
            "x-apiVersion": f"{crd['spec']['group']}/{version['name']}",
            "schema": version["schema"]["openAPIV3Schema"],
        }
        (here / out).write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
        print(out, (here / out).stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
