"Karras preconditioning and k-diffusion-style samplers: spec test vectors, an analytic Gaussian, convergence orders."
import math
import numpy as np
import pytest
import torch
from miniai.diffusion.karras import (scalings, sample_sigmas, noisify_karras, denoise, sigmas_karras, KarrasDenoiser,
                                     noise_cond)
from miniai.diffusion.ksamplers import (SAMPLERS, GaussianDenoiser, sample, sample_euler, sample_heun, sample_lms,
                                        sample_dpmpp_2m, sample_euler_ancestral, sample_dpmpp_2m_sde, lms_coeffs,
                                        get_ancestral_step, CountedDenoiser)

MU, S, SMAX, SMIN = 0.5, 0.3, 80., 0.01   # data ~ N(MU, S^2) in every dimension


def gauss_denoiser(x, sigma):
    "The ideal denoiser E[x0 | x0 + sigma n = x] for x0 ~ N(MU, S^2): (S^2 x + sigma^2 MU)/(S^2 + sigma^2)."
    sig2 = sigma.reshape(-1, *([1]*(x.ndim-1)))**2
    return (S**2*x + sig2*MU)/(S**2 + sig2)


def flow(x, sigma_from, sigma_to):
    "Exact probability-flow ODE solution for N(MU, S^2) data: x - MU scales with sqrt(S^2 + sigma^2)."
    return MU + (x - MU)*math.sqrt(S**2 + sigma_to**2)/math.sqrt(S**2 + sigma_from**2)


# --- spec test vectors ------------------------------------------------------------------------------------------

def test_sigmas_karras_values():
    s = sigmas_karras(20, device='cpu')
    ref = [80.0, 60.974, 45.966, 34.242, 25.181, 18.258, 13.035, 9.149, 6.301, 4.250, 2.800, 1.796, 1.118, 0.673,
           0.389, 0.215, 0.112, 0.0547, 0.0246, 0.01, 0.0]
    assert len(s) == 21 and s[-1] == 0
    np.testing.assert_allclose(s.numpy(), ref, rtol=2e-3, atol=1e-4)
    s100 = sigmas_karras(100, device='cpu')
    assert len(s100) == 101
    np.testing.assert_allclose(s100[[0, 1, 2, 3, -4, -3, -2, -1]].numpy(),
                               [80., 75.999, 72.170, 68.508, 0.01433, 0.01200, 0.01, 0.], rtol=1e-4, atol=1e-5)
    # evenly spaced in sigma^(1/rho): an independent check of the formula
    r = s100[:-1].double()**(1/7)
    np.testing.assert_allclose(r.diff().numpy(), np.full(99, (0.01**(1/7) - 80**(1/7))/99), rtol=1e-4)


@pytest.mark.parametrize('sd,table', [
    (0.33, [[0.96800, 0.05903, 2.98142], [0.21003, 0.29331, 1.38875], [0.00528, 0.32913, 0.22017], [0.00002, 0.33000, 0.01250]]),
    (0.66, [[0.99180, 0.05975, 1.50893], [0.51538, 0.45946, 1.08773], [0.02079, 0.65310, 0.21844], [0.00007, 0.65998, 0.01250]])])
def test_scalings_table(sd, table):
    c = torch.stack(scalings(torch.tensor([0.06, 0.64, 4.53, 80.]), sd), 1)
    np.testing.assert_allclose(c.numpy(), table, atol=6e-6)


def test_lognormal_quantiles():
    sig = sample_sigmas(400_000, device='cpu', generator=torch.Generator().manual_seed(0)).double()
    assert abs(sig.median().item() - 0.3012) < 3e-3
    assert abs(sig.mean().item() - 0.6188) < 1e-2
    for thresh, p in ((1, 0.1587), (5, 0.0096), (10, 0.0018)):
        assert abs((sig > thresh).double().mean().item() - p) < 1.5e-3
    assert abs(sig.log().std().item() - 1.2) < 5e-3


# --- training pair and denoiser -----------------------------------------------------------------------------------

