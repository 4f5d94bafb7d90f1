"""The `miniai sample` and `miniai fid` commands (the `train` command is tested in test_diffusion.py)."""
import json
from functools import partial
import numpy as np
from pathlib import Path
import pytest
import torch
from safetensors.torch import save_file
from miniai.cli import load_trained, main, recipe, sample_to_files, save_trained
from miniai.diffusion.ddpm import diffusers_unet, init_ddpm
from miniai.distributed import load_samples


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    r = recipe('cosine', quick=True)
    model = init_ddpm(diffusers_unet(**r['unet']))
    return save_trained(model, tmp_path/'run'/'model.safetensors', dict(schedule='cosine', quick=True, unet=r['unet'],
                        value_range=r['value_range'], linear=None)), model


def test_load_trained_round_trip(checkpoint):
    path, model = checkpoint
    loaded, cfg = load_trained(path.parent, device='cpu')  # a folder works too
    assert cfg['schedule'] == 'cosine' and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_load_trained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no weights file'): load_trained(tmp_path/'missing.safetensors')
    save_file({'w': torch.zeros(1)}, str(tmp_path/'plain.safetensors'))
    with pytest.raises(ValueError, match='no miniai model config'): load_trained(tmp_path/'plain.safetensors')


def test_sample_is_seeded_and_in_range(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path, _ = checkpoint
    r = sample_to_files(path, tmp_path/'a', n=3, steps=3, seed=5, progress=False)
    main(['sample', str(path), '--out', str(tmp_path/'b'), '-n', '3', '--steps', '3', '--seed', '5', '--no-progress'])
    a, b = load_samples(tmp_path/'a'/'samples.npy'), load_samples(tmp_path/'b'/'samples.npy')
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
    assert r['nfe'] == 2 and (tmp_path/'a'/'samples.png').is_file()
    sample_to_files(path, tmp_path/'c', n=3, steps=3, seed=6, progress=False)
    assert not torch.equal(a, load_samples(tmp_path/'c'/'samples.npy'))


def test_sample_and_fid_bad_arguments(checkpoint, tmp_path):
    path, _ = checkpoint
    for bad in (['sample', str(path), '--eta', '-1'], ['sample', str(path), '--steps', '0'], ['sample', str(path), '-n', '0']):
        with pytest.raises(SystemExit) as e: main(bad)
        assert e.value.code == 2
    with pytest.raises(FileNotFoundError, match='no sample file'): main(['fid', str(tmp_path/'none.npy'), '--quick'])


# --- class-conditional models: `train --conditional`, `sample --label --guidance`, `fid --labels` ---

@pytest.fixture
def cond_checkpoint(tmp_path):
    torch.manual_seed(1)
    r = recipe('cosine', quick=True)
    model = init_ddpm(diffusers_unet(**r['unet'], n_classes=10))
    torch.nn.init.normal_(model.unet.conv_out.weight, std=0.05)  # an untrained model whose output depends on the class
    return save_trained(model, tmp_path/'cond'/'model.safetensors', dict(schedule='cosine', quick=True, unet=r['unet'],
                        value_range=r['value_range'], linear=None, n_classes=10, p_uncond=0.1)), model


@pytest.fixture
def tiny_classifier(tmp_path):
    from miniai.models.resnet import fashion_classifier, save_weights, classifier_metadata
    torch.manual_seed(2)
    nfs = (4, 8)
    return save_weights(fashion_classifier(nfs=nfs), tmp_path/'clf.safetensors', classifier_metadata(nfs, 0.1)), nfs


def test_guidance_scales_match_direct_model_calls(cond_checkpoint, monkeypatch):
    "Scale 0 is the null class (unconditional), scale 1 the conditional model, scale w the CFG mix: checked against the network."
    from miniai.cli import batch_seed, make_sampler, sample_images
    from miniai.diffusion.cosine import cosine_ddim_sample
    from miniai.diffusion.guidance import cfg_mix
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    _, model = cond_checkpoint
    model.eval()
    y = torch.tensor([3, 7, 7])
    def draw(w, labels=y): return sample_images(make_sampler(model, steps=4, quick=True, guidance=w), 3, seed=0, device='cpu',
                                                progress=False, labels=labels)
    def direct(net): return cosine_ddim_sample(net, (3, 1, 32, 32), 4, generator=torch.Generator().manual_seed(batch_seed(0, 0)), clamp=0.5)/0.5
    assert torch.equal(draw(0.), draw(1., labels=None))                         # w=0: the unconditional model
    torch.testing.assert_close(draw(1.), direct(lambda x, t: model(x, t, y)))   # w=1: the conditional model
    torch.testing.assert_close(draw(2.5), direct(lambda x, t: cfg_mix(model(x, t, y), model(x, t), 2.5)), atol=1e-5, rtol=1e-4)
    assert not torch.equal(draw(1.), draw(0.))                                  # the class does change the samples


def test_sample_conditional_writes_labels(cond_checkpoint, tmp_path, monkeypatch):
    import numpy as np
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path, _ = cond_checkpoint
    main(['sample', str(path), '--out', str(tmp_path/'a'), '-n', '5', '--steps', '3', '--label', '2', '9', '--guidance', '2',
          '--no-progress'])
    assert np.load(tmp_path/'a'/'labels.npy').tolist() == [2, 9, 2, 9, 2]
    r = sample_to_files(path, tmp_path/'b', n=5, steps=3, labels=[2, 9], guidance=2., progress=False)
    assert r['conditional'] and r['guidance'] == 2.
    assert torch.equal(load_samples(tmp_path/'a'/'samples.npy'), load_samples(tmp_path/'b'/'samples.npy'))
    sample_to_files(path, tmp_path/'c', n=12, steps=3, progress=False)      # no labels: every class in turn
    assert np.load(tmp_path/'c'/'labels.npy').tolist() == list(range(10)) + [0, 1]


def test_sample_label_and_guidance_errors(checkpoint, cond_checkpoint, tmp_path):
    (upath, _), (cpath, _) = checkpoint, cond_checkpoint
    for bad in (['sample', str(upath), '--label', '1'], ['sample', str(upath), '--guidance', '3'],
                ['sample', str(cpath), '--label', '10'], ['sample', str(cpath), '--label', '-1'],
                ['sample', str(cpath), '--guidance', '-0.5'], ['sample', str(cpath), '--guidance', 'inf']):
        with pytest.raises(SystemExit) as e: main(bad)
        assert e.value.code == 2, bad
    with pytest.raises(ValueError, match='unconditional'): sample_to_files(upath, tmp_path/'x', n=2, labels=[1])
    with pytest.raises(ValueError, match=r'class indices in 0\.\.9'): sample_to_files(cpath, tmp_path/'x', n=2, steps=2, labels=[12])
    assert not (tmp_path/'x').exists()  # nothing half-written


def test_class_accuracy_matches_the_classifier(tiny_classifier):
    "Accuracy per class against the classifier's own argmax (an independent count)."
    from miniai.cli import class_accuracy
    from miniai.models.resnet import load_fashion_classifier
    path, _ = tiny_classifier
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 32, 32)*2 - 1, torch.arange(40) % 4   # classes 0..3 only
    pred = load_fashion_classifier(path, 'cpu')(x).argmax(1)
    r = class_accuracy(x, y, classifier=path)
    assert r['accuracy'] == pytest.approx((pred == y).float().mean().item())
    for c in range(10):
        if c < 4: assert r['per_class'][c] == pytest.approx((pred[y == c] == c).float().mean().item(), abs=1e-4)
        else: assert r['per_class'][c] is None    # no samples of that class
    with pytest.raises(ValueError, match='class indices'): class_accuracy(x, y + 7, classifier=path)
    with pytest.raises(ValueError, match='40 labels for 39 images'): class_accuracy(x[:39], y, classifier=path)


