#!/usr/bin/env python
"""Regenerate the README's "Measured results" section from the files in results/ (run after a GPU measurement).

Each results file is rendered as written by its command: its scalar figures as a list, its `rows` (or `runs`)
and each dict of figures as a table, a ready `table_markdown` as is (where there are no `rows`), and the machine
it ran on. A file that does not exist yet is listed as not measured, with the command that produces it.
Usage: python tools/results_tables.py [--check]   (--check: exit 1 if README is stale)
"""
import argparse, json, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = '<!-- results:start -->', '<!-- results:end -->'
SOURCES = [  # (results file, what it measures, the command that writes it)
    ('classifier.json', 'Fashion-MNIST classifier accuracy and images/s', 'python bench/train_classifier.py --epochs 5 20 --out results/classifier.json (--select: choose the recipes again)'),
    ('accel_throughput.json', 'training throughput with/without mixed precision and EMA (--grad: also gradient clipping and accumulation)', 'python bench/bench_accel.py --out results/accel_throughput.json --compile --grad'),
    ('ema_cost.json', 'EMA cost in training images/s (eager, interleaved rounds)', 'python bench/bench_accel.py --out results/ema_cost.json'),
    ('fid_classifier.json', "the FID tables' feature network: notebook 04's 20-epoch classifier, trained again in each GPU lease", 'bash tools/gpu_stage.sh fid_classifier (docs/gpu_runbook.md)'),
    ('fid_floor.json', 'real-image FID/KID floor', 'python bench/fid_floor.py --out results/fid_floor.json'),
    ('data_throughput.json', 'data loading throughput', 'python tools/bench_data.py'),
    ('bench_ddpm.json', 'course-style loop vs miniai, DDIM sampling time', 'python bench/bench_ddpm.py'),
    ('ddpm_fid.json', 'DDPM / DDIM / cosine FID', 'python bench/ddpm_fid.py --work runs/ddpm_fid'),
    ('karras_fid.json', 'Karras samplers FID at equal NFE', 'python bench/karras_fid.py --out results/karras_fid.json'),
    ('noise_level_fid.json', 'diffusion without t: naive DDIM vs the noise-level regressor', 'python bench/noise_level_fid.py --out results/noise_level_fid.json'),
    ('unet_fid.json', 'own UNet vs diffusers, attention, guidance', 'python bench/unet_fid.py --out results/unet_fid.json'),
    ('latent_fid.json', 'latent diffusion FID', 'python bench/latent_fid.py --out results/latent_fid.json'),
    ('audio.json', 'audio diffusion evaluation', 'python bench/audio_eval.py --out results/audio.json'),
    ('ddp_demo.json', 'distributed training demo', 'torchrun --standalone --nproc_per_node=gpu tools/train_ddp_demo.py --full --out runs/ddp --results results/ddp_demo.json'),
]

UNRENDERED = {'run_log'}   # top-level lists left out: which commands wrote the file (each row names its run)


def _fmt(v):
    if isinstance(v, float): return f'{v:,.0f}' if abs(v) >= 1000 else f'{v:.4g}'
    if _short_list(v): return '[' + ', '.join(_fmt(x) for x in v) + ']'
    if isinstance(v, (list, dict)): v = json.dumps(v)[:60]
    return str(v).replace('|', '\\|')   # a key such as 'cosine|ddim|100|2048' stays in one cell


def _short_list(v) -> bool:
    "A list of at most 10 scalars (per-digit accuracies, a [min, max] spread): one cell. Longer lists stay out."
    return isinstance(v, list) and 0 < len(v) <= 10 and not any(isinstance(x, (list, dict)) for x in v)


def _curve(key: str) -> bool:
    "A per-epoch record (`train_loss`, `history`, ...): never a cell, however short (a quick run's would be, a full one's not)."
    return key.endswith(('loss', 'history', 'losses'))


def _flat(row: dict, prefix: str = '') -> dict:
    "A row with its nested dicts spread into columns: {'scores': {'2048': {'fid': 5}}} -> {'scores 2048 fid': 5}."
    out = {}
    for k, v in row.items():
        if isinstance(v, dict): out.update(_flat(v, f'{prefix}{k} '))
        else: out[f'{prefix}{k}'] = v
    return out


