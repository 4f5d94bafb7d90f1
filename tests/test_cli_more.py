"""More checks of miniai/cli.py: resolved sizes, argument limits, sampler wiring, what `train` saves and samples, `sample` flags.

Kept tiny (quick-mode UNet, a few images, stub models where the network does not matter) so the whole file runs in seconds."""
import json, shutil
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import torch
from torch import nn
import miniai
from miniai.cli import (_check_train_args, batch_seed, load_trained, main, make_sampler, recipe, sample_images, sample_to_files,
                        sampler_nfe, save_image_grid, save_trained, train_diffusion)
from miniai.diffusion.ddpm import diffusers_unet, init_ddpm, linear_schedule, ddpm_sample
from miniai.diffusion.ddim import ddim_sample, ddim_timesteps
from miniai.diffusion.cosine import cosine_ddim_sample
from miniai.distributed import load_samples
from miniai.learner import Callback


class _Stop(Exception): "Raised by a stand-in to end a call once its arguments are seen."


# --- recipe and the sizes `train` resolves ---

def test_recipe_sizes():
    "The model families as notebooks 06/08 define them (quick: the tiny CPU variant)."
    tiny = dict(channels=(16, 32, 64), attention=(False, False, True), layers_per_block=1)
    assert recipe('cosine', quick=True) == dict(unet=dict(tiny, t_scale=1000.), value_range=(-0.5, 0.5), linear=None)
    assert recipe('cosine') == dict(unet=dict(channels=(32, 64, 128, 256), t_scale=1000.), value_range=(-0.5, 0.5), linear=None)
    assert recipe('linear', quick=True) == dict(unet=tiny, value_range=(-1., 1.), linear=dict(n_steps=100, beta_min=1e-3, beta_max=0.2))
    assert recipe('linear') == dict(unet=dict(channels=(32, 64, 128, 256)), value_range=(-1., 1.),
                                    linear=dict(n_steps=1000, beta_min=1e-4, beta_max=0.02))
    with pytest.raises(ValueError, match='`schedule` must be one of'): recipe('karras')


_ARGS = dict(schedule='cosine', method='ddim', quick=True, epochs=None, bs=None, lr=4e-3, sample_steps=None, n_grid=64,
             n_fid=None, ema_decay=0.999, p_uncond=None, classifier=None, conditional=False, guidance=1., grad_clip=None)

def _check(**kw): return _check_train_args(**{**_ARGS, **kw})

def test_default_sizes_quick_and_full():
    "(epochs, bs, sample_steps, n_fid, p_uncond): the documented defaults; given values (n_fid=0 too) are kept."
    assert _check() == (1, 32, 10, 256, None)
    assert _check(quick=False) == (25, 512, 100, 2048, None)
    assert _check(epochs=3, bs=7, sample_steps=5, n_fid=0) == (3, 7, 5, 0, None)
    assert _check(conditional=True)[4] == 0.1 and _check(conditional=True, p_uncond=0.3)[4] == 0.3
    assert _check(schedule='linear', method='ddpm')[2] == 100 and _check(schedule='linear', method='ddpm', quick=False)[2] == 1000   # DDPM's own steps
    assert _check(quick=False, n_fid=0)[3] == 0


def test_argument_limits():
    "Each bound as documented: which edge values are refused and which are allowed."
    for kw, msg in ((dict(lr=0.), r'`lr` must be a finite number > 0, got 0'), (dict(n_fid=-2), '`n_fid` must be 0'),
                    (dict(ema_decay=-0.1), r'`ema_decay` must be in \[0, 1\)'), (dict(conditional=True, p_uncond=-0.1), r'`p_uncond` must be in \[0, 1\]'),
                    (dict(conditional=True, p_uncond=1.01), '`p_uncond`'), (dict(p_uncond=0.5), '`p_uncond` needs `conditional=True`'), (dict(bs=0), '`bs` must be >= 1, got 0'),
                    (dict(conditional=True, guidance=-0.5), '`guidance` must be a finite number >= 0'),
                    (dict(grad_clip=0.), r'`grad_clip` must be a finite number > 0, got 0'), (dict(grad_clip=float('inf')), '`grad_clip`'),
                    (dict(grad_clip=float('nan')), '`grad_clip`'), (dict(grad_accum=0), r'`grad_accum` must be an int >= 1, got 0'),
                    (dict(grad_accum=1.5), '`grad_accum`'), (dict(grad_accum=True), '`grad_accum`'),
                    (dict(grad_accum=2, compile='reduce-overhead'), "`grad_accum` 2 with `compile` 'reduce-overhead': CUDA graphs"),
                    (dict(schedule='linear', method='ddpm', sample_steps=50), "`sample_steps` sets DDIM's steps: `method` 'ddpm' takes every step")):
        with pytest.raises(ValueError, match=msg): _check(**kw)
    # the edges that are allowed
    assert _check(ema_decay=0.)[0] == 1
    assert _check(conditional=True, p_uncond=1.)[0] == 1 and _check(conditional=True, p_uncond=0.)[0] == 1
    assert _check(conditional=True, guidance=0.)[0] == 1   # guidance 0: the unconditional model
    assert _check(grad_clip=1e-9)[0] == 1
    assert _check(grad_accum=2, compile='default')[0] == _check(grad_accum=1, compile='reduce-overhead')[0] == 1


