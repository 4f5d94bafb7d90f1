"""What bench/latent_fid.py and bench/audio_eval.py put in their results JSON, phase by phase (training replaced by stand-ins).

Every heavy step (data loading, training, sampling, FID) is replaced in the script's namespace by a stand-in that records
how it was called and returns known values, so the tests check the bookkeeping: which phase wrote what, the seeds,
sample counts, quick vs full configurations, and the figures derived from what the steps return.
"""
import json, math
from pathlib import Path
from types import SimpleNamespace
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.usefixtures('one_thread')


# ---------------------------------------------------------------- bench/latent_fid.py

N_TRAIN, N_TEST, LAT_SHAPE = 10, 4, (4, 2, 2)
FLOPS = {'latent': 1000, 'pixel': 3000, 'vae': 500}


class Loader(list):
    "A stand-in training loader: only its length (batches per epoch) matters."


class FakeLearn:
    def __init__(self, log, kind, n_batches, history):
        self.log, self.kind = log, kind
        self.dls = SimpleNamespace(train=Loader(range(n_batches)))
        self.metrics = SimpleNamespace(history=history)
    def fit(self, epochs): self.log.append((self.kind + '_fit', epochs))


class FakeIE:
    "FID evaluator stand-in: the k-th scored set gets FID 10*(k+1), KID (k+1)/100 and n = len(x) + 1000."
    def __init__(self, log): self.log, self.seen = log, []
    def scores(self, x):
        self.seen.append(x.clone()); k = len(self.seen)
        return dict(n=len(x) + 1000, fid=10.*k, kid=k/100)


def _latent_stubs(bench, monkeypatch, tmp_path):
    "Replace latent_fid's heavy steps; returns (log of calls, list of JSON snapshots written, the FakeIE)."
    log, snaps = [], []
    ie = FakeIE(log)
    # train image i is filled with the value 10*i (test images: 200 + i), so a picked subset can be read back
    train_x = torch.stack([torch.full((3, 8, 8), 10*i, dtype=torch.uint8) for i in range(N_TRAIN)])
    test_x = torch.stack([torch.full((3, 8, 8), 200 + i, dtype=torch.uint8) for i in range(N_TEST)])
    imset = SimpleNamespace(source=Path('/d/clothing64.npz'), shape=(3, 8, 8), train_x=train_x, test_x=test_x, n_classes=2,
                            train_y=torch.arange(N_TRAIN) % 2, test_y=torch.arange(N_TEST) % 2)
    lat = torch.arange(N_TRAIN*math.prod(LAT_SHAPE), dtype=torch.float32).reshape(N_TRAIN, *LAT_SHAPE)
    lat_test = -torch.ones(N_TEST, *LAT_SHAPE)

    def load_image_set(source, data_dir, size, limit, seed, allow_sample):
        assert isinstance(allow_sample, bool)   # `--quick`, never None (a full run never takes the sample)
        log.append(('load', dict(source=source, size=size, limit=limit, seed=seed))); return imset
    def train_image_classifier(im, epochs, nfs, seed, progress):
        log.append(('clf', dict(epochs=epochs, nfs=nfs, seed=seed))); return 'clf', 0.75
    def image_fid_eval(clf, x):
        log.append(('ie', x)); return ie
    def set_seed(s): log.append(('seed', s))
    def conv_vae(**kw): log.append(('conv_vae', kw)); m = nn.Linear(2, 3); m.kind = 'vae'; return m   # 9 parameters
    def ConvVAELoss(kl, net, w): log.append(('vae_loss', dict(kl=kl, net=net, w=w))); return 'loss'
    def perceptual_net(clf): return 'pnet(' + clf + ')'
    def image_dls(im, bs, seed): log.append(('image_dls', dict(bs=bs, seed=seed))); return SimpleNamespace(train=Loader(range(3 if bs == 32 else 5)))
    def conv_vae_learner(vae, dls, loss, lr, progress):
        log.append(('vae_learner', dict(lr=lr, loss=loss))); return FakeLearn(log, 'vae', len(dls.train), [{'loss': 1.}])
    def reconstruct(vae, x): log.append(('reconstruct', x)); return bench.images_to_float(x) + 0.1
    def cached_latents(path, vae, x, progress):
        log.append(('cache', (Path(path).name, x))); return lat if len(x) == N_TRAIN else lat_test
    def latent_stats(l): log.append(('stats', l)); return 0.5, 4.0
    def EmbUNetModel(cin, cout, **cfg):
        log.append(('unet', dict(cin=cin, cout=cout, **cfg)))
        m = nn.Linear(1, 2 if cin == 3 else 3); m.kind = 'pixel' if cin == 3 else 'latent'; return m   # 4 / 6 parameters
    def latent_dls(l, lt, scale, bs, seed, shift=0., labels=None):   # the classifier's call is logged apart
        log.append(('latent_dls' if labels is None else 'latent_cls_dls', dict(l=l, lt=lt, scale=scale, bs=bs, seed=seed, shift=shift, labels=labels)))
        return SimpleNamespace(train=Loader(range(7)))
    def latent_channel_stats(l): log.append(('channel_stats', l)); return torch.tensor([1., 2., 3., 4.]), torch.tensor([0.5, 2., 4., 8.])
    def train_latent_classifier(dls, n_classes, epochs, nfs, nbks, seed, progress):
        log.append(('lclf', dict(dls=dls, n_classes=n_classes, epochs=epochs, nfs=nfs, nbks=nbks, seed=seed))); return 'lclf', 0.625
    def train_flops_per_image(model, shape, time_input=True):
        assert time_input == (model.kind != 'vae'); log.append(('flops', (model.kind, tuple(shape)))); return FLOPS[model.kind]
    def karras_learner(model, dls, sigma_data, lr, progress):
        log.append(('karras', dict(kind=model.kind, sigma_data=sigma_data, lr=lr)))
        return FakeLearn(log, model.kind, len(dls.train), [{'loss': 9.}, {'loss': 2.}])
    def sample_batches(model, n, shape, sd, sampler, steps, bs, seed, progress):
        log.append(('sample', dict(kind=model.kind, n=n, shape=tuple(shape), sd=sd, sampler=sampler, steps=steps, bs=bs, seed=seed)))
        return torch.full((n, *shape), 3.)          # out of [-1, 1]: the pixel samples must be clamped
    def decode_latents(vae, l, scale): log.append(('decode', dict(l=l, scale=scale))); return torch.full((len(l), 3, 8, 8), 0.25)
    real_write = bench.write_json
    def write_json(res, out): snaps.append(json.loads(json.dumps(res, default=str))); real_write(res, out)
    for k, v in dict(load_image_set=load_image_set, train_image_classifier=train_image_classifier, image_fid_eval=image_fid_eval,
                     set_seed=set_seed, conv_vae=conv_vae, ConvVAELoss=ConvVAELoss, perceptual_net=perceptual_net,
                     image_dls=image_dls, conv_vae_learner=conv_vae_learner, reconstruct=reconstruct,
                     cached_latents=cached_latents, latent_stats=latent_stats, EmbUNetModel=EmbUNetModel, latent_dls=latent_dls,
                     train_flops_per_image=train_flops_per_image, karras_learner=karras_learner, sample_batches=sample_batches,
                     decode_latents=decode_latents, write_json=write_json, latent_channel_stats=latent_channel_stats,
                     train_latent_classifier=train_latent_classifier).items():
        monkeypatch.setattr(bench, k, v)
    return log, snaps, ie


