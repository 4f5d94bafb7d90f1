"Properties of miniai.core, miniai.cli and miniai.distributed that a hand-made mutation check found unpinned by the other tests."
import os
import stat
from pathlib import Path
import pytest
import torch
from torch import nn
from safetensors.torch import load_file
from miniai.cli import balanced_labels, sampler_nfe, save_trained, trained_config
from miniai.core import atomic_write, check_finite, eval_mode, remove_stale_tmp, set_seed
from miniai.data import DeviceImageLoader
from miniai.distributed import ShardedLoader, load_samples, save_samples


# ---------------------------------------------------------------- core

def test_eval_mode_restores_each_submodules_own_flag():
    "After the block a training model gets back a submodule that was in eval mode, still in eval mode."
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    m.train(); m[1].eval(); m[2][0].eval()
    before = [mod.training for mod in m.modules()]
    with eval_mode(m): assert not any(mod.training for mod in m.modules())
    assert [mod.training for mod in m.modules()] == before == [True, True, False, True, False]


def test_eval_mode_keeps_gradients_when_asked():
    "With no_grad=False the model is in eval mode but gradients flow inside the block."
    m = nn.Linear(2, 1)
    with eval_mode(m, no_grad=False):
        assert not m.training and torch.is_grad_enabled()
        m(torch.ones(1, 2)).sum().backward()
    assert m.weight.grad is not None and torch.equal(m.weight.grad, torch.ones(1, 2))


def test_set_seed_seeds_torch_with_the_seed_itself():
    "set_seed(s) leaves torch's generator exactly as torch.manual_seed(s) does, for large seeds too."
    for s in (0, 1000, 12345, 2**40 + 7):
        torch.manual_seed(s); want = torch.rand(4)
        set_seed(s); assert torch.equal(torch.rand(4), want)


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    "Rewriting an existing file keeps its permission bits (here 0o664), whatever the umask."
    p = tmp_path/'f.txt'
    p.write_text('old'); os.chmod(p, 0o664)
    with atomic_write(p) as tmp: tmp.write_text('new')
    assert p.read_text() == 'new' and stat.S_IMODE(p.stat().st_mode) == 0o664


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads the umask from Linux /proc')
def test_new_file_mode_reads_the_umask_without_setting_it(tmp_path, monkeypatch):
    "The umask is read from /proc, never set and restored: meanwhile another thread's new files would get mode 0o666."
    import miniai.core as core
    old = os.umask(0o027)
    try:
        def no_umask(mask): raise AssertionError(f'os.umask({mask:#o}) called')
        monkeypatch.setattr(core.os, 'umask', no_umask)
        assert core._umask() == 0o027 and core._file_mode(tmp_path/'new.txt') == 0o640
        with atomic_write(tmp_path/'new.txt') as tmp: tmp.touch(mode=0o600)   # a writer that makes its file private
        assert stat.S_IMODE((tmp_path/'new.txt').stat().st_mode) == 0o640      # as `open` would have made it
    finally:
        monkeypatch.undo(); os.umask(old)


def test_atomic_write_threads_writing_one_file_take_turns(tmp_path):
    "Two threads rewriting one file share its temporary name: each write completes whole, none fails, no temporary is left."
    import threading, time
    p, errors = tmp_path/'f.bin', []
    def writer(byte: bytes):
        try:
            for _ in range(8):
                with atomic_write(p) as tmp:
                    with open(tmp, 'wb') as f:
                        f.write(byte*1000); f.flush(); time.sleep(0.005); f.write(byte*1000)
                assert p.read_bytes() in (b'a'*2000, b'b'*2000)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=writer, args=(b,)) for b in (b'a', b'b')]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and p.read_bytes() in (b'a'*2000, b'b'*2000) and [f.name for f in tmp_path.iterdir()] == ['f.bin']
    import miniai.core as core
    assert not core._writing   # the per-file locks are dropped once no thread writes


def test_check_finite_refuses_inf_without_nan():
    "An infinite value alone (no NaN) is refused, with the count of bad values."
    for bad in (float('inf'), float('-inf')):
        x = torch.zeros(4); x[2] = bad
        with pytest.raises(ValueError, match='1 non-finite'): check_finite(x, 'x')


# ---------------------------------------------------------------- cli