def test_cli_argument_messages_name_flags(tmp_path, capsys):
    for bad, msg in ((['--n-fid', '-2'], '--n-fid must be 0 (no FID)'), (['--ema-decay', '-0.5'], '--ema-decay must be in [0, 1)'),
                     (['--conditional', '--p-uncond', '1.5'], '--p-uncond must be in [0, 1]'),
                     (['--conditional', '--guidance', '-1'], '--guidance must be a finite number >= 0'),
                     (['--grad-clip', '-1'], '--grad-clip must be a finite number > 0'),
                     (['--grad-accum', '0'], '--grad-accum must be an int >= 1, got 0'),
                     (['--grad-accum', '2', '--compile', 'reduce-overhead'], "--grad-accum 2 with --compile 'reduce-overhead'"),
                     (['--p-uncond', '0.5'], '--p-uncond needs --conditional'),
                     (['--schedule', 'linear', '--sampler', 'ddpm', '--sample-steps', '50'], "--sample-steps sets DDIM's steps: --sampler 'ddpm' takes every step")):
        with pytest.raises(SystemExit) as e: main(['train', '--quick', '--out', str(tmp_path/'run'), '--no-progress'] + bad)
        assert e.value.code == 2 and msg in capsys.readouterr().err, bad
    assert not (tmp_path/'run').exists()


def test_train_passes_cli_settings(tmp_path, monkeypatch):
    "`miniai train` flags reach `train_diffusion` as given (fp32 is no mixed precision)."
    seen = []
    def fake(**kw): seen.append(kw); raise _Stop()
    monkeypatch.setattr('miniai.cli.train_diffusion', fake)
    for extra, want in (([], dict(precision='bf16', method='ddim', schedule='cosine', checkpoint=False, compile=None, grad_clip=None,
                              grad_accum=1)),
                        (['--grad-clip', '0.5', '--grad-accum', '4'], dict(grad_clip=0.5, grad_accum=4)),
                        (['--precision', 'fp32'], dict(precision=None)), (['--precision', 'fp16'], dict(precision='fp16')),
                        (['--schedule', 'linear', '--sampler', 'ddpm', '--checkpoint', '--seed', '3', '--ema-decay', '0.5'],
                         dict(schedule='linear', method='ddpm', checkpoint=True, seed=3, ema_decay=0.5)),
                        (['--conditional', '--p-uncond', '0.3', '--guidance', '2'], dict(conditional=True, p_uncond=0.3, guidance=2.))):
        with pytest.raises(_Stop): main(['train', '--quick', '--out', str(tmp_path/'r'), '--no-progress'] + extra)
        assert {k: seen[-1][k] for k in want} == want, extra


def test_train_refuses_a_folder_with_an_earlier_run(tmp_path, monkeypatch, capsys):
    "`miniai train` into a folder holding a run stops before any work (status 2) unless --force, or --checkpoint continues it."
    seen = []
    def fake(**kw): seen.append(kw); raise _Stop()
    monkeypatch.setattr('miniai.cli.train_diffusion', fake)
    run = tmp_path/'r'; run.mkdir(); (run/'metrics.json').write_text('{}')
    args = ['train', '--quick', '--out', str(run), '--no-progress']
    with pytest.raises(SystemExit) as e: main(args)
    assert e.value.code == 2 and 'holds an earlier run (metrics.json): pass --force to overwrite it' in capsys.readouterr().err
    assert seen == []
    with pytest.raises(_Stop): main(args + ['--force'])
    assert seen[-1]['force'] is True
    with pytest.raises(SystemExit): main(args + ['--checkpoint'])          # no checkpoint.pt: nothing to continue
    (run/'checkpoint.pt').write_bytes(b'')
    with pytest.raises(SystemExit) as e: main(args)
    assert 'continue it from its checkpoint with --checkpoint' in capsys.readouterr().err
    with pytest.raises(_Stop): main(args + ['--checkpoint'])
    assert seen[-1]['checkpoint'] is True and seen[-1]['force'] is False
    (tmp_path/'file').write_text('')
    with pytest.raises(SystemExit): main(['train', '--quick', '--out', str(tmp_path/'file')])
    assert 'is a file, not a folder' in capsys.readouterr().err


def test_saved_weights_have_the_permissions_of_any_new_file(tmp_path):
    "safetensors creates its files readable by their owner only; `save_trained` gives them the mode `open` would."
    save_trained(nn.Linear(2, 2), tmp_path/'model.safetensors', {})
    (tmp_path/'plain').write_text('')
    mode = lambda f: (tmp_path/f).stat().st_mode & 0o777
    assert mode('model.safetensors') == mode('plain')


def test_data_wiring(tmp_path, monkeypatch):
    "The data loaders `train` asks for: batch size, the family's value range, the quick subset, the seed."
    seen = []
    def fake(**kw): seen.append(kw); raise _Stop()
    monkeypatch.setattr('miniai.cli.fashion_dls', fake)
    for kw, want in ((dict(quick=True), dict(bs=32, value_range=(-0.5, 0.5), limit=(320, 64), seed=42)),
                     (dict(quick=True, schedule='linear', seed=5), dict(bs=32, value_range=(-1., 1.), limit=(320, 64), seed=5)),
                     (dict(quick=True, limit=(10, 20), bs=4), dict(bs=4, limit=(10, 20))),
                     (dict(quick=False), dict(bs=512, value_range=(-0.5, 0.5), limit=None))):
        with pytest.raises(_Stop): train_diffusion(out=tmp_path/'r', n_fid=0, progress=False, **kw)
        assert {k: seen[-1][k] for k in want} == want, kw


