"""The Open Inference Protocol with the Triton HTTP client (tritonclient[http]), unchanged,
against `regserve serve`: server/model metadata and readiness, infer with output selection,
a pinned version, and errors surfacing as InferenceServerException."""

import subprocess

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODELS, child_env
from test_follow import Serve

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [6.0, 2.2, 5.0, 1.5]], dtype=np.float32)


def reference(model_dir):
    sess = ort.InferenceSession(str(MODELS / model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"float_input": X})))


def test_triton_http_client_against_regserve(regserve_bin, tmp_path):
    data = tmp_path / "data"
    for d, extra in [("iris-v1", ["--stage", "Production"]), ("iris-v2", [])]:
        out = subprocess.run([regserve_bin, "--data-dir", str(data), "models", "register", str(MODELS / d), "--name", "iris", *extra],
                             capture_output=True, text=True, timeout=120, env=child_env(), stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
    # Versions other than the one in service are served only when asked for (issue 10, item 7).
    serve = Serve(regserve_bin, data, extra=["--pinned-versions", "any"])
    try:
        client = httpclient.InferenceServerClient(url=serve.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris")
        assert client.get_server_metadata()["name"] == "regserve"
        meta = client.get_model_metadata("iris")
        assert meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]

        inp = httpclient.InferInput("float_input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        want = reference("iris-v1")
        result = client.infer("iris", [inp], request_id="r-1")
        assert result.get_response()["id"] == "r-1"
        np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], atol=1e-5)

        # Output selection, and a version pinned while Production still points at v1.
        result = client.infer("iris", [inp], model_version="2", outputs=[httpclient.InferRequestedOutput("probabilities")])
        assert result.get_response()["model_version"] == "2"
        assert result.as_numpy("label") is None
        np.testing.assert_allclose(result.as_numpy("probabilities"), reference("iris-v2")["probabilities"], atol=1e-5)

        # Errors come back as the client's exception with the server's message.
        bad = httpclient.InferInput("float_input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="shape"):
            client.infer("iris", [bad])
        with pytest.raises(InferenceServerException, match="not served"):
            client.infer("nope", [inp])
    finally:
        serve.stop()
