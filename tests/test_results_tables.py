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
    assert '`floor`:\n\n| n | fid_mean |\n|---|---|\n| 2048 | 0.6 |' in md   # the lists of single draws stay out
    assert '[`results/karras_fid.md`](results/karras_fid.md)' in md and '[`results/ddpm_fid.md`]' not in md


def test_render_lists_the_tables_a_table_replaced(rt, tmp_path):
    "A table that set an older one aside (another feature network or configuration) says which, and why."
    (tmp_path/'unet_fid.json').write_text(json.dumps(dict(rows=[dict(model='cond', fid=3.)], superseded=[
        dict(file='results/superseded/unet_fid-20270101T000000Z.json', reason='another FID feature network', feature_model_sha256='ab'*32)])))
    md = rt.render(tmp_path)
    assert 'Replaces these tables, set aside' in md and '| file | reason | feature_model_sha256 |' in md
    assert '| results/superseded/unet_fid-20270101T000000Z.json | another FID feature network |' in md
