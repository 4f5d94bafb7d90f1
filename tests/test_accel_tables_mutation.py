"Tests found by a mutation run on bench/bench_accel.py, tools/results_tables.py and bench/fid_floor.py (+ miniai.fid.real_image_floor)."
import itertools, json, math
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import torch
from torch import nn


# ---------------------------------------------------------------- bench/bench_accel.py

@pytest.fixture
def bench(load_script):
    return load_script('bench/bench_accel.py')


def _fake_run(bench, monkeypatch, speeds, ema_ms=None, fused=(None,)):
    """Stand-ins for the slow parts of `bench.main`: `make_learner` gives a tiny linear model (the learners are built in
    the order of the configurations, which `speeds` follows) and `train_throughput` returns the scripted images/s
    `speeds[name][round]`; returns the list of (name, warmup) calls, in order."""
    calls, names, fused = [], itertools.cycle(speeds), itertools.cycle(fused)   # fused: AdamW's flag as built, in turn
    def make_learner(cbs, quick, bs, n_batches):
        torch.manual_seed(0)
        return SimpleNamespace(model=nn.Linear(3, 2), name=next(names), opt=SimpleNamespace(defaults={'fused': next(fused)}))
    def train_throughput(learn, epochs=1, warmup=1):
        calls.append((learn.name, warmup) if epochs == 1 else (learn.name, warmup, epochs))
        return speeds[learn.name][sum(1 for c in calls if c[0] == learn.name) - 1]
    monkeypatch.setattr(bench, 'make_learner', make_learner)
    monkeypatch.setattr(bench, 'train_throughput', train_throughput)
    if ema_ms is not None: monkeypatch.setattr(bench, 'ema_update_ms', ema_ms)
    return calls


SPEEDS = {'float32': [100., 300., 200.], 'bfloat16': [1000., 1200., 400.], 'float16 + GradScaler': [10., 20., 30.],
          'bfloat16 + EMA (foreach)': [900., 850., 950.], 'bfloat16 + EMA (Python loop)': [500., 1100., 100.]}


def test_bench_accel_reports_median_spread_and_ema_cost_by_hand(bench, monkeypatch, tmp_path):
    "images/s is the median of the rounds, the spread [min, max], the EMA cost 100*(1 - ema/bfloat16) and the EMA share of a bf16 step."
    _fake_run(bench, monkeypatch, SPEEDS, ema_ms=lambda cls, model, n=200: 2.0 if cls is bench.EMA else 6.0)
    r = bench.main(['--rounds', '3', '--bs', '8', '--out', str(tmp_path/'r.json')])
    assert json.loads((tmp_path/'r.json').read_text()) == r
    assert r['images_per_s'] == {'float32': 200., 'bfloat16': 1000., 'float16 + GradScaler': 20.,
                                 'bfloat16 + EMA (foreach)': 900., 'bfloat16 + EMA (Python loop)': 500.}
    assert r['images_per_s_spread'] == {'float32': [100., 300.], 'bfloat16': [400., 1200.], 'float16 + GradScaler': [10., 30.],
                                        'bfloat16 + EMA (foreach)': [850., 950.], 'bfloat16 + EMA (Python loop)': [100., 1100.]}
    assert r['ema_cost_pct_vs_bfloat16'] == {'bfloat16 + EMA (foreach)': 10.0, 'bfloat16 + EMA (Python loop)': 50.0}
    # a bf16 step of 8 images at 1000 images/s takes 8 ms: 2 ms is 25 %, 6 ms 75 %
    assert r['ema_update_ms'] == {'foreach (one _foreach_lerp_)': 2.0, 'Python loop (one lerp_ per tensor)': 6.0}
    assert r['ema_update_pct_of_bfloat16_step'] == {'foreach (one _foreach_lerp_)': 25.0, 'Python loop (one lerp_ per tensor)': 75.0}
    assert r['model_params'] == 3*2 + 2 and r['n_param_tensors'] == 2
    assert r['rounds'] == 3 and r['batch_size'] == 8 and r['quick'] is False


