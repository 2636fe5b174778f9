"""Reporting: the result records, the goals as data and their verdicts, `docs/benchmarks.md`
and its plots."""
