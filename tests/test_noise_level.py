"Noise-level regression and DDIM for a model without t (miniai.diffusion.noise_level)."
import math
import pytest
import torch
from miniai.diffusion.noise_level import (noisify_noise_level, flat_mse, noise_level_model, NoTimeModel, estimate_abar,
                                          noise_level_ddim_sample, predict_abar)


def test_noisify_noise_level():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2000, 1, 4, 4, generator=g)
    xt, target = noisify_noise_level(x0, generator=torch.Generator().manual_seed(1))
    g2 = torch.Generator().manual_seed(1)   # the same draws, in the same order
    abar = torch.rand(2000, generator=g2)*(1 - 2e-4) + 1e-4
    n = torch.randn(x0.shape, generator=g2)
    ab = abar[:, None, None, None]
    torch.testing.assert_close(xt, ab.sqrt()*x0 + (1 - ab).sqrt()*n)
    torch.testing.assert_close(target, torch.log(abar/(1 - abar)), rtol=1e-4, atol=1e-4)
    assert torch.isfinite(target).all() and target.shape == (2000,)
    # logit of a uniform is standard logistic: variance pi^2/3 (the constant-0 baseline)
    big = noisify_noise_level(torch.zeros(200_000, 1), generator=torch.Generator().manual_seed(2))[1]
    assert abs(big.var().item() - math.pi**2/3) < 0.06 and abs(big.mean().item()) < 0.02


def test_flat_mse_does_not_broadcast():
    p, y = torch.tensor([[0.], [1.]]), torch.tensor([0., 1.])
    assert flat_mse(p, y).item() == 0.
    torch.testing.assert_close(flat_mse(torch.tensor([[1.], [3.]]), torch.tensor([0., 0.])), torch.tensor(5.))
    with pytest.raises(ValueError, match='values'): flat_mse(torch.zeros(3, 1), torch.zeros(2))


def test_noise_level_model_and_no_time_model():
    m = noise_level_model((8, 16, 32), drop=0.2).eval()
    out = m(torch.randn(5, 1, 32, 32))
    assert out.shape == (5, 1)
    a = predict_abar(m, torch.randn(5, 1, 32, 32))
    assert a.shape == (5,) and ((a > 0) & (a < 1)).all()
    seen = []
    inner = lambda x, t: (seen.append(t), x)[1]
    nt = NoTimeModel(inner)
    nt(torch.ones(3, 1, 2, 2), torch.tensor([0.1, 0.5, 0.9]))
    assert torch.equal(seen[0], torch.zeros(3))


def test_estimate_abar_clamps_around_the_median():
    logits = torch.tensor([0.2, 0.25, 0.3, 0.9, 0.01]).logit()
    lm = lambda x: logits[:, None]
    a = estimate_abar(lm, torch.zeros(5, 1, 2, 2), band=2.).flatten()
    torch.testing.assert_close(a, torch.tensor([0.2, 0.25, 0.3, 0.5, 0.125]))


def _gaussian_models(s):
    """For data x0 ~ N(0, s^2) per pixel, an image's own statistics give its noise level: E[x_t^2] = 1 - abar (1 - s^2).
    From that estimate, an eps-model and a noise-level model that never see t."""
    def abar_of(x):
        return ((1 - x.pow(2).mean((1, 2, 3)))/(1 - s**2)).clamp(1e-4, 1 - 1e-4)
    def eps_model(x, t):      # E[eps | x_t] = sqrt(1-abar) x_t / (abar s^2 + 1 - abar)
        ab = abar_of(x)[:, None, None, None]
        return (1 - ab).sqrt()*x/(ab*s**2 + 1 - ab)
    def level_model(x): return abar_of(x).logit()[:, None]
    return eps_model, level_model


def test_noise_level_ddim_reaches_the_data_distribution():
    s = 0.5
    eps_model, level_model = _gaussian_models(s)
    x = noise_level_ddim_sample(eps_model, level_model, (256, 1, 16, 16), steps=50, eta=1., clamp=None, generator=0)
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - s) < 0.03, (x.mean(), x.std())
    # deterministic with a seed; eta=0 works too
    y = noise_level_ddim_sample(eps_model, level_model, (4, 1, 16, 16), steps=10, eta=0., clamp=None, generator=1)
    z = noise_level_ddim_sample(eps_model, level_model, (4, 1, 16, 16), steps=10, eta=0., clamp=None, generator=1)
    assert torch.equal(y, z)
    with pytest.raises(ValueError, match='band'):
        noise_level_ddim_sample(eps_model, level_model, (2, 1, 4, 4), steps=4, band=0.5)
