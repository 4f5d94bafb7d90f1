"Tests of miniai.fid: FID/KID against closed forms and independent computations, input checks, ImageEval."
import os, warnings
from pathlib import Path
import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from miniai.fid import (fid_from_feats, kid_from_feats, frechet_distance, trace_sqrt_product, feat_stats, mmd2_unbiased,
                        poly_kernel, check_images, ImageEval, RefStats, batched_features, weights_hash, fashion_fid_images,
                        fashion_image_eval, real_image_floor, floor_table)

f64 = torch.float64

def rotated_diag(s, q): return q @ torch.diag(s) @ q.T

def rand_rotation(d, g):
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=f64, generator=g))
    return q

# ---------------------------------------------------------------- FID

def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 32, dtype=f64)
    assert abs(fid_from_feats(x, x)) < 1e-8
    assert fid_from_feats(x, x + 1.) == pytest.approx(32., rel=1e-9)   # a pure mean shift: ||mu1 - mu2||^2

def test_fid_closed_form_commuting_covariances():
    "Diagonal variances under one rotation commute: FID = |mu1-mu2|^2 + sum (sqrt s1 - sqrt s2)^2, also when singular."
    g = torch.Generator().manual_seed(0)
    d = 200
    q = rand_rotation(d, g)
    s1, s2 = torch.rand(d, dtype=f64, generator=g) + 0.1, torch.rand(d, dtype=f64, generator=g) + 0.1
    s1[:70] = 0.                                              # singular, like a covariance from too few samples
    mu1, mu2 = torch.randn(d, dtype=f64, generator=g), torch.randn(d, dtype=f64, generator=g)
    expected = ((mu1 - mu2)**2).sum() + ((s1.sqrt() - s2.sqrt())**2).sum()
    c1, c2 = rotated_diag(s1, q), rotated_diag(s2, q)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected.item(), rel=1e-10)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected.item(), rel=1e-10)
    assert trace_sqrt_product(c1, c2).item() == pytest.approx((s1 * s2).sqrt().sum().item(), rel=1e-12)

def test_fid_from_gaussian_samples_matches_closed_form():
    "Large samples of two Gaussians: the sample FID approaches the closed form (sampling error only)."
    g = torch.Generator().manual_seed(1)
    d, n = 8, 200_000
    q = rand_rotation(d, g)
    s1, s2 = torch.rand(d, dtype=f64, generator=g) + 0.5, torch.rand(d, dtype=f64, generator=g) + 0.5
    mu2 = torch.full((d,), 0.5, dtype=f64)
    a = (torch.randn(n, d, dtype=f64, generator=g) * s1.sqrt()) @ q.T
    b = mu2 + (torch.randn(n, d, dtype=f64, generator=g) * s2.sqrt()) @ q.T
    expected = (mu2**2).sum() + ((s1.sqrt() - s2.sqrt())**2).sum()
    assert fid_from_feats(a, b) == pytest.approx(expected.item(), abs=0.02)

def test_trace_sqrt_product_non_commuting_matches_scipy():
    "Non-commuting full-rank covariances: agrees with scipy.linalg.sqrtm computed independently."
    g = torch.Generator().manual_seed(2)
    d = 64
    a = torch.randn(500, d, dtype=f64, generator=g) @ torch.randn(d, d, dtype=f64, generator=g)
    b = torch.randn(700, d, dtype=f64, generator=g) @ torch.randn(d, d, dtype=f64, generator=g)
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    assert not np.allclose(ca @ cb, cb @ ca)
    ref_tr = np.trace(scipy.linalg.sqrtm(ca @ cb)).real
    assert trace_sqrt_product(torch.from_numpy(ca), torch.from_numpy(cb)).item() == pytest.approx(ref_tr, rel=1e-9)
    mu = a.mean(0).numpy() - b.mean(0).numpy()
    ref_fid = mu @ mu + np.trace(ca) + np.trace(cb) - 2 * ref_tr
    assert fid_from_feats(a, b) == pytest.approx(ref_fid, rel=1e-8)

def test_trace_sqrt_product_singular_matches_small_route():
    "n < d samples: tr sqrt(S1 S2) equals the sum of sqrt eigenvalues of the n x n matrix Xc S2 Xc^T / (n-1)."
    g = torch.Generator().manual_seed(3)
    d, n = 128, 40
    x = torch.randn(n, d, dtype=f64, generator=g) @ torch.randn(d, d, dtype=f64, generator=g) / d**0.5
    y = torch.randn(1000, d, dtype=f64, generator=g)
    c1, c2 = feat_stats(x)[1], feat_stats(y)[1]
    xc = (x - x.mean(0)) / (n - 1)**0.5
    ev = np.linalg.eigvalsh((xc @ c2 @ xc.T).numpy())
    expected = np.sqrt(ev[ev > 1e-12 * ev.max()]).sum()
    assert trace_sqrt_product(c1, c2).item() == pytest.approx(expected, rel=1e-10)