def _run_latent(load_script, monkeypatch, tmp_path, *extra):
    bench = load_script('bench/latent_fid.py')
    log, snaps, ie = _latent_stubs(bench, monkeypatch, tmp_path)
    out = tmp_path/'latent.json'
    bench.main(['--quick', '--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress', *extra])
    return bench, log, snaps, ie, json.loads(out.read_text())


def _calls(log, name): return [v for k, v in log if k == name]


def test_latent_fid_partial_files_grow_one_phase_at_a_time(tmp_path, load_script, monkeypatch):
    "latent_fid writes after the classifier, the VAE, each U-Net and each FID row, each file holding only finished phases."
    _, _, snaps, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    keys = [set(s) - {'command', 'quick', 'full_nets', 'started', 'device', 'torch', 'python', 'config', 'sampler', 'sampling_steps', 'data'}
            for s in snaps]
    assert keys[0] == {'fid_classifier'}
    assert keys[1] == {'fid_classifier', 'vae'}
    assert keys[2] == {'fid_classifier', 'vae', 'latents', 'latent_unet'}
    assert keys[3] == keys[2] | {'pixel_unet', 'compute'}
    assert [len(s['fid']) for s in snaps[4:8]] == [1, 2, 3, 4] and all('finished' not in s for s in snaps[:8])
    assert len(snaps) == 9 and 'finished' in snaps[8] and snaps[8] == json.loads(json.dumps(res))
    assert 'latent_classifier' not in snaps[7] and 'latent_classifier' in snaps[8]   # the last phase, after every FID row
    assert 'train_flops' in snaps[2]['latent_unet'] and 'train_flops' in snaps[3]['pixel_unet']


def test_latent_fid_rows_are_the_four_image_sets_in_order(tmp_path, load_script, monkeypatch):
    "The FID table has real, VAE-reconstructed, latent and pixel rows with the evaluator's n, FID, KID; sampling time only for samples."
    _, _, _, ie, res = _run_latent(load_script, monkeypatch, tmp_path)
    rows = res['fid']
    assert [r['images'] for r in rows] == ['real training images', 'VAE reconstructions (training images)',
                                           'latent diffusion samples', 'pixel diffusion samples (same U-Net training FLOPs)']
    assert [r['n'] for r in rows] == [N_TEST + 1000]*4        # the evaluator's n, not the script's
    assert [r['fid'] for r in rows] == [10., 20., 30., 40.] and [r['kid'] for r in rows] == [.01, .02, .03, .04]
    assert rows[0]['sampling_s'] is None and rows[1]['sampling_s'] is None
    assert rows[2]['sampling_s'] >= 0 and rows[3]['sampling_s'] >= 0


def test_latent_fid_floor_rows_use_the_seeded_pick_of_training_images(tmp_path, load_script, monkeypatch):
    "The real and reconstructed floor rows use the first n_test of randperm(n_train, seed) of the training images, as floats."
    _, log, _, ie, _ = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '3')
    pick = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(3))[:N_TEST]
    want = (pick*10).float()/127.5 - 1
    assert torch.equal(ie.seen[0][:, 0, 0, 0], want)
    assert torch.allclose(ie.seen[1][:, 0, 0, 0], want + 0.1)          # reconstructions of the same images
    rec = _calls(log, 'reconstruct')
    assert torch.equal(rec[0][:, 0, 0, 0], torch.tensor([200, 201, 202, 203], dtype=torch.uint8))  # held-out MSE on test images
    assert torch.equal(rec[1][:, 0, 0, 0], (pick*10).to(torch.uint8))


def test_latent_fid_samples_n_test_images_with_seed_plus_100_and_clamps_pixels(tmp_path, load_script, monkeypatch):
    "Both diffusion models draw n_test samples with seed+100, the given sampler/steps; latents decoded with the scale, pixels clamped."
    _, log, _, ie, res = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '5', '--steps', '3', '--sampler', 'euler')
    lat_s, pix_s = _calls(log, 'sample')
    assert lat_s == dict(kind='latent', n=N_TEST, shape=LAT_SHAPE, sd=1., sampler='euler', steps=3, bs=128, seed=105)
    assert pix_s == dict(kind='pixel', n=N_TEST, shape=(3, 8, 8), sd=res['pixel_unet']['sigma_data'], sampler='euler', steps=3,
                         bs=128, seed=105)
    (dec,) = _calls(log, 'decode')
    assert dec['scale'] == 0.25 and dec['l'].shape == (N_TEST, *LAT_SHAPE)
    assert torch.equal(ie.seen[2], torch.full((N_TEST, 3, 8, 8), 0.25))
    assert torch.equal(ie.seen[3], torch.ones(N_TEST, 3, 8, 8))        # 3.0 clamped to 1
    assert res['sampler'] == 'euler' and res['sampling_steps'] == 3


def test_latent_fid_default_steps_come_from_the_config(tmp_path, load_script, monkeypatch):
    "Without --steps the quick config's 8 sampling steps are used and recorded."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    assert res['sampling_steps'] == 8 and [s['steps'] for s in _calls(log, 'sample')] == [8, 8]
    assert res['sampler'] == 'dpmpp_2m'