# --- make_sampler / sampler_nfe / sample_images with stand-in models ---

class _Eps:
    "A stand-in denoiser: a large constant noise prediction (x0-hat far outside the data range), counting its calls."
    def __init__(self, n_classes=None): self.calls, self.n_classes = 0, n_classes
    def __call__(self, x, t, c=None): self.calls += 1; return torch.full_like(x, -3.)

SHAPE = (2, 1, 4, 4)
def _g(): return torch.Generator().manual_seed(0)

@pytest.mark.parametrize('schedule,method,steps,eta,nfe', [('cosine', 'ddim', 5, 1., 4), ('cosine', 'ddim', 5, 0., 4),
                                                          ('linear', 'ddim', 5, 1., 5), ('linear', 'ddim', 5, 0., 5),
                                                          ('linear', 'ddpm', 5, 1., 100)])
def test_make_sampler_is_the_family_sampler(schedule, method, steps, eta, nfe):
    "Same draws as the notebooks' samplers with the family's schedule, eta and data range; results in [-1, 1]; model calls = nfe."
    m = _Eps()
    x = make_sampler(m, schedule, method, steps, eta=eta, quick=True)(SHAPE, _g())
    assert m.calls == nfe == sampler_nfe(schedule, method, steps, quick=True)
    assert x.shape == SHAPE and x.abs().max() <= 1 and x.abs().max() > 0.9   # clamped x0-hat: at the edge, not past it
    if schedule == 'cosine': want = cosine_ddim_sample(_Eps(), SHAPE, steps, eta=eta, generator=_g(), clamp=0.5)/0.5
    else:
        sched = linear_schedule(100, 1e-3, 0.2)
        if method == 'ddpm': want = ddpm_sample(_Eps(), SHAPE, sched, generator=_g(), clamp=1.)
        else:
            ts = ddim_timesteps(100, steps)
            want = ddim_sample(_Eps(), SHAPE, ts, sched.abar[ts], eta=eta, generator=_g(), clamp=1.)
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    if eta == 0: assert not torch.equal(x, make_sampler(_Eps(), schedule, method, steps, eta=1., quick=True)(SHAPE, _g()))
    # the documented keyword names (`f(shape, generator, labels=None, progress=False)`) work as keywords too
    kw = make_sampler(_Eps(), schedule, method, steps, eta=eta, quick=True)(shape=SHAPE, generator=_g(), labels=None, progress=False)
    torch.testing.assert_close(kw, want, rtol=0, atol=0)


def test_make_sampler_clamp_option_is_the_bound_of_x0_hat_and_the_images_stay_in_range():
    "`clamp=1.5` (the course's cosine bound) samples as `cosine_ddim_sample(clamp=1.5)`, then clips the images to [-1, 1]."
    class _Mild:   # x0-hat between the data range (0.5) and the course's bound (1.5)
        def __call__(self, x, t): return torch.full_like(x, -0.5)
    x = make_sampler(_Mild(), 'cosine', 'ddim', 5, quick=True, clamp=1.5)(SHAPE, _g())
    raw = cosine_ddim_sample(_Mild(), SHAPE, 5, generator=_g(), clamp=1.5)/0.5
    assert raw.abs().max() > 1.2   # the looser bound lets x0-hat past the data range...
    torch.testing.assert_close(x, raw.clamp(-1, 1), rtol=0, atol=0)   # ...and the images are clipped at the end
    torch.testing.assert_close(make_sampler(_Mild(), 'cosine', 'ddim', 5, quick=True, clamp=0.25)(SHAPE, _g()),
                               cosine_ddim_sample(_Mild(), SHAPE, 5, generator=_g(), clamp=0.25)/0.5, rtol=0, atol=0)
    for bad in (0, -1., True):
        with pytest.raises(ValueError, match='`clamp` must be None'): make_sampler(_Mild(), 'cosine', clamp=bad)
    sched = linear_schedule(100, 1e-3, 0.2)   # the linear family's samplers take the bound too
    torch.testing.assert_close(make_sampler(_Eps(), 'linear', 'ddpm', quick=True, clamp=0.5)(SHAPE, _g()),
                               ddpm_sample(_Eps(), SHAPE, sched, generator=_g(), clamp=0.5), rtol=0, atol=0)
    ts = ddim_timesteps(100, 5)
    torch.testing.assert_close(make_sampler(_Eps(), 'linear', 'ddim', 5, quick=True, clamp=0.5)(SHAPE, _g()),
                               ddim_sample(_Eps(), SHAPE, ts, sched.abar[ts], generator=_g(), clamp=0.5), rtol=0, atol=0)


class _RowsEps(_Eps):
    "A class-conditional stand-in that counts the image rows it evaluates."
    def __init__(self): super().__init__(n_classes=10); self.rows = 0
    def __call__(self, x, t, c=None): self.rows += len(x); return super().__call__(x, t, c)

@pytest.mark.parametrize('guidance', [0., 1., 3.])
def test_sampler_nfe_counts_the_rows_a_guided_sampler_evaluates(guidance):
    "Guidance at w not in {0, 1} runs both predictions: two network evaluations per image and step, and `nfe` says so."
    m = _RowsEps()
    make_sampler(m, 'cosine', 'ddim', 5, quick=True, guidance=guidance)(SHAPE, _g(), torch.tensor([1, 2]))
    assert m.rows / SHAPE[0] == sampler_nfe('cosine', 'ddim', 5, quick=True, guidance=guidance) == 4 * (1 if guidance in (0, 1) else 2)


