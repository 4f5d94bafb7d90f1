"Tests for miniai.models.layers and miniai.models.resnet (CPU, seconds)."
import json, os
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miniai.learner import Callback, Learner, TrainCB
from miniai.data import DataLoaders
from miniai.models import resnet
from miniai.models.layers import GeneralRelu, conv, init_weights, Dropout, Dropout2d, dropout_mask, is_dropout
from miniai.models.resnet import (ResBlock, PreActResBlock, AugmentCB, fashion_classifier, classifier_features,
                                  save_weights, load_weights, load_fashion_classifier, classifier_metadata,
                                  fashion_classifier_path, random_crop, random_flip, random_erase, classifier_accuracy)

TTDropoutCB = resnet.TestTimeDropoutCB   # not imported by its name, so that pytest does not try to collect it


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- layers
def test_conv_and_general_relu():
    c = conv(3, 8, ks=5, stride=2, act=nn.ReLU, norm=nn.BatchNorm2d)
    assert c(torch.randn(2, 3, 9, 9)).shape == (2, 8, 5, 5)
    assert c[0].bias is None and conv(3, 8)[0].bias is not None      # bias only without a norm
    with pytest.raises(ValueError, match='odd'): conv(3, 8, ks=2)
    x = torch.tensor([-2., -0.5, 0., 0.3, 5.])
    expected = torch.where(x > 0, x, 0.1*x) - 0.4
    torch.testing.assert_close(GeneralRelu(0.1, 0.4)(x), expected)
    torch.testing.assert_close(GeneralRelu(0.1, 0.4, maxv=1.)(x), expected.clamp_max(1.))
    torch.testing.assert_close(GeneralRelu()(x), F.relu(x))


def test_act_instances_are_copied():
    act = GeneralRelu(0.1, 0.4)
    rb = ResBlock(4, 4, act=act)
    acts = [m for m in rb.modules() if isinstance(m, GeneralRelu)]
    assert len(acts) == 2 and all(a is not act for a in acts) and acts[0] is not acts[1]
    with pytest.raises(TypeError, match='class or factory'): conv(3, 8, norm=nn.BatchNorm2d(8))


def test_init_weights_kaiming_std():
    lin = nn.Linear(4096, 512)
    init_weights(lin, leaky=0.1)
    want = (2/(1 + 0.1**2))**0.5 / 4096**0.5
    assert abs(lin.weight.std().item() - want) / want < 0.02
    assert (lin.bias == 0).all()


# ---------------------------------------------------------------- ResBlock
def test_resblock_norm_in_both_convs():
    rb = ResBlock(16, 32, stride=2, norm=nn.BatchNorm2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in rb.convs.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ResBlock(8, 8).modules()) == 0


@pytest.mark.parametrize('ni,nf,stride,size,out', [(8, 8, 1, 9, 9), (8, 8, 2, 9, 5), (8, 16, 1, 8, 8), (8, 16, 2, 8, 4)])
def test_resblock_shapes(ni, nf, stride, size, out):
    for block in (ResBlock(ni, nf, stride=stride, norm=nn.BatchNorm2d), PreActResBlock(ni, nf, stride=stride, norm=nn.BatchNorm2d)):
        assert block(torch.randn(2, ni, size, size)).shape == (2, nf, out, out)
        kinds = [type(m) for m in block.idpath]
        assert (nn.AvgPool2d in kinds) == (stride != 1) and (nn.Conv2d in kinds) == (ni != nf)


@pytest.mark.parametrize('ni,nf,stride', [(8, 8, 1), (8, 16, 2)])
def test_resblock_is_residual(ni, nf, stride):
    "With the residual path switched off (last norm's scale and shift 0), the block is act(shortcut(x))."
    rb = ResBlock(ni, nf, stride=stride, norm=nn.BatchNorm2d).eval()
    last_bn = rb.convs[1][1]
    nn.init.zeros_(last_bn.weight); nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, ni, 8, 8)
    short = x if stride == 1 else F.avg_pool2d(x, 2, ceil_mode=True)
    if ni != nf: short = rb.idpath[-1](short)
    torch.testing.assert_close(rb(x), F.relu(short))


def test_preact_order():
    b = PreActResBlock(4, 8, norm=nn.BatchNorm2d, act=GeneralRelu(0.1))
    assert [type(m) for m in b.convs[0]] == [nn.BatchNorm2d, GeneralRelu, nn.Conv2d]
    assert b.convs[0][0].num_features == 4 and b.convs[1][0].num_features == 8


