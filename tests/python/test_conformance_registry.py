"""Issue 12, the registry side: regserve answers as a real `mlflow server` 3.17.2 does.

Every test makes the same calls against the reference `mlflow server` (started by the `pair`
fixture, its own SQLite store) and against `regserve server`, and compares what an MLflow client
reads. Names carry a per-test suffix, so tests do not see each other's models on either server.

- the default order of `model-versions/search` (newest first) and `registered-models/search`
  (by name), through keyset pages;
- `model-versions/create` with a `model_id` tags the logged model with `mlflow.modelVersions`;
- the prompt registry of the MLflow 3 client (`register_prompt`, `load_prompt` by version and
  alias, `search_prompts`, prompt aliases), and `regserve serve` refusing a prompt;
- the `X-MLFLOW-WORKSPACE` header (only the default workspace; MLflow refuses it while
  workspaces are off).
"""

import json
import subprocess
import time
import uuid

import pytest
import requests

from conftest import child_env, error_code
from test_follow import free_port

API = "/api/2.0/mlflow"
# A source both servers take without files behind it (MLflow: any non-local URI).
SOURCE = "s3://bucket/conformance/model"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def both_ok(pair, method, path, **kw):
    ref, ours = pair.same_status(method, path, **kw)
    assert ref.status_code == 200, (path, ref.text, ours.text)
    return ref.json(), ours.json()


def tick():
    """Let the millisecond clock move, so last-updated times differ between writes."""
    time.sleep(0.01)


# --------------------------------------------------------------------- item 1: default order


def version_keys(answer):
    return [(v["name"], v["version"]) for v in answer.get("model_versions", [])]


def test_model_versions_search_default_order_is_newest_first_across_pages(pair):
    a, b = unique("ord-a"), unique("ord-b")
    for name in (a, b):
        both_ok(pair, "POST", f"{API}/registered-models/create", json={"name": name})
    # Created a/1, b/1, a/2, b/2, a/3; then a/1 and b/2 are updated (newest now).
    for name in (a, b, a, b, a):
        both_ok(pair, "POST", f"{API}/model-versions/create", json={"name": name, "source": SOURCE})
        tick()
    for name, version in ((a, "1"), (b, "2")):
        both_ok(pair, "PATCH", f"{API}/model-versions/update",
                json={"name": name, "version": version, "description": "touched"})
        tick()
    flt = {"filter": f"name IN ('{a}', '{b}')"}
    ref, ours = both_ok(pair, "GET", f"{API}/model-versions/search", params=flt)
    # MLflow's default: last updated first, then name, then the highest version.
    assert version_keys(ref) == [(b, "2"), (a, "1"), (a, "3"), (a, "2"), (b, "1")]
    assert version_keys(ours) == version_keys(ref)

    # Page by page (keyset tokens here, offsets in MLflow): the same rows, none twice.
    paged = []
    token = None
    for _ in range(10):
        params = dict(flt, max_results=2, **({"page_token": token} if token else {}))
        r = requests.get(pair.our_url + f"{API}/model-versions/search", params=params, timeout=30)
        assert r.status_code == 200, r.text
        paged += version_keys(r.json())
        token = r.json().get("next_page_token")
        if not token:
            break
    assert paged == version_keys(ref)

    # An explicit order_by is MLflow's too.
    params = dict(flt, order_by=["name ASC", "version_number ASC"])
    ref, ours = both_ok(pair, "GET", f"{API}/model-versions/search", params=params)
    assert version_keys(ours) == version_keys(ref)


def test_model_versions_search_default_order_through_the_client(pair):
    ref_client, our_client = pair.clients()
    name = unique("ord-client")
    results = []
    for client in (ref_client, our_client):
        client.create_registered_model(name)
        for _ in range(3):
            client.create_model_version(name, SOURCE)
            tick()
        client.update_model_version(name, "2", description="newest")
        results.append([mv.version for mv in client.search_model_versions(f"name = '{name}'")])
    assert results[0] == ["2", "3", "1"]
    assert results[1] == results[0]


def test_registered_models_search_default_order_is_by_name(pair):
    tag = uuid.uuid4().hex[:8]
    names = [f"rm-{tag}-{s}" for s in ("b", "C", "a", "B")]
    for name in names:
        both_ok(pair, "POST", f"{API}/registered-models/create", json={"name": name})
        tick()
    both_ok(pair, "PATCH", f"{API}/registered-models/update", json={"name": names[0], "description": "x"})
    ref, ours = both_ok(pair, "GET", f"{API}/registered-models/search", params={"filter": f"name LIKE 'rm-{tag}-%'"})
    got = [m["name"] for m in ours["registered_models"]]
    assert got == [m["name"] for m in ref["registered_models"]]
    assert got == sorted(names)


