"""Geometric and additive ensembles against a direct computation in probability space."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core import AdditiveEnsemble, GeometricEnsemble, make_ensembles


def _random_members(m: int, batch: int = 7, k: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.log_softmax(3 * torch.randn(batch, k, generator=g, dtype=torch.float64), dim=-1) for _ in range(m)]


def _randomise(ens: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ens.log_w.copy_(torch.empty_like(ens.log_w).uniform_(-2, 1, generator=g))
        ens.log_b.copy_(torch.empty_like(ens.log_b).uniform_(-3, 1, generator=g))


@pytest.mark.parametrize("m", [1, 2, 4])
def test_geometric_matches_weighted_product_of_probabilities(m: int) -> None:
    ens = GeometricEnsemble(m, 5).double()
    _randomise(ens)
    members = _random_members(m)
    w, b = ens.log_w.exp(), ens.log_b.exp()
    # ZTW eq. 2 literally: q_i = b_i * prod_j p_ij^w_j / Z.
    unnormalised = b * torch.stack([lp.exp() ** w[j] for j, lp in enumerate(members)]).prod(dim=0)
    expected = unnormalised / unnormalised.sum(dim=-1, keepdim=True)
    out = ens(members)
    torch.testing.assert_close(out.exp(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.logsumexp(out, dim=-1), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("m", [1, 3])
def test_additive_matches_weighted_sum_of_probabilities(m: int) -> None:
    ens = AdditiveEnsemble(m, 5).double()
    _randomise(ens)
    members = _random_members(m, seed=3)
    w, b = ens.log_w.exp(), ens.log_b.exp()
    # Appendix C.2 eq. 4: q_i = (sum_j w_j p_ij + b_i) / Z.
    unnormalised = sum(w[j] * lp.exp() for j, lp in enumerate(members)) + b
    expected = unnormalised / unnormalised.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(ens(members).exp(), expected, rtol=1e-10, atol=1e-12)


def test_geometric_uniform_init_is_normalised_geometric_mean() -> None:
    members = _random_members(3, seed=5)
    ens = GeometricEnsemble(3, 5).double()
    expected = torch.log_softmax(torch.stack(members).mean(dim=0), dim=-1)
    torch.testing.assert_close(ens(members), expected)


def test_last_init_starts_near_the_last_member() -> None:
    members = _random_members(3, seed=7)
    geo = GeometricEnsemble(3, 5, init="last").double()
    add = AdditiveEnsemble(3, 5, init="last").double()
    assert geo.weights.tolist() == pytest.approx([0.01, 0.01, 1.0])
    for ens in (geo, add):
        assert (ens(members).exp() - members[-1].exp()).abs().max() < 0.1


def test_ensemble_parameters_are_positive_and_trainable() -> None:
    ens = GeometricEnsemble(2, 5)
    with torch.no_grad():
        ens.log_w.fill_(-50.0)
    assert (ens.weights > 0).all() and (ens.class_priors > 0).all()
    members = [m.float() for m in _random_members(2)]
    loss = -ens(members)[:, 0].mean()
    loss.backward()
    assert ens.log_w.grad is not None and ens.log_b.grad.abs().sum() > 0


def test_make_ensembles_member_counts() -> None:
    ens = make_ensembles(3, 4, kind="additive")
    assert [e.num_members for e in ens] == [1, 2, 3]
    assert all(isinstance(e, AdditiveEnsemble) for e in ens)


@pytest.mark.parametrize(
    "build",
    [
        lambda: GeometricEnsemble(0, 5),
        lambda: GeometricEnsemble(2, 5, init="random"),
        lambda: make_ensembles(2, 5, kind="median"),
        lambda: make_ensembles(0, 5),
    ],
)
def test_bad_construction_raises_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_wrong_number_of_members_raises_value_error() -> None:
    with pytest.raises(ValueError, match="combines 2 members"):
        GeometricEnsemble(2, 5)(_random_members(3))


def test_geometric_weight_cache_follows_updates_and_keeps_gradients() -> None:
    ens = GeometricEnsemble(2, 5).double()
    members = _random_members(2)
    with torch.inference_mode():  # fills the weight cache inside inference mode
        first = ens(members)
    with torch.no_grad():
        ens.log_w.add_(0.5)  # in-place, as an optimiser step
    with torch.no_grad():
        updated = ens(members)
    w = ens.log_w.exp()
    expected = torch.log_softmax(w[0] * members[0] + w[1] * members[1] + ens.log_b, dim=-1)
    torch.testing.assert_close(updated, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(first, updated)
    other = GeometricEnsemble(2, 5).double()
    other.load_state_dict(ens.state_dict())
    torch.testing.assert_close(other(members), expected, rtol=1e-12, atol=1e-12)
    # frozen ensemble, members that need gradients: the cached weights must be usable by autograd
    ens.requires_grad_(False)
    with torch.inference_mode():
        ens(members)
    leaf = members[0].clone().requires_grad_()
    ens([leaf, members[1]]).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
