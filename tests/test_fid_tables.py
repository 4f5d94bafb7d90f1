"The FID tables of bench/: one feature network for all of them, and the FID / floor ratio that makes them comparable."
import json, re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1]/'results'


def _feature_hash(d: dict) -> str | None:
    return d.get('feature_model_sha256') or (d.get('classifier') or {}).get('weights_sha256')


def test_fid_results_use_the_feature_network_of_the_floor():
    floor = _feature_hash(json.loads((RESULTS/'fid_floor.json').read_text()))
    assert re.fullmatch('[0-9a-f]{64}', floor)
    for name in ('ddpm_fid.json', 'karras_fid.json', 'unet_fid.json'):
        if (RESULTS/name).exists():
            assert _feature_hash(json.loads((RESULTS/name).read_text())) == floor, f'{name}: another FID classifier than fid_floor.json'


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