@pytest.mark.parametrize('fused, said', [((True,), 'fused AdamW'), ((None,), 'AdamW, not fused'), ((True, False), 'AdamW, fused in some')])
def test_bench_accel_says_whether_adamw_was_fused_as_built(bench, monkeypatch, tmp_path, fused, said):
    "The record claimed 'fused AdamW' whatever was built (a run with the model still on the CPU got the foreach one)."
    _fake_run(bench, monkeypatch, SPEEDS, ema_ms=lambda cls, model, n=200: 1.0, fused=fused)
    r = bench.main(['--rounds', '1', '--out', str(tmp_path/'r.json')])
    assert f'prediction, {said}' in r['what'] and r['optimizer_fused'] is (fused == (True,))


def test_bench_accel_rounds_are_interleaved_and_only_the_first_warms_up(bench, monkeypatch, tmp_path):
    "Each round times every configuration once, in order; only round 0 runs the warm-up epoch."
    calls = _fake_run(bench, monkeypatch, SPEEDS, ema_ms=lambda cls, model, n=200: 1.0)
    bench.main(['--rounds', '3', '--out', str(tmp_path/'r.json')])
    names = list(SPEEDS)
    assert calls == [(n, 1) for n in names] + [(n, 0) for n in names]*2
    calls.clear()
    bench.main(['--rounds', '1', '--epochs', '2', '--out', str(tmp_path/'r.json')])
    assert calls == [(n, 1, 2) for n in names]


def test_bench_accel_make_learner_data_and_recipe(bench, monkeypatch):
    "make_learner: bs*n_batches random uint8 images, shuffled full batches, MSE loss, lr 4e-3, the given callbacks last."
    import torch.nn.functional as F
    monkeypatch.setattr(bench, 'UNet', lambda quick: nn.Conv2d(1, 1, 1))
    marker = bench.LoopEMA()
    learn = bench.make_learner([marker], True, 4, 3)
    dl = learn.dls.train
    assert len(dl) == 3 and dl.bs == 4 and dl.shuffle and dl.drop_last and learn.dls.valid is dl
    assert dl.images.shape == (12, 1, 32, 32) and dl.images.dtype == torch.uint8
    assert learn.loss_func is F.mse_loss and learn.lr == 4e-3 and marker in learn.cbs


def test_bench_accel_rounds_median_keeps_one_decimal(bench, monkeypatch, tmp_path):
    "The reported median is rounded to 0.1 image/s (not to whole images/s); an even number of rounds averages the middle two."
    speeds = {k: [1234.56, 1000.04] for k in SPEEDS}
    _fake_run(bench, monkeypatch, speeds, ema_ms=lambda cls, model, n=200: 1.0)
    r = bench.main(['--rounds', '2', '--out', str(tmp_path/'r.json')])
    assert r['images_per_s']['float32'] == 1117.3 and r['images_per_s_spread']['float32'] == [1000.0, 1234.6]


def test_bench_accel_defaults_full_and_quick(bench, monkeypatch, tmp_path):
    "Defaults: 512 images x 40 batches x 3 rounds written to results/accel_throughput.json; --quick: 4 x 2, 1 round, no file."
    monkeypatch.chdir(tmp_path)
    seen = []
    _fake_run(bench, monkeypatch, {k: [1000.]*4 for k in SPEEDS}, ema_ms=lambda cls, model, n=200: 1.0)
    real_make = bench.make_learner
    monkeypatch.setattr(bench, 'make_learner', lambda cbs, quick, bs, n: (seen.append((quick, bs, n)), real_make(cbs, quick, bs, n))[1])
    r = bench.main([])
    assert (r['batch_size'], r['batches_per_epoch'], r['rounds'], r['timed_epochs'], r['quick']) == (512, 40, 3, 1, False)
    assert set(seen) == {(False, 512, 40)}
    assert json.loads((tmp_path/'results'/'accel_throughput.json').read_text())['rounds'] == 3
    (tmp_path/'results'/'accel_throughput.json').unlink()
    seen.clear()
    r = bench.main(['--quick'])
    assert (r['batch_size'], r['batches_per_epoch'], r['rounds'], r['quick']) == (4, 2, 1, True)
    assert set(seen) == {(True, 4, 2)}
    assert not (tmp_path/'results'/'accel_throughput.json').exists()


