"""Tests found missing by mutating bench/karras_fid.py, bench/unet_fid.py and bench/noise_level_fid.py: what their
Markdown tables say (columns, FID / floor ratios, NFE, labels, accuracy per class), how they draw, and their bookkeeping
(settings, resumed rows, trained or loaded networks). Slow parts (training, FID features, sampling) are faked."""
import argparse, json
from types import SimpleNamespace
import pytest
import torch
from torch import nn
from miniai.core import batch_seed


# ---- helpers -----------------------------------------------------------------------------------------------------

def _split(line: str) -> list[str]: return [c.strip() for c in line.strip()[1:-1].split(' | ')]

def tables(md: str) -> list[list[dict]]:
    "Every Markdown table of `md`, as a list of {header: cell} rows (a row with another number of cells fails)."
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith('|') and i + 1 < len(lines) and lines[i + 1].startswith('|---'):
            head, rows, i = _split(lines[i]), [], i + 2
            assert lines[i - 1] == '|' + '---|' * len(head), 'separator and header disagree'
            while i < len(lines) and lines[i].startswith('| '):
                cells = _split(lines[i])
                assert len(cells) == len(head), f'{len(cells)} cells under {len(head)} headers: {lines[i]}'
                rows.append(dict(zip(head, cells))); i += 1
            out.append(rows)
        else: i += 1
    return out


def sc(fid: float, kid: float = 0.01) -> dict: return dict(fid=fid, kid=kid)


class FakeEval:
    "An FID evaluator whose 'FID' is the number of images it was given (so a prefix shows), and a feature model."
    def __init__(self): self.model, self.calls = nn.Linear(1, 1), []
    def scores(self, x): self.calls.append(len(x)); return dict(fid=float(len(x)), kid=0., n=len(x))


def tagged(tag: str) -> nn.Module:
    m = nn.Identity(); m.tag = tag
    return m


def shrink(x, sigma):
    "D(x; s) = x C/(C + s²), the ideal denoiser of N(0, C) data (C = 0.5), one s per row."
    return x * 0.5 / (0.5 + sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) ** 2)


@pytest.fixture
def karras(load_script): return load_script('bench/karras_fid.py')

@pytest.fixture
def unet(load_script): return load_script('bench/unet_fid.py')

@pytest.fixture
def nl(load_script): return load_script('bench/noise_level_fid.py')


# ---- karras_fid: settings, draw, table -----------------------------------------------------------------------------

def test_karras_settings_are_the_documented_ones(karras):
    "The settings tables are the docstring's: Euler 100, Euler ancestral eta 0.5 100, Heun 50/20, LMS 20, DPM++(2M) 20/10, SDE 20; EMA DPM++(2M) 20; cosine Euler 100, DPM++(2M) 20, DDIM eta 1 100."
    assert karras.KARRAS_SETTINGS == [('euler', 100, {}), ('euler_ancestral', 100, {'eta': 0.5}), ('heun', 50, {}),
                                      ('heun', 20, {}), ('lms', 20, {}), ('dpmpp_2m', 20, {}), ('dpmpp_2m', 10, {}),
                                      ('dpmpp_2m_sde', 20, {})]
    assert karras.EMA_SETTINGS == [('dpmpp_2m', 20, {})]
    assert karras.COSINE_SETTINGS == [('euler', 100, {}), ('dpmpp_2m', 20, {}), ('ddim', 100, {'eta': 1.})]


def test_karras_draw_reports_the_documented_nfe_of_every_full_setting(karras, one_thread):
    "The NFE column of the full settings: Euler 100 (100), ancestral 100 (100), Heun 50 (99), Heun 20 (39), LMS 20, DPM++ 20/10, SDE 20; each the number of denoiser calls per image."
    documented = [100, 100, 99, 39, 20, 20, 10, 20]
    args = argparse.Namespace(batch=2, seed=0, precision='fp32')
    for (sampler, steps, kw), want in zip(karras.KARRAS_SETTINGS, documented):
        calls = []
        def den(x, s): calls.append(len(x)); return shrink(x, s)
        x, nfe, secs = karras.draw(den, sampler, steps, kw, 2, args)
        assert nfe == len(calls) == want, (sampler, steps)
        assert x.shape == (2, 1, 32, 32) and secs >= 0


def test_karras_draw_batch_k_uses_batch_seed_and_the_setting_kwargs(karras, one_thread):
    "`n` samples in batches of `--batch`: batch k is the sampler's draw from `batch_seed(seed, k)` with the setting's kwargs; exactly n, on the CPU."
    from miniai.diffusion.ksamplers import sample
    args = argparse.Namespace(batch=2, seed=7, precision='fp32')
    x, nfe, _ = karras.draw(shrink, 'euler_ancestral', 3, {'eta': 0.5}, 5, args)
    want = [sample('euler_ancestral', shrink, (m, 1, 32, 32), steps=3, seed=batch_seed(7, k), device='cpu', eta=0.5).x
            for k, m in enumerate((2, 2, 1))]
    assert x.shape == (5, 1, 32, 32) and x.device.type == 'cpu' and nfe == 3
    torch.testing.assert_close(x, torch.cat(want).clamp(-1, 1))
    assert not torch.equal(want[0][0], want[1][0])   # (the seeds do differ)


def test_karras_draw_ddim_batches_use_batch_seed(karras, one_thread):
    "The cosine model's own DDIM: batch k from a generator seeded `batch_seed(seed, k)`, with the setting's eta."
    from miniai.diffusion.cosine import cosine_ddim_sample
    eps = lambda x, t: 0.3 * x
    args = argparse.Namespace(batch=3, seed=11, precision='fp32')
    x, nfe, _ = karras.draw(eps, 'ddim', 5, {'eta': 1.}, 4, args)
    want = [cosine_ddim_sample(eps, (m, 1, 32, 32), 5, eta=1., generator=torch.Generator().manual_seed(batch_seed(11, k)))
            for k, m in enumerate((3, 1))]
    torch.testing.assert_close(x, torch.cat(want).clamp(-1, 1))
    assert nfe == 4


def test_karras_draw_of_a_half_range_model_clamps_x0_there_and_doubles_the_samples(karras, one_thread):
    "hi=0.5 (the cosine model's [-0.5, 0.5]): DDIM clamps x0-hat to +-0.5 and the samples are divided by 0.5; Karras samplers too."
    from miniai.diffusion.cosine import cosine_ddim_sample
    eps = lambda x, t: -2. * x
    args = argparse.Namespace(batch=4, seed=5, precision='fp32')
    x, _, _ = karras.draw(eps, 'ddim', 5, {'eta': 1.}, 4, args, hi=0.5)
    want = cosine_ddim_sample(eps, (4, 1, 32, 32), 5, eta=1., generator=torch.Generator().manual_seed(batch_seed(5, 0)), clamp=0.5)/0.5
    assert want.abs().max() == 1 and (want.abs() < 1).any()
    torch.testing.assert_close(x, want)
    y, _, _ = karras.draw(lambda x, s: torch.full_like(x, 0.25), 'euler', 4, {}, 4, args, hi=0.5)
    torch.testing.assert_close(y, torch.full((4, 1, 32, 32), 0.5), atol=1e-3, rtol=0)   # D = 0.25 in data units is 0.5 on screen


