"""Loss stack (temporary BCE-only version; the full stack lands with issue 4)."""
from losses.build import LossStack, build_loss

__all__ = ["LossStack", "build_loss"]
