"""Tests for miniai.diffusion (ddpm, ddim, cosine) and miniai.cli: known schedule values, samplers against independent
computations, reproducibility, a tiny model that learns, bad input, and the training command's files."""
import json, math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.diffusion.ddpm import (NoisifyCB, ddpm_learner, ddpm_sample, diffusers_unet, init_ddpm,
                                   linear_schedule, noisify_ddpm)
from miniai.diffusion.ddim import ddim_sample, ddim_sigma, ddim_step, ddim_timesteps
from miniai.diffusion.cosine import cosine_abar, cosine_ddim_sample, cosine_inv_abar, cosine_timesteps, noisify_cosine


def tiny_unet(**kw):
    return init_ddpm(diffusers_unet((8, 16), norm_groups=4, attention=(False, False), layers_per_block=1, **kw))


def linear_denoiser(a=0.7, b=0.05):
    "A fixed, non-trivial denoiser eps = a*x + b*t/1000 (no training needed)."
    return lambda x, t: a*x + b*t.float().reshape(-1, 1, 1, 1)/1000


# ---------------------------------------------------------------- schedules
# alpha-bar of beta = linspace(1e-4, 0.02, 1000), computed independently with NumPy (lesson-19 spec, section 13)
LINEAR_VECTORS = {0: (0.9999, 0.0100), 7: (0.99864, 0.0368), 67: (0.9491, 0.2255), 94: (0.9062, 0.3063),
                  200: (0.6563, 0.5862), 293: (0.4110, 0.7675), 500: (0.0778, 0.9603), 800: (1.51e-3, 0.9992),
                  999: (4.04e-5, 1.0000)}

@pytest.mark.parametrize('t', sorted(LINEAR_VECTORS))
def test_linear_schedule_vectors(t):
    s = linear_schedule()
    abar, noise_std = LINEAR_VECTORS[t]
    assert s.abar[t].item() == pytest.approx(abar, rel=2e-3)   # relative only: the vectors have 3-4 significant digits
    assert (1 - s.abar[t]).sqrt().item() == pytest.approx(noise_std, abs=1e-4)

def test_linear_schedule_against_numpy():
    beta = np.linspace(1e-4, 0.02, 1000)
    s = linear_schedule()
    np.testing.assert_allclose(s.abar.numpy(), np.cumprod(1 - beta), rtol=1e-12)
    np.testing.assert_allclose(s.sigma.numpy(), np.sqrt(beta), rtol=1e-12)
    assert s.n_steps == 1000 and s.to('cpu').abar.dtype == torch.float32

@pytest.mark.parametrize('t,abar', [(0., 1.), (0.25, 0.853553), (0.5, 0.5), (0.65, 0.273005), (0.95, 0.006156), (0.999, 2.467e-6)])
def test_cosine_abar_vectors(t, abar):
    assert cosine_abar(torch.tensor(t, dtype=torch.float64)).item() == pytest.approx(abar, rel=1e-4, abs=1e-9)

def test_cosine_inv_abar_roundtrip():
    t = torch.linspace(0, 0.999, 2001, dtype=torch.float64)
    torch.testing.assert_close(cosine_inv_abar(cosine_abar(t)), t, atol=1e-9, rtol=0)

def test_timestep_grids():
    assert ddim_timesteps(1000, 4).tolist() == [999, 666, 333, 0]
    ts = cosine_timesteps(100)
    assert ts[0].item() == pytest.approx(0.99) and ts[-1].item() == 0 and len(ts) == 100
    torch.testing.assert_close(ts.diff(), torch.full((99,), -0.01, dtype=torch.float64))