def test_unet_draw_uses_lms_of_the_lessons_order_3_by_default(load_script, monkeypatch, one_thread):
    "The lesson's EmbUNet FIDs came from `sample_lms(model, steps=20, order=3)`: LMS gets `--lms-order` (3), other samplers nothing."
    unet = load_script('bench/unet_fid.py')
    seen = []
    def sample(name, net, shape, steps, seed, device, **kw): seen.append((name, steps, seed, kw)); return SimpleNamespace(x=torch.zeros(shape))
    monkeypatch.setattr(unet, 'sample', sample)
    args = unet.parse_args(['--quick', '--batch', '2', '--out', 'x.json'])
    assert args.lms_order == 3 and unet.sampler_kwargs(args) == {'order': 3}
    unet.draw(lambda x, s: x, 3, args)
    assert seen == [('lms', args.steps, batch_seed(args.seed, k), {'order': 3}) for k in (0, 1)]   # batch k: batch_seed(seed, k)
    seen.clear(); unet.draw(lambda x, s: x, 2, unet.parse_args(['--quick', '--batch', '2', '--sampler', 'euler', '--out', 'x.json']))
    assert seen[0][3] == {}
    assert 'Sampler: lms order 3, 20 steps' in unet.markdown(dict(config=dict(n=[64], sampler='lms', sampler_kwargs={'order': 3}, steps=20),
                                                                  command='c', environment={}, train={}, rows=[], guidance=[], reals=None))


def test_karras_draw_clamps_samples_to_the_data_range(karras, one_thread):
    "Samples are clamped to [-1, 1] before scoring: a denoiser that says 3 everywhere gives images of 1."
    args = argparse.Namespace(batch=4, seed=0, precision='fp32')
    x, _, _ = karras.draw(lambda x, s: torch.full_like(x, 3.), 'euler', 4, {}, 4, args)
    assert torch.equal(x, torch.ones(4, 1, 32, 32))


def test_karras_draw_autocasts_to_bf16_only_on_cuda_with_precision_bf16(karras, monkeypatch):
    "`--precision bf16` autocasts sampling on CUDA; fp32 does not, and nothing is autocast on a CPU."
    seen = []
    class Autocast:
        def __init__(self, device_type, dtype=None, enabled=True): seen.append((device_type, dtype, enabled))
        def __enter__(self): return self
        def __exit__(self, *a): return False
    monkeypatch.setattr(torch, 'autocast', Autocast)
    monkeypatch.setattr(karras, 'sample', lambda sampler, model, shape, steps, seed, device, **kw: (torch.zeros(shape), steps))
    monkeypatch.setattr(karras, 'synchronize', lambda *a: None)
    for dev, precision, enabled in (('cuda', 'bf16', True), ('cuda', 'fp32', False), ('cpu', 'bf16', False)):
        monkeypatch.setattr(karras, 'default_device', lambda dev=dev: torch.device(dev))
        seen.clear()
        karras.draw(None, 'euler', 2, {}, 2, argparse.Namespace(batch=2, seed=0, precision=precision))
        assert seen == [('cuda', torch.bfloat16, enabled)], (dev, precision)


def test_karras_draw_returns_the_nfe_the_sampler_counted(karras, monkeypatch):
    "The NFE of a row is what the sampler counted (Heun 50 makes 99), not the step count."
    monkeypatch.setattr(karras, 'sample', lambda sampler, model, shape, steps, seed, device, **kw: (torch.zeros(shape), 2 * steps - 1))
    assert karras.draw(None, 'heun', 50, {}, 2, argparse.Namespace(batch=2, seed=0, precision='fp32'))[1] == 99


KARRAS_ROWS = [dict(model='karras', sampler='heun', steps=50, kwargs={}, nfe=99, scores={'2048': sc(60., 0.02), '512': sc(150., 0.03)}, seconds=12.34),
               dict(model='karras', sampler='euler_ancestral', steps=100, kwargs={'eta': 0.5}, nfe=100,
                    scores={'2048': sc(45.), '512': sc(250.)}, seconds=3.),
               dict(model='reals', sampler='train images', steps=0, kwargs={}, nfe=0, scores={'2048': sc(30., 0.001), '512': sc(100., 0.002)}, seconds=0.)]


def test_karras_table_cells_sit_under_their_headers(karras):
    "Each cell is under its header: steps and NFE apart, kwargs in the sampler cell, FID / floor per count (the reals row found by name), KID, seconds."
    md = karras.markdown(dict(config=dict(n=[2048, 512]), command='c', environment={}, rows=KARRAS_ROWS))
    (rows,) = tables(md)
    assert rows[0] == {'model': 'karras', 'sampler': 'heun', 'steps': '50', 'NFE': '99', 'FID (2,048)': '60.000',
                       'FID / floor (2,048)': '2.00', 'KID (2,048)': '0.02000', 'FID (512)': '150.000',
                       'FID / floor (512)': '1.50', 'KID (512)': '0.03000', 'seconds': '12.3'}
    assert rows[1]['sampler'] == "euler_ancestral {'eta': 0.5}" and rows[1]['FID / floor (2,048)'] == '1.50' \
        and rows[1]['FID / floor (512)'] == '2.50'
    assert [r['model'] for r in rows] == ['karras', 'karras', 'reals'] and rows[2]['FID / floor (512)'] == '1.00'


def test_karras_table_without_reals_leaves_the_ratio_empty(karras):
    "Before the reals are scored the FID / floor cells are empty, the other columns unchanged."
    md = karras.markdown(dict(config=dict(n=[2048, 512]), command='c', environment={}, rows=KARRAS_ROWS[:1]))
    (rows,) = tables(md)
    assert rows[0]['FID / floor (2,048)'] == rows[0]['FID / floor (512)'] == '' and rows[0]['FID (512)'] == '150.000'


# ---- karras_fid: main's bookkeeping (everything slow faked) ---------------------------------------------------------

@pytest.fixture
def fake_karras(karras, monkeypatch, tmp_path):
    "karras_fid with training, drawing and scoring faked: records what main asks for."
    log = SimpleNamespace(draws=[], trained=[], reals=[], ie=FakeEval(), his=[])
    monkeypatch.setattr(karras, 'fid_classifier_path', lambda args: tmp_path/'clf.safetensors')
    monkeypatch.setattr(karras, 'weights_metadata', lambda p: {'fashion_classifier': '{}', 'epochs': '20'})
    monkeypatch.setattr(karras, 'fashion_image_eval', lambda *a, **k: log.ie)
    monkeypatch.setattr(karras, 'weights_hash', lambda m: 'a' * 64)
    def fid_images(split, data_dir, n, seed, allow_sample): log.reals.append((split, n, seed)); return torch.zeros(n, 1, 32, 32)
    monkeypatch.setattr(karras, 'fashion_fid_images', fid_images)
    def train_or_load(kind, cfg, args, results):
        log.trained.append((kind, cfg['objective'])); results['train'][kind] = {}
        return tagged(kind), tagged(kind + '_ema')
    monkeypatch.setattr(karras, 'train_or_load', train_or_load)
    def draw(den, sampler, steps, kw, n, args, hi=1.):
        log.draws.append((den, sampler, steps, kw, n)); log.his.append(hi); return torch.zeros(n, 1, 32, 32), 7 * steps, 1.5
    monkeypatch.setattr(karras, 'draw', draw)
    return log