def test_train_conditional_end_to_end(tmp_path, tiny_classifier, monkeypatch):
    "A few seconds' conditional run: labels go in, the checkpoint remembers it, grid and FID samples cover every class."
    from miniai.cli import train_diffusion, load_trained
    from miniai.fid import ImageEval
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    clf, _ = tiny_classifier
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=4), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    ie = ImageEval(feats, torch.rand(64, 1, 32, 32)*2 - 1)
    res = train_diffusion(out=tmp_path, quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=10, n_fid=20,
                          evaluator=ie, classifier=clf, conditional=True, guidance=2., progress=False)
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert m['conditional'] and m['guidance'] == 2. and 0 <= m['class_accuracy'] <= 1 and len(m['class_accuracy_per_class']) == 10
    assert res['learn'].n_inp == 3
    model, cfg = load_trained(tmp_path, device='cpu')
    assert cfg['n_classes'] == 10 and model.n_classes == 10
    with pytest.raises(ValueError, match='needs `conditional=True`'): train_diffusion(out=tmp_path/'u', quick=True, guidance=2.)
    with pytest.raises(ValueError, match='p_uncond'): train_diffusion(out=tmp_path/'u', quick=True, conditional=True, p_uncond=2.)


def test_sample_png_files_round_trip(checkpoint, tmp_path, monkeypatch):
    "`sample --png` writes one 8-bit PNG per sample, in order; `fid` reads the folder back to within one grey level."
    from miniai.cli import load_sample_images
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path, _ = checkpoint
    main(['sample', str(path), '--out', str(tmp_path/'s'), '-n', '11', '--steps', '3', '--png', '--no-progress'])
    files = sorted((tmp_path/'s'/'png').glob('*.png'))
    assert [f.name for f in files][:2] == ['00000.png', '00001.png'] and len(files) == 11
    x, back = load_samples(tmp_path/'s'/'samples.npy'), load_sample_images(tmp_path/'s'/'png')
    assert back.shape == x.shape and (back - x).abs().max() <= 1/127.5 + 1e-6
    assert not list((tmp_path/'s'/'png').glob('.*'))   # no temporary files left