# ---------------------------------------------------------------- noising
def test_noisify_ddpm_closed_form_and_device():
    s = linear_schedule()
    x0 = torch.randn(512, 1, 4, 4)
    (xt, t), eps = noisify_ddpm(x0, s.to('cpu').abar, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() < 1000 and xt.device == x0.device
    ab = s.abar[t].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(xt, ab.sqrt()*x0 + (1 - ab).sqrt()*eps)
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    assert torch.equal(noisify_ddpm(x0, s.to('cpu').abar, g1)[0][0], noisify_ddpm(x0, s.to('cpu').abar, g2)[0][0])

def test_noisify_cosine_closed_form():
    x0 = torch.rand(4096, 1, 2, 2) - 0.5
    (xt, t), eps = noisify_cosine(x0, torch.Generator().manual_seed(1))
    assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 0.999
    ab = cosine_abar(t.double()).reshape(-1, 1, 1, 1)   # float64: in float32, 1 - ᾱ cancels at small t
    torch.testing.assert_close(xt.double(), ab.sqrt()*x0 + (1 - ab).sqrt()*eps, rtol=1e-5, atol=1e-6)
    assert abs(eps.std().item() - 1) < 0.03

def test_noisify_cb_replaces_batch():
    class L: pass
    learn = L(); learn.batch = (torch.zeros(4, 1, 8, 8), torch.arange(4))
    NoisifyCB(noisify_cosine).before_batch(learn)
    xt, t, eps = learn.batch
    assert xt.shape == eps.shape == (4, 1, 8, 8) and t.shape == (4,)
    torch.testing.assert_close(xt, (1 - cosine_abar(t.double())).sqrt().float().reshape(-1, 1, 1, 1)*eps)
    assert NoisifyCB.order == -5


# ---------------------------------------------------------------- DDPM sampler
def test_ddpm_sampler_matches_independent_loop():
    "The sampler against a float64 NumPy re-implementation of algorithm 2 fed the same noise."
    s = linear_schedule(6, 0.05, 0.4)
    f = linear_denoiser()
    out = ddpm_sample(f, (3, 1, 4, 4), s, generator=5, clamp=1.)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 1, 4, 4, generator=g).double().numpy()
    beta, abar = s.beta.numpy(), s.abar.numpy()
    for t in range(5, -1, -1):
        eps = 0.7*x + 0.05*t/1000
        x0 = np.clip((x - np.sqrt(1 - abar[t])*eps)/np.sqrt(abar[t]), -1, 1)
        ab_prev = abar[t-1] if t > 0 else 1.
        mean = np.sqrt(ab_prev)*beta[t]/(1 - abar[t])*x0 + np.sqrt(1 - beta[t])*(1 - ab_prev)/(1 - abar[t])*x
        z = torch.randn(3, 1, 4, 4, generator=g).double().numpy() if t > 0 else 0
        x = mean + np.sqrt(beta[t])*z
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-5, atol=1e-5)

def test_ddpm_last_step_returns_clamped_x0():
    s = linear_schedule(10, 0.01, 0.3)
    f = lambda x, t: -3*x  # drives x0-hat far outside [-1, 1], so the clamp matters
    seen = []
    out = ddpm_sample(f, (2, 1, 4, 4), s, generator=0, callback=lambda d: seen.append(dict(d)))
    x_in = seen[-2]['x']                      # the input of the last step (t=0)
    ab0 = s.abar[0].item()
    expected = ((x_in + 3*(1 - ab0)**0.5*x_in)/ab0**0.5).clamp(-1, 1)
    assert seen[-1]['t'] == 0 and (expected.abs() == 1).any()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, seen[-1]['denoised'], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- DDIM
def test_ddim_eta0_is_deterministic_and_matches_formula():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    ab, ab_prev = 0.3, 0.8
    x0a, xa = ddim_step(x, eps, ab, ab_prev, eta=0.)
    torch.manual_seed(1); x0b, xb = ddim_step(x, eps, ab, ab_prev, eta=0.)
    assert torch.equal(xa, xb)
    x0 = np.clip((x.numpy() - math.sqrt(1 - ab)*eps.numpy())/math.sqrt(ab), -1, 1)
    np.testing.assert_allclose(xa.numpy(), math.sqrt(ab_prev)*x0 + math.sqrt(1 - ab_prev)*eps.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x0a.numpy(), x0, rtol=1e-12)

