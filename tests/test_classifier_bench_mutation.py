"""Tests found by a mutation run on bench/train_classifier.py and bench/bench_ddpm.py.

The GPU measurements these scripts make are checked here on the CPU with the slow parts (training, data, sampling)
replaced by stand-ins and the clock replaced by one that only the stand-ins advance, so that images/s, ratios, timed
spans, synchronisation, the settings each run gets and the JSON written can be checked exactly, in about a second each.
"""
import json
from types import SimpleNamespace
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.learner import Callback, CancelFitException


class FakeClock:
    "A stand-in for the `time` module: `perf_counter` reads `now`, which only the test's stand-ins advance; logs its reads."
    def __init__(self, log=None): self.now, self.log = 0., [] if log is None else log
    def perf_counter(self):
        self.log.append(('t', self.now))
        return self.now
    def advance(self, s): self.now += s


def _sync_recorder(log):
    return lambda device=None: log.append(('sync', str(device)))


def _each_clock_read_follows_a_sync(log):
    "True if every clock read in `log` comes right after a device synchronisation."
    return all(i > 0 and log[i - 1][0] == 'sync' for i, e in enumerate(log) if e[0] == 't')


# ================================================================ bench/train_classifier.py
@pytest.fixture
def tc(load_script):
    return load_script('bench/train_classifier.py')


def _score(kw):
    "Stand-in accuracy of a recipe: plain accuracy grows with the batch size; flip-TTA accuracy orders recipes the other way."
    return 0.90 + kw.get('bs', 1024)/1e5 + (0.001 if kw.get('label_smoothing') else 0.)


class MixedPrecision:
    "Stand-in for miniai's MixedPrecision callback (the script recognises it by its class name)."


class FakeClassifierRun:
    """Stand-ins for `train_fashion_classifier`, `classifier_accuracy`, `fashion_classifier_learner`, `train_throughput`,
    `synchronize` and `time`: every call is recorded; a training run of E epochs takes 10.25*E seconds on the fake clock."""
    N_TRAIN, N_TEST = 600, 100

    def __init__(self, tc, monkeypatch):
        self.log, self.trained, self.learners, self.throughput_calls = [], [], [], []
        self.clock = FakeClock(self.log)
        monkeypatch.setattr(tc, 'time', self.clock)
        monkeypatch.setattr(tc, 'synchronize', _sync_recorder(self.log))
        monkeypatch.setattr(tc, 'train_fashion_classifier', self.train)
        monkeypatch.setattr(tc, 'classifier_accuracy', self.accuracy)
        monkeypatch.setattr(tc, 'fashion_classifier_learner', self.learner)
        monkeypatch.setattr(tc, 'train_throughput', self.train_throughput)
        monkeypatch.setattr(tc, 'run_environment', lambda: dict(device='cpu'))

    def _learn(self, kw):
        mp = MixedPrecision()
        mp.enabled = bool(kw.get('mixed_precision'))
        dls = SimpleNamespace(train=SimpleNamespace(dataset_len=self.N_TRAIN, bs=kw.get('bs', 1024)),
                              valid=SimpleNamespace(dataset_len=self.N_TEST))
        return SimpleNamespace(model=kw, dls=dls, metrics=SimpleNamespace(history=[dict(loss=1.)]), cbs=[mp], kw=kw)

    def train(self, epochs=5, save_to=None, **kw):
        self.log.append(('train', epochs))
        self.trained.append(dict(kw, epochs=epochs, save_to=save_to))
        self.clock.advance(10.25*epochs)
        return self._learn(kw)

    def accuracy(self, model, dl, tta=False):
        assert dl.dataset_len == self.N_TEST, 'accuracy must be measured on the validation (test / held-out) loader'
        return round(1.9 - _score(model), 4) if tta else round(_score(model), 4)

    def learner(self, **kw):
        learn = self._learn(kw)
        self.learners.append(kw)
        return learn

    def train_throughput(self, learn, epochs=1, warmup=1):
        self.throughput_calls.append(dict(epochs=epochs, warmup=warmup, mixed_precision=learn.kw.get('mixed_precision')))
        return 1000.4 if learn.kw.get('mixed_precision') else 500.6


