"""Two-tower retrieval models (TFRS) trained with the tfcroloss losses."""

from tfcroloss.models.loss_presets import PRESETS, build_loss
from tfcroloss.models.optimizers import OPTIMIZERS, LazyAdam, build_optimizer
from tfcroloss.models.two_tower import NEGATIVE_MODES, TwoTowerModel

__all__ = ["NEGATIVE_MODES", "OPTIMIZERS", "PRESETS", "LazyAdam", "TwoTowerModel", "build_loss", "build_optimizer"]
