"tools/results_tables.py: the README's results section is generated from results/ and kept in sync."
import json
import pytest


@pytest.fixture
def rt(load_script):
    "tools/results_tables.py as a module (loaded when a test asks for it, not when pytest collects this file)."
    return load_script('tools/results_tables.py')


def test_readme_results_section_is_current(rt):
    assert rt.main(['--check']) == 0, 'run: python tools/results_tables.py'


def test_render_shows_rows_environment_and_missing_files(rt, tmp_path):
    (tmp_path/'karras_fid.json').write_text(json.dumps(dict(
        environment=dict(device='cuda', gpu='H100'), epochs=25,
        rows=[dict(sampler='euler', steps=100, fid=5.2), dict(sampler='heun', steps=20, fid=4.9)])))
    md = rt.render(tmp_path)
    assert 'Measured on: device cuda, gpu H100' in md and '- epochs: 25' in md
    assert '| sampler | steps | fid |' in md and '| heun | 20 | 4.9 |' in md
    assert md.count('Not measured yet.') == len(rt.SOURCES) - 1


def test_render_shows_dicts_of_figures_as_tables(rt, tmp_path):
    (tmp_path/'bench_ddpm.json').write_text(json.dumps(dict(
        train_images_per_s={'course-style': 4412.3, 'miniai': 12549.6},
        throughput={'float32': dict(images_per_s=48537, autocast=False), 'bf16': dict(images_per_s=51420, autocast=True)},
        table_markdown='| a |\n|---|\n| 1 |')))
    md = rt.render(tmp_path)
    assert '| train_images_per_s | value |' in md and '| miniai | 12,550 |' in md and '| course-style | 4,412 |' in md
    assert '|  | images_per_s | autocast |' in md and '| bf16 | 51420 | True |' in md
    assert '| a |\n|---|\n| 1 |' in md   # a ready table is kept where the file has no rows


def test_render_spreads_nested_scores_into_columns_and_keeps_pipes_in_their_cell(rt, tmp_path):
    "karras/unet/noise_level rows keep their FIDs in `scores` by sample count; ddpm_fid's row keys contain '|'."
    (tmp_path/'karras_fid.json').write_text(json.dumps(dict(rows=[
        dict(model='karras', sampler='heun', steps=20, nfe=39, kwargs={}, scores={'10000': dict(fid=4.25, kid=0.003, n=10000)}),
        dict(model='karras', sampler='euler_ancestral', steps=40, nfe=40, kwargs={'eta': 0.5}, scores={'10000': dict(fid=5.5, kid=0.004, n=10000)})])))
    (tmp_path/'karras_fid.md').write_text('# table\n')
    (tmp_path/'ddpm_fid.json').write_text(json.dumps(dict(
        rows={'cosine|ddim|100|2048': dict(model='cosine', fid=3.5)},
        floor=[dict(n=2048, fid_mean=0.6, fids=[0.6, 0.6])])))
    md = rt.render(tmp_path)
    assert '| model | sampler | steps | nfe | scores 10000 fid | scores 10000 kid | scores 10000 n | kwargs eta |' in md
    assert '| karras | heun | 20 | 39 | 4.25 | 0.003 | 10000 |  |' in md and '| 5.5 | 0.004 | 10000 | 0.5 |' in md
    assert '| cosine\\|ddim\\|100\\|2048 | cosine | 3.5 |' in md
    assert '`floor`:\n\n| n | fid_mean | fids |\n|---|---|---|\n| 2048 | 0.6 | [0.6, 0.6] |' in md   # the single draws, in one cell
    assert '[`results/karras_fid.md`](results/karras_fid.md)' in md and '[`results/ddpm_fid.md`]' not in md


def test_render_lists_the_tables_a_table_replaced(rt, tmp_path):
    "A table that set an older one aside (another feature network or configuration) says which, and why."
    (tmp_path/'unet_fid.json').write_text(json.dumps(dict(rows=[dict(model='cond', fid=3.)], superseded=[
        dict(file='results/superseded/unet_fid-20270101T000000Z.json', reason='another FID feature network', feature_model_sha256='ab'*32)])))
    md = rt.render(tmp_path)
    assert 'Replaces these tables, set aside' in md and '| file | reason | feature_model_sha256 |' in md
    assert '| results/superseded/unet_fid-20270101T000000Z.json | another FID feature network |' in md