def _table(rows: list) -> list[str]:
    rows = [_flat(r) for r in rows if isinstance(r, dict)]
    if not rows: return []
    lists = {k for r in rows for k, v in r.items() if isinstance(v, list)}
    cell = lambda k: k not in lists or (not _curve(k) and all(_short_list(r[k]) for r in rows if isinstance(r.get(k), list)))
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if cell(k)]
    return ['| ' + ' | '.join(keys) + ' |', '|' + '---|'*len(keys)] + \
           ['| ' + ' | '.join(_fmt(r.get(k, '')) for k in keys) + ' |' for r in rows]


# ---- the issues' targets, checked against the measured files ---------------------------------------------------
# The course's figures (../shared/spec/reference_numbers.md; 2,048 samples). An FID depends on the feature network, so
# a target set by one of the course's FIDs is checked as FID / real-image floor (the reals' FID at the same count).
COURSE_FLOORS_2048 = (1.905, 2.574)   # the course's reals at 2,048: 20_DDIM, 23_karras
COURSE_COSINE_BEST = 3.100            # 22_cosine, DDIM-100 (rerun; 3.292 the first time)
COURSE_LMS20 = (5.061, 2.574)         # 23_karras: LMS-20 and its reals, the same notebook
MET, NOT_MET, UNCLEAR, INFO = 'met', 'not met', 'unclear', 'measured (no threshold)'


def _course_ratios(course_fid: float) -> tuple[float, float]:
    "The course's FID over the highest and over the lowest of its floors at 2,048 (low, high)."
    lo, hi = sorted(course_fid/f for f in COURSE_FLOORS_2048)
    return lo, hi


def _ratio_verdict(ratio: float, course_fid: float) -> str:
    "Met if FID / floor beats the course's FID over the highest of its floors, not met if it is worse than over the lowest."
    lo, hi = _course_ratios(course_fid)
    return MET if ratio <= lo else NOT_MET if ratio > hi else UNCLEAR


def _course_ratio(course_fid: float) -> str:
    return '{:.2f} to {:.2f}'.format(*_course_ratios(course_fid))


def _ddpm_rows(d: dict, n: int) -> tuple[dict, float | None]:
    "ddpm_fid's rows at `n` samples by (model, sampler, steps), and its floor at `n`."
    rows = {(r.get('model'), r.get('sampler'), r.get('steps')): r for r in d.get('rows', {}).values() if r.get('n') == n}
    return rows, next((f['fid_mean'] for f in d.get('floor') or [] if f['n'] == n), None)


def _karras_fid(r: dict, n: int) -> float | None:
    s = r.get('scores', {}).get(str(n))
    return s and s['fid']


def t_classifier(epochs: int, goal: float):
    def check(d):
        run = next((r for r in d.get('runs', []) if r.get('epochs') == epochs), None)
        if run is None: return None
        acc = run['test_accuracy']
        return f"{acc:.2%} test accuracy after {epochs} epochs", MET if acc >= goal else NOT_MET
    return check


def t_ema_helps(d):
    "EMA vs raw weights, called a difference only beyond twice the spread of the real-image FID between draws of the same size."
    rows, _ = _ddpm_rows(d, 10_000)
    ema, raw = rows.get(('cosine', 'ddim', 100)), rows.get(('cosine (no EMA)', 'ddim', 100))
    if not (ema and raw): return None
    sd = next((f.get('fid_std') for f in d.get('floor') or [] if f.get('n') == 10_000), None)
    gap = raw['fid'] - ema['fid']
    if sd is None or sd != sd: say = 'the EMA helps' if gap > 0 else 'the EMA does not help'; sd_txt = 'spread between draws unknown'
    else:
        say = 'the EMA helps' if gap > 2*sd else 'the EMA hurts' if gap < -2*sd else 'no difference beyond the spread between draws'
        sd_txt = f"real images' FID varies by {sd:.3f} (std) between draws of 10,000"
    return (f"cosine DDIM-100, 10,000 samples: FID {ema['fid']:.3f} with the EMA weights, {raw['fid']:.3f} with the raw ones; "
            f"{sd_txt}: {say}", INFO)


