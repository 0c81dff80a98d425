"""The one error type the codec raises for bad input, shared by every layer (model/bundle.py,
export/, runtime/): defined here so the layers below the runtime can raise it too."""

from __future__ import annotations


class CodecError(ValueError):
    """Any problem with a stream, a model folder or an input that the codec detects. Its message
    is one line that names the problem; CLIs print it and exit non-zero."""
