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
    # the spec's baselines (lesson 22, section 12): predicting 0 costs pi^2/3 = 3.290, predicting 0.5 costs 3.540
    assert abs(flat_mse(torch.zeros_like(big), big).item() - 3.290) < 0.06
    assert abs(flat_mse(torch.full_like(big, 0.5), big).item() - 3.540) < 0.06


def test_flat_mse_does_not_broadcast():
    p, y = torch.tensor([[0.], [1.]]), torch.tensor([0., 1.])
    assert flat_mse(p, y).item() == 0.
    torch.testing.assert_close(flat_mse(torch.tensor([[1.], [3.]]), torch.tensor([0., 0.])), torch.tensor(5.))
    with pytest.raises(ValueError, match='values'): flat_mse(torch.zeros(3, 1), torch.zeros(2))


def test_noise_level_model_and_no_time_model():
    m = noise_level_model((8, 16, 32), drop=0.2).eval()
    drops = [type(mod).__name__ for mod in m if 'Dropout' in type(mod).__name__]
    assert drops == ['Dropout'] and m[-2].p == 0.2   # as the lesson's regressor: one Dropout, before the head; no Dropout2d
    out = m(torch.randn(5, 1, 32, 32))
    assert out.shape == (5, 1)
    a = predict_abar(m, torch.randn(5, 1, 32, 32))
    assert a.shape == (5,) and ((a > 0) & (a < 1)).all()
    m.train()                                  # just trained: dropout on, BatchNorm in batch mode
    bn = next(mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    stats, x = bn.running_mean.clone(), torch.randn(5, 1, 32, 32)
    torch.testing.assert_close(predict_abar(m, x), predict_abar(m, x))   # eval mode inside: no dropout
    assert torch.equal(bn.running_mean, stats) and m.training             # statistics untouched, mode given back
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


# --- the sampler's arithmetic, against an independent float64 re-implementation of lesson 22's sampler -------------
# An eps-model that ignores t, and a "regressor" whose estimates differ from the schedule and from each other (one of
# them far off, so the clamp around the median matters). The samplers draw x_T, then the fresh noise of each step, from
# the generator in that order, as torch.randn(shape) (float32): the reference replays those draws.
import numpy as np

SHAPE = (5, 1, 2, 3)
ABAR_HAT = torch.tensor([0.9, 0.1, 0.3, 0.35, 0.4])   # median 0.35: 0.9 is clamped to 0.7, 0.1 up to 0.175

def lin_eps(x, t): return 0.3*x + 0.1
def fixed_level(x): return ABAR_HAT.logit()[:, None]


def reference_sample(steps, eta, seed, cutoff=0.01, band=2., clamp=None):
    "The lesson-22 DDIM with the regressor's ᾱ in x0-hat (spec, section 4.4), in NumPy float64."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g).double().numpy()
    a = ABAR_HAT.double().numpy()
    m = np.median(a)                                    # 5 values: the middle one, no convention to agree on
    a = np.clip(a, m/band, min(m*band, 1.)).reshape(-1, 1, 1, 1)
    ts = np.linspace(1 - 1/steps, 0, steps)
    ab = list(np.cos(ts*np.pi/2)**2) + [1.]
    for i in range(steps):
        eps = 0.3*x + 0.1
        x0 = (x - np.sqrt(1 - a)*eps)/np.sqrt(a)
        if clamp is not None: x0 = np.clip(x0, -clamp, clamp)
        ab_t, ab1 = ab[i], ab[i+1]
        sig = eta*np.sqrt((1 - ab1)/(1 - ab_t)*(1 - ab_t/ab1)) if ab_t < ab1 else 0.
        if 1 - ab1 <= sig**2 + cutoff: sig = 0.         # the lesson's rule ("set to zero if very small")
        x = np.sqrt(ab1)*x0 + np.sqrt(max(1 - ab1 - sig**2, 0.))*eps
        if sig > 0: x = x + sig*torch.randn(SHAPE, generator=g).double().numpy()
    return x


def naive_x0(x, ab): return (x - np.sqrt(1 - ab)*(0.3*x + 0.1))/np.sqrt(ab)


def test_noise_level_ddim_uses_the_clamped_estimate_not_the_schedule():
    "Two steps (t = 0.5, then 0): x0-hat is computed with the regressor's median-clamped ᾱ, twice; not with ᾱ(0.5) = 0.5."
    out = noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=2, eta=1., clamp=None, generator=3)
    ref = reference_sample(2, 1., 3)
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    a = np.array([0.7, 0.175, 0.3, 0.35, 0.4]).reshape(-1, 1, 1, 1)       # the clamp, by hand
    xT = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)).double().numpy()
    x1 = (xT - np.sqrt(1 - a)*(0.3*xT + 0.1))/np.sqrt(a)
    np.testing.assert_allclose(out.double().numpy(), (x1 - np.sqrt(1 - a)*(0.3*x1 + 0.1))/np.sqrt(a), rtol=1e-5, atol=1e-5)
    naive = naive_x0(xT, 0.5)
    assert np.abs(out.double().numpy() - naive).max() > 0.1        # a naive DDIM lands elsewhere


