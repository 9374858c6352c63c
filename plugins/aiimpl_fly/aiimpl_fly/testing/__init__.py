"""Test kit of aiimpl-fly: a Swagger 2.0 validator and a fake Fly Machines API checked by it."""

from __future__ import annotations

from .fake_fly import FakeFly, fly_spec_path
from .swagger import SwaggerDescription, SwaggerFakeServer

__all__ = ["FakeFly", "SwaggerDescription", "SwaggerFakeServer", "fly_spec_path"]
