"""readback: the pinned host buffers a CUDA loop's values are copied into, reused from step to
step (the copies themselves need a GPU: tests/test_cuda.py)."""

from __future__ import annotations

import torch

from stepdbg.collector.readback import HELD_BUFFERS, MIN_BUFFER, PinnedBuffers


def pool() -> tuple[PinnedBuffers, list[torch.Tensor]]:
    """A pool of ordinary CPU tensors standing in for pinned ones, and what it allocated."""
    made: list[torch.Tensor] = []

    def allocate(numel: int, dtype: torch.dtype) -> torch.Tensor:
        made.append(torch.empty(numel, dtype=dtype))
        return made[-1]

    return PinnedBuffers(allocate, object), made


def test_a_buffer_read_is_reused_by_the_next_step() -> None:
    buffers, made = pool()
    first = buffers.take(5, torch.float32, 0)
    second = buffers.take(5, torch.float32, 0)  # queued before the first is read: a buffer of its own
    assert len(made) == 2 and first[0] is not second[0]
    buffers.give_back(first)
    third = buffers.take(3, torch.float32, 0)
    assert third[0] is first[0] and third[1] is first[1]  # its event too
    assert len(made) == 2 and made[0].numel() == MIN_BUFFER


def test_a_buffer_is_reused_only_for_values_it_can_hold() -> None:
    buffers, made = pool()
    lease = buffers.take(2, torch.float32, 0)
    buffers.give_back(lease)
    assert buffers.take(MIN_BUFFER + 1, torch.float32, 0)[0] is not lease[0]  # too small
    assert buffers.take(2, torch.float64, 0)[0] is not lease[0]  # another dtype
    assert buffers.take(2, torch.float32, 1)[0] is not lease[0]  # another device's event
    assert buffers.take(2, torch.float32, 0)[0] is lease[0]
    assert made[1].numel() == MIN_BUFFER + 1


def test_the_pool_keeps_a_few_buffers() -> None:
    buffers, made = pool()
    leases = [buffers.take(1, torch.float32, 0) for _ in range(HELD_BUFFERS + 3)]
    for lease in leases:
        buffers.give_back(lease)
    for _ in range(HELD_BUFFERS + 3):
        buffers.take(1, torch.float32, 0)
    assert len(made) == (HELD_BUFFERS + 3) + 3  # it held HELD_BUFFERS of those given back
