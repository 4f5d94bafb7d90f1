"""Tests found by a mutation run on tools/train_ddp_demo.py (arguments, outputs, results file), tools/bench_data.py
and tools/check_docstrings.py: each checks behaviour that a small planted bug changed without any test failing.
The last section tests check_docstrings.py's parameter check (type hints and docments) on made-up modules."""
import importlib, inspect, json, sys, types
from dataclasses import dataclass
from types import SimpleNamespace
import numpy as np
import pytest
import torch

TINY = ['--n-train', 32, '--n-valid', 16, '--bs', 8, '--hidden', 8, '--threads', 1]  # 4 training steps per epoch


# ---------------------------------------------------------------- tools/train_ddp_demo.py

@pytest.fixture
def demo(ddp_demo, cpu_one_thread):
    "The demo script as a module, run on the CPU."
    return ddp_demo


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "One tiny in-process run of the demo (2 epochs, --predict 40) with --out and --results: (module, learner, out, results, argv)."
    from conftest import _load_script
    tmp = tmp_path_factory.mktemp('tiny')
    argv = ['--n-train', 32, '--n-valid', 48, '--bs', 8, '--hidden', 8, '--threads', 1, '--epochs', 2, '--predict', 40,
            '--out', tmp/'out', '--results', tmp/'deep'/'er'/'res.json']
    n = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MINIAI_DEVICE', 'cpu')
        demo = _load_script('tools/train_ddp_demo.py')
        learn = demo.main(argv)
    torch.set_num_threads(n)
    return demo, learn, tmp/'out', json.loads((tmp/'deep'/'er'/'res.json').read_text()), argv


def test_default_and_full_sizes(demo):
    "Without --full: the quick CPU sizes; with --full: all images, batch 256, 5 epochs, 512 hidden units."
    a = demo.parse_args([])
    assert (a.n_train, a.n_valid, a.hidden, a.bs, a.epochs, a.lr, a.seed) == (256, 128, 32, 16, 3, 0.05, 0)
    f = demo.parse_args(['--full'])
    assert (f.n_train, f.n_valid, f.hidden, f.bs, f.epochs, f.lr) == (0, 0, 512, 256, 5, 0.2)


def test_explicit_arguments_win_over_the_presets_even_when_zero(demo):
    "An explicit value (0 included: all images) is kept, with or without --full."
    a = demo.parse_args(['--n-train', 0, '--n-valid', 0, '--bs', 4])
    assert (a.n_train, a.n_valid, a.bs, a.epochs) == (0, 0, 4, 3)
    f = demo.parse_args(['--full', '--n-train', 100, '--epochs', 1])
    assert (f.n_train, f.n_valid, f.epochs, f.bs) == (100, 0, 1, 256)


def test_stall_hook_needs_a_ready_file(demo, capsys):
    "--stall-at-step without --ready-file is refused with a usage error."
    with pytest.raises(SystemExit) as e: demo.parse_args(['--stall-at-step', 3])
    assert e.value.code == 2 and '--ready-file' in capsys.readouterr().err


def test_add_noise_adds_gaussian_noise_of_the_given_std_to_the_images_only(demo):
    "add_noise: images + std * N(0, 1); the other parts of the batch unchanged."
    torch.manual_seed(0)
    x, y = torch.zeros(20000), torch.arange(3)
    xn, yn = demo.add_noise((x, y), std=0.1)
    assert xn.std().item() == pytest.approx(0.1, rel=0.05) and yn is y


def _fake_learn(training=True, bs=8):
    return SimpleNamespace(training=training, batch=(torch.zeros(bs, 1), torch.zeros(bs)), cbs=[])


def test_stop_after_counts_training_steps_only(demo):
    "StopAfterCB cancels the fit at training step n exactly; validation batches do not count."
    from miniai.learner import CancelFitException
    cb = demo.StopAfterCB(3)
    for t in (True, False, False, True, False): cb.after_batch(_fake_learn(t))
    with pytest.raises(CancelFitException): cb.after_batch(_fake_learn(True))


def test_stall_writes_the_step_number_after_training_step_n(demo, tmp_path, monkeypatch):
    "StallCB writes --ready-file containing n after training step n (validation batches not counted), then waits."
    class Killed(Exception): pass
    def sleep(s): raise Killed()
    monkeypatch.setattr(demo, 'time', SimpleNamespace(sleep=sleep))
    cb = demo.StallCB(3, tmp_path/'ready')
    for t in (True, False, True): cb.after_batch(_fake_learn(t))
    assert not (tmp_path/'ready').exists()
    with pytest.raises(Killed): cb.after_batch(_fake_learn(True))
    assert (tmp_path/'ready').read_text() == '3'