def test_noisify_closed_form_and_unit_variance():
    g = torch.Generator().manual_seed(0)
    sd = 0.66
    x0 = torch.randn(4096, 1, 4, 4, generator=g)*sd
    sig = sample_sigmas(4096, device='cpu', generator=g)
    (xin, c), target = noisify_karras(x0, sd, sigma=sig, generator=torch.Generator().manual_seed(1))
    n = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))  # the same noise draw
    s4 = sig[:, None, None, None]
    torch.testing.assert_close(xin, (x0 + s4*n)/(s4**2 + sd**2).sqrt())
    torch.testing.assert_close(target, (s4/sd*x0 - sd*n)/(s4**2 + sd**2).sqrt(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c, sig.log()/4)
    assert abs(xin.std().item() - 1) < 0.02 and abs(target.std().item() - 1) < 0.02
    # default sigmas are log-normal and the pair is seedable
    (a, ca), ta = noisify_karras(x0, generator=torch.Generator().manual_seed(3))
    (b, cb), tb = noisify_karras(x0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(ta, tb) and abs(ca.mul(4).mean().item() + 1.2) < 0.1


def test_denoise_inverts_the_target():
    g = torch.Generator().manual_seed(0)
    x0, sig = torch.randn(5, 1, 8, 8, generator=g), torch.tensor([0.01, 0.3, 1., 10., 80.])
    x = x0 + sig[:, None, None, None]*torch.randn(x0.shape, generator=g)
    c_skip, c_out, _ = scalings(sig[:, None, None, None])
    oracle = lambda xin, c: (x0 - c_skip*x)/c_out          # a "network" returning the exact target
    torch.testing.assert_close(denoise(oracle, x, sig), x0, rtol=1e-4, atol=1e-4)
    seen = {}
    def spy(xin, c): seen.update(xin=xin, c=c); return torch.zeros_like(xin)
    KarrasDenoiser(torch.nn.Identity())  # constructs
    denoise(spy, x, sig, 0.5)
    torch.testing.assert_close(seen['xin'], x/(sig[:, None, None, None]**2 + 0.25).sqrt())
    torch.testing.assert_close(seen['c'], noise_cond(sig))


# --- samplers on an analytic Gaussian -----------------------------------------------------------------------------

STEPS = dict(euler=200, euler_ancestral=200, heun=40, lms=40, dpmpp_2m=40, dpmpp_2m_sde=100)
KW = dict(heun=dict(s_churn=5.), euler_ancestral=dict(eta=1.))


@pytest.mark.parametrize('name', list(SAMPLERS))
def test_samplers_reach_the_data_distribution(name):
    r = sample(name, gauss_denoiser, (4000, 2), steps=STEPS[name], seed=0, device='cpu', **KW.get(name, {}))
    # sample() starts from N(0, SMAX^2), so the exact flow lands on these moments (within 0.4% of MU and S)
    mean = MU - MU*S/math.sqrt(S**2 + SMAX**2)
    std = SMAX*S/math.sqrt(S**2 + SMAX**2)
    assert torch.isfinite(r.x).all()
    assert abs(r.x.mean().item() - mean) < 0.012, r.x.mean()
    assert abs(r.x.std().item() - std) < 0.015, r.x.std()


def _flow_error(fn, steps):
    "Largest deviation from the exact ODE solution, integrating from SMAX down to SMIN (no final jump to 0)."
    sig = sigmas_karras(steps, device='cpu').double()[:-1]
    xT = MU + math.sqrt(S**2 + SMAX**2)*torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (fn(gauss_denoiser, xT, sig) - flow(xT, SMAX, SMIN)).abs().max().item()


@pytest.mark.parametrize('fn,lo,hi', [(sample_euler, 1.8, 2.2), (sample_heun, 3.6, 5.5), (sample_dpmpp_2m, 3.6, 5.5),
                                      (sample_lms, 7., 20.)])
def test_convergence_order(fn, lo, hi):
    "Doubling the steps divides the error by ~2 (Euler, 1st order), ~4 (Heun, DPM++ 2M), more (LMS order 4)."
    errs = [_flow_error(fn, n) for n in (20, 40, 80)]
    for a, b in zip(errs, errs[1:]): assert lo < a/b < hi, (fn.__name__, errs)


def test_final_step_to_zero_is_small():
    "With the trailing 0 the result is still close to the exact flow (the last step is first order)."
    sig = sigmas_karras(80, device='cpu').double()
    xT = MU + math.sqrt(S**2 + SMAX**2)*torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for fn in (sample_heun, sample_dpmpp_2m, sample_lms):
        assert (fn(gauss_denoiser, xT, sig) - flow(xT, SMAX, 0.)).abs().max() < 5e-3


@pytest.mark.parametrize('name,steps,nfe', [('euler', 10, 10), ('euler_ancestral', 10, 10), ('heun', 10, 19),
                                            ('heun', 50, 99), ('lms', 20, 20), ('dpmpp_2m', 10, 10), ('dpmpp_2m_sde', 7, 7)])
def test_nfe(name, steps, nfe):
    calls = []
    def den(x, sigma): calls.append(sigma); return gauss_denoiser(x, sigma)
    r = sample(name, den, (3, 2), steps=steps, seed=0, device='cpu')
    assert r.nfe == nfe == len(calls)
    assert all(c.shape == (3,) for c in calls)   # one sigma per image


@pytest.mark.parametrize('name', list(SAMPLERS))
def test_seeded_and_reproducible(name):
    a = sample(name, gauss_denoiser, (8, 3), steps=6, seed=1, device='cpu').x
    b = sample(name, gauss_denoiser, (8, 3), steps=6, seed=1, device='cpu').x
    c = sample(name, gauss_denoiser, (8, 3), steps=6, seed=2, device='cpu').x
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stochastic_samplers_use_the_generator():
    sig = sigmas_karras(6, device='cpu')
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))*80
    for fn, kw in ((sample_euler_ancestral, {}), (sample_dpmpp_2m_sde, {}), (sample_heun, dict(s_churn=3.))):
        a = fn(gauss_denoiser, x, sig, generator=torch.Generator().manual_seed(5), **kw)
        b = fn(gauss_denoiser, x, sig, generator=torch.Generator().manual_seed(5), **kw)
        c = fn(gauss_denoiser, x, sig, generator=torch.Generator().manual_seed(6), **kw)
        assert torch.equal(a, b) and not torch.equal(a, c), fn.__name__
    # eta=0 turns both stochastic samplers into their deterministic counterparts
    torch.testing.assert_close(sample_euler_ancestral(gauss_denoiser, x, sig, eta=0.), sample_euler(gauss_denoiser, x, sig))
    torch.testing.assert_close(sample_dpmpp_2m_sde(gauss_denoiser, x, sig, eta=0.), sample_dpmpp_2m(gauss_denoiser, x, sig))
    torch.testing.assert_close(sample_lms(gauss_denoiser, x, sig, order=1), sample_euler(gauss_denoiser, x, sig))