def test_latent_fid_data_classifier_and_vae_records(tmp_path, load_script, monkeypatch):
    "data counts, the classifier record (seed+42, feature width = last nfs) and the VAE record (steps, weights, held-out MSE/PSNR)."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '2', '--kl-weight', '0.5')
    assert res['data'] == dict(source='/d/clothing64.npz', shape=[3, 8, 8], n_train=N_TRAIN, n_test=N_TEST, n_classes=2)
    assert _calls(log, 'load') == [dict(source='clothing64', size=32, limit=(256, 96), seed=2)]
    assert _calls(log, 'clf') == [dict(epochs=1, nfs=(8, 16, 32), seed=44)]
    fc = res['fid_classifier']
    assert fc['test_accuracy'] == 0.75 and fc['features'] == 32 and fc['epochs'] == 1 and fc['nfs'] == [8, 16, 32]
    v = res['vae']
    assert v['kind'] == 'trained AutoencoderKL' and v['params'] == 9 and v['epochs'] == 1
    assert v['steps'] == 1*3                      # vae_epochs x batches per epoch (bs 32 -> 3 stand-in batches)
    assert v['kl_weight'] == 0.5 and v['perceptual_weight'] == 0.
    assert v['test_mse'] == pytest.approx(0.01, rel=1e-4)
    assert v['test_psnr_db'] == pytest.approx(10*math.log10(4/0.01), rel=1e-4)
    assert _calls(log, 'vae_loss') == [dict(kl=0.5, net=None, w=0.)]
    assert ('vae_fit', 1) in log


def test_latent_fid_perceptual_weight_uses_the_classifier(tmp_path, load_script, monkeypatch):
    "With --perceptual w the VAE loss gets the classifier's perceptual net and weight w, and the record says so."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path, '--perceptual', '0.3')
    assert _calls(log, 'vae_loss') == [dict(kl=1e-4, net='pnet(clf)', w=0.3)]
    assert res['vae']['perceptual_weight'] == 0.3 and res['vae']['kl_weight'] == 1e-4


def test_latent_fid_seeds_of_each_phase(tmp_path, load_script, monkeypatch):
    "Seeds: seed for the data, seed+1 for the VAE (init and loader), seed+2 for both U-Nets and their loaders."
    _, log, _, _, _ = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '7')
    assert _calls(log, 'seed') == [7, 8, 9, 9]
    assert [d['seed'] for d in _calls(log, 'image_dls')] == [8, 9]
    assert [d['bs'] for d in _calls(log, 'image_dls')] == [32, 64]
    (ld,) = _calls(log, 'latent_dls')
    assert ld['seed'] == 9 and ld['bs'] == 64 and ld['scale'] == 0.25


def test_latent_fid_classifier_on_latents(tmp_path, load_script, monkeypatch):
    "The latent classifier: per-channel stats of the training latents, (z - mean)/std with the labels, seed+3, its accuracy beside the pixel one."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '7')
    (st,) = _calls(log, 'channel_stats')
    assert len(st) == N_TRAIN
    (ld,) = _calls(log, 'latent_cls_dls')
    assert len(ld['l']) == N_TRAIN and len(ld['lt']) == N_TEST and ld['seed'] == 10 and ld['bs'] == 64
    assert ld['scale'].tolist() == [2., 0.5, 0.25, 0.125] and ld['shift'].tolist() == [1., 2., 3., 4.]
    assert ld['labels'][0].tolist() == (torch.arange(N_TRAIN) % 2).tolist() and ld['labels'][1].tolist() == (torch.arange(N_TEST) % 2).tolist()
    (c,) = _calls(log, 'lclf')
    assert c['n_classes'] == 2 and c['epochs'] == 1 and c['nfs'] == (8, 16, 32) and c['nbks'] == (1, 1) and c['seed'] == 10
    lc = res['latent_classifier']
    assert lc['test_accuracy'] == 0.625 and lc['pixel_classifier_test_accuracy'] == 0.75 and lc['epochs'] == 1
    assert lc['channel_mean'] == [1., 2., 3., 4.] and lc['channel_std'] == [0.5, 2., 4., 8.] and lc['train_s'] >= 0


def test_latent_fid_latent_caches_and_stats(tmp_path, load_script, monkeypatch):
    "Latent caches are named <stem>_<size>_quick_{train,test}.lat; scale is 1/std; compression = pixels / latent values."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    caches = _calls(log, 'cache')
    assert [c[0] for c in caches] == ['clothing64_8_quick_train.lat', 'clothing64_8_quick_test.lat']
    assert len(caches[0][1]) == N_TRAIN and len(caches[1][1]) == N_TEST
    (st,) = _calls(log, 'stats')
    assert len(st) == N_TRAIN                       # statistics of the training latents
    (ld,) = _calls(log, 'latent_dls')
    assert len(ld['l']) == N_TRAIN and len(ld['lt']) == N_TEST
    L = res['latents']
    assert L['shape'] == list(LAT_SHAPE) and L['mean'] == 0.5 and L['std'] == 4.0 and L['scale'] == 0.25
    assert L['compression'] == 3*8*8/(4*2*2)


