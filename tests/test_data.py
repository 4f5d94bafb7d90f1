"""Tests for miniai.data: finding and checking Fashion-MNIST, the shipped sample, the device loader, DataLoaders.
CPU only, no network (the hub loader is replaced). Tests that need the full set use $MINIAI_DATA and skip if it is absent."""
import gzip, hashlib, os
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
import torch
import miniai.data as md
from miniai.data import (FASHION_CLASSES, FASHION_SHA256, CorruptDataError, DataError, DataLoaders,
                         DeviceImageLoader, MissingDataError, balanced_indices, cached_dataset, fashion_dls,
                         fashion_mnist_arrays, load_fashion_mnist, load_fashion_mnist_sample, read_idx, subplots, write_idx)

DATA = os.environ.get('MINIAI_DATA')
FULL = Path(DATA)/'fashion_mnist' if DATA else None
needs_full = pytest.mark.skipif(not (FULL and all((FULL/n).is_file() for n in FASHION_SHA256)),
                                reason='full Fashion-MNIST not found under $MINIAI_DATA/fashion_mnist')

@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    "Every test: a private cache, and a hub that fails at once like an offline machine (no network is tried)."
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    def offline(*a, **k): raise ConnectionError("Couldn't reach the Hub (test: offline)")
    monkeypatch.setattr(md, '_load_from_hub', offline)
    monkeypatch.setattr(md, '_sample_noted', set())   # the fallback note is printed once per process and data set

def _no_data(monkeypatch): monkeypatch.delenv('MINIAI_DATA', raising=False)

# ---- full data: counts, balance, pixel statistics -------------------------------------------------------------
@needs_full
def test_full_arrays_counts_balance_stats():
    x, y = fashion_mnist_arrays('train')
    assert x.shape == (60_000, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    xf = x.float()/255
    assert abs(xf.mean().item() - 0.2860) < 1e-4 and abs(xf.std().item() - 0.3530) < 1e-4
    xt, yt = fashion_mnist_arrays('test')
    assert xt.shape == (10_000, 28, 28) and torch.equal(torch.bincount(yt), torch.full((10,), 1000))
    # independent check against a plain read of the IDX bytes
    raw = gzip.open(FULL/'t10k-labels-idx1-ubyte.gz').read()
    assert raw[:4] == bytes([0, 0, 8, 1]) and torch.equal(yt, torch.tensor(list(raw[8:]), dtype=torch.int64))

@needs_full
def test_load_fashion_mnist_dataset_dict_and_cache(tmp_path):
    dd = load_fashion_mnist()
    assert {k: len(v) for k, v in dd.items()} == {'train': 60_000, 'test': 10_000}
    assert dd['train'].features['label'].names == FASHION_CLASSES
    x, y = fashion_mnist_arrays('test')
    row = dd['test'][123]
    assert np.array_equal(np.array(row['image']), x[123].numpy()) and row['label'] == y[123].item()
    assert np.bincount(dd['test']['label']).tolist() == [1000]*10
    # everything written went into the cache folder, keyed by the checksums
    entries = list((tmp_path/'cache'/'fashion_mnist').iterdir())
    assert len(entries) == 1 and (entries[0]/'complete.json').is_file()

@needs_full
def test_data_dir_argument_plain_or_with_subfolder(tmp_path, monkeypatch, fashion_link_copy):
    _no_data(monkeypatch)
    d = fashion_link_copy(FULL, tmp_path/'fm')
    for arg in (d, tmp_path/'parent'):
        if arg != d: (tmp_path/'parent').mkdir(); (tmp_path/'parent'/'fashion_mnist').symlink_to(d)
        x, y = fashion_mnist_arrays('test', data_dir=arg)
        assert x.shape == (10_000, 28, 28)

# ---- errors: corrupt and missing copies -----------------------------------------------------------------------
@needs_full
def test_checksum_mismatch_is_one_clear_error(tmp_path, monkeypatch, fashion_link_copy):
    _no_data(monkeypatch)
    d = fashion_link_copy(FULL, tmp_path/'fm', corrupt='t10k-labels-idx1-ubyte.gz')
    for f in (lambda: load_fashion_mnist(d), lambda: fashion_mnist_arrays('train', data_dir=d)):
        with pytest.raises(CorruptDataError) as e: f()
        msg = str(e.value)
        assert str(d/'t10k-labels-idx1-ubyte.gz') in msg and FASHION_SHA256['t10k-labels-idx1-ubyte.gz'] in msg
        assert 'MINIAI_DATA' in msg and 'data_dir' in msg and isinstance(e.value, ValueError)
    assert not (tmp_path/'cache'/'fashion_mnist').exists() or not any((tmp_path/'cache'/'fashion_mnist').iterdir())

def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    "Without `data_dir`: one error naming $MINIAI_DATA's folders, the hub's reason and the ways to provide the data."
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'nowhere'))
    for f in (lambda: load_fashion_mnist(allow_sample=False), lambda: fashion_mnist_arrays('test', allow_sample=False)):
        with pytest.raises(MissingDataError) as e: f()
        msg = str(e.value)
        for p in (tmp_path/'nowhere'/'fashion_mnist', tmp_path/'nowhere'): assert f"{p}:" in msg
        assert 'test: offline' in msg and 'zalando-datasets/fashion_mnist' in msg
        assert 'MINIAI_DATA' in msg and 'data_dir' in msg and 'sample' in msg
        assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataError)
        assert e.value.__cause__ is None and e.value.__suppress_context__   # one error, not a chain

def test_a_data_dir_without_the_files_is_the_only_place_searched(tmp_path, monkeypatch):
    "A `data_dir` that exists but lacks the files is an error naming it: never $MINIAI_DATA's copy, the hub or the sample."
    empty = tmp_path/'empty'; empty.mkdir()
    env = DATA or str(tmp_path/'elsewhere')   # the real copy where there is one: it must still not be used
    monkeypatch.setenv('MINIAI_QUICK', '1')    # quick mode, where the sample fallback is on by default
    monkeypatch.setenv('MINIAI_DATA', env)
    monkeypatch.setattr(md, '_load_from_hub', lambda *a, **k: pytest.fail('the hub must not be tried'))
    for f in (lambda: load_fashion_mnist(empty), lambda: fashion_mnist_arrays('test', data_dir=empty),
              lambda: load_fashion_mnist(empty, allow_sample=True), lambda: fashion_mnist_arrays('test', empty, allow_sample=True),
              lambda: fashion_dls(bs=8, data_dir=empty, limit=(20, 10), device='cpu')):
        with pytest.raises(MissingDataError) as e: f()
        msg = str(e.value)
        for p in (empty, empty/'fashion_mnist'): assert f"{p}:" in msg
        assert 'Nothing else was searched' in msg and 'MINIAI_DATA' in msg and 'data_dir' in msg
        assert env not in msg                                  # no other folder was tried

