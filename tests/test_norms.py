"""norms: exact global, group and per-tensor norms whatever the gradients' dtypes, sizes and layouts."""

from __future__ import annotations

import math

import pytest
import torch

from stepdbg import norms

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def reference(tensors: list[torch.Tensor]) -> float:
    """The norm in float64 of exactly the values given (no rounding of our own)."""
    return math.sqrt(sum(float(t.to_dense().double().pow(2).sum()) for t in tensors))


def gradients(dtype: torch.dtype, large: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    shapes = [(32, 16), (16,), (4, 4, 3)] + ([(norms.FLATTEN_MAX_NUMEL + 5,)] if large else [])
    return [torch.randn(shape).to(dtype) for shape in shapes]


def pieces_total(groups: list[list[torch.Tensor]]) -> tuple[list[float | None], float | None]:
    pieces, counts = norms.group_norm_pieces(groups)
    by_group = norms.combine(norms.read_floats(pieces), counts)
    return by_group, norms.total(by_group)


@pytest.mark.parametrize("large", [False, True], ids=["small", "with-large"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_global_and_group_norms_are_exact(dtype: torch.dtype, large: bool) -> None:
    grads = gradients(dtype, large)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    groups, total = pieces_total([grads[:2], grads[2:]])
    assert total == pytest.approx(reference(grads), rel=rel)
    assert groups == [pytest.approx(reference(grads[:2]), rel=rel), pytest.approx(reference(grads[2:]), rel=rel)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_per_tensor_norms_are_exact(dtype: torch.dtype) -> None:
    grads = gradients(dtype, large=True)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    values = norms.read_floats(norms.per_tensor_norms(grads))
    assert values == [pytest.approx(reference([g]), rel=rel) for g in grads]


def test_mixed_dtypes_and_sparse_gradients() -> None:
    """A float64 buffer beside float32 and bf16 weights, a sparse embedding gradient."""
    torch.manual_seed(0)
    grads = [torch.randn(8, 8), torch.randn(8, dtype=torch.float64) * 1e3, torch.randn(8, 4).bfloat16()]
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 3, 3]]), torch.randn(3, 4), (10, 4), check_invariants=True)
    _, total = pieces_total([[*grads, sparse]])
    assert total == pytest.approx(reference([*grads, sparse]), rel=1e-6)
    values = norms.read_floats(norms.per_tensor_norms([*grads, sparse]))
    assert values == [pytest.approx(reference([g]), rel=1e-6) for g in [*grads, sparse]]


def test_update_pieces_of_float64_parameters() -> None:
    params = [torch.randn(4, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    start = [p.clone() for p in params]
    before = norms.snapshot(params)
    with torch.no_grad():
        for p in params:
            p.mul_(1.001)
    values = norms.read_floats(norms.update_pieces(before, params))
    deltas, sizes = values[:2], values[2:]
    assert sizes == [pytest.approx(reference([p]), rel=1e-12) for p in params]
    assert deltas == [pytest.approx(reference([p - b]), rel=1e-9) for p, b in zip(params, start)]


def plan_group_norms(grads: list[torch.Tensor], lengths: list[int]) -> tuple[norms.GroupNormPlan, list[float | None]]:
    plan = norms.GroupNormPlan.of(grads, lengths)
    pieces, counts = plan.pieces(grads)
    return plan, norms.combine(norms.read_floats(pieces), counts)


def expected_group_norms(grads: list[torch.Tensor], lengths: list[int]) -> list[float | None]:
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return [pytest.approx(reference(grads[s : s + n]), rel=1e-5) if n else None for s, n in zip(starts, lengths)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("lengths", "way"),
    [
        ([8], "buffer"),  # one group: one flat norm
        ([5, 0, 3], "buffer"),  # weights and biases apart, and a group left empty: split runs of one buffer
        ([2, 2, 2, 2], "per-tensor"),  # a group per layer: one norm per tensor, added up by group
        ([1] * 8, "per-tensor"),  # a group per parameter
    ],
    ids=["one-group", "few-groups", "group-per-layer", "group-per-parameter"],
)
def test_group_norm_plans_agree_with_the_reference(lengths: list[int], way: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    grads = [torch.randn(shape).to(dtype) for shape in [(16, 8), (8,), (8, 8), (8,), (4, 4, 3), (3,), (64,), (1,)]]
    plan, by_group = plan_group_norms(grads, lengths)
    assert ("buffer" if plan.runs is not None else "per-tensor" if plan.per_tensor else "buckets") == way
    assert by_group == expected_group_norms(grads, lengths)


def test_large_gradients_in_few_groups_are_normed_without_a_flat_copy() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(norms.FLATTEN_MAX_NUMEL + 5)] + [torch.randn(n) for n in range(1, 8)]
    plan, by_group = plan_group_norms(grads, [4, 4])
    assert plan.runs is None and not plan.per_tensor
    assert by_group == expected_group_norms(grads, [4, 4])


def test_a_plan_whose_buffer_no_longer_fits_raises_and_goes_on_without_it() -> None:
    """Gradients that stop sharing one buffer (one made sparse): the plan says so rather than
    measuring something else, and its fallback measures them."""
    torch.manual_seed(0)
    grads = [torch.randn(4, 4), torch.randn(4)] * 4
    plan = norms.GroupNormPlan.of(grads, [4, 4])
    assert plan.runs is not None
    grads[1] = grads[1].to_sparse()
    with pytest.raises(RuntimeError):
        plan.pieces(grads)
    pieces, counts = plan.without_buffer().pieces(grads)
    assert norms.combine(norms.read_floats(pieces), counts) == expected_group_norms(grads, [4, 4])


def test_holding_values_reads_cpu_dense_tensors_only() -> None:
    """All-zero tensors hold nothing; NaN counts as a value; sparse ones are not read (False)."""
    tensors = [
        torch.zeros(3),
        torch.tensor([0.0, 2.0]),
        torch.tensor([float("nan")], dtype=torch.float64),
        torch.tensor([1.0], dtype=torch.bfloat16),
        torch.tensor([0.0, 1.0]).to_sparse(),
    ]
    assert norms.holding_values(tensors) == [False, True, True, True, False]
    assert norms.holding_values([]) == []


def test_values_held_reads_cpu_tensors_and_takes_unreadable_ones_for_held() -> None:
    """Zeros are no values; NaN is one, and so are values whose squares vanish in float32;
    a tensor it cannot read (sparse) counts as holding values, so that gradients it cannot
    look at are never taken for cleared ones."""
    tiny = torch.tensor([1e-30, 0.0])
    tensors = [torch.zeros(3), tiny, torch.tensor([float("nan")]), torch.zeros(2).to_sparse(), torch.zeros(2)]
    assert norms.values_held(tensors) == [False, True, True, True, False]
    assert norms.values_held([torch.zeros(3), torch.zeros(2, dtype=torch.bfloat16)]) == [False, False]
    assert norms.holding_values([tiny]) == [True]
    assert norms.values_held([]) == []