def test_karras_main_writes_one_row_per_setting_with_its_own_network(karras, fake_karras, tmp_path):
    "Full run: reals, every Karras setting (raw weights), DPM++ 20 on the EMA weights, the cosine rows (Euler/DPM++ via EpsDenoiser, DDIM on the bare model); max(n) drawn, prefixes scored."
    from miniai.diffusion.karras import EpsDenoiser, KarrasDenoiser
    out = tmp_path/'k.json'
    karras.main(['--out', str(out), '--n', '16', '64', '--sigma-data', '0.5', '--seed', '3'])
    res = json.loads(out.read_text())
    keys = [(r['model'], r['sampler'], r['steps'], r['kwargs']) for r in res['rows']]
    assert keys == [('reals', 'train images', 0, {}),
                    ('karras', 'euler', 100, {}), ('karras', 'euler_ancestral', 100, {'eta': 0.5}), ('karras', 'heun', 50, {}),
                    ('karras', 'heun', 20, {}), ('karras', 'lms', 20, {}), ('karras', 'dpmpp_2m', 20, {}),
                    ('karras', 'dpmpp_2m', 10, {}), ('karras', 'dpmpp_2m_sde', 20, {}), ('karras+ema', 'dpmpp_2m', 20, {}),
                    ('cosine', 'euler', 100, {}), ('cosine', 'dpmpp_2m', 20, {}), ('cosine', 'ddim', 100, {'eta': 1.})]
    assert [r['nfe'] for r in res['rows']] == [0] + [7 * k[2] for k in keys[1:]]   # the NFE draw reported
    assert res['config']['n'] == [64, 16] and fake_karras.reals == [('train', 64, 3)]   # reals: max(n), seeded by --seed
    assert all(r['scores']['64']['n'] == 64 and r['scores']['16']['n'] == 16 for r in res['rows'])
    assert all(n == 64 for *_, n in fake_karras.draws)
    dens = [(d, s) for d, s, *_ in fake_karras.draws]
    for d, s in dens[:8]: assert isinstance(d, KarrasDenoiser) and d.model.tag == 'karras' and d.sigma_data == 0.5
    assert isinstance(dens[8][0], KarrasDenoiser) and dens[8][0].model.tag == 'karras_ema' and dens[8][0].sigma_data == 0.5
    for d, s in dens[9:11]: assert isinstance(d, EpsDenoiser) and d.model.tag == 'cosine'
    assert dens[11][0].tag == 'cosine' and dens[11][1] == 'ddim'
    assert fake_karras.his == [1.]*9 + [0.5]*3   # the cosine model's samples come from notebook 08's [-0.5, 0.5]
    assert res['config']['cosine']['value_range'] == [-0.5, 0.5] and 'value_range' not in res['config']['karras']
    assert [r['seconds'] for r in res['rows'][1:]] == [1.5] * 12
    assert out.with_suffix('.md').exists() and '| cosine | ddim {\'eta\': 1.0} | 100 | 700 |' in out.with_suffix('.md').read_text()


def test_karras_main_resumes_without_drawing_a_row_again(karras, fake_karras, tmp_path):
    "A second run of the same command finds every row done (key: model, sampler, steps, kwargs) and draws nothing."
    argv = ['--out', str(tmp_path/'k.json'), '--n', '16', '8']
    karras.main(argv)
    first, fake_karras.draws[:] = json.loads((tmp_path/'k.json').read_text())['rows'], []
    karras.main(argv)
    assert fake_karras.draws == [] and len(fake_karras.reals) == 1
    assert json.loads((tmp_path/'k.json').read_text())['rows'] == first


def test_karras_main_draws_only_the_missing_rows(karras, fake_karras, tmp_path):
    "Rows lost from the table (e.g. forgotten when a network was trained again) are drawn again, and only they."
    out = tmp_path/'k.json'
    karras.main(['--out', str(out), '--n', '16', '8'])
    res = json.loads(out.read_text())
    res['rows'] = [r for r in res['rows'] if not (r['model'] == 'karras' and r['sampler'] == 'euler_ancestral') and r['model'] != 'karras+ema']
    out.write_text(json.dumps(res)); fake_karras.draws.clear()
    karras.main(['--out', str(out), '--n', '16', '8'])
    assert [(s, st, kw) for _, s, st, kw, _ in fake_karras.draws] == [('euler_ancestral', 100, {'eta': 0.5}), ('dpmpp_2m', 20, {})]
    assert fake_karras.draws[1][0].model.tag == 'karras_ema'


def test_karras_main_no_cosine_and_models_select_the_networks(karras, fake_karras, tmp_path):
    "`--no-cosine` trains no cosine model and writes no cosine row (config cosine None); `--models cosine` trains the cosine one only."
    karras.main(['--out', str(tmp_path/'a.json'), '--n', '8', '4', '--no-cosine'])
    res = json.loads((tmp_path/'a.json').read_text())
    assert fake_karras.trained == [('karras', 'karras')] and res['config']['cosine'] is None
    assert {r['model'] for r in res['rows']} == {'reals', 'karras', 'karras+ema'}
    fake_karras.trained.clear()
    karras.main(['--out', str(tmp_path/'b.json'), '--n', '8', '4', '--models', 'cosine'])
    res = json.loads((tmp_path/'b.json').read_text())
    assert fake_karras.trained == [('cosine', 'cosine')] and {r['model'] for r in res['rows']} == {'reals', 'cosine'}
    assert res['config']['cosine']['objective'] == 'cosine' and res['config']['cosine']['lr'] == 4e-3
    assert res['config']['karras']['lr'] == 1e-2 and res['config']['karras']['bs'] == 512 and res['config']['karras']['epochs'] == 25


def test_karras_main_refuses_a_sample_count_below_two(karras, fake_karras, tmp_path):
    "FID needs a covariance: `--n 1` stops before anything is trained or drawn."
    with pytest.raises(SystemExit, match='>= 2'): karras.main(['--out', str(tmp_path/'k.json'), '--n', '8', '1'])
    karras.main(['--out', str(tmp_path/'k.json'), '--n', '2', '--no-cosine'])   # 2 is enough
    assert fake_karras.trained == [('karras', 'karras')]