def test_latent_fid_unet_records_and_equal_flops_pixel_epochs(tmp_path, load_script, monkeypatch):
    "U-Net records: steps = epochs x batches, flops = per image x steps x bs; pixel epochs match the latent model's training FLOPs."
    _, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    lu, pu = res['latent_unet'], res['pixel_unet']
    assert lu['params'] == 6 and lu['epochs'] == 2 and lu['steps'] == 2*7 and lu['final'] == {'loss': 2.}
    assert lu['train_flops_per_image'] == 1000 and lu['train_flops'] == 1000*14*64
    # latent: 14 steps x 1000 FLOPs; pixel: 5 batches/epoch x 3000 FLOPs -> 14000/15000 = 0.93 -> 1 epoch
    assert pu['epochs'] == 1 and pu['steps'] == 5 and pu['params'] == 4 and pu['final'] == {'loss': 2.}
    assert pu['train_flops_per_image'] == 3000 and pu['train_flops'] == 3000*5*64
    vae = res['vae']   # the VAE's training, recorded beside the U-Nets' but not in the pixel model's budget
    assert vae['train_flops_per_image'] == 500 and vae['train_flops'] == 500*vae['steps']*32 and vae['steps'] == vae['epochs']*3
    assert res['compute'] == dict(rule="the pixel U-Net's training FLOPs match the latent U-Net's; the VAE's training is not counted",
                                  vae_train_flops=vae['train_flops'], latent_unet_train_flops=lu['train_flops'],
                                  pixel_unet_train_flops=pu['train_flops'])
    assert pu['config'] == dict(nfs=[8, 16, 32], num_layers=1, attn_chans=0, attn_start=2)
    u_lat, u_pix = _calls(log, 'unet')
    assert u_lat == dict(cin=4, cout=4, nfs=(16, 32), num_layers=1, attn_chans=0)
    assert u_pix == dict(cin=3, cout=3, nfs=(8, 16, 32), num_layers=1, attn_chans=0, attn_start=2)
    k_lat, k_pix = _calls(log, 'karras')
    assert k_lat['sigma_data'] == 1. and k_lat['lr'] == 3e-3
    sd = (torch.arange(N_TRAIN)*10).float().div(127.5).sub(1).repeat_interleave(3*8*8).std().item()
    assert k_pix['sigma_data'] == pytest.approx(sd) and pu['sigma_data'] == pytest.approx(sd)   # std of the training pixels
    assert ('latent_fit', 2) in log and ('pixel_fit', 1) in log


def test_latent_fid_pixel_epochs_round_to_the_nearest_whole_epoch(tmp_path, load_script, monkeypatch):
    "pixel epochs = round(latent steps x latent FLOPs / pixel FLOPs / pixel batches): 14*1000*3/(300*5) = 28."
    FLOPS_SAVE = dict(FLOPS)
    FLOPS.update(latent=3000, pixel=300)     # ratio 14*3000/300/5 = 28
    try: _, _, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    finally: FLOPS.update(FLOPS_SAVE)
    assert res['pixel_unet']['epochs'] == 28 and res['pixel_unet']['steps'] == 28*5
    FLOPS.update(latent=1000, pixel=4000)    # 14000/20000 = 0.7 -> round 1
    try: _, _, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    finally: FLOPS.update(FLOPS_SAVE)
    assert res['pixel_unet']['epochs'] == 1
    FLOPS.update(latent=1000, pixel=1300)    # 14000/6500 = 2.15 -> 2 (not 3)
    try: _, _, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    finally: FLOPS.update(FLOPS_SAVE)
    assert res['pixel_unet']['epochs'] == 2
    FLOPS.update(latent=1000, pixel=1100)    # 14000/5500 = 2.55 -> 3 (not 2)
    try: _, _, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    finally: FLOPS.update(FLOPS_SAVE)
    assert res['pixel_unet']['epochs'] == 3
    FLOPS.update(latent=10, pixel=100000)    # far below one epoch: still at least 1
    try: _, _, _, _, res = _run_latent(load_script, monkeypatch, tmp_path)
    finally: FLOPS.update(FLOPS_SAVE)
    assert res['pixel_unet']['epochs'] == 1


def test_latent_fid_quick_and_full_configs_and_size_override(tmp_path, load_script, monkeypatch):
    "--quick records quick=True and the QUICK config; --size overrides the image size passed to the loader and recorded."
    bench, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path, '--size', '16')
    assert res['quick'] is True and res['config']['size'] == 16 and _calls(log, 'load')[0]['size'] == 16
    assert res['config']['clf_epochs'] == 1 and res['config']['epochs'] == 2
    assert bench.QUICK['size'] == 32                # the override does not leak into the module's config
    assert bench.FULL['steps'] == 40 and bench.QUICK['steps'] == 8 and bench.FULL['size'] is None


def test_latent_fid_full_config_without_quick(tmp_path, load_script, monkeypatch):
    "Without --quick the FULL config is used: no resize, no limit, 30 classifier epochs, 40 steps, and no _quick cache tag."
    bench = load_script('bench/latent_fid.py')
    log, snaps, ie = _latent_stubs(bench, monkeypatch, tmp_path)
    monkeypatch.setattr(bench, 'cached_latents', lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt(a[0])))
    out = tmp_path/'full.json'
    with pytest.raises(KeyboardInterrupt) as e:
        bench.main(['--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress', '--seed', '1'])
    assert Path(e.value.args[0]).name == 'clothing64_8_train.lat'
    res = json.loads(out.read_text())
    assert res['quick'] is False and res['sampling_steps'] == 40 and res['config']['vae_epochs'] == 100
    assert _calls(log, 'load') == [dict(source='clothing64', size=None, limit=None, seed=1)]
    assert _calls(log, 'clf')[0]['epochs'] == 30 and _calls(log, 'clf')[0]['seed'] == 43
    assert res['vae']['steps'] == 100*5            # bs 64 -> 5 stand-in batches


def test_latent_fid_full_nets(tmp_path, load_script, monkeypatch):
    "--quick --full-nets: FULL's networks and image size, QUICK's data limit and epochs, and a latent cache of its own."
    bench, log, _, _, res = _run_latent(load_script, monkeypatch, tmp_path, '--full-nets')
    assert res['quick'] is True and res['full_nets'] is True and res['config']['full_nets'] is True
    assert _calls(log, 'load')[0]['size'] is None and _calls(log, 'load')[0]['limit'] == bench.QUICK['limit']
    assert _calls(log, 'clf')[0] == dict(epochs=1, nfs=bench.FULL['clf_nfs'], seed=42)
    assert _calls(log, 'conv_vae')[0] == dict(bench.FULL['vae'], image_size=8)
    latent_unet, pixel_unet = _calls(log, 'unet')
    assert {k: latent_unet[k] for k in bench.FULL['unet']} == bench.FULL['unet']
    assert pixel_unet['nfs'] == (64, 128, 256, 384) and pixel_unet['attn_start'] == 2
    assert _calls(log, 'vae_fit') == [1] and _calls(log, 'latent_fit') == [2]   # QUICK's epochs
    assert [c[0] for c in _calls(log, 'cache')] == ['clothing64_8_quick_full_nets_train.lat', 'clothing64_8_quick_full_nets_test.lat']
    assert res['sampling_steps'] == 8


# ---------------------------------------------------------------- bench/audio_eval.py