def test_sampler_nfe_full_size():
    assert sampler_nfe('linear', 'ddpm', 7) == 1000 and sampler_nfe('linear', 'ddim', 7) == 7 and sampler_nfe('cosine', 'ddim', 7) == 6


def test_make_sampler_refuses_labels_for_unconditional():
    s = make_sampler(_Eps(), steps=3)
    with pytest.raises(ValueError, match='`labels` given for an unconditional model'): s(SHAPE, _g(), torch.tensor([1, 2]))


def test_sample_images_seeds_batch_k_with_batch_seed():
    "Batches of `bs` (the last one smaller), each with its slice of the labels, batch k from a generator seeded with batch_seed(seed, k)."
    calls = []
    def sampler(shape, g, labels=None): calls.append((shape, labels)); return torch.randn(shape, generator=g)
    x = sample_images(sampler, 5, bs=2, seed=7, device='cpu', img_shape=(1, 2, 2), progress=False, labels=torch.arange(5) + 3)
    assert [c[0] for c in calls] == [(2, 1, 2, 2), (2, 1, 2, 2), (1, 1, 2, 2)]
    assert [c[1].tolist() for c in calls] == [[3, 4], [5, 6], [7]]
    g = lambda k: torch.Generator().manual_seed(batch_seed(7, k))
    assert torch.equal(x, torch.cat([torch.randn(2, 1, 2, 2, generator=g(0)), torch.randn(2, 1, 2, 2, generator=g(1)),
                                     torch.randn(1, 1, 2, 2, generator=g(2))]))
    # so a sampler that uses more noise per batch than another still starts its second batch from the same noise
    greedy = lambda shape, g, labels=None: (torch.randn(shape, generator=g), torch.randn(shape, generator=g))[0]
    assert torch.equal(sample_images(greedy, 5, bs=2, seed=7, device='cpu', img_shape=(1, 2, 2), progress=False), x)
    # and sets of neighbouring seeds share no batch (seed + k would make seed 8's first batch seed 7's second)
    y = sample_images(sampler, 5, bs=2, seed=8, device='cpu', img_shape=(1, 2, 2), progress=False)
    assert not any(torch.equal(y[:2], x[i:i + 2]) for i in (0, 2))
    assert batch_seed(7, 1) != batch_seed(8, 0) and batch_seed(-1, 0) == batch_seed(2**64 - 1, 0)   # any int seed
    torch.manual_seed(3); a = sample_images(sampler, 3, bs=2, seed=None, device='cpu', img_shape=(1, 2, 2), progress=False)
    torch.manual_seed(3); assert torch.equal(a, torch.cat([torch.randn(2, 1, 2, 2), torch.randn(1, 1, 2, 2)]))   # None: the global RNG
    for n, bs in ((0, 2), (2, 0)):
        with pytest.raises(ValueError, match='`n` and `bs` must be >= 1'): sample_images(sampler, n, bs=bs, device='cpu', progress=False)
    with pytest.raises(ValueError, match='`labels` has 4 entries for 5 images'):
        sample_images(sampler, 5, device='cpu', progress=False, labels=torch.arange(4))


def test_image_grid_pixels(tmp_path):
    "-1 is black, 1 white, 0 mid-grey; white padding and white empty cells; layout rows x cols."
    from PIL import Image
    x = torch.stack([torch.full((1, 4, 4), v) for v in (-1., 1., 0.)])
    g = np.array(Image.open(save_image_grid(x, tmp_path/'g.png', ncols=2, pad=1)).convert('L')).astype(int)
    assert g.shape == (2*5 + 1, 2*5 + 1)
    assert (g[1:5, 1:5] == 0).all() and (g[1:5, 6:10] == 255).all() and (abs(g[6:10, 1:5] - 127.5) <= 1).all()
    assert (g[6:10, 6:10] == 255).all() and (g[0] == 255).all() and (g[:, 5] == 255).all() and (g[-1] == 255).all()


# --- what a tiny `train` run saves and samples ---

class _Record(Callback):
    "Parameters before training and after every step; the batches the model saw."
    order = 30
    def __init__(self): self.params, self.batches = [], []
    def before_fit(self, learn): self.params.append({k: p.detach().clone() for k, p in learn.model.named_parameters()})
    def after_step(self, learn): self.params.append({k: p.detach().clone() for k, p in learn.model.named_parameters()})
    def after_predict(self, learn):
        if learn.training: self.batches.append([b.detach().clone() for b in learn.batch])


def _train(out, **kw):
    "A tiny CPU run, recording the parameters, the batches, the grid and the FID samples it scored."
    import miniai.cli as cli
    rec, grids, fid_x = _Record(), [], []
    ie = SimpleNamespace(scores=lambda x: fid_x.append(x.clone()) or dict(fid=1.5, kid=0.25))
    save_grid = cli.save_image_grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MINIAI_DEVICE', 'cpu')
        mp.setattr(cli, 'save_image_grid', lambda x, path, ncols=8, pad=2: grids.append((x.clone(), ncols)) or save_grid(x, path, ncols, pad))
        res = train_diffusion(out=out, **{**dict(quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=3, n_fid=0,
                                               evaluator=ie, progress=False, cbs=[rec]), **kw})
    return SimpleNamespace(out=out, rec=rec, grid=grids, fid_x=fid_x, res=res, metrics=json.loads((out/'metrics.json').read_text()))