def t_ema_cost(d):
    cost = d.get('ema_cost_pct_vs_bfloat16', {})
    ips = d.get('images_per_s', {})
    if 'bfloat16 + EMA (foreach)' not in cost: return None
    return (f"bf16 {ips.get('bfloat16', float('nan')):,.0f} images/s; with the EMA (foreach) "
            f"{ips['bfloat16 + EMA (foreach)']:,.0f} ({cost['bfloat16 + EMA (foreach)']:+.1f}% cost); "
            f"per-parameter loop {cost.get('bfloat16 + EMA (Python loop)', float('nan')):+.1f}%", INFO)


def t_speed(d):
    ratios = d.get('ratio_vs_course_style')
    if not ratios: return None
    best = max(ratios, key=ratios.get)
    return ('; '.join(f"{k}: {v:.2f}x" for k, v in ratios.items()), MET if ratios[best] >= 2 else NOT_MET)


def t_cosine(d):
    rows, floor = _ddpm_rows(d, 2048)
    cands = {m: r for (m, smp, st), r in rows.items() if m.startswith('cosine') and 'no EMA' not in m and st == 100}
    if not cands or not floor: return None
    best = min(cands, key=lambda m: cands[m]['fid'])
    ratio = cands[best]['fid']/floor
    txt = '; '.join(f"{m}: FID {r['fid']:.3f}, FID / floor {r['fid']/floor:.2f}" for m, r in cands.items())
    ep = (d.get('models') or {}).get('cosine', {}).get('epochs', d.get('epochs'))
    return (f"{txt} (floor {floor:.3f}; {ep} epochs); the course's 3.1 (25 epochs) is {_course_ratio(COURSE_COSINE_BEST)} over its floors",
            _ratio_verdict(ratio, COURSE_COSINE_BEST))


def _karras_best(d, keep):
    reals = next((r for r in d.get('rows', []) if r['model'] == 'reals'), None)
    floor = reals and _karras_fid(reals, 2048)
    rows = [r for r in d.get('rows', []) if r['model'] != 'reals' and keep(r) and _karras_fid(r, 2048) is not None]
    if not rows or not floor: return None
    best = min(rows, key=lambda r: _karras_fid(r, 2048))
    return best, _karras_fid(best, 2048)/floor, floor


def _name(r) -> str:
    kw = ', '.join(f'{k} {v}' for k, v in (r.get('kwargs') or {}).items())
    return f"{r['model']} {r['sampler']}{f' ({kw})' if kw else ''} {r['steps']} steps, {r['nfe']} NFE"


def t_karras_table(d):
    got = _karras_best(d, lambda r: r['model'].startswith('karras'))
    if not got: return None
    best, ratio, floor = got
    course = COURSE_LMS20[0]/COURSE_LMS20[1]
    ep = (d.get('config') or {}).get('karras', {}).get('epochs')
    return (f"best: {_name(best)}, FID / floor {ratio:.2f} (floor {floor:.3f}; {ep} epochs); the course's LMS-20: 5.06 / 2.57 = {course:.2f}",
            MET if ratio < course else NOT_MET)


def t_karras_20(d):
    got = _karras_best(d, lambda r: r['nfe'] <= 20)
    if not got: return None
    best, ratio, _ = got
    return (f"best at <= 20 NFE: {_name(best)}, FID / floor {ratio:.2f}; the course's 3.1 is {_course_ratio(COURSE_COSINE_BEST)}",
            _ratio_verdict(ratio, COURSE_COSINE_BEST))


def t_noise_level(d):
    reals, rows = (d.get('reals') or {}).get('2048'), {r['sampler']: r for r in d.get('rows', [])}
    if not reals or not rows: return None
    txt = '; '.join(f"{k}: FID {r['scores']['2048']['fid']:.3f} ({r['scores']['2048']['fid']/reals['fid']:.2f} x floor)"
                    for k, r in rows.items() if '2048' in r.get('scores', {}))
    reg = d.get('train', {}).get('regressor', {})
    if 'test_mse' in reg: txt += f"; regressor MSE {reg['test_mse']:.4f} (always 0: {reg.get('constant_0_mse', float('nan')):.3f})"
    return txt + "; the course: 22.3 naive, 3.88 corrected, MSE 0.075", INFO


def t_unets(d):
    reals = (d.get('reals') or {}).get('scores', {}).get('10000')
    rows = [r for r in d.get('rows', []) if '10000' in r.get('scores', {})]
    if not rows or not reals: return None
    return '; '.join(f"{r['model']}: FID {r['scores']['10000']['fid']:.3f} ({r['scores']['10000']['fid']/reals['fid']:.2f} x floor)"
                     for r in rows) + ' (10,000 samples)', INFO


