"""`config.pbtxt`: Triton's `ModelConfig` in protobuf text format, read and written with
protobuf's own `text_format` against the `model_config_pb2` that tritonclient ships."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from service.errors import ModelConfigError

CONFIG_FILE = "config.pbtxt"


def parse_config(text: str, source: str = CONFIG_FILE) -> ModelConfig:
    """Parse protobuf text; a syntax error or unknown field names `source` and the line."""
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as error:
        line = error.GetLine()
        if line is None:
            raise ModelConfigError(f"{source}: {error}") from None
        # str(error) is "line:column : message"; say where in words, then the message.
        message = str(error).split(" : ", 1)[-1]
        raise ModelConfigError(
            f"{source} line {line} column {error.GetColumn()}: {message}"
        ) from None


def read_config(path: Path) -> ModelConfig:
    """Read and parse one `config.pbtxt`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ModelConfigError(f"{path}: not UTF-8 text ({error.reason})") from None
    return parse_config(text, str(path))


def render_pbtxt(config: ModelConfig) -> str:
    """The configuration as `config.pbtxt` text, ready to edit and read back."""
    return str(text_format.MessageToString(config))
