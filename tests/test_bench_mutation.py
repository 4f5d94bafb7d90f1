"bench/benchkit.py and bench/ddpm_fid.py's helpers: behaviour the other tests left open (found by planting bugs, see the docstrings)."
import argparse, datetime, json
from pathlib import Path
from types import SimpleNamespace
import pytest
import torch
from miniai.accel import EMA


@pytest.fixture
def bk(load_script):
    "bench/benchkit.py as a fresh module (its imported names can be monkeypatched without touching `bench.benchkit`)."
    return load_script('bench/benchkit.py')


@pytest.fixture
def ddpm(load_script):
    "bench/ddpm_fid.py as a module."
    return load_script('bench/ddpm_fid.py')


# ---- the options of the benchmarks

def test_fid_bench_parser_defaults_and_types(bk):
    "The shared FID options parse to their documented defaults and types; the description is the doc's first line."
    p = bk.fid_bench_parser('Scores samplers.\n\nLong text.', 'tiny run')
    assert p.description == 'Scores samplers.'
    a = p.parse_args(['--out', 'r.json'])
    assert (a.out, a.quick, a.n, a.batch, a.seed, a.weights_dir, a.data_dir, a.compile) == \
           ('r.json', False, [10_000, 2048], 2048, 0, None, None, 'reduce-overhead')
    a = p.parse_args(['--out', 'r.json', '--quick', '--n', '64', '32', '--batch', '16', '--seed', '3', '--compile', 'none'])
    assert (a.quick, a.n, a.batch, a.seed, a.compile) == (True, [64, 32], 16, 3, 'none')
    assert type(a.batch) is int and all(type(n) is int for n in a.n)


def test_count_type_takes_whole_numbers_from_its_lower_bound(bk):
    "`count(lo)` parses '7' to 7 and refuses numbers below lo (0 for a count of images) and non-integers, naming the option."
    p = argparse.ArgumentParser(); p.add_argument('--n', type=bk.count()); p.add_argument('--workers', type=bk.count(0))
    assert p.parse_args(['--n', '7', '--workers', '0']) == argparse.Namespace(n=7, workers=0)
    for argv, msg in ((['--n', '0'], 'argument --n: must be >= 1, got 0'), (['--workers', '-1'], 'must be >= 0, got -1'),
                      (['--n', '2.5'], "argument --n: invalid count value: '2.5'")):
        with pytest.raises(argparse.ArgumentError, match=msg):
            p.exit_on_error = False; p.parse_args(argv)


@pytest.mark.parametrize('argv', [[], ['--out', 'r.json', '--compile', 'max-autotune'], ['--out', 'r.json', '--batch', 'many'],
                                  ['--out', 'r.json', '--batch', '0'], ['--out', 'r.json', '--n', '2048', '0']])
def test_fid_bench_parser_refuses_bad_command_lines(bk, argv, capsys):
    "No --out, an unknown compile mode or a non-integer batch is a usage error, not a run with a surprise."
    with pytest.raises(SystemExit): bk.fid_bench_parser('Doc.', 'q').parse_args(argv)


def test_models_option_defaults_to_all_and_refuses_unknown_names(bk, capsys):
    "`--models` selects a subset of the given names, all of them by default, and refuses other names."
    p = argparse.ArgumentParser(); bk.add_models_arg(p, ('linear', 'cosine'))
    assert p.parse_args([]).models == ['linear', 'cosine'] and p.parse_args(['--models', 'cosine']).models == ['cosine']
    with pytest.raises(SystemExit): p.parse_args(['--models', 'karras'])


# ---- compile mode

def test_compile_mode_compiles_only_on_cuda_and_defaults_to_the_default_device(bk, monkeypatch):
    "Only a CUDA device compiles (not mps or meta); with no device given, the default device decides."
    assert bk.compile_mode('default', 'mps') == 'none' and bk.compile_mode('reduce-overhead', 'meta') == 'none'
    monkeypatch.setattr(bk, 'default_device', lambda: torch.device('cuda'))
    assert bk.compile_mode('default') == 'default' and len(bk.compile_callbacks('reduce-overhead')) == 1
    monkeypatch.setattr(bk, 'default_device', lambda: torch.device('cpu'))
    assert bk.compile_mode('default') == 'none' and bk.compile_callbacks('reduce-overhead') == []


# ---- setting a table aside, resuming it

