"""The terms of the alignment loss, one per module: :mod:`.pairwise` and :mod:`.omega`."""
from .omega import regulariser
from .pairwise import pairwise_loss

__all__ = ["pairwise_loss", "regulariser"]
