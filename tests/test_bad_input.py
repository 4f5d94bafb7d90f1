"""Bad input at every public entry point: one clear error that names the argument, and no half-written files.

Each row of `ROWS` is one line of the table in `docs/bad_input.md` (a test checks that the two agree):
entry point | bad input | error type | message fragment. `test_bad_input` runs the row's call and asserts the
exception type, that the message contains the fragment (which names the argument), and that the folder the
call could write to holds exactly the same files (names, sizes, contents) afterwards: no temp file, no partial
or clobbered target. CPU only, offline, a few seconds in all.
"""
import gzip, hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import miniai.data as mdata
from miniai.accel import (CheckpointCB, CheckpointError, CompileCB, EMA, GradAccumCB, GradClipCB, MixedPrecision, NanGuardCB, NonFiniteLossError,
                          load_checkpoint, save_checkpoint)
from miniai.audio import (AudioClips, MelSpec, fix_length, fsdd_dls, load_fsdd, load_hf_audio, load_wav_folder, match_rate, spectrogram_images,
                          write_wav)
from miniai.data import (CorruptDataError, DataLoaders, DeviceImageLoader, MissingDataError, arrays_to_dataset, balanced_indices, shipped_sample,
                         fashion_dls, fashion_mnist_arrays, read_idx, show_image, write_idx)
from miniai.diffusion.cosine import cosine_ddim_sample, cosine_timesteps, noisify_cosine
from miniai.diffusion.ddim import ddim_sample, ddim_sigma, ddim_timesteps
from miniai.diffusion.ddpm import ddpm_learner, ddpm_sample, linear_schedule, noisify_ddpm
from miniai.diffusion.guidance import DropLabelCB, GuidedModel, cfg_mix
from miniai.diffusion.ddpm import diffusers_unet
from miniai.audio_diffusion import diffusion_learner, digit_accuracy, digit_features, generate_spectrograms
from miniai.distributed import load_samples
from miniai.cli import class_accuracy, fid_of_samples, load_sample_images, make_sampler, sample_to_files, save_image_grid, save_trained, train_diffusion
from miniai.diffusion.karras import noisify_karras, sigmas_karras
from miniai.diffusion.ksamplers import sample, sample_euler, sample_lms
from miniai.diffusion.noise_level import noise_level_ddim_sample, noisify_noise_level, predict_abar
from miniai.fid import ImageEval, RefStats, check_feats, fid_from_feats, frechet_distance, kid_from_feats
from miniai.images import ImageFeatures, class_balanced_split, image_classifier, images_to_float, load_image_set, read_image_folder, resize_images
from miniai.latents import (CorruptCacheError, DeviceTensorLoader, latent_classifier, latent_dls, StaleCacheError, conv_vae, conv_vae_learner, encode_images,
                            open_latent_cache, read_cache_header, write_latent_cache)
from miniai.learner import Learner, OneCycleCB, TrainLearner
from miniai.models.resnet import load_weights, random_erase, random_flip, save_weights, weights_metadata
from miniai.models.unet import EmbUNetModel
from miniai.models.simple_diffusion import SimpleDiffusion
from miniai.models.layers import Dropout
from miniai.vae import VAE, Autoencoder, autoencoder_batch, bce_loss, kld_loss

NAN = float('nan')
CPU = torch.device('cpu')

# ---------------------------------------------------------------- small fixtures built inside the rows
def u8(*shape): return torch.randint(0, 256, shape, dtype=torch.uint8)

def _unet():
    torch.manual_seed(0)
    return EmbUNetModel(1, 1, nfs=(8, 16), attn_chans=0, n_classes=3).eval()

def _unet_call(c):
    def call(tmp): return lambda: _unet()(torch.randn(2, 1, 8, 8), torch.rand(2), c)
    return call

def _eval():
    "ImageEval on 1x8x8 images with a tiny linear feature model and random reference features."
    torch.manual_seed(0)
    return ImageEval(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), torch.randn(20, 4), bs=8, img_shape=(1, 8, 8))

def _fid_call(x):
    def call(tmp): ie = _eval(); return lambda: ie.fid(x)
    return call

class _OneChannel(nn.Module):
    "A 'network' that returns only the first channel (built for other images)."
    def forward(self, x, t): return x[:, :1]

def _truncated_weights(tmp):
    save_weights(nn.Linear(4, 4), tmp/'w.safetensors')
    (tmp/'w.safetensors').write_bytes((tmp/'w.safetensors').read_bytes()[:-20])
    return lambda: load_weights(nn.Linear(4, 4), tmp/'w.safetensors')

def _loader_state_other_bs(tmp):
    a = DeviceImageLoader(u8(8, 4, 4), None, bs=2, shuffle=True, device=CPU)
    it = iter(a); next(it)   # one batch into the epoch
    sd = a.state_dict()
    return lambda: DeviceImageLoader(u8(8, 4, 4), None, bs=4, shuffle=True, device=CPU).load_state_dict(sd)

class _Conditional(nn.Module):
    "Stands in for a class-conditional network (the refusal comes before any sampling)."
    n_classes = 10

def _npy_28(tmp):
    np.save(tmp/'s.npy', np.zeros((4, 1, 28, 28), np.float32))
    return lambda: fid_of_samples(tmp/'s.npy', quick=True, progress=False)

def _ddim(**kw):
    sch = linear_schedule(10); ts = ddim_timesteps(10, 3)
    args = dict(shape=(2, 1, 4, 4), eta=1.) | kw
    return lambda tmp: lambda: ddim_sample(lambda x, t: torch.zeros_like(x), args['shape'], ts, sch.abar[ts], eta=args['eta'])

def _learner(model=None, loss_func=F.mse_loss, cbs=(), opt_func=torch.optim.SGD):
    torch.manual_seed(0)
    xb = [(torch.randn(4, 2), torch.randn(4, 1))]
    return TrainLearner(model or nn.Linear(2, 1), DataLoaders(xb, xb), loss_func=loss_func, lr=0.1, cbs=list(cbs), opt_func=opt_func)

def _nan_loss(p, y): return F.mse_loss(p, y) * NAN

def _weights(m): return [p.detach().clone() for p in m.parameters()]


def _npz_samples(tmp):
    np.savez(tmp/'samples.npz', x=np.zeros((2, 1, 4, 4), np.float32))
    return lambda: load_samples(tmp/'samples.npz')


def _before_training(**kw):
    "`train_diffusion(quick=True, **kw)`, where fitting raises AssertionError: the bad argument must be refused before training."
    def make(tmp, monkeypatch):
        def no_fit(self, *a, **k): raise AssertionError('train_diffusion started training before refusing its arguments')
        monkeypatch.setattr(Learner, 'fit', no_fit)
        return lambda: train_diffusion(tmp/'run', quick=True, progress=False, **kw)
    return make
