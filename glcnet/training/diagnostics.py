"""Online health of a pretraining run: is it collapsing, is it learning something useful?

Logged to TensorBoard every ``diagnostics_every`` steps by :class:`PretrainDiagnostics`, for every
method (each keeps its positive embedding pairs: ``method.positive_pairs()``):

- ``health/<branch>_std``: mean over dimensions of the per-dimension standard deviation (ddof=1)
  of the L2-normalised embeddings of both views. Collapse drives it to 0; embeddings spread evenly
  over the sphere give about ``1/sqrt(d)``. ``health/<branch>_std_x_sqrt_d`` is the same times
  ``sqrt(d)`` (about 1 = spread, 0 = collapsed).
- ``health/<branch>_align``: ``E ||z_a - z_b||^2`` over positive pairs (Wang & Isola 2020; lower =
  views agree more; 0 to 4).
- ``health/<branch>_uniform``: ``log E exp(-2 ||z_i - z_j||^2)`` over pairs of distinct embeddings
  of one view, averaged over the two views (Wang & Isola 2020; lower = more uniform; 0 at collapse).
- ``health/<branch>_pos_sim`` and ``health/<branch>_hardest_neg_sim``: mean cosine similarity of
  positive pairs, and mean over anchors (both views) of the highest similarity to any embedding
  other than itself and its positive. A healthy run keeps positives above the hardest negatives.
- ``health/probe_mIoU``: a k-NN probe on the current encoder's deepest features of a small fixed
  set of labelled validation tiles (:class:`KnnProbe`), logged at the start and then on schedule.

``<branch>`` is ``global`` (one embedding per view) or ``local`` (GLCNet's matched regions).
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from glcnet.metrics import segmentation_metrics
from glcnet.models.segmenter import Segmenter

log = logging.getLogger(__name__)


def _uniformity(x: Tensor) -> Tensor:
    """``log mean_{i<j} exp(-2 ||x_i - x_j||^2)`` of unit rows (N >= 2)."""
    sq = torch.pdist(x, p=2).pow(2)
    return torch.logsumexp(-2.0 * sq, dim=0) - math.log(sq.numel())


@torch.no_grad()
def embedding_health(z_a: Tensor, z_b: Tensor) -> dict[str, float]:
    """Collapse, alignment, uniformity and similarity statistics of positive embedding pairs.

    Args:
        z_a: (N, d) embeddings of view a (any scale; L2-normalised here), N >= 2.
        z_b: (N, d) their positives from view b.

    Returns:
        ``std``, ``std_x_sqrt_d``, ``align``, ``uniform``, ``pos_sim``, ``hardest_neg_sim`` (see the
        module docstring).
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2 or z_a.shape[0] < 2:
        raise ValueError(
            f"need two (N, d) embedding sets with N >= 2, got {tuple(z_a.shape)}, "
            f"{tuple(z_b.shape)}"
        )
    a = F.normalize(z_a.detach().float(), dim=1)
    b = F.normalize(z_b.detach().float(), dim=1)
    n, d = a.shape
    z = torch.cat([a, b])
    std = z.std(dim=0).mean()
    sim = z @ z.T
    idx = torch.arange(2 * n, device=z.device)
    partner = torch.cat([idx[n:], idx[:n]])
    excluded = torch.zeros_like(sim, dtype=torch.bool)
    excluded[idx, idx] = True
    excluded[idx, partner] = True
    hardest = sim.masked_fill(excluded, float("-inf")).max(dim=1).values
    return {
        "std": float(std),
        "std_x_sqrt_d": float(std * math.sqrt(d)),
        "align": float((a - b).pow(2).sum(1).mean()),
        "uniform": float((_uniformity(a) + _uniformity(b)) / 2),
        "pos_sim": float((a * b).sum(1).mean()),
        "hardest_neg_sim": float(hardest.mean()),
    }


def majority_labels(mask: Tensor, size: tuple[int, int], num_classes: int, ignore: int) -> Tensor:
    """Labels of a coarse grid: the most frequent class in each cell (ignore where none is labelled).

    Args:
        mask: (B, H, W) class indices, ``ignore`` for unlabelled pixels.
        size: (h, w) grid; H and W must be multiples of h and w.
        num_classes: K.
        ignore: The ignore index.

    Returns:
        (B, h, w) int64.
    """
    h, w = size
    valid = (mask >= 0) & (mask < num_classes)
    hot = F.one_hot(mask.clamp(0, num_classes - 1).long(), num_classes).permute(0, 3, 1, 2)
    hot = (hot * valid[:, None]).float()
    counts = F.adaptive_avg_pool2d(hot, (h, w))
    labels = counts.argmax(1)
    return labels.masked_fill(counts.sum(1) == 0, ignore)