def test_balanced_labels_cycle_through_the_classes():
    "Labels go 0, 1, ..., n_classes-1 and start again: image i gets class i % n_classes."
    assert balanced_labels(20).tolist() == list(range(10))*2
    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match='n_classes'): balanced_labels(5, 0)


# ---------------------------------------------------------------- distributed

@pytest.mark.parametrize('dtype', [torch.int64, torch.uint8, torch.float64, torch.float32])
def test_save_samples_keeps_the_dtype_of_a_tensor(tmp_path, dtype):
    "Only half precision is widened: integer and float32/float64 tensors come back with their own dtype and values."
    x = (torch.arange(6)*7).reshape(2, 3).to(dtype)
    y = load_samples(save_samples(tmp_path/'s.npy', x))
    assert y.dtype == dtype and torch.equal(y, x)


def test_remove_stale_tmp_keeps_files_of_writers_it_may_not_signal(tmp_path, monkeypatch):
    "A writer whose pid exists but cannot be signalled (another user's process) is alive: its temporary file stays."
    target = tmp_path/'samples.npy'
    tmp = tmp_path/'.samples.npy.999999.tmp'; tmp.write_bytes(b'x')
    def kill(pid, sig): raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(os, 'kill', kill)
    assert remove_stale_tmp(target) == [] and tmp.exists()


def test_remove_stale_tmp_reads_the_name_literally(tmp_path):
    "Brackets in the target's name are not a glob pattern: its own stale file goes, another target's ('a1.pt') stays."
    own, other = tmp_path/'.a[1].pt.999999.tmp', tmp_path/'.a1.pt.999998.tmp'
    own.write_bytes(b'x'); other.write_bytes(b'y')
    assert remove_stale_tmp(tmp_path/'a[1].pt') == [own] and not own.exists() and other.exists()


def test_sampler_nfe_counts_and_refusals():
    "Evaluations per image: DDIM steps (one fewer on the cosine grid, which ends at t=0), every DDPM step, twice with guidance."
    assert sampler_nfe('linear', 'ddim', 50) == 50 and sampler_nfe('cosine', 'ddim', 100) == 99
    assert sampler_nfe('linear', 'ddpm', 7, quick=True) == 100 and sampler_nfe('linear', 'ddpm', 7) == 1000
    assert sampler_nfe('linear', 'ddim', 50, guidance=3.) == 100 and sampler_nfe('linear', 'ddim', 50, guidance=0.) == 50
    with pytest.raises(ValueError, match="samples with 'ddim'"): sampler_nfe('cosine', 'ddpm', 10)
    with pytest.raises(ValueError, match="`method` must be 'ddim' or 'ddpm'"): sampler_nfe('linear', 'euler', 10)
    with pytest.raises(ValueError, match='`schedule` must be one of'): sampler_nfe('karras', 'ddim', 10)


def test_save_trained_keeps_buffers_and_the_config(tmp_path):
    "The weights file holds the whole state dict (buffers such as running statistics too) and the config, read back as saved."
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m[1].running_mean.fill_(0.25); m[1].num_batches_tracked.fill_(5)
    cfg = dict(schedule='cosine', quick=True, unet=dict(channels=[4, 8]), n_classes=None)
    path = save_trained(m, tmp_path/'model.safetensors', cfg)
    sd = load_file(str(path))
    assert set(sd) == set(m.state_dict()) and all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert trained_config(tmp_path) == cfg


def test_sharded_loader_never_yields_an_empty_batch():
    "A last global batch too small to give each rank an item is dropped: 13 items, 4 ranks of 3 make one step of 3 items each."
    ims = torch.arange(13, dtype=torch.uint8).reshape(13, 1, 1, 1).expand(13, 1, 2, 2).contiguous()
    for rank in range(4):
        sl = ShardedLoader(DeviceImageLoader(ims, torch.arange(13), bs=3, shuffle=True, seed=0, device='cpu'), rank, 4)
        sizes = [len(b[1]) for b in sl]
        assert len(sl) == 1 and sizes == [3] and sl.left_out == 1


def test_atomic_write_gives_a_new_file_the_mode_open_would(tmp_path):
    "A file created by `atomic_write` gets the permission bits a plain `open` gives a new file (0o666 less the umask)."
    old = os.umask(0o022)
    try:
        with open(tmp_path/'plain', 'w') as f: f.write('x')
        with atomic_write(tmp_path/'atomic') as tmp: tmp.write_text('x')
    finally: os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path/'atomic') == mode(tmp_path/'plain') == 0o644