def test_the_fallback_note_comes_once_per_data_set(monkeypatch, capsys):
    "One note per data set and process: Fashion-MNIST's does not silence the clothing set's, and each names its own."
    monkeypatch.setenv('MINIAI_DATA', '/nowhere')
    md.note_sample_fallback(); md.note_sample_fallback()
    md.note_sample_fallback('clothing64', 'its sample', hub=False)
    out = capsys.readouterr().out.splitlines()
    assert out == ['Note: full Fashion-MNIST not found (no `data_dir`, nothing under $MINIAI_DATA, hub unavailable); '
                   'using the 3,000-image sample shipped with miniai.',
                   'Note: full clothing64 not found (no `data_dir`, nothing under $MINIAI_DATA); using its sample.']
    monkeypatch.delenv('MINIAI_DATA'); md.note_sample_fallback('FSDD', 'its sample', hub=False)
    assert 'MINIAI_DATA unset' in capsys.readouterr().out


def test_default_allow_sample_means_quick_mode(monkeypatch, capsys):
    "`allow_sample=None` (the default) falls back in quick mode only, for the arrays and the DatasetDict alike."
    _no_data(monkeypatch)
    monkeypatch.setenv('MINIAI_QUICK', '1')
    assert len(fashion_mnist_arrays('test')[0]) == 1000 and len(load_fashion_mnist()['train']) == 2000
    assert capsys.readouterr().out.count('Note: full Fashion-MNIST not found') == 1
    monkeypatch.setenv('MINIAI_QUICK', '0')
    for f in (lambda: fashion_mnist_arrays('test'), load_fashion_mnist):
        with pytest.raises(MissingDataError, match='Fashion-MNIST not found'): f()


@needs_full
def test_incomplete_copy_is_reported(tmp_path, monkeypatch, fashion_link_copy):
    _no_data(monkeypatch)
    d = fashion_link_copy(FULL, tmp_path/'fm', drop='train-labels-idx1-ubyte.gz')
    with pytest.raises(MissingDataError, match='missing train-labels-idx1-ubyte.gz'): fashion_mnist_arrays('test', data_dir=d)

def test_read_idx_checks_magic_and_size(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_idx(a, tmp_path/'a.gz')
    assert np.array_equal(read_idx(tmp_path/'a.gz'), a)
    raw = gzip.open(tmp_path/'a.gz').read()
    (tmp_path/'short').write_bytes(raw[:-1])
    (tmp_path/'magic').write_bytes(b'\x00\x00\x0b\x03' + raw[4:])
    (tmp_path/'notgz.gz').write_bytes(raw)
    with pytest.raises(CorruptDataError, match='holds 104 bytes'): read_idx(tmp_path/'short')
    with pytest.raises(CorruptDataError, match='magic'): read_idx(tmp_path/'magic')
    with pytest.raises(CorruptDataError, match='gzip'): read_idx(tmp_path/'notgz.gz')

@pytest.mark.parametrize('what, raw, msg', [
    ('empty file', b'', 'magic'),
    ('header cut inside the magic', bytes([0, 0]), 'magic'),
    ('header cut inside the sizes', bytes([0, 0, 8, 3, 0, 0, 0, 5, 0, 0]), 'header'),
    ('sizes missing', bytes([0, 0, 8, 1]), 'header'),
    ('wrong magic', bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), 'magic'),
    ('not unsigned bytes (float32 type code)', bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4), 'unsigned bytes'),
    ('payload too short', bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 7]), 'holds 2 bytes'),
    ('payload too long', bytes([0, 0, 8, 1, 0, 0, 0, 1, 7, 7]), 'holds 2 bytes'),
    ('sizes overflowing 64 bits', bytes([0, 0, 8, 3]) + b'\xff'*12 + bytes(1), 'holds 1 bytes'),
])
@pytest.mark.parametrize('gz', [False, True])
def test_read_idx_every_malformed_file_is_corrupt_data(tmp_path, what, raw, msg, gz):
    p = tmp_path/('x-idx.gz' if gz else 'x-idx')
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(CorruptDataError, match=msg) as e: read_idx(p)
    assert str(p) in str(e.value), what

def test_cached_dataset_rebuilds_stale_or_broken(tmp_path):
    import datasets
    calls = []
    def build():
        calls.append(1)
        return datasets.DatasetDict({'train': datasets.Dataset.from_dict({'a': [1, 2, 3]})})
    folder = tmp_path/'cache'/'entry'
    for _ in range(2): dd = cached_dataset(folder, build, sizes={'train': 3})
    assert len(calls) == 1 and dd['train']['a'] == [1, 2, 3]
    for f in (folder/'dataset').rglob('*.arrow'): f.write_bytes(b'garbage')   # broken
    assert cached_dataset(folder, build, sizes={'train': 3})['train']['a'] == [1, 2, 3] and len(calls) == 2
    cached_dataset(folder, build, sizes={'train': 4})                          # stale: wrong size
    assert len(calls) == 3
    (folder/'complete.json').unlink()                                          # interrupted: no marker
    cached_dataset(folder, build); assert len(calls) == 4
    assert sorted(p.name for p in folder.parent.iterdir()) == ['entry']       # no temporary folders left

# ---- the shipped sample ---------------------------------------------------------------------------------------
def test_sample_loads_offline_and_is_balanced(monkeypatch):
    _no_data(monkeypatch)
    for split, per in (('train', 200), ('test', 100)):
        x, y = fashion_mnist_arrays(split, sample=True)
        assert x.shape == (10*per, 28, 28) and torch.equal(torch.bincount(y), torch.full((10,), per))
    dd = load_fashion_mnist_sample()
    assert {k: len(v) for k, v in dd.items()} == {'train': 2000, 'test': 1000}
    assert dd['train'].features['label'].names == FASHION_CLASSES
    assert np.array_equal(np.array(dd['test'][5]['image']), fashion_mnist_arrays('test', sample=True)[0][5].numpy())
    size = sum(p.stat().st_size for p in md._sample_dir().glob('fashion_mnist_sample-*'))
    assert size < 2e6 and (md._sample_dir()/'LICENSE-fashion-mnist.txt').is_file()