class _FrozenDatetime(datetime.datetime):
    "A `datetime` whose now() is 2026-01-02 03:04:05 UTC."
    @classmethod
    def now(cls, tz=None):
        t = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        return t if tz else t.replace(tzinfo=None)


def test_set_aside_names_are_utc_stamps_numbered_past_any_taken_one(bk, tmp_path, monkeypatch, capsys):
    "Within one second, set-aside files are <stem>-<UTC stamp>, then -1, -2: none overwritten, each with its .md."
    monkeypatch.setattr(bk, 'datetime', SimpleNamespace(datetime=_FrozenDatetime, timezone=datetime.timezone))
    out = tmp_path/'t.json'
    dests = []
    for i in range(3):
        out.write_text(str(i)); out.with_suffix('.md').write_text(f'md {i}')
        dests.append(bk.set_aside(out, 'why'))
    assert [d.name for d in dests] == ['t-20260102T030405Z.json', 't-20260102T030405Z-1.json', 't-20260102T030405Z-2.json']
    assert [d.read_text() for d in dests] == ['0', '1', '2'] and [d.with_suffix('.md').read_text() for d in dests] == ['md 0', 'md 1', 'md 2']
    assert all(d.parent == tmp_path/'superseded' for d in dests) and not out.exists()


def test_start_again_leaves_a_missing_file_alone_and_keeps_earlier_superseded_records(bk, tmp_path, capsys):
    "No file to set aside: nothing happens; a second change of feature network adds to the `superseded` list."
    a, b, c = 'a'*64, 'b'*64, 'c'*64
    out = tmp_path/'t.json'
    res = dict(rows=[1], feature_model_sha256=b)
    assert not bk.start_again_if_other_feature_network(res, res, a, out, dict(rows=[]))   # kept says b, but no file
    assert res == dict(rows=[1], feature_model_sha256=b) and not (tmp_path/'superseded').exists()
    earlier = dict(file='results/superseded/t-old.json', feature_model_sha256=c)
    out.write_text(json.dumps(res))
    res = dict(res, superseded=[earlier])
    assert bk.start_again_if_other_feature_network(res, res, a, out, dict(rows=[]))
    assert res['rows'] == [] and len(res['superseded']) == 2 and res['superseded'][0] == earlier
    assert res['superseded'][1]['feature_model_sha256'] == b and Path(res['superseded'][1]['file']).exists()


def test_resume_compares_configurations_as_stored_in_json(bk, tmp_path, capsys):
    "A config with tuples and int keys equals its JSON copy: the table continues instead of being set aside."
    out = tmp_path/'t.json'
    config = dict(n=(64, 32), steps={10: 'euler'})
    bk.write_json(dict(config=config, rows=[1]), out)
    res = dict(config=config, rows=[])
    assert bk.resume(res, out, ('rows',))['rows'] == [1] and res['rows'] == [1]
    assert out.exists() and not (tmp_path/'superseded').exists() and 'superseded' not in res


def test_resume_names_removed_config_keys_and_keeps_the_feature_networks_hash(bk, tmp_path, capsys):
    "The set-aside message lists a key the new config dropped; a continued table keeps `feature_model_sha256`, not keys it lacks."
    out = tmp_path/'t.json'
    out.write_text(json.dumps(dict(config=dict(n=[8], ema=0.9), rows=[1])))
    res = dict(config=dict(n=[8]), rows=[])
    assert bk.resume(res, out, ('rows',)) == {} and res['rows'] == []
    said = capsys.readouterr().out
    assert 'ema 0.9 -> None' in said and 'ema 0.9 -> None' in res['superseded'][0]['reason']
    out.write_text(json.dumps(dict(config=dict(n=[8]), rows=[1], feature_model_sha256='a'*64)))
    res = dict(config=dict(n=[8]), rows=[])
    bk.resume(res, out, ('rows', 'train'))
    assert res == dict(config=dict(n=[8]), rows=[1], feature_model_sha256='a'*64)   # no 'train' or 'classifier': not in the file


def test_resume_keeps_the_record_of_tables_set_aside_earlier(bk, tmp_path):
    "A continued table keeps its `superseded` list: which tables it replaced, and why, outlives the next run (karras/unet/noise_level)."
    out = tmp_path/'t.json'
    record = [dict(file='results/superseded/t-20260102T030405Z.json', reason='another configuration (n [4] -> [8])')]
    out.write_text(json.dumps(dict(config=dict(n=[8]), rows=[1], superseded=record)))
    res = dict(config=dict(n=[8]), rows=[])
    bk.resume(res, out, ('rows',))
    assert res.get('superseded') == record