def test_rank_report_counts_training_items_and_adds_up_training_phases(demo, monkeypatch):
    "RankReportCB: items of training batches only, and the seconds of every training phase added (not eval)."
    clock = iter([10., 13., 200., 201.5])
    monkeypatch.setattr(demo, 'synchronize', lambda: None)
    monkeypatch.setattr(demo, 'time', SimpleNamespace(perf_counter=lambda: next(clock)))
    cb = demo.RankReportCB()
    learn = _fake_learn()
    cb.before_fit(learn)
    for training, nb, bs in ((True, 2, 8), (False, 3, 5), (True, 1, 6)):
        learn.training = training
        cb.before_epoch(learn)
        for _ in range(nb): learn.batch = (torch.zeros(bs, 1, 2, 2), torch.zeros(bs)); cb.after_batch(learn)
        cb.cleanup_epoch(learn)   # (after after_epoch, which it does not use; also when a fit is cancelled)
    assert cb.items == 22 and cb.train_seconds == pytest.approx(3. + 1.5)


def test_rank_report_times_a_training_phase_that_was_cancelled(demo, monkeypatch):
    "A phase stopped by CancelFitException (no after_epoch, cleanup_epoch still fires) still adds its seconds, once."
    clock = iter([10., 12.5])
    monkeypatch.setattr(demo, 'synchronize', lambda: None)
    monkeypatch.setattr(demo, 'time', SimpleNamespace(perf_counter=lambda: next(clock)))
    cb, learn = demo.RankReportCB(), _fake_learn(True)
    cb.before_fit(learn); cb.before_epoch(learn)
    learn.batch = (torch.zeros(4, 1, 2, 2), torch.zeros(4)); cb.after_batch(learn)
    cb.cleanup_epoch(learn); cb.cleanup_epoch(learn)
    assert cb.items == 4 and cb.train_seconds == pytest.approx(2.5)


def test_build_uses_the_arguments(demo, monkeypatch):
    "build: hidden size, subset sizes, the lr of the one-cycle schedule, the seed of DistributedCB, noise in training only."
    learn = demo.build(demo.parse_args([*TINY, '--n-valid', 24, '--lr', 0.3, '--noise', 0.2, '--seed', 4]))
    assert learn.model[1].out_features == 8 and learn.model[3].in_features == 8
    assert (learn.dls.train.dataset_len, learn.dls.valid.dataset_len) == (32, 24)
    cbs = {type(cb).__name__: cb for cb in learn.cbs}
    assert cbs['OneCycleCB'].max_lr == 0.3 and learn.lr == 0.3
    assert cbs['DistributedCB'].seed == 4
    assert cbs['BatchTransformCB'].on_train and not cbs['BatchTransformCB'].on_val
    assert 'BatchTransformCB' not in {type(cb).__name__ for cb in demo.build(demo.parse_args(TINY)).cbs}


def test_full_asks_for_the_whole_data_set_and_default_for_the_sample(demo, monkeypatch):
    "Without --full the shipped sample is used; --full asks fashion_dls for the real data set, all of it."
    calls, real = [], demo.fashion_dls
    def fake(**kw): calls.append(kw); return real(**{**kw, 'sample': True, 'limit': (16, 8)})
    monkeypatch.setattr(demo, 'fashion_dls', fake)
    demo.build(demo.parse_args(['--full', '--threads', 1]))
    demo.build(demo.parse_args(TINY))
    assert calls[0]['sample'] is False and calls[0]['limit'] == (None, None) and calls[0]['bs'] == 256
    assert calls[1]['sample'] is True and calls[1]['limit'] == (32, 16) and calls[1]['bs'] == 8


def _first_batch_and_weights(demo, seed):
    learn = demo.build(demo.parse_args([*TINY, '--seed', seed]))
    return next(iter(learn.dls.train))[1], [p.detach().clone() for p in learn.model.parameters()]


def test_seed_sets_the_initial_weights_and_the_shuffle(demo):
    "--seed: the same seed gives the same initial weights and batch order, another seed other ones."
    (y0, w0), (y0b, w0b), (y1, w1) = (_first_batch_and_weights(demo, s) for s in (0, 0, 1))
    assert torch.equal(y0, y0b) and all(torch.equal(a, b) for a, b in zip(w0, w0b))
    assert not torch.equal(y0, y1) and not torch.equal(w0[0], w1[0])