def _targets(rt, tmp_path, files: dict) -> dict:
    "The targets table for `files` ({name: json}) as {target text: (measured, verdict)}."
    for name, d in files.items(): (tmp_path/name).write_text(json.dumps(d))
    rows = [l.split(' | ') for l in rt.targets_markdown(tmp_path) if l.startswith('| ') and not l.startswith('| issue')]
    return {r[1]: (r[2], r[3].rstrip(' |')) for r in rows}


def _ddpm(cos, course, floor, ema=None, raw=None, sd=0.5, epochs=25):
    row = lambda m, fid, n, steps=100: (f'{m}|ddim|{steps}|{n}', dict(model=m, sampler='ddim', steps=steps, n=n, fid=fid))
    rows = dict([row('cosine', cos, 2048), row('cosine (course x0 clamp 1.5)', course, 2048), row('cosine (no EMA)', 1., 2048),
                 row('linear', 0.5, 2048), row('cosine', 1., 2048, steps=50)] +   # neither the raw weights, linear nor DDIM-50 count
                ([row('cosine', ema, 10_000), row('cosine (no EMA)', raw, 10_000)] if ema else []))
    return dict(quick=False, rows=rows, models=dict(cosine=dict(epochs=epochs)),
                floor=[dict(n=10_000, fid_mean=1., fid_std=sd), dict(n=2048, fid_mean=floor, fid_std=2.)])   # (the 2,048 floor second)


COS = "cosine DDIM-100 at or below the course's 3.1 (2,048 samples; by FID / floor)"


def test_targets_cosine_fid_is_judged_by_fid_over_floor_against_the_courses_range(rt, tmp_path):
    "3.1 over the course's floors (1.905, 2.574) is 1.204 to 1.627: met at or below, not met above, unclear between; the best cosine DDIM-100 row counts."
    verdict = lambda *a: _targets(rt, tmp_path, {'ddpm_fid.json': _ddpm(*a)})[COS][1]
    assert verdict(35., 40., 30.) == 'met'                 # 1.17
    assert verdict(40., 35., 30.) == 'met'                 # the course-clamp row is the better one
    assert verdict(40., 45., 30.) == 'unclear'             # 1.33
    assert verdict(49.5, 50., 30.) == 'not met'            # 1.65
    assert verdict(3.1, 9., 2.574) == 'met' and verdict(3.1 + 1e-6, 9., 2.574) == 'unclear'   # the boundaries
    assert verdict(3.1, 9., 1.905) == 'unclear' and verdict(3.1 + 1e-6, 9., 1.905) == 'not met'
    measured = _targets(rt, tmp_path, {'ddpm_fid.json': _ddpm(35., 40., 30., epochs=12)})[COS][0]
    assert 'cosine: FID 35.000, FID / floor 1.17' in measured and '(floor 30.000; 12 epochs)' in measured


def test_targets_ema_is_called_helping_only_beyond_the_spread_between_draws(rt, tmp_path):
    ema = lambda e, r, sd=0.5: _targets(rt, tmp_path, {'ddpm_fid.json': _ddpm(35., 40., 30., ema=e, raw=r, sd=sd)})['show when the EMA helps']
    assert ema(3., 4.1) == ("cosine DDIM-100, 10,000 samples: FID 3.000 with the EMA weights, 4.100 with the raw ones; real images' "
                            "FID varies by 0.500 (std) between draws of 10,000: the EMA helps", 'measured (no threshold)')
    assert ema(3., 3.9)[0].endswith('no difference beyond the spread between draws')   # a gap of 0.9 < 2 x 0.5
    assert ema(4.1, 3.)[0].endswith('the EMA hurts') and ema(3.9, 3.)[0].endswith('no difference beyond the spread between draws')
    assert ema(3., 3.1, sd=float('nan'))[0].endswith('spread between draws unknown: the EMA helps')


