"""`inference.GRPCInferenceService`: converts messages and calls the shared data plane.

Every method only decodes, calls the data plane, and encodes; errors become
status codes in one place (`service.grpc.errors`). Methods of Triton's superset that this
gateway does not implement (trace and log settings) answer UNIMPLEMENTED from the generated
base class; CUDA shared memory answers UNIMPLEMENTED with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.auth import bearer_token
from service.codecs import v2
from service.dataplane import DataPlane
from service.errors import InvalidInput, ServingError
from service.grpc import converters
from service.grpc.errors import translate_errors
from service.grpc.request_scan import InferMessage, RefusedRequest
from service.grpc.streams import serve_concurrently
from service.inference import DecodedBody, InferenceRequest, InferenceResult, TensorBody, v2_body
from service.processing import ModelProcessor
from service.tracing import TRACE_HEADERS

PROTOCOL = "grpc"
log = logging.getLogger(__name__)


def _credentials(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return bearer_token(value if isinstance(value, str) else value.decode())
    return None


def _trace_context(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else value.decode()
        for key, value in context.invocation_metadata() or ()
        if key in TRACE_HEADERS
    }


def _timeout_ms(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0) * 1000.0


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    # -- health and metadata -------------------------------------------------------------------

    @translate_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live(_credentials(context)))

    @translate_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        readiness = self.plane.readiness(_credentials(context))
        return pb.ServerReadyResponse(ready=readiness.ready)

    @translate_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        state = self.plane.model_ready(request.name, request.version or None, _credentials(context))
        return pb.ModelReadyResponse(ready=state.ready)

    @translate_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata(_credentials(context)))

    @translate_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return converters.model_metadata(
            self.plane.model_metadata(request.name, request.version or None, _credentials(context))
        )

    @translate_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        config = self.plane.model_config(
            request.name, request.version or None, _credentials(context)
        )
        return pb.ModelConfigResponse(config=config)

    @translate_errors
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        stats = self.plane.statistics(
            request.name or None, request.version or None, _credentials(context)
        )
        return converters.statistics_response(stats)

    # -- inference -----------------------------------------------------------------------------

    async def _infer(
        self, message: InferMessage, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """One inference; a message refused from its wire bytes (`request_scan`) is answered
        with its error from the same place a decoding error would be (counted alike)."""

        async def decode(processor: ModelProcessor) -> DecodedBody[v2.InferRequest]:
            if isinstance(message, RefusedRequest):
                raise message.error
            decoded = converters.infer_request(message, processor.limits, self.plane.shared_memory)
            return v2_body(decoded)

        def encode(result: InferenceResult[v2.InferRequest]) -> pb.ModelInferResponse:
            return converters.infer_response(
                model_name=result.model.name,
                model_version=result.model.version,
                request=result.body.wire,
                outputs=result.outputs,
            )

        request = InferenceRequest(
            protocol=PROTOCOL,
            model=message.model_name,
            version=message.model_version or None,
            body=TensorBody(decode),
            credentials=_credentials(context),
            timeout_ms=_timeout_ms(context),
            trace_context=_trace_context(context) if self.plane.traced else None,
        )
        return await self.plane.infer(request, encode)

    @translate_errors
    async def ModelInfer(
        self, request: InferMessage, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self,
        requests: AsyncIterator[InferMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on one stream are served concurrently (so they batch together); each answer
        carries its request's id, and an error answers only its own request. At most
        `grpc_stream_max_in_flight` requests of a stream are held at once: past it the stream
        is not read until the client takes an answer (`service.grpc.streams`)."""

        async def answer(message: InferMessage) -> pb.ModelStreamInferResponse:
            try:
                response = await self._infer(message, context)
            except Exception as error:
                reason = error.message if isinstance(error, ServingError) else None
                if reason is None:
                    log.exception("unhandled error in ModelStreamInfer")
                failed = pb.ModelInferResponse(
                    model_name=message.model_name,
                    model_version=message.model_version,
                    id=message.id,
                )
                return pb.ModelStreamInferResponse(
                    error_message=reason or "internal server error", infer_response=failed
                )
            return pb.ModelStreamInferResponse(infer_response=response)

        limit = self.plane.settings.grpc_stream_max_in_flight
        async for item in serve_concurrently(requests, answer, limit):
            yield item

    # -- system shared memory (inference token) ------------------------------------------------

    @translate_errors
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = self.plane.shared_memory_status(request.name or None, _credentials(context))
        response = pb.SystemSharedMemoryStatusResponse()
        for region in regions:
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region.as_dict())
            )
        return response

    @translate_errors
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.plane.shared_memory_register(
            request.name, request.key, request.offset, request.byte_size, _credentials(context)
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @translate_errors
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.plane.shared_memory_unregister(request.name or None, _credentials(context))
        return pb.SystemSharedMemoryUnregisterResponse()

    @translate_errors
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryStatusResponse:
        self.plane.cuda_shared_memory(_credentials(context))

    @translate_errors
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.plane.cuda_shared_memory(_credentials(context))

    @translate_errors
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.plane.cuda_shared_memory_unregister(request.name or None, _credentials(context))
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- repository (management token) ---------------------------------------------------------

    @translate_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        entries = self.plane.repository_index(_credentials(context), ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
                )
                for entry in entries
            ]
        )

    @translate_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        token = _credentials(context)
        self.plane.authorize_management(token)  # before the parameters are read
        if request.parameters:
            raise InvalidInput(
                f"load parameters are not supported ({sorted(request.parameters)}); "
                "models load from the model store as they are"
            )
        outcome = await self.plane.load(request.model_name, token)
        if outcome.failure:
            raise InvalidInput(outcome.failure)
        return pb.RepositoryModelLoadResponse()

    @translate_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self.plane.unload(request.model_name, _credentials(context))
        return pb.RepositoryModelUnloadResponse()