class FakeClock:
    "perf_counter stand-in: every call advances by 2 s."
    def __init__(self): self.t = 100.
    def perf_counter(self): self.t += 2.; return self.t


def _audio_stubs(bench, monkeypatch, tmp_path):
    log, snaps = [], []
    n_samples = 16
    def load_fsdd(split, data_dir, allow_sample):
        assert isinstance(allow_sample, bool)   # `--quick`, never None (a full run never takes the sample)
        log.append(('load', split)); return SimpleNamespace(waves=[torch.ones(5 + i) for i in range(60)])
    class Spec:
        sample_rate = 8000
        def __init__(self): self.n_samples = n_samples
        def waveform(self, specs): log.append(('waveform', specs)); return [torch.zeros(4) for _ in range(len(specs))]
    def round_trip_quality(spec, waves, n_iter):
        log.append(('rt', (n_iter, len(waves)))); return dict(sc=1./n_iter, lsd=float(n_iter))
    train_y = torch.arange(20) % 10
    train_x = torch.stack([torch.full((1, 2, 2), float(i % 2)) for i in range(20)])      # std: of 0/1 values
    class DL:
        def __init__(self, n): self.dataset_len = n
    dls = SimpleNamespace(train=DL(20), valid=DL(7))
    def fsdd_dls(bs, spec, data_dir, limit, seed, allow_sample):
        assert isinstance(allow_sample, bool)
        log.append(('dls', dict(bs=bs, limit=limit, seed=seed))); return dls
    def all_items(dl):
        log.append(('all_items', dl)); return (train_x, train_y) if dl is dls.train else (torch.zeros(7, 1, 2, 2), torch.zeros(7))
    def train_digit_classifier(d, epochs, lr, nfs):
        log.append(('clf', dict(epochs=epochs, lr=lr, nfs=nfs))); return 'clf', 0.6
    def train_audio_diffusion(d, sd, n_classes, cfg, seed):
        log.append(('train', dict(n_classes=n_classes, sd=sd, epochs=cfg['epochs'], seed=seed)))
        m = nn.Linear(2, 3 if n_classes is None else 5)     # 9 / 15 parameters
        m.n_classes = n_classes
        hist = [dict(phase='train', loss=5.), dict(phase='eval', loss=6.), dict(phase='train', loss=1.), dict(phase='eval', loss=2.)]
        return m, SimpleNamespace(metrics=SimpleNamespace(history=hist))
    def evaluate_generation(clf, unc, cond, d, sd, cfg, spec, seed):
        log.append(('eval', dict(clf=clf, unc=unc.n_classes, cond=cond.n_classes, sd=sd, n_uncond=cfg['n_uncond'], seed=seed)))
        return {'real train clips (floor)': dict(n=20, fid=1.), 'conditional, w=3': dict(n=20, fid=5., accuracy=0.5)}
    def generate_spectrograms(model, digits, scale, sigma_data, sampler, steps, seed):
        log.append(('gen', dict(n_classes=model.n_classes, digits=digits.tolist(), scale=scale, sd=sigma_data, steps=steps, seed=seed)))
        return torch.zeros(len(digits), 1, 2, 2)
    def write_wav(path, w, rate): log.append(('wav', (Path(path).name, rate)))
    real_write = bench.write_json
    def write_json(res, out): snaps.append(json.loads(json.dumps(res, default=str))); real_write(res, out)
    for k, v in dict(load_fsdd=load_fsdd, MelSpec=Spec, round_trip_quality=round_trip_quality, fsdd_dls=fsdd_dls,
                     all_items=all_items, train_digit_classifier=train_digit_classifier, train_audio_diffusion=train_audio_diffusion,
                     evaluate_generation=evaluate_generation, generate_spectrograms=generate_spectrograms, write_wav=write_wav,
                     write_json=write_json, time=FakeClock(), set_seed=lambda s: log.append(('seed', s))).items():
        monkeypatch.setattr(bench, k, v)
    return log, snaps


def _run_audio(load_script, monkeypatch, tmp_path, *extra, quick=True):
    bench = load_script('bench/audio_eval.py')
    log, snaps = _audio_stubs(bench, monkeypatch, tmp_path)
    out = tmp_path/'audio.json'
    bench.main((['--quick'] if quick else []) + ['--out', str(out), *extra])
    return bench, log, snaps, json.loads(out.read_text())


def test_audio_eval_partial_files_grow_one_phase_at_a_time(tmp_path, load_script, monkeypatch):
    "audio_eval writes after the round trip, the classifier, each diffusion model and the scores; total_seconds only at the end."
    _, _, snaps, res = _run_audio(load_script, monkeypatch, tmp_path)
    keys = [set(s) - {'config', 'environment', 'quick', 'full_nets', 'command', 'seed'} for s in snaps]
    assert keys[0] == {'round_trip'}
    assert keys[1] == {'round_trip', 'sigma_data', 'classifier'}
    assert keys[2] == keys[1] | {'diffusion'} and list(snaps[2]['diffusion']) == ['unconditional']
    assert keys[3] == keys[2] and list(snaps[3]['diffusion']) == ['unconditional', 'conditional']
    assert keys[4] == keys[3] | {'scores', 'eval_seconds'}
    assert len(snaps) == 6 and keys[5] == keys[4] | {'total_seconds'}


def test_audio_eval_round_trip_table(tmp_path, load_script, monkeypatch):
    "The round trip is measured at 1, 8, 32 and 64 Griffin-Lim iterations on the first 40 test clips (quick), fixed to n_samples."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path)
    assert _calls(log, 'load') == ['test']
    assert _calls(log, 'rt') == [(1, 40), (8, 40), (32, 40), (64, 40)]
    rt = res['round_trip']
    assert list(rt) == ['1 GL iterations', '8 GL iterations', '32 GL iterations', '64 GL iterations', 'n_clips']
    assert rt['8 GL iterations'] == dict(sc=1/8, lsd=8.) and rt['n_clips'] == 40


def test_audio_eval_full_mode_keeps_every_test_clip(tmp_path, load_script, monkeypatch):
    "Without --quick all test clips go through the round trip, and the full AUDIO_CONFIG is used and recorded."
    bench, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, quick=False)
    assert res['round_trip']['n_clips'] == 60 and _calls(log, 'rt')[0] == (1, 60)
    assert res['quick'] is False and res['config']['epochs'] == 200 and res['config']['clf_nfs'] == [16, 32, 64, 128]
    assert _calls(log, 'dls') == [dict(bs=128, limit=None, seed=42)]