@pytest.mark.parametrize('t', [1, 2, 50, 500, 999])
def test_ddim_eta1_is_ddpm_posterior(t):
    s = linear_schedule()
    ab, ab1, beta = s.abar[t].item(), s.abar[t-1].item(), s.beta[t].item()
    post_var = (1 - ab1)/(1 - ab)*beta
    assert ddim_sigma(ab, ab1, 1.)**2 == pytest.approx(post_var, rel=1e-10)
    g = torch.Generator().manual_seed(t)
    x, eps, z = (torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    x0 = (x - math.sqrt(1 - ab)*eps)/math.sqrt(ab)
    mean = math.sqrt(ab1)*beta/(1 - ab)*x0 + math.sqrt(1 - beta)*(1 - ab1)/(1 - ab)*x
    _, x_prev = ddim_step(x, eps, ab, ab1, eta=1., noise=z, clamp=None)
    torch.testing.assert_close(x_prev, mean + math.sqrt(post_var)*z, rtol=1e-9, atol=1e-9)

def test_ddim_sampler_with_all_steps_eta1_equals_ddpm_with_posterior_variance():
    "DDIM through every step with eta=1 is ancestral sampling with sigma^2 = beta-tilde: check one chain by hand."
    s = linear_schedule(5, 0.05, 0.4)
    f = linear_denoiser()
    ts = ddim_timesteps(5, 5)
    out = ddim_sample(f, (2, 1, 4, 4), ts, s.abar[ts], eta=1., generator=9, clamp=1.)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 1, 4, 4, generator=g).double()
    abar, beta = s.abar, s.beta
    for t in range(4, -1, -1):
        eps = 0.7*x + 0.05*t/1000
        ab, ab1 = abar[t].item(), (abar[t-1].item() if t > 0 else 1.)
        x0 = ((x - math.sqrt(1 - ab)*eps)/math.sqrt(ab)).clamp(-1, 1)
        var = (1 - ab1)/(1 - ab)*beta[t].item()
        x = math.sqrt(ab1)*x0 + math.sqrt(max(1 - ab1 - var, 0))*eps
        if t > 0: x = x + math.sqrt(var)*torch.randn(2, 1, 4, 4, generator=g).double()
    torch.testing.assert_close(out.double(), x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize('which', ['ddpm', 'ddim', 'cosine'])
def test_same_seed_same_samples(which):
    torch.manual_seed(0)
    m = tiny_unet(t_scale=1000. if which == 'cosine' else 1.)
    s = linear_schedule(8, 0.02, 0.4)
    ts = ddim_timesteps(8, 4)
    run = {'ddpm': lambda seed: ddpm_sample(m, (2, 1, 16, 16), s, generator=seed),
           'ddim': lambda seed: ddim_sample(m, (2, 1, 16, 16), ts, s.abar[ts], eta=1., generator=seed),
           'cosine': lambda seed: cosine_ddim_sample(m, (2, 1, 16, 16), 4, generator=seed)}[which]
    m.train()
    a, b, c = run(123), run(123), run(124)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert m.training  # the sampler restored train mode


def test_sampling_mode_restores_every_submodule_mode():
    "A train-mode wrapper around an eval-mode network (what `sample` builds) leaves each module as it was, also on an error."
    from miniai.diffusion.ddpm import sampling_mode
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5)).eval()
    net[2].train()                                   # a mix: test-time dropout in an eval-mode network
    wrapper = torch.nn.Sequential(net)               # fresh wrapper: train mode
    modes = lambda: [o.training for o in wrapper.modules()]
    before = modes()
    assert before == [True, False, False, False, True]
    with sampling_mode(wrapper): assert not any(modes()) and not torch.is_grad_enabled()
    assert modes() == before
    with pytest.raises(RuntimeError, match='boom'):
        with sampling_mode(wrapper): raise RuntimeError('boom')
    assert modes() == before
    class Wrapper(torch.nn.Module):                  # through a sampler, wrapped on the fly
        def __init__(self, net): super().__init__(); self.net = net
        def forward(self, x, t): return self.net(x, t)
    m = tiny_unet().eval()
    ddpm_sample(Wrapper(m), (1, 1, 16, 16), linear_schedule(2, 0.05, 0.4), generator=0)
    assert not any(o.training for o in m.modules())


# ---------------------------------------------------------------- model, init and training
def test_init_ddpm():
    m = diffusers_unet((16, 32, 64), layers_per_block=1)
    init_ddpm(m)
    u = m.unet
    assert all((r.conv2.weight == 0).all() for b in (*u.down_blocks, *u.up_blocks) for r in b.resnets)
    assert (u.conv_out.weight == 0).all()
    w = u.down_blocks[1].downsamplers[0].conv.weight.flatten(1)
    torch.testing.assert_close(w @ w.T, torch.eye(len(w)), atol=1e-4, rtol=0)