def test_karras_quick_divides_steps_by_ten(karras, fake_karras, tmp_path):
    "`--quick` samples with steps // 10 (at least 1): Euler 100 -> 10, Heun 20 -> 2, DPM++ 10 -> 1, DDIM 100 -> 10."
    karras.main(['--quick', '--classifier', 'x', '--out', str(tmp_path/'q.json')])
    steps = [(s, st) for _, s, st, _, _ in fake_karras.draws]
    assert steps == [('euler', 10), ('euler_ancestral', 10), ('heun', 5), ('heun', 2), ('lms', 2), ('dpmpp_2m', 2), ('dpmpp_2m', 1),
                     ('dpmpp_2m_sde', 2), ('dpmpp_2m', 2), ('euler', 10), ('dpmpp_2m', 2), ('ddim', 10)]
    assert all(n == 32 for *_, n in fake_karras.draws)


# ---- karras_fid: train_or_load's bookkeeping ------------------------------------------------------------------------

class _FakeLearn:
    "Stands in for a learner: fitting sets every weight to 0.5 and records one epoch of history."
    fits = 0
    def __init__(self, model, cbs): self.model, self.cbs, self.metrics = model, list(cbs), SimpleNamespace(history=[dict(epoch=0, phase='train', loss=0.25)])
    def fit(self, n):
        type(self).fits += 1
        with torch.no_grad():
            for p in self.model.parameters(): p.fill_(0.5)


class _FakeEMA:
    "Stands in for the EMA callback: its average is -0.5 everywhere."
    def __init__(self, decay): self.decay = decay
    def copy_to(self, m):
        with torch.no_grad():
            for p in m.parameters(): p.fill_(-0.5)


@pytest.fixture
def karras_no_training(karras, monkeypatch):
    class Learn(_FakeLearn): fits = 0
    monkeypatch.setattr(karras, 'karras_learner', lambda model, dls, **kw: Learn(model, kw['cbs']))
    monkeypatch.setattr(karras, 'ddpm_learner', lambda model, dls, noisify, **kw: Learn(model, kw['cbs']))
    monkeypatch.setattr(karras, 'EMA', _FakeEMA)
    monkeypatch.setattr(karras, 'fashion_dls', lambda **kw: SimpleNamespace(train=SimpleNamespace(dataset_len=512)))
    return Learn


def _karras_rows(): return [dict(model=m) for m in ('reals', 'karras', 'karras+ema', 'cosine')]


def test_karras_train_or_load_saves_and_reloads_weights_ema_and_the_training_record(karras, karras_no_training, tmp_path, one_thread):
    "Trained: raw and EMA weights saved, the record logged; loaded: the same weights and record, no fit; `--retrain` fits again."
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, ema=0.999, compile='none', data_dir=None)
    cfg = dict(objective='karras', epochs=1, lr=3e-3, bs=64, sigma_data=0.66, ema=0.999, quick=True)
    res = dict(train={}, rows=_karras_rows())
    model, ema = karras.train_or_load('karras', cfg, args, res)
    assert karras_no_training.fits == 1 and [r['model'] for r in res['rows']] == ['reals', 'cosine']
    assert all((p == 0.5).all() for p in model.parameters()) and all((p == -0.5).all() for p in ema.parameters())
    assert res['train']['karras']['history'] == [dict(epoch=0, phase='train', loss=0.25)] and res['train']['karras']['n_train'] == 512
    assert res['train']['karras']['compile'] == 'none'
    res = dict(train={}, rows=_karras_rows())
    model, ema = karras.train_or_load('karras', cfg, args, res)
    assert karras_no_training.fits == 1 and res['rows'] == _karras_rows()   # loaded: rows kept
    assert all((p == 0.5).all() for p in model.parameters()) and all((p == -0.5).all() for p in ema.parameters())
    assert res['train']['karras']['history'] == [dict(epoch=0, phase='train', loss=0.25)] and res['train']['karras']['n_train'] == 512
    karras.train_or_load('karras', cfg, argparse.Namespace(**{**vars(args), 'retrain': True}), res)
    assert karras_no_training.fits == 2 and [r['model'] for r in res['rows']] == ['reals', 'cosine']
    karras.train_or_load('karras', {**cfg, 'lr': 1e-3}, args, res)   # another recipe: trained again
    assert karras_no_training.fits == 3
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['bench_karras_quick.safetensors', 'bench_karras_quick_ema.safetensors']


def test_karras_train_or_load_cosine_forgets_only_cosine_rows(karras, karras_no_training, tmp_path, one_thread):
    "Training the cosine model again forgets the cosine rows only, and its weights go to their own file."
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, ema=0., compile='none', data_dir=None)
    cfg = dict(objective='cosine', epochs=1, lr=3e-3, bs=64, sigma_data=None, ema=0., quick=True)
    res = dict(train={}, rows=_karras_rows())
    model, ema = karras.train_or_load('cosine', cfg, args, res)
    assert ema is None and [r['model'] for r in res['rows']] == ['reals', 'karras', 'karras+ema'] and 'cosine' in res['train']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bench_cosine_quick.safetensors']


def test_karras_train_or_load_trains_on_the_configs_data_range(karras, karras_no_training, tmp_path, monkeypatch, one_thread):
    "The cosine config's value_range reaches `fashion_dls` (notebook 08's [-0.5, 0.5]); the Karras config, without one, trains on [-1, 1]."
    seen = []
    monkeypatch.setattr(karras, 'fashion_dls', lambda **kw: seen.append(kw['value_range']) or SimpleNamespace(train=SimpleNamespace(dataset_len=512)))
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, ema=0., compile='none', data_dir=None)
    base = dict(epochs=1, lr=3e-3, bs=64, ema=0., quick=True)
    karras.train_or_load('cosine', dict(base, objective='cosine', sigma_data=None, value_range=[-0.5, 0.5]), args, dict(train={}, rows=[]))
    karras.train_or_load('karras', dict(base, objective='karras', sigma_data=0.66), args, dict(train={}, rows=[]))
    assert seen == [(-0.5, 0.5), (-1., 1.)]


def test_karras_train_or_load_never_pairs_weights_with_an_ema_of_another_training_run(karras, karras_no_training, tmp_path, one_thread):
    "A model trained without EMA (`--ema 0`) is loaded without one, even if an EMA file of an earlier recipe is still there."
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, ema=0.999, compile='none', data_dir=None)
    cfg = dict(objective='karras', epochs=1, lr=3e-3, bs=64, sigma_data=0.66, ema=0.999, quick=True)
    karras.train_or_load('karras', cfg, args, dict(train={}, rows=[]))
    args.ema, cfg = 0., {**cfg, 'ema': 0.}
    assert karras.train_or_load('karras', cfg, args, dict(train={}, rows=[]))[1] is None   # trained: no EMA
    assert karras.train_or_load('karras', cfg, args, dict(train={}, rows=[]))[1] is None   # loaded: still none


# ---- unet_fid: tables ------------------------------------------------------------------------------------------------

