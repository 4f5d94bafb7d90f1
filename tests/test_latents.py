"Latent diffusion (notebook 15): the validated latent cache, the conv-VAE loss, loaders, FLOP counting, the pipeline end to end."
import json, math, os, warnings
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.core import set_seed
from miniai.images import ImageSet, image_dls, images_to_float
from miniai.latents import (CACHE_HEADER, ConvVAELoss, CorruptCacheError, DeviceTensorLoader, LatentCacheError, encode_images,
                            StaleCacheError, cached_latents, conv_vae, conv_vae_learner, decode_latents,
                            latent_cache_key, latent_channel_stats, latent_classifier, latent_dls, latent_stats,
                            open_latent_cache, perceptual_net, psnr, read_cache_header, recon_mse, reconstruct,
                            sample_batches, train_flops_per_image, train_latent_classifier, write_latent_cache)
from miniai.models.resnet import PreActResBlock
from miniai.vae import VAEOutput, kld_loss
from miniai.models.unet import EmbUNetModel
from miniai.diffusion.karras import karras_learner


@pytest.fixture(scope='module')
def vae():
    set_seed(0)
    return conv_vae(channels=(8, 16), norm_groups=4, mid_attention=False, image_size=16).eval()


@pytest.fixture(scope='module')
def images():
    return torch.randint(0, 256, (21, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def direct(vae, images):
    with torch.no_grad(): return vae.encode(images_to_float(images)).numpy()


def no_warning_call(fn):
    "Call `fn`, failing if it warns about a cache (a rebuild)."
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        out = fn()
    assert not [w for w in ws if 'rebuilding' in str(w.message)]
    return out


def rebuilt_with_warning(fn, match):
    with pytest.warns(UserWarning, match=match): return fn()


def test_round_trip_and_reuse(vae, images, tmp_path):
    p = tmp_path/'a.lat'
    lat = cached_latents(p, vae, images, bs=8, progress=False)
    assert lat.shape == (21, 4, 8, 8) and lat.dtype == np.float32
    np.testing.assert_allclose(np.asarray(lat), direct(vae, images), rtol=1e-5, atol=1e-6)
    assert os.path.getsize(p) == CACHE_HEADER + 21*4*8*8*4
    h = read_cache_header(p)
    assert h['shape'] == [21, 4, 8, 8] and h['dtype'] == 'float32' and h['key'] == latent_cache_key(vae, images)
    mtime = p.stat().st_mtime_ns
    again = no_warning_call(lambda: cached_latents(p, vae, images, progress=False))   # valid: reused, not rewritten
    assert p.stat().st_mtime_ns == mtime and np.array_equal(np.asarray(again), np.asarray(lat))
    with pytest.raises(ValueError): again[0, 0, 0, 0] = 1.    # opened read-only
    assert [f.name for f in tmp_path.iterdir()] == ['a.lat']   # no temporary files left


def test_truncated_cache_detected_and_rebuilt(vae, images, tmp_path):
    p = tmp_path/'t.lat'
    good = np.asarray(cached_latents(p, vae, images, progress=False)).copy()
    with open(p, 'r+b') as f: f.truncate(p.stat().st_size - 4)
    with pytest.raises(CorruptCacheError, match='truncated'): open_latent_cache(p)
    fixed = rebuilt_with_warning(lambda: cached_latents(p, vae, images, progress=False), 'truncated: rebuilding')
    assert np.array_equal(np.asarray(fixed), good)
    with open(p, 'r+b') as f: f.truncate(100)                 # cut inside the header
    with pytest.raises(CorruptCacheError, match='shorter than'): open_latent_cache(p)
    with open(p, 'ab') as f: f.write(b'x'*10)                   # not a cache at all any more
    with pytest.raises(CorruptCacheError): open_latent_cache(p)


def test_trailing_bytes_and_damaged_data(vae, images, tmp_path):
    p = tmp_path/'d.lat'
    cached_latents(p, vae, images, progress=False)
    size = p.stat().st_size
    with open(p, 'ab') as f: f.write(b'\0'*8)
    with pytest.raises(CorruptCacheError, match='trailing data'): open_latent_cache(p)
    with open(p, 'r+b') as f: f.truncate(size)
    open_latent_cache(p)                                        # intact again
    with open(p, 'r+b') as f:                                   # flip one byte of the latents
        f.seek(CACHE_HEADER + 1000); b = f.read(1); f.seek(CACHE_HEADER + 1000); f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CorruptCacheError, match='checksum'): open_latent_cache(p)
    open_latent_cache(p, verify=False)                          # size and header alone cannot see it
    fixed = rebuilt_with_warning(lambda: cached_latents(p, vae, images, progress=False), 'checksum')
    np.testing.assert_allclose(np.asarray(fixed), direct(vae, images), rtol=1e-5, atol=1e-6)


def test_not_a_cache(tmp_path):
    p = tmp_path/'x.lat'
    p.write_bytes(b'\x93NUMPY' + b'\0'*5000)
    with pytest.raises(CorruptCacheError, match='not a miniai latent cache'): open_latent_cache(p)


def test_stale_fingerprint_detected_and_rebuilt(vae, images, tmp_path):
    p = tmp_path/'s.lat'
    old = np.asarray(cached_latents(p, vae, images, progress=False)).copy()
    vae2 = conv_vae(channels=(8, 16), norm_groups=4, mid_attention=False, image_size=16).eval()
    vae2.load_state_dict(vae.state_dict())
    with torch.no_grad(): next(vae2.parameters()).add_(0.01)   # "retrained": other weights, same architecture
    with pytest.raises(StaleCacheError, match="VAE's weights changed"): open_latent_cache(p, latent_cache_key(vae2, images))
    new = rebuilt_with_warning(lambda: cached_latents(p, vae2, images, progress=False), "VAE's weights changed")
    np.testing.assert_allclose(np.asarray(new), direct(vae2, images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(new), old)
    other = images.clone(); other[3, 0, 0, 0] ^= 1              # one pixel differs
    with pytest.raises(StaleCacheError, match='images changed'): open_latent_cache(p, latent_cache_key(vae2, other))
    assert issubclass(StaleCacheError, LatentCacheError) and issubclass(CorruptCacheError, LatentCacheError)


def test_failed_write_is_atomic(vae, images, tmp_path):
    p = tmp_path/'w.lat'
    good = np.asarray(cached_latents(p, vae, images, progress=False)).copy()
    before = p.read_bytes()
    def failing():
        yield torch.zeros(8, 4, 8, 8)
        raise RuntimeError('encoder crashed')
    with pytest.raises(RuntimeError, match='encoder crashed'): write_latent_cache(p, failing(), (21, 4, 8, 8), {'k': 1})
    with pytest.raises(ValueError, match='got 8 latents, expected 21'):
        write_latent_cache(p, iter([torch.zeros(8, 4, 8, 8)]), (21, 4, 8, 8), {'k': 1})
    with pytest.raises(ValueError, match='non-finite'):
        write_latent_cache(p, iter([torch.full((21, 4, 8, 8), float('nan'))]), (21, 4, 8, 8), {'k': 1})
    assert p.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ['w.lat']   # untouched, no temp files
    q = tmp_path/'new.lat'
    with pytest.raises(RuntimeError): write_latent_cache(q, failing(), (21, 4, 8, 8), {'k': 1})
    assert not q.exists()
    assert np.array_equal(np.asarray(open_latent_cache(p, latent_cache_key(vae, images))), good)


def test_latent_stats_chunked():
    a = np.random.default_rng(0).normal(3., 2., size=(37, 4, 3, 3)).astype(np.float32)
    m, s = latent_stats(a, rows=5)
    assert m == pytest.approx(a.astype(np.float64).mean(), rel=1e-9) and s == pytest.approx(a.astype(np.float64).std(), rel=1e-9)


def test_latent_stats_of_tensors_and_empty_sets():
    "Tensors of any dtype (bfloat16 has no NumPy twin) give plain floats; an empty set is refused, not divided by 0."
    t = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)).bfloat16()
    m, s = latent_stats(t, rows=7)
    ref = t.double()
    assert type(m) is float and type(s) is float
    assert m == pytest.approx(ref.mean().item(), rel=1e-9) and s == pytest.approx(ref.std(unbiased=False).item(), rel=1e-9)
    with pytest.raises(ValueError, match='no values'): latent_stats(np.zeros((0, 3)))