@pytest.mark.parametrize('steps,eta', [(3, 1.), (10, 1.), (10, 0.5), (6, 0.)])
def test_noise_level_ddim_matches_the_reference(steps, eta):
    "Several steps with fresh noise: the re-noising uses the *scheduled* ᾱ of the next step and σ from the schedule."
    out = noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=steps, eta=eta, clamp=None, generator=7)
    np.testing.assert_allclose(out.double().numpy(), reference_sample(steps, eta, 7), rtol=1e-4, atol=1e-4)
    clamped = noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=steps, eta=eta, clamp=1., generator=7)
    np.testing.assert_allclose(clamped.double().numpy(), reference_sample(steps, eta, 7, clamp=1.), rtol=1e-4, atol=1e-4)


def test_noise_level_ddim_cutoff():
    "With 10 steps and eta=1 the lesson's cutoff silences the step t=0.2 -> 0.1: cutoff=0 draws noise there, and differs."
    with_cut = noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=10, eta=1., clamp=None, generator=7)
    no_cut = noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=10, eta=1., clamp=None, generator=7, cutoff=0.)
    np.testing.assert_allclose(no_cut.double().numpy(), reference_sample(10, 1., 7, cutoff=0.), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(with_cut.double().numpy(), reference_sample(10, 1., 7), rtol=1e-4, atol=1e-4)
    assert (with_cut - no_cut).abs().max() > 1e-3


def test_noise_level_ddim_eta_draws_noise(monkeypatch):
    "The same starting noise: eta=0 ignores the generator afterwards, eta>0 draws fresh noise from it."
    import miniai.diffusion.noise_level as nl
    xT = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(nl, 'start_noise', lambda shape, device, g=None: xT.clone())
    run = lambda eta, seed: nl.noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=6, eta=eta, clamp=None,
                                                       generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0., 1), run(0., 2))
    assert (run(1., 1) - run(1., 2)).abs().max() > 1e-2
    assert (run(0.5, 1) - run(0.5, 2)).abs().max() > 1e-2
    monkeypatch.undo()
    # without the patch: eta=0 takes exactly one draw (x_T) from the generator, eta=1 more
    for eta, n_draws in ((0., 1), (1., 1 + 4)):   # 6 steps: noise in the 4 from t=5/6 to 2/6; none into ᾱ=1 or at t=0
        g = torch.Generator().manual_seed(5)
        noise_level_ddim_sample(lin_eps, fixed_level, SHAPE, steps=6, eta=eta, clamp=None, generator=g)
        g2 = torch.Generator().manual_seed(5)
        for _ in range(n_draws): torch.randn(SHAPE, generator=g2)
        assert torch.equal(g.get_state(), g2.get_state()), eta


@pytest.mark.parametrize('kw,msg', [(dict(clamp=0.), '`clamp` must be None'), (dict(clamp=-1.), '`clamp` must be None'),
                                    (dict(clamp=float('nan')), '`clamp` must be None'), (dict(eta=-0.5), '`eta` must be >= 0'),
                                    (dict(cutoff=-0.1), '`cutoff` must be in'), (dict(steps=1), '`steps` must be >= 2')])
def test_noise_level_ddim_refuses_bad_arguments_before_any_model_call(kw, msg):
    calls = []
    def eps(x, t): calls.append(1); return torch.zeros_like(x)
    with pytest.raises(ValueError, match=msg): noise_level_ddim_sample(eps, fixed_level, SHAPE, **dict(dict(steps=4), **kw))
    assert not calls


def test_noise_level_ddim_refuses_non_finite_samples():
    with pytest.raises(ValueError, match='non-finite'):
        noise_level_ddim_sample(lambda x, t: x*float('inf'), fixed_level, SHAPE, steps=3, clamp=None)


def test_noise_level_ddim_sample_default_clamp_is_one():
    "noise_level_ddim_sample clamps x0-hat to [-1, 1], the data range, by default."
    eps0 = lambda x, t: torch.zeros_like(x)             # x0-hat = x/sqrt(a_hat): large, so the clamp decides it
    level = lambda x: torch.full((len(x), 1), 2.)       # a_hat = sigmoid(2) for every image
    a = noise_level_ddim_sample(eps0, level, (2, 1, 4, 4), steps=3, generator=0)
    b = noise_level_ddim_sample(eps0, level, (2, 1, 4, 4), steps=3, generator=0, clamp=1.)
    assert torch.equal(a, b) and a.abs().max() > 0.9