def test_fid_float32_input_uses_float64_statistics():
    x = torch.randn(300, 16) * 1000 + 1e4
    assert feat_stats(x)[0].dtype == f64
    assert abs(fid_from_feats(x, x)) < 1e-6

# ---------------------------------------------------------------- KID

def test_kid_matches_direct_formula():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(120, 10, dtype=f64, generator=g), torch.randn(90, 10, dtype=f64, generator=g) + 0.2
    k = lambda a, b: (a @ b.T / 10 + 1) ** 3
    kxx, kyy = k(x, x), k(y, y)
    direct = ((kxx.sum() - kxx.trace()) / (120 * 119) + (kyy.sum() - kyy.trace()) / (90 * 89) - 2 * k(x, y).mean())
    assert kid_from_feats(x, y) == pytest.approx(direct.item(), rel=1e-12)
    assert torch.allclose(poly_kernel(x, y), k(x, y))

def test_kid_is_unbiased_and_detects_a_shift():
    "Mean over many draws of two samples of one distribution is ~0 (within 4 standard errors); shifted is clearly > 0."
    g = torch.Generator().manual_seed(5)
    draws, n, d = 300, 40, 8
    same = torch.tensor([kid_from_feats(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)) for _ in range(draws)])
    shift = torch.tensor([kid_from_feats(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + 0.5) for _ in range(draws)])
    se = same.std() / draws**0.5
    assert same.mean().abs() < 4 * se
    assert (same < 0).any()                                  # unbiased estimates scatter on both sides of 0
    assert shift.mean() > 20 * se and (shift.mean() - same.mean()) > 10 * shift.std() / draws**0.5

def test_kid_subsets_average_is_close_to_full_estimate():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(2000, 6, generator=g), torch.randn(1500, 6, generator=g) + 0.3
    full = kid_from_feats(x, y)
    sub = kid_from_feats(x, y, n_subsets=50, subset_size=500)
    assert full > 0.01 and sub == pytest.approx(full, rel=0.1)
    assert kid_from_feats(x, y, n_subsets=5, subset_size=100, seed=1) == kid_from_feats(x, y, n_subsets=5, subset_size=100, seed=1)

def test_mmd2_with_precomputed_reference_term():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(50, 4, dtype=f64, generator=g), torch.randn(60, 4, dtype=f64, generator=g)
    ref = RefStats.from_feats(y)
    assert mmd2_unbiased(x, y, ref.kernel_within).item() == pytest.approx(mmd2_unbiased(x, y).item(), rel=1e-12)

# ---------------------------------------------------------------- validation

@pytest.mark.parametrize('a,b,err,msg', [
    (torch.randn(10), torch.randn(10, 3), ValueError, '2-D feature matrix'),
    (torch.randn(10, 3), torch.randn(10, 4), ValueError, 'same number of features'),
    (torch.randn(1, 3), torch.randn(10, 3), ValueError, 'at least 2 samples'),
    (torch.full((10, 3), float('nan')), torch.randn(10, 3), ValueError, 'non-finite'),
    (torch.randn(10, 3), torch.randn(10, 3) * float('inf'), ValueError, 'non-finite'),
    (torch.randn(10, 3, dtype=torch.complex64), torch.randn(10, 3), TypeError, 'real numbers'),
    (torch.ones(10, 3, dtype=torch.bool), torch.randn(10, 3), TypeError, 'real numbers'),
    (torch.randn(10, 0), torch.randn(10, 0), ValueError, 'no feature columns'),
])
def test_feature_validation(a, b, err, msg):
    for fn in (fid_from_feats, kid_from_feats):
        with pytest.raises(err, match=msg): fn(a, b)

def test_kid_subset_parameters_validated():
    with pytest.raises(ValueError, match='subset_size >= 2'): kid_from_feats(torch.randn(10, 2), torch.randn(10, 2), n_subsets=3, subset_size=1)