def test_checkpoint_callback_follows_every_steps(demo, tmp_path):
    "--checkpoint alone: an epoch checkpoint (CheckpointCB); with --every-steps: StepCheckpointCB."
    names = lambda extra: {type(cb).__name__ for cb in demo.build(demo.parse_args([*TINY, *extra])).cbs}
    assert {'CheckpointCB'} <= names(['--checkpoint', tmp_path/'a.pt']) and 'StepCheckpointCB' not in names(['--checkpoint', tmp_path/'a.pt'])
    assert 'StepCheckpointCB' in names(['--checkpoint', tmp_path/'b.pt', '--every-steps', 2])
    assert not {'CheckpointCB', 'StepCheckpointCB', 'StopAfterCB'} & names([])


def test_max_steps_stops_after_that_many_training_steps(demo, tmp_path):
    "--max-steps 6 (4 steps per epoch): 6 batch losses, 48 training items reported, no metrics for the cut epoch."
    learn = demo.main([*TINY, '--epochs', 3, '--max-steps', 6, '--out', tmp_path])
    assert len(np.load(tmp_path/'losses_rank0.npy')) == 6
    rep = json.loads((tmp_path/'rank0.json').read_text())
    assert rep['items_seen'] == 48 and rep['world_size'] == 1 and rep['rank'] == 0
    assert [(h['epoch'], h['phase']) for h in learn.metrics.history] == [(0, 'train'), (0, 'eval')]


def test_out_holds_history_weights_losses_and_predictions(tiny_run):
    "--out: the whole history, the final weights, one loss per step, predictions of the first --predict test images."
    demo, learn, out, res, argv = tiny_run
    assert json.loads((out/'history.json').read_text()) == learn.metrics.history and len(learn.metrics.history) == 4
    from safetensors.torch import load_file
    w = load_file(out/'weights.safetensors')
    assert all(torch.equal(w[k], v) for k, v in learn.model.state_dict().items())
    assert len(np.load(out/'losses_rank0.npy')) == 8  # 2 epochs x 4 steps
    xv = learn.dls.valid.get_batch(torch.arange(40))[0]
    with torch.no_grad(): expected = learn.model(xv).numpy()
    assert np.allclose(np.load(out/'predictions.npy'), expected, atol=1e-6)


def test_results_file_records_the_run(tiny_run):
    "--results (parent folders created): command with the arguments, world, sizes, images, final metrics."
    demo, learn, out, res, argv = tiny_run
    assert res['command'] == 'torchrun --standalone --nproc_per_node=1 tools/train_ddp_demo.py ' + ' '.join(map(str, argv))
    assert (res['world_size'], res['device'], res['bs_per_process'], res['global_batch']) == (1, 'cpu', 8, 8)
    assert (res['epochs'], res['hidden'], res['train_images']) == (2, 8, 32)
    assert res['final'] == learn.metrics.history[-1] and res['final']['phase'] == 'eval'
    assert 0 <= res['train_seconds'] <= res['fit_seconds'] and res['train_images_per_s'] > 0


def _report(learn):
    "The learner's RankReportCB."
    return next(cb for cb in learn.cbs if type(cb).__name__ == 'RankReportCB')


def test_results_scale_with_the_world_size(tiny_run, tmp_path, monkeypatch):
    "On rank 0 of 2: global batch, command and throughput count both processes; fit seconds as measured."
    demo, learn, out, _, _ = tiny_run
    monkeypatch.setattr(demo, 'get_world_size', lambda: 2)
    rep = _report(learn)
    monkeypatch.setattr(rep, 'items', 64); monkeypatch.setattr(rep, 'train_seconds', 4.)
    args = demo.parse_args(['--bs', 8, '--epochs', 2, '--results', tmp_path/'r.json'])
    demo.write_outputs(args, learn, 12.345)
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['command'].startswith('torchrun --standalone --nproc_per_node=2 tools/train_ddp_demo.py --bs 8')
    assert (res['world_size'], res['bs_per_process'], res['global_batch']) == (2, 8, 16)
    assert (res['fit_seconds'], res['train_seconds'], res['train_images_per_s']) == (12.35, 4., 32.)
    assert res['train_images'] == learn.dls.train.dataset_len


