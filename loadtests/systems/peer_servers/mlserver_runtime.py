"""An MLServer runtime serving a model-store ONNX file (MLServer imports this module by name).

`loadtests.systems.peers` writes `settings.json` and one `model-settings.json` per model, with
`parameters.uri` set to the model's version directory and adaptive batching switched on.
"""

from __future__ import annotations

import os
from pathlib import Path

from common import OnnxModel, open_model
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    served: OnnxModel

    async def load(self) -> bool:
        version_dir = Path(self.settings.parameters.uri)
        self.served = open_model(
            version_dir.parent.parent, version_dir.parent.name, os.environ.get("PEER_DEVICE", "cpu")
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        outputs = [
            NumpyCodec.encode_output(name, array) for name, array in self.served.run(feed).items()
        ]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