def test_bench_accel_ema_cost_leaves_out_compiled_configurations(bench, monkeypatch, tmp_path):
    "With --compile the EMA cost (vs eager bfloat16) lists only the two eager EMA configurations."
    speeds = {**{k: [1000.] for k in SPEEDS}, 'bfloat16 + compile': [2000.], 'bfloat16 + compile + EMA (foreach)': [1500.]}
    _fake_run(bench, monkeypatch, speeds, ema_ms=lambda cls, model, n=200: 1.0)
    r = bench.main(['--compile', '--rounds', '1', '--out', str(tmp_path/'r.json')])
    assert set(r['images_per_s']) == set(speeds)
    assert r['ema_cost_pct_vs_bfloat16'] == {'bfloat16 + EMA (foreach)': 0.0, 'bfloat16 + EMA (Python loop)': 0.0}


def test_bench_accel_configurations_hold_the_callbacks_their_names_say(bench):
    "Each configuration builds the callbacks it is named after (dtype, GradScaler, foreach vs loop EMA)."
    kinds = lambda cbs: [(type(c).__name__, getattr(c, 'dtype', None)) for c in cbs]
    assert bench.CONFIGS['float32']() == []
    assert kinds(bench.CONFIGS['bfloat16']()) == [('MixedPrecision', torch.bfloat16)]
    assert kinds(bench.CONFIGS['float16 + GradScaler']()) == [('MixedPrecision', torch.float16)]
    assert kinds(bench.CONFIGS['bfloat16 + EMA (foreach)']()) == [('MixedPrecision', torch.bfloat16), ('EMA', None)]
    assert kinds(bench.CONFIGS['bfloat16 + EMA (Python loop)']()) == [('MixedPrecision', torch.bfloat16), ('LoopEMA', None)]
    assert kinds(bench.COMPILE_CONFIGS['bfloat16 + compile + EMA (foreach)']()) == \
        [('MixedPrecision', torch.bfloat16), ('CompileCB', None), ('EMA', None)]


def test_loop_ema_matches_the_ema_formula(bench, one_thread):
    "LoopEMA's update is shadow <- d*shadow + (1-d)*param with the warm-up decay min(0.999, (1+n)/(10+n)), like EMA."
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    ema = bench.LoopEMA(); ema.track(m)
    want = [p.detach().clone().double() for p in m.parameters()]
    for n in range(3):
        with torch.no_grad():
            for p in m.parameters(): p.add_(1.)
        d = min(0.999, (1 + n)/(10 + n))
        want = [d*w + (1 - d)*p.detach().double() for w, p in zip(want, m.parameters())]
        ema.update()
    assert ema.n_updates == 3
    for s, w in zip(ema.shadow, want): torch.testing.assert_close(s.double(), w, rtol=1e-6, atol=1e-6)


def test_ema_update_ms_times_n_updates_after_ten_untimed(bench, monkeypatch):
    "ema_update_ms: 10 untimed updates, then n timed ones; the result is ms per timed update (fake clock: 1 ms per update)."
    clock = [0.]
    class FakeEMA:
        count = 0
        def track(self, model): pass
        def update(self): FakeEMA.count += 1; clock[0] += 1e-3
    monkeypatch.setattr(bench, 'time', SimpleNamespace(perf_counter=lambda: clock[0]))
    clock[0] = 0.
    assert bench.ema_update_ms(FakeEMA, nn.Linear(2, 2), n=7) == pytest.approx(1.0)
    assert FakeEMA.count == 17