def test_unet_table_shows_the_last_epoch_losses_params_and_speeds(unet):
    "Unconditional rows: parameters with thousands separators, the last train and last valid loss, train and sample images/s, FID / floor."
    hist = [dict(epoch=0, phase='train', loss=0.5), dict(epoch=0, phase='valid', loss=0.4),
            dict(epoch=1, phase='train', loss=0.3), dict(epoch=1, phase='valid', loss=0.2)]
    res = dict(config=dict(n=[2048, 512], sampler='lms', steps=20), command='c', environment={}, guidance=[],
               train={'emb_unet': dict(params=1234567, history=hist, train_images_per_s=4321.2)},
               rows=[dict(model='emb_unet', sample_images_per_s=99.6, scores={'2048': sc(45.), '512': sc(120., 0.05)}),
                     dict(model='diffusers', scores={'2048': sc(60.)})],
               reals=dict(scores={'2048': sc(30.), '512': sc(80.)}))
    uncond = tables(unet.markdown(res))[0]
    assert uncond[0] == {'model': 'emb_unet', 'params': '1,234,567', 'train loss': '0.3000', 'valid loss': '0.2000',
                         'train img/s': '4,321', 'sample img/s': '100', 'FID (2,048)': '45.000', 'FID / floor (2,048)': '1.50',
                         'KID (2,048)': '0.01000', 'FID (512)': '120.000', 'FID / floor (512)': '1.50', 'KID (512)': '0.05000'}
    assert uncond[1] == {'model': 'diffusers', 'params': '', 'train loss': '', 'valid loss': '', 'train img/s': '',
                         'sample img/s': '', 'FID (2,048)': '60.000', 'FID / floor (2,048)': '2.00', 'KID (2,048)': '0.01000',
                         'FID (512)': '', 'FID / floor (512)': '', 'KID (512)': ''}   # not trained in this table, not scored at 512


def test_unet_guidance_table_puts_each_class_accuracy_under_its_class(unet):
    "Guidance rows: scale, overall accuracy, FID / floor, and each class's accuracy under that class's name (Fashion-MNIST order)."
    per_class = dict(zip(unet.FASHION_CLASSES, [0., .1, .2, .3, .4, .5, .6, .7, .8, .9]))
    res = dict(config=dict(n=[1000], sampler='lms', steps=20), command='c', environment={}, train={}, rows=[],
               guidance=[dict(scale=0., accuracy=dict(overall=0.45, per_class=per_class), scores={'1000': sc(90.)}),
                         dict(scale=2.5, accuracy=dict(overall=0.875, per_class=per_class), scores={'1000': sc(45.)})],
               reals=dict(scores={'1000': sc(30.)}))
    md = unet.markdown(res)
    guid, reals = tables(md)
    short = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle']
    assert list(guid[0]) == ['guidance scale', 'accuracy', 'FID (1,000)', 'FID / floor (1,000)', 'KID (1,000)'] + short
    assert [g['guidance scale'] for g in guid] == ['0', '2.5'] and [g['accuracy'] for g in guid] == ['45.00%', '87.50%']
    assert [g['FID / floor (1,000)'] for g in guid] == ['3.00', '1.50']
    assert guid[1]['T-shirt/top'] == '0%' and guid[1]['Sandal'] == '50%' and guid[1]['Ankle'] == '90%' and guid[1]['Bag'] == '80%'
    assert "accuracy on all 1,000 samples" in md
    assert reals == [{'FID (1,000)': '30.000', 'KID (1,000)': '0.01000'}]   # the floor: no ratio to itself


def test_unet_reals_table_has_fid_and_kid_per_count(unet):
    "The floor table: FID and KID at each sample count, in the order of the counts."
    res = dict(config=dict(n=[64, 16], sampler='lms', steps=20), command='c', environment={}, train={}, rows=[], guidance=[],
               reals=dict(scores={'64': sc(3., 0.001), '16': sc(9., 0.004)}))
    (floor,) = tables(unet.markdown(res))
    assert floor == [{'FID (64)': '3.000', 'KID (64)': '0.00100', 'FID (16)': '9.000', 'KID (16)': '0.00400'}]


def test_unet_accuracy_names_each_class(unet):
    "`accuracy`: overall hit rate and the rate per class, keyed by the Fashion-MNIST class names in label order."
    class Clf(nn.Module):   # predicts the class written in pixel (0, 0); one Sandal image is read as a T-shirt
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(()))
        def forward(self, x): return nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float() + 0 * self.w
    labels = torch.arange(20) % 10
    imgs = torch.zeros(20, 1, 32, 32); imgs[:, 0, 0, 0] = labels.float(); imgs[15, 0, 0, 0] = 0.   # label 15 % 10 = 5: Sandal
    a = unet.accuracy(Clf(), imgs, labels)
    assert a['overall'] == pytest.approx(19 / 20)
    assert list(a['per_class']) == ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']
    assert a['per_class']['Sandal'] == pytest.approx(0.5) and all(v == 1. for k, v in a['per_class'].items() if k != 'Sandal')


def test_unet_classifier_loads_the_given_weights_in_eval_mode_and_describes_them(unet, tmp_path):
    "`classifier(args)`: the `--classifier` weights rebuilt in eval mode; the description is its path and metadata, without the rebuild recipe."
    from miniai.models.resnet import classifier_metadata, fashion_classifier, save_weights
    torch.manual_seed(0)
    clf = fashion_classifier(nfs=(8, 16)).eval()
    path = tmp_path/'clf.safetensors'
    save_weights(clf, path, classifier_metadata((8, 16), 0.1, epochs=3))
    model, desc = unet.classifier(argparse.Namespace(classifier=str(path), quick=True, data_dir=None))
    assert desc == {'path': str(path), 'epochs': '3'} and not model.training
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(model.cpu()(x), clf(x))


def test_unet_train_timer_leaves_out_the_first_epoch(unet):
    "Training images/s: images over seconds of epochs 2..N (the first warms up); with one epoch, that one; with none, None."
    t = unet.TrainTimer()
    t.epochs = [(10., 100), (2., 400), (3., 600)]
    assert t.images_per_s() == pytest.approx(200.)
    t.epochs = [(4., 100)]
    assert t.images_per_s() == pytest.approx(25.)
    t.epochs = []
    assert t.images_per_s() is None


# ---- unet_fid: train_or_load and main's bookkeeping -----------------------------------------------------------------

@pytest.fixture
def unet_no_training(unet, monkeypatch):
    "unet_fid's learners replaced: fitting writes the checkpoint CheckpointCB would and records whether one was there."
    from miniai.accel import CheckpointCB
    log = SimpleNamespace(fits=[], ckpt_at_start=[])
    class Learn:
        def __init__(self, name, model, cbs): self.name, self.model, self.cbs = name, model, list(cbs); self.metrics = SimpleNamespace(history=[dict(phase='train', loss=1.)])
        def fit(self, n):
            ck = next(cb for cb in self.cbs if isinstance(cb, CheckpointCB))
            log.fits.append(self.name); log.ckpt_at_start.append(ck.path.exists())
            for cb in self.cbs:
                if isinstance(cb, unet.TrainTimer): cb.before_fit(SimpleNamespace(start_epoch=0))
            ck.path.write_text('checkpoint')
    monkeypatch.setattr(unet, 'karras_learner', lambda model, dls, lr, cbs: Learn('uncond', model, cbs))
    monkeypatch.setattr(unet, 'cond_learner', lambda model, dls, lr, p_uncond, cbs=(): Learn('cond', model, cbs))
    monkeypatch.setattr(unet, 'fashion_dls', lambda **kw: SimpleNamespace(train=SimpleNamespace(dataset_len=256, drop_last=False)))
    return log


