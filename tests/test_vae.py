"MLP autoencoder and VAE (notebook 14): loss terms against hand computation, the function metric, training."
import math
from functools import partial
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader, fashion_mnist_arrays
from miniai.accel import MixedPrecision
from miniai.learner import BatchTransformCB, Learner, MetricsCB, OneCycleCB, TrainCB
from miniai.vae import (VAE, Autoencoder, FuncMetric, VAEOutput, autoencoder_batch, bce_loss, kld_loss, lin,
                        reparameterize, vae_loss)


def test_kld_by_hand():
    # mu=0, lv=0: KL 0;  mu=1, lv=ln 4: -0.5(1 + ln4 - 1 - 4) = 2 - ln 2;  mu=-2, lv=ln(1/4): -0.5(1 - ln4 - 4 - 1/4)
    mu = torch.tensor([[0., 1., -2.]])
    lv = torch.tensor([[0., math.log(4), math.log(0.25)]])
    per = [0., 2 - math.log(2), -0.5*(1 - math.log(4) - 4 - 0.25)]
    out = VAEOutput([torch.zeros(1, 5), mu, lv])
    assert kld_loss(out).item() == pytest.approx(sum(per)/3, rel=1e-6)


def test_kld_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(16, 7, generator=g)*2, torch.randn(16, 7, generator=g)
    ref = kl_divergence(Normal(mu, (lv/2).exp()), Normal(0., 1.)).mean()
    assert kld_loss(VAEOutput([torch.zeros(16, 3), mu, lv])).item() == pytest.approx(ref.item(), rel=1e-5)


def test_bce_by_hand_and_total():
    logits, x = torch.tensor([[0., 2.]]), torch.tensor([[0.5, 1.]])
    # bce(0, 0.5) = ln 2;  bce(2, 1) = -ln sigmoid(2) = ln(1 + e^-2)
    want = (math.log(2) + math.log(1 + math.exp(-2)))/2
    out = VAEOutput([logits, torch.ones(1, 3), torch.zeros(1, 3)])
    assert bce_loss(out, x).item() == pytest.approx(want, rel=1e-6)
    assert vae_loss(out, x).item() == pytest.approx(want + kld_loss(out).item(), rel=1e-6)
    assert kld_loss(out).item() == pytest.approx(0.5, rel=1e-6)   # mu=1, lv=0: -0.5(1 + 0 - 1 - 1) = 0.5


def test_loss_errors():
    with pytest.raises(TypeError, match='plain autoencoder'): kld_loss(torch.zeros(2, 3))
    with pytest.raises(TypeError, match='plain autoencoder'): bce_loss((torch.zeros(2, 3),), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='flatten the images first'): VAE()(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r'\(B, 784\)'): Autoencoder()(torch.zeros(2, 100))


def test_reparameterize_statistics_and_gradients():
    torch.manual_seed(0)
    mu, lv = torch.tensor([1.5, -1.]).repeat(200_000, 1), torch.tensor([math.log(0.09), math.log(4.)]).repeat(200_000, 1)
    z = reparameterize(mu, lv)
    assert torch.allclose(z.mean(0), torch.tensor([1.5, -1.]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.3, 2.]), rtol=0.01)
    mu, lv = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    reparameterize(mu, lv).sum().backward()
    assert torch.equal(mu.grad, torch.ones(4)) and lv.grad.abs().sum() > 0


def test_vae_output_and_shapes():
    set_seed(0)
    m = VAE(784, 64, 8)
    o = m(torch.rand(5, 784))
    assert isinstance(o, VAEOutput) and [t.shape for t in o] == [(5, 784), (5, 8), (5, 8)]
    d = o.detach()
    assert isinstance(d, VAEOutput) and not any(t.requires_grad for t in d) and d.device == o.recon.device
    assert type(o)(t*2 for t in o).mu.equal(o.mu*2)       # rebuilt from an iterable, as `to_cpu` does
    assert Autoencoder(784, 64, 8)(torch.rand(5, 784)).shape == (5, 784)
    layer = lin(3, 4, act=None, norm=None)
    assert len(layer) == 1 and isinstance(layer[0], torch.nn.Linear)
    assert [type(l).__name__ for l in lin(3, 4)] == ['Linear', 'SiLU', 'BatchNorm1d']


def test_func_metric_weighted_mean():
    m = FuncMetric(lambda p, t: (p - t).abs().mean())
    m.update(torch.ones(3, 2), torch.zeros(3, 2))          # mean 1, weight 3
    m.update(torch.full((1, 2), 5.), torch.zeros(1, 2))    # mean 5, weight 1
    assert m.compute().item() == pytest.approx((3*1 + 1*5)/4)
    m.reset(); m.update(torch.zeros(2), torch.zeros(2))
    assert m.compute().item() == 0


def _sample_dls(n_train=1000, n_valid=300, bs=100):
    "Fashion-MNIST (shipped sample: no data folder needed) in [0, 1], on the CPU."
    xt, yt = fashion_mnist_arrays('train', sample=True)
    xv, yv = fashion_mnist_arrays('test', sample=True)
    kw = dict(bs=bs, value_range=(0., 1.), device='cpu')
    return DataLoaders(DeviceImageLoader(xt[:n_train], yt[:n_train], shuffle=True, seed=0, **kw),
                       DeviceImageLoader(xv[:n_valid], yv[:n_valid], **kw))