def test_noisify_follows_the_cosine_schedule(bench):
    "noisify gives x_t = cos(pi t/2) x0 + sin(pi t/2) eps, timesteps 999*t with t in [0, 1), and eps as the target."
    torch.manual_seed(0)
    x0 = torch.randn(64, 1, 4, 4)
    (xt, ts), eps = (lambda o: ((o[0], o[1]), o[2]))(bench.noisify((x0, None)))
    t = ts/999
    assert ts.shape == (64,) and 0 <= t.min() and t.max() < 1 and t.std() > 0.1
    c, s = torch.cos(t*math.pi/2)[:, None, None, None], torch.sin(t*math.pi/2)[:, None, None, None]
    torch.testing.assert_close(xt, c*x0 + s*eps, rtol=1e-4, atol=1e-5)
    assert abs(eps.std().item() - 1) < 0.1


# ---------------------------------------------------------------- tools/results_tables.py

@pytest.fixture
def rt(load_script):
    return load_script('tools/results_tables.py')


def test_fmt_by_hand(rt):
    "Floats: thousands separators from 1,000 on (negative ones too), else 4 significant digits; ints as is; long lists cut at 60 chars."
    assert rt._fmt(1000.) == '1,000' and rt._fmt(999.5) == '999.5' and rt._fmt(-12345.6) == '-12,346'
    assert rt._fmt(0.123456) == '0.1235' and rt._fmt(15890753) == '15890753' and rt._fmt(True) == 'True'
    v = list(range(40))
    assert rt._fmt(v) == json.dumps(v)[:60] and len(rt._fmt(v)) == 60


def test_table_skips_rows_that_are_not_dicts(rt):
    "A list of rows with a stray non-dict entry gives the table of the dict rows."
    assert rt._table(['note', dict(a=1, b=2.5), dict(a=3)]) == ['| a | b |', '|---|---|', '| 1 | 2.5 |', '| 3 |  |']
    assert rt._table(['only text']) == []


def test_render_environment_quick_banner_and_empty_figures(rt, tmp_path):
    "Unknown environment entries (None) are left out; a quick run is flagged, a full one not; empty dicts/lists give no table."
    (tmp_path/'classifier.json').write_text(json.dumps(dict(environment=dict(device='cpu', gpu=None), quick=True,
                                                            extra={}, rows=[], n=3)))
    (tmp_path/'fid_floor.json').write_text(json.dumps(dict(quick=False, seconds=dict(reference=1.5))))
    md = rt.render(tmp_path)
    assert 'Measured on: device cpu\n' in md and 'gpu None' not in md
    assert md.count('**Quick mode: these figures only show that the command runs.**') == 1
    cl = md.split('### ')[2]   # (after the targets)
    assert 'Quick mode' in cl and '`extra`' not in cl and '|' not in cl and '- n: 3' in cl and '- quick' not in cl
    assert '| seconds | value |\n|---|---|\n| reference | 1.5 |' in md


@pytest.mark.parametrize('key', ['runs', 'guidance', 'selection', 'rows'])
def test_render_lists_of_rows_become_tables(rt, tmp_path, key):
    "`rows`, `runs`, `guidance` and `selection` lists are rendered as tables."
    (tmp_path/'audio.json').write_text(json.dumps({key: [dict(a=1, b='x'), dict(a=2, b='y')]}))
    md = rt.render(tmp_path)
    assert '| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |' in md


def test_render_keeps_the_section_order_and_headings(rt, tmp_path):
    "The section lists every source in order, with its heading and command, between the markers."
    md = rt.render(tmp_path)
    assert md.startswith(rt.START + '\n') and md.endswith('\n' + rt.END)
    heads = [l for l in md.splitlines() if l.startswith('### ')]
    assert heads == ['### Targets of the issues'] + [f'### {w} (`results/{n}`)' for n, w, _ in rt.SOURCES]
    assert md.count('Command: `') == len(rt.SOURCES)