def test_callback_and_counted_denoiser():
    seen = []
    r = sample('heun', gauss_denoiser, (4, 2), steps=5, seed=0, device='cpu', callback=seen.append)
    assert r.x.shape == (4, 2) and r.nfe == 2*5 - 1   # Heun: two evaluations a step, one for the last (to sigma 0)
    torch.testing.assert_close(r.x, seen[-1]['denoised'])   # the last step lands on sigma 0: the last denoised estimate
    assert [d['i'] for d in seen] == list(range(5)) and seen[0]['sigma'] == pytest.approx(80.)
    assert set(seen[0]) == {'i', 'x', 'sigma', 'denoised'}
    c = CountedDenoiser(gauss_denoiser); c(torch.zeros(2, 1), torch.ones(2)); assert c.nfe == 1


# --- helpers ------------------------------------------------------------------------------------------------------

def test_lms_coeffs_integrate_polynomials_exactly():
    sig = sigmas_karras(12, device='cpu').double().tolist()
    for order in (1, 2, 3, 4):
        i = 6
        p = np.polynomial.Polynomial([0.3, -1.2, 0.7, 0.05][:order])   # degree order-1
        c = lms_coeffs(sig, i, order)
        approx = sum(cj*p(sig[i-j]) for j, cj in enumerate(c))
        exact = p.integ()(sig[i+1]) - p.integ()(sig[i])
        assert approx == pytest.approx(exact, rel=1e-10)
    assert lms_coeffs(sig, 0, 1) == [pytest.approx(sig[1] - sig[0])]
    with pytest.raises(ValueError): lms_coeffs(sig, 1, 3)


def test_ancestral_step_preserves_noise_level():
    for eta in (0., 0.5, 1.):
        down, up = get_ancestral_step(10., 4., eta)
        assert down**2 + up**2 == pytest.approx(16.)
        assert (up == 0) == (eta == 0)
    assert get_ancestral_step(0.5, 0., 1.) == (0., 0.)


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw,msg', [
    (dict(steps=0), '`n`'), (dict(steps=2.5), '`n`'), (dict(sigma_min=80., sigma_max=10.), 'smaller'),
    (dict(sigma_min=0.), 'sigma_min'), (dict(sigma_max=float('inf')), 'finite'), (dict(sigma_max=float('nan')), 'finite'),
    (dict(rho=0.), 'rho'), (dict(eta=-0.1, sampler='euler_ancestral'), 'eta'), (dict(eta=float('nan'), sampler='dpmpp_2m_sde'), 'eta'),
    (dict(s_churn=-1., sampler='heun'), 's_churn'), (dict(order=5, sampler='lms'), 'order'), (dict(sampler='nope'), 'unknown sampler'),
    (dict(shape=(0, 2)), 'shape'), (dict(shape=(2.5,)), 'shape')])
def test_bad_parameters_raise(kw, msg):
    kw = dict(dict(sampler='euler', shape=(2, 2), steps=5, device='cpu'), **kw)
    with pytest.raises(ValueError, match=msg):
        sample(kw.pop('sampler'), gauss_denoiser, kw.pop('shape'), **kw)


def test_bad_inputs_to_samplers_raise():
    sig = sigmas_karras(5, device='cpu')
    with pytest.raises(ValueError, match='non-finite'): sample_euler(gauss_denoiser, torch.full((2, 2), float('nan')), sig)
    with pytest.raises(TypeError, match='float'): sample_euler(gauss_denoiser, torch.zeros(2, 2, dtype=torch.long), sig)
    with pytest.raises(ValueError, match='decreasing'): sample_euler(gauss_denoiser, torch.zeros(2, 2), sig.flip(0))
    with pytest.raises(ValueError, match='finite'): sample_euler(gauss_denoiser, torch.zeros(2, 2), torch.tensor([float('inf'), 1., 0.]))
    with pytest.raises(TypeError): sample('euler', 3, (2, 2), device='cpu')


# --- the adapter for cosine-schedule eps-models -------------------------------------------------------------------

def test_eps_adapter_recovers_the_exact_denoiser():
    "An exact eps-model for Gaussian data, written forward in t (cosine schedule), wrapped: D must come back."
    from miniai.diffusion.cosine import cosine_abar
    from miniai.diffusion.karras import EpsDenoiser
    def eps_model(x_t, t):
        ab = cosine_abar(t.double()).reshape(-1, 1)
        sig = ((1 - ab)/ab).sqrt()
        x = x_t.double()/ab.sqrt()
        return ((x - gauss_denoiser(x, sig.flatten()))/sig).to(x_t.dtype)
    sig = torch.tensor([0.01, 0.1, 1., 10., 80.], dtype=torch.float64)
    x = MU + (S**2 + sig[:, None]**2).sqrt()*torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(EpsDenoiser(eps_model)(x, sig), gauss_denoiser(x, sig))
    # and sampling through the adapter lands on the data distribution
    r = sample('dpmpp_2m', EpsDenoiser(eps_model), (4000, 2), steps=40, seed=0, device='cpu')
    assert abs(r.x.mean().item() - MU) < 0.012 and abs(r.x.std().item() - S) < 0.015


# --- the FID bench runs end to end (CPU smoke test) ---------------------------------------------------------------