def test_tiny_model_loss_decreases():
    set_seed(0)
    g = torch.Generator().manual_seed(0)
    # 64 simple 16x16 images: a bright square at a random place on a dark background
    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    for i, (r, c) in enumerate(torch.randint(0, 10, (64, 2), generator=g).tolist()): x[i, 0, r:r+6, c:c+6] = 255
    y = torch.zeros(64, dtype=torch.long)
    dls = DataLoaders(DeviceImageLoader(x, y, bs=16, shuffle=True, seed=0, device='cpu'),
                      DeviceImageLoader(x[:16], y[:16], bs=16, device='cpu'))
    model = tiny_unet(t_scale=1000.)
    fixed = noisify_cosine(dls.valid.get_batch(torch.arange(16))[0], torch.Generator().manual_seed(1))
    def fixed_loss():
        with torch.no_grad(): return F.mse_loss(model(*fixed[0]), fixed[1]).item()
    before = fixed_loss()
    learn = ddpm_learner(model, dls, noisify_cosine, lr=1e-2, progress=False, device='cpu')
    learn.fit(4, valid=False)
    after = fixed_loss()
    assert before == pytest.approx(1., abs=0.1)  # zeroed output conv: starts by predicting (nearly) zero noise
    assert after < 0.8*before, (before, after)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    m = tiny_unet()
    s = linear_schedule(4, 0.05, 0.4)
    ts = ddim_timesteps(4, 2)
    with pytest.raises(ValueError, match='the UNet takes'): ddpm_sample(m, (1, 3, 16, 16), s)
    with pytest.raises(ValueError, match='multiples of 2'): m(torch.zeros(1, 1, 15, 15), 0)
    with pytest.raises(ValueError, match='does the sample shape match'): ddpm_sample(lambda x, t: x[..., :4], (1, 1, 8, 8), s)
    with pytest.raises(ValueError, match=r'`shape` must be \(B, C, H, W\)'): ddim_sample(m, (1, 16, 16), ts, s.abar[ts])
    with pytest.raises(ValueError, match='`steps` must be between 1 and 4'): ddim_timesteps(4, 0)
    with pytest.raises(ValueError, match='`steps` must be >= 2'): cosine_ddim_sample(m, (1, 1, 16, 16), 0)
    with pytest.raises(ValueError, match='at least one time step'): ddim_sample(m, (1, 1, 16, 16), ts[:0], s.abar[ts[:0]])
    with pytest.raises(ValueError, match='`n_steps` must be >= 1'): linear_schedule(0)
    with pytest.raises(ValueError, match='`eta` must be >= 0'): ddim_sample(m, (1, 1, 16, 16), ts, s.abar[ts], eta=-0.1)
    with pytest.raises(ValueError, match='`eta` must be >= 0'): ddim_step(torch.zeros(1), torch.zeros(1), 0.5, 0.9, eta=-1)
    with pytest.raises(ValueError, match='finite'): ddim_sample(m, (1, 1, 16, 16), ts, torch.tensor([0.5, float('nan')]))
    with pytest.raises(ValueError, match='non-finite noise'): ddpm_sample(lambda x, t: x*float('inf'), (1, 1, 8, 8), s)
    with pytest.raises(ValueError, match='non-finite noise'): ddim_sample(lambda x, t: x/0, (1, 1, 8, 8), ts, s.abar[ts])
    with pytest.raises(ValueError, match='cannot split'): diffusers_unet((16, 32), norm_groups=32)
    with pytest.raises(ValueError, match='move the schedule once'): noisify_ddpm(torch.zeros(2, 1, 4, 4, device='meta'), s.abar)
    with pytest.raises(TypeError, match='float batch'): noisify_cosine(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- the command
def test_cli_help_and_bad_args(capsys):
    from miniai.cli import main
    with pytest.raises(SystemExit) as e: main(['train', '--help'])
    assert e.value.code == 0 and '--quick' in capsys.readouterr().out
    for bad in (['train', '--epochs', '0'], ['train', '--lr', '-1'], ['train', '--schedule', 'linearr'],
                ['train', '--sampler', 'ddpm'], ['train', '--n-fid', '-3']):
        with pytest.raises(SystemExit) as e: main(bad)
        assert e.value.code == 2

def test_train_diffusion_writes_outputs(tmp_path):
    "A few seconds' run with an injected evaluator (random features): every file is written, FID is finite."
    from safetensors.torch import load_file
    from miniai.cli import train_diffusion
    from miniai.fid import ImageEval
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=4), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 8 features
    ie = ImageEval(feats, torch.rand(64, 1, 32, 32)*2 - 1)
    res = train_diffusion(out=tmp_path, quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=4,
                          n_fid=32, evaluator=ie, progress=False)
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert {p.name for p in tmp_path.iterdir()} >= {'samples.png', 'loss.png', 'model.safetensors', 'metrics.json'}
    assert math.isfinite(m['fid']) and m['nfe'] == 2 and m['epochs'] == 1 and m['n_train'] == 64
    assert m['feature_model'] == 'the evaluator passed in'   # not the quick-mode classifier's name
    sd = load_file(str(tmp_path/'model.safetensors'))
    with res['ema'].average(): ref = {k: v.detach().clone() for k, v in res['learn'].model.state_dict().items()}
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k].cpu()) for k in sd)  # the averaged weights


