"Properties of the training and evaluation core that a hand-made mutation check found unpinned by the other tests."
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from types import SimpleNamespace as NS
import miniai.fid as fid
from miniai.accel import EMA, CheckpointCB, load_checkpoint, read_checkpoint, save_checkpoint
from miniai.data import DeviceImageLoader
from miniai.fid import ImageEval, fashion_fid_images, kid_from_feats, real_image_floor
from miniai.learner import Learner, OneCycleCB, RecorderCB, TrainCB


def line_learner(n=60, bs=20, cbs=()):
    "A 1-D linear regression learner on plain lists of batches (3 training batches per epoch)."
    torch.manual_seed(0)
    x = torch.randn(n, 1); y = 3*x - 1
    batches = [(x[i:i+bs], y[i:i+bs]) for i in range(0, n, bs)]
    return Learner(nn.Linear(1, 1), NS(train=batches, valid=batches[:1]), F.mse_loss, lr=0.05, cbs=[TrainCB(), *cbs])


# ---------------------------------------------------------------- fid

def test_kid_subsets_are_equal_sized_fresh_draws_without_replacement(monkeypatch):
    "Each KID subset takes min(subset_size, n_a, n_b) distinct rows from each set, redrawn for every subset."
    seen = []
    def spy(x, y, y_within=None):
        seen.append((x[:, 0].tolist(), y[:, 0].tolist()))
        return torch.zeros((), dtype=torch.float64)
    monkeypatch.setattr(fid, 'mmd2_unbiased', spy)
    a = torch.arange(20.)[:, None].repeat(1, 3)            # row i holds i: rows are identifiable
    b = 100 + torch.arange(6.)[:, None].repeat(1, 3)
    kid_from_feats(a, b, n_subsets=4, subset_size=1000)
    assert len(seen) == 4
    assert all(len(xa) == len(yb) == 6 for xa, yb in seen)                    # capped at the smaller set, for both sets
    assert all(len(set(xa)) == 6 and set(xa) <= set(range(20)) for xa, _ in seen)   # no replacement
    assert len({tuple(sorted(xa)) for xa, _ in seen}) > 1                      # a fresh subset of `a` per draw


def test_real_image_floor_draws_are_independent_random_sets():
    "The n_draws real-image sets of one size differ, so their FIDs differ and the std is their sample std."
    torch.manual_seed(0)
    model = nn.Conv2d(1, 4, 8, stride=8)                    # 32x32 -> 4x4x4 = 64 features
    ie = ImageEval(model, fashion_fid_images('test', n=64), bs=64)
    (row,) = real_image_floor(ie, sizes=(16,), n_draws=3, progress=False)
    assert len(set(row['fids'])) == 3 and len(set(row['kids'])) == 3
    assert row['fid_std'] == pytest.approx(np.std(row['fids'], ddof=1)) and row['fid_std'] > 0


# ---------------------------------------------------------------- accel

def test_checkpoint_saves_and_restores_the_grad_scaler_scale(tmp_path):
    "A checkpoint carries the GradScaler's grown scale and a load puts it back (float16 resumes need it)."
    learn = line_learner()
    learn.grad_scaler = torch.amp.GradScaler('cpu', init_scale=16., growth_interval=1)   # doubles after each finite step
    learn.fit(1, valid=False)
    assert learn.grad_scaler.get_scale() == 16. * 2**3
    path = save_checkpoint(tmp_path/'ck.pt', learn)
    assert read_checkpoint(path)['grad_scaler']['scale'] == 128.
    other = line_learner()
    other.opt = other.opt_func(other.model.parameters(), other.lr)
    other.grad_scaler = torch.amp.GradScaler('cpu')          # default scale 65536
    load_checkpoint(path, other)
    assert other.grad_scaler.get_scale() == 128. and other.grad_scaler.state_dict() == learn.grad_scaler.state_dict()


def test_lr_find_leaves_the_ema_untouched():
    "The LR finder's throw-away steps do not enter the EMA average or its update count."
    ema = EMA(0.9)
    learn = line_learner(cbs=[ema])
    learn.fit(1, valid=False)
    shadow, n = [s.clone() for s in ema.shadow], ema.n_updates
    learn.lr_find(max_epochs=1, show_plot=False)
    assert ema.n_updates == n == 3 and all(torch.equal(a, b) for a, b in zip(shadow, ema.shadow))


def test_lr_find_neither_writes_nor_resumes_from_the_checkpoint(tmp_path):
    "lr_find with a CheckpointCB in the learner leaves the checkpoint file as it was and does not resume from it."
    path = tmp_path/'run.pt'
    learn = line_learner(cbs=[CheckpointCB(path)])
    learn.fit(1, valid=False)
    saved = path.read_bytes()
    finder = learn.lr_find(max_epochs=1, show_plot=False)
    assert len(finder.losses) > 0 and path.read_bytes() == saved


# ---------------------------------------------------------------- learner

def test_one_cycle_cb_default_schedule_is_one_cycle_lr_over_the_whole_fit():
    "OneCycleCB(max_lr) gives the lrs of OneCycleLR(max_lr, total_steps=epochs*len(train)) with its defaults."
    rec = RecorderCB()
    learn = line_learner(cbs=[OneCycleCB(0.1), rec])
    learn.fit(4)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    sched, ref = OneCycleLR(opt, max_lr=0.1, total_steps=4*3), []
    for _ in range(12): ref.append(opt.param_groups[0]['lr']); opt.step(); sched.step()
    assert rec.values('lr').tolist() == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------- data

def _order(dl): return torch.cat([yb for _, yb in dl]).tolist()