# ---- the FID classifier

def test_fid_classifier_path_trains_only_what_is_missing(bk, tmp_path, monkeypatch, capsys):
    "Quick mode: one cached 1-epoch quick-config classifier unless --classifier; else 20 epochs, only if the file is missing."
    from miniai.models.resnet import QUICK_CLASSIFIER_CONFIG
    trained = []
    def train(epochs, save_to, data_dir=None, progress=True, **kw):
        trained.append(dict(epochs=epochs, path=Path(save_to), data_dir=data_dir, **kw)); Path(save_to).write_text('w')
    monkeypatch.setattr(bk, 'train_fashion_classifier', train)
    monkeypatch.setattr(bk, 'cache_dir', lambda *p: tmp_path.joinpath(*p))
    monkeypatch.setattr(bk, 'fashion_classifier_path', lambda: tmp_path/'nb04.safetensors')
    (tmp_path/'models').mkdir()
    args = lambda quick, clf=None: SimpleNamespace(quick=quick, classifier=clf, data_dir='D')
    quick = tmp_path/'models'/'fashion_classifier_quick.safetensors'
    assert bk.fid_classifier_path(args(True)) == quick and bk.fid_classifier_path(args(True)) == quick   # cached: trained once
    assert trained == [dict(epochs=1, path=quick, data_dir='D', **QUICK_CLASSIFIER_CONFIG)]
    mine = tmp_path/'mine.safetensors'; mine.write_text('w')
    assert bk.fid_classifier_path(args(True, str(mine))) == mine and len(trained) == 1   # --classifier wins in quick mode too
    assert bk.fid_classifier_path(args(False)) == tmp_path/'nb04.safetensors'
    assert trained[1] == dict(epochs=20, path=tmp_path/'nb04.safetensors', data_dir='D')
    assert bk.fid_classifier_path(args(False)) == tmp_path/'nb04.safetensors' and len(trained) == 2   # now on disk
    other = tmp_path/'other.safetensors'
    assert bk.fid_classifier_path(args(False, str(other))) == other and trained[2] == dict(epochs=20, path=other, data_dir='D')


# ---- rows, run log, files

def test_forget_rows_counts_what_it_drops_and_is_silent_otherwise(bk, capsys):
    "The message counts the dropped rows; nothing dropped or no such key: no message and no new key."
    res = dict(rows=[dict(m='a'), dict(m='b'), dict(m='b2')])
    bk.forget_rows(res, 'rows', lambda r: r['m'] == 'a', 'a')
    assert res['rows'] == [dict(m='b'), dict(m='b2')] and 'its 1 earlier `rows` row(s)' in capsys.readouterr().out
    bk.forget_rows(res, 'rows', lambda r: False, 'c')
    assert res['rows'] == [dict(m='b'), dict(m='b2')] and capsys.readouterr().out == ''
    bk.forget_rows(res, 'guidance', lambda r: True, 'c')
    assert 'guidance' not in res and capsys.readouterr().out == ''


def test_log_run_dates_are_utc_and_unknown_machines_show_a_question_mark(bk):
    "Run dates carry the UTC offset (runs come from machines in any zone); an environment without device reads '?'."
    res = dict(command='python bench/x.py', environment={})
    bk.log_run(res, {})
    date = datetime.datetime.fromisoformat(res['run_log'][0]['date'])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 60
    assert f"- run 0: `python bench/x.py` on ?, {res['run_log'][0]['date']}" in bk.runs_markdown(res)


def test_write_json_writes_paths_as_text_and_never_leaves_half_a_file(bk, tmp_path):
    "Paths and dates are written as strings; a results dict that cannot be encoded leaves the previous file whole."
    out = tmp_path/'r.json'
    bk.write_json(dict(path=Path('/a/b'), when=datetime.date(2026, 1, 2), n=[1]), out)
    assert json.loads(out.read_text()) == dict(path='/a/b', when='2026-01-02', n=[1])
    loop = dict(n=1); loop['self'] = loop
    with pytest.raises(ValueError): bk.write_json(loop, out)
    assert json.loads(out.read_text())['n'] == [1] and sorted(p.name for p in tmp_path.iterdir()) == ['r.json']