def _same(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

def _ckpt_truncated(tmp):
    src = _learner(); src.fit(1, valid=False)
    path = save_checkpoint(tmp/'ck.pt', src)
    path.write_bytes(path.read_bytes()[:path.stat().st_size//2])
    dst = _learner(); dst.fit(1, valid=False); before = _weights(dst.model)
    return lambda: load_checkpoint(path, dst), lambda: _same(before, _weights(dst.model))

def _ckpt_other_config(tmp):
    src = _learner(nn.Linear(2, 1)); src.fit(1, valid=False)
    path = save_checkpoint(tmp/'ck.pt', src)
    dst = _learner(nn.Linear(3, 1)); dst.opt = dst.opt_func(dst.model.parameters(), dst.lr); before = _weights(dst.model)
    return lambda: load_checkpoint(path, dst), lambda: _same(before, _weights(dst.model))

def _ckpt_other_ema(tmp):
    "Same model, but the EMA shadow in the checkpoint has another shape: refused before anything (model included) is loaded."
    src = _learner(cbs=[EMA(0.9)]); src.fit(1, valid=False)
    path = save_checkpoint(tmp/'ck.pt', src)
    ck = torch.load(path, weights_only=True)
    ck['ema']['shadow'] = {k: torch.zeros(7) for k in ck['ema']['shadow']} if 'shadow' in ck['ema'] else ck['ema']
    ck['model'] = {k: v + 1 for k, v in ck['model'].items()}  # would change the weights if it were applied
    torch.save(ck, path)
    dst = _learner(cbs=[EMA(0.9)]); dst.fit(1, valid=False); before = _weights(dst.model)
    return lambda: load_checkpoint(path, dst), lambda: _same(before, _weights(dst.model))

def _ckpt_other_opt_state(tmp):
    "Same model and optimizer, but an Adam moment of another shape in the file: refused before anything is loaded."
    src = _learner(opt_func=torch.optim.Adam); src.fit(1, valid=False)
    path = save_checkpoint(tmp/'ck.pt', src)
    ck = torch.load(path, weights_only=True)
    ck['opt']['state'][0]['exp_avg'] = torch.zeros(3, 3)
    ck['model'] = {k: v + 1 for k, v in ck['model'].items()}  # would change the weights if it were applied
    torch.save(ck, path)
    dst = _learner(opt_func=torch.optim.Adam); dst.fit(1, valid=False); before = _weights(dst.model)
    return lambda: load_checkpoint(path, dst), lambda: _same(before, _weights(dst.model))

def _ema_other_buffers(tmp):
    "An EMA of a BatchNorm copied into a LayerNorm: the same parameter shapes, other buffers; the target is untouched."
    ema = EMA(); ema.track(nn.BatchNorm1d(4))
    target = nn.LayerNorm(4); before = _weights(target)
    return lambda: ema.copy_to(target), lambda: _same(before, _weights(target))

def _ckpt_other_length(tmp):
    "A checkpoint of a 3-epoch one-cycle fit resumed by a 5-epoch fit: refused before anything is loaded."
    _learner(cbs=[OneCycleCB(0.1), CheckpointCB(tmp/'ck.pt')]).fit(3, valid=False)
    dst = _learner(cbs=[OneCycleCB(0.1), CheckpointCB(tmp/'ck.pt')]); before = _weights(dst.model)
    return lambda: dst.fit(5, valid=False), lambda: _same(before, _weights(dst.model))

def _ref_of_other_model(tmp):
    "Reference statistics saved from one feature model, loaded for another."
    torch.manual_seed(0)
    RefStats.from_feats(torch.randn(20, 4), model_hash='0'*64).save(tmp/'ref.safetensors')
    return lambda: ImageEval(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), tmp/'ref.safetensors', img_shape=(1, 8, 8))

def _ckpt_bad_extra(tmp):
    learn = _learner(); learn.fit(1, valid=False)
    return lambda: save_checkpoint(tmp/'ck.pt', learn, extra={'model': nn.Linear(1, 1)})

def _ckpt_bad_extra_keeps_old(tmp):
    "A failing save over an existing checkpoint leaves the old one intact (the snapshot compares its bytes)."
    learn = _learner(); learn.fit(1, valid=False)
    save_checkpoint(tmp/'ck.pt', learn)
    return lambda: save_checkpoint(tmp/'ck.pt', learn, extra={'fn': print})

def _nan_fit(tmp):
    learn = _learner(loss_func=_nan_loss, cbs=[NanGuardCB(every=1)])
    return lambda: learn.fit(1)

def _cache_write(batches, shape=(4, 2, 2, 2), existing=False):
    def call(tmp):
        if existing: write_latent_cache(tmp/'lat.bin', [torch.ones(4, 2, 2, 2)], (4, 2, 2, 2), {'vae': 'v'})
        return lambda: write_latent_cache(tmp/'lat.bin', batches, shape, {'vae': 'v'})
    return call

def _cache_truncated(tmp):
    p = write_latent_cache(tmp/'lat.bin', [torch.ones(4, 2, 2, 2)], (4, 2, 2, 2), {'vae': 'v'})
    p.write_bytes(p.read_bytes()[:-16])
    return lambda: open_latent_cache(p)

def _cache_stale(tmp):
    p = write_latent_cache(tmp/'lat.bin', [torch.ones(4, 2, 2, 2)], (4, 2, 2, 2), {'vae': 'v1', 'images': 'i', 'settings': 's'})
    return lambda: open_latent_cache(p, key={'vae': 'v2', 'images': 'i', 'settings': 's'})

def _cache_bad_header(tmp):
    "A cache whose JSON header was overwritten (the magic line intact)."
    p = write_latent_cache(tmp/'lat.bin', [torch.ones(4, 2, 2, 2)], (4, 2, 2, 2), {'vae': 'v'})
    b = bytearray(p.read_bytes()); i = b.index(b'{'); b[i:i+4] = b'#!@?'; p.write_bytes(bytes(b))
    return lambda: read_cache_header(p)

def _cache_damaged(tmp):
    p = write_latent_cache(tmp/'lat.bin', [torch.ones(4, 2, 2, 2)], (4, 2, 2, 2), {'vae': 'v'})
    b = bytearray(p.read_bytes()); b[-1] ^= 0xFF; p.write_bytes(bytes(b))
    return lambda: open_latent_cache(p)

def _idx_short_header(tmp):
    p = tmp/'x-idx3-ubyte'
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # 3 dimensions announced, their sizes cut off
    return lambda: read_idx(p)

def _idx_truncated(tmp):
    p = tmp/'x-idx3-ubyte.gz'
    write_idx(np.zeros((3, 4, 4), np.uint8), p)
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-5]))
    return lambda: read_idx(p)

def _fashion_missing(tmp, monkeypatch):
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    def no_hub(*a, **k): raise ConnectionError('offline')
    monkeypatch.setattr(mdata, '_load_from_hub', no_hub)
    return lambda: fashion_mnist_arrays('train', data_dir=tmp/'no_such_dir')

def _fashion_elsewhere(tmp, monkeypatch):
    "A `data_dir` that exists but lacks the files, with a MINIAI_DATA that would have them: still an error."
    monkeypatch.setenv('MINIAI_DATA', str(tmp/'env')); (tmp/'mine').mkdir()
    return lambda: fashion_dls(bs=8, data_dir=tmp/'mine', limit=(20, 10), device=CPU)

def _empty_folder(fn):
    def call(tmp): (tmp/'empty').mkdir(); return lambda: fn(tmp/'empty')
    return call

def _wav_nan(tmp): return lambda: write_wav(tmp/'out'/'a.wav', torch.tensor([0., NAN, 0.5]), 8000)

def _clips_8k(tmp):
    clips = AudioClips([torch.zeros(100)], 8000, torch.tensor([0]), ['a'], ['zero'])
    return lambda: spectrogram_images(clips, MelSpec(sample_rate=16000), device='cpu')

def _fp(x): return lambda tmp: x   # the call needs no files

def _png_folder_with_text(tmp):
    "A sample folder of PNGs, one of which is a text file with a .png name."
    from PIL import Image
    (tmp/'png').mkdir(); Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp/'png'/'00000.png')
    (tmp/'png'/'00001.png').write_text('not an image')
    return lambda: load_sample_images(tmp/'png')

def _truncated_metadata(tmp):
    save_weights(nn.Linear(4, 4), tmp/'w.safetensors')
    (tmp/'w.safetensors').write_bytes((tmp/'w.safetensors').read_bytes()[:40])
    return lambda: weights_metadata(tmp/'w.safetensors')

def _tiny_vae(): return conv_vae(channels=(8, 16), latent_channels=2, norm_groups=4, mid_attention=False, in_channels=1, image_size=8)

def _hf_audio_empty_row(tmp):
    "An audio data set whose one row holds neither bytes, a path nor a decoded array."
    import datasets
    ds = datasets.Dataset.from_dict({'audio': [{'bytes': None, 'path': None}]})
    return lambda: load_hf_audio(ds, 8000)

def _two_odd_splits(tmp):
    import datasets
    one = datasets.Dataset.from_dict({'image': [np.zeros((4, 4), np.uint8)], 'label': [0]})
    return lambda: load_image_set(datasets.DatasetDict(a=one, b=one))

def _dunet(n_classes=None): return diffusers_unet((8, 16), norm_groups=4, attention=(False, False), layers_per_block=1, n_classes=n_classes)

def _checkpoint(n_classes=None, **kw):
    "A tiny saved `miniai train` model (conditional with `n_classes`); the call samples it into tmp/'out'."
    def call(tmp):
        unet = dict(channels=(8, 16), norm_groups=4, attention=(False, False), layers_per_block=1, t_scale=1000.)
        save_trained(diffusers_unet(**unet, n_classes=n_classes), tmp/'model.safetensors',
                     dict(schedule='cosine', quick=True, unet=unet, value_range=(-0.5, 0.5), linear=None, n_classes=n_classes))
        return lambda: sample_to_files(tmp/'model.safetensors', tmp/'out', n=2, steps=2, progress=False, **kw)
    return call

def _earlier_run(tmp):
    "An output folder that holds another run's files: a new run there is refused before any work."
    (tmp/'run').mkdir()
    for f in ('model.safetensors', 'metrics.json'): (tmp/'run'/f).write_text('an earlier run')
    return lambda: train_diffusion(tmp/'run', quick=True, progress=False)

def _text_file(name: str, call):
    "A JSON file where a weights or sample file belongs."
    def make(tmp):
        (tmp/name).write_text('{"fid": 1.0}')
        return lambda: call(tmp/name)
    return make

def _one_png(tmp):
    from PIL import Image
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp/'00000.png')
    return lambda: fid_of_samples(tmp/'00000.png', quick=True, progress=False)

def _ema_tracking():
    ema = EMA(); ema.track(nn.Linear(2, 2))
    return ema

def _ema_update_in_average(tmp):
    ema = _ema_tracking()
    def call():
        with ema.average(): ema.update()
    return call

def _float_labels(tmp):
    np.save(tmp/'samples.npy', np.zeros((2, 1, 32, 32), np.float32)); np.save(tmp/'labels.npy', np.zeros(2, np.float32))
    return lambda: fid_of_samples(tmp/'samples.npy', labels=tmp/'labels.npy', quick=True, progress=False)


