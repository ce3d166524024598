"""SDN pooling, internal classifiers and the stop-gradient of cascade connections."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ee_rl.core import InternalClassifier, SDNPool, make_internal_classifiers
from tests.core.builders import NUM_CLASSES, make_tiny_model, random_images


@pytest.mark.parametrize("hw", [(5, 5), (3, 3), (8, 8), (7, 7), (20, 20), (6, 10), (4, 4)])
def test_sdn_pool_matches_definition(hw: tuple[int, int]) -> None:
    pool = SDNPool(4)
    with torch.no_grad():
        pool.gamma_logit.fill_(0.7)
    x = torch.randn(2, 3, *hw)
    g = torch.sigmoid(torch.tensor(0.7))
    expected = g * F.adaptive_avg_pool2d(x, 4) + (1 - g) * F.adaptive_max_pool2d(x, 4)
    torch.testing.assert_close(pool(x), expected)
    with torch.no_grad():  # the no-grad path uses a cached Python float for gamma
        torch.testing.assert_close(pool(x), expected)


def test_sdn_gamma_stays_in_unit_interval_and_learns() -> None:
    pool = SDNPool(2)
    for logit in (-100.0, 0.0, 100.0):
        with torch.no_grad():
            pool.gamma_logit.fill_(logit)
        assert 0.0 <= pool.gamma.item() <= 1.0
    with torch.no_grad():
        pool.gamma_logit.fill_(0.0)
    pool(torch.randn(1, 2, 6, 6)).sum().backward()
    assert pool.gamma_logit.grad is not None and pool.gamma_logit.grad.abs() > 0


def test_sdn_gamma_cache_follows_parameter_updates() -> None:
    pool = SDNPool(2)
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        before = pool(x)
        pool.gamma_logit.fill_(3.0)  # in-place update, as an optimiser step does
        after = pool(x)
    g = torch.sigmoid(torch.tensor(3.0))
    torch.testing.assert_close(after, g * F.adaptive_avg_pool2d(x, 2) + (1 - g) * F.adaptive_max_pool2d(x, 2))
    assert not torch.equal(before, after)


def test_internal_classifier_shapes_and_defaults() -> None:
    ic = InternalClassifier(8, 6, stride=4)
    assert ic.conv.out_channels == 8 and ic.conv.stride == (4, 4) and ic.conv.padding == (1, 1)
    assert ic.linear.in_features == 8 * 16
    assert ic(torch.randn(3, 8, 20, 20)).shape == (3, 6)
    cascaded = InternalClassifier(8, 6, out_channels=4, cascade_in=6, cascade_layer_norm=True)
    assert cascaded.linear.in_features == 4 * 16 + 6 and cascaded.cascade_norm is not None
    assert cascaded(torch.randn(3, 8, 9, 9), torch.randn(3, 6)).shape == (3, 6)


def test_internal_classifier_matches_module_composition() -> None:
    ic = InternalClassifier(4, 3, stride=2, cascade_in=3)
    x, prev = torch.randn(2, 4, 9, 9), torch.randn(2, 3)
    pooled = ic.pool(torch.relu(ic.conv(x))).flatten(1)
    torch.testing.assert_close(ic(x, prev), ic.linear(torch.cat((pooled, prev), dim=1)))


def test_internal_classifier_follows_weight_changes_copies_and_layout() -> None:
    import copy

    ic = InternalClassifier(4, 3, stride=2)
    x = torch.randn(2, 4, 9, 9)
    twin = InternalClassifier(4, 3, stride=2)
    twin.load_state_dict(ic.state_dict())
    torch.testing.assert_close(twin(x), ic(x))
    clone = copy.deepcopy(ic)
    with torch.no_grad():
        clone.conv.weight.mul_(2.0)
        clone.linear.bias.add_(1.0)
    torch.testing.assert_close(twin(x), ic(x))  # the original is untouched by changes to its copy
    pooled = clone.pool(torch.relu(clone.conv(x))).flatten(1)
    torch.testing.assert_close(clone(x), clone.linear(pooled))
    fast = copy.deepcopy(ic).to(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), ic(x), rtol=1e-5, atol=1e-6)


def test_make_internal_classifiers_takes_one_stride_per_ic() -> None:
    heads = make_internal_classifiers([8, 12], NUM_CLASSES, stride=[2, 1])
    assert [h.conv.stride for h in heads] == [(2, 2), (1, 1)]


def test_make_internal_classifiers_cascade_flags() -> None:
    ztw = make_internal_classifiers([8, 12, 16], NUM_CLASSES, cascade=True)
    sdn = make_internal_classifiers([8, 12, 16], NUM_CLASSES, cascade=False)
    assert [h.cascade_in for h in ztw] == [0, NUM_CLASSES, NUM_CLASSES]
    assert [h.cascade_in for h in sdn] == [0, 0, 0]


def _grads_after_loss_of_ic(model: torch.nn.Module, m: int) -> list[torch.Tensor | None]:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model.all_exits(random_images(6))
    F.nll_loss(out.ic_log_probs[m], torch.arange(6) % NUM_CLASSES).backward()
    return [p.grad for p in model.heads[m - 1].parameters()]


def test_cascade_stop_gradient_blocks_previous_ic() -> None:
    grads = _grads_after_loss_of_ic(make_tiny_model(ensembles=None), m=1)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_no_stop_gradient_ablation_reaches_previous_ic() -> None:
    grads = _grads_after_loss_of_ic(make_tiny_model(ensembles=None, detach_cascade=False), m=1)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads)


def test_cascade_input_changes_the_next_ic() -> None:
    model = make_tiny_model(ensembles=None)
    x = random_images(4)
    with torch.no_grad():
        before = model.all_exits(x).ic_logits[1]
        model.heads[0].linear.bias.add_(1.0)
        after = model.all_exits(x).ic_logits[1]
    assert not torch.allclose(before, after)


@pytest.mark.parametrize(
    "call",
    [
        lambda: InternalClassifier(0, 5),
        lambda: InternalClassifier(4, 5, stride=0),
        lambda: InternalClassifier(4, 5, cascade_in=-1),
        lambda: InternalClassifier(4, 5, cascade_in=5)(torch.randn(1, 4, 6, 6)),
        lambda: InternalClassifier(4, 5, cascade_in=5)(torch.randn(1, 4, 6, 6), torch.randn(1, 4)),
        lambda: InternalClassifier(4, 5)(torch.randn(1, 4, 6, 6), torch.randn(1, 5)),
        lambda: SDNPool(0),
        lambda: SDNPool(2)(torch.randn(3, 4)),
        lambda: make_internal_classifiers([4, 4], 5, out_channels=[4]),
        lambda: make_internal_classifiers([4, 4], 5, stride=[1, 2, 2]),
    ],
)
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("hw", [(3, 3), (5, 7), (4, 4), (9, 2), (1, 1)])
def test_adaptive_pools_by_windows_equal_torchs_adaptive_pools(hw):
    from ee_rl.core.heads import adaptive_pools_by_windows

    x = torch.randn(3, 5, *hw)
    avg, mx = adaptive_pools_by_windows(x, 4)
    torch.testing.assert_close(avg, F.adaptive_avg_pool2d(x, 4), rtol=0, atol=1e-6)
    assert torch.equal(mx, F.adaptive_max_pool2d(x, 4))


def test_sdn_pool_prepared_for_export_gives_the_same_values():
    pool = SDNPool(4)
    with torch.no_grad():
        pool.gamma_logit.fill_(0.3)
    x = torch.randn(2, 3, 3, 3)  # 3x3 -> 4x4: irregular windows, the adaptive pools' path
    before = pool(x)
    pool.prepare_for_export()
    torch.testing.assert_close(pool(x), before, rtol=0, atol=1e-6)