def test_one_run_times_the_training_and_counts_images_per_second(tc, monkeypatch):
    "one_run: wall time of training only, synchronised; images/s = epochs*(train+test images)/s; accuracies; target."
    fake = FakeClassifierRun(tc, monkeypatch)
    r = tc.one_run(5, dict(bs=256, seed=1), None)
    assert r['wall_s'] == 51.2 and r['images_per_s_incl_eval'] == 68   # 51.25 s; 5*(600 + 100)/51.25 = 68.3
    assert r['test_accuracy'] == round(_score(dict(bs=256)), 4) and r['test_accuracy_tta'] == round(1.9 - _score(dict(bs=256)), 4)
    assert r['n_test'] == 100 and r['epochs'] == 5 and r['history'] == [dict(loss=1.)]
    assert r['target'] == 0.932 and r['target_met'] is False and 'weights' not in r
    assert fake.trained == [dict(bs=256, seed=1, epochs=5, save_to=None)]
    assert _each_clock_read_follows_a_sync(fake.log) and [e for e in fake.log if e[0] == 't'] == [('t', 0.), ('t', 51.25)]
    r = tc.one_run(20, dict(bs=100000, limit=(10, 10)), '/x/w.safetensors')   # a subset run has no target
    assert 'target' not in r and 'target_met' not in r and r['weights'] == '/x/w.safetensors'
    assert fake.trained[-1]['save_to'] == '/x/w.safetensors'


def test_one_run_target_met_and_mixed_precision_flag(tc, monkeypatch):
    "The target is met by the plain test accuracy at or above it; mixed_precision says whether autocast was on."
    FakeClassifierRun(tc, monkeypatch)   # (patches the training and the clock)
    r = tc.one_run(20, dict(bs=4500), None)   # plain accuracy 0.945 exactly, TTA accuracy 0.955
    assert r['test_accuracy'] == 0.945 and r['target'] == 0.945 and r['target_met'] is True
    assert r['mixed_precision'] is False
    r = tc.one_run(5, dict(bs=3000, mixed_precision=True), None)   # plain 0.93 < 0.932 < TTA 0.97
    assert r['target_met'] is False and r['mixed_precision'] is True


def test_select_recipe_holds_out_images_and_picks_the_best_plain_accuracy(tc, monkeypatch):
    "select_recipe trains each candidate on top of cfg with `holdout` images held out, quietly, and picks the best held-out accuracy."
    fake = FakeClassifierRun(tc, monkeypatch)
    cands = {'small': dict(bs=128), 'big': dict(bs=1024), 'mid': dict(bs=256)}
    best, rows = tc.select_recipe(5, dict(bs=64, seed=3, progress=True), cands, 777)
    assert best == 'big'
    assert [r['recipe'] for r in rows] == list(cands) and all(r['wall_s'] == 51.2 and r['epochs'] == 5 for r in rows)
    assert [r['holdout_accuracy'] for r in rows] == [round(_score(kw), 4) for kw in cands.values()]
    assert [t['bs'] for t in fake.trained] == [128, 1024, 256]
    assert all(t['holdout'] == 777 and t['progress'] is False and t['seed'] == 3 and t['epochs'] == 5 for t in fake.trained)


def test_throughput_one_timed_epoch_after_one_warmup(tc, monkeypatch):
    "throughput: a quiet learner with or without mixed precision, 1 timed epoch after 1 warm-up, rounded images/s, batch size."
    fake = FakeClassifierRun(tc, monkeypatch)
    assert tc.throughput(dict(bs=64, seed=0, progress=True), False) == dict(images_per_s=501, autocast_enabled=False, bs=64)
    assert tc.throughput(dict(bs=64, seed=0, progress=True), True) == dict(images_per_s=1000, autocast_enabled=True, bs=64)
    assert fake.learners == [dict(bs=64, seed=0, progress=False, mixed_precision=False), dict(bs=64, seed=0, progress=False, mixed_precision=True)]
    assert fake.throughput_calls == [dict(epochs=1, warmup=1, mixed_precision=False), dict(epochs=1, warmup=1, mixed_precision=True)]


def _run_main(tc, tmp_path, *args):
    out = tmp_path/'r.json'
    tc.main([*args, '--out', str(out)])
    return json.loads(out.read_text())


def test_main_full_run_epochs_recipes_saving_and_json(tc, monkeypatch, tmp_path):
    "A full run: one run per --epochs value with its recipe, only the longest saved (to $MINIAI_CLASSIFIER), throughput, JSON keys."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    d = _run_main(tc, tmp_path, '--epochs', '20', '5', '--data-dir', '/data/fm')
    assert [r['epochs'] for r in d['runs']] == [20, 5] and [t['epochs'] for t in fake.trained] == [20, 5]
    assert [t['save_to'] for t in fake.trained] == [tmp_path/'clf.safetensors', None]
    assert d['runs'][0]['weights'] == str(tmp_path/'clf.safetensors') and 'weights' not in d['runs'][1]
    assert all(t['seed'] == 42 and t['data_dir'] == '/data/fm' for t in fake.trained)
    assert {k: fake.trained[1][k] for k in tc.CLASSIFIER_RECIPES[5]} == tc.CLASSIFIER_RECIPES[5]
    assert [r['recipe'] for r in d['runs']] == ['CLASSIFIER_RECIPES[20]', 'CLASSIFIER_RECIPES[5]']
    assert d['runs'][1]['recipe_kwargs'] == tc.CLASSIFIER_RECIPES[5]
    assert d['config'] == dict(seed=42) and 'selection' not in d
    assert d['environment'] == dict(device='cpu', cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                                    matmul_precision=torch.get_float32_matmul_precision())
    assert d['throughput'] == {'float32': dict(images_per_s=501, autocast_enabled=False, bs=1024),
                               'bf16_mixed_precision': dict(images_per_s=1000, autocast_enabled=True, bs=1024)}
    assert d['command'].endswith('--epochs 20 5 --data-dir /data/fm --out ' + str(tmp_path/'r.json'))