def test_fallback_to_sample_only_when_allowed(monkeypatch, capsys):
    _no_data(monkeypatch)
    with pytest.raises(MissingDataError): fashion_mnist_arrays('train', allow_sample=False)
    x, y = fashion_mnist_arrays('train', allow_sample=True)
    assert len(x) == 2000 and 'sample' in capsys.readouterr().out
    fashion_mnist_arrays('test', allow_sample=True)
    assert capsys.readouterr().out == ''                     # the note comes once per process, not once per call
    monkeypatch.setattr(md, '_sample_noted', set())
    dls = fashion_dls(bs=100, limit=(500, 200), device='cpu', seed=0)
    assert 'sample' in capsys.readouterr().out
    assert dls.train.dataset_len == 500 and dls.valid.dataset_len == 200
    assert torch.equal(torch.bincount(dls.train.labels), torch.full((10,), 50))
    monkeypatch.delenv('MINIAI_QUICK', raising=False)
    with pytest.raises(MissingDataError): fashion_dls(device='cpu')       # full size: no silent substitution

@needs_full
def test_sample_matches_the_original_files():
    man = md.sample_manifest()
    for split in ('train', 'test'):
        x, y = fashion_mnist_arrays(split)
        xs, ys = fashion_mnist_arrays(split, sample=True)
        idx = torch.tensor(man['indices'][split])
        assert torch.equal(x[idx], xs) and torch.equal(y[idx], ys)
        assert torch.equal(idx, balanced_indices(y, len(idx), 10))   # the documented selection rule