def test_results_command_of_a_run_on_several_machines(tiny_run, tmp_path, monkeypatch):
    "16 processes, 8 per machine (torchrun's LOCAL_WORLD_SIZE): the command says 2 nodes of 8, not 16 on one."
    demo, learn, out, _, _ = tiny_run
    monkeypatch.setattr(demo, 'get_world_size', lambda: 16)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')
    demo.write_outputs(demo.parse_args(['--bs', 8, '--results', tmp_path/'r.json']), learn, 1.)
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['command'].startswith('torchrun --nnodes=2 --nproc_per_node=8 tools/train_ddp_demo.py --bs 8')
    assert res['global_batch'] == 128


def test_results_command_from_the_command_line(tiny_run, tmp_path, monkeypatch):
    "Launched as a script (argv None), the results command holds the command-line arguments, not the script path twice."
    demo, learn, out, _, _ = tiny_run
    monkeypatch.setattr(sys, 'argv', ['tools/train_ddp_demo.py', '--bs', '8', '--results', str(tmp_path/'r.json')])
    demo.write_outputs(demo.parse_args(), learn, 1.)
    cmd = json.loads((tmp_path/'r.json').read_text())['command']
    assert cmd == f'torchrun --standalone --nproc_per_node=1 tools/train_ddp_demo.py --bs 8 --results {tmp_path/"r.json"}'


def test_other_ranks_write_only_their_own_files(tiny_run, tmp_path, monkeypatch):
    "Rank 1 writes rank1.json (its own items) and losses_rank1.npy; history, weights, predictions and results are rank 0's."
    demo, learn, out, _, _ = tiny_run
    monkeypatch.setattr(_report(learn), 'items', 64)
    monkeypatch.setattr(demo, 'get_rank', lambda: 1)
    monkeypatch.setattr(demo, 'get_world_size', lambda: 2)
    monkeypatch.setattr(demo, 'is_main_process', lambda: False)
    demo.write_outputs(demo.parse_args(['--out', tmp_path/'o', '--results', tmp_path/'r.json']), learn, 1.)
    assert sorted(p.name for p in (tmp_path/'o').iterdir()) == ['losses_rank1.npy', 'rank1.json']
    rep = json.loads((tmp_path/'o'/'rank1.json').read_text())
    assert (rep['rank'], rep['world_size'], rep['items_seen']) == (1, 2, 64) and not (tmp_path/'r.json').exists()


def test_threads_and_epochs_are_applied(demo, tmp_path, monkeypatch):
    "--threads sets torch's CPU threads; --epochs is the number of epochs trained."
    learn = demo.main([*TINY, '--threads', 2, '--epochs', 3, '--max-steps', 9])
    assert torch.get_num_threads() == 2 and learn.metrics.history[-1]['epoch'] == 1
    learn = demo.main([*TINY, '--epochs', 3])
    assert [h['epoch'] for h in learn.metrics.history] == [0, 0, 1, 1, 2, 2]


def test_results_after_max_steps(demo, tmp_path):
    "--max-steps with --results: the results file is written, throughput from the steps that ran."
    demo.main([*TINY, '--epochs', 2, '--max-steps', 3, '--results', tmp_path/'r.json'])
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['train_seconds'] >= 0 and res['train_images_per_s'] > 0 and res['final'] is None   # (3 tiny steps: ms)


# ---------------------------------------------------------------- tools/bench_data.py

@pytest.fixture
def bench(load_script):
    "tools/bench_data.py as a module."
    return load_script('tools/bench_data.py')


def test_course_tfm_pads_to_32_and_scales_to_minus_one_one(bench):
    "course_tfm: each PIL image -> a (1, 32, 32) float tensor in [-1, 1], the 2-pixel border at -1."
    from PIL import Image
    im = Image.fromarray(np.full((28, 28), 255, np.uint8))
    out = bench.course_tfm({'image': [im, Image.fromarray(np.zeros((28, 28), np.uint8))]})['image']
    assert out[0].shape == (1, 32, 32) and out[0][0, 2:30, 2:30].eq(1).all() and out[0][0, :2].eq(-1).all()
    assert out[1].eq(-1).all()


class Batch:
    "A stand-in batch tensor: `.to` returns itself (so a 'cuda' device works without a GPU)."
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def to(self, *a, **k): return self


class Passes:
    "An iterable of batches that counts how often it was iterated."
    def __init__(self, sizes): self.sizes, self.passes = sizes, 0
    def __iter__(self):
        self.passes += 1
        return iter([(Batch(n), Batch(n)) for n in self.sizes])