def test_bench_quick(tmp_path, monkeypatch, load_script):
    "bench/karras_fid.py --quick: every setting gets a row with the right NFE and finite scores; a rerun resumes."
    import json, os
    if not os.environ.get('MINIAI_DATA'): pytest.skip('needs Fashion-MNIST ($MINIAI_DATA)')
    from miniai.models.resnet import fashion_classifier, save_weights, classifier_metadata
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    clf = tmp_path/'clf.safetensors'   # an untrained tiny classifier: features are features, and it takes no time
    torch.manual_seed(0)
    save_weights(fashion_classifier(nfs=(8, 16)).eval(), clf, classifier_metadata((8, 16), 0.1))
    bench = load_script('bench/karras_fid.py')
    out = tmp_path/'res.json'
    argv = ['--quick', '--no-cosine', '--classifier', str(clf), '--out', str(out)]
    bench.main(argv)
    res = json.loads(out.read_text())
    rows = {(r['model'], r['sampler'], r['steps']): r for r in res['rows']}
    expect = {('karras', 'euler', 10): 10, ('karras', 'euler_ancestral', 10): 10, ('karras', 'heun', 5): 9,
              ('karras', 'heun', 2): 3, ('karras', 'lms', 2): 2, ('karras', 'dpmpp_2m', 2): 2, ('karras', 'dpmpp_2m', 1): 1,
              ('karras', 'dpmpp_2m_sde', 2): 2, ('karras+ema', 'dpmpp_2m', 2): 2, ('reals', 'train images', 0): 0}
    assert {k: r['nfe'] for k, r in rows.items()} == expect
    for r in res['rows']:
        assert set(r['scores']) == {'32', '16'} and all(math.isfinite(s['fid']) and s['fid'] >= 0 for s in r['scores'].values())
    assert rows[('reals', 'train images', 0)]['scores']['32']['fid'] < rows[('karras', 'dpmpp_2m', 1)]['scores']['32']['fid']
    assert '| karras | heun | 5 | 9 |' in out.with_suffix('.md').read_text()
    # a second run finds the weights and the rows and recomputes nothing
    before = out.read_text()
    called = []
    monkeypatch.setattr(bench, 'draw', lambda *a, **k: called.append(a))
    bench.main(argv)
    assert not called and json.loads(out.read_text())['rows'] == json.loads(before)['rows']


def test_sample_runs_a_bare_network_in_eval_mode_as_karras_denoiser():
    "A bare nn.Module is wrapped as a KarrasDenoiser, called in eval mode without gradients, and left as it was."
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.w = torch.nn.Parameter(torch.zeros(())); self.modes = []
        def forward(self, xin, c):
            self.modes.append((self.training, torch.is_grad_enabled()))
            return xin*self.w     # F = 0: D(x) = c_skip x
    net = Net().train()
    r = sample('euler', net, (3, 1, 2, 2), steps=50, seed=0, device='cpu', sigma_data=0.5)
    assert net.training and set(net.modes) == {(False, False)} and r.nfe == 50
    # with F = 0 the ODE dx/dσ = (1 - c_skip) x / σ = σ x/(σ² + σd²) is solved by x ∝ sqrt(σ² + σd²)
    x0 = torch.randn((3, 1, 2, 2), generator=torch.Generator('cpu').manual_seed(0))*80
    exact = x0*0.5/math.sqrt(80**2 + 0.25)
    assert ((r.x - exact).abs() < 0.08*exact.abs()).all()   # Euler, 50 steps: 5% low


# --- one step by hand: the stochastic samplers' formulas, with the sampler's own noise draws -----------------------
# A denoiser that depends on sigma (so an evaluation at the wrong level shows), the ideal one for N(0, C) data, and the
# expected results computed here in float64 from the papers' formulas. The samplers draw their fresh noise from the
# generator in order, as torch.randn(x.shape, dtype=x.dtype): `_draws` replays those draws.

C = 0.5

def shrink_denoiser(x, sigma):
    "D(x; s) = x C/(C + s^2), one s per row."
    return x*C/(C + sigma.reshape(-1, *([1]*(x.ndim-1))).to(x.dtype)**2)

def D(x, s): return x*C/(C + s*s)   # the same for a Python float s: the tests' own arithmetic

SHAPE = (3, 5)

def _x():
    return 2*torch.randn(SHAPE, generator=torch.Generator().manual_seed(100), dtype=torch.float64)

def _draws(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(k)]

def _gen(seed=0): return torch.Generator().manual_seed(seed)

def _sig(*s): return torch.tensor(s, dtype=torch.float64)

def _close(a, b): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('eta', [0.5, 1., 1.5])
def test_euler_ancestral_one_step_by_hand(eta):
    "sigma_up = min(s1, eta s1 sqrt(s0^2 - s1^2)/s0), sigma_down = sqrt(s1^2 - sigma_up^2): Euler to sigma_down, then sigma_up z."
    s0, s1 = 2., 0.7
    x, (z,) = _x(), _draws(1)
    out = sample_euler_ancestral(shrink_denoiser, x, _sig(s0, s1), generator=_gen(), eta=eta)
    up = min(s1, eta*s1*math.sqrt(s0**2 - s1**2)/s0)      # eta = 1.5 hits the cap: up = s1, down = 0
    down = math.sqrt(s1**2 - up**2)
    _close(out, x + (x - D(x, s0))/s0*(down - s0) + up*z)
    if eta == 1.5: _close(out, D(x, s0) + s1*z)            # down = 0: the denoised estimate plus noise of std s1
    # the final step to 0 adds no noise: it lands on the denoised estimate
    x1 = out.clone()
    _close(sample_euler_ancestral(shrink_denoiser, x, _sig(s0, s1, 0.), generator=_gen(), eta=eta), D(x1, s1))


