"""Gradient and update norms in as few torch calls as possible.

On small models the cost of a norm is per-op dispatch, not bytes, so many
small gradients are flattened into one buffer and reduced at once; large ones
go through ``torch._foreach_norm``, which reads each byte once. An optimizer's
way of taking its per-group norms is decided once (`GroupNormPlan`). Every result
is a float32 norm, float64 for float64 gradients. On CUDA all of a step's norms
are stacked into one tensor, so that reading them back is a single transfer;
on the CPU each is read as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

FLATTEN_MAX_NUMEL = 1 << 16
"""Gradients up to this size are copied into one flat buffer: cheaper than a kernel each."""

TENSORS_PER_GROUP_TO_BUFFER = 4
"""Groups with fewer gradients than this on average (a group per layer, per parameter) are
normed tensor by tensor in one ``_foreach_norm``: a buffer per group would cost two torch calls
a group (48 groups of two 64×64 layers: 540 us a step against 330)."""


def is_sharded(tensor: torch.Tensor) -> bool:
    """A DTensor (FSDP2's and tensor parallelism's parameters and gradients): each rank holds
    shards of it, and a norm of the whole would be a collective."""
    return hasattr(type(tensor), "to_local")


def local_shards(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` with each DTensor replaced by this rank's shard of it: norms of them are this
    rank's part (the global one is the root of the ranks' squares), computed with no collective."""
    return [_local(t) if is_sharded(t) else t for t in tensors]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    local = getattr(tensor, "_local_tensor", None)  # what to_local() returns, without an autograd call
    return local if isinstance(local, torch.Tensor) else tensor.to_local()  # type: ignore[attr-defined]


def _accumulate_in(dtype: torch.dtype) -> torch.dtype | None:
    """The dtype to take a norm of ``dtype`` values in: float32 for narrower floats
    (fp16, bf16, fp8), the values' own for float32, float64 and complex (None)."""
    if dtype.is_floating_point and dtype.itemsize < 4:
        return torch.float32
    return None


def _dense_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """0-d norms (float32 or wider) whose squares add up to the squared norm of ``tensors``."""
    pieces: list[torch.Tensor] = []
    small: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    large: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        bucket = small if tensor.numel() <= FLATTEN_MAX_NUMEL else large
        bucket.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    pieces.extend(flat_norm(group) for group in small.values())
    for group in large.values():
        pieces.extend(per_tensor_norms(group))
    return pieces