def test_best_epoch_counts_images_of_one_pass_and_keeps_the_fastest(bench, monkeypatch):
    "best_epoch: the images of one pass, the shortest of `repeats` passes, all passes run."
    clock = iter([0., 5., 10., 12., 20., 23.])
    monkeypatch.setattr(bench, 'time', SimpleNamespace(perf_counter=lambda: next(clock)))
    dl = Passes([3, 3, 1])
    assert bench.best_epoch(dl, torch.device('cpu'), repeats=3) == (7, 2.)
    assert dl.passes == 3


def test_best_epoch_synchronises_cuda_once_per_pass(bench, monkeypatch):
    "On a CUDA device each pass ends with torch.cuda.synchronize (and never on the CPU)."
    calls = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: calls.append(1))
    bench.best_epoch(Passes([2]), torch.device('cuda'), repeats=2)
    assert len(calls) == 2
    bench.best_epoch(Passes([2]), torch.device('cpu'), repeats=2)
    assert len(calls) == 2


@pytest.fixture
def bench_run(bench, monkeypatch, tmp_path):
    "Run bench_data.main on a tiny sample (64 training images) with the given arguments; returns what it was called with."
    from PIL import Image
    from miniai.data import fashion_dls
    calls = {'dls': [], 'dd': [], 'from_dd': [], 'repeats': []}
    def fake_dls(**kw): calls['dls'].append(kw); return fashion_dls(**{**kw, 'sample': True, 'limit': (64, 8), 'data_dir': None})
    class Split:  # a Hugging Face split of 64 images, without importing `datasets`
        tfm = None
        def with_transform(self, tfm): s = Split(); s.tfm = tfm; return s
    def fake_dd(data_dir=None, allow_sample=None): assert allow_sample is False; calls['dd'].append(data_dir); return {'train': Split(), 'test': Split()}
    class FakeDLs:
        @staticmethod
        def from_dd(dd, bs, **kw):
            calls['from_dd'].append(kw)
            b = dd['train'].tfm({'image': [Image.fromarray(np.zeros((28, 28), np.uint8))]*64, 'label': list(range(64))})
            return SimpleNamespace(train=[(torch.stack(b['image']), torch.tensor(b['label']))])
    real_best = bench.best_epoch
    def best(dl, device, repeats): calls['repeats'].append(repeats); return real_best(dl, device, 1)
    monkeypatch.setattr(bench, 'fashion_dls', fake_dls)
    monkeypatch.setattr(bench, 'load_fashion_mnist', fake_dd)
    monkeypatch.setattr(bench, 'DataLoaders', FakeDLs)
    monkeypatch.setattr(bench, 'best_epoch', best)
    monkeypatch.setattr(bench, 'default_device', lambda: torch.device('cpu'))
    monkeypatch.chdir(tmp_path)
    def run(*argv):
        monkeypatch.setattr(sys, 'argv', ['bench_data.py', *map(str, argv)])
        bench.main()
        return calls
    return run


def test_bench_defaults_write_results_data_throughput_json(bench_run, tmp_path):
    "Default: batch 512, the device loader then per-item loaders with 0 and 4 workers, in results/data_throughput.json;"
    " but with no GPU the default file (the GPU figure) is refused, and only an explicit --out measures on the CPU."
    with pytest.raises(SystemExit) as e: bench_run()
    assert e.value.code == 2 and not (tmp_path/'results').exists()
    calls = bench_run('--out', 'results/data_throughput.json')
    res = json.loads((tmp_path/'results'/'data_throughput.json').read_text())
    assert res['bs'] == 512 and res['device'] == 'cpu' and calls['dls'][0]['bs'] == 512
    assert [(r['loader'], r['workers']) for r in res['rows']] == [('DeviceImageLoader', 0), ('DataLoader per-item', 0),
                                                                   ('DataLoader per-item', 4)]
    assert [kw['num_workers'] for kw in calls['from_dd']] == [0, 4] and not any(kw['pin_memory'] for kw in calls['from_dd'])
    for r in res['rows']: assert r['images'] == 64 and r['images_per_s'] == pytest.approx(r['images']/r['seconds'])
    assert all(r > 1 for r in calls['repeats'])  # best of several passes


def test_bench_arguments_data_dir_workers_bs_out(bench_run, tmp_path):
    "DATA_DIR reaches both loaders; --workers, --bs and --out (parent folders created) are applied."
    calls = bench_run('/some/data', '--workers', 2, '--bs', 16, '--out', tmp_path/'a'/'b'/'t.json')
    res = json.loads((tmp_path/'a'/'b'/'t.json').read_text())
    assert calls['dls'][0]['data_dir'] == '/some/data' and calls['dd'] == ['/some/data']
    assert [r['workers'] for r in res['rows']] == [0, 2] and res['bs'] == 16 and calls['dls'][0]['bs'] == 16