# ---------------------------------------------------------------- Dropout
def test_dropout_properties():
    x = torch.randn(2000, 500) + 5          # no zeros in x
    d = Dropout(0.3)
    y = d(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    rate = 1 - kept.float().mean().item()
    assert abs(rate - 0.3) < 4 * (0.3*0.7/x.numel())**0.5          # within 4 standard errors
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(Dropout(0.).train()(x), x)


def test_dropout_grad_matches_mask():
    x = torch.randn(100, 100, requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.5)


@pytest.mark.parametrize('p', [-0.1, 1., 1.5, float('nan')])
def test_dropout_rejects_bad_p(p):
    for cls in (Dropout, Dropout2d):
        with pytest.raises(ValueError, match=r'\[0, 1\)'): cls(p)


def test_dropout_mask_on_device_and_dtype():
    devices = ['cpu', 'meta'] + (['cuda'] if torch.cuda.is_available() else [])
    for dev in devices:
        x = torch.ones(4, 3, 5, 5, device=dev, dtype=torch.bfloat16)
        m = dropout_mask(x, (4, 3, 1, 1), 0.2)
        assert m.device == x.device and m.dtype == x.dtype and m.shape == (4, 3, 1, 1)
        for d in (Dropout(0.2), Dropout2d(0.2)):
            y = d(x)
            assert y.device == x.device and y.dtype == x.dtype and y.shape == x.shape


def test_dropout_mask_refuses_bad_probabilities():
    "p = 1 would make a mask of 0/0 = NaN: dropout_mask checks p itself, like the Dropout modules."
    for p in (1, 1.5, -0.1, float('nan')):
        with pytest.raises(ValueError, match=r'\[0, 1\)'): dropout_mask(torch.ones(2), (2,), p)
    assert torch.equal(dropout_mask(torch.ones(3), (3,), 0), torch.ones(3))


def test_dropout2d_whole_channels():
    x = torch.rand(300, 50, 4, 6) + 1
    y = Dropout2d(0.2)(x)
    zero = (y == 0).flatten(2)
    assert (zero.all(-1) | ~zero.any(-1)).all()                       # each (n, c) slice: all zero or none
    keep = ~zero.all(-1)
    torch.testing.assert_close(y[keep], x[keep] / 0.8)
    rate = 1 - keep.float().mean().item()
    assert abs(rate - 0.2) < 4 * (0.2*0.8/keep.numel())**0.5
    assert torch.equal(Dropout2d(0.2).eval()(x), x) and torch.equal(Dropout2d(0.).train()(x), x)
    with pytest.raises(ValueError, match='N, C, H, W'): Dropout2d()(torch.ones(3, 4, 5))


def test_is_dropout():
    assert all(is_dropout(m) for m in (Dropout(), Dropout2d(), nn.Dropout(), nn.Dropout2d(), nn.Dropout1d()))
    assert not is_dropout(nn.ReLU())


# ---------------------------------------------------------------- test-time dropout
class _Probe(Callback):
    "Records the training flag of every dropout module at each validation batch."
    def before_fit(self, learn): self.flags, self.preds = [], []
    def after_predict(self, learn):
        if learn.training: return
        self.flags += [m.training for m in learn.model.modules() if is_dropout(m)]
        self.preds.append(learn.preds.detach().clone())


def _tiny_learner():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), Dropout(0.5), nn.Dropout(0.5), nn.Linear(32, 3))
    xs, ys = torch.randn(40, 16), torch.randint(0, 3, (40,))
    return Learner(model, DataLoaders([(xs, ys)], [(xs, ys)]), F.cross_entropy, cbs=[TrainCB()])


def test_test_time_dropout_keeps_dropout_active():
    learn = _tiny_learner()
    runs = []
    for cbs in ([], [], [TTDropoutCB()], [TTDropoutCB()]):
        probe = _Probe()
        learn.fit(1, train=False, cbs=[probe, *cbs])
        assert all(f == bool(cbs) for f in probe.flags) and len(probe.flags) == 2
        runs.append(torch.cat(probe.preds))
    assert torch.equal(runs[0], runs[1])                  # eval: deterministic
    assert not torch.allclose(runs[2], runs[3])           # TTD: stochastic
    assert not any(m.training for m in learn.model.modules())   # back in eval mode after fit


