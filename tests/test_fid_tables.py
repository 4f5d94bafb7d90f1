"The FID tables of bench/: one feature network for all of them, and the FID / floor ratio that makes them comparable."
import json, re
import pytest
from pathlib import Path
from bench.benchkit import feature_hash

RESULTS = Path(__file__).resolve().parents[1]/'results'


def test_fid_results_use_the_feature_network_of_the_floor():
    floor = feature_hash(json.loads((RESULTS/'fid_floor.json').read_text()))
    assert re.fullmatch('[0-9a-f]{64}', floor)
    for name in ('ddpm_fid.json', 'karras_fid.json', 'noise_level_fid.json', 'unet_fid.json'):
        if (RESULTS/name).exists():
            assert feature_hash(json.loads((RESULTS/name).read_text())) == floor, f'{name}: another FID classifier than fid_floor.json'


def test_ddpm_fid_table_divides_by_the_floor_at_the_same_sample_count(load_script):
    bench = load_script('bench/ddpm_fid.py')
    row = lambda n, fid: dict(model='cosine', sampler='ddim', steps=100, nfe=99, n=n, fid=fid, kid=0.01, sampling_s=2., images_per_s=n/2)
    res = dict(command='python bench/ddpm_fid.py', date='today', device='H100', torch='2.11', quick=False,
               feature_model='clf', reference='test set', models={},
               rows={'a': row(2048, 60.8), 'b': row(10_000, 15.0)},
               floor=[dict(n=2048, fid_mean=30.4, fid_std=2.4, kid_mean=0.3, fids=[30.4]*3)])
    md = bench.markdown(res)
    assert '| cosine | DDIM | 100 | 99 | 2,048 | 60.800 | 2.00 |' in md
    assert '| cosine | DDIM | 100 | 99 | 10,000 | 15.000 | - |' in md   # no floor measured at 10,000
    assert 'FID / floor' in md and '1.2 to 1.6' in md


def _scores(**fids): return {n: dict(fid=f, kid=0.01) for n, f in fids.items()}


def test_karras_and_unet_tables_divide_by_the_reals_of_the_same_run(load_script):
    karras, unet = load_script('bench/karras_fid.py'), load_script('bench/unet_fid.py')
    rows = [dict(model='reals', sampler='train images', steps=0, kwargs={}, nfe=0, scores=_scores(**{'2048': 30., '512': 100.}), seconds=0.),
            dict(model='karras', sampler='euler', steps=100, kwargs={}, nfe=100, scores=_scores(**{'2048': 60., '512': 150.}), seconds=9.)]
    md = karras.markdown(dict(config=dict(n=[2048, 512]), command='c', environment={}, rows=rows))
    assert '| karras | euler | 100 | 100 | 60.000 | 2.00 | 0.01000 | 150.000 | 1.50 | 0.01000 | 9.0 |' in md
    assert '| reals | train images | 0 | 0 | 30.000 | 1.00 |' in md
    res = dict(config=dict(n=[2048], sampler='lms', steps=20), command='c', environment={}, train={}, guidance=[],
               rows=[dict(model='ours', scores=_scores(**{'2048': 45.}), sample_images_per_s=100.)],
               reals=dict(scores=_scores(**{'2048': 30.})))
    md = unet.markdown(res)
    assert '| 45.000 | 1.50 | 0.01000 |' in md and 'FID / floor (2,048)' in md
    assert '| 45.000 |  | 0.01000 |' in unet.markdown({**res, 'reals': None})   # no floor yet: an empty cell, same columns


def test_unet_guidance_table_marks_classes_never_drawn(load_script):
    "With fewer samples than classes (`--n 8 2`), `label_accuracy` has no accuracy for the last classes: a '-' cell."
    unet = load_script('bench/unet_fid.py')
    per_class = [1., 0.5, 0., 1., 1., 0., 1., 1., None, None]
    res = dict(config=dict(n=[8, 2], sampler='lms', steps=20), command='c', environment={}, train={}, rows=[], reals=None,
               guidance=[dict(scale=1., accuracy=dict(overall=0.625, per_class=dict(zip(unet.FASHION_CLASSES, per_class))),
                              scores=_scores(**{'8': 50., '2': 90.}))])
    assert '| 1 | 62.50% | 50.000 |  | 0.01000 | 90.000 |  | 0.01000 | 100% | 50% | 0% | 100% | 100% | 0% | 100% | 100% | - | - |' \
        in unet.markdown(res)