# ---------------------------------------------------------------- the lesson-22 cutoff, and validation
def _course_cosine_ddim(steps, eta, seed, cutoff, shape=(2, 1, 4, 4), a=0.7, b=0.05, clamp=1.):
    "Lesson 22's cosine DDIM (spec, section 2.2) in float64 for the model eps = a x + b t/1000, with the sampler's draws."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).double()
    ts = np.linspace(1 - 1/steps, 0, steps)
    for t in ts[:-1]:                                    # no model call at t = 0 (already clean)
        ab, ab1 = math.cos(t*math.pi/2)**2, math.cos((t - 1/steps)*math.pi/2)**2 if t - 1/steps > 1e-9 else 1.
        eps = a*x + b*float(np.float32(t))/1000
        x0 = ((x - math.sqrt(1 - ab)*eps)/math.sqrt(ab)).clamp(-clamp, clamp)
        sig = eta*math.sqrt((1 - ab1)/(1 - ab))*math.sqrt(1 - ab/ab1)
        if 1 - ab1 <= sig**2 + cutoff: sig = 0.
        x = math.sqrt(ab1)*x0 + math.sqrt(1 - ab1 - sig**2)*eps
        if sig > 0: x = x + sig*torch.randn(shape, generator=g).double()
    return x, g

@pytest.mark.parametrize('steps,eta', [(10, 1.), (20, 1.), (20, 0.5)])
def test_cosine_ddim_cutoff_matches_the_lesson(steps, eta):
    "Default cutoff 0.01: the lesson's sampler, draw for draw; cutoff=0: plain DDIM (noise in every step but the last)."
    f = linear_denoiser()
    for cutoff, kw in ((0.01, {}), (0., dict(cutoff=0.))):
        g = torch.Generator().manual_seed(4)
        out = cosine_ddim_sample(f, (2, 1, 4, 4), steps, eta=eta, generator=g, **kw)
        ref, g_ref = _course_cosine_ddim(steps, eta, 4, cutoff)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(g.get_state(), g_ref.get_state())   # no noise drawn (and thrown away) in a silenced step
    out, plain = (cosine_ddim_sample(f, (2, 1, 4, 4), steps, eta=eta, generator=4, cutoff=c) for c in (0.01, 0.))
    assert (out - plain).abs().max() > 1e-3          # the cutoff does change the last steps

