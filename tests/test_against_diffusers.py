"""Our schedules, noising, samplers and timestep embedding against diffusers, an independent implementation of the same methods.

diffusers writes each sampler as a stateful scheduler (`set_timesteps`, `scale_model_input`, `step`); ours are plain
functions of a denoiser. Fed the same network, schedule and noise, both must take the same steps. Measured here: the
trajectories agree to float32 rounding (at most 4e-5 after DDPM's 1,000 clamped steps, and 4e-6 of the samples' size
without the clamp; 6e-6 for DDIM; 2e-6 for the σ samplers), while each of 15 planted errors tried (a
coefficient 1% off, a σ shifted by one step, a history in the wrong order, ...) fails a test.
The network is a small random one: the arithmetic needs no trained model, and a nonlinear one makes each step
depend on the steps before.
"""
import math
import pytest
import torch
from torch import nn
from diffusers import (DDIMScheduler, DDPMScheduler, EDMDPMSolverMultistepScheduler, EDMEulerScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler)
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.schedulers.deprecated.scheduling_karras_ve import KarrasVeScheduler   # Karras et al.'s Alg. 2, with churn
from miniai.diffusion.ddim import ddim_sample, ddim_timesteps
from miniai.diffusion.ddpm import ddpm_sample, linear_schedule, noisify_ddpm
from miniai.diffusion.karras import KarrasDenoiser, noise_cond, scalings, sigmas_karras
from miniai.diffusion.ksamplers import (sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler, sample_euler_ancestral,
                                        sample_heun, sample_lms)
from miniai.models.unet import timestep_embedding

SHAPE, SIGMA_DATA = (4, 1, 8, 8), 0.66
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')   # inside diffusers' NumPy calls
TRAIN = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule='linear')   # lesson 19's schedule


class TinyNet(nn.Module):
    "A small nonlinear network `F(x, c)` whose output depends on its noise input `c`."
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():   # the same weights every run, the global RNG left as it was
            torch.manual_seed(0)
            self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)
    def forward(self, x, c):
        return self.b(torch.tanh(self.a(x)*(1 + 0.1*c.reshape(-1, 1, 1, 1).to(x.dtype))))


@pytest.fixture(scope='module')
def net(): return TinyNet().eval()


@pytest.fixture(scope='module')
def model(net):
    "The ε-prediction model of lesson 19 over the tiny network: integer time steps scaled to [0, 1)."
    return lambda x, t: net(x, t.float()/1000)


def gen(seed): return torch.Generator().manual_seed(seed)


def assert_same(ours, theirs, atol=2e-6, rtol=0.):
    assert ours.shape == theirs.shape and theirs.abs().max() > 0.5   # a real trajectory, not collapsed to 0
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=rtol)


# --- DDPM and DDIM (lesson 19): ε-prediction on the discrete linear schedule ----------------------------------------

@pytest.mark.parametrize('n_steps', [1000, 50])
def test_linear_schedule_matches_alphas_cumprod(n_steps):
    theirs = DDPMScheduler(**{**TRAIN, 'num_train_timesteps': n_steps}).alphas_cumprod.double()
    torch.testing.assert_close(linear_schedule(n_steps).abar, theirs, atol=1e-6, rtol=0)   # diffusers' cumprod is float32


def test_noisify_ddpm_matches_add_noise():
    x0 = torch.rand(64, 1, 8, 8)*2 - 1
    (xt, t), eps = noisify_ddpm(x0, linear_schedule().abar.float(), generator=gen(0))
    theirs = DDPMScheduler(**TRAIN).add_noise(x0, eps, t)
    assert t.unique().numel() > 30                                  # many time steps, not one
    torch.testing.assert_close(xt, theirs, atol=1e-5, rtol=0)   # ᾱ rounded to float32 on both sides


@pytest.mark.parametrize('clamp', [1., None])
def test_ddpm_sample_matches_ddpm_scheduler(model, clamp):
    "Posterior mean of the (clamped) x0-hat plus sqrt(β_t) noise (`variance_type='fixed_large'`), none at t = 0."
    sch = DDPMScheduler(**TRAIN, variance_type='fixed_large', clip_sample=clamp is not None, clip_sample_range=clamp or 1.)
    sch.set_timesteps(1000)
    g = gen(1); x = torch.randn(SHAPE, generator=g)               # our sampler draws its start noise first, the same way
    with torch.no_grad():
        for t in sch.timesteps: x = sch.step(model(x, t.repeat(len(x))), t, x, generator=g).prev_sample
    ours = ddpm_sample(model, SHAPE, linear_schedule(), generator=gen(1), clamp=clamp)
    assert_same(ours, x, atol=2e-4, rtol=1e-4 if clamp is None else 0.)   # unclamped, the random net's samples reach about 900