def test_targets_of_a_quick_file_give_no_verdict_even_without_the_targets_sample_counts(rt, tmp_path):
    "A quick run scores 64 and 32 samples, not 2,048: its targets say 'quick mode', not 'not measured'."
    rows = {f'cosine|ddim|10|{n}': dict(model='cosine', sampler='ddim', steps=10, n=n, fid=9.) for n in (64, 32)}
    got = _targets(rt, tmp_path, {'ddpm_fid.json': dict(quick=True, epochs=1, rows=rows, floor=[dict(n=64, fid_mean=2.)]),
                                  'karras_fid.json': dict(config=dict(n=[32, 16], karras=dict(quick=True)), rows=[])})
    assert got[COS] == ('-', 'quick mode: no verdict') and got['show when the EMA helps'] == ('-', 'quick mode: no verdict')
    assert got["beat the course's Karras table (LMS-20: 5.06 over reals 2.57; by FID / floor)"] == ('-', 'quick mode: no verdict')


def test_targets_karras_and_guidance_and_speed(rt, tmp_path):
    kr = lambda model, sampler, steps, nfe, fid, **kw: dict(model=model, sampler=sampler, steps=steps, nfe=nfe, kwargs=kw,
                                                             scores={'2048': dict(fid=fid)})
    karras = dict(config=dict(karras=dict(quick=False)), rows=[kr('reals', 'train images', 0, 0, 30.), kr('karras', 'heun', 50, 99, 48.),
                  kr('karras', 'lms', 20, 20, 50.), kr('cosine', 'ddim', 100, 99, 30., eta=1.)])
    guid = dict(config=dict(train=dict(quick=False)), guidance=[dict(scale=s, accuracy=dict(overall=a)) for s, a in ((0., .6), (1., .97), (2., .95), (3., .94))])
    got = _targets(rt, tmp_path, {'karras_fid.json': karras, 'unet_fid.json': guid,
                                  'bench_ddpm.json': dict(quick=False, ratio_vs_course_style={'eager': 1.2, 'compiled': 2.1})})
    table = got["beat the course's Karras table (LMS-20: 5.06 over reals 2.57; by FID / floor)"]
    assert table[1] == 'met' and 'karras heun 50 steps, 99 NFE, FID / floor 1.60' in table[0]   # the cosine row is not the Karras table's
    low = got["at <= 20 NFE, the course's best FID at any NFE (cosine DDIM-100, 3.1; by FID / floor)"]
    assert low[1] == 'not met' and 'karras lms 20 steps, 20 NFE, FID / floor 1.67' in low[0]
    assert got['class accuracy of guided samples >= 95% (w > 1)'][1] == 'met'   # w=2; w=1 (plain conditional) does not count
    guid['guidance'][2]['accuracy']['overall'] = .949
    assert _targets(rt, tmp_path, {'unet_fid.json': guid})['class accuracy of guided samples >= 95% (w > 1)'][1] == 'not met'
    assert got['miniai >= 2x the training images/s of the course-style loop'] == ('eager: 1.20x; compiled: 2.10x', 'met')
    speed = lambda r: _targets(rt, tmp_path, {'bench_ddpm.json': dict(ratio_vs_course_style={'a': r})})['miniai >= 2x the training images/s of the course-style loop'][1]
    assert speed(2.0) == 'met' and speed(1.99) == 'not met'
    tab = lambda fid: _targets(rt, tmp_path, {'karras_fid.json': dict(karras, rows=[kr('reals', 'train images', 0, 0, 2.574), kr('karras', 'lms', 20, 20, fid)])})[
        "beat the course's Karras table (LMS-20: 5.06 over reals 2.57; by FID / floor)"][1]
    assert tab(5.06) == 'met' and tab(5.061) == 'not met'   # beat: strictly below the course's 5.061 / 2.574


