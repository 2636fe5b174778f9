"""Errors that the command line reports as one line, without a traceback."""


class TrainingError(Exception):
    """A user-facing failure: bad input, missing data or a failed export gate."""


class ParityError(TrainingError):
    """An exported artifact disagrees with eager PyTorch beyond the tolerance."""