def test_main_default_epochs_and_the_first_longest_run_is_the_one_saved(tc, monkeypatch, tmp_path):
    "Default --epochs are 5 and 20; with a repeated longest value only its first run is saved, to --save."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    _run_main(tc, tmp_path, '--no-throughput')
    assert [t['epochs'] for t in fake.trained] == [5, 20]
    fake.trained.clear()
    d = _run_main(tc, tmp_path, '--epochs', '3', '7', '7', '--save', str(tmp_path/'w.st'), '--no-throughput')
    assert [t['save_to'] for t in fake.trained] == [None, tmp_path/'w.st', None]
    assert [r['recipe'] for r in d['runs']] == ['defaults']*3 and 'throughput' not in d and fake.learners == []


def test_main_command_line_options_override_the_recipe(tc, monkeypatch, tmp_path):
    "--bs, --lr, --erase-p, --no-augment and --seed reach every run and win over the run's recipe."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    d = _run_main(tc, tmp_path, '--epochs', '5', '--bs', '32', '--lr', '0.01', '--erase-p', '0.3', '--no-augment',
                  '--seed', '7', '--no-throughput')
    (t,) = fake.trained
    assert (t['bs'], t['lr'], t['erase_p'], t['augment'], t['seed']) == (32, 0.01, 0.3, False, 7)
    assert t['label_smoothing'] == tc.CLASSIFIER_RECIPES[5]['label_smoothing']
    assert d['config'] == dict(bs=32, lr=0.01, erase_p=0.3, augment=False, seed=7)
    assert d['runs'][0]['recipe_kwargs'] == dict(tc.CLASSIFIER_RECIPES[5], bs=32, lr=0.01, erase_p=0.3, augment=False)


def test_main_quick_is_one_small_epoch_saves_nothing_and_stays_out_of_full_runs(tc, monkeypatch, tmp_path):
    "--quick: 1 epoch with QUICK_CLASSIFIER_CONFIG and no weights saved unless --save; a full run gets none of it."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    d = _run_main(tc, tmp_path, '--quick', '--epochs', '5', '20', '--no-throughput')
    (t,) = fake.trained
    assert t['epochs'] == 1 and t['save_to'] is None and 'weights' not in d['runs'][0]
    assert {k: t[k] for k in tc.QUICK_CLASSIFIER_CONFIG} == tc.QUICK_CLASSIFIER_CONFIG
    fake.trained.clear()
    _run_main(tc, tmp_path, '--quick', '--save', str(tmp_path/'q.st'), '--no-throughput')
    assert [t['save_to'] for t in fake.trained] == [tmp_path/'q.st']
    fake.trained.clear()
    _run_main(tc, tmp_path, '--epochs', '2', '--no-throughput')
    assert not set(tc.QUICK_CLASSIFIER_CONFIG) & set(fake.trained[0]) and fake.trained[0]['epochs'] == 2


def test_main_select_trains_the_held_out_winner_on_everything(tc, monkeypatch, tmp_path):
    "--select: candidates scored with 10,000 images held out (not the run's recipe), then the winner trained in full and named."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    names = ['no augmentation, bs 128', 'no augmentation (lesson 19)', 'no augmentation, bs 256, label smoothing 0.1']
    d = _run_main(tc, tmp_path, '--epochs', '5', '--select', '--candidates', *names, '--no-throughput')
    sel, final = fake.trained[:3], fake.trained[3:]
    assert all(t['holdout'] == 10_000 for t in sel) and d['holdout'] == 10_000
    assert [t.get('label_smoothing') for t in sel] == [None, None, 0.1]   # the 5-epoch recipe stays out of the selection
    assert [r['recipe'] for r in d['selection']] == names and d['candidates'] == tc.CANDIDATES
    (run,) = d['runs']
    assert run['recipe'] == 'no augmentation (lesson 19)' and run['recipe_kwargs'] == tc.CANDIDATES['no augmentation (lesson 19)']
    assert len(final) == 1 and 'holdout' not in final[0] and 'label_smoothing' not in final[0] and final[0]['bs'] == 1024
    fake.trained.clear()
    d = _run_main(tc, tmp_path, '--quick', '--select', '--candidates', *names[:2], '--no-throughput')
    assert d['holdout'] == tc.QUICK_CLASSIFIER_CONFIG['limit'][1] and fake.trained[0]['holdout'] == d['holdout']