@pytest.mark.parametrize('mixed', [False, True])
def test_vae_trains_and_metrics_add_up(mixed):
    "Training lowers the loss; the logged kld and bce add up to the logged loss (also under bf16 autocast, as on a GPU)."
    set_seed(0)
    dls = _sample_dls(bs=96)           # 300 validation images: a smaller last batch (300 = 3*96 + 12)
    model = VAE(784, 200, 32)
    probe = torch.nn.Linear(784, 1)   # a float32 network inside a metric (as the perceptual term's): bf16 input would fail
    metrics = MetricsCB(kld=FuncMetric(kld_loss), bce=FuncMetric(bce_loss), probe=FuncMetric(lambda p, t: probe(p[0]).mean()))
    cbs = [BatchTransformCB(partial(autoencoder_batch, flatten=True)), TrainCB(), OneCycleCB(1e-2), metrics]
    if mixed: cbs.append(MixedPrecision(torch.bfloat16, cpu=True))   # bf16 outputs reach the metrics, after the autocast
    learn = Learner(model, dls, vae_loss, lr=1e-2, cbs=cbs, opt_func=partial(torch.optim.Adam, eps=1e-5))
    learn.fit(3)
    h = metrics.history
    for r in h: assert r['kld'] + r['bce'] == pytest.approx(r['loss'], rel=1e-5)
    train = [r for r in h if r['phase'] == 'train']
    assert train[-1]['loss'] < 0.8*train[0]['loss']
    model.eval()   # KL depends only on mu and logvar: deterministic in eval mode
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=mixed):   # the same forward as in training
        sums = [(kld_loss(model(xb.flatten(1))).item()*len(xb), len(xb)) for xb, _ in dls.valid]
    assert h[-1]['kld'] == pytest.approx(sum(s for s, _ in sums)/sum(n for _, n in sums), rel=1e-4)


def test_autoencoder_learns():
    "After a short training the reconstruction beats the best input-blind guess (each pixel's mean)."
    set_seed(0)
    dls = _sample_dls(bs=50)
    model = Autoencoder(784, 200, 32)
    cbs = [BatchTransformCB(partial(autoencoder_batch, flatten=True)), TrainCB(), OneCycleCB(3e-2), MetricsCB()]
    learn = Learner(model, dls, F.binary_cross_entropy_with_logits, lr=3e-2, cbs=cbs,
                    opt_func=partial(torch.optim.Adam, eps=1e-5))
    learn.fit(4)
    ev = [r['loss'] for r in learn.metrics.history if r['phase'] == 'eval']
    xv = torch.cat([b[0] for b in dls.valid]).flatten(1)
    blind = F.binary_cross_entropy(xv.mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4).expand_as(xv), xv).item()
    assert ev[-1] < 0.9*blind


def test_vae_forward_decodes_a_reparameterised_sample():
    "recon = dec(mu + exp(logvar/2)*eps) with eps the next N(0, 1) draw (not dec(mu)); the outputs are the heads' mu and logvar."
    set_seed(0)
    m = VAE(784, 32, 4).eval()             # eval: BatchNorm uses its running statistics, the decoder is deterministic
    with torch.no_grad():
        m.lv[-1].bias.fill_(1.5)           # log-variances around 1.5: std, variance and 0 noise all differ clearly
        x = torch.rand(5, 784)
        h = m.enc(x)
        mu, lv = m.mu(h), m.lv(h)          # the heads, computed by hand
        torch.manual_seed(1); o = m(x)
        torch.manual_seed(1); eps = torch.randn(5, 4)
        want = m.dec(mu + (lv/2).exp()*eps)
    torch.testing.assert_close(o.mu, mu); torch.testing.assert_close(o.logvar, lv)
    torch.testing.assert_close(o.recon, want)
    assert (o.recon - m.dec(mu)).abs().max() > 1e-2    # the sample is not the mean


@pytest.mark.parametrize('cls', [Autoencoder, VAE])
def test_init_is_kaiming_for_leaky_relu_0_2(cls):
    "Weights drawn with std sqrt(2/((1 + 0.2²) fan_in)) (a plain-ReLU init would be 2% wider), biases zero."
    torch.manual_seed(0)
    m = cls()
    w = m.enc[0][0].weight                                      # 400x784 weights: the std is known to ~0.1%
    assert w.std().item() == pytest.approx(math.sqrt(2/1.04/784), rel=0.005)
    assert all((l.bias == 0).all() for l in m.modules() if isinstance(l, torch.nn.Linear))


def test_bce_loss_refuses_targets_above_one():
    "bce_loss takes targets up to 1 and refuses any above, not only far above."
    preds = (torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r'\[0, 1\]'): bce_loss(preds, torch.full((2, 4), 1.5))
    bce_loss(preds, torch.ones(2, 4))   # 1 itself is fine