# --------------------------------------------------------------------- item 8: mlflow.modelVersions


def logged_model_tags(url, model_id):
    r = requests.get(url + f"/api/2.0/mlflow/logged-models/{model_id}", timeout=30)
    assert r.status_code == 200, r.text
    return {t["key"]: t["value"] for t in r.json()["model"]["info"].get("tags", [])}


def test_create_version_with_model_id_tags_the_logged_model(pair):
    name = unique("linked")
    both_ok(pair, "POST", f"{API}/registered-models/create", json={"name": name})
    ids = []
    for url in (pair.ref_url, pair.our_url):
        r = requests.post(url + f"{API}/logged-models", json={"experiment_id": "0", "name": "lm"}, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.json()["model"]["info"]["model_id"])
    values = []
    for url, model_id in zip((pair.ref_url, pair.our_url), ids):
        for _ in range(2):
            r = requests.post(url + f"{API}/model-versions/create",
                              json={"name": name, "source": f"models:/{model_id}", "model_id": model_id}, timeout=60)
            assert r.status_code == 200, r.text
            # MLflow's SQL store does not keep a version's model_id: its answers have none.
            assert "model_id" not in r.json()["model_version"], (url, r.text)
        values.append(logged_model_tags(url, model_id).get("mlflow.modelVersions"))
    # The same bytes: Python's json.dumps of [{"name", "version" (a number)}, ...].
    assert values[0] == json.dumps([{"name": name, "version": 1}, {"name": name, "version": 2}])
    assert values[1] == values[0]

    # A copy (models:/<name>/<v>) keeps the source version's lineage, which has no model_id:
    # one given with it is refused, and the logged model is not tagged again.
    r_ref, r_ours = pair.same_status("POST", f"{API}/model-versions/create",
                                     json={"name": name, "source": f"models:/{name}/1", "model_id": ids[0]})
    assert r_ref.status_code == 400
    assert r_ours.json()["message"] == r_ref.json()["message"]
    both_ok(pair, "POST", f"{API}/model-versions/create", json={"name": name, "source": f"models:/{name}/1"})
    final = [logged_model_tags(url, i)["mlflow.modelVersions"] for url, i in zip((pair.ref_url, pair.our_url), ids)]
    assert final == values


def test_register_model_from_a_logged_model_through_the_client(pair):
    """`mlflow.register_model` also writes the tag from the client: the result matches."""
    import mlflow

    name = unique("linked-client")
    values = []
    for client, url in zip(pair.clients(), (pair.ref_url, pair.our_url)):
        exp = client.create_experiment(unique("exp"))
        lm = client.create_logged_model(experiment_id=exp, name="lm")
        client.finalize_logged_model(lm.model_id, "READY")
        mlflow.set_registry_uri(url)
        mlflow.set_tracking_uri(url)
        try:
            mv = mlflow.register_model(f"models:/{lm.model_id}", name)
        finally:
            mlflow.set_tracking_uri(pair.our_url)
            mlflow.set_registry_uri(pair.our_url)
        values.append(client.get_logged_model(lm.model_id).tags.get("mlflow.modelVersions"))
    assert values[0] is not None
    assert values[1] == values[0]


# --------------------------------------------------------------------- item 11: prompts


def prompt_view(p):
    return {"name": p.name, "version": int(p.version), "template": p.template, "aliases": sorted(p.aliases or []),
            "commit_message": p.commit_message, "tags": p.tags}


def test_prompt_registry_works_as_against_mlflow(pair):
    name = unique("greet")
    seen = []
    for client in pair.clients():
        p1 = client.register_prompt(name=name, template="Hello {{name}}", commit_message="first", tags={"team": "a"})
        p2 = client.register_prompt(name=name, template=[{"role": "user", "content": "Hi {{name}}!"}])
        assert (int(p1.version), int(p2.version)) == (1, 2)
        client.set_prompt_alias(name, alias="prod", version=1)
        by_alias = client.load_prompt(f"prompts:/{name}@prod")
        by_version = client.load_prompt(f"prompts:/{name}/2")
        found = [p.name for p in client.search_prompts(filter_string=f"name = '{name}'")]
        # Prompts are not models: the model search leaves them out, on both servers.
        models = [m.name for m in client.search_registered_models(filter_string=f"name = '{name}'")]
        formatted = by_alias.format(name="Ada")
        client.delete_prompt_alias(name, alias="prod")
        with pytest.raises(Exception) as gone:
            client.load_prompt(f"prompts:/{name}@prod")
        seen.append({
            "alias": prompt_view(by_alias), "v2": prompt_view(by_version), "found": found, "models": models, "formatted": formatted, "gone": type(gone.value).__name__,
        })
    ref, ours = seen
    assert ref["alias"]["template"] == "Hello {{name}}" and ref["formatted"] == "Hello Ada"
    assert ref["found"] == [name] and ref["models"] == []
    assert ours == ref