def test_write_results_writes_the_json_and_the_markdown_beside_it(bk, tmp_path):
    "write_results puts OUT.json and OUT.md (the table made by `markdown`) side by side."
    out = tmp_path/'r.json'
    bk.write_results(dict(rows=[1, 2]), out, lambda r: f"{len(r['rows'])} rows")
    assert json.loads(out.read_text()) == dict(rows=[1, 2]) and (tmp_path/'r.md').read_text() == '2 rows'


# ---- bench/ddpm_fid.py

def test_ddpm_plan_is_the_documented_set_of_draws(ddpm):
    "Full size: DDPM 1000, linear DDIM 100/50/25, cosine DDIM 100/50, raw-weights and course-clamp DDIM 100; quick DDPM uses its 100-step schedule."
    full = ddpm.plan(ddpm.FULL, False)
    assert sorted(full) == sorted([('linear', 'ddpm', 1000), ('linear', 'ddim', 100), ('linear', 'ddim', 50), ('linear', 'ddim', 25),
                                   ('cosine', 'ddim', 100), ('cosine', 'ddim', 50), ('cosine (no EMA)', 'ddim', 100),
                                   ('cosine (course x0 clamp 1.5)', 'ddim', 100)])
    assert [s for *_, s in full] == [25, 50, 50, 100, 100, 100, 100, 1000]
    quick = ddpm.plan(ddpm.QUICK, True)
    assert ('linear', 'ddpm', 100) in quick and quick[-1] == ('linear', 'ddpm', 100)


def test_ddpm_draw_fits_uses_the_rate_to_estimate_the_draw(ddpm):
    "A draw of E evaluations at R evaluations/s takes E/R s: 50,000 at 10,000/s fits 5 s before the deadline, not 4."
    assert ddpm.draw_fits(100., 50_000, 10_000., now=95.) and not ddpm.draw_fits(100., 50_000, 10_000., now=96.)
    assert ddpm.draw_fits(100., 10**9, 0., now=100.)   # a rate of 0 is no rate: only whether it starts in time


def _ddpm_results(quick=False, **kw):
    row = lambda model, sampler, steps, nfe, n, fid: dict(model=model, sampler=sampler, steps=steps, nfe=nfe, n=n, fid=fid, kid=0.0123456,
                                                          sampling_s=12.34, images_per_s=810.5)
    rows = [row('cosine', 'ddim', 50, 49, 2048, 9.), row('linear', 'ddim', 25, 25, 10_000, 8.), row('cosine (no EMA)', 'ddim', 100, 99, 10_000, 7.),
            row('linear', 'ddpm', 1000, 1000, 2048, 6.), row('linear', 'ddim', 100, 100, 10_000, 5.), row('cosine', 'ddim', 100, 99, 10_000, 4.),
            row('linear', 'ddpm', 1000, 1000, 10_000, 3.)]
    return dict(command='python bench/ddpm_fid.py', date='2026-01-02', device='cpu', torch='2', quick=quick, feature_model='clf',
                reference='test set', rows={str(i): r for i, r in enumerate(rows)},
                floor=[dict(n=2048, fid_mean=3., fid_std=0.25, kid_mean=0.5, fids=[2.75, 3., 3.25]),
                       dict(n=10_000, fid_mean=2., fid_std=float('nan'), kid_mean=0.25, fids=[2.])],
                models={'cosine': dict(epochs=25, train_seconds=100.4, train_images_per_s=6000., train_loss=[0.5, 0.25, 0.125],
                                       valid_loss=[0.4, 0.3, 0.2])},
                run_log=[dict(command='python bench/ddpm_fid.py --models cosine', environment=dict(device='cuda', gpu='H200'), date='d0')], **kw)