# ---------------------------------------------------------------- augmentation
def test_random_crop_is_a_shifted_window():
    x = torch.randn(40, 2, 6, 7)
    y = random_crop(x, pad=3, fill=0.)
    assert y.shape == x.shape and y.dtype == x.dtype
    xp = F.pad(x, (3,)*4)
    found = set()
    for i in range(len(x)):
        hits = [(r, c) for r in range(7) for c in range(7) if torch.equal(y[i], xp[i, :, r:r+6, c:c+7])]
        assert hits, f"image {i} is not a window of the padded image"
        found.add(hits[0])
    assert len(found) > 10                                 # offsets are drawn per image
    assert torch.equal(random_crop(x, pad=0), x)
    yr = random_crop(x, pad=2)                             # replicate padding: values come from x's own pixels
    assert all(torch.isin(yr[i], x[i]).all() for i in range(len(x)))


def test_flip_and_erase():
    x = torch.randn(64, 1, 8, 8)
    assert torch.equal(random_flip(x, 1.), x.flip(-1)) and torch.equal(random_flip(x, 0.), x)
    y = random_flip(x, 0.5)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert (flipped | same).all() and 10 < flipped.sum() < 54
    assert torch.equal(random_erase(x, p=0.), x)
    e = random_erase(x, p=1., max_frac=0.5)
    diff = (e != x)[:, 0]
    assert diff.flatten(1).any(1).float().mean() > 0.9
    for i in range(64):                                    # the changed pixels form a rectangle
        rows, cols = diff[i].any(1).nonzero(), diff[i].any(0).nonzero()
        if len(rows): assert diff[i, rows.min():rows.max()+1, cols.min():cols.max()+1].float().mean() > 0.9
    assert e.min() >= x.min() and e.max() <= x.max()


@pytest.mark.parametrize('call, msg', [
    (lambda x: random_flip(x[0]), r'random_flip expects an image batch \(N, C, H, W\), got \(1, 8, 8\)'),
    (lambda x: random_erase(x[:, 0]), 'random_erase expects an image batch'),
    (lambda x: random_crop(x[0], pad=1), 'random_crop expects an image batch'),
    (lambda x: random_flip(x, p=1.5), r'`p` must be a probability in \[0, 1\]'),
    (lambda x: random_erase(x, p=-0.1), '`p` must be a probability'),
    (lambda x: random_erase(x, max_frac=0.), r'`max_frac` must be in \(0, 1\]'),
    (lambda x: random_crop(x, pad=-1), '`pad` must be an int >= 0'),
    (lambda x: random_crop(x, pad=1.5), '`pad` must be an int >= 0'),
])
def test_augmentations_refuse_bad_input(call, msg):
    "One image instead of a batch used to broadcast into (N, N, H, W); bad probabilities were used as given."
    with pytest.raises(ValueError, match=msg): call(torch.randn(5, 1, 8, 8))


def test_augment_cb_train_only():
    xb, yb = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))
    cb = AugmentCB(pad=2, flip_p=0.5, erase_p=0.5)
    learn = Learner(nn.Identity(), None)
    for training in (True, False):
        learn.training, learn.batch = training, (xb, yb)
        cb.before_batch(learn)
        out, y2 = learn.batch
        assert out.shape == xb.shape and out.dtype == xb.dtype and y2 is yb
        assert torch.equal(out, xb) != training
    with pytest.raises(ValueError): AugmentCB(flip_p=2.)
    with pytest.raises(ValueError): AugmentCB(pad=-1)


# ---------------------------------------------------------------- classifier
def test_classifier_and_features():
    model = fashion_classifier().eval()
    x = torch.rand(6, 1, 32, 32)*2 - 1
    logits = model(x)
    assert logits.shape == (6, 10)
    feats = classifier_features(model)
    f = feats(x)
    assert f.shape == (6, 512)
    torch.testing.assert_close(model[-1](model[-2](f)), logits)      # the head applied to the features = the model
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 12
    assert isinstance(model[1], Dropout2d) and isinstance(model[-3], Dropout) and model[-2].bias is None
    with pytest.raises(ValueError, match='shape'): feats(torch.rand(2, 1, 28, 28))
    with pytest.raises(TypeError): classifier_features(nn.Sequential(nn.Linear(2, 2)))
    assert fashion_classifier(nfs=(8, 16, 32, 64))(x).shape == (6, 10)
    small = fashion_classifier(nfs=(8, 16, 32, 64))       # in training mode, as made
    assert classifier_features(small)(x).shape == (6, 64)  # (B, nfs[-1])
    assert not any(m.training for m in small.modules())    # the head too: no classifier left half in training mode


