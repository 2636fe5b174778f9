"""A loaded torch module called on feeds: numpy arrays in, numpy arrays out, in the dtypes the
manifest declares. The torch backends and the TorchServe handler both compute through it, so
both give the same answers. torch is imported by the caller that built the module."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from service.datatypes import numpy_dtype
from service.errors import BackendError
from service.feeds import Feed
from service.manifest import Signature


class TorchModule:
    def __init__(
        self, module: Any, signature: Signature, device: Any, *, fp16: bool = False
    ) -> None:
        self.module = module
        self.device = device
        self.fp16 = fp16
        self.input_names = [spec.name for spec in signature.inputs]
        self.output_dtypes = {spec.name: numpy_dtype(spec.datatype) for spec in signature.outputs}

    def __call__(self, feed: Feed) -> Feed:
        return self.outputs(self.forward(self.inputs(feed)))

    def inputs(self, feed: Feed) -> list[Any]:
        """The feed's arrays as tensors on the device (read-only or strided arrays copied)."""
        import torch

        tensors = []
        for name in self.input_names:
            array = feed[name]
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, order="C")  # arrays decoded from a payload are read-only
            tensors.append(torch.from_numpy(array).to(self.device))
        return tensors

    def forward(self, args: list[Any]) -> list[Any]:
        import torch

        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.fp16 and torch.device(self.device).type == "cuda"
            else contextlib.nullcontext()
        )
        try:
            with torch.inference_mode(), autocast:
                result = self.module(*args)
        except Exception as error:
            raise BackendError(f"the module failed: {type(error).__name__}: {error}") from error
        if isinstance(result, dict):  # a torch.export program may answer by output name
            return [result[name] for name in self.output_dtypes]
        return list(result) if isinstance(result, list | tuple) else [result]

    def outputs(self, results: list[Any]) -> Feed:
        """Tensors -> arrays named and typed as the manifest's outputs."""
        if len(results) != len(self.output_dtypes):
            raise BackendError(
                f"module returned {len(results)} outputs; manifest names {len(self.output_dtypes)}"
            )
        return {
            name: tensor.detach().cpu().numpy().astype(dtype, copy=False)
            for (name, dtype), tensor in zip(self.output_dtypes.items(), results, strict=True)
        }