def test_ddpm_markdown_orders_rows_and_formats_every_column(ddpm):
    "Rows: larger sets first, linear (DDPM, then most steps) before cosine; floors with std when known, last losses, the run log."
    md = ddpm.markdown(_ddpm_results())
    lines = [l for l in md.splitlines() if l.startswith('| ') and ' | DD' in l]
    assert [tuple(c.strip() for c in l.split('|')[1:4]) + (l.split('|')[5].strip(),) for l in lines] == [
        ('linear', 'DDPM', '1000', '10,000'), ('linear', 'DDIM', '100', '10,000'), ('linear', 'DDIM', '25', '10,000'),
        ('cosine', 'DDIM', '100', '10,000'), ('cosine (no EMA)', 'DDIM', '100', '10,000'),
        ('linear', 'DDPM', '1000', '2,048'), ('cosine', 'DDIM', '50', '2,048')]
    assert '| cosine | DDIM | 50 | 49 | 2,048 | 9.000 | 3.00 | 0.01235 | 12.3 | 810.5 |' in lines   # FID / floor at 2,048: 9 / 3
    assert '| linear | DDIM | 25 | 25 | 10,000 | 8.000 | 4.00 | 0.01235 | 12.3 | 810.5 |' in lines  # 8 / 2
    assert '| real images (floor, 3 draws) | - | - | - | 2,048 | 3.000 ± 0.250 | 1 | 0.50000 | - | - |' in md
    assert '| real images (floor, 1 draws) | - | - | - | 10,000 | 2.000 | 1 | 0.25000 | - | - |' in md   # one draw: no std
    assert '| cosine | 25 | 100 | 6,000 | 0.1250 / 0.2000 |' in md
    assert 'sampled with fp32 networks' in md and 'Quick mode' not in md
    assert '- run 0: `python bench/ddpm_fid.py --models cosine` on H200, d0' in md
    md = ddpm.markdown(_ddpm_results(quick=True, sampling_precision='bf16'))
    assert '**Quick mode: tiny models' in md and 'sampled with bf16 networks' in md


def _fake_train(tmp_path, calls):
    "A stand-in for `train_diffusion`: records the call, returns the metrics and a learner with a tiny model."
    def train(out, schedule, **kw):
        calls.append(schedule); Path(out).mkdir(parents=True, exist_ok=True)
        m = dict(epochs=1, bs=8, lr=1e-3, train_seconds=1., train_images_per_s=8., wall_seconds=1., train_loss=[1.], valid_loss=[1.],
                 ema_decay=0.9, compile=None, params=2)
        ema = EMA(0.999); ema.n_updates = 2950   # 25 epochs of 118 batches
        return dict(metrics=m, learn=SimpleNamespace(model=torch.nn.Linear(1, 1)), ema=ema)
    return train


def test_ddpm_retraining_cosine_forgets_its_raw_weight_rows_too(ddpm, tmp_path, monkeypatch, capsys):
    "The raw-weights row comes from the cosine training run: training cosine again drops cosine and raw rows, keeps linear ones."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')   # (fp32 sampling, no compile: the configuration the stored table records)
    calls = []
    monkeypatch.setattr(ddpm, 'train_diffusion', _fake_train(tmp_path, calls))
    rows = {f'{m}|ddim|10|{n}': dict(model=m, sampler='ddim', steps=10, nfe=10, n=n, fid=1., kid=0., sampling_s=1., images_per_s=1.)
            for m in ('linear', 'cosine', ddpm.RAW) for n in (64, 32)}
    (tmp_path/'r.json').write_text(json.dumps(dict(quick=True, epochs=1, rows=rows, models={})))
    res = ddpm.main(['--quick', '--work', str(tmp_path/'w'), '--out', str(tmp_path/'r'), '--models', 'cosine', '--train-only'])
    assert calls == ['cosine'] and sorted(res['rows']) == ['linear|ddim|10|32', 'linear|ddim|10|64']
    assert res['models']['cosine']['ema_updates'] == 2950 and res['models']['cosine']['ema_last_decay'] == 2950/2959   # min(0.999, (1+n)/(10+n)) at the last update, n = 2949
    assert (tmp_path/'w'/'cosine'/'model_raw.safetensors').exists()


def _weights_files(work):
    "Stand-ins for the three weights files the ddpm_fid table samples, in `work`."
    for f in ('linear/model.safetensors', 'cosine/model.safetensors', 'cosine/model_raw.safetensors'):
        (work/f).parent.mkdir(parents=True, exist_ok=True); (work/f).write_text('w')