def _heun_step(x, s_hat, s_next):
    "One Heun step from s_hat to s_next (Karras et al. 2022, Alg. 2, lines 6-10): Euler, then the trapezoid if s_next > 0."
    d = (x - D(x, s_hat))/s_hat
    x_e = x + (s_next - s_hat)*d
    if s_next == 0: return x_e
    return x + (s_next - s_hat)*(d + (x_e - D(x_e, s_next))/s_next)/2


@pytest.mark.parametrize('s_churn,gamma', [(5., math.sqrt(2) - 1), (0.3, 0.3)])   # capped / not capped
@pytest.mark.parametrize('s_noise', [1., 0.5])
def test_heun_churn_one_step_by_hand(s_churn, gamma, s_noise):
    "gamma = min(s_churn/n, sqrt 2 - 1); s_hat = (1 + gamma) s0; x_hat = x + s_noise sqrt(s_hat^2 - s0^2) z; Heun from s_hat."
    s0, s1 = 2., 0.7
    x, (z,) = _x(), _draws(1)
    out = sample_heun(shrink_denoiser, x, _sig(s0, s1), generator=_gen(), s_churn=s_churn, s_noise=s_noise)
    s_hat = s0*(1 + gamma)
    x_hat = x + s_noise*math.sqrt(s_hat**2 - s0**2)*z
    _close(out, _heun_step(x_hat, s_hat, s1))
    # and with the trailing 0: the last step is an Euler step from its own s_hat (churned as well)
    out2 = sample_heun(shrink_denoiser, x, _sig(s0, s1, 0.), generator=_gen(), s_churn=s_churn, s_noise=s_noise)
    g2 = min(s_churn/2, math.sqrt(2) - 1)
    z1, z2 = _draws(2)
    xa = _heun_step(x + s_noise*math.sqrt((s0*(1 + g2))**2 - s0**2)*z1, s0*(1 + g2), s1)
    _close(out2, _heun_step(xa + s_noise*math.sqrt((s1*(1 + g2))**2 - s1**2)*z2, s1*(1 + g2), 0.))


def test_heun_churn_is_spread_over_the_steps():
    "gamma = s_churn/n with n the number of steps (here 2): 0.5 -> 0.25 per step, below the cap."
    x = _x()
    z1, z2 = _draws(2)
    out = sample_heun(shrink_denoiser, x, _sig(2., 0.7, 0.3), generator=_gen(), s_churn=0.5)
    xa = _heun_step(x + math.sqrt(2.5**2 - 2.**2)*z1, 2.5, 0.7)
    _close(out, _heun_step(xa + math.sqrt(0.875**2 - 0.7**2)*z2, 0.875, 0.3))


@pytest.mark.parametrize('s_tmin,s_tmax', [(0.5, 1.), (0.7, 0.7)])   # the window [s_tmin, s_tmax] is inclusive
def test_heun_churn_only_inside_the_window(s_tmin, s_tmax):
    "gamma = 0 where sigma_i is outside [s_tmin, s_tmax]: no noise drawn there, the step evaluated at sigma_i itself."
    x = _x()
    z, = _draws(1)     # the first (and only) draw is used at step 1, sigma = 0.7
    out = sample_heun(shrink_denoiser, x, _sig(2., 0.7, 0.3), generator=_gen(), s_churn=0.8, s_tmin=s_tmin, s_tmax=s_tmax,
                      s_noise=0.5)
    gamma = min(0.8/2, math.sqrt(2) - 1)          # 0.4: below the cap
    xa = _heun_step(x, 2., 0.7)                   # sigma 2 > s_tmax: plain Heun
    s_hat = 0.7*(1 + gamma)
    _close(out, _heun_step(xa + 0.5*math.sqrt(s_hat**2 - 0.49)*z, s_hat, 0.3))
    # a window that holds no sigma_i: deterministic Heun, and the generator is not touched
    g = _gen()
    _close(sample_heun(shrink_denoiser, x, _sig(2., 0.7, 0.3), generator=g, s_churn=0.8, s_tmin=3.), _heun_step(xa, 0.7, 0.3))
    assert torch.equal(g.get_state(), _gen().get_state())


@pytest.mark.parametrize('eta,s_noise', [(1., 1.), (1., 0.5), (0.5, 0.7)])
def test_dpmpp_2m_sde_two_steps_by_hand(eta, s_noise):
    """SDE-DPM-Solver++(2M), midpoint form, h = ln(s_i/s_{i+1}):
    x' = (s_{i+1}/s_i) e^{-eta h} x + (1 - e^{-(1+eta) h}) (D_i + h/(2 h_prev) (D_i - D_{i-1})) + s_noise s_{i+1} sqrt(1 - e^{-2 eta h}) z."""
    s = [2., 0.7, 0.3, 0.]
    x0 = _x()
    z1, z2 = _draws(2)
    out = sample_dpmpp_2m_sde(shrink_denoiser, x0, _sig(*s), generator=_gen(), eta=eta, s_noise=s_noise)
    h1, h2 = math.log(s[0]/s[1]), math.log(s[1]/s[2])
    d0 = D(x0, s[0])
    x1 = s[1]/s[0]*math.exp(-eta*h1)*x0 + (1 - math.exp(-(1 + eta)*h1))*d0 + s_noise*s[1]*math.sqrt(1 - math.exp(-2*eta*h1))*z1
    d1 = D(x1, s[1])
    x2 = (s[2]/s[1]*math.exp(-eta*h2)*x1 + (1 - math.exp(-(1 + eta)*h2))*(d1 + h2/(2*h1)*(d1 - d0))
          + s_noise*s[2]*math.sqrt(1 - math.exp(-2*eta*h2))*z2)
    _close(out, D(x2, s[2]))        # the last step, to 0, is the denoised estimate