def test_render_publishes_the_throughput_spreads(rt, tmp_path):
    "bench_accel's `images_per_s_spread` ({config: [min, max]}) reaches the README section, like the medians it qualifies."
    (tmp_path/'ema_cost.json').write_text(json.dumps(dict(rounds=3, images_per_s={'float32': 1000.5, 'bfloat16': 2000.5},
                                                          images_per_s_spread={'float32': [917.25, 1100.75], 'bfloat16': [1900.5, 2100.5]})))
    md = rt.render(tmp_path)
    assert '| images_per_s_spread | value |' in md and '| float32 | [917.2, 1,101] |' in md and '| bfloat16 | [1,900, 2,100] |' in md


def _readme(rt, monkeypatch, tmp_path, text):
    monkeypatch.setattr(rt, 'REPO', tmp_path)
    monkeypatch.setattr(rt, 'render', lambda: rt.START + '\nNEW\n' + rt.END)
    (tmp_path/'README.md').write_text(text)
    return tmp_path/'README.md'


def test_main_check_reports_a_stale_readme_and_leaves_it(rt, monkeypatch, tmp_path):
    "--check exits 1 on a stale README without writing it, 0 once it was regenerated; the text around the markers is kept."
    text = 'intro\n' + rt.START + '\nOLD\n' + rt.END + '\noutro\n'
    readme = _readme(rt, monkeypatch, tmp_path, text)
    assert rt.main(['--check']) == 1 and readme.read_text() == text
    assert rt.main([]) == 0
    assert readme.read_text() == 'intro\n' + rt.START + '\nNEW\n' + rt.END + '\noutro\n'
    assert rt.main(['--check']) == 0


def test_main_appends_the_section_when_a_marker_is_missing(rt, monkeypatch, tmp_path):
    "A README without both markers gets the section appended after one blank line."
    readme = _readme(rt, monkeypatch, tmp_path, 'intro\n' + rt.START + '\n\n')
    assert rt.main([]) == 0
    assert readme.read_text() == 'intro\n' + rt.START + '\n\n' + rt.START + '\nNEW\n' + rt.END + '\n'


# ---------------------------------------------------------------- bench/fid_floor.py

ROW = {'n': 128, 'fid_mean': 1.5, 'fid_std': 0.25, 'kid_mean': 1e-3, 'kid_std': 2e-4, 'fids': [1.25, 1.75], 'kids': [8e-4, 1.2e-3]}


@pytest.fixture
def floor(load_script, monkeypatch, tmp_path):
    "bench/fid_floor.py with stand-ins for the classifier, the evaluator and the draws; `floor.calls` records their arguments."
    mod = load_script('bench/fid_floor.py')
    calls = {}
    ie = SimpleNamespace(ref=SimpleNamespace(feats=torch.zeros(30, 8, dtype=torch.float64)), model='MODEL')
    def train(**kw): calls['train'] = kw; Path(kw['save_to']).write_bytes(b'x')
    def image_eval(clf, **kw): calls['eval'] = (clf, kw); return ie
    def floor_fn(ie_, **kw): calls['floor'] = kw; return [dict(ROW)]
    monkeypatch.setattr(mod, 'train_fashion_classifier', train)
    monkeypatch.setattr(mod, 'fashion_image_eval', image_eval)
    monkeypatch.setattr(mod, 'real_image_floor', floor_fn)
    monkeypatch.setattr(mod, 'weights_hash', lambda m: f'hash-of-{m}')
    monkeypatch.setattr(mod, 'weights_metadata', lambda p: {'from': str(p)})
    monkeypatch.setattr(mod, 'fashion_classifier_path', lambda: Path('/default/clf.safetensors'))
    monkeypatch.setattr(mod, 'run_environment', lambda: {'device': 'cpu'})
    mod.calls = calls
    return mod


