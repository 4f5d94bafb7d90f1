"bench/benchkit.py: compiled training at one batch shape."
import pytest
from miniai.accel import CompileCB
from bench.benchkit import compile_callbacks


def test_compile_callbacks_only_on_cuda():
    assert compile_callbacks('reduce-overhead', device='cpu') == [] and compile_callbacks('none', device='cuda') == []
    (cb,) = compile_callbacks('reduce-overhead', device='cuda')    # nothing is compiled until fitting starts
    assert isinstance(cb, CompileCB) and cb.mode == 'reduce-overhead' and cb.drop_last   # one training batch shape
    assert compile_callbacks('default', device='cuda')[0].mode is None
    with pytest.raises(ValueError, match='compile mode'): compile_callbacks('max-speed', device='cuda')


def test_compile_mode_is_what_takes_effect():
    from bench.benchkit import compile_mode
    assert compile_mode('reduce-overhead', 'cuda') == 'reduce-overhead' and compile_mode('reduce-overhead', 'cpu') == 'none'
    assert compile_mode(None, 'cuda') == 'none'
    with pytest.raises(ValueError, match='compile mode'): compile_mode('max-speed', 'cpu')


def test_a_table_scored_by_another_feature_network_is_set_aside_whole_not_mixed(tmp_path, capsys):
    "A table resumed on another GPU machine (the FID classifier trained again) must not mix FIDs of two feature networks."
    import json
    from bench.benchkit import feature_hash, start_again_if_other_feature_network
    a, b = 'a'*64, 'b'*64
    assert feature_hash({'feature_model_sha256': a}) == a and feature_hash({'classifier': {'weights_sha256': b}}) == b
    assert feature_hash({}) is None and feature_hash({'classifier': None}) is None
    out = tmp_path/'t.json'
    old = dict(classifier={'weights_sha256': b}, rows=[1, 2], reals={'8': 3.}, train={'karras': 'log'})
    out.write_text(json.dumps(old)); out.with_suffix('.md').write_text('old table')
    res = dict(old, rows=[1, 2], classifier={'weights_sha256': a})
    assert not start_again_if_other_feature_network({}, res, a, out, dict(rows=[]))                       # nothing kept
    assert not start_again_if_other_feature_network({'feature_model_sha256': a}, res, a, out, dict(rows=[]))  # the same network
    assert res['rows'] == [1, 2] and out.exists() and capsys.readouterr().out == ''
    assert start_again_if_other_feature_network(old, res, a, out, dict(rows=[], reals=None))
    (aside,) = (tmp_path/'superseded').glob('t-*.json')
    assert json.loads(aside.read_text()) == old and aside.with_suffix('.md').read_text() == 'old table'   # kept whole
    assert not out.exists() and not out.with_suffix('.md').exists()
    assert res['rows'] == [] and res['reals'] is None and res['train'] == {'karras': 'log'}   # scores reset, training records kept
    assert res['superseded'] == [dict(file=str(aside), reason='another FID feature network', feature_model_sha256=b)]
    said = capsys.readouterr().out
    assert 'feature network bbbbbbbbbbbb' in said and 'aaaaaaaaaaaa' in said and str(aside) in said


def test_set_aside_never_overwrites_an_earlier_aside_file(tmp_path):
    "Two tables set aside within one second keep distinct names."
    from bench.benchkit import set_aside
    out = tmp_path/'t.json'
    names = set()
    for i in range(3):
        out.write_text(str(i)); names.add(set_aside(out, 'test'))
    assert len(names) == 3 and sorted(p.read_text() for p in names) == ['0', '1', '2']