# --- validation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bad', [0., -0.5, float('nan'), float('inf'), -float('inf')])
def test_noisify_karras_refuses_bad_noise_levels(bad):
    x0 = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match='finite noise levels > 0'): noisify_karras(x0, sigma=torch.tensor([0.5, bad, 1.]))
    with pytest.raises(ValueError, match='finite noise levels > 0'): noisify_karras(x0, sigma=bad)


def test_noisify_karras_noise_level_forms_and_sigma_data():
    from miniai.diffusion.karras import check_noise_levels
    x0 = torch.zeros(3, 1, 2, 2)
    (_, c), _ = noisify_karras(x0, sigma=2.)        # one level for every image
    torch.testing.assert_close(c, torch.full((3,), math.log(2.)/4))
    (_, c), _ = noisify_karras(x0, sigma=torch.tensor([[1.], [2.], [3.]]))   # (B, 1) is (B,)
    assert c.shape == (3,)
    assert check_noise_levels(torch.tensor([1, 2, 3]), 3).dtype == torch.float32   # integer levels become floats
    for flags in (True, torch.ones(3, dtype=torch.bool)):   # a mask passed by mistake became σ = 1 for every image
        with pytest.raises(TypeError, match='real noise levels'): check_noise_levels(flags, 3)
    with pytest.raises(ValueError, match='one noise level per image'): noisify_karras(x0, sigma=torch.ones(2))
    for sd in (0., -1., float('nan'), float('inf')):
        with pytest.raises(ValueError, match='`sigma_data` must be a finite number > 0'): noisify_karras(x0, sd)
    with pytest.raises(ValueError, match='`std`'): sample_sigmas(4, std=-1., device='cpu')
    with pytest.raises(ValueError, match='`n`'): sample_sigmas(-1, device='cpu')


@pytest.mark.parametrize('name', list(SAMPLERS))
def test_samplers_called_directly_refuse_non_finite_results(name):
    "A diverged denoiser: every sampler, called without `sample`, raises at the end instead of returning NaN images."
    calls = []
    def nan_after_one(x, sigma):
        calls.append(1)
        return gauss_denoiser(x, sigma)*(float('nan') if len(calls) == 2 else 1.)
    with pytest.raises(FloatingPointError, match='non-finite values'):
        SAMPLERS[name](nan_after_one, torch.randn(2, 3)*80, sigmas_karras(4, device='cpu'), generator=_gen())
    assert len(calls) >= 3   # the check is at the end, not at the bad step
    with pytest.raises(FloatingPointError, match=r'non-finite values.*after \d+ model evaluations'):
        sample(name, lambda x, s: x*float('inf'), (2, 3), steps=3, device='cpu')


# --- defaults and plumbing of the preconditioning -----------------------------------------------------------------

def test_default_sigma_data_is_fashion_mnist_std():
    "SIGMA_DATA = 0.66 (Fashion-MNIST in [-1, 1]) is the default of scalings, noisify_karras, denoise and KarrasDenoiser."
    from miniai.diffusion.karras import SIGMA_DATA
    assert SIGMA_DATA == 0.66
    np.testing.assert_allclose(torch.stack(scalings(torch.tensor([0.64]))).flatten().numpy(), [0.51538, 0.45946, 1.08773], atol=6e-6)
    n = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    (xin, _), target = noisify_karras(torch.zeros(2, 1, 2, 2), sigma=1., generator=torch.Generator().manual_seed(1))
    tv = 1 + 0.66**2                                      # sigma = 1, x0 = 0: x = n, target = -sd n/sqrt(tv)
    torch.testing.assert_close(xin, n/math.sqrt(tv))
    torch.testing.assert_close(target, -0.66*n/math.sqrt(tv))
    seen = []
    def spy(xin, c): seen.append(xin); return torch.zeros_like(xin)
    x, sig = torch.ones(2, 1, 2, 2), torch.tensor([1., 2.])
    for out in (denoise(spy, x, sig), KarrasDenoiser(spy)(x, sig)):   # F = 0: D = c_skip x
        torch.testing.assert_close(out, (0.66**2/(sig**2 + 0.66**2)).reshape(-1, 1, 1, 1)*x)
        torch.testing.assert_close(seen.pop(), x/(sig**2 + 0.66**2).sqrt().reshape(-1, 1, 1, 1))


def test_karras_denoiser_uses_its_sigma_data():
    "KarrasDenoiser(model, sigma_data) scales with that sigma_data, not the default."
    seen = []
    def spy(xin, c): seen.append(xin); return torch.ones_like(xin)
    x, sig = torch.full((2, 1, 2, 2), 2.), torch.tensor([0.5, 3.])
    out = KarrasDenoiser(spy, sigma_data=0.5)(x, sig)
    s4 = sig.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(seen[0], x/(s4**2 + 0.25).sqrt())
    torch.testing.assert_close(out, 0.25/(s4**2 + 0.25)*x + s4*0.5/(s4**2 + 0.25).sqrt())


def test_sigmas_karras_refuses_bad_ends():
    "sigma_min must be strictly below sigma_max, and every parameter finite (checked by sigmas_karras itself)."
    with pytest.raises(ValueError, match='smaller'): sigmas_karras(5, 1., 1., device='cpu')
    for kw in (dict(sigma_max=float('inf')), dict(sigma_max=float('nan')), dict(rho=float('inf')), dict(sigma_min=float('nan'))):
        with pytest.raises(ValueError, match='must be a finite number > 0'): sigmas_karras(5, device='cpu', **kw)