class KnnProbe:
    """A fast k-NN probe of an encoder on a few fixed labelled tiles.

    The tiles are chosen evenly spaced over ``tiles`` (so they span its scenes) and split
    alternately into reference and query tiles. Features of the deepest encoder map are z-scored per
    channel with the reference pixels' statistics and L2-normalised. Every query pixel (cells
    labelled by majority) takes the similarity-weighted vote (weights ``exp(cos / 0.07)``)
    of its ``k`` most similar reference pixels; the mIoU of the votes over the query pixels is the
    score (:func:`glcnet.metrics.segmentation_metrics`, absent classes left out of the mean).

    Args:
        tiles: Labelled tiles (items with ``image`` and ``mask``), e.g. the validation split.
        count: Number of tiles used (half reference, half query).
        num_classes: K.
        ignore_index: Label of unlabelled pixels.
        k: Neighbours per query pixel.
        temperature: Temperature of the vote weights.
    """

    def __init__(
        self,
        tiles: Dataset,
        count: int = 8,
        num_classes: int = 6,
        ignore_index: int = 255,
        k: int = 10,
        temperature: float = 0.07,
    ) -> None:
        if count < 2:
            raise ValueError(f"the k-NN probe needs at least 2 tiles, got {count}")
        n = len(tiles)
        if n < count:
            raise ValueError(f"the k-NN probe wants {count} tiles, the split has {n}")
        picks = [round(i * (n - 1) / (count - 1)) for i in range(count)]
        items = [tiles[i] for i in picks]
        self.images = torch.stack([it["image"] for it in items])
        self.masks = torch.stack([it["mask"] for it in items]).long()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.k = k
        self.temperature = temperature

    @torch.no_grad()
    def __call__(self, model: Segmenter) -> float:
        """MIoU of the k-NN probe on ``model``'s encoder (run in eval mode; modes restored).

        Returns:
            mIoU in [0, 1] (NaN if no query pixel is labelled).
        """
        device = next(model.parameters()).device
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            feats = model.net.encoder(self.images.to(device))[-1].float()
        finally:
            for m, mode in modes.items():
                m.train(mode)
        h, w = feats.shape[-2:]
        labels = majority_labels(self.masks.to(device), (h, w), self.num_classes, self.ignore_index)
        f = feats.permute(0, 2, 3, 1).reshape(feats.shape[0], -1, feats.shape[1])
        ref_f, qry_f = f[0::2].reshape(-1, f.shape[2]), f[1::2].reshape(-1, f.shape[2])
        mean, std = ref_f.mean(0), ref_f.std(0).clamp_min(1e-6)  # z-score with reference stats
        ref_f = F.normalize((ref_f - mean) / std, dim=1)
        qry_f = F.normalize((qry_f - mean) / std, dim=1)
        ref_y, qry_y = labels[0::2].reshape(-1), labels[1::2].reshape(-1)
        keep = ref_y != self.ignore_index
        ref_f, ref_y = ref_f[keep], ref_y[keep]
        keep = qry_y != self.ignore_index
        qry_f, qry_y = qry_f[keep], qry_y[keep]
        if ref_y.numel() == 0 or qry_y.numel() == 0:
            return float("nan")
        sims, nn_idx = (qry_f @ ref_f.T).topk(min(self.k, ref_y.numel()), dim=1)
        votes = torch.zeros(qry_y.numel(), self.num_classes, device=device)
        votes.scatter_add_(1, ref_y[nn_idx], (sims / self.temperature).exp())
        pred = votes.argmax(1)
        confusion = torch.bincount(
            qry_y * self.num_classes + pred, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)
        return float(segmentation_metrics(confusion.cpu().double())["mIoU"])


class PretrainDiagnostics(L.Callback):
    """Logs :func:`embedding_health` of every embedding branch and the k-NN probe mIoU.

    Args:
        every: Log every this many optimizer steps (0: never).
        probe: The k-NN probe, or None for the embedding statistics only.
    """

    def __init__(self, every: int, probe: KnnProbe | None = None) -> None:
        self.every = every
        self.probe = probe

    def _log(self, trainer: L.Trainer, values: dict[str, float]) -> None:
        if trainer.logger is not None and values:
            trainer.logger.log_metrics(values, step=trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self.every and self.probe is not None and trainer.is_global_zero:
            self._log(trainer, {"health/probe_mIoU": self.probe(pl_module.method.model)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if not self.every or trainer.global_step % self.every or not trainer.is_global_zero:
            return
        values = {}
        for branch, (z_a, z_b) in pl_module.method.positive_pairs().items():
            if z_a.shape[0] >= 2:
                for key, value in embedding_health(z_a, z_b).items():
                    values[f"health/{branch}_{key}"] = value
        if self.probe is not None:
            values["health/probe_mIoU"] = self.probe(pl_module.method.model)
        self._log(trainer, values)


def build_knn_probe(data, count: int) -> KnnProbe | None:
    """The k-NN probe on ``count`` validation tiles of ``data`` (a TileData), or None.

    Returns None (with a warning saying why) when ``count`` is 0 or the validation split has no
    usable labels, so pretraining on unlabelled data still runs.
    """
    if not count:
        return None
    try:
        tiles = data.dataset("val", labeled=True)
        return KnnProbe(tiles, count, data.num_classes, data.ignore_index)
    except (OSError, ValueError) as err:
        log.warning("pretraining health: k-NN probe off (no %d labelled val tiles: %s)", count, err)
        return None
