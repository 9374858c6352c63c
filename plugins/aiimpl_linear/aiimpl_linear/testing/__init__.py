"""Test helpers of aiimpl-linear: a fake Linear server other suites and benchmarks can import."""

from __future__ import annotations

from .fake_linear import FakeLinear, linear_schema, shape_problems

__all__ = ["FakeLinear", "linear_schema", "shape_problems"]