def test_ddim_sigma_cutoff():
    ab, ab1 = 0.9, 0.975
    sig = ddim_sigma(ab, ab1, 1.)
    assert 1 - ab1 - sig**2 == pytest.approx((1 - ab1)**2*ab/((1 - ab)*ab1), rel=1e-10)   # about 0.0058
    assert ddim_sigma(ab, ab1, 1., cutoff=0.01) == 0. and ddim_sigma(ab, ab1, 1., cutoff=0.005) == sig
    assert ddim_sigma(ab, ab1, 1., cutoff=0.) == sig and ddim_sigma(0.1, 0.2, 1., cutoff=0.01) == ddim_sigma(0.1, 0.2, 1.)
    x, eps, z = (torch.randn(2, 3, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(3))
    assert torch.equal(ddim_step(x, eps, ab, ab1, 1., z, cutoff=0.01)[1], ddim_step(x, eps, ab, ab1, 0.)[1])
    for bad in (-0.1, 1., float('nan')):
        with pytest.raises(ValueError, match='`cutoff` must be in'): ddim_sigma(ab, ab1, 1., cutoff=bad)

@pytest.mark.parametrize('clamp', [0., -1., float('nan'), True, '1', torch.tensor(1.)])
def test_samplers_refuse_a_bad_clamp_before_any_model_call(clamp):
    from miniai.diffusion.ddpm import x0_from_eps, check_clamp
    calls = []
    def f(x, t): calls.append(1); return torch.zeros_like(x)
    s = linear_schedule(4, 0.05, 0.4)
    ts = ddim_timesteps(4, 2)
    msg = r'`clamp` must be None \(no clamp\) or a number > 0'
    with pytest.raises(ValueError, match=msg): ddpm_sample(f, (1, 1, 4, 4), s, clamp=clamp)
    with pytest.raises(ValueError, match=msg): ddim_sample(f, (1, 1, 4, 4), ts, s.abar[ts], clamp=clamp)
    with pytest.raises(ValueError, match=msg): cosine_ddim_sample(f, (1, 1, 4, 4), 3, clamp=clamp)
    with pytest.raises(ValueError, match=msg): ddim_step(torch.zeros(2), torch.zeros(2), 0.5, 0.9, clamp=clamp)
    with pytest.raises(ValueError, match=msg): x0_from_eps(torch.zeros(2), torch.zeros(2), 0.5, clamp=clamp)
    assert not calls
    assert check_clamp(None) is None and check_clamp(2) == 2 and check_clamp(float('inf')) == float('inf')

def test_ddim_refuses_a_bad_cutoff_before_any_model_call():
    calls = []
    def f(x, t): calls.append(1); return torch.zeros_like(x)
    s = linear_schedule(4, 0.05, 0.4)
    ts = ddim_timesteps(4, 2)
    for bad in (-0.01, 1., float('nan')):
        with pytest.raises(ValueError, match='`cutoff` must be in'): ddim_sample(f, (1, 1, 4, 4), ts, s.abar[ts], cutoff=bad)
        with pytest.raises(ValueError, match='`cutoff` must be in'): cosine_ddim_sample(f, (1, 1, 4, 4), 3, cutoff=bad)
    assert not calls

def test_samplers_refuse_samples_that_overflow():
    "Finite noise predictions, but x0-hat overflows (no clamp): one check at the end reports the non-finite samples."
    s = linear_schedule(4, 0.05, 0.4)
    ts = ddim_timesteps(4, 2)
    huge = lambda x, t: torch.full_like(x, 3e38)
    with pytest.raises(ValueError, match='`samples` contains'): ddpm_sample(huge, (1, 1, 4, 4), s, clamp=None)
    with pytest.raises(ValueError, match='`samples` contains'): ddim_sample(huge, (1, 1, 4, 4), ts, s.abar[ts], clamp=None)
    with pytest.raises(ValueError, match='`samples` contains'): cosine_ddim_sample(huge, (1, 1, 4, 4), 3, clamp=None)


# ---------------------------------------------------------------- schedule, noising and sampler details
def test_linear_schedule_refuses_bad_betas():
    "beta_min <= beta_max, both in (0, 1): a reversed or out-of-range pair is an error, equal ends are allowed."
    for lo, hi in ((0.02, 1e-4), (0., 0.02), (1e-4, 1.)):
        with pytest.raises(ValueError, match='beta_min <= beta_max'): linear_schedule(10, lo, hi)
    torch.testing.assert_close(linear_schedule(3, 0.1, 0.1).beta, torch.full((3,), 0.1, dtype=torch.float64))

def test_schedule_to_keeps_every_field_in_place():
    "`to` moves each of beta, alpha, abar, sigma to its own field, as float32 by default."
    s = linear_schedule(5, 0.1, 0.3)
    s32, s64 = s.to('cpu'), s.to('cpu', torch.float64)
    beta = np.linspace(0.1, 0.3, 5)
    for k, ref in (('beta', beta), ('alpha', 1 - beta), ('abar', np.cumprod(1 - beta)), ('sigma', np.sqrt(beta))):
        assert getattr(s32, k).dtype == torch.float32
        np.testing.assert_allclose(getattr(s64, k).numpy(), ref, rtol=1e-12)

def test_noisify_ddpm_draws_every_step_from_zero():
    "t is uniform over 0..T-1, the first step (t = 0) included."
    abar = linear_schedule(3, 0.1, 0.3).to('cpu').abar
    (_, t), _ = noisify_ddpm(torch.zeros(600, 1, 2, 2), abar, torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=3)
    assert len(counts) == 3 and (counts > 150).all()

def test_ddpm_learner_recipe():
    "Lesson 22's recipe: MSE on the noise, Adam with eps=1e-5, one-cycle peak 4e-3, the batch noised first (n_inp=2)."
    from miniai.learner import TrainCB
    learn = ddpm_learner(torch.nn.Linear(2, 2), None, noisify_cosine, progress=False, device='cpu')
    assert learn.lr == 4e-3 and learn.loss_func is F.mse_loss and learn.n_inp == 2
    opt = learn.opt_func(learn.model.parameters(), learn.lr)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]['eps'] == 1e-5 and opt.param_groups[0]['lr'] == 4e-3
    assert isinstance(learn.cbs[0], NoisifyCB) and learn.cbs[0].noisify is noisify_cosine
    assert any(isinstance(cb, TrainCB) and cb.n_inp == 2 for cb in learn.cbs)