def test_fid_floor_full_run_defaults_and_results_file(floor, tmp_path):
    "Full run: the default classifier, 10,000 test images cached, sizes 512/2048/10,000, 5 draws; the JSON holds the table."
    out = tmp_path/'f.json'
    floor.main(['--out', str(out), '--seed', '7', '--data-dir', '/d', '--bs', '64'])
    assert 'train' not in floor.calls
    assert floor.calls['eval'] == (Path('/default/clf.safetensors'), dict(data_dir='/d', bs=64, n_ref=None, cache=True, allow_sample=False))
    assert floor.calls['floor'] == dict(sizes=(512, 2048, 10_000), n_draws=5, data_dir='/d', seed=7, allow_sample=False)
    r = json.loads(out.read_text())
    assert r['draws'] == 5 and r['seed'] == 7 and r['quick'] is False and r['rows'] == [ROW]
    assert r['reference'] == dict(split='test', n=30, n_features=8)
    assert r['classifier'] == dict(path='/default/clf.safetensors', weights_sha256='hash-of-MODEL', metadata={'from': '/default/clf.safetensors'})
    assert r['table_markdown'] == ('| real images | FID (mean ± std) | KID (mean ± std) | draws |\n|---:|---:|---:|---:|\n'
                                   '| 128 | 1.500 ± 0.250 | 0.00100 ± 0.00020 | 2 |')
    assert r['environment'] == {'device': 'cpu'} and set(r['seconds']) == {'reference', 'floor'}


def test_fid_floor_quick_trains_a_tiny_classifier_unless_given_one(floor, tmp_path):
    "--quick: a 1-epoch tiny classifier, 1,000 uncached reference images, sizes 128/512/1000, 2 draws; --classifier skips training."
    floor.main(['--quick', '--out', str(tmp_path/'q.json')])
    assert floor.calls['train']['epochs'] == 1 and floor.calls['train']['progress'] is False
    assert {k: floor.calls['train'][k] for k in floor.QUICK_CLASSIFIER_CONFIG} == floor.QUICK_CLASSIFIER_CONFIG
    clf, kw = floor.calls['eval']
    assert clf == floor.calls['train']['save_to'] and kw['n_ref'] == 1000 and kw['cache'] is False and kw['allow_sample'] is True
    assert floor.calls['floor'] == dict(sizes=(128, 512, 1000), n_draws=2, data_dir=None, seed=0, allow_sample=True)
    floor.calls.clear()
    floor.main(['--quick', '--classifier', str(tmp_path/'mine.safetensors'), '--sizes', '10', '20', '--draws', '3',
                '--out', str(tmp_path/'q.json')])
    assert 'train' not in floor.calls and floor.calls['eval'][0] == tmp_path/'mine.safetensors'
    assert floor.calls['floor']['sizes'] == (10, 20) and floor.calls['floor']['n_draws'] == 3
    assert json.loads((tmp_path/'q.json').read_text())['classifier']['path'] == str(tmp_path/'mine.safetensors')


# ---------------------------------------------------------------- miniai.fid.real_image_floor (the draws behind fid_floor.json)

@pytest.fixture
def fake_split(monkeypatch):
    "A 200-image 'split' whose image i is filled with the value i; the stand-in evaluator reads back which images it got."
    import miniai.fid as fid
    x = torch.arange(200, dtype=torch.uint8)[:, None, None].expand(200, 28, 28).contiguous()
    monkeypatch.setattr(fid, 'fashion_mnist_arrays', lambda split, data_dir=None, allow_sample=None: (x, torch.zeros(200)))
    seen = []
    def scores(imgs):
        ids = ((imgs[:, 0, 16, 16] + 1)*127.5).round().long().tolist()
        seen.append(ids)
        return {'fid': float(sum(ids)), 'kid': float(len(ids)) + ids[0]/1000}
    return fid, SimpleNamespace(scores=scores), seen


