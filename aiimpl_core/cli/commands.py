"""The core's command groups beyond ``serve``/``plugins``/``config``; each module adds itself to ``cli``."""
from __future__ import annotations