def test_ddpm_sample_refuses_an_empty_shape():
    "A zero-size dimension is a shape error, not an empty result."
    s = linear_schedule(2, 0.05, 0.4)
    for shape in ((0, 1, 4, 4), (1, 1, 0, 4)):
        with pytest.raises(ValueError, match=r'`shape` must be \(B, C, H, W\) with sizes >= 1'):
            ddpm_sample(lambda x, t: x, shape, s)

def test_ddpm_sample_returns_float32_for_any_model_dtype():
    "A model predicting in float64 or bfloat16 still gives float32 samples (the prediction is cast)."
    s = linear_schedule(3, 0.05, 0.4)
    for dt in (torch.float64, torch.bfloat16):
        seen = []
        out = ddpm_sample(lambda x, t: (0.5*x).to(dt), (1, 1, 4, 4), s, generator=0,
                          callback=lambda d: seen.append(d['x'].dtype))
        assert out.dtype == torch.float32 and set(seen) == {torch.float32}

def test_x0_from_eps_clamps_to_the_given_bound():
    "x0-hat = (x_t - sqrt(1-abar) eps)/sqrt(abar), clamped to [-clamp, clamp] (not always [-1, 1])."
    from miniai.diffusion.ddpm import x0_from_eps
    x, eps = torch.tensor([3., -0.3, 0.6]), torch.tensor([0., 0., 1.])   # abar 0.25: x0 = 2x - sqrt(3) eps
    raw = [6., -0.6, 1.2 - math.sqrt(3)]
    torch.testing.assert_close(x0_from_eps(x, eps, 0.25, clamp=None), torch.tensor(raw))
    torch.testing.assert_close(x0_from_eps(x, eps, 0.25, clamp=2.5), torch.tensor([2.5, -0.6, raw[2]]))
    torch.testing.assert_close(x0_from_eps(x, eps, 0.25, clamp=0.5), torch.tensor([0.5, -0.5, -0.5]))

def test_ddpm_sample_honours_a_wider_clamp():
    "With clamp=3 the last step returns x0-hat clamped to [-3, 3], values beyond 1 kept."
    s = linear_schedule(4, 0.01, 0.3)
    seen = []
    out = ddpm_sample(lambda x, t: -3*x, (2, 1, 4, 4), s, generator=0, clamp=3., callback=lambda d: seen.append(dict(d)))
    x_in, ab0 = seen[-2]['x'], s.abar[0].item()
    expected = ((x_in + 3*(1 - ab0)**0.5*x_in)/ab0**0.5).clamp(-3, 3)
    assert (expected.abs() > 1.5).any()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

def test_ddpm_callback_counts_steps_and_times():
    "The callback sees i = 0, 1, ... T-1 while t runs T-1 down to 0."
    seen = []
    ddpm_sample(lambda x, t: 0*x, (1, 1, 2, 2), linear_schedule(5, 0.05, 0.4), generator=0, callback=seen.append)
    assert [d['i'] for d in seen] == [0, 1, 2, 3, 4] and [d['t'] for d in seen] == [4, 3, 2, 1, 0]

def test_ddpm_sample_uses_the_given_generator():
    "A generator passed in is the one drawn from: its state advances by exactly the sampler's draws."
    s = linear_schedule(3, 0.05, 0.4)
    g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out = ddpm_sample(lambda x, t: 0*x, (1, 1, 2, 2), s, generator=g)
    for _ in range(3): torch.randn(1, 1, 2, 2, generator=ref)   # x_T and the noise of steps t=2 and t=1
    assert torch.equal(g.get_state(), ref.get_state())
    assert torch.equal(out, ddpm_sample(lambda x, t: 0*x, (1, 1, 2, 2), s, generator=7))


# ---------------------------------------------------------------- the diffusers adapter
@pytest.fixture(scope='module')
def cond_unet():
    "A randomly initialised (not zeroed) tiny class-conditional UNet: its output depends on t and c."
    torch.manual_seed(0)
    return diffusers_unet((8, 16), norm_groups=4, attention=(False, False), layers_per_block=1, n_classes=3).eval()

def test_diffusers_unet_scales_time(cond_unet):
    "With t_scale=1000 the UNet sees t*1000: the same network at t_scale=1 given 1000t agrees, given t does not."
    from miniai.diffusion.ddpm import DiffusersUNet
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3, 0.7])
    scaled = DiffusersUNet(cond_unet.unet, t_scale=1000.)
    with torch.no_grad():
        out = scaled(x, t)
        torch.testing.assert_close(out, cond_unet(x, t*1000))
        assert (out - cond_unet(x, t)).abs().max() > 1e-3