def test_sigmas_karras_ends_exactly():
    "The schedule starts at sigma_max and its last nonzero level is sigma_min, to float32 precision."
    for n, lo, hi, rho in ((20, 0.01, 80., 7.), (7, 0.002, 160., 7.), (100, 0.03, 14.6, 3.)):
        s = sigmas_karras(n, lo, hi, rho, device='cpu')
        assert s.dtype == torch.float32 and s[0].item() == np.float32(hi) and s[-2].item() == np.float32(lo)


def test_karras_learner_recipe():
    "Lesson 23: one-cycle peak lr 1e-2, and the training pairs use the learner's sigma_data."
    from miniai.diffusion.ddpm import NoisifyCB
    from miniai.diffusion.karras import karras_learner
    learn = karras_learner(torch.nn.Linear(2, 2), None, sigma_data=0.5, progress=False, device='cpu')
    assert learn.lr == 1e-2
    noisify = next(cb for cb in learn.cbs if isinstance(cb, NoisifyCB)).noisify
    sig = torch.tensor([0.5, 1., 2., 4.])
    (xin, _), target = noisify(torch.zeros(4, 1, 2, 2), sigma=sig)
    # x0 = 0: c_in x = sigma n/sqrt(sigma^2 + sd^2) and target = -sd n/sqrt(sigma^2 + sd^2), so target/xin = -sd/sigma
    torch.testing.assert_close(target/xin, (-0.5/sig).reshape(-1, 1, 1, 1).expand(4, 1, 2, 2))


def test_numpy_and_tensor_scalars_are_numbers_too():
    "eta, s_churn, sigma_data, n... given as NumPy scalars or 0-d tensors give exactly what the Python numbers give."
    import numpy as np
    from miniai.diffusion.ksamplers import sample
    den = lambda x, s: 0.5*x
    for name, v in (('euler_ancestral', dict(eta=0.5)), ('heun', dict(s_churn=1., s_noise=1.)), ('dpmpp_2m_sde', dict(eta=0.5))):
        want = sample(name, den, (2, 1, 4, 4), steps=4, seed=1, device='cpu', **v).x
        for conv in (np.float32, np.float64, torch.tensor):
            got = sample(name, den, (2, 1, 4, 4), steps=4, seed=1, device='cpu', **{k: conv(x) for k, x in v.items()}).x
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(sigmas_karras(np.int64(5), np.float32(0.5), torch.tensor(20.), device='cpu'),
                       sigmas_karras(5, float(np.float32(0.5)), 20., device='cpu'))
    x0, g = torch.randn(3, 1, 4, 4), lambda: torch.Generator().manual_seed(0)
    a, b = noisify_karras(x0, np.float32(0.25), generator=g()), noisify_karras(x0, 0.25, generator=g())
    assert torch.equal(a[1], b[1]) and torch.equal(a[0][0], b[0][0])
    with pytest.raises(ValueError, match='`eta` must be a number'): sample('euler_ancestral', den, (1, 1, 4, 4), eta=np.bool_(True), device='cpu')


def test_eps_denoiser_maps_the_specs_ve_sigmas_to_cosine_times():
    "Spec test vectors (lesson 22, section 12): sigma = sqrt((1 - abar)/abar) is 1.0, 12.71, 63.66 at t = 0.5, 0.95, 0.99."
    from miniai.diffusion.cosine import cosine_abar
    from miniai.diffusion.karras import EpsDenoiser
    t = torch.tensor([0.5, 0.95, 0.99], dtype=torch.float64)
    ab = cosine_abar(t)
    torch.testing.assert_close(((1 - ab)/ab).sqrt(), torch.tensor([1.0, 12.71, 63.66], dtype=torch.float64), atol=5e-3, rtol=0)
    seen = []
    def eps_model(x, tt): seen.append(tt); return torch.zeros_like(x)
    x = torch.ones(3, 1, 2, 2)
    out = EpsDenoiser(eps_model)(x, ((1 - ab)/ab).sqrt().float())
    torch.testing.assert_close(seen[0], t.float(), atol=1e-5, rtol=0)   # the model is asked at the cosine time of each sigma
    assert torch.equal(out, x)   # eps = 0: nothing to remove


def test_half_precision_denoisers_keep_large_noise_levels():
    "In float16, σ² + σ_d² overflows above σ ≈ 256: the factors are computed in float32, so D stays the float32 result."
    x, sigma = torch.full((2, 1, 2, 2), 300.), torch.tensor([300., 1000.])
    net = lambda xin, c: xin   # F(c_in x) = c_in x: D = c_skip x + c_out c_in x, all factors order 1 / order σ
    want = KarrasDenoiser(net, 0.66)(x, sigma)
    got = KarrasDenoiser(net, 0.66)(x.half(), sigma)
    assert got.dtype == torch.float16 and got.abs().min() > 0.1
    torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=0)
    g = GaussianDenoiser(MU, S)
    torch.testing.assert_close(g(x.half(), sigma).float(), gauss_denoiser(x, sigma), rtol=2e-3, atol=1e-3)


# ---------------------------------------------------------------- properties a mutation review found unpinned

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_eps_denoiser_time_matches_atan_sigma_in_half_precision(dtype):
    "σ -> ᾱ = 1/(1+σ²) -> t must stay right for small σ in half precision (1+σ² rounds to 1 there): t = (2/π) atan σ."
    from miniai.diffusion.karras import EpsDenoiser
    sig = [0.002, 0.01, 0.05, 1., 80.]
    seen = []
    D = EpsDenoiser(lambda x, t: seen.append(t.double()) or torch.zeros_like(x))
    D(torch.ones(len(sig), 1, 2, 2, dtype=dtype), torch.tensor(sig))
    want = torch.tensor([2/math.pi*math.atan(s) for s in sig], dtype=torch.float64)
    torch.testing.assert_close(seen[0], want, rtol=0.01, atol=0)