def test_reconstruct_shows_progress_for_both_halves(vae, images, capsys):
    "progress=True gives a bar while encoding and one while decoding; progress=False none."
    reconstruct(vae, images[:6], bs=3, progress=True)
    err = capsys.readouterr().err
    assert err.count('2/2') >= 2 and ('encod' in err.lower() and 'decod' in err.lower())
    reconstruct(vae, images[:6], bs=3)
    assert capsys.readouterr().err == ''


def test_conv_vae_loss_terms(vae):
    set_seed(1)
    x = torch.rand(4, 3, 16, 16)*2 - 1
    o = vae(x)
    assert isinstance(o, VAEOutput) and o.recon.shape == x.shape and o.mu.shape == (4, 4, 8, 8)
    percept = nn.Conv2d(3, 2, 3).requires_grad_(False)
    loss = ConvVAELoss(kl_weight=0.01, perceptual=percept, perceptual_weight=0.5)
    mse = ((o.recon - x)**2).mean()
    kld = (-0.5*(1 + o.logvar - o.mu**2 - o.logvar.exp())).mean()
    per = ((percept(o.recon) - percept(x))**2).mean()
    assert recon_mse(o, x).item() == pytest.approx(mse.item(), rel=1e-5)
    assert kld_loss(o).item() == pytest.approx(kld.item(), rel=1e-5)
    assert loss(o, x).item() == pytest.approx((mse + 0.01*kld + 0.5*per).item(), rel=1e-5)
    assert set(loss.metrics()) == {'mse', 'kld', 'perceptual'} and set(ConvVAELoss().metrics()) == {'mse', 'kld'}
    with pytest.raises(ValueError, match='needs a `perceptual` network'): ConvVAELoss(perceptual_weight=1.)
    with pytest.raises(ValueError, match='multiples of 2'): vae(torch.zeros(1, 3, 15, 16))
    assert psnr(torch.full((10,), 0.2), torch.zeros(10)) == pytest.approx(10*math.log10(4/0.04))