def test_unet_train_or_load_forgets_the_rows_of_the_network_trained_again(unet, unet_no_training, tmp_path, one_thread):
    "Training an unconditional network again forgets its own rows only; the conditional one, every guidance row; loading forgets nothing."
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, compile='none', data_dir=None)
    cfg = dict(epochs=1, lr=3e-3, bs=32, quick=True)
    fresh = lambda: dict(train={}, rows=[dict(model=m) for m in unet.MODELS], guidance=[dict(scale=w) for w in (0., 1.)])
    res = fresh()
    m = unet.train_or_load('emb_unet', cfg, args, res)
    assert [r['model'] for r in res['rows']] == ['emb_unet_attn', 'diffusers'] and len(res['guidance']) == 2
    assert res['train']['emb_unet']['params'] == sum(p.numel() for p in m.parameters()) and not m.training
    res = fresh()
    unet.train_or_load('cond', {**cfg, 'p_uncond': 0.1}, args, res)
    assert res['guidance'] == [] and len(res['rows']) == 3 and unet_no_training.fits == ['uncond', 'cond']
    res = fresh()
    unet.train_or_load('emb_unet', cfg, args, res); unet.train_or_load('cond', {**cfg, 'p_uncond': 0.1}, args, res)
    assert res == {**fresh(), 'train': res['train']} and unet_no_training.fits == ['uncond', 'cond']   # loaded
    assert res['train']['emb_unet']['params'] == sum(p.numel() for p in m.parameters())   # the record comes back too
    assert not list(tmp_path.glob('*.ckpt'))   # a finished training leaves no checkpoint to resume


def test_unet_retrain_starts_from_scratch_not_from_a_checkpoint(unet, unet_no_training, tmp_path, one_thread):
    "`--retrain` trains even over matching weights, and first removes the checkpoint of an unfinished run so nothing is resumed."
    import hashlib
    args = argparse.Namespace(weights_dir=str(tmp_path), quick=True, retrain=False, compile='none', data_dir=None)
    cfg = dict(epochs=1, lr=3e-3, bs=32, quick=True)
    unet.train_or_load('diffusers', cfg, args, dict(train={}, rows=[], guidance=[]))
    unet.train_or_load('diffusers', cfg, args, dict(train={}, rows=[], guidance=[]))   # matching weights: loaded
    assert unet_no_training.fits == ['uncond']
    meta = json.dumps({**cfg, 'model': 'diffusers'}, sort_keys=True)   # the checkpoint a run cut short leaves
    (tmp_path/f"bench_unet_diffusers_quick_{hashlib.sha256(meta.encode()).hexdigest()[:10]}.ckpt").write_text('unfinished')
    unet.train_or_load('diffusers', cfg, argparse.Namespace(**{**vars(args), 'retrain': True}), dict(train={}, rows=[], guidance=[]))
    assert unet_no_training.fits == ['uncond', 'uncond'] and unet_no_training.ckpt_at_start == [False, False]


@pytest.fixture
def fake_unet(unet, monkeypatch):
    "unet_fid's main with training, drawing, scoring and the classifier faked; `retrain`: training 'cond' again forgets its rows."
    from bench.benchkit import forget_rows
    log = SimpleNamespace(trained=[], draws=[], acc_labels=[], reals=[], n_train=60_000, retrain=False, ie=FakeEval())
    monkeypatch.setattr(unet, 'classifier', lambda args: (tagged('clf'), {'path': 'clf.safetensors'}))
    monkeypatch.setattr(unet, 'fashion_image_eval', lambda *a, **k: log.ie)
    monkeypatch.setattr(unet, 'weights_hash', lambda m: 'b' * 64)
    monkeypatch.setattr(unet, 'fashion_mnist_arrays', lambda split, data_dir, allow_sample: (torch.zeros(log.n_train), None))
    def fid_images(split, data_dir, n, seed, allow_sample): log.reals.append((split, n, seed)); return torch.zeros(n, 1, 32, 32)
    monkeypatch.setattr(unet, 'fashion_fid_images', fid_images)
    def train_or_load(name, cfg, args, results):
        log.trained.append(name)
        if name == 'cond' and log.retrain: forget_rows(results, 'guidance', lambda r: True, name)
        return tagged(name)
    monkeypatch.setattr(unet, 'train_or_load', train_or_load)
    def draw(model, n, args, labels=None, scale=1.):
        log.draws.append((model.tag, n, None if labels is None else labels.tolist(), scale)); return torch.zeros(n, 1, 32, 32), 4.
    monkeypatch.setattr(unet, 'draw', draw)
    def accuracy(clf, imgs, labels):
        log.acc_labels.append(labels.tolist()); return dict(overall=0.5, per_class=dict(zip(unet.FASHION_CLASSES, [0.5] * 10)))
    monkeypatch.setattr(unet, 'accuracy', accuracy)
    return log


def test_unet_main_draws_each_model_and_each_guidance_scale_of_labels_i_mod_10(unet, fake_unet, tmp_path):
    "Each unconditional model once; the conditional one at w = 0, 1, 2, 3 with labels i % 10 (drawn and checked); max(n) each; images/s = n / seconds."
    out = tmp_path/'u.json'
    unet.main(['--out', str(out), '--n', '8', '20'])
    res = json.loads(out.read_text())
    labels = [i % 10 for i in range(20)]
    assert fake_unet.draws == [('emb_unet', 20, None, 1.), ('emb_unet_attn', 20, None, 1.), ('diffusers', 20, None, 1.)] + \
        [('cond', 20, labels, w) for w in (0., 1., 2., 3.)]
    assert fake_unet.acc_labels == [labels] * 4 and res['config']['scales'] == [0., 1., 2., 3.]
    assert [r['model'] for r in res['rows']] == ['emb_unet', 'emb_unet_attn', 'diffusers']
    assert [g['scale'] for g in res['guidance']] == [0., 1., 2., 3.]
    assert all(r['sample_images_per_s'] == 5. and r['sample_seconds'] == 4. for r in res['rows'] + res['guidance'])
    assert all(r['scores'] == {'20': dict(fid=20., kid=0.), '8': dict(fid=8., kid=0.)} for r in res['rows'] + res['guidance'])
    assert res['reals'] == {'scores': {'20': dict(fid=20., kid=0.), '8': dict(fid=8., kid=0.)}} and fake_unet.reals == [('train', 20, 0)]
    assert fake_unet.trained == ['emb_unet', 'emb_unet_attn', 'diffusers', 'cond']