@pytest.mark.parametrize('x,err,msg', [
    (torch.zeros(4, 1, 28, 28), ValueError, r'F.pad\(x, \(2, 2, 2, 2\), value=-1\)'),
    (torch.zeros(4, 3, 32, 32), ValueError, r'1 channel\(s\), got 3'),
    (torch.zeros(4, 32, 32), ValueError, r'x\[:, None\]'),
    (torch.zeros(1, 32, 32), ValueError, 'single image'),
    (torch.zeros(4, 1, 32, 32, dtype=torch.uint8), TypeError, 'uint8'),
    (torch.full((4, 1, 32, 32), 255.), ValueError, r'x / 127.5 - 1'),
    (torch.full((4, 1, 32, 32), -1.2), ValueError, 'outside the expected'),
    (torch.full((4, 1, 32, 32), float('inf')), ValueError, 'non-finite'),
    (torch.zeros(0, 1, 32, 32), ValueError, 'empty'),
    (np.zeros((4, 1, 32, 32), dtype=np.float32), TypeError, 'torch.Tensor'),
])
def test_image_validation(x, err, msg):
    with pytest.raises(err, match=msg): check_images(x)

def test_image_range_tolerance_and_warning():
    check_images(torch.linspace(-1.04, 1.04, 4 * 32 * 32).reshape(4, 1, 32, 32))   # small overshoot accepted
    with pytest.raises(ValueError, match=r'upper half .*x \* 2 - 1'): check_images(torch.rand(32, 1, 32, 32))   # [0, 1]
    with pytest.warns(UserWarning, match=r'x \* 2 - 1'): check_images(torch.rand(32, 1, 32, 32), strict=False)
    check_images(torch.rand(8, 1, 32, 32))   # too few images to judge: accepted
    with pytest.warns(UserWarning, match=r'x \* 2'): check_images(torch.rand(32, 1, 32, 32) - 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); check_images(torch.rand(32, 1, 32, 32) * 2 - 1)

# ---------------------------------------------------------------- ImageEval

def small_feature_model(seed=0, d=24):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, d))

def images(n, seed, shift=0.):
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(-1, 1, 32).view(1, 1, 1, 32)
    return (base * (0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)) + 0.3 * torch.randn(n, 1, 32, 32, generator=g) + shift).clamp(-1, 1)

class CountingModel(nn.Module):
    "Wraps a model and records the batch sizes it sees."
    def __init__(self, m): super().__init__(); self.m, self.seen = m, []
    def forward(self, x): self.seen.append(len(x)); return self.m(x)

def test_image_eval_batches_eval_mode_and_restores_training():
    m = CountingModel(small_feature_model())
    m.train()
    x = images(70, 0)
    ie = ImageEval(m, x, bs=32)
    assert m.seen == [32, 32, 6] and m.training                     # batched; training mode restored
    f = ie.feats(x)
    assert f.dtype == f64 and f.shape == (70, 24)
    m.m.eval()
    with torch.no_grad(): expected = m.m(x).double()
    assert torch.allclose(f, expected, atol=1e-5)                   # eval mode (BatchNorm running statistics)
    assert not f.requires_grad

def test_image_eval_scores_agree_with_feature_functions():
    m = small_feature_model()
    ref, samples = images(200, 1), images(64, 2, shift=0.1)
    ie = ImageEval(m, ref, bs=50)
    fr, fs = batched_features(m, ref), batched_features(m, samples)
    assert ie.fid(samples) == pytest.approx(fid_from_feats(fs, fr), rel=1e-9)
    assert ie.kid(samples) == pytest.approx(kid_from_feats(fs, fr), rel=1e-9, abs=1e-12)
    s = ie.scores(samples)
    assert s['n'] == 64 and s['fid'] == pytest.approx(ie.fid(samples)) and s['kid'] == pytest.approx(ie.kid(samples))
    assert ie.fid(ref) < 1e-6                                      # the reference against itself
    # a reference given as features or as RefStats gives the same numbers
    assert ImageEval(m, fr).fid(samples) == pytest.approx(ie.fid(samples), rel=1e-12)
    assert ImageEval(m, RefStats.from_feats(fr)).kid(samples) == pytest.approx(ie.kid(samples), rel=1e-9, abs=1e-12)

def test_image_eval_rejects_bad_samples():
    ie = ImageEval(small_feature_model(), images(20, 3))
    with pytest.raises(ValueError, match='upper half.*`strict_range=False`'): ie.fid((images(32, 4) + 1) / 2)   # images in [0, 1]: names ImageEval's knob
    lenient = ImageEval(small_feature_model(), images(20, 3), strict_range=False)
    with pytest.warns(UserWarning, match=r'x \* 2 - 1'): assert np.isfinite(lenient.fid((images(32, 4) + 1) / 2))
    with pytest.raises(ValueError, match='outside the expected'): ie.fid(images(8, 4) * 127.5 + 127.5)
    with pytest.raises(ValueError, match='channel'): ie.kid(torch.zeros(8, 3, 32, 32))
    with pytest.raises(ValueError, match='at least 2 samples'): ie.fid(images(1, 5))
    with pytest.raises(TypeError, match='ref'): ImageEval(small_feature_model(), [1, 2, 3])