def t_guidance(d):
    rows = [r for r in d.get('guidance', []) if r['scale'] > 1]
    if not rows: return None
    best = max(rows, key=lambda r: r['accuracy']['overall'])
    all_ = ', '.join(f"w={r['scale']:g}: {r['accuracy']['overall']:.1%}" for r in d['guidance'])
    return f"best {best['accuracy']['overall']:.1%} at w={best['scale']:g} ({all_})", MET if best['accuracy']['overall'] >= 0.95 else NOT_MET


def _budget(d) -> str:
    "What a time-capped run says about the epochs it trained (a GPU lease's `--train-minutes`)."
    tb = d.get('time_budget')
    if not tb: return ''
    planned = tb.get('planned', {})
    cut = {k: (tb[k], planned[k]) for k in ('vae_epochs', 'epochs') if k in tb and k in planned and tb[k] < planned[k]}
    return ' **Time-capped: trained ' + ', '.join(f'{k} {a} of {b}' for k, (a, b) in cut.items()) + '.**' if cut else ''


def t_latent(d):
    fids = d.get('fid') or []
    if not fids: return None
    lc = d.get('latent_classifier')
    clf = f"; classifier on latents {lc['test_accuracy']:.1%} (on pixels {lc['pixel_classifier_test_accuracy']:.1%})" if lc else ''
    return '; '.join(f"{r['images']}: FID {r['fid']:.2f}" for r in fids) + f" ({fids[0]['n']} images)" + clf + _budget(d), INFO


def t_audio(d):
    sc = d.get('scores') or {}
    if not sc: return None
    part = lambda k, r: f"{k}: FID {r['fid']:.3g}" + (f", accuracy {r['accuracy']:.1%} (heard {r['accuracy_heard']:.1%})" if 'accuracy' in r else '')
    clf = d.get('classifier', {}).get('test_accuracy')
    return (f"classifier {clf:.1%} on test clips; " if clf is not None else '') + '; '.join(part(k, r) for k, r in sc.items()) + _budget(d), INFO


TARGETS = [  # (issue, what it asks, results file, check(results) -> (measured, verdict) or None if not in the file yet)
    (3, 'classifier >= 93.2% test accuracy in 5 epochs', 'classifier.json', t_classifier(5, 0.932)),
    (3, 'classifier >= 94.5% test accuracy in 20 epochs', 'classifier.json', t_classifier(20, 0.945)),
    (3, 'show when the EMA helps', 'ddpm_fid.json', t_ema_helps),
    (3, "the EMA's cost in training images/s", 'ema_cost.json', t_ema_cost),
    (4, 'miniai >= 2x the training images/s of the course-style loop', 'bench_ddpm.json', t_speed),
    (4, "cosine DDIM-100 at or below the course's 3.1 (2,048 samples; by FID / floor)", 'ddpm_fid.json', t_cosine),
    (5, "beat the course's Karras table (LMS-20: 5.06 over reals 2.57; by FID / floor)", 'karras_fid.json', t_karras_table),
    (5, "at <= 20 NFE, the course's best FID at any NFE (cosine DDIM-100, 3.1; by FID / floor)", 'karras_fid.json', t_karras_20),
    (5, 'noise-level prediction: naive vs corrected DDIM, the regressor', 'noise_level_fid.json', t_noise_level),
    (6, 'EmbUNetModel with and without attention vs diffusers', 'unet_fid.json', t_unets),
    (6, 'class accuracy of guided samples >= 95% (w > 1)', 'unet_fid.json', t_guidance),
    (7, 'VAE reconstructions, latent and pixel diffusion FID', 'latent_fid.json', t_latent),
    (8, "the digit classifier's accuracy on generated clips, FID", 'audio.json', t_audio),
]


def is_quick(d: dict) -> bool:
    "Whether a results file comes from a quick run: `quick` at its top or in its `config` (some benches keep it per network)."
    def find(x): return isinstance(x, dict) and (x.get('quick') is True or any(find(v) for v in x.values()))
    return d.get('quick') is True or find(d.get('config'))