# ---- the device loader ----------------------------------------------------------------------------------------
def _toy(n=10, h=28, w=28):
    x = torch.randint(0, 256, (n, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n) % 10

def test_padding_and_range():
    x, y = _toy()
    x[0] = 255; x[1] = 0
    for lo, hi in ((-1., 1.), (0., 1.)):
        xb, yb = next(iter(DeviceImageLoader(x, y, bs=10, pad=2, value_range=(lo, hi), device='cpu')))
        assert xb.shape == (10, 1, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
        inner = xb[:, 0, 2:-2, 2:-2]
        torch.testing.assert_close(inner, x.float()/255*(hi - lo) + lo)   # independent computation
        border = torch.ones(32, 32, dtype=torch.bool); border[2:-2, 2:-2] = False
        assert (xb[:, 0][:, border] == lo).all()                          # background padding
        assert inner[0].eq(hi).all() and inner[1].eq(lo).all()

def test_shapes_rgb_and_channels_last():
    x = torch.randint(0, 256, (6, 8, 9, 3), dtype=torch.uint8)
    xb, = next(iter(DeviceImageLoader(x, None, bs=4, pad=1, value_range=(0., 1.), device='cpu', channels_last_input=True)))
    assert xb.shape == (4, 3, 10, 11)
    torch.testing.assert_close(xb[:, :, 1:-1, 1:-1], x[:4].permute(0, 3, 1, 2).float()/255)
    dl = DeviceImageLoader(x.permute(0, 3, 1, 2), torch.zeros(6, dtype=torch.int32), bs=4, device='cpu')
    assert [len(b[0]) for b in dl] == [4, 2] and len(dl) == 2 and next(iter(dl))[1].dtype == torch.int64
    assert repr(dl) == ('DeviceImageLoader(6 images (3, 8, 9) on cpu, bs=4, shuffle=False, pad=0, value_range=(-1.0, 1.0), '
                        '2 batches)')
    assert len(DeviceImageLoader(x, None, bs=4, drop_last=True, device='cpu', channels_last_input=True)) == 1

@pytest.mark.parametrize('kw, err, msg', [
    (dict(images=torch.rand(4, 28, 28)), TypeError, 'uint8'),
    (dict(labels=torch.zeros(3, dtype=torch.long)), ValueError, 'shape (4,)'),
    (dict(labels=torch.zeros(4)), TypeError, 'integers'),
    (dict(bs=0), ValueError, 'bs'),
    (dict(bs=2.5), ValueError, 'bs'),
    (dict(pad=-1), ValueError, 'pad'),
    (dict(value_range=(1., 1.)), ValueError, 'value_range'),
    (dict(images=torch.zeros(4, 28, 28, 3, dtype=torch.uint8)), ValueError, 'channels_last_input'),
    (dict(images=torch.zeros(4, 28, dtype=torch.uint8)), ValueError, '(N,H,W)'),
])
def test_loader_argument_errors(kw, err, msg):
    args = dict(images=torch.zeros(4, 28, 28, dtype=torch.uint8), labels=None, bs=2, device='cpu') | kw
    with pytest.raises(err, match=msg.replace('(', r'\(').replace(')', r'\)')): DeviceImageLoader(**args)

@pytest.mark.parametrize('n, bs, drop_last', [(1000, 128, False), (1000, 128, True), (64, 64, False)])
def test_shuffle_covers_every_index_once_per_epoch(n, bs, drop_last):
    ids = torch.arange(n)
    dl = DeviceImageLoader(torch.zeros(n, 1, 1, dtype=torch.uint8), ids, bs=bs, shuffle=True, drop_last=drop_last, seed=3, device='cpu')
    epochs = [torch.cat([yb for _, yb in dl]) for _ in range(3)]
    for e in epochs:
        want = n - n % bs if drop_last else n
        assert len(e) == want and len(e.unique()) == want and len(list(dl)) == len(dl)
        if not drop_last: assert torch.equal(e.sort().values, ids)
    assert not torch.equal(epochs[0], epochs[1])                         # a new order each epoch
    same = DeviceImageLoader(torch.zeros(n, 1, 1, dtype=torch.uint8), ids, bs=bs, shuffle=True, drop_last=drop_last, seed=3, device='cpu')
    assert torch.equal(torch.cat([yb for _, yb in same]), epochs[0])     # seeded: repeatable
    plain = DeviceImageLoader(torch.zeros(n, 1, 1, dtype=torch.uint8), ids, bs=bs, drop_last=drop_last, device='cpu')
    assert torch.equal(torch.cat([yb for _, yb in plain]), ids[:len(epochs[0])])

def test_exact_resume_between_and_within_epochs():
    ids = torch.arange(103)
    mk = lambda: DeviceImageLoader(torch.zeros(103, 1, 1, dtype=torch.uint8), ids, bs=10, shuffle=True, seed=7, device='cpu')
    ref = mk(); ref_epochs = [[yb for _, yb in ref] for _ in range(3)]
    # between epochs: save after epoch 0, restore into a fresh loader with another seed
    a = mk(); list(a); sd = a.state_dict()
    b = DeviceImageLoader(torch.zeros(103, 1, 1, dtype=torch.uint8), ids, bs=10, shuffle=True, seed=999, device='cpu')
    b.load_state_dict(sd)
    assert all(torch.equal(u, v) for u, v in zip([yb for _, yb in b], ref_epochs[1]))
    # within an epoch: save after 4 batches of epoch 1 (iterator still running), resume elsewhere
    c = mk(); list(c); it = iter(c)
    for _ in range(4): next(it)
    sd = c.state_dict(); del it
    d = mk(); d.load_state_dict(sd)
    rest = [yb for _, yb in d]
    assert len(rest) == 7 and all(torch.equal(u, v) for u, v in zip(rest, ref_epochs[1][4:]))
    assert all(torch.equal(u, v) for u, v in zip([yb for _, yb in d], ref_epochs[2]))   # and then the next epoch
    # an abandoned epoch (peek) counts as over
    e = mk(); next(iter(e)); assert e.state_dict()['batches_done'] == 0

def test_state_dict_right_after_load_keeps_the_mid_epoch_position():
    "A checkpoint taken after `load_state_dict` but before the resumed epoch starts must not lose the position."
    ids = torch.arange(103)
    mk = lambda seed=7: DeviceImageLoader(torch.zeros(103, 1, 1, dtype=torch.uint8), ids, bs=10, shuffle=True, seed=seed, device='cpu')
    ref = mk(); ref_epochs = [[yb for _, yb in ref] for _ in range(2)]
    a = mk(); list(a); it = iter(a)
    for _ in range(4): next(it)
    sd = a.state_dict(); del it
    b = mk(seed=999); b.load_state_dict(sd)
    sd2 = b.state_dict()                                           # nothing iterated yet
    assert sd2['batches_done'] == sd['batches_done'] == 4 and torch.equal(sd2['generator'], sd['generator'])
    assert b.state_dict()['batches_done'] == 4                     # asking twice changes nothing
    iter(b)                                                        # an iterator never started is not an epoch
    c = mk(seed=123); c.load_state_dict(sd2)                       # a checkpoint of the checkpoint
    for dl in (b, c):
        rest = [yb for _, yb in dl]
        assert len(rest) == 7 and all(torch.equal(u, v) for u, v in zip(rest, ref_epochs[1][4:]))
        assert dl.state_dict()['batches_done'] == 0                # after the resumed epoch: between epochs

def test_fashion_dls_sample_shapes_and_balance(monkeypatch):
    _no_data(monkeypatch)
    dls = fashion_dls(bs=64, sample=True, device='cpu', seed=1, limit=(300, 100))
    xb, yb = next(iter(dls.train))
    assert xb.shape == (64, 1, 32, 32) and -1 <= xb.min() and xb.max() <= 1 and xb.min() == -1
    assert torch.equal(torch.bincount(dls.valid.labels), torch.full((10,), 10))
    assert dls.train.shuffle and not dls.valid.shuffle

@pytest.mark.parametrize('kw, n, msg', [
    (dict(limit=(2001, 100)), (2000, 100), 'n_train=2001 .* training split of the shipped sample has only 2000: using all 2000'),
    (dict(limit=(100, 1001)), (100, 1000), 'n_test=1001 .* test split of the shipped sample has only 1000'),
    (dict(limit=1500), (1500, 1000), 'n_test=1500 .* has only 1000'),
    (dict(limit=(1600, None), holdout=500), (1500, 500), r'n_train=1600 .*\(after holding out 500\) has only 1500'),
    (dict(limit=(None, 501), holdout=500), (1500, 500), 'n_test=501 .* held-out .* has only 500'),
])
def test_fashion_dls_limit_beyond_the_split_warns(monkeypatch, kw, n, msg):
    "A `limit` larger than the split takes all of it, never silently: a warning names the split and its size."
    _no_data(monkeypatch)
    with pytest.warns(UserWarning, match=msg) as rec: dls = fashion_dls(bs=64, sample=True, device='cpu', **kw)
    assert (dls.train.dataset_len, dls.valid.dataset_len) == n and len(rec) == 1
    assert rec[0].filename == __file__                                       # points at the caller of fashion_dls

def test_fashion_dls_limit_within_the_split_is_quiet(monkeypatch, recwarn):
    _no_data(monkeypatch)
    dls = fashion_dls(bs=64, sample=True, device='cpu', limit=(2000, 1000))   # exactly the split: all of it
    assert (dls.train.dataset_len, dls.valid.dataset_len) == (2000, 1000)
    assert not [w for w in recwarn if 'limit' in str(w.message)]

def test_balanced_indices():
    y = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2, 2])
    assert balanced_indices(y, 3).tolist() == [0, 1, 2]
    assert balanced_indices(y, 7).tolist() == [0, 1, 2, 3, 4, 5, 6]   # quotas 3, 2, 2: the first ones of each class
    with pytest.raises(ValueError, match='exceeds'): balanced_indices(y, 12)
    assert balanced_indices(y, 0).tolist() == [] and balanced_indices(y.numpy().astype(np.uint8), np.int64(3)).tolist() == [0, 1, 2]

@pytest.mark.parametrize('args, err, msg', [
    ((torch.tensor([0, 1, 1]), -5), ValueError, '`n` must be >= 0'),
    ((torch.tensor([0, 1, 1]), 3.0), TypeError, '`n` must be an int'),
    ((torch.tensor([0, 1, 1]), True), TypeError, '`n` must be an int'),
    ((torch.tensor([0, 1, 2]), 2, 2), ValueError, r'labels must be in \[0, 2\)'),
    ((torch.tensor([0, -1, 1]), 2), ValueError, r'labels must be in \[0, 2\)'),
    ((torch.tensor([0., 1.]), 1), TypeError, 'integers'),
    ((np.array([0.5, 1.0]), 1), TypeError, 'integers'),
    ((torch.tensor([[0, 1]]), 1), ValueError, 'one label per item'),
    ((torch.tensor([0, 1]), 1, 0), ValueError, '`n_classes` must be'),
    ((torch.tensor([0, 1]), 1, 2.0), TypeError, '`n_classes` must be'),
])
def test_balanced_indices_rejects_bad_arguments(args, err, msg):
    with pytest.raises(err, match=msg): balanced_indices(*args)