def test_real_image_floor_draws_distinct_sets_and_their_mean_std(fake_split):
    "Each draw is n distinct images, the draws differ, and mean/std (ddof 1) of FID and KID are over that size's draws."
    fid, ie, seen = fake_split
    rows = fid.real_image_floor(ie, sizes=(5, 50), n_draws=3, progress=False, seed=1)
    assert [len(s) for s in seen] == [5, 5, 5, 50, 50, 50] and all(len(set(s)) == len(s) for s in seen)
    assert len({tuple(s) for s in seen}) == 6
    for row, draws in zip(rows, (seen[:3], seen[3:])):
        fids = [float(sum(s)) for s in draws]; kids = [len(s) + s[0]/1000 for s in draws]
        assert row['n'] == len(draws[0]) and row['fids'] == fids and row['kids'] == pytest.approx(kids)
        assert row['fid_mean'] == pytest.approx(np.mean(fids)) and row['fid_std'] == pytest.approx(np.std(fids, ddof=1))
        assert row['kid_mean'] == pytest.approx(np.mean(kids)) and row['kid_std'] == pytest.approx(np.std(kids, ddof=1))


def test_real_image_floor_seed_picks_the_draws(fake_split):
    "The same seed gives the same draws, another seed other draws."
    fid, ie, seen = fake_split
    fid.real_image_floor(ie, sizes=(10,), n_draws=2, progress=False, seed=0)
    fid.real_image_floor(ie, sizes=(10,), n_draws=2, progress=False, seed=0)
    fid.real_image_floor(ie, sizes=(10,), n_draws=2, progress=False, seed=1)
    assert seen[0:2] == seen[2:4] and seen[4:6] != seen[0:2]


def test_real_image_floor_one_draw_has_no_std(fake_split):
    "With one draw per size the std is NaN (unknown), not 0."
    fid, ie, seen = fake_split
    (row,) = fid.real_image_floor(ie, sizes=(4,), n_draws=1, progress=False)
    assert math.isnan(row['fid_std']) and math.isnan(row['kid_std']) and row['fid_mean'] == sum(seen[0])


def test_real_image_floor_may_draw_the_whole_split_but_no_more(fake_split):
    "A size equal to the split's image count draws every image once; one more is refused."
    fid, ie, seen = fake_split
    fid.real_image_floor(ie, sizes=(200,), n_draws=1, progress=False)
    assert sorted(seen[0]) == list(range(200))
    with pytest.raises(ValueError, match='fewer than the 201'): fid.real_image_floor(ie, sizes=(201,), n_draws=1, progress=False)


def test_bench_accel_grad_configurations_and_their_cost(bench, monkeypatch, tmp_path):
    "--grad adds GradClipCB(1) and GradAccumCB(4) in bfloat16, with their cost 100*(1 - images/s / bfloat16's) (negative: faster)."
    kinds = lambda cbs: [(type(c).__name__, getattr(c, 'max_norm', getattr(c, 'n', None))) for c in cbs]
    assert kinds(bench.GRAD_CONFIGS['bfloat16 + GradClipCB(1)']()) == [('MixedPrecision', None), ('GradClipCB', 1.)]
    assert kinds(bench.GRAD_CONFIGS['bfloat16 + GradAccumCB(4)']()) == [('MixedPrecision', None), ('GradAccumCB', 4)]
    speeds = {**{k: [1000.] for k in SPEEDS}, 'bfloat16 + GradClipCB(1)': [950.], 'bfloat16 + GradAccumCB(4)': [1100.]}
    _fake_run(bench, monkeypatch, speeds, ema_ms=lambda cls, model, n=200: 1.0)
    r = bench.main(['--grad', '--rounds', '1', '--out', str(tmp_path/'r.json')])
    assert set(r['images_per_s']) == set(speeds)
    assert r['grad_cost_pct_vs_bfloat16'] == {'bfloat16 + GradClipCB(1)': 5.0, 'bfloat16 + GradAccumCB(4)': -10.0}
    _fake_run(bench, monkeypatch, {k: [1000.] for k in SPEEDS}, ema_ms=lambda cls, model, n=200: 1.0)
    assert bench.main(['--rounds', '1', '--out', str(tmp_path/'s.json')])['grad_cost_pct_vs_bfloat16'] == {}