def flat_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The norm (float32 or wider) of small dense tensors of one dtype and device, as one flat buffer."""
    flat = tensors[0].reshape(-1) if len(tensors) == 1 else torch._C._nn.flatten_dense_tensors(list(tensors))
    return torch.linalg.vector_norm(flat, dtype=_accumulate_in(flat.dtype))


def flattenable(tensors: Sequence[torch.Tensor]) -> bool:
    """Small dense tensors of one dtype on one device: one flat copy beats a kernel each."""
    first = tensors[0]
    dtype, device = first.dtype, first.device
    for t in tensors:
        if t.is_sparse or t.numel() > FLATTEN_MAX_NUMEL or t.dtype != dtype or t.device != device:
            return False
    return True


def per_tensor_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """One 0-d norm (float32 or wider) per tensor (dense or sparse)."""
    dense = [t for t in tensors if not t.is_sparse]
    if len(dense) == len(tensors):
        if not tensors:
            return []
        narrow = [t for t in tensors if _accumulate_in(t.dtype) is not None]
        if not narrow:
            return list(torch._foreach_norm(list(tensors), 2))
        if len(narrow) == len(tensors):
            return list(torch._foreach_norm(list(tensors), 2, torch.float32))
        return [_single_norm(t) for t in tensors]  # narrow and wide mixed: rare
    return [_single_norm(t) for t in tensors]


def _single_norm(tensor: torch.Tensor) -> torch.Tensor:
    values = tensor.coalesce()._values() if tensor.is_sparse else tensor
    return torch.linalg.vector_norm(values, dtype=_accumulate_in(values.dtype))


@dataclass(frozen=True, slots=True)
class GroupNormPlan:
    """How to take the per-group norms of an optimizer's gradients step after step: decided
    once from their layout, so that a step pays only for its torch calls.

    ``runs``: the gradients are small dense tensors of one dtype and device, in few groups:
    one flat copy, split into each group's run of elements, one norm per group. Otherwise,
    ``per_tensor`` for many small groups, or buffers by size within each group (`group_norm_pieces`).
    """

    lengths: tuple[int, ...]
    """Gradients per group, in order."""
    runs: tuple[int, ...] | None
    """Elements per group that has gradients, when they share one flat buffer."""
    per_tensor: bool

    @classmethod
    def of(cls, grads: Sequence[torch.Tensor], lengths: Sequence[int]) -> GroupNormPlan:
        lengths = tuple(lengths)
        filled = [n for n in lengths if n]
        per_tensor = len(filled) > 1 and TENSORS_PER_GROUP_TO_BUFFER * len(filled) > len(grads)
        runs = None
        if grads and not per_tensor and flattenable(grads):
            runs = tuple(sum(g.numel() for g in group) for group in _groups(grads, lengths) if group)
        return cls(lengths, runs, per_tensor)

    def pieces(self, grads: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        """Norm pieces and how many each group has (see `combine`). Raises RuntimeError where
        the gradients no longer fit the plan's flat buffer (see `without_buffer`)."""
        if self.runs is not None:
            counts = [1 if n else 0 for n in self.lengths]
            if len(self.runs) == 1:
                return [flat_norm(grads)], counts
            flat = torch._C._nn.flatten_dense_tensors(list(grads))
            return list(torch._foreach_norm(flat.split(self.runs), 2, _accumulate_in(flat.dtype))), counts
        if self.per_tensor:
            return per_tensor_norms(grads), list(self.lengths)
        return group_norm_pieces(list(_groups(grads, self.lengths)))

    def without_buffer(self) -> GroupNormPlan:
        """The plan for gradients that stopped sharing one buffer (one made sparse, moved to another device)."""
        return replace(self, runs=None)


def _groups(grads: Sequence[torch.Tensor], lengths: Sequence[int]) -> Iterator[Sequence[torch.Tensor]]:
    start = 0
    for length in lengths:
        yield grads[start : start + length]
        start += length


def group_norm_pieces(groups: Sequence[Sequence[torch.Tensor]]) -> tuple[list[torch.Tensor], list[int]]:
    """Norm pieces for each group of gradients, and how many pieces each group has.

    A group's norm is the root of the sum of its pieces' squares (`combine`).
    """
    if len(groups) == 1 and len(groups[0]) and flattenable(groups[0]):
        return [flat_norm(groups[0])], [1]  # the common case, in two torch calls, without bucketing
    pieces: list[torch.Tensor] = []
    counts: list[int] = []
    for grads in groups:
        dense = [g for g in grads if not g.is_sparse]
        group_pieces = _dense_norms(dense) if dense else []
        group_pieces.extend(_single_norm(g) for g in grads if g.is_sparse)
        pieces.extend(group_pieces)
        counts.append(len(group_pieces))
    return pieces, counts


def stack(pieces: list[torch.Tensor]) -> torch.Tensor | None:
    """All pieces as one vector (float32, or float64 if any is) on the first piece's device, for one read-back."""
    if not pieces:
        return None
    device = pieces[0].device
    if any(p.device != device for p in pieces):
        pieces = [p.to(device) for p in pieces]
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in pieces) else torch.float32
    return torch.stack([p if p.dtype == dtype else p.to(dtype) for p in pieces])


def read_floats(pieces: list[torch.Tensor]) -> list[float]:
    """CPU tensors' values as floats. One ``item()`` each: on the CPU there is no transfer
    to save, and stacking first costs more (288 pieces: 47 us against 150 us)."""
    return [p.item() for p in pieces]