# ---- DataLoaders over Hugging Face data sets ------------------------------------------------------------------
def test_dataloaders_from_dd_tiny():
    import datasets
    from PIL import Image
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (10, 5, 6), dtype=np.uint8)
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=list('abc'))})
    mk = lambda s: datasets.Dataset.from_dict({'image': [Image.fromarray(a) for a in ims[s]], 'label': [i % 3 for i in range(10)][s]}, features=feats)
    dd = datasets.DatasetDict({'train': mk(slice(0, 7)), 'test': mk(slice(7, 10))})
    dls = DataLoaders.from_dd(dd, bs=4)
    batches = list(dls.valid)
    assert [len(b[0]) for b in batches] == [3]
    xb, yb = batches[0]
    assert xb.dtype == torch.uint8 and torch.equal(xb, torch.from_numpy(ims[7:10])) and yb.tolist() == [1, 2, 0]
    torch.manual_seed(0)
    seen = torch.cat([yb for _, yb in dls.train])
    assert sorted(seen.tolist()) == sorted([i % 3 for i in range(7)])
    with pytest.raises(KeyError, match='valid'): DataLoaders.from_dd(datasets.DatasetDict({'train': dd['train']}), bs=2)

# ---- the hub path (replaced by the sample: no network) and pictures ---------------------------------------------
def test_hub_path_when_no_local_copy(monkeypatch):
    _no_data(monkeypatch)
    dd = load_fashion_mnist_sample()
    monkeypatch.setattr(md, '_load_from_hub', lambda *a, **k: dd)
    assert load_fashion_mnist() is dd
    x, y = fashion_mnist_arrays('test')
    xs, ys = fashion_mnist_arrays('test', sample=True)
    assert torch.equal(x, xs) and torch.equal(y, ys) and x.dtype == torch.uint8 and y.dtype == torch.int64

def test_show_images_grid_and_ranges():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from miniai.data import show_image, show_images
    x, y = fashion_mnist_arrays('test', sample=True)
    titles = [FASHION_CLASSES[i] for i in y[:5]]
    axs = show_images(x[:5].float()/127.5 - 1, ncols=3, titles=titles)     # [-1, 1] floats, (N,H,W)
    assert axs.shape == (2, 3) and [a.get_title() for a in axs.flat][:5] == titles
    np.testing.assert_allclose(axs[0, 0].images[0].get_array(), x[0].numpy()/255, atol=1e-6)
    assert not axs[1, 2].images                                            # the unused cell stays empty
    rgb = torch.rand(3, 8, 9)
    ax = show_image(rgb, title='rgb')                                      # (C,H,W) in [0, 1]
    np.testing.assert_allclose(ax.images[0].get_array(), rgb.permute(1, 2, 0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match='titles'): show_images(x[:2], titles=['a'])
    plt.close('all')

def _items(dl):
    "Each (image, label) of a loader as a hashable key: the SHA-256 of the whole image's bytes, and the label."
    return [(hashlib.sha256(im.cpu().numpy().tobytes()).hexdigest(), int(l)) for im, l in zip(dl.images, dl.labels)]

def test_items_compare_whole_images():
    "The check below must see a mix-up that per-pixel sorting cannot: two images swapping one pixel."
    x, y = _toy()
    mixed = x.clone(); mixed[0, 0, 0], mixed[1, 0, 0] = x[1, 0, 0], x[0, 0, 0]
    assert x[0, 0, 0] != x[1, 0, 0] and torch.equal(mixed.flatten(1).sort(0).values, x.flatten(1).sort(0).values)
    mk = lambda im: DeviceImageLoader(im, y, device='cpu')
    assert Counter(_items(mk(mixed))) != Counter(_items(mk(x)))

def test_fashion_dls_holdout_is_a_fixed_disjoint_split(monkeypatch):
    _no_data(monkeypatch)
    full = fashion_dls(bs=64, sample=True, device='cpu')
    a, b = (fashion_dls(bs=64, sample=True, device='cpu', holdout=500, seed=s) for s in (1, 2))
    n = full.train.dataset_len
    assert (a.train.dataset_len, a.valid.dataset_len) == (n - 500, 500)
    assert torch.equal(a.valid.images, b.valid.images)             # the same split whatever the shuffle seed
    # whole images (with their labels): kept + held out are exactly the training set, each image once (a partition) ...
    train, held, everything = _items(a.train), _items(a.valid), _items(full.train)
    assert len(set(everything)) == n                               # (the sample has no duplicate images)
    assert Counter(train) + Counter(held) == Counter(everything)
    assert not set(train) & set(held)                              # ... so no held-out image is also trained on
    assert not {h for h, _ in held} & {h for h, _ in _items(full.valid)}   # and none is a test image
    with pytest.raises(ValueError, match='leaves no training images'): fashion_dls(sample=True, device='cpu', holdout=n)
    with pytest.raises(ValueError, match='`holdout` must be'): fashion_dls(sample=True, device='cpu', holdout=-1)

# ---- added by mutation testing: properties the tests above did not pin down ------------------------------------
def test_read_idx_edge_headers(tmp_path):
    "A valid empty payload reads; the second magic byte is checked; a size that wraps in 64 bits is still exact."
    write_idx(np.zeros((0,), dtype=np.uint8), tmp_path/'empty.gz')
    assert read_idx(tmp_path/'empty.gz').shape == (0,)
    (tmp_path/'m1').write_bytes(bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(CorruptDataError, match='magic'): read_idx(tmp_path/'m1')
    (tmp_path/'wrap').write_bytes(bytes([0, 0, 8, 4]) + bytes([0, 1, 0, 0])*4)   # 65536**4 == 2**64 (0 mod 2**64), no payload
    with pytest.raises(CorruptDataError, match='holds 0 bytes'): read_idx(tmp_path/'wrap')

def test_data_dir_replaces_miniai_data(tmp_path, monkeypatch):
    "A given `data_dir` is searched alone; $MINIAI_DATA (the root, then the folder itself) only without one."
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'env'))
    assert md.fashion_mnist_dirs(tmp_path/'a') == [tmp_path/'a', tmp_path/'a'/'fashion_mnist']
    assert md.fashion_mnist_dirs() == [tmp_path/'env'/'fashion_mnist', tmp_path/'env']

