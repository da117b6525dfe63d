"""Issue 12, artifacts: regserve answers as a real `mlflow server` does (the `pair` fixture runs
both side by side) — download headers (item 2) and the artifact endpoints of the tracking API and
the UI (item 9): `artifacts/list`, `get-artifact`, `model-versions/get-artifact`,
`upload-artifact`, `logged-models/{id}/artifacts/{directories,files}`.
"""

import pathlib
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


# --- item 9: the tracking API's and the UI's artifact endpoints ---------------------------------


def same(pair, method, path, ref_params, our_params, **kw):
    """The call on both (each with its own ids); same status and error_code; (ref, ours)."""
    ref = requests.request(method, pair.ref_url + path, params=ref_params, timeout=60, **kw)
    ours = requests.request(method, pair.our_url + path, params=our_params, timeout=60, **kw)
    assert ours.status_code == ref.status_code, (path, ref_params, ref.text[:300], ours.text[:300])
    if ref.status_code >= 400 and error_code(ref) is not None:
        assert error_code(ours) == error_code(ref), (path, ref.text, ours.text)
    return ref, ours


def files_of(resp):
    return resp.json().get("files", [])


LIST_CASES = [
    {},  # the root
    {"path": "sub"},
    {"path": "sub/"},
    {"path": ""},
    {"path": "nope"},  # a missing folder lists as nothing
    {"path": "MLmodel"},  # so does a file
    {"path": "../x"},
    {"path": "%2e%2e/x"},
    {"path": "/etc"},
    {"path": "a#b"},
]


