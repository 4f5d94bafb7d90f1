"Properties of the diffusion samplers that a hand-made mutation check found unpinned (callbacks, time grids, wiring)."
import numpy as np
import pytest
import torch
from miniai.diffusion.ddpm import ddpm_sample, linear_schedule
from miniai.diffusion.ddim import ddim_timesteps
from miniai.diffusion.cosine import cosine_ddim_sample
from miniai.diffusion.karras import sigmas_karras
from miniai.diffusion.ksamplers import GaussianDenoiser, gaussian_flow, sample, to_d
from miniai.diffusion.noise_level import noise_level_ddim_sample


def test_ddpm_callback_reports_the_clamped_x0_hat_of_each_step():
    "The callback's `denoised` is clamp((x_t - sqrt(1-abar_t) eps)/sqrt(abar_t)) of the x_t the step started from."
    sched, shape, seen = linear_schedule(4, 0.1, 0.5), (2, 1, 3, 3), []
    model = lambda x, t: 0.5*x                                   # a stand-in eps-model
    ddpm_sample(model, shape, sched, generator=0, callback=seen.append)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))   # x_T: the sampler's first draw
    for d in seen:
        ab = sched.abar[d['t']].item()
        x0 = ((x - (1 - ab)**0.5*0.5*x)/ab**0.5).clamp(-1, 1)
        torch.testing.assert_close(d['denoised'], x0)
        x = d['x']
    assert (seen[0]['denoised'] - seen[0]['x']).abs().max() > 0.1    # x0-hat, not the new sample


def test_ddim_timesteps_round_to_the_nearest_integer():
    "The grid is linspace(T-1, 0, steps) rounded to the nearest step: 1000/6 gives 999, 799, 599, 400, 200, 0."
    assert ddim_timesteps(1000, 6).tolist() == [999, 799, 599, 400, 200, 0]
    for T, steps in ((1000, 7), (50, 9), (10, 10), (1000, 1)):
        exact = torch.linspace(T - 1, 0, steps, dtype=torch.float64)
        ts = ddim_timesteps(T, steps)
        assert (ts - exact).abs().max() <= 0.5 and ts.dtype == torch.long


def test_cosine_ddim_sample_feeds_the_model_its_grid_times():
    "The model sees t = 0.8, 0.6, 0.4, 0.2 (one per image, float) for steps=5, and no call at the clean t=0."
    seen = []
    def model(x, t): seen.append(t.clone()); return torch.zeros_like(x)
    cosine_ddim_sample(model, (3, 1, 2, 2), steps=5, eta=0., generator=0)
    assert len(seen) == 4 and all(t.shape == (3,) and t.is_floating_point() for t in seen)
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), torch.tensor([0.8, 0.6, 0.4, 0.2]))


def test_gaussian_denoiser_is_the_posterior_mean():
    "GaussianDenoiser(mu, s) at σ gives (s² x + σ² mu)/(s² + σ²): 2.5 for mu=0.5, s=2, σ=1, x=3; x at σ→0, mu at σ→∞."
    den = GaussianDenoiser(0.5, 2.)
    x = torch.full((3, 1, 1, 1), 3.)
    out = den(x, torch.tensor([1., 1e-6, 1e6])).flatten()
    torch.testing.assert_close(out, torch.tensor([2.5, 3., 0.5]))


def test_gaussian_flow_solves_the_ode_of_the_gaussian_denoiser():
    "gaussian_flow is the identity at σ_to=σ_from, composes, and its σ-derivative is to_d(x, σ, D(x;σ))."
    mu, s, x = 0.5, 0.3, torch.tensor([[-2., 0.1, 4.]], dtype=torch.float64)
    den = GaussianDenoiser(mu, s)
    torch.testing.assert_close(gaussian_flow(x, 3., 3., mu, s), x)
    torch.testing.assert_close(gaussian_flow(gaussian_flow(x, 5., 2., mu, s), 2., 0.5, mu, s), gaussian_flow(x, 5., 0.5, mu, s))
    sig, h = 2., 1e-5
    slope = (gaussian_flow(x, sig, sig + h, mu, s) - gaussian_flow(x, sig, sig - h, mu, s))/(2*h)
    torch.testing.assert_close(slope, to_d(x, sig, den(x, torch.tensor([sig], dtype=torch.float64))), rtol=1e-6, atol=1e-8)
    assert gaussian_flow(x, 80., 0., mu, s).sub(mu).abs().max() < 0.02     # from σ=80 the flow lands near mu (scaled by s/80)


