"""The Docker Engine API description, to check what the fake engine receives and answers.

``docker/swagger.yaml`` of the shared API descriptions is moby's ``api/swagger.yaml`` (Swagger 2.0),
checked with the core's :class:`~aiimpl_core.testing.swagger2.SwaggerDescription` (operations,
parameters, bodies, statuses and schemas). What is the engine's own is given to it here:

- paths match with or without the ``/v1.xx`` prefix the SDK puts before every path, whatever the
  version (the description's ``basePath`` names one);
- the engine reads booleans as Go's ``strconv.ParseBool`` does, so the SDK's ``1``/``0`` and
  ``True``/``False`` are booleans;
- the SDK still sends ``trunc_cmd`` to ``GET /containers/json``, which the description no longer
  lists (engines ignore it);
- image and distribution names carry slashes (``localhost/aiimpl-session:test``): the engine's
  router reads ``{name:.*}`` there;
- only JSON answers are checked against their schema: logs are a stream and ``_ping`` is text.
"""

from __future__ import annotations

import os
from functools import lru_cache

from aiimpl_core.testing.swagger2 import SwaggerDescription, read_document

#: what the engine's ``strconv.ParseBool`` accepts
_BOOLEANS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
#: query parameters the docker SDK sends that the description no longer lists
_SDK_EXTRAS = {("GET", "/containers/json"): frozenset({"trunc_cmd"})}


def spec_path() -> str:
    """``docker/swagger.yaml`` of the shared API descriptions."""
    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "docker", "swagger.yaml")


@lru_cache(maxsize=1)
def engine_description() -> SwaggerDescription:
    """The Engine API description, read once, with the engine's allowances above."""
    return SwaggerDescription(
        read_document(spec_path()),
        title="the Engine API description",
        path_prefix=r"/v\d+(\.\d+)?(?=/)",
        booleans=_BOOLEANS,
        extra_query=_SDK_EXTRAS,
        slashed_prefixes=("/images/", "/distribution/"),
        json_answers_only=True,
        # (a property the description does not declare is one the engine ignores: a name misspelt)
        closed_request_bodies=True,
    )