@pytest.fixture(scope='module')
def cosine_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp('cos')/'run', ema_decay=0.05, n_fid=4, checkpoint=True)


def test_saved_weights_are_the_ema_of_the_steps(cosine_run):
    "model.safetensors holds the EMA (decay with warm-up min(d, (1+n)/(10+n))) of the weights after each step, not the last ones."
    from safetensors.torch import load_file
    params, d = cosine_run.rec.params, 0.05
    assert len(params) == 3   # before training, after each of the 2 steps
    avg = {k: v.clone() for k, v in params[0].items()}
    for n, w in enumerate(params[1:]):
        dn = min(d, (1 + n)/(10 + n))
        for k in avg: avg[k] = dn*avg[k] + (1 - dn)*w[k]
    saved = load_file(str(cosine_run.out/'model.safetensors'))
    for k in avg: torch.testing.assert_close(saved[k], avg[k], atol=1e-6, rtol=1e-5)
    assert any(not torch.allclose(saved[k], params[-1][k]) for k in avg)   # the EMA differs from the last weights


def test_grid_and_fid_samples_are_seeded_draws_of_the_saved_model(cosine_run):
    "samples.png shows seed 42's draws of the saved model, FID scores seed 43's (what `sample --seed` reproduces)."
    model, cfg = load_trained(cosine_run.out, device='cpu')
    s = make_sampler(model, 'cosine', 'ddim', 3, quick=True)
    (grid, ncols), = cosine_run.grid
    assert ncols == 8
    torch.testing.assert_close(grid, sample_images(s, 3, seed=42, device='cpu', progress=False))
    torch.testing.assert_close(cosine_run.fid_x[0], sample_images(s, 4, seed=43, device='cpu', progress=False))
    m = cosine_run.metrics
    assert (m['fid'], m['kid'], m['n_fid'], m['nfe'], m['n_train']) == (1.5, 0.25, 4, 2, 64)
    assert m['resumed_from_epoch'] is None and m['ema_decay'] == 0.05 and cfg['ema_decay'] == 0.05 and cfg['epochs'] == 1
    assert m['miniai'] == miniai.__version__ and m['torch'] == torch.__version__   # the versions that made the run


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e: main(['--version'])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f'miniai {miniai.__version__}'


def test_resume_refuses_checkpoint_without_settings_or_other_precision(cosine_run, tmp_path, monkeypatch):
    from miniai.accel import CheckpointError
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    out = Path(shutil.copytree(cosine_run.out, tmp_path/'run'))
    kw = dict(quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=3, n_fid=0, ema_decay=0.05, progress=False, checkpoint=True)
    for prec in (None, 'fp16'):
        with pytest.raises(CheckpointError, match=r"precision 'bf16' \(checkpoint\)"): train_diffusion(out=out, precision=prec, **kw)
    with pytest.raises(CheckpointError, match='compile None'): train_diffusion(out=out, compile='default', **kw)
    ck = torch.load(out/'checkpoint.pt', weights_only=True)
    del ck['extra']['settings']['grad_accum']   # written before the option: it trained a step per batch
    torch.save(ck, out/'checkpoint.pt')
    with pytest.raises(CheckpointError, match=r'grad_accum 1 \(checkpoint\) vs 2 \(now\)'): train_diffusion(out=out, grad_accum=2, **kw)
    train_diffusion(out=out, **kw)   # resumed: nothing left to train
    ck = torch.load(out/'checkpoint.pt', weights_only=True)
    del ck['extra']['settings']
    torch.save(ck, out/'checkpoint.pt')
    with pytest.raises(CheckpointError, match='does not record the settings'): train_diffusion(out=out, **kw)


def test_grad_clip_reaches_the_learner_and_metrics(tmp_path, cosine_run):
    "grad_clip adds one GradClipCB (every step's norm recorded, here all above the limit) and is written to metrics.json."
    from miniai.accel import GradClipCB
    r = _train(tmp_path/'run', grad_clip=1e-3)
    clip, = [cb for cb in r.res['learn'].cbs if isinstance(cb, GradClipCB)]
    assert clip.max_norm == 1e-3 and len(clip.norms) == 2 and (clip.norms > 1e-3).all()   # 64 images, batches of 32
    assert r.metrics['grad_clip'] == 1e-3
    assert cosine_run.metrics['grad_clip'] is None and not any(isinstance(cb, GradClipCB) for cb in cosine_run.res['learn'].cbs)


def test_grad_accum_reaches_the_learner_and_metrics(tmp_path, cosine_run):
    "grad_accum=2 adds one GradAccumCB: 2 batches of 32 make one step (the loss history holds one loss); metrics.json records it."
    from miniai.accel import GradAccumCB
    r = _train(tmp_path/'run', grad_accum=2, checkpoint=True)
    acc, = [cb for cb in r.res['learn'].cbs if isinstance(cb, GradAccumCB)]
    assert acc.n == 2 and len(r.rec.params) == 2 and len(r.rec.batches) == 2   # before training, after the one step
    assert r.metrics['grad_accum'] == 2 and len(torch.load(r.out/'checkpoint.pt', weights_only=True)['extra']['history']['losses']) == 1
    assert cosine_run.metrics['grad_accum'] == 1 and not any(isinstance(cb, GradAccumCB) for cb in cosine_run.res['learn'].cbs)