def test_scalings_keep_float64():
    "A float64 σ gives float64 factors, equal to the formulas in Python floats."
    sd = 0.5
    s = torch.tensor([0.002, 0.1, 3.], dtype=torch.float64)
    c_skip, c_out, c_in = scalings(s, sd)
    assert c_skip.dtype == c_out.dtype == c_in.dtype == torch.float64
    for i, v in enumerate(s.tolist()):
        tv = v*v + sd*sd
        assert c_skip[i].item() == pytest.approx(sd*sd/tv, rel=1e-12)
        assert c_out[i].item() == pytest.approx(v*sd/math.sqrt(tv), rel=1e-12)
        assert c_in[i].item() == pytest.approx(1/math.sqrt(tv), rel=1e-12)


def test_documented_defaults():
    "The defaults the docs and the lessons give (lesson 22's schedule, eta=1 DDIM/ancestral, w=1 guidance, band 2, clamp 1)."
    import inspect
    from miniai.diffusion import ddim, ddpm, guidance, ksamplers, noise_level
    d = lambda f: {k: v.default for k, v in inspect.signature(f).parameters.items() if v.default is not inspect.Parameter.empty}
    karras_schedule = dict(sigma_min=0.01, sigma_max=80., rho=7.)
    assert d(sigmas_karras).items() >= karras_schedule.items()
    assert d(ksamplers.sample).items() >= {**karras_schedule, 'steps': 20}.items()
    assert d(ddpm.x0_from_eps)['clamp'] == 1.
    assert d(ddim.ddim_sigma) == dict(eta=1., cutoff=0.) and d(ddim.ddim_step)['eta'] == 1.
    assert d(noise_level.estimate_abar) == dict(band=2.)
    assert d(noise_level.noise_level_ddim_sample).items() >= dict(eta=1., band=2., clamp=1., cutoff=0.01).items()
    assert d(ksamplers.sample_euler_ancestral)['eta'] == d(ksamplers.get_ancestral_step)['eta'] == 1.
    assert d(ksamplers.sample_dpmpp_2m_sde).items() >= dict(eta=1., s_noise=1.).items()
    assert d(ksamplers.sample_heun).items() >= dict(s_churn=0., s_tmin=0., s_tmax=math.inf, s_noise=1.).items()
    assert d(guidance.GuidedModel)['scale'] == 1.


def test_sample_uses_the_karras_schedule_by_default():
    "`sample(name, D, shape, steps)` is that sampler over `sigmas_karras(steps)` from σ_max-scaled noise."
    D = GaussianDenoiser(0., .5)
    got = sample('euler', D, (4, 1, 2, 2), steps=5, seed=3, device='cpu').x
    g = torch.Generator().manual_seed(3)
    sig = sigmas_karras(5)
    want = sample_euler(D, torch.randn(4, 1, 2, 2, generator=g)*sig[0], sig)
    torch.testing.assert_close(got, want)


def test_sample_euler_no_progress_bar_by_default(capsys):
    "sample_euler prints nothing unless asked, and a bar of its steps with progress=True."
    sig = torch.tensor([2., 1., 0.])
    sample_euler(GaussianDenoiser(0., 1.), torch.randn(2, 3), sig)
    assert capsys.readouterr().err == ''
    sample_euler(GaussianDenoiser(0., 1.), torch.randn(2, 3), sig, progress=True)
    assert '2/2' in capsys.readouterr().err


def test_sample_sigmas_accepts_std_in_0_1():
    "sample_sigmas takes any std >= 0: std = 0 gives exp(mean) exactly, std = 0.5 the asked spread."
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(sample_sigmas(5, mean=0., std=0., device='cpu', generator=g), torch.ones(5))
    s = sample_sigmas(20_000, mean=0., std=0.5, device='cpu', generator=g)
    assert abs(s.log().std().item() - 0.5) < 0.02


def test_sample_takes_a_one_dimensional_shape():
    "sample takes a 1-D shape (n,): a batch of scalars."
    r = sample('euler', GaussianDenoiser(0., 1.), (8,), steps=3, seed=0, device='cpu')
    assert r.x.shape == (8,) and r.nfe == 3


def test_sample_refuses_partly_non_finite_result_of_custom_sampler():
    "sample refuses a custom sampler's result with a single NaN, not only an all-NaN batch."
    def half_nan(denoiser, x, sigmas, **kw):
        x = denoiser(x, x.new_full((len(x),), float(sigmas[0])))
        x[0] = float('nan')
        return x
    with pytest.raises(FloatingPointError, match=r'after 1 model evaluations'):
        sample(half_nan, GaussianDenoiser(0., 1.), (4, 3), steps=3, seed=0, device='cpu')
    ok = lambda denoiser, x, sigmas, **kw: denoiser(x, x.new_full((len(x),), float(sigmas[0])))
    assert torch.isfinite(sample(ok, GaussianDenoiser(0., 1.), (4, 3), steps=3, seed=0, device='cpu').x).all()


def test_sample_no_progress_bar_by_default(capsys):
    "sample prints nothing unless asked."
    sample('euler', GaussianDenoiser(0., 1.), (2, 3), steps=2, seed=0, device='cpu')
    assert capsys.readouterr().err == ''