@needs_full
def test_miniai_data_may_name_the_fashion_mnist_folder_itself(tmp_path, monkeypatch, fashion_link_copy):
    "`MINIAI_DATA=.../fashion_mnist` (the folder itself, an easy slip) is found too, not only its parent."
    folder = fashion_link_copy(FULL, tmp_path/'fashion_mnist')
    monkeypatch.setenv('MINIAI_DATA', str(folder))
    assert md.find_fashion_mnist()[0] == folder


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallthrough(tmp_path, monkeypatch):
    "A mistyped `data_dir` (or --data-dir) must not silently use $MINIAI_DATA's copy instead."
    monkeypatch.setenv('MINIAI_DATA', '/work/does/not/matter')
    monkeypatch.setenv('MINIAI_QUICK', '1')    # quick mode, where the sample fallback is on by default
    with pytest.raises(MissingDataError, match='is not a folder; nothing else was searched'):
        md.fashion_mnist_arrays('test', tmp_path/'typo')
    with pytest.raises(MissingDataError, match='--data-dir'): md.find_fashion_mnist(tmp_path/'typo')

def test_check_arrays_rejects_wrong_image_shape_or_labels(tmp_path):
    "A verified split with images not (N,28,28) or a label above 9 is reported as corrupt."
    x, y = np.zeros((10_000, 28, 28), np.uint8), np.full(10_000, 9)
    md._check_arrays(x, y, 'test', tmp_path)                              # a good split passes
    for bx, by in ((np.zeros((10_000, 28, 27), np.uint8), y), (np.zeros((10_000, 784), np.uint8), y), (x, np.full(10_000, 10))):
        with pytest.raises(CorruptDataError, match='test split'): md._check_arrays(bx, by, 'test', tmp_path)

def _ids_loader(seed=7, n=103):
    return DeviceImageLoader(torch.zeros(n, 1, 1, dtype=torch.uint8), torch.arange(n), bs=10, shuffle=True, seed=seed, device='cpu')

def test_checkpoint_within_a_resumed_epoch_counts_all_batches():
    "Resume at batch 4, take 2 more, checkpoint: it says 6 batches done and resumes at batch 6 of the same epoch."
    ref = _ids_loader(); ref_epochs = [[yb for _, yb in ref] for _ in range(2)]
    a = _ids_loader(); list(a); it = iter(a)
    for _ in range(4): next(it)
    sd = a.state_dict(); del it
    b = _ids_loader(seed=999); b.load_state_dict(sd); it = iter(b)
    assert torch.equal(next(it)[1], ref_epochs[1][4]) and torch.equal(next(it)[1], ref_epochs[1][5])
    sd2 = b.state_dict(); del it
    assert sd2['batches_done'] == 6
    c = _ids_loader(seed=1); c.load_state_dict(sd2)
    rest = [yb for _, yb in c]
    assert len(rest) == 5 and all(torch.equal(u, v) for u, v in zip(rest, ref_epochs[1][6:]))

def test_load_state_dict_mid_epoch_replaces_the_running_epoch():
    "Loading a checkpoint while an epoch is running: the next `state_dict` is the loaded one, not the running epoch's."
    src = _ids_loader(); it = iter(src)
    for _ in range(3): next(it)
    sd = src.state_dict(); del it
    a = _ids_loader(seed=5); it = iter(a); next(it)
    a.load_state_dict(sd)
    got = a.state_dict()
    assert got['batches_done'] == 3 and torch.equal(got['generator'], sd['generator'])

def test_abandoning_an_old_iterator_keeps_the_new_epochs_position():
    "Closing a stale iterator after a newer epoch started must not reset the newer epoch's position."
    dl = _ids_loader()
    it1 = iter(dl); next(it1)
    it2 = iter(dl); next(it2); next(it2)
    it1.close()
    assert dl.state_dict()['batches_done'] == 2
    it2.close()
    assert dl.state_dict()['batches_done'] == 0

@pytest.mark.parametrize('kw, err, msg', [
    (dict(value_range=(0., float('inf'))), ValueError, 'value_range'),
    (dict(value_range=(float('nan'), 1.)), ValueError, 'value_range'),
    (dict(images=torch.zeros(0, 28, 28, dtype=torch.uint8)), ValueError, 'empty'),
    (dict(pad=1.5), ValueError, 'pad'),
])
def test_loader_more_argument_errors(kw, err, msg):
    args = dict(images=torch.zeros(4, 28, 28, dtype=torch.uint8), labels=None, bs=2, device='cpu') | kw
    with pytest.raises(err, match=msg): DeviceImageLoader(**args)

def test_fashion_dls_quick_mode_falls_back_to_the_sample(monkeypatch, capsys):
    "In quick mode, with the full set nowhere, `fashion_dls()` uses the shipped sample (with a note) instead of failing."
    _no_data(monkeypatch); monkeypatch.setenv('MINIAI_QUICK', '1')
    dls = fashion_dls(bs=500, device='cpu')
    assert (dls.train.dataset_len, dls.valid.dataset_len) == (2000, 1000) and 'sample' in capsys.readouterr().out

def test_fashion_dls_limit_equal_to_an_unbalanced_split_takes_it_all(monkeypatch, recwarn):
    "A limit equal to the held-out split's size takes it whole, even when its classes are not balanced."
    _no_data(monkeypatch)
    dls = fashion_dls(bs=64, sample=True, device='cpu', holdout=500, limit=(1500, 500))
    assert (dls.train.dataset_len, dls.valid.dataset_len) == (1500, 500)
    assert len(set(torch.bincount(dls.valid.labels, minlength=10).tolist())) > 1   # really unbalanced
    assert not [w for w in recwarn if 'limit' in str(w.message)]

def test_fashion_dls_seed_fixes_the_training_order(monkeypatch):
    _no_data(monkeypatch)
    first = lambda seed: next(iter(fashion_dls(bs=64, sample=True, device='cpu', seed=seed, limit=(300, 100)).train))[1]
    assert torch.equal(first(3), first(3)) and not torch.equal(first(3), first(4))

def test_arrays_to_dataset_non_square_and_label_range():
    "Non-square images keep their (H, W) orientation; a label equal to the number of classes is refused."
    from miniai.data import arrays_to_dataset
    g = np.random.default_rng(1)
    grey, rgb = g.integers(0, 256, (2, 3, 5), dtype=np.uint8), g.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    for ims in (grey, rgb):
        ds = arrays_to_dataset(ims, np.array([0, 9]))
        assert np.array_equal(np.array(ds[1]['image']), ims[1]) and ds['label'] == [0, 9]
    with pytest.raises(ValueError, match='labels'): arrays_to_dataset(grey, np.array([0, 10]))