def test_targets_not_measured_quick_and_time_capped(rt, tmp_path):
    "A missing file is 'not measured'; a quick file gets no verdict; a time-capped run says how many epochs it trained."
    latent = dict(quick=False, time_budget=dict(planned=dict(vae_epochs=100, epochs=200), vae_epochs=40, epochs=80),
                  fid=[dict(images='latent diffusion samples', n=810, fid=12.5)])
    got = _targets(rt, tmp_path, {'latent_fid.json': latent, 'karras_fid.json': dict(config=dict(karras=dict(quick=True)),
                   rows=[dict(model='reals', scores={'32': dict(fid=2.)}), dict(model='karras', sampler='lms', steps=2, nfe=2, kwargs={}, scores={'32': dict(fid=2.)})])})
    lat = got['VAE reconstructions, latent and pixel diffusion FID']
    assert 'latent diffusion samples: FID 12.50 (810 images)' in lat[0] and '**Time-capped: trained vae_epochs 40 of 100, epochs 80 of 200.**' in lat[0]
    latent['time_budget'].update(vae_epochs=100, epochs=200)   # the configured epochs fitted: no mark
    assert 'Time-capped' not in _targets(rt, tmp_path, {'latent_fid.json': latent})['VAE reconstructions, latent and pixel diffusion FID'][0]
    latent['latent_classifier'] = dict(test_accuracy=0.5125, pixel_classifier_test_accuracy=0.75)
    assert ('(810 images); classifier on latents 51.2% (on pixels 75.0%)'
            in _targets(rt, tmp_path, {'latent_fid.json': latent})['VAE reconstructions, latent and pixel diffusion FID'][0])
    assert got["beat the course's Karras table (LMS-20: 5.06 over reals 2.57; by FID / floor)"][1] == 'quick mode: no verdict'
    assert got['EmbUNetModel with and without attention vs diffusers'] == ('-', 'not measured (`results/unet_fid.json`)')
    assert len(got) == len(rt.TARGETS)


def test_render_shows_every_list_of_rows_and_mixed_dicts(rt, tmp_path):
    "latent_fid's `fid` rows, audio's per-digit accuracies and its `round_trip` (figures beside a count) reach the README."
    (tmp_path/'latent_fid.json').write_text(json.dumps(dict(fid=[dict(images='latent diffusion samples', n=810, fid=12.5)],
                                                            run_log=[dict(command='x')])))
    (tmp_path/'audio.json').write_text(json.dumps(dict(round_trip={'32 GL iterations': dict(lsd_db=5.4), 'n_clips': 300},
                                                       scores={'w=3': dict(fid=2.5, per_digit_heard=[1., 0.5])})))
    md = rt.render(tmp_path)
    assert '`fid`:\n\n| images | n | fid |\n|---|---|---|\n| latent diffusion samples | 810 | 12.5 |' in md and '`run_log`' not in md
    assert '| round_trip | value |\n|---|---|\n| 32 GL iterations lsd_db | 5.4 |\n| n_clips | 300 |' in md
    assert '|  | fid | per_digit_heard |\n|---|---|---|\n| w=3 | 2.5 | [1, 0.5] |' in md
    (tmp_path/'ddpm_fid.json').write_text(json.dumps(dict(models=dict(a=dict(epochs=1, train_loss=[0.5]), b=dict(epochs=25, train_loss=[0.5]*25)),
                                                          floor=[dict(n=1, fids=[1., 2.]), dict(n=2, fids=[1.]*11)])))
    md = rt.render(tmp_path)   # a loss curve is never a cell, a list is one only if short in every row
    assert '`models`:\n\n|  | epochs |\n|---|---|\n| a | 1 |\n| b | 25 |' in md and '`floor`:\n\n| n |\n|---|\n| 1 |\n| 2 |' in md


def test_targets_of_a_file_of_another_layout_say_so_and_the_rest_renders(rt, tmp_path):
    got = _targets(rt, tmp_path, {'bench_ddpm.json': dict(ratio_vs_course_style={'eager': 'fast'}),
                                  'classifier.json': dict(runs=[dict(epochs=5, test_accuracy=0.94)])})
    measured, verdict = got['miniai >= 2x the training images/s of the course-style loop']
    assert verdict == 'unknown' and measured.startswith('cannot read it: ValueError')
    assert got['classifier >= 93.2% test accuracy in 5 epochs'] == ('94.00% test accuracy after 5 epochs', 'met')


def test_an_unknown_option_is_refused_not_taken_as_a_rewrite(rt, capsys):
    "`--chek` (a typo of --check) used to rewrite README.md and exit 0."
    with pytest.raises(SystemExit) as e: rt.main(['--chek'])
    assert e.value.code == 2 and 'unrecognized arguments: --chek' in capsys.readouterr().err