def test_train_checkpoint_resume_is_exact(tmp_path, monkeypatch):
    "A `--checkpoint` run stopped after epoch 1 and started again ends with the same weights as one uninterrupted run."
    from safetensors.torch import load_file
    from miniai.cli import train_diffusion
    from miniai.fid import ImageEval
    from miniai.learner import Callback, CancelFitException
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=4), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    ie = ImageEval(feats, torch.rand(64, 1, 32, 32)*2 - 1)
    kw = dict(quick=True, limit=(64, 32), bs=32, epochs=2, sample_steps=3, n_grid=4, n_fid=0, evaluator=ie, progress=False)

    class StopAfterFirstEpoch(Callback):
        order = 90  # after CheckpointCB has saved epoch 1
        def after_epoch(self, learn):
            if not learn.training and learn.epoch == 0: raise CancelFitException()

    train_diffusion(out=tmp_path/'whole', **kw)
    train_diffusion(out=tmp_path/'parts', checkpoint=True, cbs=[StopAfterFirstEpoch()], **kw)
    assert torch.load(tmp_path/'parts'/'checkpoint.pt', weights_only=True)['epoch'] == 1
    train_diffusion(out=tmp_path/'parts', checkpoint=True, **kw)   # the same command again: epoch 2 only
    m, whole = (json.loads((tmp_path/d/'metrics.json').read_text()) for d in ('parts', 'whole'))
    assert m['resumed_from_epoch'] == 1 and 'checkpoint.pt' in m['files']
    assert (m['train_loss'], m['valid_loss']) == (whole['train_loss'], whole['valid_loss'])  # both epochs: one from the checkpoint
    a, b = load_file(str(tmp_path/'whole'/'model.safetensors')), load_file(str(tmp_path/'parts'/'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compiled_training_sees_one_batch_shape(monkeypatch, tmp_path):
    "With `compile`, each epoch's incomplete batch is dropped (a second shape would compile the model again)."
    from miniai.cli import train_diffusion
    from miniai.learner import Callback
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, **kw: None)   # the wiring, not the compiler
    class Sizes(Callback):
        def __init__(self): self.n = set()
        def after_loss(self, learn):
            if learn.training: self.n.add(learn.preds.shape[0])
    sizes = {}
    for compile_ in (None, 'default'):
        cb = Sizes()
        train_diffusion(out=tmp_path/str(compile_), quick=True, compile=compile_, n_fid=0, epochs=1, n_grid=4,
                        limit=(74, 16), progress=False, cbs=[cb])
        sizes[compile_] = cb.n
    assert sizes == {None: {32, 10}, 'default': {32}}


# --- refusing what would go wrong later: resumes with other settings, bad arguments, used sample folders ---

TRAIN_KW = dict(quick=True, limit=(64, 32), bs=32, epochs=1, sample_steps=3, n_grid=4, n_fid=0, progress=False)

@pytest.fixture(scope='module')
def _finished_run(tmp_path_factory):
    "A tiny finished `checkpoint=True` run (trained once for the tests below; each copies it)."
    from miniai.cli import train_diffusion
    out = tmp_path_factory.mktemp('finished')/'run'
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MINIAI_DEVICE', 'cpu')
        train_diffusion(out=out, checkpoint=True, **TRAIN_KW)
    return out

@pytest.fixture
def finished_run(_finished_run, tmp_path, monkeypatch):
    "A copy of the tiny finished run in this test's folder (sampling on the CPU)."
    import shutil
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    return Path(shutil.copytree(_finished_run, tmp_path/'run'))

def _no_training(monkeypatch):
    "From here on, loading the data or fitting fails the test: what follows must be refused before any work."
    from miniai.learner import Learner
    def fail(*a, **k): raise AssertionError('started working before refusing the arguments')
    monkeypatch.setattr('miniai.cli.fashion_dls', fail)
    monkeypatch.setattr(Learner, 'fit', fail)


def test_train_resume_refuses_other_settings(finished_run, monkeypatch, capsys):
    "A checkpoint stores its run's training settings; resuming with others is refused, naming each difference."
    from miniai.accel import CheckpointError
    from miniai.cli import train_diffusion
    tmp_path = finished_run
    extra = torch.load(tmp_path/'checkpoint.pt', weights_only=True)['extra']
    assert extra['settings']['lr'] == 4e-3 and extra['settings']['limit'] == [64, 32] and len(extra['history']['losses']) == 2
    metrics = (tmp_path/'metrics.json').read_bytes()
    _no_training(monkeypatch)
    for change, names in ((dict(lr=1e-2), ['lr']), (dict(bs=16, seed=1), ['bs', 'seed']), (dict(epochs=2), ['epochs']),
                          (dict(schedule='linear'), ['schedule']), (dict(conditional=True), ['conditional', 'p_uncond']),
                          (dict(ema_decay=0.9, limit=(32, 32)), ['ema_decay', 'limit']), (dict(grad_clip=1.), ['grad_clip']),
                          (dict(grad_accum=2), ['grad_accum'])):
        with pytest.raises(CheckpointError, match='was trained with other settings') as e:
            train_diffusion(out=tmp_path, checkpoint=True, **{**TRAIN_KW, **change})
        assert all(f'{n} ' in str(e.value) for n in names), (change, str(e.value))
    with pytest.raises(SystemExit) as e:
        main(['train', '--quick', '--out', str(tmp_path), '--checkpoint', '--lr', '0.01', '--no-progress'])
    assert e.value.code == 2 and 'lr 0.004 (checkpoint) vs 0.01 (now)' in capsys.readouterr().err
    assert (tmp_path/'metrics.json').read_bytes() == metrics   # refused runs change nothing


def test_train_resume_refuses_other_training_images(finished_run, monkeypatch):
    "Same settings, other training images (another copy or subset of the data): refused before any training."
    import re
    import miniai.cli as cli
    from miniai.accel import CheckpointError
    from miniai.learner import Learner
    saved = torch.load(finished_run/'checkpoint.pt', weights_only=True)['extra']['settings']['data']
    assert re.fullmatch('[0-9a-f]{16}', saved)
    def fail(*a, **k): raise AssertionError('trained before refusing')
    monkeypatch.setattr(Learner, 'fit', fail)
    real = cli.fashion_dls
    def other(*a, **k):   # one image flipped: another copy of the data
        dls = real(*a, **k); dls.train.images[0] = dls.train.images[0].flip(-1); return dls
    monkeypatch.setattr(cli, 'fashion_dls', other)
    with pytest.raises(CheckpointError, match=rf"data '{saved}' \(checkpoint\) vs '[0-9a-f]{{16}}' \(now\) \(a hash of the training images"):
        cli.train_diffusion(out=finished_run, checkpoint=True, **TRAIN_KW)
    # a checkpoint from before the hash was recorded is resumed on trust, with a warning
    monkeypatch.setattr(cli, 'fashion_dls', real)
    ck = torch.load(finished_run/'checkpoint.pt', weights_only=True)
    del ck['extra']['settings']['data']
    torch.save(ck, finished_run/'checkpoint.pt')
    monkeypatch.undo()   # fitting is allowed again: a finished run trains nothing
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    with pytest.warns(UserWarning, match='does not record its training images'):
        res = cli.train_diffusion(out=finished_run, checkpoint=True, **TRAIN_KW)
    assert res['learn'].start_epoch == 1


def test_train_finished_rerun_keeps_history(finished_run, monkeypatch):
    "Starting a finished `--checkpoint` run again trains nothing; metrics.json and loss.png keep every epoch's losses."
    from miniai.cli import train_diffusion
    tmp_path = finished_run
    m1, png = json.loads((tmp_path/'metrics.json').read_text()), (tmp_path/'loss.png').read_bytes()
    res = train_diffusion(out=tmp_path, checkpoint=True, **{**TRAIN_KW, 'n_grid': 8})   # sampling settings may change
    m2 = json.loads((tmp_path/'metrics.json').read_text())
    assert res['learn'].start_epoch == 1 and m2['resumed_from_epoch'] == 1 and len(m2['train_loss']) == 1
    for k in ('train_loss', 'valid_loss', 'train_seconds', 'train_images_per_s'): assert m2[k] == m1[k], k
    assert (tmp_path/'loss.png').read_bytes() == png
    # metrics.json is replaced atomically: a write that fails half-way leaves the old file whole
    write_text = Path.write_text
    def half(self, s, *a, **k):
        if 'metrics.json' not in self.name: return write_text(self, s, *a, **k)
        write_text(self, s[:20]); raise OSError('disk full')
    monkeypatch.setattr(Path, 'write_text', half)
    with pytest.raises(OSError, match='disk full'): train_diffusion(out=tmp_path, checkpoint=True, **TRAIN_KW)
    assert json.loads((tmp_path/'metrics.json').read_text()) == m2 and not list(tmp_path.glob('.*'))


def test_train_bad_arguments_fail_before_any_work(tmp_path, monkeypatch, capsys):
    from miniai.cli import train_diffusion
    _no_training(monkeypatch)
    for kw, err, msg in ((dict(classifier=tmp_path/'none.safetensors', n_fid=4), FileNotFoundError, 'no classifier weights'),
                         (dict(n_fid=1), ValueError, '`n_fid` must be 0'), (dict(lr=float('inf')), ValueError, '`lr` must be a finite'),
                         (dict(lr=float('nan')), ValueError, '`lr` must be a finite number > 0'), (dict(ema_decay=1.), ValueError, '`ema_decay`'),
                         (dict(n_grid=0), ValueError, '`n_grid` must be >= 1'), (dict(method='ddpm'), ValueError, "`method` 'ddpm' with `schedule` 'cosine'")):
        with pytest.raises(err, match=msg): train_diffusion(out=tmp_path/'run', **{**TRAIN_KW, **kw})
    for bad, msg in ((['--lr', 'inf'], '--lr'), (['--lr', 'nan'], '--lr'), (['--n-fid', '1'], '--n-fid'),
                     (['--classifier', str(tmp_path/'none.safetensors')], '--classifier'), (['--n-grid', '0'], '--n-grid'),
                     (['--sampler', 'ddpm'], "--sampler 'ddpm' with --schedule 'cosine'"), (['--sample-steps', '1'], '--sample-steps 1: `steps` must be >= 2'),
                     (['--ema-decay', '1'], '--ema-decay must be in [0, 1)'), (['--guidance', '2'], '--guidance needs --conditional')):
        with pytest.raises(SystemExit) as e: main(['train', '--quick', '--out', str(tmp_path/'run'), '--no-progress'] + bad)
        assert e.value.code == 2 and msg in capsys.readouterr().err, bad
    assert not (tmp_path/'run').exists()


def test_pictures_are_written_atomically(tmp_path, monkeypatch):
    "A PNG write that fails half-way leaves the previous file whole, and no temporary file."
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from miniai.cli import save_image_grid, save_loss_plot
    x = torch.zeros(4, 1, 8, 8)
    grid, loss = save_image_grid(x, tmp_path/'g.png', ncols=2), save_loss_plot([1., .5], [(2, .7)], tmp_path/'l.png')
    old = grid.read_bytes(), loss.read_bytes()
    def half(fname, *a, **k): Path(fname).write_bytes(b'half a png'); raise OSError('disk full')
    monkeypatch.setattr(plt, 'imsave', half)
    monkeypatch.setattr(Figure, 'savefig', lambda self, fname, *a, **k: half(fname))
    with pytest.raises(OSError): save_image_grid(x, grid)
    with pytest.raises(OSError): save_loss_plot([1.], [], loss)
    assert (grid.read_bytes(), loss.read_bytes()) == old and sorted(p.name for p in tmp_path.iterdir()) == ['g.png', 'l.png']


def test_sample_refuses_a_used_folder(checkpoint, cond_checkpoint, tmp_path, monkeypatch, capsys):
    "No mix of an old and a new sample set: a non-empty --out needs --force, which removes only `sample`'s own files."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    (upath, _), (cpath, _) = checkpoint, cond_checkpoint
    out = tmp_path/'s'
    main(['sample', str(cpath), '--out', str(out), '-n', '6', '--steps', '3', '--png', '--no-progress'])  # with labels.npy
    (out/'notes.txt').write_text('mine'); (out/'png'/'keep.txt').write_text('mine too')
    with pytest.raises(SystemExit) as e: main(['sample', str(upath), '--out', str(out), '-n', '2', '--steps', '3', '--no-progress'])
    assert e.value.code == 2 and '--force' in capsys.readouterr().err
    with pytest.raises(FileExistsError, match='force=True'): sample_to_files(upath, out, n=2, steps=3, progress=False)
    assert len(load_samples(out/'samples.npy')) == 6   # refused: nothing changed
    main(['sample', str(upath), '--out', str(out), '-n', '2', '--steps', '3', '--png', '--force', '--no-progress'])
    assert sorted(f.name for f in out.iterdir()) == ['notes.txt', 'png', 'samples.npy', 'samples.png']  # the old labels.npy went
    assert sorted(f.name for f in (out/'png').iterdir()) == ['00000.png', '00001.png', 'keep.txt']
    assert len(load_samples(out/'samples.npy')) == 2 and (out/'notes.txt').read_text() == 'mine'
    sample_to_files(upath, out, n=2, steps=3, force=True, progress=False)   # no PNGs this time: the old ones go
    assert sorted(f.name for f in (out/'png').iterdir()) == ['keep.txt']
    (tmp_path/'file').write_text('x')
    with pytest.raises(FileExistsError, match='is a file'): sample_to_files(upath, tmp_path/'file', n=2, force=True)


def test_console_command_reports_user_errors_in_one_line(tmp_path, monkeypatch, capsys):
    "The `miniai` command (console_main): a missing file is one line and status 1; MINIAI_DEBUG=1 raises; main raises."
    import configparser
    from miniai.cli import console_main
    monkeypatch.delenv('MINIAI_DEBUG', raising=False)
    assert console_main(['fid', str(tmp_path/'none.npy'), '--quick']) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"miniai fid: error: no sample file at {tmp_path/'none.npy'}") and 'Traceback' not in err
    assert console_main(['sample', str(tmp_path/'nope'), '--out', str(tmp_path/'o')]) == 1
    assert capsys.readouterr().err.startswith('miniai sample: error: ')
    monkeypatch.setenv('MINIAI_DEBUG', '1')
    with pytest.raises(FileNotFoundError): console_main(['fid', str(tmp_path/'none.npy'), '--quick'])
    cfg = configparser.ConfigParser(); cfg.read(Path(__file__).resolve().parents[1]/'settings.ini')
    assert cfg['DEFAULT']['console_scripts'] == 'miniai=miniai.cli:console_main'   # what `pip install` wires up


