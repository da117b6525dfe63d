"""A minimal MLServer runtime for bench/grpc.py: one ONNX model run with onnxruntime (MLServer
ships none), one intra-op thread per session as regserve runs its sessions. The model file is
the model settings' `parameters.uri`."""

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        missing = set(self._inputs) - set(feeds)
        if missing:
            raise ValueError(f"missing inputs {sorted(missing)}")
        values = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name=n, payload=v) for n, v in zip(self._outputs, values)],
        )
