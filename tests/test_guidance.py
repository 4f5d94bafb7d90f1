"Classifier-free guidance (miniai.diffusion.guidance): scale semantics, label checks, label dropping."
from types import SimpleNamespace
import pytest
import torch
from miniai.models.unet import EmbUNetModel
import numpy as np
from miniai.diffusion.guidance import cfg_mix, check_class_labels, GuidedModel, DropLabelCB, CondNoisifyCB, label_accuracy
from miniai.diffusion.ksamplers import sample


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return EmbUNetModel(1, 1, nfs=(8, 16), num_layers=1, attn_chans=0, n_classes=5).eval()


def test_scale_zero_is_unconditional_and_one_conditional(model):
    x, t, c = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 4, 2])
    with torch.no_grad():
        assert torch.equal(GuidedModel(model, c, 0.)(x, t), model(x, t))                      # null class
        assert torch.equal(GuidedModel(model, c, 0.)(x, t), model(x, t, torch.full((3,), 5)))
        assert torch.equal(GuidedModel(model, c, 1.)(x, t), model(x, t, c))


@pytest.mark.parametrize('scale', [0.5, 2., 3., -1.])
def test_other_scales_follow_the_formula(model, scale):
    "The batched (doubled-batch) path equals the formula applied to two separate calls."
    x, t, c = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([1, 1, 3])
    with torch.no_grad():
        cond, uncond = model(x, t, c), model(x, t)
        torch.testing.assert_close(GuidedModel(model, c, scale)(x, t), uncond + scale * (cond - uncond),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(GuidedModel(model, 1, scale)(x, t[:1]),   # one label, one t for the batch
                                   cfg_mix(model(x, t[:1], torch.tensor(1)), model(x, t[:1]), scale), atol=1e-5, rtol=1e-5)


def test_label_errors(model):
    for bad, msg in [(5, 'in 0..4'), ([-1, 2], 'from -1 to 2'), (torch.tensor([1.]), 'integer tensor'),
                     (2.0, 'integer class indices'), (True, 'booleans'), (torch.zeros(2, 2, dtype=torch.long), 'vector'),
                     ([], 'empty')]:
        with pytest.raises((ValueError, TypeError), match=msg): GuidedModel(model, bad, 2.)
    with pytest.raises(ValueError, match='3 labels for a batch of 2'): GuidedModel(model, [0, 1, 2], 2.)(torch.randn(2, 1, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match='finite'): GuidedModel(model, 1, float('inf'))
    for bad in (np.bool_(True), torch.tensor(2.), '2'):                # not numbers: refused, named
        with pytest.raises(ValueError, match='finite number'): GuidedModel(model, 1, bad)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():                                                # numpy scalars are numbers too
        assert torch.equal(GuidedModel(model, 1, np.float32(2.))(x, t), GuidedModel(model, 1, 2.)(x, t))
    with pytest.raises(ValueError, match='not class-conditional'): GuidedModel(EmbUNetModel(1, 1, nfs=(8,), attn_chans=0), 1)
    assert torch.equal(check_class_labels([0, 4], 5), torch.tensor([0, 4]))
    for bools in ([True, False], np.array([True, False]), (False,), np.bool_(True)):   # not silently labels 1 and 0
        with pytest.raises(TypeError, match='booleans'): check_class_labels(bools, 5)
    assert torch.equal(check_class_labels(np.array([3, 1]), 5), torch.tensor([3, 1]))


@pytest.mark.parametrize('train', [False, True])
def test_sampling_leaves_the_network_mode_and_batchnorm_stats(train):
    "`sample` wraps the network in a fresh (train-mode) denoiser: the network must come back in its own mode, BN stats untouched."
    torch.manual_seed(0)
    m = EmbUNetModel(1, 1, nfs=(8, 16), num_layers=1, attn_chans=0, n_classes=3).train(train)
    stats = {k: v.clone() for k, v in m.state_dict().items() if 'running' in k or 'num_batches' in k}
    for net in (GuidedModel(m, [0, 1, 2, 0], 2.), GuidedModel(m, 1, 1.), m):
        sample('euler', net, (4, 1, 8, 8), steps=2, seed=0, device='cpu')
        assert [o.training for o in m.modules()] == [train] * len(list(m.modules()))
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in stats.items())


def test_label_accuracy_restores_each_submodule_mode():
    "The classifier is run in eval mode; afterwards each of its modules has its own mode back (a mixed model stays mixed)."
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    clf.eval(); clf[2].train()
    a = label_accuracy(clf, torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]), n_classes=3)
    assert 0 <= a['accuracy'] <= 1 and [o.training for o in clf.modules()] == [False, False, False, True]


def test_drop_label_cb():
    cb = DropLabelCB(0.3, null_class=5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (50_000,))
    learn = SimpleNamespace(batch=(torch.zeros(50_000), y), training=True)
    cb.before_batch(learn)
    dropped = learn.batch[1] == 5
    assert abs(dropped.float().mean().item() - 0.3) < 0.01
    assert torch.equal(learn.batch[1][~dropped], y[~dropped])
    for p, frac in [(0., 0.), (1., 1.)]:
        learn = SimpleNamespace(batch=(None, y), training=True)
        DropLabelCB(p, 5).before_batch(learn)
        assert (learn.batch[1] == 5).float().mean().item() == frac
    learn = SimpleNamespace(batch=(None, y), training=False)
    cb.before_batch(learn); assert learn.batch[1] is y
    with pytest.raises(ValueError, match='null class is 5'):
        DropLabelCB(0.1, 10).before_fit(SimpleNamespace(model=EmbUNetModel(1, 1, nfs=(8,), attn_chans=0, n_classes=5)))


