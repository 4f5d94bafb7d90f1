"""Tests for miniai.distributed: exact sharding, and a real 2-process gloo run (torchrun) that matches one process."""
import json, os, signal, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import Learner, MetricsCB, TrainCB
from miniai.distributed import (DistributedCB, ShardedLoader, all_gather_cat, all_reduce_sum, sample_across_ranks,
                                shard_items, shard_range)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO/'tools'/'train_ddp_demo.py'



def run_cmd(cmd, timeout=300):
    "Run `cmd` in its own process group on the CPU; kill the whole group if it outlives `timeout` (never hangs CI)."
    env = {**os.environ, 'MINIAI_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    p = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()
        pytest.fail(f"{cmd} did not finish within {timeout} s")
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{err[-4000:]}"
    return out


def loader(n, bs, seed=3, shuffle=True):
    "A loader whose image i is filled with the value i (labels = indices), so batches show which items they hold."
    ims = torch.arange(n).remainder(256).to(torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return DeviceImageLoader(ims, torch.arange(n), bs=bs, shuffle=shuffle, seed=seed, device='cpu')


# ---------------------------------------------------------------- sharding (no process group needed)

@pytest.mark.parametrize('n,world', [(24, 2), (26, 2), (25, 3), (13, 4), (9, 2)])
def test_shards_are_slices_of_the_single_process_batches(n, world):
    bs = 3
    single = [b[1] for b in loader(n, bs*world)]
    ranks = [[b[1] for b in ShardedLoader(loader(n, bs), r, world)] for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # every rank takes the same number of steps (DDP needs it)
    left = ShardedLoader(loader(n, bs), 0, world).left_out
    seen = 0
    for step, parts in enumerate(zip(*ranks)):
        assert len({len(p) for p in parts}) == 1  # equal slices: the mean of the means is the global mean
        m = len(torch.cat(parts))
        assert torch.equal(torch.cat(parts), single[step][:m])  # rank order = the single process's order
        seen += m
    last = n % (bs*world)
    assert seen + left == n and left == (last if last < world else last % world)


def test_sharded_loader_resumes_like_the_single_loader_and_shares_the_generator():
    n, bs, world = 40, 4, 2
    a, b = ShardedLoader(loader(n, bs), 1, world), loader(n, bs*world)
    it = iter(a)
    for _ in range(2): next(it)
    sd = a.state_dict()  # mid-epoch: counts global batches
    assert sd['batches_done'] == 2
    b.load_state_dict(sd)
    rest_single = [x[1] for x in b]
    rest_shard = [x[1] for x in it]
    assert len(rest_single) == len(rest_shard) == n//(bs*world) - 2
    assert all(torch.equal(s[bs:], r) for s, r in zip(rest_single, rest_shard))  # rank 1: the second half of each
    base = loader(n, bs)
    view = ShardedLoader(base, 0, world)
    assert view.generator is base.generator and view.images.data_ptr() == base.images.data_ptr()  # nothing copied


def test_sharded_loader_refuses_bad_input():
    with pytest.raises(ValueError, match='rank'): ShardedLoader(loader(8, 2), 2, 2)
    with pytest.raises(ValueError, match='world_size'): ShardedLoader(loader(8, 2), 0, 0)
    with pytest.raises(TypeError, match='not yet sharded'): ShardedLoader(ShardedLoader(loader(8, 2), 0, 2), 0, 2)
    with pytest.raises(TypeError, match='DeviceImageLoader'): ShardedLoader([1, 2, 3], 0, 2)
    with pytest.raises(ValueError, match='cannot share 3 items between 4'): ShardedLoader(loader(3, 1), 0, 4)


@pytest.mark.parametrize('n,world', [(0, 1), (1, 3), (10, 3), (17, 4), (100, 7)])
def test_shard_range_and_shard_items_partition_the_items(n, world):
    rs = [shard_range(n, r, world) for r in range(world)]
    assert [i for r in rs for i in r] == list(range(n))
    assert max(map(len, rs)) - min(map(len, rs)) <= 1
    if n >= world:
        got = torch.cat([torch.cat([b[1] for b in shard_items(loader(n, 4, shuffle=False), r, world)]) for r in range(world)])
        assert torch.equal(got, torch.arange(n))


def test_collectives_and_sampling_are_identities_in_one_process():
    x = torch.randn(5, 3)
    assert all_gather_cat(x) is x and all_reduce_sum(x) is x
    calls = []
    def fn(s, c): calls.append((s, c)); return x[s:s+c]*2
    assert torch.equal(sample_across_ranks(fn, 5, bs=2, progress=False), x*2) and calls == [(0, 2), (2, 2), (4, 1)]
    with pytest.raises(ValueError, match='must return a tensor of 2'): sample_across_ranks(lambda s, c: x, 5, bs=2)
    with pytest.raises(ValueError, match='`bs`'): sample_across_ranks(fn, 5, bs=0)


def tiny_learner(cbs=()):
    set_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (64,), generator=g)
    dls = DataLoaders(DeviceImageLoader(x, y, bs=16, shuffle=True, seed=0, device='cpu'), DeviceImageLoader(x, y, bs=16, device='cpu'))
    return Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), dls, F.cross_entropy, cbs=[TrainCB(), MetricsCB(), *cbs])