def test_log_run_keeps_the_runs_that_built_a_table_and_lists_them():
    "A table completed over several GPU leases keeps every run's command, machine and date; rows record their run's index."
    from bench.benchkit import log_run, runs_markdown
    first = dict(command='python bench/x.py --models a', environment=dict(device='cuda', gpu='NVIDIA H200'))
    assert log_run(first, {}) == 0 and runs_markdown({}) == []
    second = dict(command='python bench/x.py --models b', environment=dict(device='cpu'))
    assert log_run(second, first) == 1
    assert [r['command'] for r in second['run_log']] == ['python bench/x.py --models a', 'python bench/x.py --models b']
    assert first['run_log'][0]['date'] <= second['run_log'][1]['date']
    md = '\n'.join(runs_markdown(second))
    assert 'Built by 2 run(s)' in md and '- run 0: `python bench/x.py --models a` on NVIDIA H200' in md and '- run 1: `python bench/x.py --models b` on cpu' in md
    assert log_run(dict(first), {}) == 0   # a table started afresh (another configuration) starts its log again


def test_resume_continues_a_table_of_the_same_configuration_only(tmp_path, capsys):
    "Rows and the feature network's record carry over from a table of the same configuration; another one is set aside."
    import json
    from bench.benchkit import resume
    out = tmp_path/'t.json'
    assert resume(dict(config={'n': [8]}, rows=[]), out, ('rows',)) == {}   # no file yet
    out.write_text(json.dumps(dict(config={'n': [8]}, rows=[1, 2], train={'a': 1}, classifier={'weights_sha256': 'a'*64}, other=3)))
    new = dict(config={'n': [8]}, rows=[], train={})
    kept = resume(new, out, ('rows', 'train'))
    assert kept['other'] == 3 and new == dict(config={'n': [8]}, rows=[1, 2], train={'a': 1}, classifier={'weights_sha256': 'a'*64})
    fresh = dict(config={'n': [16]}, rows=[])
    assert resume(fresh, out, ('rows',)) == {}
    (aside,) = (tmp_path/'superseded').glob('t-*.json')   # the other configuration's table is kept, not overwritten
    assert fresh == dict(config={'n': [16]}, rows=[], superseded=[dict(file=str(aside), reason='another configuration (n [8] -> [16])')])
    assert json.loads(aside.read_text())['rows'] == [1, 2] and not out.exists()
    assert "n [8] -> [16]" in capsys.readouterr().out


def test_forget_rows_drops_only_the_retrained_networks_rows_in_lists_and_dicts(capsys):
    "A network trained again (a later GPU lease) must not leave rows of its earlier training run in the table."
    from bench.benchkit import forget_rows
    res = dict(rows=[dict(model='reals'), dict(model='karras'), dict(model='karras+ema'), dict(model='cosine')], guidance=[])
    forget_rows(res, 'rows', lambda r: r['model'] in ('karras', 'karras+ema'), 'karras')
    assert res['rows'] == [dict(model='reals'), dict(model='cosine')] and '2 earlier `rows` row(s)' in capsys.readouterr().out
    forget_rows(res, 'guidance', lambda r: True, 'cond')
    assert res['guidance'] == [] and capsys.readouterr().out == ''   # nothing to forget, nothing said
    table = dict(rows={'cosine|ddim|100|2048': dict(model='cosine'), 'linear|ddim|100|2048': dict(model='linear')})
    forget_rows(table, 'rows', lambda r: r['model'] == 'cosine', 'cosine')
    assert table['rows'] == {'linear|ddim|100|2048': dict(model='linear')}   # still a dict, keyed as before
    empty = dict(rows={})
    forget_rows(empty, 'rows', lambda r: True, 'x'); assert empty['rows'] == {}