def test_unet_main_reals_are_capped_at_the_training_set(unet, fake_unet, tmp_path):
    "With more samples asked than training images, the floor uses them all and is scored at the counts it reaches (the largest one included when equal)."
    fake_unet.n_train = 20
    unet.main(['--out', str(tmp_path/'a.json'), '--n', '30', '20', '8', '--models', 'emb_unet'])
    res = json.loads((tmp_path/'a.json').read_text())
    assert fake_unet.reals == [('train', 20, 0)] and list(res['reals']['scores']) == ['20', '8']


def test_unet_main_completes_the_guidance_scales_and_redraws_all_after_retraining(unet, fake_unet, tmp_path):
    "A guidance table missing scales draws just those; if the conditional model had to be trained again, every scale is drawn from it."
    out = tmp_path/'u.json'
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'cond'])
    res = json.loads(out.read_text())
    res['guidance'] = [g for g in res['guidance'] if g['scale'] in (0., 2.)]
    out.write_text(json.dumps(res)); fake_unet.draws.clear()
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'cond'])
    assert [d[3] for d in fake_unet.draws] == [1., 3.]
    assert sorted(g['scale'] for g in json.loads(out.read_text())['guidance']) == [0., 1., 2., 3.]
    fake_unet.draws.clear(); fake_unet.trained.clear()
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'cond'])
    assert fake_unet.draws == [] and fake_unet.trained == []   # complete: the model is not even loaded
    res = json.loads(out.read_text()); res['guidance'] = res['guidance'][:1]; out.write_text(json.dumps(res))
    fake_unet.retrain = True
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'cond'])
    assert [d[3] for d in fake_unet.draws] == [0., 1., 2., 3.] and len(json.loads(out.read_text())['guidance']) == 4


def test_unet_main_models_selects_networks_and_resumes_rows(unet, fake_unet, tmp_path):
    "`--models emb_unet` trains and draws that network only; a rerun draws nothing it has."
    out = tmp_path/'u.json'
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'emb_unet'])
    assert fake_unet.trained == ['emb_unet'] and [d[0] for d in fake_unet.draws] == ['emb_unet']
    unet.main(['--out', str(out), '--n', '8', '4', '--models', 'emb_unet', 'diffusers'])
    assert fake_unet.trained == ['emb_unet', 'diffusers'] and [d[0] for d in fake_unet.draws] == ['emb_unet', 'diffusers']
    assert [r['model'] for r in json.loads(out.read_text())['rows']] == ['emb_unet', 'diffusers']


# ---- noise_level_fid ------------------------------------------------------------------------------------------------

def test_noise_level_configs_are_the_documented_recipes(nl):
    "Regressor: 20 epochs, one-cycle 1e-2, batch 512, dropout 0.2; no-t model: 25 epochs, 4e-3, batch 512; quick ones tiny, and marked quick."
    full, quick = nl.configs(False), nl.configs(True)
    assert full == {'regressor': dict(epochs=20, lr=1e-2, bs=512, nfs=None, drop=0.2, stem_dropout=False, quick=False),
                    'no_t': dict(epochs=25, lr=4e-3, bs=512, quick=False)}
    assert quick['regressor']['quick'] is True and quick['no_t']['quick'] is True
    assert quick['regressor']['epochs'] == quick['no_t']['epochs'] == 1 and quick['regressor']['nfs'] == (8, 16, 32, 64)


NL_RESULTS = dict(config=dict(n=[64, 16], steps=100), command='c', environment={},
                  rows=[dict(sampler='naive DDIM (scheduled ᾱ)', seconds=3.14159, scores={'64': sc(60., 0.0125), '16': sc(100.)}),
                        dict(sampler="DDIM with the regressor's ᾱ", seconds=2., scores={'64': sc(30.)})],
                  reals={'64': sc(20., 0.001), '16': sc(40., 0.002)},
                  train={'regressor': dict(test_mse=0.0751, constant_0_mse=3.2912, constant_0_mse_expected=3.2899)})


def test_noise_level_table_divides_by_the_floor_at_the_same_count(nl):
    "Rows: sampler, seconds, then FID, FID / floor (same count) and KID per count; a count not scored is empty; the floor row last with ratio 1."
    (rows,) = tables(nl.markdown(NL_RESULTS))
    assert rows[0] == {'sampler': 'naive DDIM (scheduled ᾱ)', 'seconds': '3.1', 'FID (64)': '60.000', 'FID / floor (64)': '3.00',
                       'KID (64)': '0.01250', 'FID (16)': '100.000', 'FID / floor (16)': '2.50', 'KID (16)': '0.01000'}
    assert rows[1] == {'sampler': "DDIM with the regressor's ᾱ", 'seconds': '2.0', 'FID (64)': '30.000', 'FID / floor (64)': '1.50',
                       'KID (64)': '0.01000', 'FID (16)': '', 'FID / floor (16)': '', 'KID (16)': ''}
    assert rows[2] == {'sampler': 'real training images (floor)', 'seconds': '', 'FID (64)': '20.000', 'FID / floor (64)': '1.00',
                       'KID (64)': '0.00100', 'FID (16)': '40.000', 'FID / floor (16)': '1.00', 'KID (16)': '0.00200'}
    assert 'DDIM 100 steps, eta 1' in nl.markdown(NL_RESULTS)


def test_noise_level_table_before_the_floor_is_scored(nl):
    "Without reals: no floor row and empty FID / floor cells."
    (rows,) = tables(nl.markdown({**NL_RESULTS, 'reals': None}))
    assert [r['sampler'] for r in rows] == [r['sampler'] for r in NL_RESULTS['rows']]
    assert rows[0]['FID / floor (64)'] == rows[0]['FID / floor (16)'] == '' and rows[0]['FID (16)'] == '100.000'


def test_noise_level_table_states_the_regressor_mse_and_its_baseline(nl):
    "Below the table: the regressor's test MSE, the constant-0 MSE and π²/3, each in its place."
    md = nl.markdown(NL_RESULTS)
    assert "Regressor test MSE of logit(ᾱ): 0.0751; always 0: 3.291 (expected π²/3 = 3.290)" in md
    assert 'Regressor test MSE' not in nl.markdown({**NL_RESULTS, 'train': {'regressor': {}}})


def test_noise_level_regressor_mse_is_measured_in_eval_mode_on_seeded_noisings(nl):
    "Dropout is off while measured (a model that is 0 in eval mode scores the baseline exactly); `seed` picks the noisings; π²/3 = 3.2899."
    class DropZero(nn.Module):   # 0 in eval mode, ±1 in training mode
        def __init__(self): super().__init__(); self.drop, self.w = nn.Dropout(0.5), nn.Parameter(torch.zeros(()))
        def forward(self, x): return self.drop(torch.ones(len(x), 1)) - 1 + 0 * self.w
    batches = [(torch.rand(256, 1, 8, 8) * 2 - 1, torch.zeros(256)) for _ in range(4)]
    m = DropZero().train()
    r0 = nl.regressor_mse(m, batches)
    assert r0['test_mse'] == r0['constant_0_mse'] and r0['constant_0_mse_expected'] == 3.2899
    assert nl.regressor_mse(DropZero(), batches, seed=0) == r0                     # seeded: the same noisings again
    assert nl.regressor_mse(DropZero(), batches, seed=1)['constant_0_mse'] != r0['constant_0_mse']