def test_train_force_replaces_the_run_without_its_old_checkpoint(finished_run, tmp_path):
    "`force`: a failure before training keeps the old run whole; a new run deletes the old checkpoint.pt (nothing stale"
    " to resume) and overwrites the rest; `force` with `checkpoint` still continues a matching checkpoint."
    import shutil
    from miniai.cli import TRAIN_FILES, train_diffusion
    from miniai.data import MissingDataError
    again = Path(shutil.copytree(finished_run, tmp_path/'again'))
    before = {f: (finished_run/f).read_bytes() for f in TRAIN_FILES}
    with pytest.raises(MissingDataError): train_diffusion(out=finished_run, force=True, data_dir=tmp_path/'typo', **TRAIN_KW)
    assert {f: (finished_run/f).read_bytes() for f in TRAIN_FILES} == before       # a refused run deletes nothing
    res = train_diffusion(out=finished_run, force=True, **{**TRAIN_KW, 'seed': 7})
    m = res['metrics']
    assert not (finished_run/'checkpoint.pt').exists() and m['resumed_from_epoch'] is None and m['seed'] == 7
    assert sorted(f for f in TRAIN_FILES if (finished_run/f).exists()) == sorted(m['files'])
    # the record says what ran: mixed precision is CUDA-only, so a CPU run trained in float32 whatever was asked
    assert (m['precision'], m['precision_requested']) == (None, 'bf16')
    assert train_diffusion(out=again, force=True, checkpoint=True, **TRAIN_KW)['metrics']['resumed_from_epoch'] == 1