def test_karras_fid_forgets_the_rows_of_a_network_it_trains_again(tmp_path, load_script, monkeypatch, one_thread):
    "Loading the lease's weights keeps the rows; training again (weights lost with a lease) drops karras and karras+ema rows only."
    import json
    from types import SimpleNamespace
    karras = load_script('bench/karras_fid.py')
    class NoTraining:   # the learner's recipe is not under test here: fitting does nothing
        metrics = SimpleNamespace(history=[])
        def fit(self, n): pass
    monkeypatch.setattr(karras, 'karras_learner', lambda *a, **k: NoTraining())
    out = tmp_path/'k.json'
    argv = ['--quick', '--ema', '0', '--weights-dir', str(tmp_path), '--out', str(out), '--train-only', 'karras']
    karras.main(argv)
    res = json.loads(out.read_text())
    res['rows'] = [dict(model=m, sampler='euler', steps=2, kwargs={}, nfe=2, run=0, seconds=0.,
                       scores={n: dict(fid=1., kid=0., n=int(n)) for n in ('32', '16')}) for m in ('reals', 'karras', 'karras+ema', 'cosine')]
    out.write_text(json.dumps(res))
    assert [r['model'] for r in karras.main(argv)['rows']] == ['reals', 'karras', 'karras+ema', 'cosine']   # loaded: kept
    (tmp_path/'bench_karras_quick.safetensors').unlink()   # a new lease: the weights are gone
    assert [r['model'] for r in karras.main(argv)['rows']] == ['reals', 'cosine']
    assert [r['model'] for r in json.loads(out.read_text())['rows']] == ['reals', 'cosine']   # written for the scoring process


def test_noise_level_fid_forgets_only_the_rows_that_used_the_retrained_network(tmp_path, load_script, monkeypatch, one_thread):
    "Both rows sample the no-t model, only the corrected DDIM uses the regressor: retraining it keeps the naive row."
    import argparse
    from types import SimpleNamespace
    nl = load_script('bench/noise_level_fid.py')
    class NoTraining:   # the recipes are not under test here: fitting does nothing
        metrics, model = SimpleNamespace(history=[]), None
        def fit(self, n): pass
    monkeypatch.setattr(nl, 'noise_level_learner', lambda *a, **k: NoTraining())
    monkeypatch.setattr(nl, 'ddpm_learner', lambda *a, **k: NoTraining())
    monkeypatch.setattr(nl, 'regressor_mse', lambda *a, **k: {})
    args = argparse.Namespace(weights_dir=str(tmp_path), data_dir=None, compile='none')
    cfgs = nl.configs(True)
    rows = lambda: [dict(sampler=s) for s in nl.SAMPLERS]
    res = dict(train={}, rows=rows())
    for name in ('regressor', 'no_t'): nl.train_or_load(name, cfgs[name], args, res)   # both trained: every row forgotten
    assert res['rows'] == []
    res['rows'], res['kid_per_step'] = rows(), dict(n=2, curves={})
    for name in ('regressor', 'no_t'): nl.train_or_load(name, cfgs[name], args, res)   # both loaded: every row kept
    assert res['rows'] == rows() and res['kid_per_step'] == dict(n=2, curves={})
    (tmp_path/'bench_noise_level_regressor_quick.safetensors').unlink()
    nl.train_or_load('regressor', cfgs['regressor'], args, res)
    assert res['rows'] == [dict(sampler=nl.SAMPLERS[0])] and res['kid_per_step'] is None   # the curves sample both networks
    res['rows'], res['kid_per_step'] = rows(), dict(n=2, curves={})
    (tmp_path/'bench_noise_level_no_t_quick.safetensors').unlink()
    nl.train_or_load('no_t', cfgs['no_t'], args, res)
    assert res['rows'] == [] and res['kid_per_step'] is None