def test_ddpm_each_row_samples_its_own_weights_file_from_one_seed(ddpm, tmp_path, monkeypatch, capsys):
    "linear and cosine rows load model.safetensors, the raw row the cosine run's model_raw.safetensors; every draw uses seed = size."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    work = tmp_path/'w'
    _weights_files(work)
    rec = dict(epochs=1, train_seconds=1., train_images_per_s=1., train_loss=[1.], valid_loss=[1.])
    (tmp_path/'r.json').write_text(json.dumps(dict(quick=True, epochs=1, rows={}, models=dict(linear=rec, cosine=rec))))
    loaded, seeds = {}, set()
    monkeypatch.setattr(ddpm, 'fid_evaluator', lambda *a, **k: SimpleNamespace(model=None, scores=lambda x: dict(fid=1., kid=0.)))
    monkeypatch.setattr(ddpm, 'weights_hash', lambda m: 'a'*64)
    def load(path, schedule, *a, into=None): loaded.setdefault(Path(path), []).append((schedule, into is None)); return Path(path)
    monkeypatch.setattr(ddpm, 'load_model', load)
    clamps = {}
    def sampler(model, schedule, sampler, steps, quick, clamp): clamps.setdefault(clamp, set()).add(Path(model)); return model, schedule
    monkeypatch.setattr(ddpm, 'make_sampler', sampler)
    def sample(f, n, bs, seed, **kw): seeds.add(seed); return torch.zeros(n, 1, 2, 2)
    monkeypatch.setattr(ddpm, 'sample_images', sample)
    res = ddpm.main(['--quick', '--work', str(work), '--out', str(tmp_path/'r'), '--no-floor'])
    assert set(loaded) == {work/'linear'/'model.safetensors', work/'cosine'/'model.safetensors', work/'cosine'/'model_raw.safetensors'}
    assert {p: {s for s, _ in v} for p, v in loaded.items()} == {p: {p.parent.name} for p in loaded}   # each with its schedule
    builds = [(p.parent.name, new) for p, v in loaded.items() for _, new in v if new]
    assert sorted(builds) == [('cosine', True), ('linear', True)]   # one network per schedule: the raw weights go into the cosine one
    assert clamps == {None: set(loaded), 1.5: {work/'cosine'/'model.safetensors'}}   # the course's bound: the EMA weights, its row only
    assert seeds == {64} and len(res['rows']) == 2*len(ddpm.plan(ddpm.QUICK, True))


def test_ddpm_a_training_stopped_before_both_weights_files_is_trained_again(ddpm, tmp_path, monkeypatch, capsys):
    "A run stopped after train_diffusion wrote model.safetensors but before model_raw: no record, no old raw file; the next run trains again."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    work, calls = tmp_path/'w', []
    (work/'cosine').mkdir(parents=True)
    (work/'cosine'/'model_raw.safetensors').write_text('an earlier run')   # must never be paired with the new average
    rec = dict(epochs=1, train_seconds=1., train_images_per_s=1., train_loss=[1.], valid_loss=[1.])
    (tmp_path/'r.json').write_text(json.dumps(dict(quick=True, epochs=1, rows={}, models=dict(cosine=rec))))
    argv = ['--quick', '--work', str(work), '--out', str(tmp_path/'r'), '--models', 'cosine', '--train-only', '--fresh']
    def killed(out, schedule, **kw):
        calls.append(schedule); (Path(out)/'model.safetensors').write_text('new average'); raise KeyboardInterrupt
    monkeypatch.setattr(ddpm, 'train_diffusion', killed)
    with pytest.raises(KeyboardInterrupt): ddpm.main(argv)
    assert 'cosine' not in json.loads((tmp_path/'r.json').read_text())['models']
    assert not (work/'cosine'/'model_raw.safetensors').exists()
    def trained(out, schedule, **kw):
        r = _fake_train(tmp_path, calls)(out, schedule, **kw); (Path(out)/'model.safetensors').write_text('average'); return r
    monkeypatch.setattr(ddpm, 'train_diffusion', trained)
    res = ddpm.main(argv[:-1])   # the same command without --fresh: the model has no record, so it trains
    assert calls == ['cosine', 'cosine'] and 'cosine' in res['models']
    assert (work/'cosine'/'model_raw.safetensors').stat().st_size > 100   # this run's raw weights
    calls.clear(); ddpm.main(argv[:-1])
    assert calls == []   # recorded now: not trained a third time


def test_ddpm_training_one_model_keeps_the_other_models_weights(ddpm, tmp_path, monkeypatch, capsys):
    "Training linear removes only linear's weights file; cosine's average and raw weights stay."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    work = tmp_path/'w'
    _weights_files(work)
    seen = []
    def train(out, schedule, **kw):
        seen.append(sorted(p.relative_to(work).as_posix() for p in work.rglob('*.safetensors')))
        return _fake_train(tmp_path, [])(out, schedule, **kw)
    monkeypatch.setattr(ddpm, 'train_diffusion', train)
    ddpm.main(['--quick', '--work', str(work), '--out', str(tmp_path/'r'), '--models', 'linear', '--train-only'])
    assert seen == [['cosine/model.safetensors', 'cosine/model_raw.safetensors']]