# ---------------------------------------------------------------- the table
# (entry point, bad input, error type, message fragment (names the argument), call(tmp) -> thunk or (thunk, post_check))
ROWS = [
    # data loaders
    ('data.shipped_sample', 'a data set with no shipped sample', ValueError, "no shipped sample 'cifar10_sample.npz'", _fp(lambda: shipped_sample('cifar10_sample.npz'))),
    ('data.DeviceImageLoader.load_state_dict', 'state saved with another batch size (skipped images)', ValueError, 'saved with bs=2, this loader has bs=4', _loader_state_other_bs),
    ('data.fashion_dls', 'limit n_test too many for a random holdout', ValueError, 'more than the held-out part of the training split of the shipped sample can give', _fp(lambda: mdata.fashion_dls(bs=64, sample=True, device=CPU, holdout=500, limit=(1500, 450)))),
    ('vae.autoencoder_batch', 'a bare tensor (kept the first image only)', TypeError, "`batch` must be a loader's tuple `(images, ...)`", _fp(lambda: autoencoder_batch(torch.rand(4, 1, 8, 8), flatten=True))),
    ('vae.bce_loss', 'targets in [-1, 1] (no lower bound)', ValueError, '`bce_loss` targets must lie in [0, 1]', _fp(lambda: bce_loss([torch.zeros(2, 4), torch.zeros(2, 2), torch.zeros(2, 2)], -torch.ones(2, 4)))),
    ('models.resnet.load_weights', 'truncated weights file', ValueError, 'is not a readable safetensors weights file', _truncated_weights),
    ('models.resnet.weights_metadata', 'truncated weights file', ValueError, 'is not a readable safetensors weights file', _truncated_metadata),
    ('diffusion.guidance.GuidedModel', 'null_class=0 (labels were checked against 0 classes)', ValueError, 'in 0..2', lambda tmp: lambda: GuidedModel(_unet(), [1, 5], 2., null_class=0)),
    ('data.DeviceImageLoader', 'float images', TypeError, '`images` must be uint8', _fp(lambda: DeviceImageLoader(torch.rand(4, 8, 8), None, device=CPU))),
    ('data.DeviceImageLoader', 'images not a tensor (a list)', TypeError, '`images` must be a tensor', _fp(lambda: DeviceImageLoader([[1, 2]], None, device=CPU))),
    ('data.DeviceImageLoader', '5-D images', ValueError, '`images` must be (N,H,W) or (N,C,H,W)', _fp(lambda: DeviceImageLoader(u8(2, 1, 1, 4, 4), None, device=CPU))),
    ('data.DeviceImageLoader', 'channels-last (N,H,W,3) without the flag', ValueError, 'pass channels_last_input=True', _fp(lambda: DeviceImageLoader(u8(2, 8, 8, 3), None, device=CPU))),
    ('data.DeviceImageLoader', 'empty data set (N=0)', ValueError, '`images` is empty', _fp(lambda: DeviceImageLoader(u8(0, 8, 8), None, device=CPU))),
    ('data.DeviceImageLoader', 'float labels', TypeError, '`labels` must be integers', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), torch.zeros(4), device=CPU))),
    ('data.DeviceImageLoader', 'labels of another length', ValueError, '`labels` must have shape (4,)', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), torch.zeros(3, dtype=torch.long), device=CPU))),
    ('data.DeviceImageLoader', 'bs=0', ValueError, '`bs` must be a positive int', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, bs=0, device=CPU))),
    ('data.DeviceImageLoader', 'bs=-8', ValueError, '`bs` must be a positive int', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, bs=-8, device=CPU))),
    ('data.DeviceImageLoader', 'bs=2.5 (not an int)', ValueError, '`bs` must be a positive int', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, bs=2.5, device=CPU))),
    ('data.DeviceImageLoader', 'pad=-1', ValueError, '`pad` must be an int >= 0', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, pad=-1, device=CPU))),
    ('data.DeviceImageLoader', 'value_range (1, -1) reversed', ValueError, '`value_range` must be finite (lo, hi) with lo < hi', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, value_range=(1, -1), device=CPU))),
    ('data.DeviceImageLoader', 'value_range=5 (not a pair)', ValueError, '`value_range` must be finite (lo, hi) with lo < hi, got 5', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, value_range=5, device=CPU))),
    ('data.DeviceImageLoader', 'value_range with NaN', ValueError, '`value_range` must be finite', _fp(lambda: DeviceImageLoader(u8(4, 8, 8), None, value_range=(NAN, 1.), device=CPU))),
    ('data.fashion_dls', 'bs=0', ValueError, '`bs` must be a positive int', _fp(lambda: fashion_dls(bs=0, sample=True, device=CPU))),
    ('data.fashion_dls', 'limit=0 (an empty subset)', ValueError, '`limit` must give positive sizes', _fp(lambda: fashion_dls(limit=0, sample=True, device=CPU))),
    ('data.fashion_dls', 'limit=(100, -1)', ValueError, '`limit` must give positive sizes (n_train, n_test) or None, got n_test=-1', _fp(lambda: fashion_dls(limit=(100, -1), sample=True, device=CPU))),
    ('data.fashion_dls', 'holdout=-1', ValueError, '`holdout` must be a number of training images >= 0', _fp(lambda: fashion_dls(holdout=-1, sample=True, device=CPU))),
    ('data.fashion_dls', 'holdout >= the training set', ValueError, 'leaves no training images', _fp(lambda: fashion_dls(holdout=10**6, sample=True, device=CPU))),
    ('data.fashion_mnist_arrays', "split='valid'", ValueError, 'split must be one of', _fp(lambda: fashion_mnist_arrays('valid'))),
    ('data.fashion_mnist_arrays', 'missing data_dir (not looked for elsewhere)', MissingDataError, 'no_such_dir is not a folder; nothing else was searched', _fashion_missing),
    ('data.fashion_dls', 'a data_dir without the files (with limit: no fallback)', MissingDataError, 'Nothing else was searched', _fashion_elsewhere),
    ('data.read_idx', 'truncated IDX file', CorruptDataError, 'header says shape', _idx_truncated),
    ('data.read_idx', 'IDX header cut short', CorruptDataError, 'header cut short: 3 dimensions need 16 header bytes', _idx_short_header),
    ('data.write_idx', 'float array', ValueError, 'write_idx needs a uint8 array', _fp(lambda: write_idx(np.zeros((2, 2)), '/nonexistent/x.idx'))),
    ('data.balanced_indices', 'n=-5', ValueError, '`n` must be >= 0', _fp(lambda: balanced_indices(torch.tensor([0, 1]), -5))),
    ('data.balanced_indices', 'n=3.0 (not an int)', TypeError, '`n` must be an int', _fp(lambda: balanced_indices(torch.tensor([0, 1]), 3.0))),
    ('data.balanced_indices', 'label 11 with n_classes=10', ValueError, 'labels must be in [0, 10)', _fp(lambda: balanced_indices(torch.tensor([0, 11]), 2, n_classes=10))),
    ('data.balanced_indices', 'n larger than the class counts allow', ValueError, 'cannot take 10 class-balanced items', _fp(lambda: balanced_indices(torch.tensor([0, 0, 1]), 10))),
    ('data.arrays_to_dataset', 'float images', ValueError, 'need uint8 images (N,H,W) or (N,H,W,3) and N labels, got float32 (2, 4, 4)', _fp(lambda: arrays_to_dataset(np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64)))),
    ('data.show_image', 'a batch (N,C,H,W) instead of one image', ValueError, 'an image must be (H,W), (C,H,W) or (H,W,C) with 1, 3 or 4 channels, got shape (2, 1, 4, 4)', _fp(lambda: show_image(torch.zeros(2, 1, 4, 4)))),
    ('latents.DeviceTensorLoader', 'empty data set (N=0)', TypeError, '`x` must be a non-empty float tensor', _fp(lambda: DeviceTensorLoader(torch.zeros(0, 4), device=CPU))),
    ('latents.DeviceTensorLoader', 'bs=0', ValueError, '`bs` must be a positive int', _fp(lambda: DeviceTensorLoader(torch.zeros(4, 4), bs=0, device=CPU))),
    # training
    ('learner.Learner.fit', 'empty training loader (0 batches)', ValueError, '`dls.train` is empty', _fp(lambda: TrainLearner(nn.Linear(2, 1), DataLoaders([], []), lr=0.1).fit(1))),
    ('learner.Learner.fit', 'n_epochs=0', ValueError, '`n_epochs` must be an int >= 1', _fp(lambda: _learner().fit(0))),
    ('learner.Learner.fit', 'BatchNorm1d and a last training batch of one item', ValueError, 'a training batch of 1 item(s) reached a BatchNorm layer, which needs more than one value per channel to train', _fp(lambda: TrainLearner(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), DataLoaders(DeviceTensorLoader(torch.zeros(9, 2), bs=4, device=CPU), []), lambda p: p.mean(), lr=0.1).fit(1))),
    ('learner.fit + accel.NanGuardCB', 'loss becomes NaN', NonFiniteLossError, 'the training loss became nan at epoch 0, batch 0', _nan_fit),
    ('accel.NanGuardCB', 'every=0', ValueError, '`every` must be >= 1', _fp(lambda: NanGuardCB(every=0))),
    ('accel.MixedPrecision', 'dtype=torch.float32', ValueError, 'MixedPrecision dtype must be torch.bfloat16 or torch.float16', _fp(lambda: MixedPrecision(torch.float32))),
    ('accel.MixedPrecision', "dtype='bf16' (a string)", ValueError, 'MixedPrecision dtype must be torch.bfloat16 or torch.float16', _fp(lambda: MixedPrecision('bf16'))),
    ('accel.EMA', 'decay=1.0', ValueError, 'EMA decay must be in [0, 1)', _fp(lambda: EMA(1.0))),
    ('accel.GradClipCB', 'max_norm=0', ValueError, 'GradClipCB max_norm must be a finite number > 0', _fp(lambda: GradClipCB(0))),
    ('accel.GradClipCB', 'max_norm=nan', ValueError, 'GradClipCB max_norm must be a finite number > 0', _fp(lambda: GradClipCB(NAN))),
    ('accel.GradClipCB', 'max_norm=inf', ValueError, 'GradClipCB max_norm must be a finite number > 0', _fp(lambda: GradClipCB(float('inf')))),
    ('accel.GradClipCB', 'norm_type=0', ValueError, 'GradClipCB norm_type must be a number > 0 (or inf)', _fp(lambda: GradClipCB(1., norm_type=0))),
    ('accel.GradClipCB', "norm_type='2' (a string)", ValueError, 'GradClipCB norm_type must be a number > 0 (or inf)', _fp(lambda: GradClipCB(1., norm_type='2'))),
    ('accel.GradAccumCB', 'n=0', ValueError, '`GradAccumCB n` must be >= 1, got 0', _fp(lambda: GradAccumCB(0))),
    ('accel.GradAccumCB', 'n=2.5', TypeError, '`GradAccumCB n` must be an int, got 2.5', _fp(lambda: GradAccumCB(2.5))),
    ('accel.GradAccumCB', 'n=True', TypeError, '`GradAccumCB n` must be an int, got True', _fp(lambda: GradAccumCB(True))),
    ('learner.fit + accel.GradAccumCB', 'a training loader without len()', TypeError, 'GradAccumCB steps at the last batch of each epoch, so that no gradient crosses an epoch', _fp(lambda: TrainLearner(nn.Linear(2, 1), DataLoaders(iter([]), None), lr=0.1, cbs=[GradAccumCB(2)]).fit(1, valid=False))),
    ('learner.fit + accel.GradAccumCB + accel.CompileCB', "CompileCB(mode='reduce-overhead')", ValueError, 'CUDA graphs reuse the buffers that gradients are summed in', _fp(lambda: _learner(cbs=[GradAccumCB(2), CompileCB('reduce-overhead')]).fit(1, valid=False))),
    ('accel.load_checkpoint', 'truncated file (model untouched)', CheckpointError, 'the file is truncated, corrupt or not a torch file', _ckpt_truncated),
    ('accel.load_checkpoint', 'checkpoint of another model config (model untouched)', CheckpointError, 'saved from another model configuration', _ckpt_other_config),
    ('accel.load_checkpoint', 'EMA state of another shape (nothing loaded)', CheckpointError, 'EMA state has other shapes', _ckpt_other_ema),
    ('accel.load_checkpoint', 'optimizer state of another shape (model untouched)', CheckpointError, "optimizer state 'exp_avg' of parameter 0 has shape (3, 3), the parameter has (1, 2)", _ckpt_other_opt_state),
    ('accel.EMA.copy_to', 'a model with the same parameter shapes but other buffers (model untouched)', ValueError, "EMA: this model's buffers do not match the tracked model's", _ema_other_buffers),
    ('accel.load_checkpoint', 'missing file', FileNotFoundError, 'no checkpoint at', lambda tmp: lambda: load_checkpoint(tmp/'none.pt', _learner())),
    ('accel.CheckpointCB', 'resume into a fit of another length (model untouched)', CheckpointError, 'was planned for 3 epochs', _ckpt_other_length),
    ('accel.save_checkpoint', 'extra holding a module (no file written)', TypeError, 'the checkpoint `extra` holds a value that `weights_only=True` loading refuses', _ckpt_bad_extra),
    ('accel.save_checkpoint', 'extra holding a function over an existing checkpoint (old one kept)', TypeError, 'the checkpoint `extra` holds a value that `weights_only=True` loading refuses', _ckpt_bad_extra_keeps_old),
    # FID / KID
    ('fid.ImageEval.fid', 'uint8 images', TypeError, '`samples` must be float images in [-1, 1]', _fid_call(u8(4, 1, 8, 8))),
    ('fid.ImageEval.fid', 'a single image (C,H,W)', ValueError, '`samples` must be a batch (N, 1, 8, 8)', _fid_call(torch.zeros(1, 8, 8))),
    ('fid.ImageEval.fid', '(N,H,W) without channel axis', ValueError, 'add the channel axis', _fid_call(torch.zeros(4, 8, 8))),
    ('fid.ImageEval.fid', '3 channels for a 1-channel model', ValueError, '`samples` must have 1 channel(s), got 3', _fid_call(torch.zeros(4, 3, 8, 8))),
    ('fid.ImageEval.fid', 'channels-last images (N,H,W,C)', ValueError, 'the channels come last, use `x.permute(0, 3, 1, 2)`', _fid_call(torch.zeros(4, 8, 8, 1))),
    ('fid.ImageEval.fid', 'wrong image size', ValueError, '`samples` images must be 8x8, got 9x9', _fid_call(torch.zeros(4, 1, 9, 9))),
    ('fid.ImageEval.fid', 'empty batch', ValueError, '`samples` is empty', _fid_call(torch.zeros(0, 1, 8, 8))),
    ('fid.ImageEval.fid', 'NaN in images', ValueError, '`samples` contains 1 non-finite value(s)', _fid_call(torch.zeros(4, 1, 8, 8).index_put_((torch.tensor([0]),) * 4, torch.tensor(NAN)))),
    ('fid.ImageEval.fid', 'values in [0, 255]', ValueError, '`samples` values lie in [0, 255], outside the expected [-1, 1]', _fid_call(torch.linspace(0, 255, 256).reshape(4, 1, 8, 8))),
    ('fid.ImageEval.fid', '16 images in [0, 1]', ValueError, 'the upper half of the expected [-1, 1]: images in [0, 1] need `x * 2 - 1`', _fid_call(torch.rand(16, 1, 8, 8))),
    ('fid.ImageEval', 'saved reference statistics of another feature model', ValueError, 'holds features of another feature model', _ref_of_other_model),
    ('fid.frechet_distance', 'NaN in a mean', ValueError, '`mean1` contains 1 non-finite value(s)', _fp(lambda: frechet_distance(torch.tensor([NAN, 0.]), torch.eye(2), torch.zeros(2), torch.eye(2)))),
    ('fid.frechet_distance', 'a covariance with a negative eigenvalue', ValueError, '`cov2` has a negative eigenvalue', _fp(lambda: frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), -torch.eye(2)))),
    ('resnet.random_flip', 'one image (C,H,W) instead of a batch', ValueError, 'random_flip expects an image batch (N, C, H, W)', _fp(lambda: random_flip(torch.zeros(1, 8, 8)))),
    ('resnet.random_erase', 'p=1.5', ValueError, '`p` must be a probability in [0, 1]', _fp(lambda: random_erase(torch.zeros(2, 1, 8, 8), p=1.5))),
    ('fid.ImageEval', 'bs=0', ValueError, '`bs` must be >= 1', _fp(lambda: ImageEval(nn.Flatten(), torch.randn(4, 2), bs=0))),
    ('fid.ImageEval', 'value_range=(1, -1), reversed', ValueError, '`value_range` must be finite (lo, hi) with lo < hi', _fp(lambda: ImageEval(nn.Flatten(), torch.randn(4, 2), value_range=(1, -1)))),
    ('fid.ImageEval', 'ref of an unknown type (a list)', TypeError, '`ref` must be images, features, RefStats or a path', _fp(lambda: ImageEval(nn.Flatten(), [[0.]]))),
    ('fid.ImageEval', 'NaN in reference features', ValueError, '`reference features` contains 8 non-finite value(s)', _fp(lambda: ImageEval(nn.Flatten(), torch.full((4, 2), NAN)))),
    ('fid.check_feats', 'NaN features', ValueError, '`feats` contains', _fp(lambda: check_feats(torch.full((3, 2), NAN)))),
    ('fid.check_feats', '1-D features', ValueError, '`feats` must be a 2-D feature matrix', _fp(lambda: check_feats(torch.zeros(5)))),
    ('fid.fid_from_feats', 'feature counts differ', ValueError, '`a` and `b` must have the same number of features', _fp(lambda: fid_from_feats(torch.randn(5, 2), torch.randn(5, 3)))),
    ('fid.kid_from_feats', 'n_subsets=0', ValueError, 'need n_subsets >= 1', _fp(lambda: kid_from_feats(torch.randn(5, 2), torch.randn(5, 2), n_subsets=0))),
    # k-diffusion samplers
    ('diffusion.ksamplers.sample', 'steps=0', ValueError, '`n` (steps) must be an integer >= 1, got 0', _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), steps=0, device=CPU))),
    ('diffusion.ksamplers.sample', 'steps=-3', ValueError, '`n` (steps) must be an integer >= 1, got -3', _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), steps=-3, device=CPU))),
    ('diffusion.ksamplers.sample', 'sigma_min >= sigma_max', ValueError, '`sigma_min` (80.0) must be smaller than `sigma_max` (1.0)', _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), sigma_min=80., sigma_max=1., device=CPU))),
    ('diffusion.ksamplers.sample', 'sigma_min=0', ValueError, '`sigma_min` must be a finite number > 0', _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), sigma_min=0., device=CPU))),
    ('diffusion.ksamplers.sample', "sigma_min='0.1' (a string)", ValueError, "`sigma_min` must be a finite number > 0, got '0.1'", _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), sigma_min='0.1', device=CPU))),
    ('diffusion.ksamplers.sample', 'eta=-1 (euler_ancestral)', ValueError, '`eta` must be a number in [0.0, inf]', _fp(lambda: sample('euler_ancestral', lambda x, s: x, (2, 1, 4, 4), eta=-1., device=CPU))),
    ('diffusion.ksamplers.sample', 'eta=-1 (dpmpp_2m_sde)', ValueError, '`eta` must be a number in [0.0, inf]', _fp(lambda: sample('dpmpp_2m_sde', lambda x, s: x, (2, 1, 4, 4), eta=-1., device=CPU))),
    ('diffusion.ksamplers.sample', 'eta=NaN (euler_ancestral)', ValueError, '`eta` must be a number', _fp(lambda: sample('euler_ancestral', lambda x, s: x, (2, 1, 4, 4), eta=NAN, device=CPU))),
    ('diffusion.ksamplers.sample', 's_churn=-1 (heun)', ValueError, '`s_churn` must be a number', _fp(lambda: sample('heun', lambda x, s: x, (2, 1, 4, 4), s_churn=-1., device=CPU))),
    ('diffusion.ksamplers.sample', "unknown sampler 'foo'", ValueError, "unknown sampler 'foo'", _fp(lambda: sample('foo', lambda x, s: x, (2, 1, 4, 4), device=CPU))),
    ('diffusion.ksamplers.sample', 'shape with a negative size', ValueError, '`shape` must be a tuple of positive ints', _fp(lambda: sample('euler', lambda x, s: x, (2, -1, 4, 4), device=CPU))),
    ('diffusion.ksamplers.sample', 'bare network returns 1 channel for 3', ValueError, 'the network returned (2, 1, 4, 4) for samples of shape (2, 3, 4, 4)', _fp(lambda: sample('euler', _OneChannel(), (2, 3, 4, 4), steps=2, device=CPU))),
    ('diffusion.ksamplers.sample', 'sigma_data=-0.5 (flips c_out)', ValueError, '`sigma_data` must be a finite number > 0, got -0.5', _fp(lambda: sample('euler', _OneChannel(), (2, 1, 4, 4), sigma_data=-0.5, device=CPU))),
    ('diffusion.ksamplers.sample', 'seed=1.5', TypeError, '`seed` must be an int, got 1.5', _fp(lambda: sample('euler', lambda x, s: x, (2, 1, 4, 4), seed=1.5, device=CPU))),
    ('diffusion.ksamplers.sample_lms', 'order=4.0', ValueError, '`order` must be 1, 2, 3 or 4, got 4.0', _fp(lambda: sample_lms(lambda x, s: x, torch.zeros(2, 1, 4, 4), sigmas_karras(3), order=4.0))),
    ('diffusion.ksamplers.sample', 'denoiser returns 1 channel for 3', ValueError, 'the denoiser returned (2, 1, 4, 4) for samples of shape (2, 3, 4, 4)', _fp(lambda: sample('euler', lambda x, s: x[:, :1], (2, 3, 4, 4), steps=2, device=CPU))),
    ('diffusion.ksamplers.sample', 'denoiser returns 1 channel for 3 (dpmpp_2m)', ValueError, 'the denoiser returned (2, 1, 4, 4)', _fp(lambda: sample('dpmpp_2m', lambda x, s: x[:, :1], (2, 3, 4, 4), steps=2, device=CPU))),
    ('diffusion.ksamplers.sample_euler', 'NaN in x', ValueError, '`x` contains 32 non-finite value(s)', _fp(lambda: sample_euler(lambda x, s: x, torch.full((2, 1, 4, 4), NAN), sigmas_karras(3, device=CPU)))),
    ('diffusion.ksamplers.sample_euler', 'integer x', TypeError, '`x` must be a float tensor', _fp(lambda: sample_euler(lambda x, s: x, torch.zeros(2, 1, 4, 4, dtype=torch.long), sigmas_karras(3, device=CPU)))),
    ('diffusion.ksamplers.sample_euler', 'increasing sigmas', ValueError, '`sigmas` must be strictly decreasing', _fp(lambda: sample_euler(lambda x, s: x, torch.zeros(2, 1, 4, 4), torch.tensor([0., 1., 2.])))),
    ('diffusion.ksamplers.sample_euler', 'NaN in sigmas', ValueError, '`sigmas` must be finite and >= 0', _fp(lambda: sample_euler(lambda x, s: x, torch.zeros(2, 1, 4, 4), torch.tensor([2., NAN, 0.])))),
    ('diffusion.ksamplers.sample_lms', 'order=5', ValueError, '`order` must be 1, 2, 3 or 4', _fp(lambda: sample_lms(lambda x, s: x, torch.zeros(2, 1, 4, 4), sigmas_karras(3, device=CPU), order=5))),
    ('diffusion.karras.noisify_karras', 'sigma=0', ValueError, '`sigma` must hold finite noise levels > 0', _fp(lambda: noisify_karras(torch.zeros(2, 1, 4, 4), sigma=torch.tensor([0., 1.])))),
    ('diffusion.karras.noisify_karras', 'sigma=NaN', ValueError, '`sigma` must hold finite noise levels > 0', _fp(lambda: noisify_karras(torch.zeros(2, 1, 4, 4), sigma=torch.tensor([NAN, 1.])))),
    ('diffusion.ksamplers.sample_euler', 'denoiser output overflows to inf', FloatingPointError, 'non-finite values (NaN or inf) at the end of sampling', _fp(lambda: sample_euler(lambda x, s: x*1e38*1e38, torch.ones(2, 1, 4, 4), sigmas_karras(3, device=CPU)))),
    ('diffusion.karras.sigmas_karras', 'rho=0', ValueError, '`rho` must be a finite number > 0', _fp(lambda: sigmas_karras(5, rho=0., device=CPU))),
    # DDPM / DDIM / cosine
    ('diffusion.ddim.ddim_sigma', 'abar_t and abar_prev swapped (a step towards more noise)', ValueError, 'need 0 < abar_t < abar_prev <= 1 (a step towards less noise), got 0.9, 0.5', _fp(lambda: ddim_sigma(0.9, 0.5))),
    ('diffusion.ddpm.diffusers_unet', 'attention flags for 3 levels, 2 channel counts', ValueError, '`attention` needs one flag per level (2), got 3', _fp(lambda: diffusers_unet((8, 16), norm_groups=4, attention=(False, False, True)))),
    ('diffusion.ddpm.linear_schedule', 'n_steps=0', ValueError, '`n_steps` must be >= 1', _fp(lambda: linear_schedule(0))),
    ('diffusion.ddpm.linear_schedule', 'n_steps=10.5', TypeError, '`n_steps` must be an int, got 10.5', _fp(lambda: linear_schedule(10.5))),
    ('diffusion.ddpm.noisify_ddpm', 'the schedule instead of its abar', TypeError, "pass the schedule's `abar` (`sched.abar`)", _fp(lambda: noisify_ddpm(torch.zeros(2, 1, 4, 4), linear_schedule(10)))),
    ('diffusion.ddim.ddim_timesteps', 'steps=2.5', TypeError, '`steps` must be an int, got 2.5', _fp(lambda: ddim_timesteps(100, 2.5))),
    ('diffusion.cosine.cosine_ddim_sample', 'steps=2.5', TypeError, '`steps` must be an int, got 2.5', _fp(lambda: cosine_ddim_sample(lambda x, t: x, (1, 1, 4, 4), steps=2.5))),
    ('diffusion.cosine.noisify_cosine', 't_max=-1', ValueError, '`t_max` must be a time in (0, 1], got -1.0', _fp(lambda: noisify_cosine(torch.zeros(2, 1, 4, 4), t_max=-1.))),
    ('diffusion.ddpm.linear_schedule', 'beta_min > beta_max', ValueError, 'need 0 < beta_min <= beta_max < 1', _fp(lambda: linear_schedule(10, beta_min=0.1, beta_max=0.01))),
    ('diffusion.ddpm.ddpm_sample', 'clamp=0', ValueError, '`clamp` must be None (no clamp) or a number > 0', _fp(lambda: ddpm_sample(lambda x, t: torch.zeros_like(x), (2, 1, 4, 4), linear_schedule(10), clamp=0.))),
    ('diffusion.cosine.cosine_ddim_sample', 'clamp=NaN', ValueError, '`clamp` must be None (no clamp) or a number > 0', _fp(lambda: cosine_ddim_sample(lambda x, t: torch.zeros_like(x), (2, 1, 4, 4), steps=3, clamp=NAN))),
    ('diffusion.ddpm.ddpm_sample', 'shape (B,H,W) without channels', ValueError, '`shape` must be (B, C, H, W)', _fp(lambda: ddpm_sample(lambda x, t: torch.zeros_like(x), (2, 4, 4), linear_schedule(10)))),
    ('diffusion.ddpm.ddpm_sample', 'model returns another shape', ValueError, 'the model returned (2, 0, 4, 4) for samples of shape (2, 1, 4, 4)', _fp(lambda: ddpm_sample(lambda x, t: x[:, :0], (2, 1, 4, 4), linear_schedule(10)))),
    ('diffusion.ddpm.ddpm_sample', 'model predicts NaN', ValueError, 'the model predicted non-finite noise', _fp(lambda: ddpm_sample(lambda x, t: x * NAN, (2, 1, 4, 4), linear_schedule(10)))),
    ('diffusion.ddpm.noisify_ddpm', 'uint8 images', TypeError, '`x0` must be a float batch', _fp(lambda: noisify_ddpm(u8(2, 1, 4, 4), linear_schedule(10).abar))),
    ('diffusion.ddim.ddim_timesteps', 'steps=0', ValueError, '`steps` must be between 1 and 10, got 0', _fp(lambda: ddim_timesteps(10, 0))),
    ('diffusion.ddim.ddim_timesteps', 'steps > n_steps', ValueError, '`steps` must be between 1 and 10, got 11', _fp(lambda: ddim_timesteps(10, 11))),
    ('diffusion.ddim.ddim_sample', 'eta=-0.1', ValueError, '`eta` must be >= 0', _ddim(eta=-0.1)),
    ('diffusion.ddim.ddim_sample', 'eta=NaN', ValueError, '`eta` must be >= 0', _ddim(eta=NAN)),
    ('diffusion.ddim.ddim_sample', 'eta=inf', ValueError, '`eta` must be >= 0 and finite, got inf', _ddim(eta=float('inf'))),
    ('diffusion.ddim.ddim_sample', 'eta=1.5 (σ would overshoot the next noise level)', ValueError, '`eta` must be at most 1', _ddim(eta=1.5)),
    ('diffusion.ddpm.ddpm_sample', 'generator=1.7 (a float seed; was taken as 1)', TypeError, '`seed` must be an int, got 1.7', _fp(lambda: ddpm_sample(lambda x, t: torch.zeros_like(x), (2, 1, 4, 4), linear_schedule(10), generator=1.7))),
    ('diffusion.noise_level.noisify_noise_level', 'eps=-0.1 (NaN targets)', ValueError, '`eps` must be a number in [0, 0.5)', _fp(lambda: noisify_noise_level(torch.zeros(2, 1, 4, 4), eps=-0.1))),
    ('diffusion.noise_level.noisify_noise_level', 'eps=0.6 (range inverted)', ValueError, 'ᾱ ~ U(eps, 1-eps)), got 0.6', _fp(lambda: noisify_noise_level(torch.zeros(2, 1, 4, 4), eps=0.6))),
    ('diffusion.noise_level.noisify_noise_level', 'uint8 images', TypeError, '`x0` must be a float batch', _fp(lambda: noisify_noise_level(u8(2, 1, 4, 4)))),
    ('diffusion.noise_level.predict_abar', 'a 10-logit classifier as regressor', ValueError, 'must return one logit(ᾱ) per image (2), got (2, 10)', _fp(lambda: predict_abar(nn.Sequential(nn.Flatten(), nn.Linear(16, 10)), torch.zeros(2, 1, 4, 4)))),
    ('diffusion.ddim.ddim_sample', 'shape (B,C,H) of 3 dims', ValueError, '`shape` must be (B, C, H, W)', _ddim(shape=(2, 1, 4))),
    ('diffusion.ddim.ddim_sample', 'no time steps', ValueError, '`ts` must be a 1-D sequence of at least one time step', _fp(lambda: ddim_sample(lambda x, t: x, (2, 1, 4, 4), [], []))),
    ('diffusion.ddim.ddim_sample', 'abars not increasing', ValueError, '`abars` must be finite, in (0, 1], and increase', _fp(lambda: ddim_sample(lambda x, t: x, (2, 1, 4, 4), [9, 5], [0.5, 0.1]))),
    ('diffusion.cosine.cosine_timesteps', 'steps=1', ValueError, '`steps` must be >= 2', _fp(lambda: cosine_timesteps(1))),
    ('diffusion.noise_level.noise_level_ddim_sample', 'model returns 1 channel for 3', ValueError, 'the model returned (2, 1, 4, 4) for samples of shape (2, 3, 4, 4)', _fp(lambda: noise_level_ddim_sample(lambda x, t: x[:, :1], nn.Sequential(nn.Flatten(), nn.Linear(48, 1)), (2, 3, 4, 4), steps=2))),
    ('diffusion.cosine.cosine_ddim_sample', 'steps=0', ValueError, '`steps` must be >= 2', _fp(lambda: cosine_ddim_sample(lambda x, t: torch.zeros_like(x), (2, 1, 4, 4), steps=0))),
    ('diffusion.cosine.noisify_cosine', 'uint8 images', TypeError, '`x0` must be a float batch', _fp(lambda: noisify_cosine(u8(2, 1, 4, 4)))),
    # conditional models and guidance
    ('models.unet.EmbUNetModel', 'class label >= n_classes + 1', ValueError, 'class labels `c` must be in 0..2 (or 3, the null class)', _unet_call(torch.tensor([0, 4]))),
    ('models.unet.EmbUNetModel', 'negative class label', ValueError, 'class labels `c` must be in 0..2', _unet_call(torch.tensor([0, -1]))),
    ('models.unet.EmbUNetModel', 'float class labels', TypeError, 'class labels `c` must be an integer tensor', _unet_call(torch.tensor([0., 1.]))),
    ('models.unet.EmbUNetModel', 'class labels of another batch size', ValueError, 'class labels `c` must have shape (2,)', _unet_call(torch.tensor([0, 1, 2]))),
    ('models.unet.EmbUNetModel', 'integer images', TypeError, '`x` must be a floating-point tensor', lambda tmp: lambda: _unet()(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.rand(2))),
    ('models.unet.EmbUNetModel', '3 channels for in_channels=1', ValueError, '`x` must be a batch of images (B, 1, H, W)', lambda tmp: lambda: _unet()(torch.zeros(2, 3, 8, 8), torch.rand(2))),
    ('models.unet.EmbUNetModel', 't of another batch size', ValueError, '`t` must have shape (2,)', lambda tmp: lambda: _unet()(torch.zeros(2, 1, 8, 8), torch.rand(3))),
    ('models.unet.EmbUNetModel', 'one t for a batch in training mode (BatchNorm1d erased it)', ValueError, 'one `t` for a batch of 2 in training mode', lambda tmp: lambda: _unet().train()(torch.zeros(2, 1, 8, 8), 0.5)),
    ('models.simple_diffusion.SimpleDiffusion', 'img_size=0', ValueError, '`img_size` must be a positive int or a pair (H, W) of positive ints, got 0', _fp(lambda: SimpleDiffusion(nfs=(8, 16), n_mids=1, mid_attn_chans=8, img_size=0))),
    ('models.layers.Dropout', "p='0.5' (a string)", ValueError, "dropout probability `p` must be a real number in [0, 1), got '0.5'", _fp(lambda: Dropout('0.5'))),
    ('latents.latent_dls', 'scale=NaN (a 1/std gone wrong)', ValueError, 'the latent `scale` must be a finite number > 0', _fp(lambda: latent_dls(torch.zeros(4, 2, 2, 2), torch.zeros(2, 2, 2, 2), NAN, bs=2, device=CPU))),
    ('latents.latent_dls', 'a per-channel scale of the wrong length', ValueError, 'the latent `scale` must be a number or one value per channel (shape (2,)), got shape (3,)', _fp(lambda: latent_dls(torch.zeros(4, 2, 2, 2), torch.zeros(2, 2, 2, 2), [1., 1., 1.], bs=2, device=CPU))),
    ('latents.latent_dls', 'fewer labels than latents', ValueError, '`labels[0]` must be integer labels of shape (4,), one per item', _fp(lambda: latent_dls(torch.zeros(4, 2, 2, 2), torch.zeros(2, 2, 2, 2), 1., bs=2, device=CPU, labels=(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long))))),
    ('latents.latent_classifier', 'nbks without one entry per level', ValueError, '`nbks` needs one entry per level after the stem', _fp(lambda: latent_classifier(3, nfs=(4, 8, 16), nbks=(1,)))),
    ('models.unet.EmbUNetModel', 'n_classes=0', ValueError, '`n_classes` must be >= 1 or None', _fp(lambda: EmbUNetModel(1, 1, nfs=(8,), n_classes=0))),
    ('diffusion.guidance.GuidedModel', 'label == n_classes (the null class)', ValueError, '`labels` must be class indices in 0..2', lambda tmp: lambda: GuidedModel(_unet(), 3)),
    ('diffusion.guidance.GuidedModel', 'negative label', ValueError, '`labels` must be class indices in 0..2', lambda tmp: lambda: GuidedModel(_unet(), [-1])),
    ('diffusion.guidance.GuidedModel', 'float labels', TypeError, '`labels` must be an integer tensor', lambda tmp: lambda: GuidedModel(_unet(), torch.tensor([1.]))),
    ('diffusion.guidance.GuidedModel', 'boolean labels', TypeError, '`labels` must be integer class indices, got booleans', lambda tmp: lambda: GuidedModel(_unet(), True)),
    ('diffusion.guidance.GuidedModel', 'empty labels', ValueError, '`labels` is empty', lambda tmp: lambda: GuidedModel(_unet(), [])),
    ('diffusion.guidance.GuidedModel', 'scale=NaN', ValueError, '`scale` must be a finite number', lambda tmp: lambda: GuidedModel(_unet(), 1, scale=NAN)),
    ('diffusion.guidance.GuidedModel', 'unconditional model', ValueError, '`model` is not class-conditional', _fp(lambda: GuidedModel(EmbUNetModel(1, 1, nfs=(8,), attn_chans=0), 1))),
    ('diffusion.guidance.cfg_mix', 'predictions of different shapes', ValueError, 'differ in shape: (2, 3) vs (3, 3)', _fp(lambda: cfg_mix(torch.zeros(2, 3), torch.zeros(3, 3), 2.))),
    ('diffusion.ddpm.diffusers_unet', 'n_classes=0', ValueError, '`n_classes` must be an int >= 1 or None', _fp(lambda: _dunet(0))),
    ('diffusion.ddpm.DiffusersUNet', 'labels for an unconditional model', ValueError, 'class labels `c` given to an unconditional model', _fp(lambda: _dunet()(torch.zeros(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1])))),
    ('diffusion.ddpm.DiffusersUNet', 'label 11 for 10 classes', ValueError, 'class labels `c` must be in 0..9 (or 10, the null class)', _fp(lambda: _dunet(10)(torch.zeros(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 11])))),
    ('diffusion.ddpm.DiffusersUNet', 'float labels', ValueError, 'class labels `c` must be a long tensor of shape (2,)', _fp(lambda: _dunet(10)(torch.zeros(2, 1, 8, 8), torch.rand(2), torch.tensor([0., 1.])))),
    ('cli.sample_to_files', 'labels for an unconditional checkpoint', ValueError, 'this checkpoint is unconditional: `labels` and `guidance`', _checkpoint(labels=[1])),
    ('cli.sample_to_files', 'guidance for an unconditional checkpoint', ValueError, 'this checkpoint is unconditional', _checkpoint(guidance=3.)),
    ('cli.sample_to_files', 'unknown class 10 of 10', ValueError, '`labels` must be class indices in 0..9, got values from 10 to 10', _checkpoint(10, labels=[10])),
    ('cli.sample_to_files', 'guidance=-1', ValueError, '`guidance` must be a finite number >= 0', _checkpoint(10, guidance=-1.)),
    ('cli.make_sampler', 'guidance for an unconditional model', ValueError, '`guidance` (2.0) needs a class-conditional model', _fp(lambda: make_sampler(_dunet(), guidance=2.))),
    ('cli.train_diffusion', 'guidance without conditional=True', ValueError, '`guidance` needs `conditional=True`', lambda tmp: lambda: train_diffusion(tmp/'run', quick=True, guidance=2.)),
    ('cli.train_diffusion', 'p_uncond=1.5', ValueError, '`p_uncond` must be in [0, 1]', lambda tmp: lambda: train_diffusion(tmp/'run', quick=True, conditional=True, p_uncond=1.5)),
    ('cli.train_diffusion', 'p_uncond without conditional (it would be dropped)', ValueError, '`p_uncond` needs `conditional=True`', lambda tmp: lambda: train_diffusion(tmp/'run', quick=True, p_uncond=0.5)),
    ('cli.train_diffusion', 'sample_steps=0', ValueError, '`sample_steps` must be >= 1, got 0', lambda tmp: lambda: train_diffusion(tmp/'run', quick=True, sample_steps=0)),
    ('cli.train_diffusion', 'epochs=0', ValueError, '`epochs` must be >= 1, got 0', lambda tmp: lambda: train_diffusion(tmp/'run', quick=True, epochs=0)),
    ('cli.train_diffusion', 'more DDIM steps than the linear schedule has (before training)', ValueError, '`steps` must be between 1 and 100, got 500', _before_training(schedule='linear', sample_steps=500)),
    ('cli.train_diffusion', 'sample_steps=1 for the cosine grid (before training)', ValueError, '`steps` must be >= 2', _before_training(sample_steps=1)),
    ('cli.train_diffusion', "precision='bf61' (before any work)", ValueError, "`precision` must be 'bf16', 'fp16' or None, got 'bf61'", _before_training(precision='bf61')),
    ('diffusion.ddpm.ddpm_learner', "precision='bf61' on a CPU (was accepted off CUDA)", ValueError, "`precision` must be 'bf16', 'fp16' or None, got 'bf61'",
     _fp(lambda: ddpm_learner(nn.Linear(1, 1), None, noisify_cosine, precision='bf61', progress=False, device='cpu'))),
    ('latents.conv_vae_learner', "precision='fp61' on a CPU (was accepted, and 'fp16' trained in bf16)", ValueError, "`precision` must be 'bf16', 'fp16' or None, got 'fp61'",
     _fp(lambda: conv_vae_learner(nn.Linear(1, 1), None, precision='fp61', progress=False, device='cpu'))),
    ('audio_diffusion.diffusion_learner', "precision='bf61' on a CPU (was accepted off CUDA)", ValueError, "`precision` must be 'bf16', 'fp16' or None, got 'bf61'",
     _fp(lambda: diffusion_learner(nn.Linear(1, 1), None, 0.5, precision='bf61', progress=False, device='cpu'))),
    ('distributed.load_samples', '.npz archive instead of .npy', ValueError, 'is not a .npy sample file (a zip archive, e.g. an .npz of several arrays)', _npz_samples),
    ('distributed.load_samples', 'a JSON file', ValueError, 'is not a .npy sample file (text, JSON?)', _text_file('metrics.json', load_samples)),
    ('cli.sample_to_files', 'a JSON file as the checkpoint', ValueError, 'is not a safetensors weights file',
     _text_file('metrics.json', lambda f: sample_to_files(f, f.parent/'out', n=2, progress=False))),
    ('cli.fid_of_samples', 'one PNG image instead of their folder', ValueError, 'is one image: pass the folder of sample PNGs', _one_png),
    ('cli.train_diffusion', 'an output folder that holds an earlier run (nothing overwritten)', FileExistsError,
     'holds an earlier run (model.safetensors, metrics.json): pass `force=True`', _earlier_run),
    ('accel.EMA.swap', 'a model other than the tracked one', ValueError, "EMA.swap exchanges the tracked model's weights only",
     _fp(lambda: _ema_tracking().swap(nn.Linear(2, 2)))),
    ('accel.EMA.update', 'inside `average()` (training the average)', RuntimeError, 'would average the average', _ema_update_in_average),
    ('cli.class_accuracy', '3 labels for 2 images', ValueError, '3 labels for 2 images', _fp(lambda: class_accuracy(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1, 2])))),
    ('cli.fid_of_samples', 'labels.npy of floats', ValueError, 'must hold a vector of integer class labels', _float_labels),
    ('diffusion.guidance.GuidedModel', '3 labels for a batch of 2', ValueError, '3 labels for a batch of 2 images', lambda tmp: lambda: GuidedModel(_unet(), [0, 1, 2])(torch.zeros(2, 1, 8, 8), torch.rand(2))),
    ('diffusion.guidance.DropLabelCB', 'p=1.5', ValueError, '`p` must be in [0, 1]', _fp(lambda: DropLabelCB(1.5, null_class=10))),
    # VAE and latent caches
    ('vae.Autoencoder', 'unflattened images (B,1,28,28)', ValueError, 'expected flat inputs (B, 784)', _fp(lambda: Autoencoder()(torch.zeros(2, 1, 28, 28)))),
    ('vae.VAE', 'unflattened images (B,1,28,28)', ValueError, 'expected flat inputs (B, 784)', _fp(lambda: VAE()(torch.zeros(2, 1, 28, 28)))),
    ('vae.kld_loss', 'a plain tensor instead of (recon, mu, logvar)', TypeError, "kld_loss needs the VAE's output (recon, mu, logvar)", _fp(lambda: kld_loss(torch.zeros(2, 4), torch.zeros(2, 4)))),
    ('latents.encode_images', 'float images', TypeError, '`images` must be uint8', _fp(lambda: next(encode_images(nn.Identity(), torch.zeros(2, 3, 8, 8))))),
    ('latents.encode_images', 'bs=0', ValueError, '`bs` must be a positive int, got 0', _fp(lambda: next(encode_images(nn.Identity(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), bs=0)))),
    ('latents.write_latent_cache', 'batch of the wrong shape (no file, no temp)', ValueError, 'does not fit latents of shape (4, 2, 2, 2)', _cache_write([torch.zeros(4, 3, 2, 2)])),
    ('latents.write_latent_cache', 'NaN latents (no file, no temp)', ValueError, '`latents` contains', _cache_write([torch.full((4, 2, 2, 2), NAN)])),
    ('latents.write_latent_cache', 'fewer latents than shape says (no file, no temp)', ValueError, 'got 2 latents, expected 4', _cache_write([torch.zeros(2, 2, 2, 2)])),
    ('latents.write_latent_cache', 'bad batch over an existing cache (old one kept)', ValueError, 'does not fit latents of shape (4, 2, 2, 2)', _cache_write([torch.zeros(5, 2, 2, 2)], existing=True)),
    ('latents.open_latent_cache', 'truncated cache file', CorruptCacheError, 'truncated', _cache_truncated),
    ('latents.open_latent_cache', 'cache of another VAE (stale key)', StaleCacheError, "stale, the VAE's weights changed", _cache_stale),
    ('latents.read_cache_header', 'header that is not JSON', CorruptCacheError, 'unreadable header', _cache_bad_header),
    ('latents.ConvVAE.encode', 'uint8 images', TypeError, 'the VAE takes float images in [-1, 1] (see `images_to_float`), got torch.uint8', _fp(lambda: _tiny_vae().encode(u8(2, 1, 8, 8)))),
    ('latents.open_latent_cache', 'damaged latents (checksum)', CorruptCacheError, 'do not match their checksum', _cache_damaged),
    # images
    ('images.load_image_set', 'missing .npz path', MissingDataError, 'no such .npz file or folder of images', lambda tmp: lambda: load_image_set(str(tmp/'none.npz'))),
    ('images.load_image_set', 'source of an unknown type (int)', TypeError, '`source` must be a name, a path or a Hugging Face data set', _fp(lambda: load_image_set(3))),
    ('images.load_image_set', 'limit=(0, 0)', ValueError, '`limit` must give positive sizes', _fp(lambda: load_image_set('clothing64', limit=(0, 0)))),
    ('images.load_image_set', 'size=0', ValueError, '`size` must be >= 1, got 0', _fp(lambda: load_image_set('clothing64', size=0))),
    ('images.load_image_set', 'sample=True for a set without a shipped sample', ValueError, '`sample=True` needs a named set with a shipped sample', _fp(lambda: load_image_set('cifar10', sample=True))),
    ('images.load_image_set', 'a DatasetDict of two splits, neither train nor test', ValueError, "a DatasetDict needs a 'train' split and a 'test' (or 'validation') split, or a single split, got ['a', 'b']", _two_odd_splits),
    ('images.ImageFeatures', 'a model that is not an image_classifier', TypeError, '`model` must be an `image_classifier`', _fp(lambda: ImageFeatures(nn.Linear(2, 2)))),
    ('images.read_image_folder', 'empty folder', MissingDataError, 'no image files', _empty_folder(lambda d: read_image_folder(d, progress=False))),
    ('images.resize_images', 'float images', ValueError, 'expected uint8 images (N, C, H, W)', _fp(lambda: resize_images(torch.zeros(2, 3, 8, 8), 4))),
    ('images.images_to_float', 'float images', TypeError, 'expected uint8 images', _fp(lambda: images_to_float(torch.zeros(2, 3, 8, 8)))),
    ('images.class_balanced_split', 'test_frac=1', ValueError, '`test_frac` must be in (0, 1)', _fp(lambda: class_balanced_split(torch.tensor([0, 1, 0, 1]), test_frac=1.))),
    ('images.class_balanced_split', 'float labels (1.7 was class 1)', TypeError, '`labels` must be integer class labels, got torch.float64', _fp(lambda: class_balanced_split(np.array([0., 1.7, 0., 1.])))),
    ('images.image_classifier', 'n_classes=0', ValueError, '`n_classes` must be >= 1', _fp(lambda: image_classifier(0))),
    # audio
    ('audio.load_fsdd', 'sample_rate=16000 with resample=False', ValueError, 'the FSDD is recorded at 8000 Hz, 16000 Hz asked for', _fp(lambda: load_fsdd(sample_rate=16000, resample=False))),
    ('audio.load_fsdd', "split='valid'", ValueError, "`split` must be 'train', 'test' or 'all'", _fp(lambda: load_fsdd('valid'))),
    ('audio.load_fsdd', 'sample_rate=0', ValueError, '`sample_rate` must be >= 1, got 0', _fp(lambda: load_fsdd(sample_rate=0))),
    ('audio.fsdd_dls', 'limit=(50,)', ValueError, '`limit` must be None, a positive int or a pair', _fp(lambda: fsdd_dls(limit=(50,)))),
    ('audio.match_rate', 'other rate with resample=False', ValueError, 'clip: sample rate 16000 Hz, expected 8000 Hz', _fp(lambda: match_rate(torch.zeros(10), 16000, 8000, resample=False))),
    ('audio.load_wav_folder', 'missing folder', MissingDataError, 'does not exist', lambda tmp: lambda: load_wav_folder(tmp/'none')),
    ('audio.load_wav_folder', 'folder without .wav files', MissingDataError, "no files matching '*.wav'", _empty_folder(load_wav_folder)),
    ('audio.write_wav', 'NaN in the waveform (no file written)', ValueError, 'the waveform has non-finite values', _wav_nan),
    ('audio.write_wav', 'sample_rate=0 (no file written)', ValueError, '`sample_rate` must be a positive int, got 0', lambda tmp: lambda: write_wav(tmp/'a.wav', torch.zeros(100), 0)),
    ('audio.AudioClips', 'labels of another length', ValueError, '1 labels for 2 clips', _fp(lambda: AudioClips([torch.zeros(10)]*2, 8000, torch.tensor([0])))),
    ('audio.load_hf_audio', 'a row with neither bytes, path nor array', CorruptDataError, 'row 0: the audio value is neither raw bytes/path nor a decoded array', _hf_audio_empty_row),
    ('audio.load_hf_audio', 'a hub name that cannot be loaded (offline)', MissingDataError, "Hugging Face data set 'nobody/no-such-audio' (split 'train') could not be loaded", _fp(lambda: load_hf_audio('nobody/no-such-audio', 8000))),
    ('audio_diffusion.digit_features', 'a model that is not a digit_classifier', TypeError, '`model` must be a `digit_classifier`', _fp(lambda: digit_features(nn.Linear(2, 2)))),
    ('audio.fix_length', 'n_samples=0', ValueError, '`n_samples` must be >= 1', _fp(lambda: fix_length([torch.zeros(10)], 0))),
    ('audio.fix_length', '2-D clip in a list', ValueError, 'a waveform must be 1-D', _fp(lambda: fix_length([torch.zeros(2, 10)], 10))),
    ('audio.MelSpec', 'hop_length > n_fft', ValueError, '`hop_length` (600) must not exceed `n_fft` (512)', _fp(lambda: MelSpec(n_fft=512, hop_length=600))),
    ('audio.MelSpec', 'db_range reversed', ValueError, '`db_range` must be (low, high) with low < high', _fp(lambda: MelSpec(db_range=(0., -80.)))),
    ('audio.MelSpec.spectrogram', 'waveforms of the wrong length', ValueError, 'waveforms must be (B, ', _fp(lambda: MelSpec().spectrogram(torch.zeros(2, 10)))),
    ('audio.MelSpec.spectrogram', 'integer waveforms', TypeError, 'waveforms must be floats', _fp(lambda: MelSpec().spectrogram(torch.zeros(2, MelSpec().n_samples, dtype=torch.int16)))),
    ('audio.MelSpec.waveform', 'spectrograms of the wrong shape', ValueError, 'spectrograms must be (B, 1, ', _fp(lambda: MelSpec().waveform(torch.zeros(2, 1, 8, 8)))),
    ('audio.MelSpec.waveform', 'n_iter=0 (was silently the default 32)', ValueError, '`n_iter` must be an int >= 1, got 0', _fp(lambda: MelSpec().waveform(torch.zeros(2, 1, 64, 64), n_iter=0))),
    ('audio.write_wav', 'a batch (2, L) (was written as one long clip)', ValueError, '`wave` must be one waveform (L,), got shape (2, 100)', lambda tmp: lambda: write_wav(tmp/'a.wav', torch.zeros(2, 100), 8000)),
    ('audio.write_wav', 'peak=2 (clipped silently)', ValueError, '`peak` must be in (0, 1]', lambda tmp: lambda: write_wav(tmp/'a.wav', torch.zeros(100), 8000, peak=2.)),
    ('audio.MelSpec', 'hop_length=-5', ValueError, '`hop_length` must be >= 1, got -5', _fp(lambda: MelSpec(hop_length=-5))),
    ('audio.MelSpec', 'n_iter=2.5', TypeError, '`n_iter` must be an int, got 2.5', _fp(lambda: MelSpec(n_iter=2.5))),
    ('audio.MelSpec', 'n_frames=1 (no samples)', ValueError, '`n_frames` must be >= 2, got 1', _fp(lambda: MelSpec(n_frames=1))),
    ('audio.MelSpec', 'f_max above Nyquist', ValueError, 'need 0 <= f_min < f_max <= sample_rate/2 (4000 Hz)', _fp(lambda: MelSpec(f_max=10000.))),
    ('audio.MelSpec.spectrogram', 'NaN waveform (gave NaN pixels)', ValueError, '`waveforms` contains', _fp(lambda: MelSpec().spectrogram(torch.full((MelSpec().n_samples,), NAN)))),
    ('audio.MelSpec.waveform', 'NaN spectrogram', ValueError, '`spectrograms` contains', _fp(lambda: MelSpec().waveform(torch.full((1, 1, 64, 64), NAN)))),
    ('audio_diffusion.generate_spectrograms', 'n=5 with 2 digits (n was ignored)', ValueError, '`n` (5) and the 2 `digits` disagree', _fp(lambda: generate_spectrograms(_Conditional(), n=5, digits=[1, 2]))),
    ('data.show_images', '5 images on a 1x2 grid (3 were dropped)', ValueError, 'a 1x2 grid has room for 2 of the 5 images', _fp(lambda: mdata.show_images(torch.rand(5, 1, 4, 4), nrows=1, ncols=2))),
    ('cli.save_image_grid', 'RGB images (only red was kept)', ValueError, '`images` must be a non-empty grey batch (N, 1, H, W), got (2, 3, 4, 4)', lambda tmp: lambda: save_image_grid(torch.zeros(2, 3, 4, 4), tmp/'g.png')),
    ('cli.save_image_grid', 'ncols=0', ValueError, '`ncols` must be >= 1, got 0', lambda tmp: lambda: save_image_grid(torch.zeros(2, 1, 4, 4), tmp/'g.png', ncols=0)),
    ('cli.load_sample_images', 'a PNG folder holding a file that is not an image', ValueError, '00001.png: cannot be read as a grey image', _png_folder_with_text),
    ('cli.fid_of_samples', '28x28 sample file (refused before the classifier is trained)', ValueError, '`samples` images must be 32x32, got 28x28', _npy_28),
    ('audio_diffusion.digit_accuracy', 'labels of another length (was a broadcast error)', ValueError, '`digits` must hold one label per image (3,), got (2,)', _fp(lambda: digit_accuracy(nn.Linear(1, 10), torch.zeros(3, 1), torch.tensor([1, 2])))),
    ('audio.spectrogram_images', 'clips at 8 kHz for a 16 kHz MelSpec', ValueError, 'clips are at 8000 Hz but the spectrogram expects 16000 Hz', _clips_8k),
]