def test_audio_eval_full_nets(tmp_path, load_script, monkeypatch):
    "--quick --full-nets: AUDIO_CONFIG's networks (and EMA), AUDIO_QUICK_CONFIG's data, epochs and sample counts."
    bench, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--full-nets')
    full, quick = bench.AUDIO_CONFIG, bench.AUDIO_QUICK_CONFIG
    assert res['full_nets'] is True and res['quick'] is True
    for k in ('nfs', 'num_layers', 'n_mids', 'mid_attn_chans', 'clf_nfs', 'ema'):
        want = full[k]
        assert res['config'][k] == (list(want) if isinstance(want, tuple) else want), k
    for k in ('epochs', 'bs', 'limit', 'steps', 'n_per_digit', 'n_uncond', 'clf_epochs'):
        want = quick[k]
        assert res['config'][k] == (list(want) if isinstance(want, tuple) else want), k
    assert _calls(log, 'clf')[0]['nfs'] == full['clf_nfs'] and _calls(log, 'dls') == [dict(bs=32, limit=quick['limit'], seed=42)]
    assert full['ema'] and not quick['ema']   # so the EMA path, which the full run takes, is taken here too


def test_audio_eval_classifier_and_data_records(tmp_path, load_script, monkeypatch):
    "Loaders get the config's bs/limit and --seed; sigma_data is the std of the training spectrograms; n_test is the valid set."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--seed', '9')
    assert _calls(log, 'seed') == [9]
    assert _calls(log, 'dls') == [dict(bs=32, limit=(256, 100), seed=9)]
    sd = torch.tensor([float(i % 2) for i in range(20)]).repeat_interleave(4).std().item()
    assert res['sigma_data'] == pytest.approx(sd)
    assert _calls(log, 'clf') == [dict(epochs=2, lr=1e-2, nfs=(8, 16, 32))]
    c = res['classifier']
    assert c['test_accuracy'] == 0.6 and c['n_test'] == 7 and c['train_seconds'] == 2.


def test_audio_eval_diffusion_records(tmp_path, load_script, monkeypatch):
    "Unconditional (no classes) then conditional (10) models with --seed; params, epochs, images/s and the last epoch's losses."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--seed', '5', '--epochs', '3')
    tr = _calls(log, 'train')
    assert [t['n_classes'] for t in tr] == [None, 10] and [t['seed'] for t in tr] == [5, 5] and [t['epochs'] for t in tr] == [3, 3]
    assert tr[0]['sd'] == res['sigma_data']
    d = res['diffusion']
    assert d['unconditional']['params'] == 9 and d['conditional']['params'] == 15
    for r in d.values():
        assert r['epochs'] == 3 and r['train_seconds'] == 2. and r['images_per_s'] == 3*20/2.
        assert r['final_train_loss'] == 1. and r['final_eval_loss'] == 2.
    assert res['config']['epochs'] == 3


def test_audio_eval_epochs_overrides_the_config_and_zero_is_refused(tmp_path, load_script, monkeypatch, capsys):
    "--epochs 2 overrides the config's epochs for both diffusion models; --epochs 0 (nothing to train) is refused before any work."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--epochs', '2')
    assert res['config']['epochs'] == 2 and [t['epochs'] for t in _calls(log, 'train')] == [2, 2]
    with pytest.raises(SystemExit): _run_audio(load_script, monkeypatch, tmp_path/'zero', '--epochs', '0')
    assert 'argument --epochs: must be >= 1, got 0' in capsys.readouterr().err and not (tmp_path/'zero').exists()


def test_audio_eval_scores_from_the_right_models(tmp_path, load_script, monkeypatch):
    "The scores phase gets the classifier, the unconditional then the conditional model, and --seed; its table and time are stored."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--seed', '6')
    (e,) = _calls(log, 'eval')
    assert e['clf'] == 'clf' and e['unc'] is None and e['cond'] == 10 and e['sd'] == res['sigma_data'] and e['n_uncond'] == 20
    assert e['seed'] == 6 and res['seed'] == 6 and res['command'].endswith('--seed 6')
    assert res['scores']['conditional, w=3'] == dict(n=20, fid=5., accuracy=0.5) and res['eval_seconds'] == 2.
    assert 'wavs' not in res
    # clock: start 102; round trip none; clf 104-106; diffusion 108-110, 112-114; eval 116-118; total at 120
    assert res['total_seconds'] == 120. - 102.


def test_audio_eval_last_losses_reads_the_final_epoch_of_each_phase(load_script):
    "last_losses returns the most recent train and eval losses, and None for a phase never run."
    bench = load_script('bench/audio_eval.py')
    h = [dict(phase='train', loss=3.), dict(phase='eval', loss=4.), dict(phase='train', loss=1.)]
    learn = SimpleNamespace(metrics=SimpleNamespace(history=h))
    assert bench.last_losses(learn) == {'train': 1., 'eval': 4.}
    assert bench.last_losses(SimpleNamespace(metrics=SimpleNamespace(history=h[:1]))) == {'train': 3., 'eval': None}


def test_audio_eval_timed_returns_result_and_elapsed_seconds(load_script, monkeypatch):
    "timed(fn, *args, **kw) returns fn's result and the positive elapsed time."
    bench = load_script('bench/audio_eval.py')
    monkeypatch.setattr(bench, 'time', FakeClock())
    r, s = bench.timed(lambda a, b=0: a + b, 2, b=3)
    assert r == 5 and s == 2.


def test_audio_eval_wavs_three_per_digit_at_the_last_guidance_scale(tmp_path, load_script, monkeypatch):
    "--wavs writes zero_0..nine_2 from the conditional model at the last guidance scale, seed --seed; the folder is recorded."
    _, log, _, res = _run_audio(load_script, monkeypatch, tmp_path, '--wavs', str(tmp_path/'w'), '--seed', '4')
    (g,) = _calls(log, 'gen')
    assert g['n_classes'] == 10 and g['scale'] == 3. and g['seed'] == 4 and g['steps'] == 4 and g['sd'] == res['sigma_data']
    assert g['digits'] == [d for d in range(10) for _ in range(3)]
    names = [n for n, _ in _calls(log, 'wav')]
    assert names == [f'{w}_{i}.wav' for w in ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
                     for i in range(3)]
    assert {r for _, r in _calls(log, 'wav')} == {8000}
    assert res['wavs'] == str(tmp_path/'w') and 'total_seconds' in res


