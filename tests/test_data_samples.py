"The samples shipped in miniai/assets (tools/make_data_samples.py): excerpts of the full files (clothing shrunk to 32x32), reproducible bytes."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import miniai.data as md
from miniai.data import DATA_SAMPLES_MANIFEST, CorruptDataError, sha256_file, shipped_sample
from miniai.images import resize_images

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ['MINIAI_DATA']) if os.environ.get('MINIAI_DATA') else None
FULL = {'clothing64_sample.npz': 'rgb64/clothing64.npz', 'fsdd_sample.npz': 'fsdd/fsdd_v1.0.10.npz'}
needs_full = pytest.mark.skipif(not (DATA and all((DATA/f).is_file() for f in FULL.values())),
                                reason='the full clothing64 and FSDD files are not under $MINIAI_DATA')

def manifest() -> dict: return json.loads((md._sample_dir()/DATA_SAMPLES_MANIFEST).read_text())

def lock_torch() -> str:
    "The torch release pinned in requirements-lock.txt (the one that made the shipped samples)."
    return next(l.split('==')[1].strip() for l in (REPO/'requirements-lock.txt').read_text().splitlines() if l.startswith('torch=='))

# Other torch releases may round a resized value lying on .5 the other way (torch 2.4: 1 value in a million).
SAME_TORCH = torch.__version__.split('+')[0] == lock_torch()

def assert_same_resize(a: np.ndarray, b: np.ndarray):
    "Bit-identical under the lock file's torch; with another torch, at most one level apart in at most 1e-4 of the values."
    assert a.shape == b.shape and a.dtype == b.dtype
    if SAME_TORCH: assert np.array_equal(a, b); return
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max() <= 1 and (d > 0).mean() < 1e-4, (d.max(), (d > 0).sum())

def test_manifest_lists_verified_samples_with_licences():
    man = manifest()
    assert set(man) == set(FULL)
    for f, m in man.items():
        assert shipped_sample(f) == md._sample_dir()/f and sha256_file(md._sample_dir()/f) == m['sha256']
        assert m['n'] == len(m['indices']) and m['licence'] in ('CC0 1.0', 'CC BY-SA 4.0')
    assert (md._sample_dir()/'LICENSE-clothing64.txt').is_file() and 'CC BY-SA 4.0' in (md._sample_dir()/'LICENSE-fsdd.txt').read_text()
    with pytest.raises(ValueError, match='no shipped sample'): shipped_sample('cifar10_sample.npz')

def test_a_damaged_sample_is_refused(tmp_path, monkeypatch):
    d = tmp_path/'assets'; d.mkdir()
    (d/DATA_SAMPLES_MANIFEST).write_text(json.dumps({'fsdd_sample.npz': {'sha256': '0'*64}}))
    (d/'fsdd_sample.npz').write_bytes(b'cut short')
    monkeypatch.setattr(md, '_sample_dir', lambda: d)
    with pytest.raises(CorruptDataError, match='installed miniai is damaged'): shipped_sample('fsdd_sample.npz')

@needs_full
def test_samples_are_exact_excerpts_of_the_full_files():
    man = manifest()
    with np.load(DATA/FULL['clothing64_sample.npz']) as full, np.load(shipped_sample('clothing64_sample.npz')) as s:
        idx = np.array(man['clothing64_sample.npz']['indices'])
        for k in ('labels', 'image_id', 'kids', 'sender_id'): assert np.array_equal(s[k], full[k][idx])
        small = resize_images(torch.from_numpy(full['images'][idx]).permute(0, 3, 1, 2).contiguous(), 32)
        assert s['images'].shape == (len(idx), 32, 32, 3)
        assert_same_resize(s['images'], small.permute(0, 2, 3, 1).numpy())
        assert np.array_equal(s['class_names'], full['class_names'])
    with np.load(DATA/FULL['fsdd_sample.npz']) as full, np.load(shipped_sample('fsdd_sample.npz')) as s:
        idx, off, so = np.array(man['fsdd_sample.npz']['indices']), full['offsets'], s['offsets']
        for k in ('labels', 'speakers', 'take', 'split', 'filenames'): assert np.array_equal(s[k], full[k][idx])
        for j, i in enumerate(idx): assert np.array_equal(s['audio'][so[j]:so[j+1]], full['audio'][off[i]:off[i+1]])

@needs_full
def test_the_tool_remakes_the_same_bytes(tmp_path):
    out = subprocess.run([sys.executable, str(REPO/'tools'/'make_data_samples.py'), str(DATA), '--out', str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    made = json.loads((tmp_path/DATA_SAMPLES_MANIFEST).read_text())
    if SAME_TORCH:
        for f, m in manifest().items(): assert sha256_file(tmp_path/f) == m['sha256']
        assert made == manifest(); return
    # another torch: the same arrays (the resized images within rounding), the same manifest but for that file's hash
    for f in manifest():
        with np.load(tmp_path/f) as a, np.load(md._sample_dir()/f) as b:
            assert set(a.files) == set(b.files)
            for k in a.files:
                if f.startswith('clothing') and k == 'images': assert_same_resize(a[k], b[k])
                else: assert np.array_equal(a[k], b[k]), (f, k)
    drop = lambda man: {f: {k: v for k, v in m.items() if not (f.startswith('clothing') and k == 'sha256')} for f, m in man.items()}
    assert drop(made) == drop(manifest())