def _snapshot(folder: Path) -> dict:
    "Every file under `folder` (hidden temp files included) with its SHA-256."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob('*')) if p.is_file()}

def _ids(): return [f"{i:03d}-{e}-{b}".replace(' ', '_') for i, (e, b, *_) in enumerate(ROWS)]


@pytest.mark.parametrize('row', ROWS, ids=_ids())
def test_bad_input(row, tmp_path, monkeypatch):
    entry, bad, exc, fragment, call = row
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    torch.manual_seed(0)
    made = call(tmp_path, monkeypatch) if call.__code__.co_argcount == 2 else call(tmp_path)
    thunk, post = made if isinstance(made, tuple) else (made, None)
    before = _snapshot(tmp_path)
    with pytest.raises(exc) as info:
        thunk()
    assert fragment in str(info.value), f"{entry} / {bad}: message {str(info.value)!r} lacks {fragment!r}"
    assert _snapshot(tmp_path) == before, f"{entry} / {bad}: files changed: {before} -> {_snapshot(tmp_path)}"
    if post is not None: assert post(), f"{entry} / {bad}: the refused call changed the model"


DOC = Path(__file__).resolve().parents[1]/'docs'/'bad_input.md'

def _cell(s: str) -> str: return s.replace('|', '\\|')

def table() -> str:
    "The markdown table of `ROWS` (docs/bad_input.md embeds it verbatim; regenerate it with `python tests/test_bad_input.py`)."
    lines = ['| entry point | bad input | error type | message fragment |', '|---|---|---|---|']
    lines += [f"| `{e}` | {_cell(b)} | `{x.__name__}` | `` {_cell(f)} `` |" for e, b, x, f, _ in ROWS]
    return '\n'.join(lines) + '\n'

def test_doc_table_matches_rows():
    "docs/bad_input.md holds exactly the table of the rows tested here."
    assert table() in DOC.read_text(), "docs/bad_input.md is out of date: run `python tests/test_bad_input.py`"

if __name__ == '__main__':  # rewrite the table in docs/bad_input.md
    text = DOC.read_text()
    start, end = text.index('<!-- table start -->') + len('<!-- table start -->\n'), text.index('<!-- table end -->')
    DOC.write_text(text[:start] + table() + text[end:])
