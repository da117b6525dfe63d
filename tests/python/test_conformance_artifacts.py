"""Issue 12, artifacts: regserve answers as a real `mlflow server` does (the `pair` fixture runs
both side by side) — download headers (item 2) and the artifact endpoints of the tracking API and
the UI (item 9): `artifacts/list`, `get-artifact`, `model-versions/get-artifact`,
`upload-artifact`, `logged-models/{id}/artifacts/{directories,files}`.
"""

import urllib.parse

import pytest
import requests

from conftest import error_code

PROXY = "/api/2.0/mlflow-artifacts/artifacts/"

# File names an artifact folder may hold, with MLflow's quirks: `MLmodel` and `mlproject` are
# text without an extension, `MLproject` (MLflow spells it `mlproject`) is not.
NAMES = [
    "MLmodel", "MLproject", "mlproject", "model.onnx", "conda.yaml", "python_env.yaml", "requirements.txt",
    "input_example.json", "serving_input_example.json", "a.png", "r.pdf", "x.jpg", "x.jpeg", "x.gif", "x.svg",
    "x.html", "x.htm", "x.zip", "x.TXT", "x.js", "x.ipynb", "x.md", "x.csv", "x.tsv", "x.xml", "x.log",
    "x.pkl", "x.npy", "x.pb", "x.parquet", "x.pt", "x.bin", "noext", "x.mp4", "x.wav", "x.css",
]
# Where the extension tables differ (Python's `mimetypes`, which also reads the host's
# /etc/mime.types, vs the `mime_guess` crate): what regserve sends. See docs/mlflow-compatibility.md.
TABLE_DIFFERS = {
    "x.parquet": "application/vnd.apache.parquet",  # MLflow: application/octet-stream
    "x.wav": "audio/wav",  # MLflow: audio/x-wav
    "x.pt": "application/octet-stream",  # MLflow: application/vnd.snesdev-page-table (from /etc/mime.types)
}
# Names an uploader chooses: quotes, spaces, non-ASCII, header syntax.
HOSTILE = ["weird name.txt", 'q"uote.bin', "日本語.csv", "ä.bin", "semi;colon=x.txt", "日本"]


def new_run(url):
    r = requests.post(url + "/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}, timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()["run"]["info"]
    return info["run_id"], info["artifact_uri"].split(":", 1)[1].lstrip("/")


def put(url, rel, data):
    r = requests.put(url + PROXY + urllib.parse.quote(rel), data=data, timeout=30)
    assert r.status_code == 200, (rel, r.text)


@pytest.fixture(scope="module")
def runs(pair):
    """A run on each server, with the same files uploaded through the artifact proxy."""
    out = {}
    for side, url in (("ref", pair.ref_url), ("ours", pair.our_url)):
        run_id, base = new_run(url)
        for name in NAMES + HOSTILE:
            put(url, f"{base}/{name}", b"hello " + name.encode())
        put(url, f"{base}/sub/MLmodel", b"flavors: {}\n")
        out[side] = (run_id, base)
    return out


def attachment_headers(resp):
    return {k: resp.headers.get(k) for k in ("Content-Type", "Content-Disposition", "X-Content-Type-Options")}


# --- item 2: downloads through the proxy carry MLflow's headers ---------------------------------


@pytest.mark.parametrize("name", NAMES + HOSTILE)
def test_proxy_download_headers_match_mlflow(pair, runs, name):
    (_, ref_base), (_, our_base) = runs["ref"], runs["ours"]
    q = urllib.parse.quote(name)
    ref = requests.get(pair.ref_url + PROXY + f"{ref_base}/{q}", timeout=30)
    ours = requests.get(pair.our_url + PROXY + f"{our_base}/{q}", timeout=30)
    assert ref.status_code == ours.status_code == 200, (ref.text, ours.text)
    assert ours.content == ref.content
    want, got = attachment_headers(ref), attachment_headers(ours)
    if name in TABLE_DIFFERS:
        assert got.pop("Content-Type") == TABLE_DIFFERS[name]
        want.pop("Content-Type")
    assert got == want, name


def test_a_file_name_cannot_inject_headers(pair, server):
    """MLflow stores a control character escaped (`a%0ab`); regserve refuses the name (400), and
    a name with CR/LF already on disk is still sent with the header quoted and encoded."""
    _, base = new_run(pair.our_url)
    r = requests.put(pair.our_url + PROXY + f"{base}/a%0D%0ASet-Cookie:%20x=1.txt", data=b"x", timeout=30)
    assert r.status_code == 400 and error_code(r) == "INVALID_PARAMETER_VALUE", r.text
    # Put one there behind the server's back.
    folder = server.data_dir / "artifacts" / base
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a\r\nSet-Cookie: x=1.txt").write_bytes(b"x")
    r = requests.get(pair.our_url + PROXY + f"{base}/a%0D%0ASet-Cookie:%20x=1.txt", timeout=30)
    assert r.status_code == 200, r.text
    assert "Set-Cookie" not in r.headers and not r.cookies
    assert r.headers["Content-Disposition"] == (
        "attachment; filename=\"aSet-Cookie: x=1.txt\"; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1.txt"
    )
    assert r.headers["X-Content-Type-Options"] == "nosniff"