def test_ddpm_fid_trains_in_parts_and_keeps_the_raw_weights_beside_the_ema(tmp_path, load_script, one_thread, monkeypatch):
    "`--train-only` (one process per model on the GPU) trains and stops; the raw weights make the EMA row possible."
    import torch
    from safetensors.torch import load_file
    bench = load_script('bench/ddpm_fid.py')
    res = bench.main(['--quick', '--work', str(tmp_path), '--out', str(tmp_path/'r'), '--models', 'cosine', '--train-only'])
    assert list(res['models']) == ['cosine'] and res['rows'] == {} and 'floor' not in res
    ema, raw = load_file(str(tmp_path/'cosine'/'model.safetensors')), load_file(str(tmp_path/'cosine'/'model_raw.safetensors'))
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)
    net = torch.compile(bench.load_model(tmp_path/'cosine'/'model.safetensors', 'cosine', True, 'cpu', False))   # (compiled lazily)
    assert bench.load_model(tmp_path/'cosine'/'model_raw.safetensors', 'cosine', True, 'cpu', True, into=net) is net   # not compiled again
    assert all(torch.equal(v, raw[k]) for k, v in net._orig_mod.state_dict().items())   # the raw weights, in place
    assert res['sampling_precision'] == 'fp32'   # bf16 autocast only takes effect on CUDA
    stored = json.loads((tmp_path/'r.json').read_text())   # rows scored on an earlier machine, by another FID classifier
    floor = [dict(n=32, fid_mean=9., fids=[9.])]
    (tmp_path/'r.json').write_text(json.dumps({**stored, 'feature_model_sha256': 'f'*64, 'floor': floor}))
    def crash(*a, **k): raise RuntimeError('cut short')
    monkeypatch.setattr(bench, 'real_image_floor', crash)   # the run fails right after it set the old table aside
    with pytest.raises(RuntimeError, match='cut short'):
        bench.main(['--quick', '--work', str(tmp_path), '--out', str(tmp_path/'r'), '--models', 'cosine'])
    (aside,) = (tmp_path/'superseded').glob('r-*.json')   # the old table is kept whole; this run starts a new one
    res = json.loads((tmp_path/'r.json').read_text())    # written at once: a retry does not train the model again
    assert json.loads(aside.read_text())['floor'] == floor and res['floor'] is None and res['feature_model_sha256'] != 'f'*64
    assert res['superseded'][0]['feature_model_sha256'] == 'f'*64 and list(res['models']) == ['cosine']   # training record kept
    stored = res
    (tmp_path/'r.json').write_text(json.dumps({**stored, 'sampling_precision': 'bf16'}))   # rows sampled another way
    with pytest.raises(SystemExit, match='sampling_precision=bf16'):
        bench.main(['--quick', '--work', str(tmp_path), '--out', str(tmp_path/'r'), '--models', 'cosine', '--train-only'])
    stored = {k: v for k, v in stored.items() if k not in ('feature_model_sha256', 'floor')}
    (tmp_path/'r.json').write_text(json.dumps({**stored, 'sampling_precision': 'fp32'}))
    res = bench.main(['--quick', '--work', str(tmp_path), '--out', str(tmp_path/'r'), '--models', 'cosine', '--no-floor',
                      '--deadline', '1'])   # long past: no draw starts
    assert res['rows'] == {}
    res = bench.main(['--quick', '--work', str(tmp_path), '--out', str(tmp_path/'r'), '--models', 'cosine', '--no-floor', '--sample-bs', '32'])
    assert len(res['rows']) == 2*(len(bench.QUICK['cosine_ddim']) + len(bench.QUICK['raw_ddim']) + len(bench.QUICK['course_ddim']))   # both sizes of each draw
    assert all(r['sample_bs'] == 32 and r['compiled'] is False for r in res['rows'].values())   # how each row was drawn
    plan = bench.plan(bench.QUICK, True)   # one draw per (model, sampler, steps), scored at every size: no size in the plan
    assert {m for m, *_ in plan} == {'linear', 'cosine', bench.RAW, bench.COURSE_CLAMP} and all(bench.WEIGHTS[m][0] in ('linear', 'cosine') for m, *_ in plan)
    assert len(plan) == len(set(plan)) == 1 + sum(len(bench.QUICK[k]) for k in ('linear_ddim', 'cosine_ddim', 'raw_ddim', 'course_ddim'))
    assert [s for *_, s in plan] == sorted(s for *_, s in plan)   # cheapest first