def test_weights_round_trip(tmp_path):
    model = fashion_classifier(nfs=(4, 8, 16))
    model.train()(torch.randn(8, 1, 32, 32))                       # move the BN running stats away from defaults
    path = save_weights(model, tmp_path/'w.safetensors', classifier_metadata((4, 8, 16), 0.1, epochs=3))
    assert not list(tmp_path.glob('*.tmp'))
    other = load_weights(fashion_classifier(nfs=(4, 8, 16)), path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    rebuilt = load_fashion_classifier(path, device='cpu')
    assert not rebuilt.training
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(rebuilt(x), model.eval()(x))
    with pytest.raises(ValueError, match='shape mismatch'): load_weights(fashion_classifier(nfs=(4, 8, 32)), path)
    with pytest.raises(ValueError, match='unexpected'): load_weights(fashion_classifier(nfs=(4, 8)), path)
    with pytest.raises(FileNotFoundError): load_weights(model, tmp_path/'missing.safetensors')


def test_classifier_path_env(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    assert fashion_classifier_path() == tmp_path/'clf.safetensors'
    monkeypatch.delenv('MINIAI_CLASSIFIER')
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    assert fashion_classifier_path() == tmp_path/'cache'/'models'/'fashion_classifier.safetensors'


# ---------------------------------------------------------------- training
def test_training_steps_reduce_loss():
    xs, ys = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64,))    # 16x16: the global pool makes it work
    model = fashion_classifier(nfs=(4, 8), drop=0.)
    learn = Learner(model, DataLoaders([(xs, ys)]*8, [(xs, ys)]), F.cross_entropy, lr=1e-2,
                    cbs=[TrainCB()], opt_func=torch.optim.AdamW)
    before = classifier_loss(model, xs, ys)
    learn.fit(1, valid=False)
    assert classifier_loss(model, xs, ys) < 0.7*before


def classifier_loss(model, xs, ys):
    "Loss with BatchNorm using batch statistics (no dropout in the model): running stats lag behind after 8 steps."
    model.train()
    with torch.no_grad(): return F.cross_entropy(model(xs), ys).item()


@pytest.mark.skipif(not os.environ.get('MINIAI_DATA'), reason='needs Fashion-MNIST ($MINIAI_DATA)')
def test_train_fashion_classifier_small(tmp_path):
    learn = resnet.train_fashion_classifier(epochs=1, bs=32, nfs=(4, 8), limit=(256, 128), device='cpu',
                                            progress=False, save_to=tmp_path/'clf.safetensors')
    xs, ys = next(iter(learn.dls.valid))
    assert learn.metrics.history[-1]['phase'] == 'eval'
    acc = classifier_accuracy(learn.model, learn.dls.valid)
    meta = resnet.weights_metadata(tmp_path/'clf.safetensors')
    assert json.loads(meta['fashion_classifier'])['nfs'] == [4, 8] and float(meta['test_accuracy']) == pytest.approx(acc, abs=1e-4)
    assert abs(acc - learn.metrics.history[-1]['accuracy']) < 1e-6      # two independent accuracy computations agree
    assert all(torch.isfinite(torch.tensor(h['loss'])) for h in learn.metrics.history)