def test_show_images_default_grid_shared_range_and_clipping():
    "Default grid is ceil(sqrt(n)) columns; the float range is decided once for the batch; out-of-range pixels clip."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from miniai.data import show_image, show_images
    a, b = torch.full((4, 4), -1.), torch.full((4, 4), 0.5)     # b alone would read as [0, 1]; with a, as [-1, 1]
    axs = show_images([a, b, b, b, b])
    assert axs.shape == (2, 3)
    np.testing.assert_allclose(axs[0, 1].images[0].get_array(), np.full((4, 4), 0.75))
    ax = show_image(torch.tensor([[-3., 0.5, 2.]]), value_range=(0., 1.))
    np.testing.assert_allclose(ax.images[0].get_array(), [[0., 0.5, 1.]])
    plt.close('all')

def test_dataloaders_from_dd_shuffles_only_train():
    import datasets
    from torch.utils.data import RandomSampler, SequentialSampler
    ds = datasets.Dataset.from_dict({'a': list(range(6))})
    dls = DataLoaders.from_dd(datasets.DatasetDict({'train': ds, 'validation': ds}), bs=2)
    assert isinstance(dls.train.sampler, RandomSampler) and isinstance(dls.valid.sampler, SequentialSampler)

# ---- miniai.core (device, seeding, quick mode, atomic_write, ...) ------------------------------------------------
import random
import miniai.core as core

@pytest.fixture
def auto_device(monkeypatch):
    "No override, no $MINIAI_DEVICE: the automatic choice."
    monkeypatch.setattr(core, '_device_override', None); monkeypatch.delenv('MINIAI_DEVICE', raising=False)