# ---------------------------------------------------------------- tools/check_docstrings.py

@pytest.fixture
def cd(load_script):
    "tools/check_docstrings.py as a module."
    return load_script('tools/check_docstrings.py')


def _nb(path, *cells):
    "A notebook of code cells (str or list-of-lines sources) or ('markdown', src) cells."
    cs = [{'cell_type': c[0], 'source': c[1]} if isinstance(c, tuple) else {'cell_type': 'code', 'source': c} for c in cells]
    path.write_text(json.dumps({'cells': cs}))


def test_defines_finds_top_level_definitions_only(cd):
    "defines: def/class/assignment at top level (magics skipped); uses, nested ones and unparsable cells do not count."
    assert cd.defines('def f(x): return x', 'f') and cd.defines('class f: pass', 'f')
    assert cd.defines('f = 1', 'f') and cd.defines('f: int = 1', 'f') and cd.defines('a, b = f = 1, 2', 'f')
    assert cd.defines('%%time\n  %time x = 1\n!ls\ndef f(): pass', 'f')
    assert not cd.defines('def g(): f = 1', 'f') and not cd.defines('f(1)', 'f') and not cd.defines('def g(): pass', 'f')
    assert not cd.defines('x.f = 1', 'f') and not cd.defines('f += 1', 'f') and not cd.defines('def f(:', 'f')


def test_code_cells_reads_code_cells_of_every_notebook(cd, tmp_path, monkeypatch):
    "code_cells: (notebook name, source) of code cells only, list-of-lines and plain-string sources alike."
    (tmp_path/'nbs').mkdir()
    _nb(tmp_path/'nbs'/'a.ipynb', ['x = 1\n', 'y = 2'], ('markdown', 'f(1)'), ('raw', 'g(1)'), 'z = 3')
    monkeypatch.setattr(cd, 'ROOT', tmp_path)
    assert list(cd.code_cells()) == [('a.ipynb', 'x = 1\ny = 2'), ('a.ipynb', 'z = 3')]


def _module(name, **objs):
    "A fake module `name` with `objs` in __all__ (functions and classes get it as __module__ unless set)."
    m = types.ModuleType(name)
    for k, v in objs.items():
        if callable(v) and not getattr(v, '_keep_module', False): v.__module__ = name
        setattr(m, k, v)
    m.__all__ = list(objs)
    return m


def _check(cd, monkeypatch, tmp_path, mods, cells, *argv):
    (tmp_path/'nbs').mkdir(exist_ok=True)
    _nb(tmp_path/'nbs'/'x.ipynb', *cells)
    monkeypatch.setattr(cd, 'ROOT', tmp_path)
    monkeypatch.setattr(cd, 'modules', lambda: {m.__name__: m for m in mods})
    monkeypatch.setattr(sys, 'argv', ['check_docstrings.py', *argv])
    return cd.main()


def _fn(doc=None):
    def f(): pass
    f.__doc__ = doc
    return f


def test_check_reports_missing_docstrings_and_examples(cd, monkeypatch, tmp_path, capsys):
    "main: names without a docstring (whitespace is none) or without an example are listed; exit status 1."
    from dataclasses import dataclass
    @dataclass
    class DC: a: int = 0
    class Doc:
        "Documented."
    mod = _module('pkg.m', good=_fn('Has one.'), blank=_fn('   '), nodoc=_fn(), DC=DC, Doc=Doc, CONST=3)
    cells = ['good(1); blank(); nodoc(); DC(); Doc(); CONST']
    assert _check(cd, monkeypatch, tmp_path, [mod], cells) == 1
    out = capsys.readouterr().out
    assert '5 exported functions/classes checked' in out
    assert 'missing docstring (3):' in out and 'pkg.m.blank  (function)' in out and 'pkg.m.nodoc  (function)' in out
    assert 'pkg.m.DC  (class)' in out and 'no example in any notebook (0):' in out


