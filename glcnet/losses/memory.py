"""Feature stores that outlive a batch: the NPID memory bank and the MoCo / SwAV queue.

Both are ``nn.Module`` s whose state lives in buffers, so it is saved in and restored from the
checkpoint. The rules they follow (DESIGN.md section 3):

- values are detached and copied in (never a view of a tensor in the autograd graph);
- they are written *after* the loss that reads them; a loss must read a snapshot
  (:meth:`MemoryBank.snapshot`, :meth:`Queue.snapshot`), because an in-place write into a tensor
  saved for the backward pass would break it;
- distributed: the rows of every process are gathered (in rank order) before the write, so all
  processes hold identical stores, equal to that of one process trained on the concatenated batch.
  (DDP's buffer broadcast then changes nothing.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glcnet.losses.distributed import all_gather_cat

__all__ = ["MemoryBank", "Queue"]


def _check_rows(x: Tensor, dim: int, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must be (n, {dim}), got {tuple(x.shape)}")


class MemoryBank(nn.Module):
    """One L2-normalised feature per sample of the data set (Wu et al. 2018, NPID).

    Initialised with random unit vectors (Gaussian directions, drawn from torch's global
    generator, so seeded runs repeat). After each batch the entries of its samples are updated
    with the proximal (momentum) rule ``v_i <- normalise(m * v_i + (1 - m) * f_i)``.

    Args:
        num_samples: Number of samples n (rows of the bank).
        dim: Feature width d.
        momentum: m in [0, 1); 0 replaces the entry with the new feature (NPID uses 0.5).
    """

    def __init__(self, num_samples: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_samples = int(num_samples)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.register_buffer("bank", F.normalize(torch.randn(self.num_samples, self.dim), dim=1))

    def extra_repr(self) -> str:  # noqa: D102
        return f"num_samples={self.num_samples}, dim={self.dim}, momentum={self.momentum}"

    def snapshot(self) -> Tensor:
        """A detached copy of the bank, (n, d), for a loss computed before :meth:`update`."""
        return self.bank.detach().clone()

    @torch.no_grad()
    def update(self, features: Tensor, indices: Tensor, gather_distributed: bool = True) -> None:
        """Move the entries of ``indices`` towards ``features`` (call after the loss).

        Rows sharing an index (two views of one tile, or a sample padded twice by a distributed
        sampler) are averaged first, so the update is deterministic and order-independent:
        ``v_i <- normalise(m * v_i + (1 - m) * mean_{rows r with index i} f_r)``.

        Args:
            features: (B, d) features of this process (detached and copied here; normalise them
                first for the NPID rule).
            indices: (B,) int64 sample indices in ``[0, n)``.
            gather_distributed: Gather all processes' rows first (identical banks everywhere).
        """
        _check_rows(features, self.dim, "features")
        if indices.shape != (features.shape[0],) or indices.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"indices must be ({features.shape[0]},) integers, got {indices.dtype} "
                f"{tuple(indices.shape)}"
            )
        features = features.detach().to(self.bank.dtype)
        indices = indices.to(device=self.bank.device, dtype=torch.int64)
        if gather_distributed:
            features, indices = all_gather_cat(features), all_gather_cat(indices)
        if indices.numel() == 0:
            return
        if int(indices.min()) < 0 or int(indices.max()) >= self.num_samples:
            raise ValueError(
                f"indices must lie in [0, {self.num_samples}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]; is num_samples the data set size?"
            )
        unique, inverse = torch.unique(indices, return_inverse=True)
        sums = features.new_zeros(unique.shape[0], self.dim).index_add_(0, inverse, features)
        counts = torch.bincount(inverse, minlength=unique.shape[0]).to(features.dtype)
        mean = sums / counts[:, None]
        new = self.momentum * self.bank[unique] + (1.0 - self.momentum) * mean
        self.bank.index_copy_(0, unique, F.normalize(new, dim=1))


class Queue(nn.Module):
    """First-in first-out ring buffer of ``size`` keys (MoCo's negatives, SwAV's stored features).

    Keys are written at ``ptr, ptr + 1, ...`` modulo ``size``; any number of keys may be written
    at once (``size`` need not be a multiple of the batch): the pointer wraps around, and when more
    than ``size`` keys arrive only the last ``size`` are kept, exactly as if they had been written
    one by one. Optional per-key labels (multi-hot, uint8) travel with the keys (supervised MoCo).

    Args:
        size: Number of slots.
        dim: Key width d.
        label_dim: Width of the per-key multi-hot labels; 0 for none.
        init: ``"random"``: slots start as random unit vectors with all-zero labels and count as
            filled (MoCo); ``"empty"``: slots start as zeros and only written ones are returned
            (SwAV, whose queue is used once full).
    """

    def __init__(self, size: int, dim: int, label_dim: int = 0, init: str = "random") -> None:
        super().__init__()
        for name, value, low in (("size", size, 1), ("dim", dim, 1), ("label_dim", label_dim, 0)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if init not in ("random", "empty"):
            raise ValueError(f"init must be 'random' or 'empty', got {init!r}")
        self.size, self.dim, self.label_dim = int(size), int(dim), int(label_dim)
        self.init = init
        keys = torch.zeros(self.size, self.dim)
        if init == "random":
            keys = F.normalize(torch.randn(self.size, self.dim), dim=1)
        self.register_buffer("keys", keys)
        self.register_buffer("labels", torch.zeros(self.size, self.label_dim, dtype=torch.uint8))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        filled = self.size if init == "random" else 0
        self.register_buffer("filled", torch.tensor(filled, dtype=torch.int64))

    def extra_repr(self) -> str:  # noqa: D102
        return f"size={self.size}, dim={self.dim}, label_dim={self.label_dim}, init={self.init!r}"

    @property
    def is_full(self) -> bool:
        """Whether every slot holds a key."""
        return int(self.filled) == self.size

    def __len__(self) -> int:
        return int(self.filled)

    def snapshot(self) -> tuple[Tensor, Tensor]:
        """Detached copies of the filled slots, for a loss computed before :meth:`enqueue`.

        Returns:
            ``(keys, labels)``: (F, d) and (F, label_dim) uint8, F = number of filled slots (the
            slots are filled from 0 upwards, so these are the first F rows).
        """
        f = int(self.filled)
        return self.keys[:f].detach().clone(), self.labels[:f].detach().clone()

    @torch.no_grad()
    def enqueue(
        self, keys: Tensor, labels: Tensor | None = None, gather_distributed: bool = True
    ) -> None:
        """Write keys (call after the loss).

        Args:
            keys: (B, d) keys of this process (detached and copied here).
            labels: (B, label_dim) multi-hot labels (any dtype, nonzero = present) when the queue
                has labels; must be None otherwise.
            gather_distributed: Gather all processes' keys first, in rank order (identical queues
                everywhere, equal to one process's queue on the concatenated batch).
        """
        _check_rows(keys, self.dim, "keys")
        if (labels is None) != (self.label_dim == 0):
            raise ValueError(
                "labels must be given exactly when the queue has labels "
                f"(label_dim={self.label_dim})"
            )
        keys = keys.detach().to(self.keys.dtype)
        if labels is not None:
            if labels.shape != (keys.shape[0], self.label_dim):
                raise ValueError(
                    f"labels must be ({keys.shape[0]}, {self.label_dim}), got {tuple(labels.shape)}"
                )
            labels = (labels.detach() != 0).to(torch.uint8)
        if gather_distributed:
            keys = all_gather_cat(keys)
            labels = None if labels is None else all_gather_cat(labels)
        n = keys.shape[0]
        if n == 0:
            return
        keep = min(n, self.size)  # later keys overwrite earlier ones
        first = n - keep
        pos = (int(self.ptr) + first + torch.arange(keep, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, pos, keys[first:])
        if labels is not None:
            self.labels.index_copy_(0, pos, labels[first:].to(self.labels.device))
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))