@pytest.mark.parametrize('spacing', ['leading', 'trailing'])
@pytest.mark.parametrize('eta', [0., 0.5, 1.])
def test_ddim_sample_matches_ddim_scheduler(model, eta, spacing):
    "Same time steps (diffusers' spacing), same η: the same x0-hat clamp, direction term and fresh noise."
    sch = DDIMScheduler(**TRAIN, clip_sample=True, set_alpha_to_one=True, timestep_spacing=spacing)
    sch.set_timesteps(50)
    g = gen(2); x = torch.randn(SHAPE, generator=g)
    with torch.no_grad():
        for t in sch.timesteps: x = sch.step(model(x, t.repeat(len(x))), t, x, eta=eta, generator=g).prev_sample
    ts = sch.timesteps
    assert_same(ddim_sample(model, SHAPE, ts, linear_schedule().abar[ts], eta=eta, generator=gen(2)), x, atol=2e-5)


@pytest.mark.parametrize('steps', [2, 3, 7, 25, 50, 333, 1000])
def test_ddim_timesteps_match_linspace_spacing(steps):
    sch = DDIMScheduler(**TRAIN, timestep_spacing='linspace'); sch.set_timesteps(steps)
    assert torch.equal(ddim_timesteps(1000, steps), sch.timesteps)


def test_one_ddim_step_starts_from_pure_noise():
    "The one place we differ on purpose: with one step diffusers' linspace spacing evaluates t = 0, we start at T-1."
    sch = DDIMScheduler(**TRAIN, timestep_spacing='linspace'); sch.set_timesteps(1)
    assert sch.timesteps.tolist() == [0] and ddim_timesteps(1000, 1).tolist() == [999]


# --- Karras (EDM) preconditioning and the k-diffusion-style samplers -----------------------------------------------

@pytest.mark.parametrize('n', [1, 5, 20, 100])
def test_sigmas_karras_match_edm_scheduler(n):
    sch = EDMEulerScheduler(sigma_min=0.01, sigma_max=80., sigma_data=SIGMA_DATA, rho=7.); sch.set_timesteps(n)
    torch.testing.assert_close(sigmas_karras(n, device='cpu'), sch.sigmas, atol=0, rtol=1e-5)   # float32 on either side


def test_preconditioning_matches_edm_scheduler():
    sch = EDMEulerScheduler(sigma_data=SIGMA_DATA)
    sigma = torch.tensor([0.002, 0.01, 0.5, 3., 80.]).reshape(-1, 1, 1, 1)
    x, out = torch.randn(5, 1, 2, 2, generator=gen(0)), torch.randn(5, 1, 2, 2, generator=gen(1))
    c_skip, c_out, c_in = scalings(sigma, SIGMA_DATA)
    torch.testing.assert_close(c_in*x, sch.precondition_inputs(x, sigma))
    torch.testing.assert_close(c_skip*x + c_out*out, sch.precondition_outputs(x, out, sigma))
    torch.testing.assert_close(noise_cond(sigma.flatten()), sch.precondition_noise(sigma.flatten()))


