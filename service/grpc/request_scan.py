"""A ModelInferRequest's wire bytes, checked before protobuf parses them.

Protobuf parses a message whole before any of our code sees it, and a repeated `bytes` or
message field costs an object per element: 10M two-byte `bytes_contents` elements (a 40 MB
message, within `grpc_max_message_bytes`) took +540 MB and up to 2.4 s on the event loop to
parse, only to be refused from the shape afterwards. So a large message is walked first, on its
protobuf wire format, without materializing anything:

- every field of every (sub)message counts towards `max_fields` (`grpc_max_request_fields`),
  except the elements of a tensor's `bytes_contents`, which are bounded by the tensor: at most
  its declared element count and at most `Limits.max_bytes_elements`;
- each input's shape is read and checked by `v2.check_shape`, the one check REST and gRPC
  share, so a BYTES shape past the element limit is refused before its contents are touched.

Messages of at most `SCAN_ABOVE_BYTES` are parsed directly: their worst case is small, and the
common request pays nothing. A message the walk cannot follow (malformed wire) goes to protobuf
as before, which refuses it. A refused message becomes a `RefusedRequest`, which the servicer
answers like any invalid request (INVALID_ARGUMENT; on a stream, that request's error answer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import service_pb2 as pb

from service.codecs import v2
from service.codecs.v2 import MAX_DIMS
from service.datatypes import element_count
from service.errors import InvalidInput
from service.input_limits import Limits

SCAN_ABOVE_BYTES = 64 * 1024
"""Messages up to this size are parsed unscanned: at most ~32K fields, a few MB to parse."""

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_BYTES_CONTENTS = pb.InferTensorContents.DESCRIPTOR.fields_by_name["bytes_contents"].number
_HIGH_BYTES = bytes(range(0x80, 0x100))


class _Malformed(Exception):
    """The wire cannot be followed; protobuf's own parse will say why."""


@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """A ModelInferRequest refused from its wire bytes, with what its answer must name."""

    error: InvalidInput
    model_name: str = ""
    model_version: str = ""
    id: str = ""


InferMessage: TypeAlias = "pb.ModelInferRequest | RefusedRequest"


@dataclass
class _Tensor:
    name: str = ""
    datatype: str = ""
    shape: list[int] = field(default_factory=list)
    contents: tuple[int, int] | None = None