def test_sample_builds_the_karras_schedule_from_its_arguments():
    "sample(steps, sigma_min, sigma_max, rho) evaluates the denoiser at sigmas_karras(steps, sigma_min, sigma_max, rho)[:-1]."
    seen = []
    sample('euler', lambda x, s: torch.zeros_like(x), (2, 3), steps=6, sigma_min=0.05, sigma_max=20., rho=3., seed=0,
           device='cpu', callback=lambda d: seen.append(d['sigma']))
    torch.testing.assert_close(torch.tensor(seen), sigmas_karras(6, 0.05, 20., 3., device='cpu')[:-1])


def test_noise_level_ddim_passes_the_grid_times_to_the_model():
    "noise_level_ddim_sample calls model(x, t) with t = 0.75, 0.5, 0.25, 0 (one per image) for steps=4."
    seen = []
    def model(x, t): seen.append(t.clone()); return torch.zeros_like(x)
    level = lambda x: torch.zeros(len(x), 1)                     # ᾱ-hat = 0.5 for every image
    noise_level_ddim_sample(model, level, (2, 1, 2, 2), steps=4, eta=0., generator=0)
    assert [tuple(t.shape) for t in seen] == [(2,)]*4
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), torch.tensor([0.75, 0.5, 0.25, 0.]))


# ---------------------------------------------------------------- half-precision batches are noised in float32
def _noisers():
    from miniai.diffusion.ddpm import linear_schedule, noisify_ddpm
    from miniai.diffusion.cosine import noisify_cosine
    from miniai.diffusion.karras import noisify_karras
    from miniai.diffusion.noise_level import noisify_noise_level
    abar = linear_schedule().to('cpu').abar
    return {'ddpm': lambda x, g: noisify_ddpm(x, abar, generator=g), 'cosine': lambda x, g: noisify_cosine(x, generator=g),
            'karras': lambda x, g: noisify_karras(x, generator=g), 'noise_level': lambda x, g: noisify_noise_level(x, generator=g)}

@pytest.mark.parametrize('name', ['ddpm', 'cosine', 'karras', 'noise_level'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_batches_are_noised_in_float32(name, dtype):
    """A bf16/fp16 batch gets the float32 pair, rounded: ᾱ near 1 used to round to 1 in bf16 (no noise at all, yet an
    ε target), continuous t collapsed to a few hundred values, and the Karras target at small σ was off by 40%."""
    f = _noisers()[name]
    x = torch.rand(512, 1, 4, 4)*2 - 1
    xh = x.to(dtype)
    got, want = f(xh, torch.Generator().manual_seed(0)), f(xh.float(), torch.Generator().manual_seed(0))
    flat = lambda p: [t for item in p for t in (item if isinstance(item, tuple) else (item,))]
    for g, w in zip(flat(got), flat(want)):
        if w.is_floating_point() and w.ndim > 1: assert g.dtype == dtype and torch.equal(g, w.to(dtype))   # images and targets
        else: assert torch.equal(g, w.to(g.dtype))                                                          # t / σ / logit(ᾱ), rounded or not


def test_eps_denoiser_checks_the_models_output_shape():
    "An ε-model built for 1 channel, asked for 3: `x - σ ε` used to broadcast silently."
    from miniai.diffusion.karras import EpsDenoiser
    d = EpsDenoiser(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match=r'the ε-model returned \(2, 1, 4, 4\) for samples of shape \(2, 3, 4, 4\)'):
        d(torch.zeros(2, 3, 4, 4), torch.ones(2))


def test_numpy_integers_are_integers():
    from miniai.diffusion.karras import sample_sigmas
    assert sample_sigmas(np.int64(3), device='cpu').shape == (3,)
    assert sample('euler', lambda x, s: x*0, (np.int64(2), 1, 4, 4), steps=2, device='cpu', seed=np.int64(0)).x.shape == (2, 1, 4, 4)