def test_image_eval_cache_is_keyed_by_weights_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    ref = images(40, 6)
    m = CountingModel(small_feature_model(seed=0))
    ie1 = ImageEval(m, ref, cache=True)
    files = list((tmp_path/'fid').glob('ref_*.safetensors'))
    assert len(files) == 1 and m.seen
    m.seen.clear()
    ie2 = ImageEval(m, ref, cache=True)
    assert m.seen == [] and torch.equal(ie2.ref.cov, ie1.ref.cov)   # loaded, not recomputed
    m2 = small_feature_model(seed=1)
    assert weights_hash(m2) != weights_hash(m.m)
    ImageEval(m2, ref, cache=True)
    assert len(list((tmp_path/'fid').glob('ref_*.safetensors'))) == 2   # other weights: another entry
    # an explicit path holding another model's statistics is recomputed, with a warning
    p = tmp_path/'explicit.safetensors'
    ImageEval(m, ref, cache=p)
    with pytest.warns(UserWarning, match='another model'): ie3 = ImageEval(m2, ref, cache=p)
    assert RefStats.load(p).key == ie3.ref.key != ie1.ref.key

# ---------------------------------------------------------------- torcheval

class TorchevalWrapper(nn.Module):
    "torcheval's FID takes 3-channel images in [0, 1]: take one channel, map to [-1, 1], run the feature model."
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x): return self.m(x[:, :1] * 2 - 1)

def test_fid_agrees_with_torcheval():
    from torcheval.metrics import FrechetInceptionDistance
    m = small_feature_model(d=16).double()
    ref, samples = images(300, 7), images(200, 8, shift=0.5)
    ours = ImageEval(m, ref.double(), bs=64).fid(samples.double())
    old = torch.get_default_dtype()
    torch.set_default_dtype(f64)      # torcheval keeps its running sums in the default dtype: make them float64
    try:
        metric = FrechetInceptionDistance(model=TorchevalWrapper(m), feature_dim=16)
        to01 = lambda x: ((x + 1) / 2).expand(-1, 3, -1, -1)
        for i in range(0, 300, 64): metric.update(to01(ref[i:i+64].double()), is_real=True)
        for i in range(0, 200, 64): metric.update(to01(samples[i:i+64].double()), is_real=False)
        theirs = metric.compute().item()
    finally: torch.set_default_dtype(old)
    assert ours > 1e-3
    assert ours == pytest.approx(theirs, rel=1e-6)

# ---------------------------------------------------------------- Fashion-MNIST evaluator

needs_data = pytest.mark.skipif(not (os.environ.get('MINIAI_DATA') and Path(os.environ['MINIAI_DATA'], 'fashion_mnist').exists()),
                                reason='needs Fashion-MNIST under $MINIAI_DATA')

def test_fashion_image_eval_missing_classifier_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'FID needs the trained.*nbs/04_resnet.ipynb.*bench/train_classifier.py'):
        fashion_image_eval(tmp_path/'nope.safetensors')

def test_fashion_fid_images_caps_n_only_for_the_sample(monkeypatch):
    "The shipped sample stands in for all of its 1,000 test images; the full set never caps a too-large `n`."
    import miniai.data as md
    monkeypatch.setattr(md, '_load_from_hub', lambda *a, **k: (_ for _ in ()).throw(ConnectionError('offline')))
    monkeypatch.setenv('MINIAI_DATA', '/nowhere')
    monkeypatch.setenv('MINIAI_QUICK', '1')
    assert fashion_fid_images('test', n=5000).shape == (1000, 1, 32, 32)
    from miniai.data import MissingDataError
    with pytest.raises(MissingDataError): fashion_fid_images('test', n=5000, allow_sample=False)
    import miniai.fid as mfid   # a full-size split stand-in: 10,000 blank images
    monkeypatch.setattr(mfid, 'fashion_mnist_arrays', lambda *a, **k: (torch.zeros(10_000, 28, 28, dtype=torch.uint8), None))
    with pytest.raises(ValueError, match=r'`n` must be in \[1, 10000\], got 20000'): fashion_fid_images('test', n=20_000)