def test_classifier_accuracy_tta_averages_image_and_mirror():
    "TTA scores = softmax(model(x)) + softmax(model(mirror of x)), against a direct computation on a random model."
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8, 3))
    x, y = torch.randn(200, 1, 8, 8), torch.randint(0, 3, (200,))
    with torch.no_grad():
        p = model(x).softmax(1) + model(x.flip(-1)).softmax(1)
        want, plain = (p.argmax(1) == y).sum().item()/200, (model(x).argmax(1) == y).sum().item()/200
    batches = [(x[:128], y[:128]), (x[128:], y[128:])]
    assert classifier_accuracy(model, batches, tta=True) == pytest.approx(want, abs=1e-9)
    assert classifier_accuracy(model, batches) == pytest.approx(plain, abs=1e-9)
    # a mirror-invariant model (global pooling) gains nothing from TTA
    inv = nn.Sequential(nn.Conv2d(1, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    assert classifier_accuracy(inv, batches, tta=True) == pytest.approx(classifier_accuracy(inv, batches), abs=1e-9)


def test_classifier_learner_recipe_options_reach_the_callbacks():
    kw = dict(bs=32, nfs=(8, 16), limit=(64, 32), device='cpu', progress=False)
    aug = lambda l: [cb for cb in l.cbs if isinstance(cb, AugmentCB)]
    (a,) = aug(resnet.fashion_classifier_learner(crop_pad=1, erase_p=0.2, **kw))
    assert (a.pad, a.erase_p, a.flip_p) == (1, 0.2, 0.5)
    assert aug(resnet.fashion_classifier_learner(augment=False, **kw)) == []
    ls = resnet.fashion_classifier_learner(label_smoothing=0.1, **kw)
    logits, y = torch.randn(6, 10), torch.tensor([0, 3, 9, 1, 1, 5])
    logp = logits.log_softmax(1)   # independent computation: 0.9 * NLL + 0.1 * mean over classes of -log p
    want = (0.9*-logp[torch.arange(6), y] + 0.1*-logp.mean(1)).mean()
    assert ls.loss_func(logits, y) == pytest.approx(want.item(), rel=1e-5)
    assert resnet.fashion_classifier_learner(**kw).loss_func(logits, y) == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match='label_smoothing'): resnet.fashion_classifier_learner(label_smoothing=1.0, **kw)
    held = resnet.fashion_classifier_learner(holdout=100, **kw)
    assert held.dls.valid.dataset_len == 32 and held.dls.train.dataset_len == 64   # `limit` applies to the held-out part


def test_train_classifier_select_picks_the_best_held_out_recipe(load_script):
    tc = load_script('bench/train_classifier.py')
    cfg = dict(bs=64, nfs=(4, 8), limit=(256, 128), device='cpu', progress=False, seed=0)
    cands = {'plain': dict(augment=False), 'flips': dict(augment=True, crop_pad=0)}
    best, rows = tc.select_recipe(1, cfg, cands, holdout=200)
    assert [r['recipe'] for r in rows] == list(cands) and all(0 <= r['holdout_accuracy'] <= 1 for r in rows)
    assert best == max(rows, key=lambda r: r['holdout_accuracy'])['recipe']
    assert set(tc.CANDIDATES) >= {'no augmentation (lesson 19)', 'flip + pad-crop 2'}
    # every recipe a GPU run will compare exists and is made of `fashion_classifier_learner` arguments (a typo here would
    # only surface minutes into the device's stage)
    import inspect
    params = set(inspect.signature(resnet.fashion_classifier_learner).parameters)
    assert all(set(kw) <= params for kw in tc.CANDIDATES.values())
    for ep in (5, 20):
        assert set(tc.candidates_for(ep)) <= set(tc.CANDIDATES) and len(tc.candidates_for(ep)) >= 3
    assert tc.candidates_for(7) == tc.CANDIDATES


def test_train_classifier_select_only_stops_after_the_selection(tmp_path, load_script):
    tc = load_script('bench/train_classifier.py')
    names = ['no augmentation (lesson 19)', 'flip only, bs 256']
    tc.main(['--quick', '--select', '--select-only', '--candidates', *names, '--out', str(tmp_path/'sel.json')])
    d = json.loads((tmp_path/'sel.json').read_text())
    assert [r['recipe'] for r in d['selection']] == names and d['runs'] == [] and 'throughput' not in d
    assert d['selected'] == {'1': max(d['selection'], key=lambda r: r['holdout_accuracy'])['recipe']}
    assert all(r['wall_s'] > 0 for r in d['selection'])
    with pytest.raises(SystemExit): tc.main(['--select-only', '--out', str(tmp_path/'x.json')])   # needs --select


def test_classifier_recipes_are_the_measured_selection(load_script):
    "CLASSIFIER_RECIPES (on top of the learner's defaults) is what `--select` chose on the GPU, run by run."
    import inspect
    tc = load_script('bench/train_classifier.py')
    d = json.loads((Path(__file__).parents[1]/'results/classifier.json').read_text())
    defaults = {k: p.default for k, p in inspect.signature(resnet.fashion_classifier_learner).parameters.items()}
    for run in d['runs']:
        ep, chosen = run['epochs'], tc.CANDIDATES[run['recipe']]
        used = {**defaults, **resnet.CLASSIFIER_RECIPES[ep]}
        assert {k: used[k] for k in chosen} == chosen, (ep, run['recipe'])
        best = max((r for r in d['selection'] if r['epochs'] == ep), key=lambda r: r['holdout_accuracy'])
        assert best['recipe'] == run['recipe'] and run['target_met']
    assert sorted(r['epochs'] for r in d['runs']) == sorted(resnet.CLASSIFIER_RECIPES)


def test_evaluation_gives_each_submodule_its_mode_back():
    "`classifier_accuracy` and `TestTimeDropoutCB` restore every submodule's own train/eval flag, not the model's."
    from miniai.core import eval_mode
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    model[2].train()                                  # test-time dropout kept on by hand
    dl = [(torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]))]
    classifier_accuracy(model, dl)
    assert not model.training and model[2].training   # before: `model.train(False)` switched the dropout off
    with eval_mode(model, no_grad=False): assert not model[2].training and torch.is_grad_enabled()
    assert model[2].training
    learn = Learner(model, DataLoaders(dl, dl), F.cross_entropy, cbs=[TrainCB(), TTDropoutCB()], lr=0.)
    learn.fit(1)                                      # ends with validation: the model is left in eval mode
    assert not model.training and model[2].training   # TestTimeDropoutCB gave the dropout its own mode back


