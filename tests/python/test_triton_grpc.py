"""The Open Inference Protocol over gRPC with the Triton gRPC client (tritonclient[grpc]),
unchanged, against `regserve serve --grpc-port`:

- every output of iris and mlp, inputs sent raw (`raw_input_contents`, what the client does)
  and typed (`contents`, through the client's own generated stub), equals the HTTP V2 answer
  (tritonclient.http, binary and JSON inputs) bit for bit, and the Python onnxruntime reference;
- a hot swap (Production moved back and forth while 8 gRPC client threads score in a loop)
  loses no request, and every answer's model_version is the old or the new one, its values
  that version's;
- the bearer token goes in the `authorization` metadata (the client's `headers`).
"""

import subprocess
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.service_pb2 as pb
import tritonclient.grpc.service_pb2_grpc as pb_grpc
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODELS, child_env
from test_follow import ROW, Serve, Workers, free_port, reference_probabilities

RNG = np.random.default_rng(16)
INPUTS = {
    "iris": ("float_input", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [6.0, 2.2, 5.0, 1.5]], dtype=np.float32)),
    "mlp": ("input", RNG.standard_normal((5, 64)).astype(np.float32)),
}
MODEL_DIRS = {"iris": "iris-v1", "mlp": "mlp"}


def cli(binary, data, *args):
    out = subprocess.run([binary, "--data-dir", str(data), *args], capture_output=True, text=True, timeout=120,
                         env=child_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def registry(binary, tmp_path):
    data = tmp_path / "data"
    cli(binary, data, "models", "register", str(MODELS / "iris-v1"), "--name", "iris", "--stage", "Production")
    cli(binary, data, "models", "register", str(MODELS / "iris-v2"), "--name", "iris")
    cli(binary, data, "models", "register", str(MODELS / "mlp"), "--name", "mlp", "--stage", "Production")
    return data


def serve_with_grpc(binary, data, extra=(), env=None):
    port = free_port()
    serve = Serve(binary, data, extra=["-m", "models:/mlp/Production", "--grpc-port", str(port), *extra], env=env)
    return serve, f"127.0.0.1:{port}"


def onnxruntime_reference(model, name, x):
    sess = ort.InferenceSession(str(MODELS / MODEL_DIRS[model] / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x})))


def typed_infer(address, model, name, x):
    """ModelInfer with the values in typed `contents.fp32_contents`, through Triton's stub."""
    req = pb.ModelInferRequest(model_name=model, id="typed")
    tensor = req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(address) as channel:
        resp = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert resp.id == "typed" and not req.raw_input_contents
    return grpcclient.InferResult(resp)


def same_bits(a, b, what):
    assert a is not None and b is not None, what
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: the bytes differ"


def test_grpc_answers_equal_http_v2_bit_for_bit_and_onnxruntime(regserve_bin, tmp_path):
    serve, address = serve_with_grpc(regserve_bin, registry(regserve_bin, tmp_path))
    try:
        g = grpcclient.InferenceServerClient(address)
        h = httpclient.InferenceServerClient(serve.url.removeprefix("http://"))
        assert g.is_server_live() and g.is_server_ready()
        assert g.get_server_metadata().name == "regserve"
        for model, (name, x) in INPUTS.items():
            assert g.is_model_ready(model)
            meta, hmeta = g.get_model_metadata(model), h.get_model_metadata(model)
            assert (meta.name, list(meta.versions), meta.platform) == (hmeta["name"], hmeta["versions"], hmeta["platform"])
            for part in ("inputs", "outputs"):
                assert [(t.name, t.datatype, list(t.shape)) for t in getattr(meta, part)] == \
                    [(t["name"], t["datatype"], t["shape"]) for t in hmeta[part]]
            outputs = [o.name for o in meta.outputs]

            gi = grpcclient.InferInput(name, list(x.shape), "FP32")
            gi.set_data_from_numpy(x)
            raw = g.infer(model, [gi], request_id="raw")
            assert raw.get_response().id == "raw"
            typed = typed_infer(address, model, name, x)
            answers = {"grpc raw": raw, "grpc typed": typed}
            for binary in (True, False):
                hi = httpclient.InferInput(name, list(x.shape), "FP32")
                hi.set_data_from_numpy(x, binary_data=binary)
                answers[f"http {'binary' if binary else 'json'}"] = h.infer(model, [hi])
            ref = onnxruntime_reference(model, name, x)
            for out in outputs:
                first = answers["http json"].as_numpy(out)
                for label, answer in answers.items():
                    same_bits(answer.as_numpy(out), first, f"{model}.{out} ({label} vs http json)")
                got = raw.as_numpy(out)
                if got.dtype.kind in "iu":
                    np.testing.assert_array_equal(got, ref[out])
                else:
                    np.testing.assert_allclose(got, ref[out], rtol=1e-5, atol=1e-6)

            # Output selection, the same on both.
            sel = g.infer(model, [gi], outputs=[grpcclient.InferRequestedOutput(outputs[-1])])
            assert [o.name for o in sel.get_response().outputs] == [outputs[-1]]

        # Errors surface as the client's exception with the gRPC code.
        bad = grpcclient.InferInput("float_input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="shape") as e:
            g.infer("iris", [bad])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException, match="not served") as e:
            g.infer("nope", [gi])
        assert e.value.status() == "StatusCode.NOT_FOUND"
        # One of Triton's RPCs outside KServe's service.
        with pytest.raises(InferenceServerException) as e:
            g.get_model_config("iris")
        assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    finally:
        serve.stop()