def test_default_device_prefers_cuda_then_mps_then_cpu(auto_device, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    assert core.default_device() == torch.device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert core.default_device() == torch.device('mps')
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    assert core.default_device() == torch.device('cpu')

def test_set_default_device_beats_the_environment(auto_device, monkeypatch):
    monkeypatch.setenv('MINIAI_DEVICE', 'meta')
    assert core.default_device() == torch.device('meta')
    core.set_default_device('cpu')
    d = core.default_device()
    assert isinstance(d, torch.device) and d == torch.device('cpu')
    core.set_default_device(None)
    assert core.default_device() == torch.device('meta')

def test_to_device_and_to_cpu_keep_nesting():
    x = torch.ones(2, requires_grad=True)
    moved = core.to_device({'a': (x, [x]), 'n': 3}, 'meta')
    assert isinstance(moved['a'], tuple) and isinstance(moved['a'][1], list) and moved['n'] == 3
    assert moved['a'][0].device.type == 'meta' and moved['a'][1][0].device.type == 'meta'
    back = core.to_cpu({'h': (x.half()*2,), 'b': [x.bfloat16()], 'i': torch.arange(3)})
    assert isinstance(back['h'], tuple) and back['h'][0].dtype == torch.float32 and back['b'][0].dtype == torch.float32
    assert not back['h'][0].requires_grad and back['i'].dtype == torch.int64


def test_to_device_and_to_cpu_rebuild_namedtuples():
    "A namedtuple batch (what PyTorch's default collate makes of namedtuple items) keeps its type and fields."
    from collections import namedtuple
    Pair = namedtuple('Pair', 'x y')
    moved = core.to_device(Pair(torch.ones(2), [torch.zeros(1)]), 'meta')
    assert type(moved) is Pair and moved.x.device.type == 'meta' and moved.y[0].device.type == 'meta'
    back = core.to_cpu(Pair(torch.ones(2, dtype=torch.bfloat16), 'label'))
    assert type(back) is Pair and back.x.dtype == torch.float32 and back.y == 'label'
    doubled = core.map_tensors(lambda t: t*2, {'p': Pair(torch.ones(1), 3), 'l': [torch.ones(1)]})
    assert type(doubled['p']) is Pair and doubled['p'].x.item() == 2 and doubled['p'].y == 3 and doubled['l'][0].item() == 2

def test_set_seed_seeds_python_numpy_and_torch():
    draw = lambda: (random.random(), np.random.rand(), torch.rand(1).item())
    core.set_seed(123); a = draw()
    core.set_seed(123); b = draw()
    core.set_seed(124); c = draw()
    assert a == b and all(u != v for u, v in zip(a, c))

@pytest.mark.parametrize('val, want', [('1', True), (' Yes ', True), ('TRUE', True), ('on', True), ('0', False), ('no', False), ('', False)])
def test_is_quick_and_quick(monkeypatch, val, want):
    monkeypatch.setenv('MINIAI_QUICK', val)
    assert core.is_quick() is want and core.quick('full', 'small') == ('small' if want else 'full')

def test_cache_dir_creates_folders_and_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('MINIAI_CACHE', '~/c')
    p = core.cache_dir('x', 'y')
    assert p == tmp_path/'c'/'x'/'y' and p.is_dir()

def test_atomic_write_replaces_only_on_success(tmp_path, monkeypatch):
    "New parent folders are made; a failed block leaves the old file and no temporary; data is synced before the rename."
    p = tmp_path/'new'/'sub'/'f.txt'
    synced = []
    real_fsync = os.fsync
    def fsync(fd): synced.append(p.read_text() if p.exists() else None); real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with core.atomic_write(p) as tmp: tmp.write_text('one')
    assert p.read_text() == 'one' and synced == [None]        # at fsync time the target was not yet replaced
    with pytest.raises(RuntimeError):
        with core.atomic_write(p) as tmp: tmp.write_text('two'); raise RuntimeError('boom')
    assert p.read_text() == 'one' and sorted(q.name for q in p.parent.iterdir()) == ['f.txt']

def test_eval_mode_turns_gradients_off_by_default():
    m = torch.nn.Linear(2, 2)
    with core.eval_mode(m): assert not m.training and not torch.is_grad_enabled()
    assert m.training and torch.is_grad_enabled()

def test_hub_offline_reason_accepts_true_spellings(monkeypatch):
    monkeypatch.setattr(core, 'hub_unreachable', lambda: None)
    for v in ('true', ' YES', 'on', '1'):
        monkeypatch.setenv('HF_HUB_OFFLINE', v); assert core.hub_offline_reason() == 'HF_HUB_OFFLINE is set'
    monkeypatch.setenv('HF_HUB_OFFLINE', '0'); assert core.hub_offline_reason() is None

def test_hub_offline_sets_and_restores_the_flags(monkeypatch):
    "Inside the block both libraries are offline (every offline flag this `datasets` has); afterwards each flag has its old value back."
    import datasets, huggingface_hub.constants as hc
    flags = [(hc, 'HF_HUB_OFFLINE')] + [(datasets.config, f) for f in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE') if hasattr(datasets.config, f)]
    assert len(flags) >= 2   # datasets has at least one of them
    old = [object() for _ in flags]   # a different old value for each flag: each must get its own back
    for (mod, f), v in zip(flags, old): monkeypatch.setattr(mod, f, v)
    with core.hub_offline():
        assert all(getattr(mod, f) is True for mod, f in flags)
        with core.hub_offline(): assert all(getattr(mod, f) is True for mod, f in flags)
        assert all(getattr(mod, f) is True for mod, f in flags)   # the inner block restores the outer one's values
    assert all(getattr(mod, f) is v for (mod, f), v in zip(flags, old))

def test_check_finite_and_check_shape():
    x = torch.zeros(3, 4); x[1, 2] = float('nan'); x[0, 0] = float('inf')
    with pytest.raises(ValueError, match=r'`w` contains 2 non-finite'): core.check_finite(x, 'w')
    core.check_finite(torch.zeros(3)); core.check_finite(torch.arange(3))
    core.check_shape(torch.zeros(2, 3), (None, 3))
    for bad in ((None,), (None, 3, 1), (2, 4)):
        with pytest.raises(ValueError, match=r'`x` must have shape'): core.check_shape(torch.zeros(2, 3), bad, 'x')

def test_run_environment_records_a_shared_gpu(monkeypatch):
    monkeypatch.setenv('MINIAI_GPU_SHARED', '3 jobs')
    env = core.run_environment()
    assert env['gpu_shared_with'] == '3 jobs' and env['torch'] == torch.__version__ and env['device'] == str(core.default_device())
    monkeypatch.delenv('MINIAI_GPU_SHARED')
    assert 'gpu_shared_with' not in core.run_environment()


# ---------------------------------------------------------------- properties a mutation review found unpinned

@pytest.mark.parametrize('n', [17, 33])
def test_device_loader_keeps_a_one_item_last_batch(n):
    "Without `drop_last`, a last batch of a single item is still served: no item silently lost."
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    dl = DeviceImageLoader(x, torch.arange(n), bs=16, device='cpu')
    sizes = [len(yb) for _, yb in dl]
    assert sizes[-1] == 1 and sum(sizes) == n and len(sizes) == len(dl)


def test_write_idx_is_byte_reproducible(tmp_path, monkeypatch):
    "The gzip header holds mtime 0, so the same array written at another time gives the same bytes."
    import time
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    md.write_idx(arr, tmp_path/'a.gz')
    monkeypatch.setattr(time, 'time', lambda: 1.7e9)
    md.write_idx(arr, tmp_path/'b.gz')
    a = (tmp_path/'a.gz').read_bytes()
    assert a == (tmp_path/'b.gz').read_bytes() and a[4:8] == bytes(4)
    assert np.array_equal(md.read_idx(tmp_path/'a.gz'), arr)


@needs_full
def test_load_fashion_mnist_checks_the_cached_split_sizes(monkeypatch):
    "The HF-format cache is opened with the known split sizes, so a damaged or foreign entry is rebuilt, not served."
    seen = {}
    monkeypatch.setattr(md, 'cached_dataset', lambda path, build, **kw: seen.update(kw))
    md.load_fashion_mnist(FULL)
    assert seen['sizes'] == md.FASHION_SIZES and set(md.FASHION_SIZES.values()) == {60000, 10000}


def test_loader_refuses_channels_last_rgba():
    "An RGBA batch laid out (N, H, W, 4) is refused without `channels_last_input`, not read as 4-pixel-wide images."
    with pytest.raises(ValueError, match='channels-last'): DeviceImageLoader(np.zeros((2, 8, 8, 4), np.uint8), None, device='cpu')
    assert DeviceImageLoader(np.zeros((2, 8, 8, 4), np.uint8), None, device='cpu', channels_last_input=True).shape == (4, 8, 8)


def test_image_to_hwc_layouts_and_default_range():
    "_image_to_hwc turns (1,H,W) and (H,W,1) greys into (H,W), takes RGBA either way round, and reads floats with min 0 as [0, 1]."
    from miniai.data import _image_to_hwc
    g = torch.tensor([[0., 0.5], [1., 0.25]])
    for im in (g[None], g[..., None]):
        np.testing.assert_allclose(_image_to_hwc(im), g.numpy())                 # min 0: [0, 1], unchanged
    assert _image_to_hwc(torch.zeros(6, 5, 4)).shape == (6, 5, 4)               # RGBA, channels last
    assert _image_to_hwc(torch.zeros(4, 4, 5)).shape == (4, 5, 4)               # RGBA, channels first
    np.testing.assert_allclose(_image_to_hwc(torch.tensor([[-1., 1.]])), [[0., 1.]])   # a negative value: [-1, 1]


def test_subplots_sets_the_figure_title():
    "`subplots(suptitle=...)` titles the figure; without it the figure has no title."
    import matplotlib.pyplot as plt
    fig, axs = subplots(1, 2, suptitle='two panels')
    assert [t.get_text() for t in fig.texts] == ['two panels'] and axs.shape == (1, 2)   # Figure.get_suptitle: matplotlib 3.8+
    fig2, _ = subplots()
    assert fig2.texts == []
    plt.close(fig); plt.close(fig2)


@pytest.mark.parametrize('dtype', [torch.int32, torch.uint8, torch.int16])
def test_device_image_loader_yields_int64_labels(dtype):
    "Integer labels of any width come out of the loader as int64 (what `F.cross_entropy` needs)."
    dl = DeviceImageLoader(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, 3], dtype=dtype), bs=4, device='cpu')
    (batch,) = list(dl)
    assert batch[1].dtype == torch.int64 and batch[1].tolist() == [0, 1, 2, 3]


def test_balanced_indices_of_a_single_labelled_item():
    "One label is a valid label set (n=1 picks it); an empty one is refused."
    assert balanced_indices(torch.tensor([0]), 1).tolist() == [0]
    with pytest.raises(ValueError, match='must be 1-D, one label per item'): balanced_indices(torch.tensor([], dtype=torch.long), 0)


def test_verify_files_names_a_missing_file(tmp_path):
    "A file of `expected` that is absent is a CorruptDataError naming it, like a wrong checksum (not a bare FileNotFoundError)."
    (tmp_path/'a').write_bytes(b'x')
    good = {'a': hashlib.sha256(b'x').hexdigest()}
    md.verify_files(tmp_path, good)
    with pytest.raises(CorruptDataError, match=r"b is missing.*incomplete"): md.verify_files(tmp_path, {**good, 'b': '0'*64})
    with pytest.raises(CorruptDataError, match='SHA-256 is'): md.verify_files(tmp_path, {'a': '0'*64})
