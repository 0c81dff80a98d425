"""ELF-VC model (Rippel et al., "ELF-VC: Efficient Learned Flexible-Rate Video Coding")."""

from model.config import FRAME_MULTIPLE, ModelConfig, config_names, get_config  # noqa: F401
from model.entropy import QuantMode  # noqa: F401
