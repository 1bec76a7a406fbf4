"""SwAV: online clustering with swapped prediction of Sinkhorn codes.

Reference: Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", NeurIPS 2020 (seed note 002). Loss and codes: :mod:`glcnet.losses.swav`.

Each view's embedding ``z = normalise(g(mean_hw(aspp(x))))`` is scored against K unit prototypes
``c_k`` (a bias-free linear layer whose rows are re-normalised after every optimizer step). The codes
of the two large views (Sinkhorn-Knopp over the batch of all processes, plus the queue when it is in
use) are predicted by the other large view and by every small crop.

Multi-crop: when the batch holds ``crops`` (B, V, C, s, s), V small crops per tile (s divisible by
the output stride), they go through the same network and head and predict the codes of both large
views; they never get codes of their own (as in SwAV). The paired-view generator does not produce
them yet.

Queue (``queue_length > 0``): one queue per large view holds the embeddings of earlier batches (all
processes, identical everywhere, in the checkpoint). Filling starts at optimizer step
``queue_start_step``; once a queue is full its entries join the Sinkhorn problem of that view (so
small batches still get equipartitioned codes), scored against the current prototypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glcnet.losses.memory import Queue
from glcnet.losses.swav import SwAVLoss
from glcnet.methods.base import PretrainMethod
from glcnet.methods.simclr import global_embedding
from glcnet.models.heads import ProjectionHead
from glcnet.models.segmenter import Segmenter

__all__ = ["SwAV"]


class SwAV(PretrainMethod):
    """SwAV on DeepLabV3+ (module docstring).

    Args:
        model: The DeepLabV3+ network being pretrained.
        head_dims: Hidden and output widths of the projection head (input = decoder channels).
        num_prototypes: K (3000 for ImageNet in SwAV; a few hundred suits ~10^4 tiles).
        temperature: tau of the prediction softmax (0.1).
        epsilon: Sinkhorn regularisation (0.05).
        sinkhorn_iterations: Sinkhorn iterations (3).
        queue_length: Stored embeddings per large view; 0: no queue.
        queue_start_step: Optimizer step from which the queue is filled.
        freeze_prototypes_steps: The prototypes get no gradient (are not updated) during the first
            this many optimizer steps, as in SwAV's first epoch.
        gather_distributed: Codes over all processes' samples; enqueue every process's embeddings.
    """

    def __init__(
        self,
        model: Segmenter,
        head_dims: Sequence[int] = (256, 128),
        num_prototypes: int = 300,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 0,
        queue_start_step: int = 0,
        freeze_prototypes_steps: int = 0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=False)
        for name, value, low in (
            ("num_prototypes", num_prototypes, 1),
            ("queue_length", queue_length, 0),
            ("queue_start_step", queue_start_step, 0),
            ("freeze_prototypes_steps", freeze_prototypes_steps, 0),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        self.head = ProjectionHead([model.decoder_channels, *head_dims])
        self.prototypes = nn.Linear(self.head.out_dim, int(num_prototypes), bias=False)
        self.normalize_prototypes()
        self.loss = SwAVLoss(temperature, epsilon, sinkhorn_iterations, gather_distributed)
        self.queues = nn.ModuleList(
            [Queue(queue_length, self.head.out_dim, init="empty") for _ in range(2)]
            if queue_length
            else []
        )
        self.queue_start_step = int(queue_start_step)
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        self.gather_distributed = bool(gather_distributed)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))  # optimizer steps done

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss, then (from ``queue_start_step``) enqueue the large views' embeddings.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S); optionally ``crops`` (B, V, C, s, s).

        Returns:
            ``loss`` and ``queue_in_use`` (1.0 when the queue joined the codes).
        """
        view_a, view_b = batch["view_a"], batch["view_b"]
        n = view_a.shape[0]
        z = F.normalize(global_embedding(self.model, self.head, torch.cat([view_a, view_b])), dim=1)
        views = [z[:n], z[n:]]
        self.remember("global", views[0], views[1])
        crops = batch.get("crops")
        if crops is not None:
            if crops.dim() != 5 or crops.shape[0] != n:
                raise ValueError(f"crops must be ({n}, V, C, s, s), got {tuple(crops.shape)}")
            zc = global_embedding(self.model, self.head, crops.flatten(0, 1))
            zc = F.normalize(zc, dim=1).reshape(n, crops.shape[1], -1)
            views += list(zc.unbind(1))
        weight = self.prototypes.weight  # frozen steps: gradient dropped in on_after_backward
        in_use = len(self.queues) > 0 and all(q.is_full for q in self.queues)
        queue_scores = None
        with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 scores
            weight = weight.float()
            scores = [v.float() @ weight.T for v in views]
            if in_use:
                queue_scores = [q.snapshot()[0] @ weight.detach().T for q in self.queues]
        loss = self.loss(scores, queue_scores)
        if self.queues and self.training and int(self.step) >= self.queue_start_step:
            for queue, emb in zip(self.queues, views[:2]):
                queue.enqueue(emb.float(), gather_distributed=self.gather_distributed)
        return {"loss": loss, "queue_in_use": torch.tensor(float(in_use), device=loss.device)}

    def on_after_backward(self) -> None:
        """During the first ``freeze_prototypes_steps`` drop the prototypes' gradient (as SwAV does).

        The prototypes stay in the graph, so DDP reduces their gradient like every other one (no
        ``find_unused_parameters``); the optimizer skips a parameter whose gradient is None.
        """
        if int(self.step) < self.freeze_prototypes_steps:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def on_train_step_end(self) -> None:
        """Re-normalise the prototypes and count the step."""
        self.normalize_prototypes()
        self.step += 1