def edm_loop(sch, net, x, generator=None):
    "diffusers' EDM schedulers take the network F itself and precondition its input and output."
    with torch.no_grad():
        for t in sch.timesteps:
            x = sch.step(net(sch.scale_model_input(x, t), t.repeat(len(x))), t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize('ours,algorithm', [(sample_dpmpp_2m, 'dpmsolver++'), (sample_dpmpp_2m_sde, 'sde-dpmsolver++')])
@pytest.mark.parametrize('steps', [4, 10, 25])
def test_dpmpp_2m_matches_edm_dpm_solver(net, ours, algorithm, steps):
    "First order at the first step (no history yet) and at the last (to σ = 0), second order in between; diffusers' defaults."
    sch = EDMDPMSolverMultistepScheduler(sigma_min=0.01, sigma_max=80., sigma_data=SIGMA_DATA, algorithm_type=algorithm)
    sch.set_timesteps(steps)
    x = torch.randn(SHAPE, generator=gen(3))*80
    theirs = edm_loop(sch, net, x.clone(), gen(5))
    assert_same(ours(KarrasDenoiser(net, SIGMA_DATA), x.clone(), sch.sigmas, generator=gen(5)), theirs)


def test_euler_matches_edm_euler(net):
    sch = EDMEulerScheduler(sigma_min=0.01, sigma_max=80., sigma_data=SIGMA_DATA); sch.set_timesteps(10)
    x = torch.randn(SHAPE, generator=gen(3))*80
    assert_same(sample_euler(KarrasDenoiser(net, SIGMA_DATA), x.clone(), sch.sigmas), edm_loop(sch, net, x.clone()))


def eps_loop(sch, denoiser, x, **step_kw):
    "diffusers' discrete σ schedulers predict ε from x/sqrt(σ²+1); given the denoiser D, ε = (x - D(x, σ))/σ."
    with torch.no_grad():
        for t in sch.timesteps:
            sch.scale_model_input(x, t)                 # sets the step index that points at this evaluation's σ
            sigma = sch.sigmas[sch.step_index]
            x = sch.step((x - denoiser(x, sigma.repeat(len(x))))/sigma, t, x, **step_kw).prev_sample
    return x


@pytest.mark.parametrize('ours,cls,kw', [(sample_euler, EulerDiscreteScheduler, {}),
                                          (sample_heun, HeunDiscreteScheduler, {}),
                                          (sample_lms, LMSDiscreteScheduler, dict(order=4)),
                                          (sample_lms, LMSDiscreteScheduler, dict(order=2))])
def test_ode_samplers_match_discrete_schedulers(net, ours, cls, kw):
    sch = cls(**TRAIN, use_karras_sigmas=True); sch.set_timesteps(10)
    sigmas = sch.sigmas if cls is not HeunDiscreteScheduler else torch.cat([sch.sigmas[:1], sch.sigmas[1::2]])  # Heun's are doubled
    assert len(sigmas) == 11 and sigmas[-1] == 0
    x, den = torch.randn(SHAPE, generator=gen(3))*sigmas[0], KarrasDenoiser(net, SIGMA_DATA)
    assert_same(ours(den, x.clone(), sigmas, **kw), eps_loop(sch, den, x.clone(), **kw))


@pytest.mark.parametrize('s_churn', [2., 40.])   # γ = 0.2 each step; γ capped at sqrt(2) - 1
def test_heun_with_churn_matches_karras_ve_scheduler(net, s_churn):
    "Karras et al.'s Algorithm 2 step by step: churn up to σ̂ = σ(1 + γ), an Euler step to the next σ, Heun's correction."
    sigmas, den = sigmas_karras(10, device='cpu'), KarrasDenoiser(net, SIGMA_DATA)
    # it draws churn noise at every step, even where γ = 0, so churn everywhere (its default range is [0.05, 50])
    sch = KarrasVeScheduler(sigma_min=0.01, sigma_max=80., s_churn=s_churn, s_noise=1.003, s_min=0., s_max=math.inf)
    sch.set_timesteps(10)
    x, g = torch.randn(SHAPE, generator=gen(3))*80, gen(9)
    theirs = x.clone()
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x_hat, s_hat = sch.add_noise_to_input(theirs, s, generator=g)
            out = sch.step((den(x_hat, torch.full((len(x),), s_hat)) - x_hat)/s_hat, s_hat, s_next, x_hat)   # it expects (D - x)/σ
            theirs = out.prev_sample
            if s_next > 0: theirs = sch.step_correct((den(theirs, torch.full((len(x),), s_next)) - theirs)/s_next, s_hat,
                                                     s_next, x_hat, theirs, out.derivative).prev_sample
    assert_same(sample_heun(den, x.clone(), sigmas, generator=gen(9), s_churn=s_churn, s_noise=1.003), theirs)


def test_euler_ancestral_matches_its_scheduler(net):
    "Euler to σ_down, then fresh noise of std σ_up, drawn from the same generator in the same order."
    sch = EulerAncestralDiscreteScheduler(**TRAIN); sch.set_timesteps(10)
    x, den = torch.randn(SHAPE, generator=gen(3))*sch.sigmas[0], KarrasDenoiser(net, SIGMA_DATA)
    theirs = eps_loop(sch, den, x.clone(), generator=gen(7))
    assert_same(sample_euler_ancestral(den, x.clone(), sch.sigmas, generator=gen(7)), theirs)


# --- the UNet's timestep embedding (lesson 24) ------------------------------------------------------------------------

@pytest.mark.parametrize('max_period', [10000., 100.])
@pytest.mark.parametrize('dim', [4, 7, 16, 65])
def test_timestep_embedding_matches_diffusers(dim, max_period):
    "[sin, cos] with frequencies max_period**(-j/(dim//2 - 1)): diffusers' `downscale_freq_shift=1`; an odd dim pads a 0."
    t = torch.tensor([0., 1., 7.5, 250., 999.])
    theirs = get_timestep_embedding(t, dim, flip_sin_to_cos=False, downscale_freq_shift=1, max_period=max_period)
    torch.testing.assert_close(timestep_embedding(t, dim, max_period), theirs, atol=1e-4, rtol=0)   # sin(999 f) in float32