def test_fid_of_a_folder_reads_the_sample_set_not_pictures(finished_run, tmp_path):
    "A `sample` output folder is read through its samples.npy; a `train` folder (grid and loss plot) is refused by name."
    from miniai.cli import load_sample_images, sample_to_files
    with pytest.raises(ValueError, match='holds loss.png and samples.png, pictures that .miniai train. writes, not a sample set'):
        load_sample_images(finished_run)
    sample_to_files(finished_run, tmp_path/'s', n=3, steps=3, png=True, progress=False)
    x = load_sample_images(tmp_path/'s')
    assert torch.equal(x, load_samples(tmp_path/'s'/'samples.npy')) and x.shape == (3, 1, 32, 32)
    assert load_sample_images(tmp_path/'s'/'png').shape == (3, 1, 32, 32)   # the PNG folder itself still works


def test_python_dash_m_runs_the_console_command(tmp_path):
    "`python -m miniai.cli` is the console command (importing the module runs nothing): usage with status 0, and a"
    " user's error as one line with status 1."
    import os, subprocess, sys
    env = {k: v for k, v in os.environ.items() if k != 'MINIAI_DEBUG'}
    run = lambda *a: subprocess.run([sys.executable, '-m', 'miniai.cli', *a], capture_output=True, text=True, cwd=tmp_path,
                                    env=env, timeout=300)
    r = run('--help')
    assert r.returncode == 0 and r.stdout.startswith('usage:') and 'train' in r.stdout
    r = run('fid', str(tmp_path/'none.npy'), '--quick')
    assert r.returncode == 1 and r.stderr.startswith(f"miniai fid: error: no sample file at {tmp_path/'none.npy'}")
    r = subprocess.run([sys.executable, '-c', 'import miniai.cli'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == ''


def test_uint8_sample_file_is_read_as_pixels(tmp_path):
    "A uint8 .npy skipped the uint8 check (`.float()` came first): all-black pixels 0 were scored as mid-grey floats."
    from miniai.cli import load_sample_images
    px = np.random.default_rng(0).integers(0, 256, (3, 1, 32, 32), dtype=np.uint8)
    np.save(tmp_path/'u8.npy', px)
    x = load_sample_images(tmp_path/'u8.npy')
    assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(px).float()/127.5 - 1)


def test_png_folder_with_upper_case_suffixes_is_read_whole(tmp_path):
    "Files named `.PNG` (cameras, Windows tools) were skipped silently: the folder's other images were scored alone."
    from PIL import Image
    from miniai.cli import load_sample_images
    px = np.random.default_rng(1).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    for i, name in enumerate(['a.png', 'b.PNG', 'c.Png']): Image.fromarray(px[i]).save(tmp_path/name)
    (tmp_path/'notes.txt').write_text('not an image')
    x = load_sample_images(tmp_path)
    assert x.shape == (3, 1, 32, 32) and torch.equal(x[:, 0], torch.from_numpy(px).float()/127.5 - 1)


# --- properties a mutation review found unpinned ---

def test_batch_seeds_differ_per_batch_and_set():
    "Every batch of a sample set gets its own noise: no two (seed, k) share a seed, so batches never repeat."
    from miniai.cli import batch_seed, sample_images
    seeds = {batch_seed(s, k) for s in range(4) for k in range(50)}
    assert len(seeds) == 200
    x = sample_images(lambda shape, g, labels: torch.randn(shape, generator=g), 6, bs=2, seed=0, device='cpu',
                      img_shape=(1, 2, 2), progress=False)
    assert not torch.equal(x[:2], x[2:4]) and not torch.equal(x[2:4], x[4:])


def test_cli_defaults_and_data_dir_reach_the_functions(checkpoint, monkeypatch, tmp_path):
    "`train` defaults to seed 42, `sample` to batches of 512; `--data-dir` reaches training and FID; full FID uses every reference."
    import miniai.cli as cli
    got = {}
    monkeypatch.setattr(cli, 'train_diffusion', lambda **kw: got.setdefault('train', kw) and {})
    monkeypatch.setattr(cli, 'fid_of_samples', lambda samples, **kw: got.setdefault('fid', kw) and {})
    monkeypatch.setattr(cli, 'fashion_image_eval', lambda path, **kw: got.setdefault('eval', kw))
    monkeypatch.setattr(cli, 'sample_to_files', lambda *a, **kw: got.setdefault('sample', kw) and {})
    monkeypatch.setattr(cli, 'fid_classifier_file', lambda *a: 'clf.safetensors')
    monkeypatch.delenv('MINIAI_QUICK', raising=False)
    for argv in (['train', '--out', str(tmp_path/'r'), '--data-dir', 'D1', '--epochs', '1'],
                 ['fid', str(tmp_path/'s.npy'), '--data-dir', 'D2'], ['sample', str(checkpoint[0]), '--out', str(tmp_path/'s')]):
        try: cli.main(argv)
        except Exception: pass   # the fakes return nothing useful; only what reached them matters
    assert got['train']['data_dir'] == 'D1' and got['train']['seed'] == 42 and got['fid']['data_dir'] == 'D2'
    assert got['sample']['bs'] == 512 and got['sample']['seed'] == 0 and got['sample']['eta'] == 1.
    cli.fid_evaluator(quick=False, data_dir='D3'); assert got['eval']['n_ref'] is None and got['eval']['data_dir'] == 'D3'
    del got['eval']; cli.fid_evaluator(quick=True); assert got['eval']['n_ref'] == 2000


def test_sample_grid_shows_8_rows_of_every_class(cond_checkpoint, tmp_path, monkeypatch):
    "A class-conditional set's grid has one column per class and 8 rows (80 images); an unconditional one 8x8."
    import miniai.cli as cli
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    grids = []
    def spy(images, path, ncols=8, **kw): grids.append((len(images), ncols)); return str(path)
    monkeypatch.setattr(cli, 'save_image_grid', spy)
    sample_to_files(cond_checkpoint[0], tmp_path/'c', n=90, steps=2, bs=90, progress=False)
    assert grids == [(80, 10)]


def test_cli_defaults_equal_the_api_defaults():
    "`miniai train` / `miniai sample` without options do what `train_diffusion()` / `sample_to_files()` do."
    import inspect
    import miniai.cli as cli
    rename = {'sampler': 'method', 'label': 'labels'}
    p = cli._parser()
    for argv, f, fill in ((['train'], cli.train_diffusion, lambda a: a), (['sample', 'ck'], cli.sample_to_files, partial(cli._ddim_settings, p))):
        parsed = {rename.get(k, k): v for k, v in vars(fill(p.parse_args(argv))).items()}
        api = {k: v.default for k, v in inspect.signature(f).parameters.items() if v.default is not inspect.Parameter.empty}
        shared = sorted(set(parsed) & set(api))
        assert len(shared) >= 10, shared
        assert {k: parsed[k] for k in shared} == {k: api[k] for k in shared}, f.__name__


def test_loss_plot_draws_the_validation_losses(tmp_path):
    "loss.png shows the per-epoch validation losses: the picture differs from one drawn without them."
    from miniai.cli import save_loss_plot
    from PIL import Image
    losses = [1., .8, .6, .5, .45, .4]
    a = np.array(Image.open(save_loss_plot(losses, [], tmp_path/'a.png')))
    b = np.array(Image.open(save_loss_plot(losses, [(3, .9), (6, .7)], tmp_path/'b.png')))
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_class_accuracy_refuses_a_label_count_mismatch_before_any_classifier_work(tmp_path):
    "class_accuracy refuses labels and images of different lengths before it looks for (or trains) a classifier."
    from miniai.cli import class_accuracy
    with pytest.raises(ValueError, match='2 labels for 3 images'):
        class_accuracy(torch.zeros(3, 1, 32, 32), torch.tensor([0, 1]), quick=True, classifier=tmp_path/'missing.safetensors')