def test_conditional_run_drops_labels_and_lays_grid_by_class(tmp_path):
    "p_uncond=1 trains every label as the null class (10); the grid has one column per class."
    r = _train(tmp_path/'run', conditional=True, p_uncond=1., n_grid=10, sample_steps=2, guidance=2.)
    labels = torch.cat([b[2] for b in r.rec.batches])
    assert len(labels) == 64 and (labels == 10).all()
    (grid, ncols), = r.grid
    assert ncols == 10 and grid.shape == (10, 1, 32, 32)
    assert r.metrics['p_uncond'] == 1. and r.metrics['guidance'] == 2.
    # the grid: seed 42, classes 0..9 in turn, at the run's guidance scale
    model, _ = load_trained(r.out, device='cpu')
    def draw(w, y): return sample_images(make_sampler(model, steps=2, quick=True, guidance=w), 10, seed=42, device='cpu',
                                         progress=False, labels=y)
    torch.testing.assert_close(grid, draw(2., torch.arange(10)))
    assert not torch.allclose(grid, draw(1., torch.arange(10))) and not torch.allclose(grid, draw(2., torch.zeros(10, dtype=torch.long)))


def test_linear_ddpm_run(tmp_path):
    "The quick linear family trains on steps 0..99 and samples with all 100 DDPM steps."
    r = _train(tmp_path/'run', schedule='linear', method='ddpm', n_grid=1, sample_steps=None)   # ddpm takes every step
    t = torch.cat([b[1] for b in r.rec.batches])
    assert len(t) == 64 and t.min() >= 0 and t.max() <= 99 and t.max() >= 50
    assert r.metrics['nfe'] == 100 and r.metrics['sampler'] == 'ddpm' and r.metrics['sample_steps'] == 100   # the steps it took
    (grid, _), = r.grid
    assert grid.abs().max() <= 1


# --- `sample` from a checkpoint ---

@pytest.fixture(scope='module')
def _ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp('ck')
    out = {}
    for name, schedule, n_classes in (('cosine', 'cosine', None), ('linear', 'linear', None), ('cond', 'cosine', 10)):
        torch.manual_seed(0)
        r = recipe(schedule, quick=True)
        model = init_ddpm(diffusers_unet(**r['unet'], n_classes=n_classes))
        out[name] = save_trained(model, d/name/'model.safetensors', dict(schedule=schedule, quick=True, unet=r['unet'],
                                 value_range=r['value_range'], linear=r['linear'], n_classes=n_classes))
    return out


def test_sample_eta(_ckpts, tmp_path, monkeypatch):
    "eta reaches the sampler: eta 0 is plain DDIM from the same start noise (checked against the notebook sampler)."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path = _ckpts['cosine']
    r = sample_to_files(path, tmp_path/'a', n=2, steps=3, eta=0., seed=4, progress=False)
    assert r['conditional'] is False and r['guidance'] is None and r['eta'] == 0.
    main(['sample', str(path), '--out', str(tmp_path/'b'), '-n', '2', '--steps', '3', '--eta', '0', '--seed', '4', '--no-progress'])
    a, b = load_samples(tmp_path/'a'/'samples.npy'), load_samples(tmp_path/'b'/'samples.npy')
    model, _ = load_trained(path, device='cpu')
    want = cosine_ddim_sample(model, (2, 1, 32, 32), 3, eta=0., generator=torch.Generator().manual_seed(batch_seed(4, 0)), clamp=0.5)/0.5
    torch.testing.assert_close(a, want)
    assert torch.equal(a, b)
    sample_to_files(path, tmp_path/'c', n=2, steps=3, eta=1., seed=4, progress=False)
    assert not torch.equal(a, load_samples(tmp_path/'c'/'samples.npy'))


def test_sample_command_passes_flags(_ckpts, tmp_path, monkeypatch):
    seen = []
    def fake(*a, **kw): seen.append(kw); raise _Stop()
    monkeypatch.setattr('miniai.cli.sample_to_files', fake)
    with pytest.raises(_Stop):
        main(['sample', str(_ckpts['linear']), '--out', str(tmp_path/'s'), '--sampler', 'ddpm', '-n', '3', '--bs', '2',
              '--png', '--no-progress'])
    assert {k: seen[-1][k] for k in ('method', 'n', 'eta', 'bs', 'png', 'progress', 'seed', 'steps')} == \
           dict(method='ddpm', n=3, eta=1., bs=2, png=True, progress=False, seed=0, steps=100)
    with pytest.raises(_Stop): main(['sample', str(_ckpts['linear']), '--out', str(tmp_path/'s'), '--steps', '7', '--eta', '0.5'])
    assert {k: seen[-1][k] for k in ('method', 'eta', 'steps')} == dict(method='ddim', eta=0.5, steps=7)


@pytest.mark.parametrize('flag', [['--steps', '2'], ['--eta', '0.3'], ['--steps', '100']])
def test_sample_ddpm_refuses_ddim_settings(_ckpts, tmp_path, capsys, flag):
    "--steps and --eta would be ignored by ddpm (every step of the schedule, its own noise): refused, even at their default values."
    with pytest.raises(SystemExit) as e:
        main(['sample', str(_ckpts['linear']), '--out', str(tmp_path/'s'), '--sampler', 'ddpm', *flag, '--no-progress'])
    assert e.value.code == 2 and "--steps and --eta set DDIM's steps and noise: --sampler ddpm takes every step" in capsys.readouterr().err


