"""The one restart policy of the gateway's process supervisors (the `GATEWAY_WORKERS`
supervisor and the handler process pools): replace an exited process at once; while its
replacements keep failing, wait twice as long each time, up to a ceiling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    first_delay_s: float = 0.5
    """The wait after the first failed start."""
    max_delay_s: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start, after `failures` failed starts in a row."""
        if failures <= 0:
            return 0.0
        doubled: float = self.first_delay_s * (1 << (failures - 1))
        return min(doubled, self.max_delay_s)


RESTARTS = RestartBackoff()