def test_latent_fid_pretrained_vae_unavailable_falls_back_to_training(tmp_path, load_script, monkeypatch):
    "--pretrained-vae without the hub records the error and trains the VAE instead (the run goes on)."
    bench = load_script('bench/latent_fid.py')
    log, snaps, ie = _latent_stubs(bench, monkeypatch, tmp_path)
    def unavailable(): raise bench.PretrainedVAEUnavailable('hub unreachable')
    monkeypatch.setattr(bench, 'load_pretrained_vae', unavailable)
    out = tmp_path/'p.json'
    bench.main(['--quick', '--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress', '--pretrained-vae'])
    res = json.loads(out.read_text())
    assert res['vae_pretrained_error'] == 'hub unreachable' and res['vae']['kind'] == 'trained AutoencoderKL'
    assert len(_calls(log, 'conv_vae')) == 1 and 'finished' in res


def test_latent_fid_pretrained_vae_is_used_when_available(tmp_path, load_script, monkeypatch):
    "--pretrained-vae with the hub uses that VAE (no VAE training) and records its kind with the held-out MSE/PSNR."
    bench = load_script('bench/latent_fid.py')
    log, snaps, ie = _latent_stubs(bench, monkeypatch, tmp_path)
    monkeypatch.setattr(bench, 'load_pretrained_vae', lambda: nn.Linear(1, 1))
    out = tmp_path/'p.json'
    bench.main(['--quick', '--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress', '--pretrained-vae'])
    res = json.loads(out.read_text())
    assert _calls(log, 'conv_vae') == [] and 'vae_pretrained_error' not in res
    assert res['vae']['kind'] == 'pretrained stabilityai/sd-vae-ft-ema' and res['vae']['test_mse'] == pytest.approx(0.01, rel=1e-4)
    assert set(snaps[1]) - set(snaps[0]) == {'vae'}


def test_latent_fid_records_the_command_it_was_given(tmp_path, load_script, monkeypatch):
    "The results file names the arguments `main` ran with (also when called in-process, not only from the command line)."
    *_, res = _run_latent(load_script, monkeypatch, tmp_path, '--seed', '4')
    assert res['command'].startswith('python bench/latent_fid.py --quick --out ') and res['command'].endswith('--no-progress --seed 4')


# ---------------------------------------------------------------- latent_fid's time budget (--train-minutes)

RATES = dict(vae=0.01, latent=0.002, pixel=0.004, flops_per_image=dict(latent=1., pixel=4.))


def test_latent_plan_epochs_by_hand(load_script):
    "plan_epochs: seconds = epochs x (full-batch images + n_test/3) x rate, the pixel epochs at equal FLOPs; one factor scales both."
    bench = load_script('bench/latent_fid.py')
    cfg = dict(vae_epochs=100, vae_bs=64, epochs=200, bs=128)
    per = lambda bs: 1000//bs*bs + 90/3                      # 1,000 training and 90 held-out images
    want = 100*per(64)*0.01 + 200*per(128)*0.002 + (200*1/4)*per(128)*0.004
    big = bench.plan_epochs(cfg, 1000, 90, RATES, 1e9)
    assert big['planned']['train_s'] == pytest.approx(want) and big['scale'] == 1
    assert (big['vae_epochs'], big['epochs']) == (100, 200) and big['estimated_train_s'] == pytest.approx(want)
    small = bench.plan_epochs(cfg, 1000, 90, RATES, want/4)
    assert small['scale'] == pytest.approx(0.25) and (small['vae_epochs'], small['epochs']) == (25, 50)
    assert small['estimated_train_s'] <= want/4 + 1e-9 and small['planned'] == big['planned']
    tiny = bench.plan_epochs(cfg, 1000, 90, RATES, 1e-6)
    assert (tiny['vae_epochs'], tiny['epochs']) == (1, 1)    # never below one epoch
    assert cfg == dict(vae_epochs=100, vae_bs=64, epochs=200, bs=128)   # the caller's config is left alone


def test_latent_train_minutes_scales_the_run(tmp_path, load_script, monkeypatch):
    "--train-minutes: the measured rates plan the epochs, which the VAE and U-Net training then use and the JSON records."
    bench = load_script('bench/latent_fid.py')
    log, _, _ = _latent_stubs(bench, monkeypatch, tmp_path)
    seen = []
    monkeypatch.setattr(bench, 'measure_rates', lambda imset, cfg, args, clf: seen.append(dict(cfg, clf=clf)) or RATES)
    out = tmp_path/'tb.json'
    bench.main(['--quick', '--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress', '--train-minutes', '0.0001'])
    res = json.loads(out.read_text())
    assert seen and seen[0]['vae_epochs'] == 1 and seen[0]['epochs'] == 2     # planned from QUICK's epochs
    assert seen[0]['clf'] == 'clf'   # (the VAE's perceptual term, if any, uses it)
    tb = res['time_budget']
    assert tb['budget_s'] == pytest.approx(0.006) and tb['planned'] == dict(vae_epochs=1, epochs=2, train_s=tb['planned']['train_s'])
    assert (tb['vae_epochs'], tb['epochs']) == (1, 1) and res['config']['epochs'] == 1
    assert _calls(log, 'vae_fit') == [1] and _calls(log, 'latent_fit') == [1]


def test_latent_without_train_minutes_keeps_the_configured_epochs(tmp_path, load_script, monkeypatch):
    "Without --train-minutes nothing is timed and the configured epochs are trained."
    bench = load_script('bench/latent_fid.py')
    monkeypatch.setattr(bench, 'measure_rates', lambda *a: pytest.fail('timed without --train-minutes'))
    _, log, _, _, res = _run_latent(lambda p: bench, monkeypatch, tmp_path)
    assert 'time_budget' not in res and _calls(log, 'latent_fit') == [2]