def test_register_prompt_with_the_fluent_api(pair):
    import mlflow
    import mlflow.genai

    name = unique("fluent")
    seen = []
    for url in (pair.ref_url, pair.our_url):
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        try:
            mlflow.genai.register_prompt(name=name, template="Summarize: {{text}}", commit_message="v1")
            mlflow.genai.set_prompt_alias(name, alias="champion", version=1)
            loaded = mlflow.genai.load_prompt(f"prompts:/{name}@champion")
            versioned = mlflow.genai.load_prompt(f"prompts:/{name}/1")
            found = [p.name for p in mlflow.genai.search_prompts(filter_string=f"name = '{name}'")]
            # The client links a new prompt to the active experiment (a tag) and can search by it.
            in_default = mlflow.genai.search_prompts(filter_string=f"experiment_id = '0' AND name = '{name}'")
            found.append(len(in_default))
        finally:
            mlflow.set_tracking_uri(pair.our_url)
            mlflow.set_registry_uri(pair.our_url)
        seen.append((prompt_view(loaded), prompt_view(versioned), found))
    assert seen[0][2] == [name, 1]
    assert seen[1] == seen[0]


def test_prompt_version_over_rest_matches(pair):
    name = unique("rest-prompt")
    tags = [{"key": "mlflow.prompt.is_prompt", "value": "true"}]
    both_ok(pair, "POST", f"{API}/registered-models/create", json={"name": name, "tags": tags})
    body = {"name": name, "source": "dummy-source",
            "tags": tags + [{"key": "mlflow.prompt.text", "value": "Hi {{x}}"}]}
    ref, ours = both_ok(pair, "POST", f"{API}/model-versions/create", json=body)
    keep = ("name", "version", "source", "status", "current_stage", "tags")
    assert {k: ours["model_version"].get(k) for k in keep} == {k: ref["model_version"].get(k) for k in keep}
    # A prompt version is never test-loaded: READY, no status message (as MLflow).
    assert ours["model_version"]["status"] == "READY" and "status_message" not in ours["model_version"]
    # Only MLflow's placeholders are prompt sources.
    for source in ("s3://bucket/x", "prompt-template-x"):
        ref, ours = pair.same_status("POST", f"{API}/model-versions/create", json=dict(body, source=source))
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"]
    # Without the prompt tag, a placeholder is a local path, refused as such by both.
    plain = {"name": name, "source": "dummy-source"}
    ref, ours = pair.same_status("POST", f"{API}/model-versions/create", json=plain)
    assert ref.status_code == 400 and error_code(ours) == "INVALID_PARAMETER_VALUE"


def test_models_list_leaves_prompts_out(pair, server):
    _, our_client = pair.clients()
    prompt, model = unique("listed-prompt"), unique("listed-model")
    our_client.register_prompt(name=prompt, template="Hello {{name}}")
    our_client.create_registered_model(model)
    for extra in ([], ["--registry-uri", server.url]):
        out = server.cli("models", "list", "--json", *extra)
        assert out.returncode == 0, out.stderr
        names = [m["name"] for m in json.loads(out.stdout)]
        assert model in names and prompt not in names, (extra, names)


def test_predict_refuses_a_prompt(pair, server, tmp_path):
    _, our_client = pair.clients()
    name = unique("no-predict")
    our_client.register_prompt(name=name, template="Hello {{name}}")
    payload = tmp_path / "in.json"
    payload.write_text(json.dumps({"inputs": [[1.0]]}))
    for extra in ([], ["--registry-uri", server.url]):
        out = server.cli("predict", "-m", f"models:/{name}/1", "--input", str(payload), *extra)
        assert out.returncode != 0
        assert f"version 1 of '{name}' is a prompt, not a model" in out.stderr, (extra, out.stderr)