def test_test_time_dropout_leaves_no_half_trained_model():
    "A dropout that followed the model's mode before `fit` follows it after: no model in eval mode with dropout on."
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), Dropout(0.5), nn.Linear(8, 2))
    dl = [(torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]))]
    learn = Learner(model, DataLoaders(dl, dl), F.cross_entropy, cbs=[TrainCB(), TTDropoutCB()], lr=0.)
    learn.fit(1, train=False)                         # a fresh model (train mode), evaluated only
    assert not any(m.training for m in model.modules())
    x = torch.randn(4, 1, 4, 4)
    assert torch.equal(model(x), model(x))           # deterministic afterwards
    model.train(); learn.fit(1)                       # trained, then validated: eval mode again, dropout off too
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------- hand-computed references (mutation-testing additions)
def _bn_eval(h, bn):
    "BatchNorm in eval mode written out: (h - mean) / sqrt(var + eps) * weight + bias, per channel."
    c = lambda t: t[:, None, None]
    return (h - c(bn.running_mean)) / c(bn.running_var + bn.eps).sqrt() * c(bn.weight) + c(bn.bias)


def _random_bn_stats(module):
    "Running statistics and affine parameters away from their defaults, so that a misplaced norm shows."
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            nf = bn.num_features
            bn.running_mean.copy_(torch.randn(nf)); bn.running_var.copy_(torch.rand(nf) + 0.5)
            with torch.no_grad(): bn.weight.copy_(torch.randn(nf)); bn.bias.copy_(torch.randn(nf))
    return module.double().eval()


def _grelu(x, leak=0.1, sub=0.4): return torch.where(x > 0, x, leak*x) - sub


def _pool2(x): return x.unflatten(2, (-1, 2)).unflatten(4, (-1, 2)).mean((3, 5))   # 2x2 average, even sizes


def test_conv_is_conv_then_norm_then_act():
    "conv(...) = act(norm(conv2d(x))) with 'same' padding, checked against the ops written out in float64."
    c = _random_bn_stats(conv(3, 5, ks=3, stride=2, act=GeneralRelu(0.1, 0.4), norm=nn.BatchNorm2d))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    bn = next(m for m in c if isinstance(m, nn.BatchNorm2d))
    want = _grelu(_bn_eval(F.conv2d(x, c[0].weight, stride=2, padding=1), bn))
    torch.testing.assert_close(c(x), want)


@pytest.mark.parametrize('ni,nf,stride', [(4, 4, 1), (4, 6, 2)])
def test_resblock_forward_by_hand(ni, nf, stride):
    "ResBlock = act(bn2(conv2_stride(act(bn1(conv1(x))))) + idconv(pool(x))), no act between bn2 and the sum."
    rb = _random_bn_stats(ResBlock(ni, nf, stride=stride, act=GeneralRelu(0.1, 0.4), norm=nn.BatchNorm2d))
    (c1, bn1, _), (c2, bn2) = rb.convs
    x = torch.randn(2, ni, 8, 8, dtype=torch.float64)
    h = _grelu(_bn_eval(F.conv2d(x, c1.weight, padding=1), bn1))          # first conv keeps the size
    h = _bn_eval(F.conv2d(h, c2.weight, stride=stride, padding=1), bn2)  # the second one strides
    s = _pool2(x) if stride == 2 else x
    if ni != nf: s = F.conv2d(s, rb.idpath[-1].weight, rb.idpath[-1].bias)
    torch.testing.assert_close(rb(x), _grelu(h + s))


def test_preact_resblock_forward_by_hand():
    "PreActResBlock = conv2(act(bn2(conv1(act(bn1(x)))))) + idconv(pool(x)), with nothing applied after the sum."
    b = _random_bn_stats(PreActResBlock(4, 6, stride=2, act=GeneralRelu(0.1, 0.4), norm=nn.BatchNorm2d))
    (bn1, _, c1), (bn2, _, c2) = b.convs
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    h = F.conv2d(_grelu(_bn_eval(x, bn1)), c1.weight, c1.bias, padding=1)
    h = F.conv2d(_grelu(_bn_eval(h, bn2)), c2.weight, c2.bias, stride=2, padding=1)
    s = F.conv2d(_pool2(x), b.idpath[-1].weight, b.idpath[-1].bias)
    torch.testing.assert_close(b(x), h + s)


