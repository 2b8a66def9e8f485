"""Where the shared protocol corpus lives: ../shared/corpus beside the checkout (as in CI)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("L7SCOPE_CORPUS", REPO.parent / "shared" / "corpus")) / "deepflow"