@needs_data
def test_fashion_fid_images_convention():
    from miniai.data import fashion_mnist_arrays
    u8 = fashion_mnist_arrays('test')[0]
    x = fashion_fid_images('test')
    assert x.shape == (10_000, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()          # padded with background
    assert torch.allclose(x[:, 0, 2:-2, 2:-2], u8.float() / 127.5 - 1, atol=1e-6)
    sub = fashion_fid_images('test', n=100, seed=3)
    assert torch.equal(sub, fashion_fid_images('test', n=100, seed=3)) and not torch.equal(sub, fashion_fid_images('test', n=100, seed=4))
    with pytest.raises(ValueError, match='`n` must be'): fashion_fid_images('test', n=0)

@needs_data
def test_fashion_image_eval_and_floor_with_a_saved_classifier(tmp_path, monkeypatch):
    from miniai.models.resnet import fashion_classifier, save_weights, classifier_metadata
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    torch.manual_seed(0)
    path = save_weights(fashion_classifier(nfs=(4, 8), drop=0.), tmp_path/'clf.safetensors', classifier_metadata((4, 8), 0.))
    ie = fashion_image_eval(path, n_ref=300, device='cpu')
    assert ie.ref.feats.shape == (300, 8)
    assert len(list((tmp_path/'cache'/'fid').glob('ref_*.safetensors'))) == 1
    assert ie.fid(fashion_fid_images('test', n=300)) < 1e-6                   # the reference itself (same seed)
    rows = real_image_floor(ie, sizes=(20, 60), n_draws=2, progress=False)
    assert [r['n'] for r in rows] == [20, 60] and all(len(r['fids']) == 2 for r in rows)
    assert rows[0]['fid_mean'] == pytest.approx(np.mean(rows[0]['fids'])) and rows[1]['kid_std'] == pytest.approx(np.std(rows[1]['kids'], ddof=1))
    assert all(f > 0 for r in rows for f in r['fids'])
    assert '| 60 |' in floor_table(rows)


def test_saved_reference_of_another_feature_model_refused(tmp_path):
    "A RefStats file or object records its feature model; another model's `ImageEval` refuses it."
    a, b, ref = small_feature_model(seed=0), small_feature_model(seed=1), images(40, 6)
    p = tmp_path/'ref.safetensors'
    ImageEval(a, ref).ref.save(p)
    assert RefStats.load(p).model_hash == weights_hash(a)
    assert ImageEval(a, p).fid(ref) < 1e-6                      # the same model: used as is
    with pytest.raises(ValueError, match='another feature model'): ImageEval(b, p)
    with pytest.raises(ValueError, match='another feature model'): ImageEval(b, RefStats.load(p))
    RefStats.from_feats(batched_features(a, ref)).save(p)      # no model recorded: usable, with a warning
    with pytest.warns(UserWarning, match='cannot be checked'): ImageEval(b, p)


def test_frechet_distance_refuses_non_covariances():
    d = 3
    m, c = torch.zeros(d), torch.eye(d, dtype=torch.float64)
    bad = c.clone(); bad[0, 0] = float('nan')
    with pytest.raises(ValueError, match='`cov1` contains 1 non-finite'): frechet_distance(m, bad, m, c)
    with pytest.raises(ValueError, match='`mean2`'): frechet_distance(m, c, torch.tensor([0., float('inf'), 0.]), c)
    with pytest.raises(ValueError, match='`cov1` has a negative eigenvalue'): frechet_distance(m, -c, m, c)
    skew = c.clone(); skew[0, 1] = 0.5
    with pytest.raises(ValueError, match='`cov2` is not symmetric'): frechet_distance(m, c, m, skew)
    a = torch.randn(500, d, dtype=torch.float64)
    cov = torch.cov(a.T)    # a real covariance (symmetric up to rounding) is accepted
    assert frechet_distance(a.mean(0), cov, a.mean(0), cov) < 1e-9


# ---------------------------------------------------------------- edge cases and boundaries (found by mutation testing)

def test_fid_and_kid_of_two_rows_by_hand():
    "Two 1-d points per set, by hand: FID = (1-3)^2 + (sqrt 2 - sqrt 8)^2 = 6; KID = 1 + 216 - 2 * 1360 / 4 = -463."
    a, b = torch.tensor([[0.], [2.]]), torch.tensor([[1.], [5.]])
    assert fid_from_feats(a, b) == pytest.approx(6., rel=1e-12)
    assert kid_from_feats(a, b) == pytest.approx(-463., rel=1e-12)

def test_fid_is_never_negative():
    "FID of a set with itself rounds to tiny negative values before the clamp (e.g. seed 0 here): the result is >= 0."
    for s in range(10):
        g = torch.Generator().manual_seed(s)
        x = torch.randn(50, 20, dtype=f64, generator=g) @ torch.randn(20, 20, dtype=f64, generator=g)
        assert 0. <= fid_from_feats(x, x) < 1e-8

def test_frechet_distance_checks_shapes_and_symmetry_relative_to_scale():
    "A mean of the wrong shape is refused; the symmetry test is relative: rounding-level asymmetry of a large covariance passes."
    m, c = torch.zeros(3, dtype=f64), torch.eye(3, dtype=f64)
    with pytest.raises(ValueError, match='`mean2` must have shape'): frechet_distance(m, c, torch.zeros(1, dtype=f64), c)
    big = torch.tensor([[2., 1., 0.], [1., 2., 1.], [0., 1., 2.]], dtype=f64) * 1e8
    big_r = big.clone(); big_r[0, 1] += 1e-2                 # relative asymmetry 5e-11: rounding
    assert frechet_distance(m, big_r, m, big) == pytest.approx(0., abs=1e-3)
    skew = c.clone(); skew[0, 1] += 1e-4                      # relative asymmetry 1e-4: not a covariance
    with pytest.raises(ValueError, match='`cov1` is not symmetric'): frechet_distance(m, skew, m, c)

def test_kernel_sum_in_blocks_matches_numpy():
    "The blocked kernel sum (blocks of 2 rows of `a`, the last one short) equals the full NumPy sum."
    from miniai.fid import _kernel_sum
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(9, 4, dtype=f64, generator=g), torch.randn(3, 4, dtype=f64, generator=g)
    expected = ((a.numpy() @ b.numpy().T / 4 + 1) ** 3).sum()
    assert _kernel_sum(a, b, max_elems=7).item() == pytest.approx(expected, rel=1e-12)
    assert _kernel_sum(a, b).item() == pytest.approx(expected, rel=1e-12)

def test_kid_subsets_seed_and_parameters():
    "Subsets of all rows (equal set sizes) reproduce the full estimate; the seed changes the draws; n_subsets >= 1."
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(30, 5, dtype=f64, generator=g), torch.randn(30, 5, dtype=f64, generator=g) + 0.3
    full = kid_from_feats(x, y)
    assert kid_from_feats(x, y, n_subsets=3, subset_size=30) == pytest.approx(full, rel=1e-12)
    assert kid_from_feats(x, y, n_subsets=2, subset_size=1000) == pytest.approx(full, rel=1e-12)
    assert kid_from_feats(x, y, n_subsets=2, subset_size=10, seed=0) != kid_from_feats(x, y, n_subsets=2, subset_size=10, seed=1)
    with pytest.raises(ValueError, match='n_subsets >= 1'): kid_from_feats(x, y, n_subsets=0)

def test_image_range_checks_at_16_images():
    "16 images are enough to judge the range: [0, 1] images are refused and narrow spans warn."
    x = torch.rand(16, 1, 32, 32) * 0.9 + 0.05
    with pytest.raises(ValueError, match='upper half'): check_images(x)
    check_images(x[:15])                                                   # 15: too few to judge
    with pytest.warns(UserWarning, match='only spans'): check_images(torch.linspace(-0.5, 0.5, 16 * 1024).reshape(16, 1, 32, 32))

def test_batched_features_casts_to_the_model_dtype_and_checks_bs():
    "float32 images through a float64 model give that model's features, exactly (no float32 rounding); bs < 1 is refused."
    m = small_feature_model(d=8).double().eval()
    x = images(10, 0)
    with torch.no_grad(): expected = torch.cat([m(x[i:i+4].double()) for i in range(0, 10, 4)])
    f = batched_features(m, x, bs=4)
    assert f.dtype == f64 and torch.equal(f, expected)
    with pytest.raises(ValueError, match='`bs` must be >= 1'): batched_features(m, x, bs=0)

def test_hashes_see_dtype_shape_and_buffers():
    "Equal bytes with another dtype or shape hash differently; a changed BatchNorm buffer changes the weights hash."
    from miniai.fid import tensor_hash
    z = torch.zeros(4, dtype=torch.int32)
    assert tensor_hash(z) == tensor_hash(z.clone())
    assert len({tensor_hash(z), tensor_hash(z.view(2, 2)), tensor_hash(z.view(torch.int64)), tensor_hash(z.view(torch.float32))}) == 4
    m = small_feature_model()
    h = weights_hash(m)
    with torch.no_grad(): m[1].running_mean += 1.
    assert weights_hash(m) != h

def test_image_eval_refuses_a_reference_with_other_features():
    "A reference of 5-d features with a 24-d feature model: a clear error naming both sizes."
    ie = ImageEval(small_feature_model(d=24), torch.randn(50, 5, dtype=f64))
    with pytest.raises(ValueError, match='gives 24 features but the reference has 5'): ie.fid(images(8, 1))

def test_floor_table_format():
    "One row formatted by hand: thousands separator, 3 decimals for FID, 5 for KID, the number of draws."
    row = {'n': 10_000, 'fid_mean': 1.5, 'fid_std': 0.25, 'kid_mean': 1e-3, 'kid_std': 2e-4, 'fids': [1.25, 1.75], 'kids': [8e-4, 1.2e-3]}
    assert floor_table([row]).splitlines()[-1] == '| 10,000 | 1.500 ± 0.250 | 0.00100 ± 0.00020 | 2 |'

@needs_data
def test_fashion_sizes_larger_than_the_split_refused():
    "Asking for more images than a split holds is an error, not a silently smaller set."
    with pytest.raises(ValueError, match='`n` must be in'): fashion_fid_images('test', n=10_001)
    with pytest.raises(ValueError, match='fewer than the 10001'): real_image_floor(None, sizes=(10, 10_001), split='test', progress=False)


@pytest.mark.parametrize('rng,hint', [((-1., 1.), 'x.float() / 127.5 - 1'), ((0., 1.), 'x.float() / 255'),
                                      ((-0.5, 0.5), 'x.float() / 255 - 0.5'), ((1., 3.), 'x.float() / 127.5 + 1')])
def test_uint8_hint_is_the_right_expression(rng, hint):
    "The hint for uint8 input is an expression that really maps 0..255 onto the expected range, written plainly."
    from miniai.fid import check_images
    with pytest.raises(TypeError) as e: check_images(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), value_range=rng)
    assert f'`{hint}`' in str(e.value)
    x = torch.tensor([0., 255.])
    assert torch.allclose(eval(hint, {'x': x}), torch.tensor(rng))