def test_check_examples_exclude_defining_show_doc_prefix_and_attribute_uses(cd, monkeypatch, tmp_path, capsys):
    "An example is a whole-word use in another, non-show_doc cell; `x.name` counts only for patched methods."
    mod = _module('pkg.m', a=_fn('A.'), b=_fn('B.'), c=_fn('C.'), d=_fn('D.'), e=_fn('E.'))
    cells = ['def a(): pass\na()', 'show_doc(b)\nb()', 'cc = 1\nc_x = 2', 'obj.d()', 'e()']
    assert _check(cd, monkeypatch, tmp_path, [mod], cells) == 1
    out = capsys.readouterr().out
    assert 'no example in any notebook (4):' in out
    assert all(f'  pkg.m.{n}\n' in out for n in 'abcd') and 'pkg.m.e\n' not in out
    assert _check(cd, monkeypatch, tmp_path, [mod], cells, '--no-examples') == 0
    assert 'no example' not in capsys.readouterr().out


def test_check_patched_methods_and_undefined_names(cd, monkeypatch, tmp_path, capsys):
    "A @patch-ed method (module name None) is checked as that method, used as `learn.name`; an unknown name is reported."
    class Learner: pass
    def lr_find(self): "Find a learning rate."
    lr_find.__module__ = 'pkg.m'
    Learner.lr_find = lr_find
    class Other: pass
    def ghost(self): "Not from here."
    ghost.__module__ = 'pkg.other'
    Other.ghost = ghost
    mod = _module('pkg.m', Learner=Learner)
    mod.lr_find, mod.ghost, mod.Other = None, None, Other
    mod.__all__ += ['lr_find', 'ghost']
    Learner.__doc__ = 'A learner.'
    assert _check(cd, monkeypatch, tmp_path, [mod], ['learn = Learner()\nlearn.lr_find()']) == 1
    out = capsys.readouterr().out
    assert '2 exported functions/classes checked' in out and 'missing docstring (1):' in out
    assert 'pkg.m.ghost  (in __all__ but not defined)' in out and 'no example in any notebook (0):' in out


def test_check_counts_each_object_once_in_its_own_module(cd, monkeypatch, tmp_path, capsys):
    "Re-exported names are checked in their own module only, and an object under two names once."
    f = _fn()
    a = _module('pkg.a', f=f)
    b = types.ModuleType('pkg.b'); b.f, b.g = f, f; b.__all__ = ['f']
    a.g = f; a.__all__ = ['f', 'g']
    assert _check(cd, monkeypatch, tmp_path, [b, a], ['f(); g()'], '--no-examples') == 1
    out = capsys.readouterr().out
    assert '1 exported functions/classes checked' in out and 'missing docstring (1):\n  pkg.a.f  (function)' in out


def test_check_passes_when_nothing_is_missing(cd, monkeypatch, tmp_path, capsys):
    "No gap: exit status 0; a missing example alone fails unless --no-examples."
    mod = _module('pkg.m', f=_fn('F.'))
    assert _check(cd, monkeypatch, tmp_path, [mod], ['f()']) == 0
    assert _check(cd, monkeypatch, tmp_path, [mod], ['x = 1']) == 1
    assert _check(cd, monkeypatch, tmp_path, [mod], ['x = 1'], '--no-examples') == 0


def test_a_module_that_fails_to_import_fails_the_check(cd, monkeypatch, tmp_path, capsys):
    "modules(): an import error is reported and kept as None; main() then exits 1 and names the module."
    real = importlib.import_module
    def imp(name):
        if name == 'miniai.fid': raise ImportError('no torcheval')
        return real(name)
    monkeypatch.setattr(cd, 'importlib', SimpleNamespace(import_module=imp))
    mods = cd.modules()
    assert mods['miniai.fid'] is None and mods['miniai.core'] is not None
    assert 'IMPORT FAILED miniai.fid: ImportError: no torcheval' in capsys.readouterr().out
    mod = _module('pkg.m', f=_fn('F.'))
    (tmp_path/'nbs').mkdir(); _nb(tmp_path/'nbs'/'x.ipynb', 'f()')
    monkeypatch.setattr(cd, 'ROOT', tmp_path)
    monkeypatch.setattr(cd, 'modules', lambda: {'pkg.bad': None, 'pkg.m': mod})
    monkeypatch.setattr(sys, 'argv', ['check_docstrings.py'])
    assert cd.main() == 1
    assert 'modules that failed to import (1), names unchecked: pkg.bad' in capsys.readouterr().out


# ---------------------------------------------------------------- tools/check_docstrings.py: parameters

def _own(cls, module):
    "Give `cls` and the functions in its body `module` as their module, as if defined there."
    cls.__module__ = module
    for f in vars(cls).values():
        f = getattr(f, '__func__', f)
        if inspect.isfunction(f): f.__module__ = module
    return cls