@pytest.mark.parametrize("prefix", ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"])
@pytest.mark.parametrize("case", LIST_CASES)
def test_artifacts_list_matches_mlflow(pair, runs, prefix, case):
    (ref_run, ref_base), (our_run, our_base) = runs["ref"], runs["ours"]
    ref, ours = same(pair, "GET", prefix + "/artifacts/list", {"run_id": ref_run, **case}, {"run_id": our_run, **case})
    if ref.status_code == 200:
        assert ours.json()["root_uri"] == "mlflow-artifacts:/" + our_base
        assert ref.json()["root_uri"] == "mlflow-artifacts:/" + ref_base
        assert files_of(ours) == files_of(ref)
        assert "next_page_token" not in ours.json()


def test_artifacts_list_errors_match_mlflow(pair, runs):
    (_, _), (our_run, _) = runs["ref"], runs["ours"]
    same(pair, "GET", "/api/2.0/mlflow/artifacts/list", {"run_id": "nope"}, {"run_id": "nope"})
    same(pair, "GET", "/api/2.0/mlflow/artifacts/list", {}, {})
    ref, ours = same(pair, "GET", "/api/2.0/mlflow/artifacts/list", {"run_uuid": runs["ref"][0]}, {"run_uuid": our_run})
    assert files_of(ours) == files_of(ref) != []
    # MLflow takes the listing as a GET only.
    same(pair, "POST", "/api/2.0/mlflow/artifacts/list", {"run_id": runs["ref"][0]}, {"run_id": our_run}, json={})


def test_artifacts_list_is_paged(pair, server):
    """MLflow answers a whole folder at once; regserve at most 1000 entries an answer, with a
    next_page_token, the pages together being the folder in name order."""
    run_id, base = new_run(pair.our_url)
    folder = server.data_dir / "artifacts" / base / "many"
    folder.mkdir(parents=True)
    names = sorted(f"f{i:05d}.txt" for i in range(1234))
    for n in names:
        (folder / n).write_bytes(b"x")
    (folder / ".hidden.upload-1").write_bytes(b"x")
    seen, token, pages = [], None, 0
    while pages < 10:
        params = {"run_id": run_id, "path": "many"}
        if token:
            params["page_token"] = token
        r = requests.get(pair.our_url + "/api/2.0/mlflow/artifacts/list", params=params, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["files"]) <= 1000
        seen += [f["path"] for f in body["files"]]
        pages += 1
        token = body.get("next_page_token")
        if not token:
            break
    assert pages == 2
    assert seen == [f"many/{n}" for n in names]
    r = requests.get(pair.our_url + "/api/2.0/mlflow/artifacts/list",
                     params={"run_id": run_id, "page_token": "garbage"}, timeout=60)
    assert r.status_code == 400 and error_code(r) == "INVALID_PARAMETER_VALUE", r.text


GET_CASES = [
    {"path": "MLmodel"},
    {"path": "sub/MLmodel"},
    {"path": "a.png"},
    {"path": "日本語.csv"},
    {"path": "weird name.txt"},
    {"path": "sub"},
    {"path": ""},
    {"path": "nope.txt"},
    {"path": "../x"},
    {"path": "a#b"},
    {"path": "/etc/passwd"},
    {"path": "%2e%2e/%2e%2e/x"},
    {"path": "file:///etc/passwd"},
]


@pytest.mark.parametrize("case", GET_CASES)
def test_get_artifact_matches_mlflow(pair, runs, case):
    (ref_run, _), (our_run, _) = runs["ref"], runs["ours"]
    for key in ("run_id", "run_uuid"):
        ref, ours = same(pair, "GET", "/get-artifact", {key: ref_run, **case}, {key: our_run, **case})
        if ref.status_code == 200:
            assert ours.content == ref.content
            assert attachment_headers(ours) == attachment_headers(ref)


def test_get_artifact_errors(pair, runs):
    (ref_run, _), (our_run, _) = runs["ref"], runs["ours"]
    same(pair, "GET", "/get-artifact", {"run_id": "nope", "path": "MLmodel"}, {"run_id": "nope", "path": "MLmodel"})
    # No path: MLflow answers an HTML 400; regserve a JSON one.
    ref, ours = same(pair, "GET", "/get-artifact", {"run_id": ref_run}, {"run_id": our_run})
    assert error_code(ours) == "INVALID_PARAMETER_VALUE"
    # No run id: MLflow looks up the run "None" (404); regserve says the parameter is missing (400).
    r = requests.get(pair.our_url + "/get-artifact", params={"path": "MLmodel"}, timeout=30)
    assert r.status_code == 400 and "run_id" in r.json()["message"], r.text
    same(pair, "POST", "/get-artifact", {"run_id": ref_run, "path": "MLmodel"}, {"run_id": our_run, "path": "MLmodel"})


def make_logged_model(url, files):
    r = requests.post(url + "/api/2.0/mlflow/logged-models", json={"experiment_id": "0", "name": "m"}, timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()["model"]["info"]
    base = info["artifact_uri"].split(":", 1)[1].lstrip("/")
    for rel, data in files.items():
        put(url, f"{base}/{rel}", data)
    return info["model_id"], base


MODEL_FILES = {"MLmodel": b"flavors: {}\n", "model.bin": b"\x00\x01", "sub/a.json": b"{}", "sub/deeper/b.txt": b"b"}


@pytest.fixture(scope="module")
def models(pair):
    """A logged model on each server with the same files, finalized, and registered as version 1
    of a model of the same name."""
    out = {}
    name = "art-conformance"
    for side, url in (("ref", pair.ref_url), ("ours", pair.our_url)):
        model_id, base = make_logged_model(url, MODEL_FILES)
        r = requests.patch(url + f"/api/2.0/mlflow/logged-models/{model_id}",
                           json={"model_id": model_id, "status": "LOGGED_MODEL_READY"}, timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post(url + "/api/2.0/mlflow/registered-models/create", json={"name": name}, timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post(url + "/api/2.0/mlflow/model-versions/create",
                          json={"name": name, "source": f"models:/{model_id}", "model_id": model_id}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"]["version"] == "1"
        out[side] = (model_id, base)
    out["name"] = name
    return out


MV_CASES = [
    {"version": "1", "path": "MLmodel"},
    {"version": "1", "path": "sub/a.json"},
    {"version": "1", "path": "sub"},
    {"version": "1", "path": "nope"},
    {"version": "1", "path": "../../x"},
    {"version": "9", "path": "MLmodel"},
    {"version": "x", "path": "MLmodel"},
]


@pytest.mark.parametrize("case", MV_CASES)
def test_model_version_get_artifact_matches_mlflow(pair, models, case):
    params = {"name": models["name"], **case}
    ref, ours = same(pair, "GET", "/model-versions/get-artifact", params, params)
    if ref.status_code == 200:
        assert ours.content == ref.content
        assert attachment_headers(ours) == attachment_headers(ref)


def test_model_version_get_artifact_errors(pair, models):
    same(pair, "GET", "/model-versions/get-artifact", {"name": "nope", "version": "1", "path": "MLmodel"},
         {"name": "nope", "version": "1", "path": "MLmodel"})
    same(pair, "GET", "/model-versions/get-artifact", {"version": "1", "path": "MLmodel"},
         {"version": "1", "path": "MLmodel"})
    # No version: MLflow fails with a 500 (int(None)); regserve says it is missing (400).
    r = requests.get(pair.our_url + "/model-versions/get-artifact",
                     params={"name": models["name"], "path": "MLmodel"}, timeout=30)
    assert r.status_code == 400 and error_code(r) == "INVALID_PARAMETER_VALUE", r.text


@pytest.mark.parametrize("prefix", ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"])
@pytest.mark.parametrize("case", [{}, {"artifact_directory_path": "sub"}, {"artifact_directory_path": "sub/deeper"},
                                  {"artifact_directory_path": "nope"}, {"artifact_directory_path": "MLmodel"},
                                  {"artifact_directory_path": "../x"}])
def test_logged_model_directories_match_mlflow(pair, models, prefix, case):
    (ref_id, ref_base), (our_id, our_base) = models["ref"], models["ours"]
    ref = requests.get(pair.ref_url + f"{prefix}/logged-models/{ref_id}/artifacts/directories", params=case, timeout=30)
    ours = requests.get(pair.our_url + f"{prefix}/logged-models/{our_id}/artifacts/directories", params=case, timeout=30)
    assert ours.status_code == ref.status_code, (ref.text, ours.text)
    if ref.status_code == 200:
        assert ours.json()["root_uri"] == "mlflow-artifacts:/" + our_base
        assert files_of(ours) == files_of(ref)
    else:
        assert error_code(ours) == error_code(ref)


def test_logged_model_directories_unknown_model(pair):
    same(pair, "GET", "/api/2.0/mlflow/logged-models/m-nope/artifacts/directories", {}, {})


@pytest.mark.parametrize("case", [{"artifact_file_path": "MLmodel"}, {"artifact_file_path": "sub/a.json"}, {},
                                  {"artifact_file_path": "sub"}, {"artifact_file_path": "../x"},
                                  {"artifact_file_path": "nope"}])
def test_logged_model_files_match_mlflow(pair, models, case):
    (ref_id, _), (our_id, _) = models["ref"], models["ours"]
    for prefix in ("/ajax-api/2.0/mlflow", "/api/2.0/mlflow"):  # the UI's route: /ajax-api only
        ref = requests.get(pair.ref_url + f"{prefix}/logged-models/{ref_id}/artifacts/files", params=case, timeout=30)
        ours = requests.get(pair.our_url + f"{prefix}/logged-models/{our_id}/artifacts/files", params=case, timeout=30)
        assert ours.status_code == ref.status_code, (prefix, case, ref.text[:200], ours.text[:200])
        if ref.status_code == 200:
            assert ours.content == ref.content
            assert attachment_headers(ours) == attachment_headers(ref)
        elif error_code(ref) is not None:
            assert error_code(ours) == error_code(ref), (ref.text, ours.text)
    same(pair, "GET", "/ajax-api/2.0/mlflow/logged-models/m-nope/artifacts/files", {"artifact_file_path": "MLmodel"},
         {"artifact_file_path": "MLmodel"})


UPLOAD = "/ajax-api/2.0/mlflow/upload-artifact"


def test_upload_artifact_matches_mlflow(pair):
    (ref_run, _), (our_run, _) = new_run(pair.ref_url), new_run(pair.our_url)
    ok = [("up/x.txt", b"hello", {"Content-Type": "text/plain"}), ("up/y.bin", b"\x00\x01", {}),
          ("up/x.txt", b"again", {}), ("z.json", b'{"a": 1}', {"Content-Type": "application/json"})]
    for path, data, headers in ok:
        ref, ours = same(pair, "POST", UPLOAD, {"run_uuid": ref_run, "path": path}, {"run_uuid": our_run, "path": path},
                         data=data, headers=headers)
        assert ref.status_code == 200
    for path in ("up/x.txt", "up/y.bin", "z.json"):
        ref, ours = same(pair, "GET", "/get-artifact", {"run_id": ref_run, "path": path}, {"run_id": our_run, "path": path})
        assert ours.content == ref.content
    ref, ours = same(pair, "GET", "/api/2.0/mlflow/artifacts/list", {"run_id": ref_run, "path": "up"},
                     {"run_id": our_run, "path": "up"})
    assert files_of(ours) == files_of(ref)
    bad = [({"run_uuid": "RUN"}, b"x"), ({"path": "a.txt"}, b"x"), ({"run_id": "RUN", "path": "a.txt"}, b"x"),
           ({"run_uuid": "RUN", "path": "e.txt"}, b""), ({"run_uuid": "nope", "path": "e.txt"}, b"x"),
           ({"run_uuid": "RUN", "path": "../e.txt"}, b"x"), ({"run_uuid": "RUN", "path": "a#b"}, b"x"),
           ({"run_uuid": "RUN", "path": "big.bin"}, b"x" * (10 * 1024 * 1024 + 1))]
    for params, data in bad:
        fill = lambda run: {k: (run if v == "RUN" else v) for k, v in params.items()}  # noqa: E731
        same(pair, "POST", UPLOAD, fill(ref_run), fill(our_run), data=data)
    same(pair, "GET", UPLOAD, {"run_uuid": ref_run, "path": "a"}, {"run_uuid": our_run, "path": "a"})
    same(pair, "POST", "/api/2.0/mlflow/upload-artifact", {"run_uuid": ref_run, "path": "a"},
         {"run_uuid": our_run, "path": "a"}, data=b"x")


def test_upload_artifact_is_bounded_and_atomic(pair):
    """A body over 10 MB sent without a Content-Length is cut at the limit (400), and the file
    it would have replaced is untouched; no temporary file is left to list."""
    run_id, _ = new_run(pair.our_url)
    r = requests.post(pair.our_url + UPLOAD, params={"run_uuid": run_id, "path": "m.bin"}, data=b"first", timeout=30)
    assert r.status_code == 200, r.text

    def chunks():
        for _ in range(11):
            yield b"y" * (1024 * 1024)

    r = requests.post(pair.our_url + UPLOAD, params={"run_uuid": run_id, "path": "m.bin"}, data=chunks(), timeout=60)
    assert r.status_code == 400 and "10MB" in r.json()["message"], r.text
    r = requests.get(pair.our_url + "/get-artifact", params={"run_id": run_id, "path": "m.bin"}, timeout=30)
    assert r.content == b"first"
    r = requests.get(pair.our_url + "/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}, timeout=30)
    assert [f["path"] for f in files_of(r)] == ["m.bin"]
    # A name with a line break is refused rather than stored.
    r = requests.post(pair.our_url + UPLOAD, params={"run_uuid": run_id, "path": "a\r\nb.txt"}, data=b"x", timeout=30)
    assert r.status_code == 400 and error_code(r) == "INVALID_PARAMETER_VALUE", r.text


def test_upload_artifact_from_another_site_is_refused(pair):
    """The upload takes any body (a cross-site page can POST text/plain without a preflight):
    the same-origin rule refuses it, and nothing is written."""
    run_id, _ = new_run(pair.our_url)
    r = requests.post(pair.our_url + UPLOAD, params={"run_uuid": run_id, "path": "evil.html"}, data=b"<script>",
                      headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(pair.our_url + "/get-artifact", params={"run_id": run_id, "path": "evil.html"}, timeout=30)
    assert r.status_code == 404 and error_code(r) == "RESOURCE_DOES_NOT_EXIST", r.text


def test_links_leading_out_of_the_root_are_refused_everywhere(pair, server):
    """A link in a run's folder that leads out of the artifact root (put there behind the
    server's back) is never followed: not listed, not read, not written through."""
    run_id, base = new_run(pair.our_url)
    folder = server.data_dir / "artifacts" / base
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "etc").symlink_to("/etc")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "real.txt").write_bytes(b"ok")
    r = requests.get(pair.our_url + "/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}, timeout=30)
    assert [f["path"] for f in files_of(r)] == ["real.txt"], r.text
    for path in ("etc", "etc/passwd", "passwd"):
        r = requests.get(pair.our_url + "/api/2.0/mlflow/artifacts/list", params={"run_id": run_id, "path": path},
                         timeout=30)
        assert r.status_code == 400 and "root:" not in r.text, (path, r.text)
        r = requests.get(pair.our_url + "/get-artifact", params={"run_id": run_id, "path": path}, timeout=30)
        assert r.status_code == 400 and "root:" not in r.text, (path, r.text)
    r = requests.post(pair.our_url + UPLOAD, params={"run_uuid": run_id, "path": "etc/evil"}, data=b"x", timeout=30)
    assert r.status_code == 400, r.text
    assert not pathlib.Path("/etc/evil").exists()