def wait_health(url, want, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url + "/health", timeout=5)
            if want in last.text:
                return last
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"/health never said {want!r}; last answer: {getattr(last, 'text', last)}")


@pytest.mark.parametrize("registry", ["embedded", "remote"])
def test_serve_refuses_a_prompt(pair, server, regserve_bin, registry):
    _, our_client = pair.clients()
    name = unique("no-serve")
    our_client.register_prompt(name=name, template="Hello {{name}}")
    our_client.set_prompt_alias(name, alias="prod", version=1)
    port = free_port()
    args = [*server.base_args(), "serve", "-m", f"models:/{name}/1",
            "-m", f"models:/{name}@prod", "--port", str(port), "--poll-interval", "1s"]
    if registry == "remote":
        args += ["--registry-uri", server.url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=child_env(RUST_LOG="info"), text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_health(url, "is a prompt, not a model")
        assert health.status_code == 503
        assert f"version 1 of '{name}' is a prompt, not a model" in health.text
        assert "not loaded" in health.text and "serving version" not in health.text
        r = requests.post(url + "/invocations", json={"inputs": [[1.0]]}, timeout=10)
        assert r.status_code >= 400
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=20)
    assert "is a prompt, not a model" in err


# --------------------------------------------------------------------- item 11: workspaces


ROUTES = [
    ("GET", f"{API}/registered-models/search", {}),
    ("GET", "/ajax-api/2.0/mlflow/model-versions/search", {}),
    ("GET", f"{API}/experiments/get", {"params": {"experiment_id": "0"}}),
    ("POST", f"{API}/registered-models/create", {"json": {"name": "ws-refused"}}),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", {"params": {"path": "0"}}),
]


@pytest.mark.parametrize("method,path,kw", ROUTES)
def test_a_workspace_other_than_default_is_refused(pair, method, path, kw):
    headers = {"X-MLFLOW-WORKSPACE": "team-a"}
    ref, ours = pair.call(method, path, headers=headers, **kw)
    # MLflow: FEATURE_DISABLED, as a 500 (its client retries it). regserve: the same code, 400.
    assert (ref.status_code, error_code(ref)) == (500, "FEATURE_DISABLED"), ref.text
    assert (ours.status_code, error_code(ours)) == (400, "FEATURE_DISABLED"), ours.text
    assert "workspaces are not enabled" in ref.json()["message"]
    assert "Workspace 'team-a' is not available: workspaces are not enabled" in ours.json()["message"]


def test_the_default_workspace_is_accepted(pair):
    name = unique("ws-default")
    ref, ours = pair.call("POST", f"{API}/registered-models/create", json={"name": name},
                          headers={"X-MLFLOW-WORKSPACE": "default"})
    # MLflow refuses even "default" while workspaces are off; regserve has that one workspace.
    assert (ref.status_code, error_code(ref)) == (500, "FEATURE_DISABLED")
    assert ours.status_code == 200 and ours.json()["registered_model"]["name"] == name
    # Empty is no workspace: both answer normally.
    ref, ours = pair.same_status("GET", f"{API}/registered-models/search", headers={"X-MLFLOW-WORKSPACE": ""})
    assert ours.status_code == 200


def test_server_info_ignores_the_workspace_header(pair):
    ref, ours = pair.same_status("GET", "/api/3.0/mlflow/server-info", headers={"X-MLFLOW-WORKSPACE": "team-a"})
    assert ref.status_code == 200


def test_the_client_with_a_workspace_set(pair):
    """`mlflow.set_workspace(...)`: the 3.17 client asks `server-info` first and, as regserve says
    `workspaces_enabled: false` as MLflow does, refuses any workspace itself, with one message."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._workspace.fluent import set_workspace

    name = unique("ws-client")
    # Both servers up and answering server-info (what the client asks first) before the test.
    pair.same_status("GET", "/api/3.0/mlflow/server-info")
    for workspace in ("default", "team-a"):
        errors = []
        try:
            set_workspace(workspace)
            for client in pair.clients():
                with pytest.raises(MlflowException) as err:
                    client.create_registered_model(name)
                errors.append((err.value.error_code, err.value.message))
        finally:
            set_workspace(None)
        assert errors[0][0] == "FEATURE_DISABLED" and "does not support workspaces" in errors[0][1], errors
        assert errors[1] == errors[0]
    # Nothing was created on either server.
    for client in pair.clients():
        assert client.search_registered_models(filter_string=f"name = '{name}'") == []
