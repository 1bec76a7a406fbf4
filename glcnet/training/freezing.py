"""Freezing parts of a network: parameters fixed and batch-norm statistics fixed (eval mode).

A frozen part must come out of training bit-identical, running statistics included, so freezing
means both ``requires_grad=False`` and eval mode, and eval mode must survive every ``train()`` call
the training loop makes (Lightning switches the whole module back to train mode after each
validation). :class:`ModeKeeper` re-applies eval mode after such calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

#: Parts of a :class:`glcnet.models.segmenter.Segmenter` that can be frozen.
PARTS = ("encoder", "decoder")
#: Batch-norm handling of the encoder during fine-tuning.
BN_MODES = ("train", "frozen_stats")


def transferred_parts(transfer: str) -> list[str]:
    """The network parts a ``transfer`` setting hands over (``encoder`` or ``encoder+decoder``)."""
    if transfer not in ("encoder", "encoder+decoder"):
        raise ValueError(f"transfer must be 'encoder' or 'encoder+decoder', got {transfer!r}")
    return ["encoder"] if transfer == "encoder" else ["encoder", "decoder"]


def batch_norm_layers(module: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer (any ``_BatchNorm``, SyncBatchNorm included) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class ModeKeeper:
    """Keeps chosen sub-modules in eval mode whatever mode their parent is switched to.

    Args:
        frozen: Modules whose parameters are frozen here and which always stay in eval mode.
        fixed_statistics: Modules that stay in eval mode but keep training their parameters
            (e.g. the encoder's batch-norm layers with ``bn_mode=frozen_stats``).
    """

    def __init__(
        self, frozen: Sequence[nn.Module] = (), fixed_statistics: Sequence[nn.Module] = ()
    ) -> None:
        self.frozen = list(frozen)
        self.fixed_statistics = list(fixed_statistics)
        for module in self.frozen:
            module.requires_grad_(False)
        self.apply()

    def apply(self) -> None:
        """Put every kept module back into eval mode (call after ``parent.train()``)."""
        for module in (*self.frozen, *self.fixed_statistics):
            module.eval()

    def __bool__(self) -> bool:
        return bool(self.frozen or self.fixed_statistics)
