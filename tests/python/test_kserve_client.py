"""The KServe Python SDK's V2 REST client (`kserve.InferenceRESTClient`, protocol v2),
unchanged, against `regserve serve`: health, model readiness, and inference on iris and mlp
with inputs as JSON and as binary data, each output equal bit for bit to the answer that
tritonclient.http gets from the same server, and errors as the SDK's HTTPStatusError.

kserve 0.21.0 needs pandas<3, so this file runs in a virtualenv of its own (.venv-kserve,
scripts/requirements-kserve.txt; scripts/test makes it); in the main test venv it is skipped.
"""

import asyncio
import subprocess

import numpy as np
import pytest

kserve = pytest.importorskip("kserve", reason="the KServe SDK runs in .venv-kserve (scripts/test)")
import httpx  # noqa: E402  (a dependency of kserve)
import tritonclient.http as httpclient  # noqa: E402
from kserve import InferInput, InferRequest, InferenceRESTClient, RESTConfig  # noqa: E402

from conftest import MODELS, child_env  # noqa: E402
from test_follow import Serve  # noqa: E402

RNG = np.random.default_rng(5)
INPUTS = {
    "iris": ("float_input", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [6.0, 2.2, 5.0, 1.5]], dtype=np.float32)),
    "mlp": ("input", RNG.standard_normal((4, 64)).astype(np.float32)),
}


def register(binary, data):
    for d, name in [("iris-v1", "iris"), ("mlp", "mlp")]:
        out = subprocess.run([binary, "--data-dir", str(data), "models", "register", str(MODELS / d), "--name", name,
                              "--stage", "Production"], capture_output=True, text=True, timeout=120, env=child_env(),
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr


def test_kserve_v2_rest_client_answers_equal_tritonclient_http(regserve_bin, tmp_path):
    data = tmp_path / "data"
    register(regserve_bin, data)
    serve = Serve(regserve_bin, data, extra=["-m", "models:/mlp/Production"])
    triton = httpclient.InferenceServerClient(serve.url.removeprefix("http://"))

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30, retries=0))
        try:
            assert await client.is_server_live(serve.url) is True
            assert await client.is_server_ready(serve.url) is True
            for model, (name, x) in INPUTS.items():
                assert await client.is_model_ready(serve.url, model)
                ti = httpclient.InferInput(name, list(x.shape), "FP32")
                ti.set_data_from_numpy(x)
                want = triton.infer(model, [ti])
                outputs = [o["name"] for o in want.get_response()["outputs"]]
                for binary in (False, True):
                    inp = InferInput(name=name, shape=list(x.shape), datatype="FP32")
                    inp.set_data_from_numpy(x, binary_data=binary)
                    resp = await client.infer(serve.url, InferRequest(model_name=model, infer_inputs=[inp], request_id="k-1"),
                                              model_name=model)
                    assert (resp.model_name, resp.id) == (model, "k-1")  # the SDK does not read model_version
                    got = {o.name: o.as_numpy() for o in resp.outputs}
                    assert sorted(got) == sorted(outputs)
                    for out in outputs:
                        a, b = got[out], want.as_numpy(out)
                        assert a.dtype == b.dtype and a.shape == b.shape, f"{model}.{out}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
                        assert a.tobytes() == b.tobytes(), f"{model}.{out} (binary={binary}): the bytes differ"

            # Errors: the SDK raises HTTPStatusError with the server's status and message.
            inp = InferInput(name="float_input", shape=[1, 4], datatype="FP32")
            inp.set_data_from_numpy(INPUTS["iris"][1][:1], binary_data=False)
            with pytest.raises(httpx.HTTPStatusError, match="not served") as e:
                await client.infer(serve.url, InferRequest(model_name="nope", infer_inputs=[inp]), model_name="nope")
            assert e.value.response.status_code == 404
            bad = InferInput(name="float_input", shape=[1, 3], datatype="FP32")
            bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
            with pytest.raises(httpx.HTTPStatusError, match="shape") as e:
                await client.infer(serve.url, InferRequest(model_name="iris", infer_inputs=[bad]), model_name="iris")
            assert e.value.response.status_code == 400
            assert await client.is_model_ready(serve.url, "nope") is False
        finally:
            await client.close()

    try:
        asyncio.run(run())
    finally:
        serve.stop()