@pytest.mark.parametrize('value', [0., 0.5, 1.])
def test_a_constant_batch_is_not_taken_for_images_in_0_1(value):
    "16 identical images (a collapsed model) said nothing about the range, yet were refused as 'images in [0, 1]'."
    with pytest.warns(UserWarning, match='only spans'): check_images(torch.full((16, 1, 32, 32), value))
    with pytest.raises(ValueError, match='upper half'): check_images(torch.rand(16, 1, 32, 32))   # [0, 1] images still are


def test_fid_on_steeply_falling_variances_matches_the_exact_route():
    "tr sqrt(C1 C2) = sum of singular values of A Bᵀ/(n-1) for centred data A, B: no matrix square root, no squared spectrum."
    rng = np.random.default_rng(1)
    d, n = 256, 1000
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.arange(1, d + 1)**-1.5                                # variances fall as i^-3
    a, b = (rng.normal(size=(n, d))*s)@q.T, (rng.normal(size=(n, d))*s)@q.T
    A, B = a - a.mean(0), b - b.mean(0)
    exact = ((a.mean(0) - b.mean(0))**2).sum() + ((A*A).sum() + (B*B).sum() - 2*np.linalg.svd(A@B.T, compute_uv=False).sum())/(n - 1)
    assert fid_from_feats(torch.tensor(a), torch.tensor(b)) == pytest.approx(exact, rel=1e-7)
    # a set against itself: 0 up to float64 rounding of the traces (~1e-15 here; the bound was 1e-12*exact = 2.9e-15, which
    # numpy 2.5's BLAS crossed at 3.1e-15); sqrtm(C1 C2) gives 8e-11 and the eigenvalues of sqrt(C1) C2 sqrt(C1) 2e-9
    assert abs(fid_from_feats(torch.tensor(a), torch.tensor(a[rng.permutation(n)]))) < 1e-13*(A*A).sum()/(n - 1)