@pytest.mark.parametrize('leaky', [0., 1.])
def test_init_weights_gain_follows_the_slope(leaky):
    "Kaiming std sqrt(2/(1+a^2)/fan_in), fan_in = in_channels*k*k: a=1 (linear) gives 1/sqrt(fan_in), a=0 sqrt(2) times that."
    c = nn.Conv2d(64, 256, 3)
    init_weights(c, leaky=leaky)
    want = (2/(1 + leaky**2) / (64*9))**0.5
    assert abs(c.weight.std().item() - want) / want < 0.02 and (c.bias == 0).all()


@pytest.mark.parametrize('act', [GeneralRelu(0.5, 0.4), nn.LeakyReLU(0.5)])
def test_classifier_init_uses_the_activation_slope(act):
    "fashion_classifier initialises for its activation's negative slope (0.5 here: gain sqrt(2/1.25))."
    model = fashion_classifier(nfs=(8, 256), act=act)
    w = model[2].convs[1][0].weight                                    # Conv2d(256, 256, 3)
    want = (2/1.25 / (256*9))**0.5
    assert abs(w.std().item() - want) / want < 0.02


def test_classifier_layout_and_dropout_probability():
    "Lesson 19's layout: a 5x5 stem conv, then 3x3 stride-2 blocks; both dropouts use `drop`."
    model = fashion_classifier(nfs=(4, 8, 16), drop=0.3)
    assert model[0].convs[0][0].kernel_size == (5, 5) and model[0].convs[0][0].stride == (1, 1)
    assert all(b.convs[1][0].stride == (2, 2) and b.convs[0][0].kernel_size == (3, 3) for b in model[2:4])
    assert model[1].p == 0.3 and model[-3].p == 0.3


def test_dropout2d_channels_of_one_image_are_independent():
    "Dropout2d draws one keep/drop per (image, channel): an image with 40 channels almost always has both kinds."
    y = Dropout2d(0.5)(torch.ones(200, 40, 2, 2))
    dropped = (y == 0).all(-1).all(-1)                                   # (N, C)
    mixed = dropped.any(1) & ~dropped.all(1)
    assert mixed.float().mean() > 0.95                                    # P(all same) = 2 * 0.5**40 per image
    rate = dropped.float().mean(0)                                        # per channel: 0.5 +- 4 std errors (0.14)
    assert 0.36 < rate.min() and rate.max() < 0.64


def test_random_crop_reaches_every_offset():
    "Offsets are uniform on 0..2*pad in each direction: with pad=1 all 9 windows show up among 300 images."
    x = torch.randn(300, 1, 5, 5)
    y = random_crop(x, pad=1, fill=0.)
    xp = F.pad(x, (1,)*4)
    offs = set()
    for i in range(len(x)):
        hits = [(r, c) for r in range(3) for c in range(3) if torch.equal(y[i], xp[i, :, r:r+5, c:c+5])]
        assert len(hits) == 1
        offs.add(hits[0])
    assert offs == {(r, c) for r in range(3) for c in range(3)}


def test_random_erase_rectangle_size_and_placement():
    "Height/width are ceil(u * max_frac * size) <= ceil(max_frac * size); the rectangle can touch every border."
    x = torch.randn(400, 1, 10, 10)
    diff = (random_erase(x, p=1., max_frac=0.4) != x)[:, 0]
    rows, cols = diff.any(2), diff.any(1)                                 # (N, H), (N, W)
    assert rows.any(1).all()                                              # p=1: every image erased
    assert rows.sum(1).max() == 4 and cols.sum(1).max() == 4             # ceil(0.4*10) = 4, reached
    assert rows[:, 0].any() and rows[:, -1].any() and cols[:, 0].any() and cols[:, -1].any()


def test_random_erase_noise_has_the_batch_statistics_and_per_image_choice():
    "Erased pixels are noise with the batch's mean and std (clamped to its range); each image is erased with prob p."
    x = torch.randn(400, 1, 16, 16) * 0.5 + 2
    e = random_erase(x, p=1., max_frac=1.)
    vals = e[e != x]
    assert abs(vals.mean().item() - 2) < 0.05 and abs(vals.std().item() - 0.5) < 0.05
    erased = (random_erase(x, p=0.5) != x).flatten(1).any(1).float().mean().item()
    assert 0.4 < erased < 0.6                                             # 4 standard errors: 0.1