def test_sample_linear_ddpm(_ckpts, tmp_path, monkeypatch, capsys):
    "`sample --sampler ddpm` on a linear model: all 100 steps of its schedule, images in [-1, 1]."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path = _ckpts['linear']
    main(['sample', str(path), '--out', str(tmp_path/'s'), '--sampler', 'ddpm', '-n', '1', '--no-progress'])
    assert 'ddpm 100 steps, 100 network evaluations each' in capsys.readouterr().out
    r = sample_to_files(path, tmp_path/'t', n=1, method='ddpm', steps=3, eta=0.5, progress=False)   # the steps it took, no eta
    assert (r['steps'], r['eta'], r['nfe']) == (100, None, 100)
    x = load_samples(tmp_path/'s'/'samples.npy')
    model, _ = load_trained(path, device='cpu')
    want = ddpm_sample(model, (1, 1, 32, 32), linear_schedule(100, 1e-3, 0.2), generator=torch.Generator().manual_seed(batch_seed(0, 0)), clamp=1.)
    torch.testing.assert_close(x, want)
    assert x.abs().max() <= 1


def test_sample_grid_shows_the_first_64(_ckpts, tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    sample_to_files(_ckpts['cosine'], tmp_path/'s', n=65, steps=2, progress=False)
    assert len(load_samples(tmp_path/'s'/'samples.npy')) == 65
    assert Image.open(tmp_path/'s'/'samples.png').size == (8*34 + 2, 8*34 + 2)   # 8 x 8 images of 32 + 2 padding


def test_conditional_sample_grid_has_a_column_per_class(_ckpts, tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    r = sample_to_files(_ckpts['cond'], tmp_path/'s', n=20, steps=2, guidance=3., progress=False)
    assert r['conditional'] is True and r['guidance'] == 3.
    assert Image.open(tmp_path/'s'/'samples.png').size == (10*34 + 2, 2*34 + 2)   # width, height: 2 rows of 10 classes


def test_labels_files_and_counts_are_checked(tmp_path):
    from miniai.cli import fid_of_samples, load_labels
    np.save(tmp_path/'y2.npy', np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match='must hold a vector of integer class labels'): load_labels(tmp_path/'y2.npy')
    np.save(tmp_path/'y.npy', np.arange(3))
    assert load_labels(tmp_path/'y.npy').tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match='3 labels for 2 samples'):
        fid_of_samples(torch.zeros(2, 1, 32, 32), labels=tmp_path/'y.npy', quick=True, progress=False)


def test_fid_command_writes_json(tmp_path, monkeypatch, capsys):
    "`miniai fid --json` writes the scores it prints (the evaluator is a stand-in: the wiring, not FID)."
    seen = []
    def scores(x): seen.append(x); return dict(fid=torch.tensor(12.5), kid=torch.tensor(0.25))
    monkeypatch.setattr('miniai.cli.fid_evaluator', lambda *a, **k: SimpleNamespace(scores=scores))
    x = torch.rand(3, 1, 32, 32)*2 - 1
    np.save(tmp_path/'s.npy', x.numpy())
    monkeypatch.delenv('MINIAI_QUICK', raising=False)
    assert main(['fid', str(tmp_path/'s.npy'), '--json', str(tmp_path/'r.json'), '--no-progress']) == 0
    assert json.loads((tmp_path/'r.json').read_text()) == dict(fid=12.5, kid=0.25, n=3, samples=str(tmp_path/'s.npy'), quick=False,
                                                               classifier='fashion classifier (notebook 04)', labels=None)
    assert 'FID 12.500  KID 0.25000  (3 samples)' in capsys.readouterr().out and torch.equal(seen[0], x)


def test_force_removes_leftover_temporaries(_ckpts, tmp_path, monkeypatch):
    "`force` also removes half-written temporaries of sample files (.NAME.PID.tmp), nothing else."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    out = tmp_path/'s'
    (out/'png').mkdir(parents=True)
    for f in ('.samples.npy.123.tmp', '.labels.npy.9.tmp', 'png/.00007.png.55.tmp', '.notes.txt.1.tmp', 'png/.keep.1.tmp'):
        (out/f).write_text('x')
    sample_to_files(_ckpts['cosine'], out, n=2, steps=2, force=True, progress=False)
    assert sorted(f.name for f in out.iterdir()) == ['.notes.txt.1.tmp', 'png', 'samples.npy', 'samples.png']
    assert [f.name for f in (out/'png').iterdir()] == ['.keep.1.tmp']


def test_quick_fid_works_with_no_data_set_anywhere(tmp_path, monkeypatch):
    "Quick mode needs no local copy and no network: the FID reference falls back to the shipped sample's test images."
    from miniai.cli import fid_evaluator
    from miniai.data import MissingDataError
    from miniai.models.resnet import classifier_metadata, fashion_classifier, save_weights
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    clf = save_weights(fashion_classifier(nfs=(4, 8)), tmp_path/'clf.safetensors', classifier_metadata((4, 8), 0.1, epochs=0))
    ie = fid_evaluator(quick=True, classifier=clf, progress=False)
    assert len(ie.ref.feats) == 1000                                   # the sample's 100 test images per class
    with pytest.raises(MissingDataError, match='not found'): fid_evaluator(quick=False, classifier=clf, progress=False)


@pytest.mark.parametrize('cmd', ['train', 'fid'])
def test_miniai_quick_env_makes_train_and_fid_quick(tmp_path, monkeypatch, capsys, cmd):
    "README's one switch: MINIAI_QUICK=1 makes `miniai train` and `miniai fid` quick, as --quick does, and says so."
    import miniai.cli as cli
    seen = []
    monkeypatch.setattr(cli, 'train_diffusion', lambda **k: seen.append(k['quick']) or (_ for _ in ()).throw(SystemExit(0)))
    monkeypatch.setattr(cli, 'fid_of_samples', lambda *a, **k: seen.append(k['quick']) or dict(fid=1., kid=0., n=1))
    np.save(tmp_path/'s.npy', np.zeros((1, 1, 32, 32), np.float32))
    argv = ['train', '--out', str(tmp_path/'run')] if cmd == 'train' else ['fid', str(tmp_path/'s.npy')]
    for env, want in (('0', False), ('1', True)):
        monkeypatch.setenv('MINIAI_QUICK', env)
        try: main(argv)
        except SystemExit: pass
        assert seen[-1] is want
    assert 'quick mode (MINIAI_QUICK is set)' in capsys.readouterr().err


def test_sample_images_shows_the_steps_of_a_single_batch(monkeypatch):
    "One batch: the sampler is asked for its per-step bar (else nothing moves for minutes); several: one bar over batches."
    calls = []
    def sampler(shape, g=None, labels=None, progress=False): calls.append(progress); return torch.zeros(shape)
    sample_images(sampler, 4, bs=8, device='cpu', progress=True)
    sample_images(sampler, 20, bs=8, device='cpu', progress=True)
    sample_images(sampler, 4, bs=8, device='cpu', progress=False)
    assert calls == [True, False, False, False, False]
    plain = lambda shape, g=None, labels=None: torch.ones(shape)   # a sampler without `progress` still works
    assert sample_images(plain, 3, bs=8, device='cpu', progress=True).shape == (3, 1, 32, 32)


@pytest.mark.parametrize('eta', ['nan', 'inf', '-0.5', '1.5'])
def test_sample_refuses_a_non_finite_or_negative_eta_first(_ckpts, tmp_path, capsys, eta):
    "--eta nan used to pass the command-line check (nan < 0 is False) and fail after the model had loaded."
    with pytest.raises(SystemExit) as e: main(['sample', str(_ckpts['cosine']), '--out', str(tmp_path/'s'), '--eta', eta])
    assert e.value.code == 2 and '--eta must be a finite number >= 0' in capsys.readouterr().err and not (tmp_path/'s').exists()


def test_sample_refuses_a_sampler_the_model_cannot_use_as_an_option_error(_ckpts, tmp_path, capsys):
    "Option mistakes found once the checkpoint is read still exit 2 with the usage line and name the flags."
    for args, msg in ((['--sampler', 'ddpm'], "--sampler ddpm with --steps 100 for this cosine-schedule model"),
                      (['--steps', '1'], '--steps 1')):
        with pytest.raises(SystemExit) as e: main(['sample', str(_ckpts['cosine']), '--out', str(tmp_path/'s'), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and 'usage:' in err, (args, err)
    assert not (tmp_path/'s').exists()


def test_sample_images_progress_false_prints_no_bar(capsys):
    "sample_images(progress=False) shows no progress bar, also when it draws several batches."
    sampler = lambda shape, generator=None, labels=None: torch.zeros(shape)   # no `progress` parameter
    x = sample_images(sampler, 4, bs=2, device='cpu', progress=False)
    assert x.shape == (4, 1, 32, 32)
    assert capsys.readouterr().err == ''


def test_train_seconds_and_images_per_s_count_training_epochs_only(tmp_path):
    "metrics.json's train_seconds and train_images_per_s count the training phases' time, not validation time."
    class SetTimes(Callback):   # known phase times: 2 s per training epoch, 100 s per validation epoch
        def after_fit(self, learn):
            for h in learn.metrics.history: h['time'] = 2. if h['phase'] == 'train' else 100.
    train_diffusion(out=tmp_path, quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=4, n_fid=0,
                    cbs=[SetTimes()], progress=False)
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert m['n_train'] == 64 and m['train_seconds'] == 2. and m['train_images_per_s'] == 32.


def test_sample_reports_the_network_evaluations_of_a_checkpoint_without_a_quick_entry(tmp_path, monkeypatch):
    "sample_to_files's `nfe` counts the steps its sampler takes, also for a checkpoint whose config has no 'quick' entry (full size)."
    r, tiny = recipe('linear'), recipe('linear', quick=True)['unet']   # the full 1000-step schedule, a tiny network
    path = save_trained(diffusers_unet(**tiny), tmp_path/'m.safetensors',
                        dict(schedule='linear', unet=tiny, value_range=r['value_range'], linear=r['linear']))   # no 'quick'
    calls = []
    def count_calls(sampler, n, **kw):   # what the sampler would do, without doing it
        calls.append(n)
        return torch.zeros(n, 1, 32, 32)
    monkeypatch.setattr('miniai.cli.sample_images', count_calls)
    res = sample_to_files(path, tmp_path/'out', n=2, method='ddpm', progress=False)
    assert calls == [2] and res['nfe'] == 1000 == r['linear']['n_steps']
