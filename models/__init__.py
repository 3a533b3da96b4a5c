"""Two-tower retrieval models (TFRS) trained with the tfcroloss losses."""

from tfcroloss.models.loss_presets import PRESETS, build_loss
from tfcroloss.models.two_tower import NEGATIVE_MODES, TwoTowerModel

__all__ = ["NEGATIVE_MODES", "PRESETS", "TwoTowerModel", "build_loss"]