def test_features_stop_before_the_head_dropout():
    "The features are the body's output: the head's Dropout (kept on for test-time dropout) does not touch them."
    model = fashion_classifier(nfs=(4, 8), drop=0.5).eval()
    x = torch.rand(4, 1, 32, 32)*2 - 1
    want = classifier_features(model)(x)
    model[-3].train()                                                     # only the head's dropout in training mode
    feats = resnet.ClassifierFeatures(model)
    assert torch.equal(feats(x), want) and torch.equal(feats(x), want)


def test_load_fashion_classifier_restores_drop(tmp_path):
    "The dropout probability stored in the metadata is the rebuilt model's, not the default."
    path = save_weights(fashion_classifier(nfs=(4, 8), drop=0.3), tmp_path/'w.safetensors', classifier_metadata((4, 8), 0.3))
    rebuilt = load_fashion_classifier(path, device='cpu')
    assert rebuilt[1].p == 0.3 and rebuilt[-3].p == 0.3


def test_load_weights_reports_missing_keys(tmp_path):
    "A file lacking some of the model's tensors is a ValueError naming them; strict=False loads the common ones."
    saved = nn.Sequential(nn.Linear(3, 4))
    path = save_weights(saved, tmp_path/'w.safetensors')
    with pytest.raises(ValueError, match=r"missing \['1.weight', '1.bias'\] \(2\)"):
        load_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), path)
    bigger = load_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), path, strict=False)
    assert torch.equal(bigger[0].weight, saved[0].weight) and torch.equal(bigger[0].bias, saved[0].bias)


def test_importing_miniai_writes_nothing(tmp_path):
    "No module creates folders at import (resnet's FASHION_CLASSIFIER_PATH constant made `$MINIAI_CACHE/models`)."
    import subprocess, sys
    code = ("import importlib, pkgutil, miniai\n"
            "for m in pkgutil.walk_packages(miniai.__path__, 'miniai.'): importlib.import_module(m.name)")
    env = {**os.environ, 'MINIAI_CACHE': str(tmp_path/'cache'), 'HF_HUB_OFFLINE': '1'}
    subprocess.run([sys.executable, '-c', code], env=env, check=True, timeout=300)
    assert not (tmp_path/'cache').exists()


def test_missing_classifier_message_gives_a_command_that_parses(tmp_path, load_script):
    "The refusal names a training command that the script accepts, saving the weights where they were looked for."
    import re
    from miniai.models.resnet import load_fashion_classifier
    import shlex
    want = tmp_path/'a folder with spaces'/'none.safetensors'   # a home folder may hold spaces: the command quotes it
    with pytest.raises(FileNotFoundError) as e: load_fashion_classifier(want, device='cpu')
    cmd = shlex.split(re.search(r"`python (bench/train_classifier\.py [^`]*)`", str(e.value)).group(1))
    args = load_script(cmd[0]).parse_args(cmd[1:])
    assert Path(args.save) == want and args.epochs == [20] and args.out


def test_dropout_default_p():
    "Dropout and Dropout2d drop with the documented default probability, 0.1."
    assert Dropout().p == 0.1 and Dropout2d().p == 0.1


def test_load_weights_accepts_str_path(tmp_path):
    "load_weights takes a path given as a str."
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    save_weights(a, tmp_path/'w.safetensors')
    load_weights(b, str(tmp_path/'w.safetensors'))
    assert torch.equal(a.weight, b.weight)


def test_classifier_learner_uses_mixed_precision_only_on_cuda_by_default():
    "fashion_classifier_learner turns mixed precision on by default only on CUDA: a CPU learner gets no MixedPrecision callback."
    from miniai.accel import MixedPrecision
    kw = dict(bs=32, nfs=(8, 16), limit=(64, 32), device='cpu', progress=False)
    mp = lambda learn: [cb for cb in learn.cbs if isinstance(cb, MixedPrecision)]
    assert mp(resnet.fashion_classifier_learner(**kw)) == []
    assert len(mp(resnet.fashion_classifier_learner(mixed_precision=True, **kw))) == 1


def test_fashion_classifier_needs_a_stem_and_a_block():
    "`nfs` with fewer than two entries (no stride-2 block) is refused."
    with pytest.raises(ValueError, match='at least 2 entries'): fashion_classifier((32,))
    assert fashion_classifier((4, 8))(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