def test_main_select_uses_each_run_length_default_candidates(tc, monkeypatch, tmp_path):
    "--select without --candidates compares CANDIDATES_BY_EPOCHS[epochs] for each run."
    monkeypatch.setenv('MINIAI_CLASSIFIER', str(tmp_path/'clf.safetensors'))
    fake = FakeClassifierRun(tc, monkeypatch)
    d = _run_main(tc, tmp_path, '--epochs', '5', '20', '--select', '--select-only')
    assert [r['recipe'] for r in d['selection']] == tc.CANDIDATES_BY_EPOCHS[5] + tc.CANDIDATES_BY_EPOCHS[20]
    assert d['runs'] == [] and 'throughput' not in d and fake.learners == []
    assert tc.candidates_for(20, ['flip only, bs 256']) == {'flip only, bs 256': tc.CANDIDATES['flip only, bs 256']}


def test_parse_args_rejects_candidates_without_select_and_unknown_names(tc, capsys):
    "--candidates needs --select; an unknown candidate name is refused before any training."
    with pytest.raises(SystemExit): tc.parse_args(['--candidates', 'flip only, bs 256', '--out', 'x'])
    with pytest.raises(SystemExit): tc.parse_args(['--select', '--candidates', 'no such recipe', '--out', 'x'])
    assert 'unknown candidates' in capsys.readouterr().err
    with pytest.raises(SystemExit): tc.parse_args(['--epochs', '5'])   # --out is required


# ================================================================ bench/bench_ddpm.py
@pytest.fixture
def bd(load_script):
    mod = load_script('bench/bench_ddpm.py')
    prec = torch.get_float32_matmul_precision()
    yield mod
    torch.set_float32_matmul_precision(prec)


class TinyEps(nn.Module):
    "A noise predictor `model(x_t, t)` small enough for a test; each call advances `clock` by one second."
    def __init__(self, clock=None):
        super().__init__()
        self.conv, self.clock, self.calls = nn.Conv2d(1, 1, 3, padding=1), clock, []
    def forward(self, x, t):
        self.calls.append(x.shape)
        if self.clock is not None: self.clock.advance(1.)
        return self.conv(x)


def test_collate_noisify_scales_pads_and_noises_on_the_cpu(bd, monkeypatch):
    "collate_noisify: uint8 28x28 -> float in [-0.5, 0.5], padded with -0.5 to 32x32, then noised (x_t, t, eps)."
    seen = []
    def noisify(x0):
        seen.append(x0)
        return (x0 + 1, torch.full((len(x0),), 0.5)), torch.zeros_like(x0)
    monkeypatch.setattr(bd, 'noisify_cosine', noisify)
    items = [torch.full((28, 28), 255, dtype=torch.uint8), torch.zeros(28, 28, dtype=torch.uint8)]
    xt, t, eps = bd.collate_noisify(items)
    (x0,) = seen
    assert x0.shape == (2, 1, 32, 32) and x0.dtype == torch.float32
    assert x0[0, 0, 2:30, 2:30].eq(0.5).all() and x0[1].eq(-0.5).all() and x0[0, 0, :2].eq(-0.5).all() and x0[0, 0, :, 30:].eq(-0.5).all()
    assert torch.equal(xt, x0 + 1) and t.shape == (2,) and eps.shape == x0.shape


def _course(bd, monkeypatch, n_images=40, bs=4, steps=3, warmup=2, losses=None):
    log = []
    clock = FakeClock(log)
    monkeypatch.setattr(bd, 'time', clock)
    monkeypatch.setattr(bd, 'synchronize', _sync_recorder(log))
    model = TinyEps(clock)
    monkeypatch.setattr(bd, 'make_model', lambda quick: model)
    if losses is not None:   # losses['targets']: each loss's target; losses['read']: the losses read back on the host
        monkeypatch.setattr(bd, 'noisify_cosine', lambda x0: ((x0, torch.rand(len(x0))), torch.full_like(x0, 7.)))
        def mse(pred, target):
            loss = F.mse_loss(pred, target)
            losses['targets'].append(target); losses['tensors'].append(loss)
            return loss
        monkeypatch.setattr(bd, 'F', SimpleNamespace(pad=F.pad, mse_loss=mse))
        item = torch.Tensor.item
        def counting_item(t):
            losses['read'] += any(t is l for l in losses['tensors'])
            return item(t)
        monkeypatch.setattr(torch.Tensor, 'item', counting_item)
    x = torch.randint(0, 256, (n_images, 28, 28), dtype=torch.uint8)
    ips = bd.course_style(x, True, bs, steps, warmup, 0, torch.device('cpu'))
    return ips, model, log


