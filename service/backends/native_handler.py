"""The tensor backend of an archive served natively that declares tensors (our `model.json`):
one pre-batched safetensors request per gateway batch, answered by the archive's own handler
in a worker process."""

from __future__ import annotations

from service.backends.base import Backend
from service.backends.tensor_payload import CONTENT_TYPE, encode_feed
from service.backends.torchserve import answer_error, tensor_answer
from service.feeds import Feed, rows_of
from service.manifest import Signature
from service.native.frames import HandlerRequest, Parameter, next_request_id
from service.native.handler_pool import HandlerPool, batch_failure


class NativeHandlerBackend(Backend):
    name = "torchserve-native"

    def __init__(self, signature: Signature, pool: HandlerPool) -> None:
        super().__init__(signature)
        self.pool = pool
        self._output_names = [spec.name for spec in signature.outputs]

    @property
    def description(self) -> str:
        return f"{self.name}[{self.pool.spec.handler}, {len(self.pool.live_workers)} worker(s)]"

    async def load(self) -> None:
        """The pool is started by the archive loader; nothing more to load."""

    async def healthy(self) -> bool:
        return self.pool.ready

    async def infer(self, feed: Feed) -> Feed:
        request = HandlerRequest(
            next_request_id(),
            (Parameter("body", encode_feed(feed), CONTENT_TYPE),),
            (("content-type", CONTENT_TYPE),),
        )
        reply = await self.pool.run([request])
        failure = batch_failure(reply)
        answer = failure if failure is not None else reply.predictions[0]
        if answer.status != 200:
            raise answer_error(answer.status, answer.body, f"handler {self.pool.spec.handler}")
        return tensor_answer(
            answer.content_type, answer.body, rows_of(feed), self._output_names, "handler"
        )