def test_device_tensor_loader():
    x = torch.arange(10.)[:, None]
    dl = DeviceTensorLoader(x, bs=4, shuffle=True, device='cpu', seed=0)
    assert len(dl) == 3
    seen = torch.cat([b[0] for b in dl])
    assert torch.equal(seen.sort(0).values, x) and not torch.equal(seen, x)
    assert [len(b[0]) for b in DeviceTensorLoader(x, bs=4, drop_last=True, device='cpu')] == [4, 4]
    with pytest.raises(TypeError): DeviceTensorLoader(torch.arange(10), bs=4)
    dls = latent_dls(np.ones((10, 2, 2, 2), np.float32), np.ones((3, 2, 2, 2), np.float32), scale=0.5, bs=4, device='cpu')
    assert len(dls.train) == 2 and (next(iter(dls.valid))[0] == 0.5).all()



def test_latent_channel_stats_against_numpy():
    "Per-channel mean and std (population) from float64 sums read in chunks, for arrays, memmaps and tensors; latent_stats agrees."
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(50, 3, 4, 5))*[[[1.]], [[3.]], [[0.5]]] + [[[10.]], [[-2.]], [[0.]]]).astype(np.float32)
    want = a.astype(np.float64).mean((0, 2, 3)), a.astype(np.float64).std((0, 2, 3))
    for x in (a, torch.from_numpy(a)):
        for rows in (7, 4096):
            mean, std = latent_channel_stats(x, rows=rows)
            assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (3,)
            np.testing.assert_allclose(mean.numpy(), want[0], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(std.numpy(), want[1], rtol=1e-6)
    assert latent_stats(a, rows=7) == pytest.approx((a.astype(np.float64).mean(), a.astype(np.float64).std()), rel=1e-9)
    assert latent_stats(np.arange(5.)) == pytest.approx((2., math.sqrt(2.)))   # (N,) arrays still work: one channel
    with pytest.raises(ValueError, match='latent_channel_stats: no values'): latent_channel_stats(np.zeros((0, 3, 2, 2)))


def test_latent_dls_per_channel_and_labels():
    "shift and scale per channel give (z - shift)*scale; labels travel with their latents through the shuffle; numbers keep the old path exactly."
    z = torch.randn(12, 3, 2, 2)
    z[:, 0] += torch.arange(12.)[:, None, None]*100   # channel 0 tells which item it is
    y = torch.arange(12)
    mean, std = torch.tensor([5., -1., 2.]), torch.tensor([2., 4., 0.5])
    dls = latent_dls(z, z[:5], 1/std, bs=4, device='cpu', seed=0, shift=mean, labels=(y, y[:5]))
    batches = list(dls.train)
    assert [len(b) for b in batches] == [2, 2, 2] and [b[1].dtype for b in batches] == [torch.int64]*3
    for xb, yb in batches: torch.testing.assert_close(xb, (z[yb] - mean[:, None, None])/std[:, None, None])
    assert torch.cat([b[1] for b in batches]).tolist() != list(range(12))   # shuffled, yet aligned (above)
    xb, yb = next(iter(dls.valid))
    assert yb.tolist() == [0, 1, 2, 3]
    plain = latent_dls(z, z[:5], 0.3, bs=4, device='cpu')
    assert torch.equal(next(iter(plain.valid))[0], z[:4]*0.3) and len(next(iter(plain.valid))) == 1
    assert torch.equal(next(iter(latent_dls(z, z[:5], 2., shift=1., bs=4, device='cpu').valid))[0], (z[:4] - 1)*2)
    i32 = latent_dls(z, z[:5], 1., bs=4, device='cpu', labels=(y.int().numpy(), y[:5].int()))   # NumPy or int32 labels: int64 batches
    assert [b[1].dtype for b in i32.valid] == [torch.int64]*2


@pytest.mark.parametrize('shape', [(6, 3), (6, 3, 5), (6, 3, 2, 2, 2)])
def test_latent_dls_per_channel_values_follow_the_latents_rank(shape):
    "One value per channel acts on axis 1 whatever the rank: (N, C), (N, C, L), 5-D; items stay items."
    z = torch.randn(shape)
    mean, std = torch.tensor([1., -2., 0.5]), torch.tensor([2., 0.5, 4.])
    dls = latent_dls(z, z[:2], 1/std, bs=2, device='cpu', shift=mean)
    view = (1, 3) + (1,)*(len(shape) - 2)
    assert dls.train.dataset_len == 6
    torch.testing.assert_close(next(iter(dls.valid))[0], (z[:2] - mean.reshape(view))/std.reshape(view))
    with pytest.raises(ValueError, match=r'the latent `scale` per channel needs latents \(N, C, ...\), got shape \(6,\)'):
        latent_dls(torch.zeros(6), torch.zeros(2), [1.], bs=2, device='cpu')


@pytest.mark.parametrize('kw, err, match', [
    (dict(scale=[1., 2.]), ValueError, r'one value per channel \(shape \(3,\)\), got shape \(2,\)'),
    (dict(scale=torch.tensor([1., 0., 1.])), ValueError, 'every value of the latent `scale` must be finite and > 0'),
    (dict(scale='big'), ValueError, "the latent `scale` must be a number or one value per channel .*got 'big'"),
    (dict(scale=1., shift=float('nan')), ValueError, 'the latent `shift` must be a finite number'),
    (dict(scale=1., shift=[0., float('inf'), 0.]), ValueError, 'every value of the latent `shift` must be finite,'),
    (dict(scale=1., labels=(torch.arange(5),)), ValueError, r'`labels` must be a pair \(train labels, valid labels\)'),
    (dict(scale=1., labels=(torch.arange(4), torch.arange(5))), ValueError, r'`labels\[0\]` must be integer labels of shape \(6,\)'),
    (dict(scale=1., labels=(torch.arange(6), torch.zeros(5))), ValueError, r'`labels\[1\]` must be integer labels of shape \(5,\)'),
    (dict(scale=1., labels=(torch.ones(6, dtype=torch.bool), torch.arange(5))), ValueError, r'`labels\[0\]` must be integer labels'),
])
def test_latent_dls_refuses(kw, err, match):
    with pytest.raises(err, match=match): latent_dls(torch.zeros(6, 3, 2, 2), torch.zeros(5, 3, 2, 2), bs=2, device='cpu', **kw)


def test_latent_classifier_layout():
    "Lesson 25's layout: a 5x5 stem, nbks[i] pre-activation blocks per level with the stride on each level's last, act+norm, pooled head."
    m = latent_classifier(7, in_channels=3, nfs=(4, 8, 16), nbks=(1, 3), drop=0.)
    blocks = [l for l in m if isinstance(l, PreActResBlock)]
    assert len(blocks) == 4 and m[0].kernel_size == (5, 5) and m[0].in_channels == 3
    strides = [b.convs[1][-1].stride[0] for b in blocks]
    assert strides == [2, 1, 1, 2] and [b.convs[0][-1].in_channels for b in blocks] == [4, 8, 16, 16]
    assert isinstance(m[-1], nn.BatchNorm1d) and m[-2].bias is None and m[-2].out_features == 7
    feats = m[:len(m) - 5](torch.randn(2, 3, 16, 16))   # before pool, flatten, dropout, linear, BatchNorm1d
    assert feats.shape == (2, 16, 4, 4)
    assert m.eval()(torch.randn(1, 3, 9, 9)).shape == (1, 7)
    torch.manual_seed(0)
    w = latent_classifier(2, nfs=(4, 256), nbks=(1,), act=nn.LeakyReLU(0.5))[0].weight   # Kaiming for the activation's slope
    assert w.std().item() == pytest.approx(math.sqrt(2/(1 + 0.5**2)/(4*25)), rel=0.1)
    for bad in (dict(nbks=(1,)), dict(nbks=(1, 0)), dict(nbks=(1, 2.)), dict(n_classes=0)):
        with pytest.raises(ValueError): latent_classifier(**{'n_classes': 2, 'nfs': (4, 8, 16), **bad})


def test_train_latent_classifier_learns():
    "Latents whose class sets the mean of one channel: a few epochs beat chance by far; the model comes back in eval mode."
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    z = torch.randn(96, 4, 8, 8, generator=g)
    z[torch.arange(96), y] += 2.
    dls = latent_dls(z[:72], z[72:], 1., bs=12, device='cpu', seed=0, labels=(y[:72], y[72:]))
    model, acc = train_latent_classifier(dls, 3, epochs=4, lr=1e-2, nfs=(8, 16), nbks=(1,), device='cpu', progress=False)
    assert not model.training and acc >= 0.9
    assert acc == pytest.approx((model(z[72:]).argmax(1) == y[72:]).float().mean().item())


def test_train_flops_by_hand():
    class OneConv(nn.Module):
        def __init__(self): super().__init__(); self.c = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        def forward(self, x, t): return self.c(x)
    # forward 2*Cin*Cout*k*k*H*W; backward: the weight gradient only (the input needs none) costs the same again
    assert train_flops_per_image(OneConv(), (3, 8, 8)) == 2*(2*3*5*9*8*8)
    m = EmbUNetModel(4, 4, nfs=(8, 16), num_layers=1, attn_chans=0)
    bn = m.emb_mlp[0][0].running_mean.clone()
    assert train_flops_per_image(m, (4, 8, 8)) > 0 and torch.equal(m.emb_mlp[0][0].running_mean, bn)  # model untouched
    class Frozen(nn.Module):   # called as model(x), first output the loss's, parameters frozen (e.g. a pretrained VAE)
        def __init__(self): super().__init__(); self.c = nn.Conv2d(3, 5, 3, padding=1, bias=False).requires_grad_(False)
        def forward(self, x): return (self.c(x), x.mean())
    assert train_flops_per_image(Frozen(), (3, 8, 8), time_input=False) == 2*(2*3*5*9*8*8)
    class ConvAttn(OneConv):   # then self-attention over the 64 pixels, d = 5, through the fused `F.scaled_dot_product_attention`
        def forward(self, x, t):
            h = self.c(x).flatten(2).transpose(1, 2)[:, None]   # (B, 1 head, L=64, d=5)
            return F.scaled_dot_product_attention(h, h, h)
    # attention is counted as its matrix products (on every torch version: 2.15 also counts the fused CPU kernel, 2.14 did not):
    # forward q@k^T and p@v, 2*L*L*d each; backward twice that
    assert train_flops_per_image(ConvAttn(), (3, 8, 8)) == 2*(2*3*5*9*8*8) + 3*(2*2*64*64*5)


def test_latent_pipeline_end_to_end(tmp_path):
    "Quick mode in miniature: train a tiny VAE, cache latents, train a tiny U-Net on them, sample, decode."
    set_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(48) % 2
    imset = ImageSet(x[:40], y[:40], x[40:], y[40:], ['a', 'b'], 'random')
    vae = conv_vae(channels=(8, 16), norm_groups=4, mid_attention=False, image_size=16)
    learn = conv_vae_learner(vae, image_dls(imset, bs=8, device='cpu', seed=0), ConvVAELoss(), lr=2e-3, progress=False, device='cpu')
    learn.fit(1)
    assert {'mse', 'kld'} <= set(learn.metrics.history[-1])
    lat = cached_latents(tmp_path/'train.lat', vae, imset.train_x, progress=False)
    lat_test = cached_latents(tmp_path/'test.lat', vae, imset.test_x, progress=False)
    _, std = latent_stats(lat)
    dls = latent_dls(lat, lat_test, 1/std, bs=8, device='cpu', seed=0)
    assert abs(dls.train.x.std().item() - 1) < 1e-3
    unet = EmbUNetModel(4, 4, nfs=(8, 16), num_layers=1, attn_chans=0)
    learn = karras_learner(unet, dls, sigma_data=1., lr=3e-3, progress=False, device='cpu')
    learn.fit(1)
    z = sample_batches(unet, 6, lat.shape[1:], steps=4, bs=4, progress=False)
    assert z.shape == (6, 4, 8, 8) and torch.isfinite(z).all()
    imgs = decode_latents(vae, z, 1/std, bs=4)
    assert imgs.shape == (6, 3, 16, 16) and imgs.dtype == torch.float32
    with torch.no_grad(): direct = vae.eval().decode(z*std).clamp(-1, 1)   # one batch, scale undone by hand
    torch.testing.assert_close(imgs, direct, atol=1e-5, rtol=1e-5)
    assert (imgs.abs() == 1).float().mean() < 0.5   # the clamp is a guard, not what makes the images
    rec = reconstruct(vae, imset.test_x)
    assert rec.shape == (8, 3, 16, 16) and torch.isfinite(rec).all()
    assert torch.equal(sample_batches(unet, 6, lat.shape[1:], steps=4, bs=4, progress=False), z)   # seeded: repeatable


def _no_network(monkeypatch):
    "No proxy, and every TCP connection refused (as on a machine without internet)."
    import socket
    for k in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy', 'HF_HUB_OFFLINE'):
        monkeypatch.delenv(k, raising=False)
    def refuse(*a, **k): raise ConnectionRefusedError(111, 'Connection refused')
    monkeypatch.setattr(socket, 'create_connection', refuse)


def test_pretrained_vae_unreachable_hub_is_quick(monkeypatch):
    "An unreachable hub is found by one probe; the cache is then tried with `local_files_only` (no minute of retries)."
    import diffusers
    from miniai.core import hub_unreachable
    from miniai.latents import PretrainedVAEUnavailable, load_pretrained_vae
    _no_network(monkeypatch)
    assert 'unreachable' in hub_unreachable()
    calls = []
    def fake(name, **kw): calls.append(kw); raise OSError(f"{name} does not appear to have a file named config.json.")
    monkeypatch.setattr(diffusers.AutoencoderKL, 'from_pretrained', fake)
    with pytest.raises(PretrainedVAEUnavailable, match='unreachable .*not in the local Hugging Face cache'):
        load_pretrained_vae('org/vae')
    assert calls == [dict(local_files_only=True)]
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(PretrainedVAEUnavailable, match='HF_HUB_OFFLINE is set, and it is not in the local'):
        load_pretrained_vae('org/vae')
    monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.invalid:3128')   # behind a proxy a direct probe proves nothing
    assert hub_unreachable() is None


def test_pretrained_vae_from_local_folder(vae, tmp_path, monkeypatch):
    "A saved `AutoencoderKL` folder loads without the hub, frozen, and encodes as the original."
    from miniai.latents import load_pretrained_vae
    _no_network(monkeypatch)
    vae.vae.save_pretrained(tmp_path/'vae')
    loaded = load_pretrained_vae(str(tmp_path/'vae'))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 16, 16)*2 - 1
    with torch.no_grad(): torch.testing.assert_close(loaded.encode(x), vae.encode(x))