def test_karras_and_unet_train_only_train_and_stop(tmp_path, load_script, one_thread):
    "`--train-only NAME` (one process per compiled model on the GPU) trains, records, and scores nothing."
    karras, unet = load_script('bench/karras_fid.py'), load_script('bench/unet_fid.py')
    common = ['--quick', '--weights-dir', str(tmp_path)]
    res = karras.main([*common, '--out', str(tmp_path/'k.json'), '--train-only', 'karras'])
    assert list(res['train']) == ['karras'] and res['train']['karras']['history'] and res['rows'] == [] and 'classifier' not in res
    assert len(res['run_log']) == 1 and '--train-only karras' in res['run_log'][0]['command']
    assert (tmp_path/'bench_karras_quick.safetensors').exists() and (tmp_path/'bench_karras_quick_ema.safetensors').exists()
    res = unet.main([*common, '--out', str(tmp_path/'u.json'), '--train-only', 'cond'])
    assert list(res['train']) == ['cond'] and res['rows'] == res['guidance'] == [] and res['reals'] is None
    assert json.loads((tmp_path/'u.json').read_text())['train']['cond']['history']   # written for the scoring process


def test_noise_level_regressor_mse_and_the_constant_baseline(load_script):
    "Predicting 0 costs E[logit(ᾱ)²] = π²/3 for ᾱ uniform; the MSE helper measures model and baseline on the same noisings."
    import math, torch
    from torch import nn
    bench = load_script('bench/noise_level_fid.py')
    class Zero(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(1))
        def forward(self, x): return torch.zeros(len(x), 1) * self.w
    batches = [(torch.rand(1024, 1, 8, 8)*2 - 1, torch.zeros(1024)) for _ in range(8)]
    r = bench.regressor_mse(Zero(), batches)
    assert r['test_mse'] == r['constant_0_mse'] and abs(r['constant_0_mse'] - math.pi**2/3) < 0.25
    class Half(Zero):
        def forward(self, x): return torch.full((len(x), 1), 0.5) + 0*self.w
    assert bench.regressor_mse(Half(), batches)['test_mse'] == pytest.approx(r['constant_0_mse'] + 0.25, abs=0.1)   # + c² - 2c·E[y], E[y]≈0


def test_karras_table_counts_the_network_calls_it_labels(load_script, one_thread):
    "The NFE column is the number of network calls per image: the cosine DDIM grid of `steps` points makes steps-1."
    import argparse, torch
    karras = load_script('bench/karras_fid.py')
    calls = []
    def eps_model(x, t): calls.append(len(x)); return torch.zeros_like(x)
    args = argparse.Namespace(batch=4, seed=0, precision='fp32')
    x, nfe, _ = karras.draw(eps_model, 'ddim', 10, {'eta': 1.}, 4, args)
    assert x.shape == (4, 1, 32, 32) and nfe == len(calls) == 9


def test_ddpm_fid_starts_no_draw_that_would_end_after_the_deadline(load_script):
    "A draw starts only if the fastest rate measured so far says it ends in time; before any draw, only if it is not too late."
    bench = load_script('bench/ddpm_fid.py')
    assert bench.draw_fits(None, 10**9, None)                                     # no deadline: everything
    assert bench.draw_fits(100., 10**9, None, now=99.) and not bench.draw_fits(100., 1, None, now=101.)
    assert bench.draw_fits(100., 20_000, 1000., now=80.) and not bench.draw_fits(100., 20_001, 1000., now=80.)


def test_noise_level_regressor_samples_in_float32_inside_autocast(load_script):
    "The ᾱ estimates the sampler uses are the float32 ones whose test MSE the table reports, even where the UNet runs in bf16."
    import torch
    bench = load_script('bench/noise_level_fid.py')
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    x = torch.randn(4, 1, 4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
        y = bench.Float32(lin)(x.bfloat16())
    assert y.dtype == torch.float32 and torch.allclose(y, lin(x.bfloat16().float()))