def test_distributed_cb_changes_nothing_in_one_process():
    a, b = tiny_learner(), tiny_learner([DistributedCB()])
    a.fit(2); b.fit(2)
    assert [h['loss'] for h in a.metrics.history] == [h['loss'] for h in b.metrics.history]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_distributed_cb_under_torchrun_without_init_says_what_to_do(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(RuntimeError, match='init_distributed'): tiny_learner([DistributedCB()]).fit(1)


# ---------------------------------------------------------------- two real processes (gloo) against one



def test_two_gloo_processes_match_one_process(tmp_path, cpu_one_thread, ddp_demo):
    demo = ddp_demo
    common = ['--epochs', 3, '--n-train', 256, '--n-valid', 100, '--predict', 40, '--threads', 1]
    # 2 processes x 8 = global batch 16; stopped after 20 of 48 steps (mid-epoch 2) with a checkpoint at step 20
    out = run_cmd([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', DEMO, *common,
                   '--bs', 8, '--max-steps', 20, '--checkpoint', tmp_path/'ck.pt', '--every-steps', 4, '--out', tmp_path/'two'])
    demo.main([*common, '--bs', 16, '--max-steps', 20, '--out', tmp_path/'one'])
    two, one = tmp_path/'two', tmp_path/'one'

    reports = [json.loads((two/f'rank{r}.json').read_text()) for r in range(2)]
    assert [r['world_size'] for r in reports] == [2, 2] and [r['items_seen'] for r in reports] == [160, 160]
    assert {'ProgressCB', 'StepCheckpointCB'} <= set(reports[0]['callbacks'])  # rank 0 logs and saves...
    assert not {'ProgressCB', 'StepCheckpointCB'} & set(reports[1]['callbacks'])  # ...rank 1 does neither
    assert out.count('epoch 0  phase train') == 1 and out.count('epoch 0  phase eval') == 1  # printed once

    # the same steps: per-batch losses (global = mean of the ranks), epoch metrics combined over ranks, weights
    l1 = np.load(one/'losses_rank0.npy')
    l2 = (np.load(two/'losses_rank0.npy') + np.load(two/'losses_rank1.npy'))/2
    assert len(l1) == len(l2) == 20 and np.allclose(l1, l2, rtol=1e-5, atol=1e-6)
    assert l1[-5:].mean() < l1[:5].mean()  # it did learn: equal losses are not equal non-training
    h1, h2 = (json.loads((d/'history.json').read_text()) for d in (one, two))
    assert [(h['epoch'], h['phase']) for h in h2] == [(0, 'train'), (0, 'eval')]
    for a, b in zip(h1, h2):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5) and a['accuracy'] == b['accuracy']
    from safetensors.torch import load_file
    w1, w2 = load_file(one/'weights.safetensors'), load_file(two/'weights.safetensors')
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    assert np.allclose(np.load(one/'predictions.npy'), np.load(two/'predictions.npy'), atol=1e-4)  # sampled on 2 ranks

    # the 2-process checkpoint (rank 0, plain weights, loader position in global batches) resumes in 1 process
    ck = torch.load(tmp_path/'ck.pt', weights_only=True)
    assert ck['epoch'] == 1 and ck['extra']['batches_done'] == 4 and all(not k.startswith('module.') for k in ck['model'])
    resumed = demo.main([*common, '--bs', 16, '--checkpoint', tmp_path/'ck.pt', '--every-steps', 4, '--out', tmp_path/'resumed'])
    straight = demo.main([*common, '--bs', 16, '--out', tmp_path/'straight'])
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(resumed.model.parameters(), straight.model.parameters()))
    assert resumed.metrics.history[-1]['loss'] == pytest.approx(straight.metrics.history[-1]['loss'], rel=1e-4)