CLIENTS = 8
SWAPS = 6


class GrpcLoad(Workers):
    """CLIENTS threads, each with its own gRPC client, scoring ROW in a loop; records each
    outcome and the (model_version, values) of each answer."""

    def __init__(self, address):
        self.address = address
        self.outcomes = {}
        self.answers = []  # (monotonic time, model_version, probabilities)
        super().__init__([(self.run, ())] * CLIENTS)

    def run(self):
        client = grpcclient.InferenceServerClient(self.address)
        x = np.array([ROW], dtype=np.float32)
        inp = grpcclient.InferInput("float_input", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        while not self.stop_flag.is_set():
            try:
                r = client.infer("iris", [inp], client_timeout=10)
                outcome, answer = "ok", (time.monotonic(), r.get_response().model_version, r.as_numpy("probabilities")[0])
            except InferenceServerException as e:
                outcome, answer = f"error: {e.status()} {e.message()}", None
            with self.lock:
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
                if answer is not None:
                    self.answers.append(answer)
        client.close()

    def first_from(self, version, since, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(t >= since and v == version for t, v, _ in self.answers):
                    return True
            time.sleep(0.02)
        return False


def test_grpc_hot_swap_loses_no_request(regserve_bin, tmp_path):
    data = registry(regserve_bin, tmp_path)
    refs = {"1": reference_probabilities("iris-v1"), "2": reference_probabilities("iris-v2")}
    serve, address = serve_with_grpc(regserve_bin, data)
    try:
        with GrpcLoad(address) as load:
            time.sleep(0.5)
            for i in range(SWAPS):
                target = "2" if i % 2 == 0 else "1"
                cli(regserve_bin, data, "models", "transition", "iris", target, "Production", "--archive-existing")
                assert load.first_from(target, time.monotonic(), timeout=15), f"swap {i} to v{target} not served; {serve.health()}"
        with load.lock:
            outcomes, answers = dict(load.outcomes), list(load.answers)
    finally:
        serve.stop()
    assert set(outcomes) == {"ok"}, f"failed requests during the swaps: {outcomes}"
    assert len(answers) > 100, f"only {len(answers)} answers"
    for _, version, probs in answers:
        assert version in refs, f"an answer from version {version}"
        np.testing.assert_allclose(probs, refs[version], atol=1e-5, err_msg=f"values of version {version}")
    seen = {v for _, v, _ in answers}
    assert seen == {"1", "2"}, seen


def test_grpc_bearer_token_in_metadata(regserve_bin, tmp_path):
    data = registry(regserve_bin, tmp_path)
    serve, address = serve_with_grpc(regserve_bin, data, env={"REGSERVE_AUTH_TOKEN": "grpc-s3cret"})
    try:
        g = grpcclient.InferenceServerClient(address)
        assert g.is_server_live() and g.is_server_ready()  # open, like /v2/health/*
        name, x = INPUTS["iris"]
        inp = grpcclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": "grpc-s3cret"}):
            with pytest.raises(InferenceServerException) as e:
                g.infer("iris", [inp], headers=headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED", headers
            with pytest.raises(InferenceServerException) as e:
                g.get_model_metadata("iris", headers=headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED", headers
        good = {"authorization": "Bearer grpc-s3cret"}
        assert g.is_model_ready("iris", headers=good)
        assert g.get_model_metadata("iris", headers=good).versions == ["1"]
        r = g.infer("iris", [inp], headers=good)
        np.testing.assert_array_equal(r.as_numpy("label"), onnxruntime_reference("iris", name, x)["label"])
    finally:
        serve.stop()