def test_load_hub_dataset_offline_when_unreachable(monkeypatch):
    "An unreachable hub: `load_dataset` runs once in offline mode (cache only), then the mode is restored."
    import datasets
    import huggingface_hub.constants as hub_constants
    from miniai.core import load_hub_dataset
    _no_network(monkeypatch)
    seen = []
    # the offline flag datasets reads: HF_HUB_OFFLINE in newer releases, HF_DATASETS_OFFLINE in older ones
    flag = 'HF_HUB_OFFLINE' if hasattr(datasets.config, 'HF_HUB_OFFLINE') else 'HF_DATASETS_OFFLINE'
    ds_flag = lambda: getattr(datasets.config, flag)
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', False); monkeypatch.setattr(datasets.config, flag, False)
    def fake(name, **kw):
        seen.append((name, kw, hub_constants.HF_HUB_OFFLINE, ds_flag()))
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    before = (hub_constants.HF_HUB_OFFLINE, ds_flag())
    with pytest.raises(ConnectionError, match='unreachable .*`org/data` is not in the local Hugging Face cache'):
        load_hub_dataset('org/data', split='test')
    assert seen == [('org/data', dict(split='test'), True, True)]
    assert (hub_constants.HF_HUB_OFFLINE, ds_flag()) == before
    monkeypatch.setattr(datasets, 'load_dataset', lambda name, **kw: 'from the cache')
    assert load_hub_dataset('org/data') == 'from the cache'