def full(a: int,        # the first
         b: str = 'x',  # the second
         *args, **kwargs):
    "Every parameter hinted and documented; *args and **kwargs need neither."


def half(a: int,  # documented
         b,       # documented, no hint
         c: float = 1.):
    "`b` lacks a hint, `c` a docment."


def blank(a: int,  #   
          ):
    "A comment of spaces is no docment."


@dataclass
class DC:
    "Fields are the constructor's parameters."
    a: int     # documented
    b: float = 0.


def test_param_gaps_of_functions(cd):
    "param_gaps: None when complete; otherwise the parameters without a hint and those without a docment."
    assert cd.param_gaps('full', full) is None
    assert cd.param_gaps('half', half) == ('half', ['b'], ['c'])
    assert cd.param_gaps('blank', blank) == ('blank', [], ['a'])
    assert cd.param_gaps('none', lambda: None) is None                     # nothing to document
    assert cd.param_gaps('max', max) is None                             # no signature to read
    exec_f = {}; exec('def g(a: int): pass', exec_f)                     # no source: docments cannot be read
    assert cd.param_gaps('g', exec_f['g']) == ('g', [], ['a'])


def test_object_param_gaps_of_classes(cd):
    "Constructors (dataclass fields too) and public methods are checked; private methods and callback events are not."
    class Callback: pass
    class Thing:
        "A thing."
        def __init__(self,
                     n: int,   # how many
                     m):
            pass
        def public(self, x: int): pass
        def _private(self, y): pass
        @staticmethod
        def stat(z: int,  # documented
                 ): pass
        @classmethod
        def make(cls, w): pass
        # not a callback: checked
        def before_fit(self, learn): pass
    class CB(Callback):
        "A callback."
        # an event: exempt
        def before_fit(self, learn): pass
        # more than `learn`: checked
        def after_batch(self, learn, extra: int): pass
    for c in (Thing, CB): _own(c, 'pkg.m')
    assert cd.object_param_gaps('Thing', Thing, 'pkg.m') == [
        ('Thing.__init__', ['m'], ['m']), ('Thing.public', [], ['x']), ('Thing.make', ['w'], ['w']),
        ('Thing.before_fit', ['learn'], ['learn'])]
    assert cd.object_param_gaps('CB', CB, 'pkg.m') == [('CB.after_batch', ['learn'], ['learn', 'extra'])]
    assert cd.object_param_gaps('DC', DC, DC.__module__) == [('DC.__init__', [], ['b'])]   # docments read its source
    Thing.public.__module__ = 'pkg.other'       # patched in from another module: checked there, not here
    assert ('Thing.public', [], ['x']) not in cd.object_param_gaps('Thing', Thing, 'pkg.m')
    assert cd.object_param_gaps('half', half, 'pkg.m') == [('half', ['b'], ['c'])]


def test_check_reports_parameter_gaps(cd, monkeypatch, tmp_path, capsys):
    "main: the parameter section counts parameters with a gap and fails the check; --no-params skips it."
    for f in (half, full): monkeypatch.setattr(f, '__module__', 'pkg.m')   # restored afterwards: other tests read them
    mod, cells = _module('pkg.m', half=half, full=full), ['half(1, 2); full(1)']
    assert _check(cd, monkeypatch, tmp_path, [mod], cells) == 1
    out = capsys.readouterr().out
    assert 'parameters without a type hint or docment (2):\n  pkg.m.half: no hint: b; no docment: c\n' in out
    assert _check(cd, monkeypatch, tmp_path, [mod], cells, '--no-params') == 0
    assert 'parameters without' not in capsys.readouterr().out


def test_api_param_gaps_checks_patched_methods_once(cd):
    "api_param_gaps: a @patch-ed method of an exported class is checked with its class, one of a private class alone."
    class Shown: "Exported."
    class Hidden: "Not exported."
    def meth(self, a): "Patched onto Shown."
    def other(self, b): "Patched onto Hidden."
    Shown.meth, Hidden.other = meth, other
    m = _module('pkg.m', Shown=Shown, meth=None, other=None, gone=None)   # fastcore's @patch leaves the names None
    m.Hidden = Hidden                                                      # defined there, not exported
    for o in (Hidden, meth, other): o.__module__ = 'pkg.m'
    assert cd.api_param_gaps({'pkg.m': m, 'pkg.bad': None}) == [
        ('pkg.m', 'Shown.meth', ['a'], ['a']), ('pkg.m', 'other', ['b'], ['b'])]