def test_noise_level_draw_routes_the_regressor_and_seeds_batches(nl, monkeypatch):
    "Naive rows: DDIM with the schedule; corrected rows: DDIM with the float32-wrapped regressor; both eta 1, `--steps`, batch k seeded `batch_seed(seed, k)`, clamped, n exactly."
    calls = []
    def ddim(model, shape, steps, eta, generator): calls.append(('ddim', model, None, shape, steps, eta, generator)); return torch.full(shape, 5.)
    def nl_ddim(model, level, shape, steps, eta, generator): calls.append(('nl', model, level, shape, steps, eta, generator)); return torch.full(shape, -5.)
    monkeypatch.setattr(nl, 'cosine_ddim_sample', ddim); monkeypatch.setattr(nl, 'noise_level_ddim_sample', nl_ddim)
    no_t, reg = tagged('no_t'), tagged('reg')
    args = argparse.Namespace(batch=4, seed=3, steps=100)
    x, _ = nl.draw(no_t, None, 10, args)
    assert torch.equal(x, torch.ones(10, 1, 32, 32))
    assert [(c[0], c[1].tag, c[3], c[4], c[5], c[6]) for c in calls] == \
        [('ddim', 'no_t', (m, 1, 32, 32), 100, 1., batch_seed(3, k)) for k, m in enumerate((4, 4, 2))]
    calls.clear()
    x, _ = nl.draw(no_t, reg, 5, args)
    assert torch.equal(x, -torch.ones(5, 1, 32, 32))
    assert [(c[0], c[1].tag, type(c[2]).__name__, c[2].model.tag, c[3], c[5], c[6]) for c in calls] == \
        [('nl', 'no_t', 'Float32', 'reg', (m, 1, 32, 32), 1., batch_seed(3, k)) for k, m in enumerate((4, 1))]


def test_noise_level_kid_per_step_scores_both_samplers_on_the_first_batch(nl, monkeypatch):
    "Both samplers on the first batch's seed and size (at most `--batch`), every step's denoised scored in float32 and clamped."
    calls = []
    def ddim(model, shape, steps, eta, generator, callback):
        calls.append(('ddim', model.tag, shape, steps, eta, generator))
        for i in range(steps - 1): callback(dict(denoised=torch.full(shape, 3.*i, dtype=torch.bfloat16)))
    def nl_ddim(model, level, shape, steps, eta, generator, callback):
        calls.append(('nl', level.model.tag, shape, steps, eta, generator))
        for i in range(steps): callback(dict(denoised=torch.full(shape, -0.5*i)))
    monkeypatch.setattr(nl, 'cosine_ddim_sample', ddim); monkeypatch.setattr(nl, 'noise_level_ddim_sample', nl_ddim)
    ie = SimpleNamespace(kid=lambda x: (x.dtype, x.min().item(), x.max().item()))
    r = nl.kid_per_step(tagged('no_t'), tagged('reg'), 64, ie, argparse.Namespace(batch=16, seed=3, steps=3))
    assert calls == [('ddim', 'no_t', (16, 1, 32, 32), 3, 1., batch_seed(3, 0)), ('nl', 'reg', (16, 1, 32, 32), 3, 1., batch_seed(3, 0))]
    assert r == dict(n=16, curves={nl.SAMPLERS[0]: [(torch.float32, 0., 0.), (torch.float32, 1., 1.)],
                                   nl.SAMPLERS[1]: [(torch.float32, 0., 0.), (torch.float32, -0.5, -0.5), (torch.float32, -1., -1.)]})


@pytest.fixture
def fake_nl(nl, monkeypatch):
    log = SimpleNamespace(draws=[], trained=[], reals=[], ie=FakeEval(), his=[])
    monkeypatch.setattr(nl, 'fid_evaluator', lambda quick, data_dir=None: log.ie)
    monkeypatch.setattr(nl, 'weights_hash', lambda m: 'c' * 64)
    def fid_images(split, data_dir, n, seed, allow_sample): log.reals.append((split, n, seed)); return torch.zeros(n, 1, 32, 32)
    monkeypatch.setattr(nl, 'fashion_fid_images', fid_images)
    def train_or_load(name, cfg, args, results): log.trained.append((name, cfg['epochs'])); return tagged(name)
    monkeypatch.setattr(nl, 'train_or_load', train_or_load)
    def draw(no_t, reg, n, args): log.draws.append((no_t.tag, None if reg is None else reg.tag, n)); return torch.zeros(n, 1, 32, 32), 2.5
    monkeypatch.setattr(nl, 'draw', draw)
    def kid_per_step(no_t, reg, n, ie, args): log.curves.append((no_t.tag, reg.tag, n, ie is log.ie)); return dict(n=n, curves={'a': [0.5, 0.25]})
    monkeypatch.setattr(nl, 'kid_per_step', kid_per_step)
    log.curves = []
    return log


def test_noise_level_main_labels_each_row_by_the_sampler_it_drew(nl, fake_nl, tmp_path):
    "The naive row is drawn without the regressor, the corrected one with it; both from the no-t model, max(n) samples; reals floor at every count; a rerun draws nothing."
    out = tmp_path/'n.json'
    res = nl.main(['--out', str(out), '--n', '16', '64', '--seed', '5'])
    assert fake_nl.draws == [('no_t', None, 64), ('no_t', 'regressor', 64)]
    assert [r['sampler'] for r in res['rows']] == ['naive DDIM (scheduled ᾱ)', "DDIM with the regressor's ᾱ"]
    assert all(r['scores']['64']['n'] == 64 and r['scores']['16']['n'] == 16 and r['seconds'] == 2.5 for r in res['rows'])
    assert fake_nl.reals == [('train', 64, 5)] and res['reals']['16']['n'] == 16 and res['config']['n'] == [64, 16]
    assert fake_nl.trained == [('regressor', 20), ('no_t', 25)]
    assert fake_nl.curves == [('no_t', 'regressor', 64, True)] and res['kid_per_step'] == dict(n=64, curves={'a': [0.5, 0.25]})
    assert 'KID of x0-hat along sampling (64 images, the first batch): a: first 0.5000, highest 0.5000 at step 1, lowest 0.2500 at step 2' in out.with_suffix('.md').read_text()
    res = nl.main(['--out', str(out), '--n', '16', '64', '--seed', '5'])
    assert len(fake_nl.draws) == 2 and len(res['rows']) == 2 and len(fake_nl.reals) == 1 and len(fake_nl.curves) == 1
    with pytest.raises(SystemExit, match='>= 2'): nl.main(['--out', str(tmp_path/'m.json'), '--n', '1'])