def test_karras_fid_sets_aside_a_table_of_another_feature_network_and_writes_the_new_one_at_once(tmp_path, load_script, monkeypatch, one_thread):
    "Rows of another FID classifier go aside whole; the new table (training records kept) is on disk before anything can fail."
    import json
    karras = load_script('bench/karras_fid.py')
    out = tmp_path/'k.json'
    argv = ['--quick', '--ema', '0', '--weights-dir', str(tmp_path), '--out', str(out)]
    res = dict(karras.main(argv + ['--train-only', 'karras']))
    res['classifier'] = {'weights_sha256': 'f'*64}
    res['rows'] = [dict(model='reals', sampler='train images', steps=0, kwargs={}, nfe=0, run=0, seconds=0.,
                        scores={n: dict(fid=1., kid=0., n=int(n)) for n in ('32', '16')})]
    out.write_text(json.dumps(res))
    def crash(*a, **k): raise RuntimeError('cut short')
    monkeypatch.setattr(karras, 'fashion_fid_images', crash)   # the first thing scored after the check
    with pytest.raises(RuntimeError, match='cut short'): karras.main(argv)
    (aside,) = (tmp_path/'superseded').glob('k-*.json')
    assert json.loads(aside.read_text())['rows'] == res['rows']
    new = json.loads(out.read_text())
    assert new['rows'] == [] and new['classifier']['weights_sha256'] not in (None, 'f'*64) and 'karras' in new['train']
    assert new['superseded'][0]['feature_model_sha256'] == 'f'*64


def test_command_line_names_the_script_and_its_arguments(monkeypatch):
    "A results file's command: `python bench/NAME.py` and the arguments `main` ran with (this process's when none are given)."
    from bench.benchkit import command_line
    assert command_line('/any/where/bench/karras_fid.py', ('--quick', '--n', '8')) == 'python bench/karras_fid.py --quick --n 8'
    monkeypatch.setattr('sys.argv', ['bench/x.py', '--out', 'r.json'])
    assert command_line('bench/x.py') == 'python bench/x.py --out r.json' and command_line('bench/x.py', []) == 'python bench/x.py'


def test_a_table_with_nothing_scored_yet_is_continued_under_any_feature_network(tmp_path):
    "Only scored entries tie a table to a feature network: a table of training records alone is not set aside."
    import json
    from bench.benchkit import start_again_if_other_feature_network
    out = tmp_path/'t.json'
    old = dict(classifier={'weights_sha256': 'b'*64}, rows=[], reals=None, train={'no_t': 'log'})
    out.write_text(json.dumps(old))
    res = dict(old)
    assert not start_again_if_other_feature_network(old, res, 'a'*64, out, dict(rows=[], reals=None))
    assert out.exists() and res == old and not (tmp_path/'superseded').exists()



def test_quick_runs_never_write_into_results(tmp_path, monkeypatch):
    "A --quick run writes to runs/quick/ by default, and an --out inside results/ is refused before any work."
    " (results/ is a stand-in under tmp_path: a broken guard must not overwrite the repository's measured files.)"
    import argparse
    from pathlib import Path
    import bench.benchkit as bk
    from bench import bench_ddpm, ddpm_fid, fid_floor, karras_fid, latent_fid, train_classifier
    monkeypatch.setattr(bk, 'RESULTS_DIR', tmp_path/'results')
    monkeypatch.chdir(tmp_path)
    p = argparse.ArgumentParser()
    assert bk.bench_out(p, None, True, 'x.json') == Path('runs/quick/x.json')
    assert bk.bench_out(p, None, False, 'x.json') == Path('results/x.json')
    assert bk.bench_out(p, 'results/x.json', False, 'x.json') == Path('results/x.json')   # full size: results/ is the place
    assert bk.bench_out(p, tmp_path/'x.json', True, 'x.json') == tmp_path/'x.json'
    for script, out in ((bench_ddpm, 'results/bench_ddpm.json'), (ddpm_fid, 'results/ddpm_fid'), (latent_fid, 'results/sub/l.json'),
                        (karras_fid, 'results/karras_fid.json'), (fid_floor, 'results/fid_floor.json'),
                        (train_classifier, 'results/classifier.json')):
        with pytest.raises(SystemExit) as e: script.main(['--quick', '--out', out])
        assert e.value.code == 2, script
    assert not (tmp_path/'results').exists() and not (tmp_path/'runs').exists()