def test_unseeded_loader_shuffle_follows_torch_global_seed():
    "With seed=None the shuffle generator is seeded from torch's global RNG: the same global seed, the same order."
    x, y = torch.zeros(32, 2, 2, dtype=torch.uint8), torch.arange(32)
    def make(s):
        torch.manual_seed(s)
        return DeviceImageLoader(x, y, bs=8, shuffle=True, device='cpu')
    assert _order(make(0)) == _order(make(0)) != _order(make(1))


def test_shuffled_batches_keep_each_image_with_its_label():
    "Shuffled (and padded) batches pair every image with its own label."
    n = 50
    x = torch.arange(n, dtype=torch.uint8)[:, None, None].expand(n, 3, 3).contiguous()   # image i is filled with i
    dl = DeviceImageLoader(x, torch.arange(n), bs=16, shuffle=True, pad=1, value_range=(0., 255.), device='cpu', seed=0)
    ys = []
    for xb, yb in dl:
        assert torch.equal(xb[:, 0, 1:-1, 1:-1], yb[:, None, None].float().expand(-1, 3, 3)) and (xb[:, 0, 0] == 0).all()
        ys += yb.tolist()
    assert sorted(ys) == list(range(n)) and ys != list(range(n))


@pytest.mark.parametrize('value,on', [('1', True), ('true', True), (' Yes ', True), ('ON', True), ('0', False), ('false', False),
                                      ('', False), ('no', False), ('off', False), (None, False)])
def test_env_flag_reads_on_and_off(monkeypatch, value, on):
    "`env_flag`: 1/true/yes/on switch a flag on; 0, false, empty or unset leave it off (MINIAI_DEBUG=0 means off)."
    from miniai.core import env_flag, is_quick
    for name in ('MINIAI_QUICK', 'SOME_FLAG'):
        if value is None: monkeypatch.delenv(name, raising=False)
        else: monkeypatch.setenv(name, value)
    assert env_flag('SOME_FLAG') is on and is_quick() is on


def test_to_real_and_check_int():
    "`to_real`: one real number from Python, NumPy or a one-element tensor, never a bool or a string; `check_int` likewise for ints."
    from miniai.core import check_int, to_real
    for v, want in ((3, 3.), (2.5, 2.5), (np.float32(0.5), 0.5), (np.int64(7), 7.), (torch.tensor(1.5), 1.5), (torch.tensor([2]), 2.)):
        assert to_real(v) == want and type(to_real(v)) is float
    for bad in (True, np.bool_(False), '1', None, torch.tensor([1., 2.]), torch.tensor(True), 1j):
        assert to_real(bad) is None, bad
    assert check_int(np.int64(4), 'n', 1) == 4 and type(check_int(np.int64(4), 'n')) is int and check_int(torch.tensor(5), 'n') == 5
    for bad, err in ((2.0, TypeError), (True, TypeError), ('3', TypeError), (0, ValueError), (torch.tensor(2.), TypeError),
                     (torch.tensor([1, 2]), TypeError), (torch.tensor(True), TypeError)):
        with pytest.raises(err, match='`n` must be'): check_int(bad, 'n', 1)


def test_set_seed_takes_seeds_beyond_32_bits():
    "set_seed takes a seed of 2**32 or more and seeds NumPy with its low 32 bits (NumPy's legacy seed refuses larger ones)."
    from miniai.core import set_seed
    set_seed(2**32 + 7); a = np.random.rand(3)
    set_seed(7); b = np.random.rand(3)
    assert np.array_equal(a, b)


def test_set_seed_deterministic_switches_torch_to_deterministic_kernels():
    "deterministic=True turns on deterministic algorithms (warn only) and turns off cudnn benchmarking; False changes neither."
    import random
    from miniai.core import set_seed
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(False); torch.backends.cudnn.benchmark = True
        set_seed(3)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        set_seed(3, deterministic=True); r = (random.random(), np.random.rand(), torch.rand(1).item())
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
        set_seed(3); assert r == (random.random(), np.random.rand(), torch.rand(1).item())   # the same seeding either way
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1]); torch.backends.cudnn.benchmark = saved[2]


def test_pid_alive_does_not_signal_a_live_process():
    "_pid_alive probes a process without signalling it: a live process keeps running, a dead one reads as dead."
    import subprocess, sys, time
    from miniai.core import _pid_alive
    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        assert _pid_alive(p.pid)
        time.sleep(0.3)
        assert p.poll() is None
    finally:
        p.kill(); p.wait()
    assert not _pid_alive(p.pid)


def test_hub_probe_port_and_proxy(monkeypatch):
    "hub_unreachable skips its probe when a proxy variable is set; without one it probes an https endpoint on port 443."
    import socket
    from miniai.core import hub_unreachable, _PROXY_VARS
    from huggingface_hub import constants
    calls = []
    def fake(addr, timeout=None): calls.append(addr); raise OSError('refused')
    monkeypatch.setattr(socket, 'create_connection', fake)
    monkeypatch.setattr(constants, 'ENDPOINT', 'https://hub.example')
    for k in _PROXY_VARS: monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('https_proxy', 'http://proxy:3128')
    assert hub_unreachable() is None and calls == []
    monkeypatch.delenv('https_proxy')
    assert 'hub.example:443' in hub_unreachable() and calls == [('hub.example', 443)]


def test_cache_dir_default_without_env(monkeypatch, tmp_path):
    "With MINIAI_CACHE unset (or empty) the cache is ~/.cache/miniai (the other tests always set it)."
    from miniai.core import cache_dir
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('MINIAI_CACHE', raising=False)
    assert cache_dir('fid') == tmp_path/'.cache'/'miniai'/'fid' and (tmp_path/'.cache'/'miniai'/'fid').is_dir()
    monkeypatch.setenv('MINIAI_CACHE', '')
    assert cache_dir() == tmp_path/'.cache'/'miniai'