def test_image_eval_cache_knows_the_layers_and_survives_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    ref = images(40, 6)
    relu, tanh = small_feature_model(seed=0), small_feature_model(seed=0)
    acts = [i for i, m in enumerate(tanh) if isinstance(m, nn.ReLU)]
    assert acts, 'the test model has no ReLU to swap'
    for i in acts: tanh[i] = nn.Tanh()
    assert weights_hash(relu) == weights_hash(tanh)
    a, b = ImageEval(relu, ref, cache=True), ImageEval(tanh, ref, cache=True)
    assert not torch.equal(a.ref.mean, b.ref.mean) and len(list((tmp_path/'fid').glob('ref_*'))) == 2
    f = tmp_path/'fid'/f'ref_{a.ref.key[:24]}.safetensors'
    f.write_bytes(f.read_bytes()[:50])
    with pytest.warns(UserWarning, match='cannot be read'): ImageEval(relu, ref, cache=True)
    p = tmp_path/'bad.safetensors'; p.write_bytes(b'not safetensors')
    with pytest.raises(ValueError, match='cannot be read as reference statistics'): ImageEval(relu, p)


@pytest.mark.parametrize('rng', [(-1., 1.), (0., 1.), (-0.5, 0.5), (0., 255.), (2., 3.)])
def test_range_hints_apply_to_the_expected_range(rng):
    "Every `expr` a range message offers maps its source range onto `value_range`, and only sources that would raise it are named."
    import re, warnings
    lo, hi = rng
    def hints(msg):   # (source range, expression) pairs of "images in [a, b] need `expr`"
        return [((float(a), float(b)), e) for a, b, e in re.findall(r'images in \[(-?[\d.]+), (-?[\d.]+)\] need `([^`]+)`', msg)]
    def check(msg, fails):
        for (a, b), e in hints(msg):
            assert torch.allclose(eval(e, {'x': torch.tensor([a, b])}), torch.tensor([lo, hi]), atol=1e-6), (msg, e)
            assert fails(a, b), (rng, (a, b), msg)   # a source whose images would not raise this message is not named
    inside = lambda a, b: a >= lo - 0.05 and b <= hi + 0.05
    with pytest.raises(ValueError) as e: check_images(torch.full((4, 1, 32, 32), hi + 10*(hi - lo)), value_range=rng)
    check(str(e.value), lambda a, b: not inside(a, b))
    assert f'x.clamp({lo:g}, {hi:g})' in str(e.value)
    up = torch.rand(16, 1, 32, 32)*(hi - lo)/2 + (lo + hi)/2
    with pytest.raises(ValueError, match='upper half') as e: check_images(up, value_range=rng)
    check(str(e.value), lambda a, b: a >= (lo + hi)/2 and inside(a, b))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        check_images(torch.linspace(lo + 0.4*(hi - lo), lo + 0.6*(hi - lo), 16*1024).reshape(16, 1, 32, 32), value_range=rng, strict=False)
    assert len(w) == 1 and 'only spans' in str(w[0].message)
    check(str(w[0].message), lambda a, b: inside(a, b) and b - a < 0.55*(hi - lo))
    assert (rng == (-1., 1.)) == ('`x * 2 - 1`' in str(w[0].message))