def test_diffusers_unet_null_class(cond_unet):
    "n_classes real classes plus a null class (index n_classes): c=None means the null class, labels 0..n_classes accepted."
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert cond_unet.n_classes == 3 and cond_unet.unet.config.num_class_embeds == 4
    with torch.no_grad():
        torch.testing.assert_close(cond_unet(x, 5), cond_unet(x, 5, torch.full((2,), 3)))
        assert (cond_unet(x, 5, torch.tensor([0, 2])) - cond_unet(x, 5)).abs().max() > 1e-3
    for bad in ([4, 0], [-1, 0]):
        with pytest.raises(ValueError, match=r'in 0\.\.2 \(or 3, the null class\)'): cond_unet(x, 5, torch.tensor(bad))

def test_diffusers_unet_default_attention():
    "Default: self-attention at every level but the first, mirrored on the way up."
    cfg = diffusers_unet((8, 16, 32), norm_groups=4, layers_per_block=1).unet.config
    assert tuple(cfg.down_block_types) == ('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D')
    assert tuple(cfg.up_block_types) == ('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D')


# ---------------------------------------------------------------- cosine details
def test_noisify_cosine_time_range():
    "t is drawn in [0, t_max]: clamped at 0.999 by default, at t_max when given."
    x0 = torch.zeros(20_000, 1, 1, 1)
    (_, t), _ = noisify_cosine(x0, torch.Generator().manual_seed(0))
    assert t.max().item() == pytest.approx(0.999, abs=1e-7) and (t == t.max()).sum() > 5   # ~0.1% of draws hit the clamp
    (_, t), _ = noisify_cosine(x0, torch.Generator().manual_seed(0), t_max=0.5)
    assert t.max().item() == 0.5 and abs((t == 0.5).double().mean().item() - 0.5) < 0.02 and t.min() < 0.01

def test_cosine_timesteps_needs_two_points():
    with pytest.raises(ValueError, match='`steps` must be >= 2'): cosine_timesteps(1)
    assert cosine_timesteps(2).tolist() == [0.5, 0.]

def test_cosine_ddim_sample_defaults_to_eta_one():
    "The default is the lesson's eta=1 (stochastic), not deterministic DDIM."
    f = linear_denoiser()
    run = lambda **kw: cosine_ddim_sample(f, (2, 1, 4, 4), 10, generator=3, **kw)
    default = run()
    assert torch.equal(default, run(eta=1.)) and (default - run(eta=0.)).abs().max() > 1e-3


# ---------------------------------------------------------------- properties a mutation review found unpinned

def test_cosine_ddim_sample_uses_float64_alpha_bars():
    "The cosine sampler equals `ddim_sample` with ᾱ = cos²(tπ/2) in Python floats, and dense grids stay strictly increasing."
    m = lambda x, t: 0.1*x + t.view(-1, 1, 1, 1)
    ts = cosine_timesteps(1000)
    a = cosine_ddim_sample(m, (2, 1, 4, 4), steps=1000, eta=0., generator=0, clamp=None)
    b = ddim_sample(m, (2, 1, 4, 4), ts.float(), [math.cos(t*math.pi/2)**2 for t in ts.tolist()], eta=0., generator=0, clamp=None)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert cosine_ddim_sample(lambda x, t: 0*x, (1, 1, 2, 2), steps=6000, eta=0., generator=0).isfinite().all()


def test_ddim_sample_takes_alpha_bars_as_a_list_at_full_precision():
    "ᾱ given as a Python list gives the same samples as the same values in a float64 tensor."
    m = lambda x, t: 0.1*x
    ts = cosine_timesteps(50)
    ab = cosine_abar(ts)
    a = ddim_sample(m, (2, 1, 4, 4), ts.float(), ab.tolist(), eta=0., generator=0)
    b = ddim_sample(m, (2, 1, 4, 4), ts.float(), ab, eta=0., generator=0)
    assert torch.equal(a, b)


def _zeros(x, t): return torch.zeros_like(x)


def test_ddpm_sample_progress_flag(capsys):
    "ddpm_sample shows no bar by default, and a 'DDPM' bar with progress=True."
    ddpm_sample(_zeros, (1, 1, 2, 2), linear_schedule(3), generator=0)
    assert 'DDPM' not in capsys.readouterr().err
    ddpm_sample(_zeros, (1, 1, 2, 2), linear_schedule(3), generator=0, progress=True)
    assert 'DDPM' in capsys.readouterr().err