class StubVAE(nn.Module):
    "A VAE with a known latent map: encode = 3*avgpool2(x) + 1 (x in [-1, 1]); decode = its inverse, nearest-upsampled."
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(3.))
    def encode(self, x): return F.avg_pool2d(x, 2)*self.w + 1
    def decode(self, z): return F.interpolate((z - 1)/self.w, scale_factor=2)


def test_latent_scale_round_trip_with_a_stub_vae():
    "Images -> latents (pixels in [-1, 1]) -> scaled to unit std for the loaders -> decoded with the scale undone -> images."
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (10, 3, 4, 4), generator=g, dtype=torch.uint8)
    vae = StubVAE()
    x = imgs.double()/255*2 - 1                                       # [-1, 1], by hand
    pooled = (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])/4
    lat = torch.cat(list(encode_images(vae, imgs, bs=4, progress=False)))
    torch.testing.assert_close(lat, (3*pooled + 1).float(), atol=1e-5, rtol=0)
    mean, std = latent_stats(lat)
    want_std = (3*pooled + 1).std(unbiased=False).item()
    assert std == pytest.approx(want_std, rel=1e-5) and mean == pytest.approx((3*pooled + 1).mean().item(), rel=1e-5)
    dls = latent_dls(lat, lat[:3], 1/std, bs=4, device='cpu', seed=0)
    torch.testing.assert_close(dls.train.x, lat/std); torch.testing.assert_close(dls.valid.x, lat[:3]/std)
    scaled = torch.cat([b[0] for b in dls.valid])
    back = decode_latents(vae, scaled, scale=1/std, bs=2)             # the scale is undone exactly once
    up = pooled.repeat_interleave(2, -1).repeat_interleave(2, -2).float()
    torch.testing.assert_close(back, up[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(reconstruct(vae, imgs, bs=3), up, atol=1e-5, rtol=0)
    far = decode_latents(vae, torch.full((1, 3, 2, 2), 100.), scale=1.)   # decoded images are clamped to [-1, 1]
    assert (far == 1).all()


class ZeroNet(nn.Module):
    "A Karras network whose output is 0: the denoiser is then c_skip(sigma)*x, so samples depend on seed and sigma_data."
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
    def forward(self, x, t): return x*self.p


def test_sample_batches_seeds_each_batch_and_passes_sigma_data():
    from miniai.core import batch_seed
    from miniai.diffusion.ksamplers import sample
    m = ZeroNet()
    z = sample_batches(m, 5, (1, 4, 4), sigma_data=0.5, steps=3, bs=2, seed=7, progress=False)
    want = [sample('dpmpp_2m', m, (b, 1, 4, 4), steps=3, seed=batch_seed(7, i), sigma_data=0.5, device='cpu').x for i, b in enumerate((2, 2, 1))]
    torch.testing.assert_close(z, torch.cat(want))
    assert not torch.allclose(z[:2], z[2:4])                            # batches are not repeats of one seed
    other = sample_batches(m, 2, (1, 4, 4), sigma_data=1., steps=3, bs=2, seed=7, progress=False)
    assert not torch.allclose(other, z[:2])                             # sigma_data reaches the sampler


def test_conv_vae_forward_samples_the_posterior(vae):
    "forward: recon = decode(mean + exp(logvar/2)*eps); mu and logvar are the halves of the encoder's moments."
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))*2 - 1
    with torch.no_grad():
        mean, logvar = vae.vae.quant_conv(vae.vae.encoder(x)).chunk(2, 1)   # the moments, by hand
        torch.manual_seed(5); o = vae(x)
        torch.manual_seed(5); eps = torch.randn_like(mean)
        want = vae.vae.decode(mean + (0.5*logvar.clamp(-30, 20)).exp()*eps).sample
        torch.testing.assert_close(vae.encode(x), mean)
    torch.testing.assert_close(o.mu, mean); torch.testing.assert_close(o.logvar, logvar.clamp(-30, 20))
    torch.testing.assert_close(o.recon, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad(): assert (o.recon - vae.decode(mean)).abs().max() > 1e-4   # a sample, not the mean


@pytest.mark.parametrize('precision, dtype', [('fp16', torch.float16), ('bf16', torch.bfloat16), (None, None)])
def test_conv_vae_learner_mixed_precision_is_the_one_asked_for(precision, dtype):
    "On CUDA the VAE trains in the precision asked for ('fp16' was silently bf16); the learner is only built here."
    from miniai.accel import MixedPrecision
    from miniai.latents import conv_vae_learner
    class Stays(nn.Linear):   # the learner moves the model to its device first: no CUDA here, so it stays
        def to(self, *a, **k): return self
    learn = conv_vae_learner(Stays(1, 1), None, precision=precision, progress=False, device='cuda')
    assert [cb.dtype for cb in learn.cbs if isinstance(cb, MixedPrecision)] == ([dtype] if dtype else [])
    cpu = conv_vae_learner(nn.Linear(1, 1), None, precision=precision, progress=False, device='cpu')
    assert not any(isinstance(cb, MixedPrecision) for cb in cpu.cbs)     # float32 on a CPU


def _rewrite_header(p, **changes):
    h = read_cache_header(p); h.update(changes)
    from miniai.latents import CACHE_MAGIC
    body = json.dumps(h).encode()
    with open(p, 'r+b') as f: f.write(CACHE_MAGIC + body.ljust(CACHE_HEADER - len(CACHE_MAGIC), b' '))


def test_an_edited_header_fails_the_checksum_and_is_rebuilt(vae, images, tmp_path):
    "The checksum covers the header's shape and dtype: the same bytes read as (20, 4, 8, 8)... would pass a data-only hash."
    p = tmp_path/'h.lat'
    good = np.asarray(cached_latents(p, vae, images, progress=False)).copy()
    _rewrite_header(p, shape=[21*2, 2, 8, 8])                  # same byte count, other layout
    with pytest.raises(CorruptCacheError, match='checksum'): open_latent_cache(p)
    fixed = rebuilt_with_warning(lambda: cached_latents(p, vae, images, progress=False), 'checksum')
    assert np.array_equal(np.asarray(fixed), good)
    _rewrite_header(p, shape=[21*2, 2, 8, 8])
    with pytest.warns(UserWarning, match='42 latents for 21 images'): cached_latents(p, vae, images, verify=False, progress=False)


def test_a_cache_of_an_older_format_is_stale_not_damaged(vae, images, tmp_path):
    from miniai.latents import CACHE_MAGIC, StaleCacheError
    p = tmp_path/'o.lat'
    good = np.asarray(cached_latents(p, vae, images, progress=False)).copy()
    with open(p, 'r+b') as f: f.write(CACHE_MAGIC[:-2] + b'1\n')
    with pytest.raises(StaleCacheError, match='another cache format'): open_latent_cache(p)
    fixed = rebuilt_with_warning(lambda: cached_latents(p, vae, images, progress=False), r'another cache format\): rebuilding')
    assert np.array_equal(np.asarray(fixed), good)


def test_a_damaged_magic_line_is_damage_not_an_older_format(vae, images, tmp_path):
    from miniai.latents import CACHE_MAGIC
    p = tmp_path/'m.lat'
    cached_latents(p, vae, images, progress=False)
    with open(p, 'r+b') as f: f.write(CACHE_MAGIC[:-2] + b'\0\n')
    with pytest.raises(CorruptCacheError, match='not a miniai latent cache'): open_latent_cache(p)


def test_device_tensor_loader_uses_given_device(monkeypatch):
    "DeviceTensorLoader puts its data on the device it is given, not on the default one."
    import miniai.latents as L
    monkeypatch.setattr(L, 'default_device', lambda: torch.device('cpu'))
    dl = L.DeviceTensorLoader(torch.randn(6, 2), bs=4, device='meta')
    assert dl.x.device.type == 'meta'


def test_perceptual_net_is_a_frozen_eval_copy():
    "`perceptual_net` copies the first layers in eval mode with no parameter requiring gradients; the classifier is untouched."
    clf = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.1), nn.Conv2d(4, 4, 3), nn.ReLU())
    net = perceptual_net(clf, depth=3)
    assert len(net) == 3 and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert all(p.requires_grad for p in clf.parameters()) and clf.training
    assert net[0].weight.data_ptr() != clf[0].weight.data_ptr()


def test_latent_cache_takes_half_precision_batches(tmp_path):
    "float16 and bfloat16 batches are stored as float32 and the cache opens with a matching checksum."
    x = torch.linspace(-2, 2, 2*4*2*2).view(2, 4, 2, 2)
    p = write_latent_cache(tmp_path/'c.bin', iter([x[:1].half(), x[1:].bfloat16()]), (2, 4, 2, 2), {'k': 1})
    mm = open_latent_cache(p, {'k': 1})
    assert mm.dtype == np.float32
    assert np.array_equal(mm[0], x[0].half().float().numpy()) and np.array_equal(mm[1], x[1].bfloat16().float().numpy())


def test_latent_cache_refuses_a_header_that_does_not_fit(tmp_path):
    "A key too long for the fixed-size header is refused and no file is left behind."
    with pytest.raises(ValueError, match='cache header too large'):
        write_latent_cache(tmp_path/'c.bin', iter([torch.zeros(1, 1)]), (1, 1), {'k': 'x'*CACHE_HEADER})
    assert list(tmp_path.iterdir()) == []