def combine(values: Sequence[float], counts: Sequence[int]) -> list[float | None]:
    """Per-group norms from the pieces' norms: None for a group with no gradient."""
    result: list[float | None] = []
    start = 0
    for count in counts:
        chunk = values[start : start + count]
        start += count
        result.append(math.sqrt(math.fsum(v * v for v in chunk)) if count else None)
    return result


def total(norms: Sequence[float | None]) -> float | None:
    """The norm of several norms' concatenation; None when all are None."""
    present = [n for n in norms if n is not None]
    if not present:
        return None
    return math.sqrt(math.fsum(n * n for n in present))


def _readable_now(tensor: torch.Tensor) -> bool:
    """A dense CPU tensor, not a DTensor: its values can be read without a host sync or a collective."""
    return tensor.is_cpu and not tensor.is_sparse and not is_sharded(tensor)


def holding_values(tensors: Sequence[torch.Tensor]) -> list[bool]:
    """Which tensors hold a non-zero (or NaN) value. Read on the CPU only: on an accelerator
    reading values would be a host sync, and a DTensor's a collective; those count as
    holding none."""
    readable = [_readable_now(t) for t in tensors]
    with torch.no_grad():
        found = iter(_nonzero_now([t for t, ok in zip(tensors, readable) if ok]))
    return [ok and next(found) for ok in readable]


def values_held(tensors: Sequence[torch.Tensor]) -> list[bool | torch.Tensor]:
    """Whether each tensor (this rank's shard of a DTensor) holds a non-zero (or NaN) value,
    where not knowing must not pass for zeros: a bool for a CPU tensor, read now; for a
    dense CUDA tensor its largest magnitude (0-d), to be read later with other values
    (reading it now would be a host sync); True for the rest (sparse, other devices)."""
    plain = all(type(t) is torch.Tensor for t in tensors)  # no DTensor: skip asking each one
    local = tensors if plain else local_shards(tensors)
    readable = [t.is_cpu and not t.is_sparse for t in local]
    later = [t.is_cuda and not t.is_sparse for t in local]
    with torch.no_grad():
        read = iter(_nonzero_now([t for t, ok in zip(local, readable) if ok]))
        queued = iter(_largest_magnitudes([t for t, ok in zip(local, later) if ok]))
    return [next(read) if now else next(queued) if on_device else True for now, on_device in zip(readable, later)]


def _nonzero_now(tensors: Sequence[torch.Tensor]) -> list[bool]:
    """Which dense CPU tensors hold a non-zero (or NaN) value. Small ones are first looked at
    all at once, in one flat copy: where all were cleared (the common answer) that is the
    only pass."""
    if len(tensors) > 1 and flattenable(tensors):
        flat = torch._C._nn.flatten_dense_tensors(list(tensors))
        if torch.linalg.vector_norm(flat, math.inf).item() == 0:
            return [False] * len(tensors)
    return [value != 0 for value in read_floats(_largest_magnitudes(tensors))]


def _largest_magnitudes(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each dense tensor's largest absolute value, 0-d (NaN where it holds one). Not a 2-norm:
    its squares vanish below about 1e-20 in float32, and a tensor of such values would pass for zeros.
    (Nor ``any()``, which takes several times as long on floats.)"""
    return list(torch._foreach_norm(list(tensors), math.inf)) if tensors else []


def snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the parameters, to measure how far a step moves them."""
    with torch.no_grad():
        return [p.detach().clone() for p in params]


def update_pieces(before: list[torch.Tensor], params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-parameter ‖Δθ‖ followed by per-parameter ‖θ‖ (2·n pieces).

    ``before`` (a `snapshot`, spent here) becomes the deltas in place: a detail
    step holds one copy of the model, not two, and writes no new buffer.
    """
    if not before:
        return []
    with torch.no_grad():
        after = [p.detach() for p in params]
        torch._foreach_sub_(before, after)  # θ_before - θ_after: -Δθ, the same norm
        return per_tensor_norms(before) + per_tensor_norms(after)