def test_cond_noisify_cb():
    def noisify(x0): return (x0 + 1, torch.ones(len(x0))), x0 * 2
    learn = SimpleNamespace(batch=(torch.zeros(4, 1, 2, 2), torch.arange(4)))
    CondNoisifyCB(noisify).before_batch(learn)
    xt, t, y, target = learn.batch
    assert torch.equal(xt, torch.ones(4, 1, 2, 2)) and torch.equal(y, torch.arange(4)) and torch.equal(target, torch.zeros(4, 1, 2, 2))


def test_cfg_mix_refuses_mismatched_shapes():
    "No broadcasting between the two predictions."
    with pytest.raises(ValueError, match='differ in shape'): cfg_mix(torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4), 2.)
    torch.testing.assert_close(cfg_mix(torch.tensor([3.]), torch.tensor([1.]), 2.5), torch.tensor([6.]))   # 1 + 2.5*2


def test_drop_label_cb_checks_p_and_uses_its_generator():
    "p must be in [0, 1]; the drops come from the callback's generator (same seed, same drops)."
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match='`p` must be in'): DropLabelCB(bad, 5)
    y = torch.randint(0, 5, (1000,), generator=torch.Generator().manual_seed(0))
    def drops(seed):
        torch.manual_seed(seed)   # the global RNG differs between the two calls: it must not matter
        learn = SimpleNamespace(batch=(None, y), training=True)
        DropLabelCB(0.5, 5, generator=torch.Generator().manual_seed(3)).before_batch(learn)
        return learn.batch[1] == 5
    a = drops(0)
    assert torch.equal(a, drops(1))
    assert torch.equal(a, torch.rand(1000, generator=torch.Generator().manual_seed(3)) < 0.5)


def test_cond_ddpm_learner_drops_labels_before_noising():
    "cond_ddpm_learner: labels dropped (default p 0.1, null class = n_classes) before the batch is noised, n_inp = 3."
    from miniai.diffusion.guidance import cond_ddpm_learner
    from miniai.learner import run_cbs, TrainCB
    net = torch.nn.Linear(2, 2); net.n_classes = 5
    noisify = lambda x0: ((x0 + 1, torch.full((len(x0),), 0.25)), -x0)
    learn = cond_ddpm_learner(net, None, noisify, progress=False, device='cpu')
    drop = next(cb for cb in learn.cbs if isinstance(cb, DropLabelCB))
    assert drop.p == 0.1 and drop.null_class == 5 and learn.n_inp == 3
    assert any(isinstance(cb, TrainCB) and cb.n_inp == 3 for cb in learn.cbs)
    learn = cond_ddpm_learner(net, None, noisify, p_uncond=1., progress=False, device='cpu')
    learn.training, learn.batch = True, (torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]))
    run_cbs([cb for cb in learn.cbs if isinstance(cb, (DropLabelCB, CondNoisifyCB))], 'before_batch', learn)
    xt, t, y, target = learn.batch
    assert torch.equal(y, torch.full((4,), 5)) and torch.equal(t, torch.full((4,), 0.25))
    assert torch.equal(xt, torch.ones(4, 1, 2, 2)) and torch.equal(target, torch.zeros(4, 1, 2, 2))


def test_label_accuracy_values():
    "Overall and per-class hit rates of a known classifier, exact fractions; None for a class never requested."
    clf = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad(): clf.weight.copy_(torch.eye(4))          # predicts the index of the largest pixel
    pred = torch.tensor([0, 0, 1, 2, 2, 2])
    images = torch.nn.functional.one_hot(pred, 4).float()
    labels = torch.tensor([0, 1, 1, 2, 2, 0])                     # hits: yes, no, yes, yes, yes, no
    a = label_accuracy(clf, images, labels, n_classes=4, bs=4)
    assert a['accuracy'] == 4/6
    assert a['per_class'] == [0.5, 0.5, 1.0, None]


def test_guided_model_moves_its_labels_to_the_images_device_once():
    "Labels given on the CPU go to the images' device at the first call and stay (a copy per step would wait for the GPU)."
    seen = []
    class Echo(torch.nn.Module):
        n_classes = 10
        def forward(self, x, t, c): seen.append(c); return x
    g = GuidedModel(Echo(), [1, 2], 1.)
    x = torch.zeros(2, 1, 4, 4, device='meta')   # another device than the labels', without a GPU
    g(x, torch.zeros(2, device='meta'))
    assert g.labels.device.type == 'meta' and seen[-1].device.type == 'meta'
    before = g.labels
    g(x, torch.zeros(2, device='meta'))
    assert g.labels is before   # moved once, not at every call


def test_label_accuracy_defaults_to_ten_classes():
    "label_accuracy defaults to ten classes: ten per-class entries, and label 10 refused."
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))
    a = label_accuracy(clf, torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 9]))
    assert len(a['per_class']) == 10
    with pytest.raises(ValueError, match='0..9'): label_accuracy(clf, torch.randn(1, 1, 2, 2), torch.tensor([10]))


def test_label_accuracy_casts_images_to_float():
    "label_accuracy casts float64 images for a float32 classifier."
    clf = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad(): clf.weight.copy_(torch.eye(4))
    images = torch.nn.functional.one_hot(torch.tensor([0, 3]), 4).double()
    assert label_accuracy(clf, images, torch.tensor([0, 3]), n_classes=4)['accuracy'] == 1.0


def test_guidance_evals():
    "guidance_evals: one network evaluation per call at w = 0 or 1, two otherwise."
    from miniai.diffusion.guidance import guidance_evals
    assert [guidance_evals(w) for w in (0, 1, 0.5, 2, 3.)] == [1, 1, 2, 2, 2]