def test_course_style_times_only_the_steps_after_warmup(bd, monkeypatch):
    "course_style: warmup+steps training steps of bs images; images/s over the timed steps only, synchronised around them."
    ips, model, log = _course(bd, monkeypatch, bs=4, steps=3, warmup=2)
    assert len(model.calls) == 5 and all(s == (4, 1, 32, 32) for s in model.calls)
    assert ips == pytest.approx(3*4/3.)   # one (fake) second per step
    assert _each_clock_read_follows_a_sync(log) and [e[1] for e in log if e[0] == 't'] == [2., 5.]


def test_course_style_regresses_the_collated_noise_and_reads_every_loss_back(bd, monkeypatch):
    "course_style's loss targets the noise the collate function drew, and every step's loss is read on the host (loss.item())."
    losses = dict(targets=[], tensors=[], read=0)
    _course(bd, monkeypatch, bs=4, steps=3, warmup=2, losses=losses)
    assert len(losses['targets']) == 5 and all(t.eq(7.).all() for t in losses['targets']) and losses['read'] == 5


def test_course_style_uses_the_course_recipe(bd, monkeypatch):
    "course_style: Adam(lr 4e-3, eps 1e-5) and fp16 autocast, which (like the GradScaler) is on only on CUDA."
    adams, casts = [], []
    real_adam, real_autocast = torch.optim.Adam, torch.autocast
    monkeypatch.setattr(torch.optim, 'Adam', lambda params, **kw: adams.append(kw) or real_adam(params, **kw))
    monkeypatch.setattr(torch, 'autocast', lambda dev, dtype=None, enabled=True: casts.append((dev, dtype, enabled)) or real_autocast(dev, dtype=dtype, enabled=enabled))
    _course(bd, monkeypatch, bs=4, steps=1, warmup=1)
    assert adams == [dict(lr=4e-3, eps=1e-5)] and casts == [('cpu', torch.float16, False)]*2


def test_course_style_data_loader_shuffles_full_batches_with_persistent_workers(bd, monkeypatch):
    "The course-style DataLoader: shuffled, full batches, `workers` worker processes kept alive across epochs."
    made, real = [], torch.utils.data.DataLoader
    def loader(ds, **kw):
        made.append(kw)
        return real(ds, **{**kw, 'num_workers': 0, 'persistent_workers': False})   # no processes in a test
    monkeypatch.setattr(torch.utils.data, 'DataLoader', loader)
    monkeypatch.setattr(bd, 'make_model', lambda quick: TinyEps())
    x = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    for workers in (3, 0): bd.course_style(x, True, 4, 1, 1, workers, torch.device('cpu'))
    assert [(k['batch_size'], k['shuffle'], k['drop_last'], k['num_workers'], k['persistent_workers']) for k in made] == \
        [(4, True, True, 3, True), (4, True, True, 0, False)]
    assert made[0]['collate_fn'] is bd.collate_noisify


def test_course_style_runs_over_epochs_with_full_batches_only(bd, monkeypatch):
    "When warmup+steps exceed an epoch, the loop starts another one; the incomplete last batch is dropped."
    ips, model, _ = _course(bd, monkeypatch, n_images=10, bs=4, steps=4, warmup=1)
    assert len(model.calls) == 5 and all(s[0] == 4 for s in model.calls) and ips == pytest.approx(4.)


class _FakeLearn:
    def __init__(self, training=True): self.training, self.dls = training, SimpleNamespace(train=SimpleNamespace(device='cpu'))


def test_step_timer_times_training_steps_after_warmup_and_stops_fit(bd, monkeypatch):
    "StepTimer: clock starts after `warmup` training steps, stops after `steps` more (synchronised), then cancels fit; eval batches don't count."
    log = []
    clock = FakeClock(log)
    monkeypatch.setattr(bd, 'time', clock)
    monkeypatch.setattr(bd, 'synchronize', _sync_recorder(log))
    timer, train, valid = bd.StepTimer(steps=3, warmup=2), _FakeLearn(), _FakeLearn(training=False)
    for i in range(4):
        clock.advance(1.)
        timer.after_batch(train)
        timer.after_batch(valid)
    clock.advance(1.)
    with pytest.raises(CancelFitException): timer.after_batch(train)
    assert timer.seconds == 3. and _each_clock_read_follows_a_sync(log) and [e[1] for e in log if e[0] == 't'] == [2., 5.]


class _CountTrainingBatches(Callback):
    "Counts training batches at `after_batch` (order 500: after the training callbacks, like any late callback)."
    order = 500
    def __init__(self): self.n = 0
    def after_batch(self, learn): self.n += learn.training