def targets_markdown(results_dir: Path) -> list[str]:
    "The table of the issues' targets: what each results file measured, and whether the target is met."
    out = ['### Targets of the issues', '',
           "Checked by `tools/results_tables.py` from the files below. An FID target set by one of the course's numbers is "
           "checked as FID / floor (the real images' FID at the same sample count, under the same feature network): "
           f"met if it beats the course's over the highest of the course's floors at 2,048 samples ({max(COURSE_FLOORS_2048)}), "
           f"not met if worse than over the lowest ({min(COURSE_FLOORS_2048)}), unclear between; the Karras table's target has "
           f"its own notebook's floor ({COURSE_LMS20[1]}), so met or not. A quick-mode file gives no verdict.", '',
           '| issue | target | measured | verdict |', '|---|---|---|---|']
    for issue, what, name, check in TARGETS:
        path = results_dir/name
        d = json.loads(path.read_text()) if path.exists() else None
        try: got = check(d) if d else None
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:   # a file of another layout: say so, render the rest
            got = (f'cannot read it: {type(e).__name__} {e}', 'unknown')
        measured, verdict = got if got else ('-', f'not measured (`results/{name}`)')
        if d and is_quick(d): verdict = 'quick mode: no verdict'   # (its sample counts are not the target's: often nothing to show)
        out.append(f"| {issue} | {what} | {_fmt(measured)} | {verdict} |")
    return out + ['']


def render(results_dir: Path = REPO/'results') -> str:
    "The markdown of the results section."
    out = [START, '', '## Measured results', '',
           '_Generated by `python tools/results_tables.py` from the files in `results/`; do not edit by hand._', '',
           *targets_markdown(results_dir)]
    for name, what, cmd in SOURCES:
        path = results_dir/name
        out.append(f'### {what} (`results/{name}`)')
        out.append(f'Command: `{cmd}`')
        if not path.exists():
            out += ['', 'Not measured yet.', '']; continue
        d = json.loads(path.read_text())
        env = d.get('environment') or {}
        if env: out += ['', 'Measured on: ' + ', '.join(f'{k} {v}' for k, v in env.items() if v is not None)]
        if is_quick(d): out += ['', '**Quick mode: these figures only show that the command runs.**']
        scalars = {k: v for k, v in d.items() if not isinstance(v, (list, dict)) and k not in ('quick', 'table_markdown')}
        if scalars: out += [''] + [f'- {k}: {_fmt(v)}' for k, v in scalars.items()]
        for key, v in d.items():
            if key == 'environment' or not v: continue
            if key == 'table_markdown':
                if not d.get('rows'): out += ['', v]   # the same figures as `rows`, where both exist
                continue
            if isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):   # {name: {figure: value}}
                out += ['', f'`{key}`:', '', *_table([{'': k, **x} for k, x in v.items()])]
            elif isinstance(v, dict):   # figures, perhaps nested or mixed with counts: one (key, value) row each
                rows = [{key: k, 'value': x} for k, x in _flat(v).items() if not isinstance(x, list) or (_short_list(x) and not _curve(k))]
                out += ['', *_table(rows)]
            elif isinstance(v, list) and key not in UNRENDERED:   # rows of figures (`rows`, `runs`, `fid`, `floor`, ...)
                label = {'rows': None, 'runs': None, 'superseded': 'Replaces these tables, set aside (`bench.benchkit.set_aside`):'}.get(key, f'`{key}`:')
                out += ['', *([label, ''] if label else []), *_table(v)]
        if path.with_suffix('.md').exists(): out += ['', f'The same figures as its script lays them out: [`results/{path.stem}.md`](results/{path.stem}.md).']
        out.append('')
    out.append(END)
    return '\n'.join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write README.md's results section from results/*.json.")
    ap.add_argument('--check', action='store_true', help='only report (exit 1) if the section is stale; write nothing')
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)   # a typo such as --chek is an error, not a rewrite
    readme = REPO/'README.md'
    text = readme.read_text()
    new_section = render()
    if START in text and END in text:
        new = text[:text.index(START)] + new_section + text[text.index(END) + len(END):]
    else: new = text.rstrip('\n') + '\n\n' + new_section + '\n'
    if args.check:
        if new != text: print('README.md results section is stale: run python tools/results_tables.py'); return 1
        return 0
    readme.write_text(new)
    print(f'README.md: results section written from {sum((REPO/"results"/n).exists() for n, *_ in SOURCES)} results file(s)')
    return 0


if __name__ == '__main__': sys.exit(main())