def test_latent_train_minutes_refuses_the_pretrained_vae(load_script, capsys):
    "--train-minutes plans a VAE trained here; with --pretrained-vae it is refused before any work, not silently ignored."
    bench = load_script('bench/latent_fid.py')
    with pytest.raises(SystemExit) as e: bench.main(['--out', 'x.json', '--train-minutes', '8', '--pretrained-vae'])
    assert e.value.code == 2 and 'does not go with --pretrained-vae' in capsys.readouterr().err


@pytest.mark.parametrize('bad', ['0', '-1', 'nan', 'inf'])
def test_latent_train_minutes_must_be_positive(load_script, bad, capsys):
    bench = load_script('bench/latent_fid.py')
    with pytest.raises(SystemExit) as e: bench.main(['--quick', '--out', 'x.json', '--train-minutes', bad])
    assert e.value.code == 2 and 'must be a finite number > 0' in capsys.readouterr().err


def test_latent_rates_probe_leaves_the_rng_alone(load_script):
    "measure_rates times real tiny learners (positive seconds, FLOPs per image) and restores the RNG, so the run that follows is unchanged."
    bench = load_script('bench/latent_fid.py')
    from miniai.images import ImageSet
    g = torch.Generator().manual_seed(0)
    imset = ImageSet(torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(48) % 2,
                     torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(8) % 2, ['a', 'b'])
    cfg = dict(bench.QUICK, vae_bs=8, bs=8)
    args = SimpleNamespace(kl_weight=1e-4, perceptual=0.)
    torch.manual_seed(5); want = torch.rand(3)
    torch.manual_seed(5); rates = bench.measure_rates(imset, cfg, args, None); got = torch.rand(3)
    assert torch.equal(got, want)
    assert all(rates[k] > 0 for k in ('vae', 'latent', 'pixel'))
    assert rates['flops_per_image']['pixel'] > rates['flops_per_image']['latent'] > 0


def test_step_timer_cancels_after_warmup_plus_steps(load_script):
    "StepTimer lets exactly warmup + steps training batches run, across epochs, and times the last `steps`."
    bench = load_script('bench/benchkit.py')
    from miniai.learner import Learner, TrainCB
    from miniai.data import DataLoaders
    from miniai.latents import DeviceTensorLoader
    x = torch.randn(20, 3)
    dls = DataLoaders(DeviceTensorLoader(x, 4, device='cpu'), DeviceTensorLoader(x, 4, device='cpu'))
    calls = []
    model = nn.Linear(3, 3)
    model.register_forward_hook(lambda *a: calls.append(1))
    learn = Learner(model, dls, lambda p, *y: p.pow(2).mean(), lr=0.1, cbs=[TrainCB(n_inp=1)])
    timer = bench.StepTimer(2, 7)
    learn.fit(100, valid=False, cbs=[timer])
    assert len(calls) == 9 and timer.seconds is not None and timer.seconds >= 0
    calls.clear()
    assert bench.seconds_per_image(lambda: learn, 4, warmup=0, steps=6) > 0 and len(calls) == 6   # warmup 0: timed from the start
    from miniai.learner import Callback, CancelFitException
    class StopEarly(Callback):   # another callback ends the fit before the timing is done (e.g. a loss guard)
        def after_batch(self, learn): raise CancelFitException()
    early = Learner(model, dls, lambda p, *y: p.pow(2).mean(), lr=0.1, cbs=[TrainCB(n_inp=1), StopEarly()])
    with pytest.raises(RuntimeError, match='timing needs 8 training batches of 4'):
        bench.seconds_per_image(lambda: early, 4, warmup=3, steps=5)


def test_audio_plan_epochs_by_hand(load_script):
    "plan_audio_epochs: two trainings of epochs x (n_train + n_test/3) x rate; never above the configured epochs nor below one."
    bench = load_script('bench/audio_eval.py')
    cfg = dict(epochs=200)
    per = 2*(2700 + 300/3)*0.001                             # seconds per epoch of both trainings
    assert bench.plan_audio_epochs(cfg, 2700, 300, 0.001, 1e9)['epochs'] == 200
    p = bench.plan_audio_epochs(cfg, 2700, 300, 0.001, 50.5*per)
    assert p['epochs'] == 50 and p['estimated_train_s'] == pytest.approx(50*per) and p['planned']['train_s'] == pytest.approx(200*per)
    assert bench.plan_audio_epochs(cfg, 2700, 300, 0.001, 1e-9)['epochs'] == 1 and cfg == dict(epochs=200)


def test_audio_train_minutes_scales_both_trainings(tmp_path, load_script, monkeypatch):
    "--train-minutes: the measured rate sets the epochs of both diffusion trainings; the JSON records the plan."
    bench = load_script('bench/audio_eval.py')
    log, _ = _audio_stubs(bench, monkeypatch, tmp_path)
    monkeypatch.setattr(bench, 'audio_seconds_per_image', lambda dls, sd, cfg: 0.01)
    out = tmp_path/'a.json'
    bench.main(['--out', str(out), '--train-minutes', '1'])   # full config: 200 epochs of 20 + 7/3 images, twice: 89 s
    res = json.loads(out.read_text())
    want = int(60/(2*(20 + 7/3)*0.01))
    assert res['time_budget']['epochs'] == want == res['config']['epochs'] and want < 200
    assert [c['epochs'] for c in _calls(log, 'train')] == [want, want]


def test_audio_rate_probe_puts_the_loader_and_rng_back(load_script):
    "audio_seconds_per_image times a real tiny learner; the training loader then yields the order it would have, and the RNG is unchanged."
    bench = load_script('bench/audio_eval.py')
    from miniai.data import DataLoaders, DeviceImageLoader
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (48, 1, 64, 64), dtype=torch.uint8, generator=g), torch.arange(48) % 10
    make = lambda: DataLoaders(DeviceImageLoader(x, y, bs=8, shuffle=True, value_range=(-1., 1.), device='cpu', seed=3),
                               DeviceImageLoader(x[:8], y[:8], bs=8, value_range=(-1., 1.), device='cpu'))
    want_order = [yb.tolist() for _, yb in make().train]
    torch.manual_seed(7); want_rng = torch.rand(2)
    dls = make()
    torch.manual_seed(7)
    rate = bench.audio_seconds_per_image(dls, 0.5, dict(bench.AUDIO_QUICK_CONFIG, bs=8))
    assert torch.equal(torch.rand(2), want_rng) and rate > 0
    assert [yb.tolist() for _, yb in dls.train] == want_order
