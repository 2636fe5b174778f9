"""How ONNX Runtime's intra-op threads wait for work: one value, chosen per model from the
settings, turned into session config entries in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spinning:
    within_runs: bool = True
    """Busy-wait between the parallel sections of a run instead of sleeping."""
    after_runs: bool = True
    """Keep busy-waiting once the last concurrent run has returned (ONNX Runtime's default);
    False stops the threads there, so a server waiting for its next request burns nothing."""

    def session_config(self) -> dict[str, str]:
        return {
            "session.intra_op.allow_spinning": "1" if self.within_runs else "0",
            "session.force_spinning_stop": "0" if self.after_runs else "1",
        }


ONNX_RUNTIME_DEFAULT = Spinning()
"""Spinning within and after runs, as a plain InferenceSession does."""