def _miniai(bd, monkeypatch, n_images=12, bs=4, steps=3, warmup=2, compile_mode=False):
    clock = FakeClock()
    monkeypatch.setattr(bd, 'time', clock)
    model = TinyEps(clock)
    monkeypatch.setattr(bd, 'make_model', lambda quick: model)
    compiled, learners = [], []
    monkeypatch.setattr(bd, 'CompileCB', lambda mode=None: compiled.append(mode) or bd.Callback())
    real = bd.ddpm_learner
    def learner(*a, **kw):
        learners.append(kw)
        return real(*a, **{**kw, 'cbs': [*kw['cbs'], counter]})
    counter = _CountTrainingBatches()
    monkeypatch.setattr(bd, 'ddpm_learner', learner)
    x = torch.randint(0, 256, (n_images, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ips = bd.miniai_path(x, True, bs, steps, warmup, torch.device('cpu'), compile_mode)
    model.after_batch_calls = counter.n
    return ips, model, compiled, learners


def test_miniai_path_images_per_second_of_the_timed_steps(bd, monkeypatch, one_thread):
    "miniai_path: bs images per step over the timed steps; stops there; data in [-0.5, 0.5] padded as the course does; bf16, lr 4e-3."
    x0s = []
    real = bd.noisify_cosine
    monkeypatch.setattr(bd, 'noisify_cosine', lambda x0: x0s.append(x0) or real(x0))
    ips, model, compiled, (kw,) = _miniai(bd, monkeypatch, n_images=12, bs=4, steps=3, warmup=2)
    assert all(x.min() >= -0.5 and x.max() <= 0.5 and x[..., :2, :].eq(-0.5).all() for x in x0s) and len(x0s) == 5
    assert model.after_batch_calls == 5   # the timer stops the fit only after every other callback saw the last timed step
    assert ips == pytest.approx(4.) and len(model.calls) == 5 and all(s == (4, 1, 32, 32) for s in model.calls)
    assert compiled == [] and kw['precision'] == 'bf16' and kw['lr'] == 4e-3 and kw['progress'] is False


def test_miniai_path_fits_enough_epochs_and_compiles_when_asked(bd, monkeypatch, one_thread):
    "miniai_path runs as many epochs as warmup+steps need; compile_mode None (torch.compile's default) or a mode adds CompileCB."
    ips, model, compiled, _ = _miniai(bd, monkeypatch, n_images=8, bs=4, steps=5, warmup=2, compile_mode=None)
    assert len(model.calls) == 7 and ips == pytest.approx(4.) and compiled == [None]
    _, _, compiled, _ = _miniai(bd, monkeypatch, n_images=8, bs=4, steps=1, warmup=1, compile_mode='reduce-overhead')
    assert compiled == ['reduce-overhead']


def test_miniai_path_data_order_does_not_depend_on_the_global_rng(bd, monkeypatch, one_thread):
    "miniai_path's loader has its own seed: the same batches whatever state torch's global RNG is in."
    real, runs = bd.noisify_cosine, []
    for seed in (1, 2):
        runs.append([])
        monkeypatch.setattr(bd, 'noisify_cosine', lambda x0, out=runs[-1]: out.append(x0) or real(x0))
        torch.manual_seed(seed)
        _miniai(bd, monkeypatch, n_images=12, bs=4, steps=2, warmup=1)
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and len(runs[0]) == 3


def _sampling(bd, monkeypatch, mode, n=3, steps=5):
    log, calls, compiled = [], [], []
    clock = FakeClock(log)
    monkeypatch.setattr(bd, 'time', clock)
    monkeypatch.setattr(bd, 'synchronize', _sync_recorder(log))
    monkeypatch.setattr(bd, 'make_model', lambda quick: TinyEps())
    monkeypatch.setattr(torch, 'compile', lambda m, *a, **kw: compiled.append(m) or m)
    def ddim(model, shape, ts, abar, generator=None):
        calls.append(dict(shape=shape, ts=ts, n_abar=len(abar), generator=generator, training=model.training,
                          autocast=torch.is_autocast_enabled('cpu')))
        clock.advance(len(ts))
        return torch.zeros(shape)
    monkeypatch.setattr(bd, 'ddim_sample', ddim)
    secs = bd.sampling_time(True, n, steps, torch.device('cpu'), mode)
    return secs, calls, compiled, log


def test_sampling_time_times_the_full_run_after_an_untimed_warmup(bd, monkeypatch):
    "sampling_time: a 2-step warm-up, then `steps` DDIM steps on n 32x32 images (fixed seed, eval mode), timed alone, synchronised."
    secs, calls, compiled, log = _sampling(bd, monkeypatch, 'eager fp32', n=3, steps=5)
    assert [len(c['ts']) for c in calls] == [2, 5] and secs == 5.
    assert all(c['shape'] == (3, 1, 32, 32) and c['n_abar'] == len(c['ts']) and c['generator'] == 0 and not c['training'] for c in calls)
    assert _each_clock_read_follows_a_sync(log) and compiled == []


def test_sampling_time_compiles_only_the_compiled_mode_and_autocasts_only_on_cuda(bd, monkeypatch):
    "The 'compiled bf16' mode compiles the model; bf16 autocast is for CUDA only (a CPU run stays in float32)."
    _, calls, compiled, _ = _sampling(bd, monkeypatch, 'compiled bf16')
    assert len(compiled) == 1 and not any(c['autocast'] for c in calls)
    _, calls, compiled, _ = _sampling(bd, monkeypatch, 'eager bf16')
    assert compiled == [] and not any(c['autocast'] for c in calls)


def test_sampling_time_runs_the_real_sampler(bd, monkeypatch):
    "sampling_time with miniai's own DDIM sampler (a tiny model): a positive number of seconds."
    monkeypatch.setattr(bd, 'make_model', lambda quick: TinyEps())
    secs = bd.sampling_time(True, 2, 3, torch.device('cpu'), 'eager bf16')
    assert isinstance(secs, float) and secs > 0


def test_attempt_records_rounded_figures_and_failures(bd, capsys):
    "attempt: the figure rounded to 3 decimals; a failure is recorded as None with its error, and later variants still run."
    table = {}
    bd.attempt('a', lambda: 1.23456, table)
    bd.attempt('b', lambda: 1/0, table)
    bd.attempt('c', lambda: 2., table)
    assert table == {'a': 1.235, 'b': None, 'c': 2., 'errors': {'b': 'ZeroDivisionError: division by zero'}}
    assert 'FAILED' in capsys.readouterr().out


def test_make_model_is_seeded_and_quick_is_the_small_unet(bd):
    "make_model: the same weights on every call (seed 0); --quick's UNet is the small one."
    a, b = bd.make_model(True), bd.make_model(True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert sum(p.numel() for p in a.parameters()) < 1_000_000


class FakeBench:
    "Stand-ins for bench_ddpm's measurements: record their arguments and return given figures."
    def __init__(self, bd, monkeypatch, course=120., miniai=None, device='cpu'):
        self.calls, self.miniai = [], miniai or {False: 250., None: 400., 'reduce-overhead': 500.}
        monkeypatch.setattr(bd, 'default_device', lambda: torch.device(device))
        if device == 'cuda': monkeypatch.setattr(torch.cuda, 'get_device_name', lambda d=None: 'Fake GPU')
        monkeypatch.setattr(bd, 'fashion_mnist_arrays', self.data)
        monkeypatch.setattr(bd, 'course_style', self.course)
        monkeypatch.setattr(bd, 'miniai_path', self.path)
        monkeypatch.setattr(bd, 'sampling_time', self.sampling)
        monkeypatch.setattr(bd, 'make_model', lambda quick: nn.Linear(10, 10 if quick else 20))
        self.course_ips = course

    def data(self, split='train', data_dir=None, allow_sample=None):
        assert isinstance(allow_sample, bool)   # `--quick`, never None (a full run never takes the sample)
        self.calls.append(('data', split, data_dir))
        return torch.zeros(60_000, 28, 28, dtype=torch.uint8), torch.zeros(60_000, dtype=torch.long)

    def course(self, x, quick, bs, steps, warmup, workers, device):
        self.calls.append(('course', len(x), quick, bs, steps, warmup, workers))
        return self.course_ips

    def path(self, x, quick, bs, steps, warmup, device, compile_mode=False):
        self.calls.append(('miniai', len(x), quick, bs, steps, warmup, compile_mode))
        v = self.miniai[compile_mode]
        if isinstance(v, Exception): raise v
        return v

    def sampling(self, quick, n, steps, device, mode):
        self.calls.append(('sampling', quick, n, steps, mode))
        return 1.5 if 'compiled' in mode else 3.


def test_bench_ddpm_full_run_defaults_ratios_and_json(bd, monkeypatch, tmp_path):
    "Full-size defaults on a GPU, every variant measured, ratios to the course-style loop, best ratio, the JSON written."
    fake = FakeBench(bd, monkeypatch, device='cuda')
    out = tmp_path/'b.json'
    r = bd.main(['--out', str(out), '--data-dir', '/fm'])
    assert json.loads(out.read_text()) == r and torch.get_float32_matmul_precision() == 'high'
    assert fake.calls[:5] == [('data', 'train', '/fm'), ('course', 60_000, False, 512, 100, 30, 8),
                              ('miniai', 60_000, False, 512, 100, 30, False), ('miniai', 60_000, False, 512, 100, 30, None),
                              ('miniai', 60_000, False, 512, 100, 30, 'reduce-overhead')]
    assert fake.calls[5:] == [('sampling', False, 2048, 100, m) for m in ('eager fp32', 'eager bf16', 'compiled bf16')]
    tr = r['train_images_per_s']
    assert tr == {'course-style (collate noising, fp16)': 120., 'miniai eager (GPU data+noise, bf16)': 250.,
                  'miniai + torch.compile': 400., 'miniai + compile reduce-overhead': 500.}
    assert r['ratio_vs_course_style'] == {'miniai eager (GPU data+noise, bf16)': 2.08, 'miniai + torch.compile': 3.33,
                                          'miniai + compile reduce-overhead': 4.17}
    assert r['best_ratio'] == 4.17 and r['device'] == 'Fake GPU' and r['quick'] is False
    assert (r['batch_size'], r['timed_steps'], r['warmup_steps'], r['course_workers']) == (512, 100, 30, 8)
    assert (r['sampling_images'], r['sampling_steps'], r['model_params']) == (2048, 100, 10*20 + 20)
    assert r['sampling_seconds'] == {'DDIM-100 x 2048 images, eager fp32 (s)': 3., 'DDIM-100 x 2048 images, eager bf16 (s)': 3.,
                                     'DDIM-100 x 2048 images, compiled bf16 (s)': 1.5}
    assert r['command'] == f'python bench/bench_ddpm.py --out {out} --data-dir /fm'


def test_bench_ddpm_quick_defaults_and_no_compile_on_cpu(bd, monkeypatch, tmp_path):
    "--quick: small sizes, data cut to what the steps need, no compiled variants (nor on a CPU); results/bench_ddpm.json by default."
    fake = FakeBench(bd, monkeypatch, device='cpu')
    r = bd.main(['--quick', '--out', str(tmp_path/'q.json')])
    assert fake.calls == [('data', 'train', None), ('course', 16*5, True, 16, 3, 1, 2), ('miniai', 16*5, True, 16, 3, 1, False),
                          ('sampling', True, 8, 3, 'eager fp32'), ('sampling', True, 8, 3, 'eager bf16')]
    assert r['model_params'] == 10*10 + 10 and r['device'] == 'cpu' and r['quick'] is True
    fake.calls.clear()
    monkeypatch.chdir(tmp_path)
    bd.main(['--bs', '8', '--steps', '5', '--warmup', '2', '--workers', '0', '--sample-n', '4', '--sample-steps', '7'])
    assert fake.calls[1:3] == [('course', 60_000, False, 8, 5, 2, 0), ('miniai', 60_000, False, 8, 5, 2, False)]
    assert fake.calls[3:] == [('sampling', False, 4, 7, 'eager fp32'), ('sampling', False, 4, 7, 'eager bf16')]
    r = json.loads((tmp_path/'results'/'bench_ddpm.json').read_text())
    assert (r['batch_size'], r['timed_steps'], r['warmup_steps'], r['course_workers']) == (8, 5, 2, 0)
    assert (r['sampling_images'], r['sampling_steps']) == (4, 7)


def test_bench_ddpm_no_compile_and_failed_variants(bd, monkeypatch, tmp_path):
    "--no-compile skips the compiled variants on a GPU; a failed variant is recorded and left out of the ratios."
    fake = FakeBench(bd, monkeypatch, device='cuda', miniai={False: 300., None: RuntimeError('inductor'), 'reduce-overhead': 150.})
    r = bd.main(['--out', str(tmp_path/'b.json')])
    assert r['train_images_per_s']['miniai + torch.compile'] is None
    assert r['train_images_per_s']['errors'] == {'miniai + torch.compile': 'RuntimeError: inductor'}
    assert r['ratio_vs_course_style'] == {'miniai eager (GPU data+noise, bf16)': 2.5, 'miniai + compile reduce-overhead': 1.25}
    assert r['best_ratio'] == 2.5
    fake.calls.clear()
    r = bd.main(['--no-compile', '--out', str(tmp_path/'b.json')])
    assert [c[-1] for c in fake.calls if c[0] == 'miniai'] == [False] and 'compiled' not in str(r['sampling_seconds'])


def test_bench_ddpm_without_a_course_figure_has_no_ratios(bd, monkeypatch, tmp_path):
    "If the course-style loop fails there is nothing to compare with: no ratios, best_ratio None."
    FakeBench(bd, monkeypatch, device='cpu')
    monkeypatch.setattr(bd, 'course_style', lambda *a: 1/0)
    r = bd.main(['--quick', '--out', str(tmp_path/'q.json')])
    assert r['ratio_vs_course_style'] == {} and r['best_ratio'] is None


@pytest.mark.parametrize('opt', ['--warmup', '--steps', '--bs', '--sample-n', '--sample-steps'])
def test_bench_ddpm_refuses_a_count_of_zero(bd, monkeypatch, tmp_path, opt, capsys):
    "A count of 0 (e.g. --warmup 0: time from the first step) is refused before any work, never replaced by the default."
    fake = FakeBench(bd, monkeypatch, device='cpu')
    with pytest.raises(SystemExit): bd.main([opt, '0', '--out', str(tmp_path/'b.json')])
    assert f'argument {opt}: must be >= 1, got 0' in capsys.readouterr().err
    assert fake.calls == [] and not (tmp_path/'b.json').exists()