@pytest.mark.parametrize('bad', [(0., 0.), (1., -1.), (0., float('nan')), (0., float('inf')), 'ab', (1, 2, 3)])
def test_a_value_range_that_is_no_range_is_refused(bad):
    "check_images and ImageEval refuse an empty, reversed or non-finite `value_range` (it crashed a hint with ZeroDivisionError)."
    with pytest.raises(ValueError, match='value_range'): check_images(torch.zeros(4, 1, 32, 32), value_range=bad)
    with pytest.raises(ValueError, match='value_range'): ImageEval(small_feature_model(), images(20, 3), value_range=bad)


def test_out_of_range_message_names_the_0_1_source():
    "Images far outside [-0.5, 0.5] get the hints for both sources, [0, 1] and [0, 255]."
    with pytest.raises(ValueError) as e: check_images(torch.full((4, 1, 32, 32), 10.), value_range=(-0.5, 0.5))
    assert 'images in [0, 1] need `x - 0.5`' in str(e.value) and 'images in [0, 255] need `x / 255 - 0.5`' in str(e.value)


def test_batched_features_batch_size_one():
    "batched_features takes bs=1 and gives the same features as one big batch."
    m, x = small_feature_model(d=6), images(5, 0)
    assert torch.allclose(batched_features(m, x, bs=1), batched_features(m, x, bs=512))


def test_reference_stats_warnings_only_for_files_without_model_record(tmp_path):
    "Reference stats warn that they record no feature model only when loaded from a file without that record."
    m = small_feature_model(d=6)
    ie = ImageEval(m, images(20, 0))
    ie.ref.save(tmp_path/'ref.safetensors')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ImageEval(m, tmp_path/'ref.safetensors')
        ImageEval(m, RefStats.from_feats(torch.randn(20, 6, dtype=torch.float64)))
    RefStats.from_feats(torch.randn(20, 6, dtype=torch.float64)).save(tmp_path/'anon.safetensors')
    with pytest.warns(UserWarning, match='does not record its feature model'): ImageEval(m, tmp_path/'anon.safetensors')


def test_real_image_floor_default_sizes():
    "real_image_floor's default sizes are the ones the floor tables quote: 512, 2,048 and 10,000."
    import inspect
    assert inspect.signature(real_image_floor).parameters['sizes'].default == (512, 2048, 10_000)


def test_check_images_accepts_values_exactly_at_the_tolerance_edge():
    "Images whose extremes lie exactly at the range +- tol pass; a step beyond is refused."
    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.25, -1.25       # exact in float32
    check_images(x, tol=0.25)
    x[0, 0, 0, 0] = 1.3
    with pytest.raises(ValueError, match='outside the expected'): check_images(x, tol=0.25)


def test_kid_subsets_of_two_rows_are_allowed():
    "A subset size of 2 (the least the unbiased MMD needs) gives a finite KID; 1 is refused."
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert np.isfinite(kid_from_feats(a, b, n_subsets=3, subset_size=2))
    with pytest.raises(ValueError, match='subset_size >= 2'): kid_from_feats(a, b, n_subsets=3, subset_size=1)