class RequestScanner:
    """Parses ModelInferRequest messages, walking large ones first (see the module doc)."""

    def __init__(
        self,
        limits: Limits,
        max_fields: int,
        note: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.limits = limits
        self.max_fields = max_fields
        self.note = note

    def parse(self, raw: bytes) -> InferMessage:
        """The gRPC request deserializer of ModelInfer and ModelStreamInfer; each message's
        size goes to `note` (`service.memory.AllocatorTrim.note_bytes`; the call is noted
        when it ends, by `service.grpc.admission`)."""
        self.note(len(raw))
        if len(raw) > SCAN_ABOVE_BYTES:
            walk = _Walk(raw, self.limits, self.max_fields)
            try:
                walk.request()
            except InvalidInput as error:
                return RefusedRequest(error, walk.model_name, walk.model_version, walk.id)
            except _Malformed:
                pass
        message: InferMessage = pb.ModelInferRequest.FromString(raw)
        return message


class ScannedInferRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Puts `scanner.parse` in place of protobuf's parse for the two inference methods. Placed
    after `Admission` in the interceptor list, so that a refused call is never parsed."""

    def __init__(self, scanner: RequestScanner, methods: frozenset[str]) -> None:
        self.scanner = scanner
        self.methods = methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self.methods:
            return handler
        replaced: grpc.RpcMethodHandler = handler._replace(request_deserializer=self.scanner.parse)
        return replaced


def _children(descriptor: Descriptor) -> dict[int, Descriptor | None]:
    """Field number -> the message type a length-delimited field holds (None: not a message)."""
    return {
        number: fd.message_type if fd.type == FieldDescriptor.TYPE_MESSAGE else None
        for number, fd in descriptor.fields_by_number.items()
    }


_REQUEST = pb.ModelInferRequest.DESCRIPTOR
_INPUT = pb.ModelInferRequest.InferInputTensor.DESCRIPTOR
_CHILDREN: dict[str, dict[int, Descriptor | None]] = {}
_INPUTS = _REQUEST.fields_by_name["inputs"].number
_REQUEST_STRINGS = {
    _REQUEST.fields_by_name[name].number: name for name in ("model_name", "model_version", "id")
}
_INPUT_FIELDS = {fd.number: name for name, fd in _INPUT.fields_by_name.items()}


def _children_of(descriptor: Descriptor) -> dict[int, Descriptor | None]:
    children = _CHILDREN.get(descriptor.full_name)
    if children is None:
        children = _CHILDREN[descriptor.full_name] = _children(descriptor)
    return children


class _Walk:
    """One walk over one message's wire bytes."""

    def __init__(self, raw: bytes, limits: Limits, max_fields: int) -> None:
        self.raw = raw
        self.limits = limits
        self.max_fields = max_fields
        self.fields_left = max_fields
        self.model_name = ""
        self.model_version = ""
        self.id = ""

    # -- the wire format -----------------------------------------------------------------------

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        raw = self.raw
        result = shift = 0
        while pos < end:
            byte = raw[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                break
        raise _Malformed

    def _count(self) -> None:
        self.fields_left -= 1
        if self.fields_left < 0:
            raise InvalidInput(
                f"the request has more than {self.max_fields} protobuf fields "
                "(GATEWAY_GRPC_MAX_REQUEST_FIELDS)"
            )

    def _value(self, wire: int, pos: int, end: int) -> tuple[Any, int]:
        """A field's value (a varint, the (start, end) of a length-delimited one, or None for
        a fixed-size one) and the position after it."""
        if wire == _VARINT:
            return self._varint(pos, end)
        if wire == _LENGTH:
            size, pos = self._varint(pos, end)
            if pos + size > end:
                raise _Malformed
            return (pos, pos + size), pos + size
        if wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Malformed
            return None, pos
        raise _Malformed  # groups: not in this schema

    def _fields(self, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
        """(number, wire type, value) per field, each counted against the field budget."""
        while pos < end:
            self._count()
            key, pos = self._varint(pos, end)
            value, pos = self._value(key & 7, pos, end)
            yield key >> 3, key & 7, value

    def _text(self, span: tuple[int, int]) -> str:
        return self.raw[span[0] : span[1]].decode("utf-8", "replace")

    # -- the messages --------------------------------------------------------------------------

    def request(self) -> None:
        children = _children_of(_REQUEST)
        for number, wire, value in self._fields(0, len(self.raw)):
            if wire != _LENGTH:
                continue
            if number in _REQUEST_STRINGS:
                setattr(self, _REQUEST_STRINGS[number], self._text(value))
            elif number == _INPUTS:
                self._input(*value)
            elif (child := children.get(number)) is not None:
                self._message(child, *value)

    def _message(self, descriptor: Descriptor, start: int, end: int) -> None:
        children = _children_of(descriptor)
        for number, wire, value in self._fields(start, end):
            if wire == _LENGTH and (child := children.get(number)) is not None:
                self._message(child, *value)

    def _input(self, start: int, end: int) -> None:
        tensor = _Tensor()
        children = _children_of(_INPUT)
        for number, wire, value in self._fields(start, end):
            name = _INPUT_FIELDS.get(number)
            if name == "shape":
                self._dimensions(tensor, wire, value)
            elif wire != _LENGTH:
                continue
            elif name in ("name", "datatype"):
                setattr(tensor, name, self._text(value))
            elif name == "contents":
                tensor.contents = value
            elif (child := children.get(number)) is not None:
                self._message(child, *value)
        shape = tensor.shape[: MAX_DIMS + 1]
        v2.check_shape(shape, tensor.name, tensor.datatype, self.limits)
        if tensor.contents is not None:
            self._contents(tensor, *tensor.contents)

    def _dimensions(self, tensor: _Tensor, wire: int, value: Any) -> None:
        """Shape values, packed or not; past MAX_DIMS only counted (check_shape refuses)."""
        if wire == _VARINT:
            tensor.shape.append(_signed(value))
            return
        if wire != _LENGTH:
            raise _Malformed
        start, end = value
        packed = self.raw[start:end]
        if len(packed.translate(None, _HIGH_BYTES)) > MAX_DIMS:
            tensor.shape.extend([1] * (MAX_DIMS + 1))
            return
        pos = start
        while pos < end:
            dim, pos = self._varint(pos, end)
            tensor.shape.append(_signed(dim))

    def _contents(self, tensor: _Tensor, start: int, end: int) -> None:
        """Count `bytes_contents` elements up to what the shape and the limit allow; any other
        field (typed numbers come packed, one field each) counts against the field budget."""
        allowed = min(element_count(tensor.shape), self.limits.max_bytes_elements)
        raw, pos, elements = self.raw, start, 0
        tag = (_BYTES_CONTENTS << 3) | _LENGTH
        while pos < end:
            if raw[pos] == tag:  # the element's one-byte key: the loop that may run long
                size, pos = self._varint(pos + 1, end)
                pos += size
                elements += 1
                if elements > allowed:
                    raise InvalidInput(
                        f"input {tensor.name!r}: more than {allowed} bytes_contents elements "
                        f"for shape {tensor.shape} (at most {self.limits.max_bytes_elements} "
                        "BYTES elements per tensor)"
                    )
            else:
                self._count()
                key, pos = self._varint(pos, end)
                _value, pos = self._value(key & 7, pos, end)
        if pos > end:
            raise _Malformed


def _signed(value: int) -> int:
    """An int64 read from its varint (negative numbers are 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value
