"""What every pretraining method provides to the training loop."""

from __future__ import annotations

from torch import Tensor, nn

from glcnet.models.segmenter import Segmenter


class PretrainMethod(nn.Module):
    """Base class of the pretraining methods.

    A method owns the network being pretrained (``self.model``, exported for fine-tuning), its heads
    and its loss, and maps a batch of paired views to a dict of scalars with the key ``loss``.
    State that must survive a restart (memory bank, queue, momentum encoder) lives in buffers or
    sub-modules, so it is saved in and restored from the Lightning checkpoint.

    Class attributes read by the training loop:
        requires_labels: The pretraining tiles must carry their ``mask`` (SupCon).
        requires_num_samples: The constructor takes ``num_samples`` = number of pretraining tiles
            (memory bank); the run passes it.

    Every trainable parameter must receive a gradient on every step, so that plain DDP (no search
    for unused parameters) works: parts of the network that a method's loss does not reach are
    frozen here.

    Every ``forward`` keeps its positive embedding pairs, detached, with :meth:`remember`;
    :meth:`positive_pairs` returns them per branch (``global``: one embedding per view, ``local``:
    matched regions) for the pretraining health diagnostics (:mod:`glcnet.training.diagnostics`).

    Args:
        model: The DeepLabV3+ network being pretrained.
        uses_decoder_output: The loss uses the decoder output; False freezes the decoder layers
            after the ASPP (they are then exported as initialised).
    """

    requires_labels: bool = False
    requires_num_samples: bool = False

    def __init__(self, model: Segmenter, uses_decoder_output: bool = True) -> None:
        super().__init__()
        self.model = model
        self.uses_decoder_output = uses_decoder_output
        self._remembered: dict[str, tuple[Tensor, Tensor, Tensor | None]] = {}
        if not uses_decoder_output:
            for layer in getattr(model, "decoder_output_layers", list)():
                layer.requires_grad_(False)
        # the classifier is not part of any pretraining objective: freeze it so that DDP does not
        # wait for gradients that never come (fine-tuning builds a fresh one)
        head = getattr(model, "head", None)
        if head is not None:
            head.requires_grad_(False)

    def remember(self, branch: str, z_a: Tensor, z_b: Tensor, valid: Tensor | None = None) -> None:
        """Keep (detached, without copying) the positive pairs of ``branch`` of this step.

        Args:
            branch: ``global`` or ``local``.
            z_a: (N, d) embeddings; row i of ``z_a`` and ``z_b`` are positives.
            z_b: (N, d).
            valid: (N,) bool rows that are real pairs (applied only when the pairs are read, so
                training steps never wait for a boolean-mask index).
        """
        self._remembered[branch] = (z_a.detach(), z_b.detach(), valid)

    def positive_pairs(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The positive embedding pairs of the last ``forward``: branch -> ((N, d), (N, d))."""
        out = {}
        for branch, (z_a, z_b, valid) in self._remembered.items():
            out[branch] = (z_a, z_b) if valid is None else (z_a[valid], z_b[valid])
        return out

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Losses of one batch; see :class:`glcnet.methods.glcnet.GLCNet` for the batch keys."""
        raise NotImplementedError

    def on_after_backward(self) -> None:
        """Called after every backward pass, before the optimizer step; no-op by default."""

    def on_train_step_end(self) -> None:
        """Called after every optimizer step (momentum-encoder updates); no-op by default."""
