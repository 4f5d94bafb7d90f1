"""Tests for miniai.distributed: exact sharding, and a real 2-process gloo run (torchrun) that matches one process."""
import json, os, signal, subprocess, sys, tempfile, time, warnings
from datetime import timedelta
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import Callback, Learner, MetricsCB, TrainCB
from miniai.accel import GradAccumCB
from miniai.core import remove_stale_tmp
from miniai.distributed import (DistributedCB, ShardedLoader, StepCheckpointCB, _check_same, _rank_seed, all_gather_cat,
                                all_reduce_sum, barrier, cleanup_distributed, get_rank, get_world_size, init_distributed,
                                is_main_process, load_samples, reduce_metrics, sample_across_ranks,
                                save_samples, shard_items, shard_range, unwrap_model)

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


def test_without_a_process_group_this_is_rank_0_of_1(monkeypatch):
    "No torchrun (WORLD_SIZE unset or 1): rank 0 of 1, the main process; barrier and init/cleanup do nothing."
    assert not dist.is_initialized()
    for world in (None, '1'):
        if world is None: monkeypatch.delenv('WORLD_SIZE', raising=False)
        else: monkeypatch.setenv('WORLD_SIZE', world)
        assert init_distributed() == (0, 1) and not dist.is_initialized()
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    assert barrier() is None
    cleanup_distributed()


def test_as_many_items_as_ranks_gives_each_rank_one():
    "n == world_size is allowed: every rank gets exactly one item, none is left out."
    shards = [ShardedLoader(loader(2, 1), r, 2) for r in range(2)]
    got = [[b[1].tolist() for b in s] for s in shards]
    assert [len(g) for g in got] == [1, 1] and sorted(g[0][0] for g in got) == [0, 1]
    assert all(s.left_out == 0 for s in shards)


def test_shard_items_shuffles_with_its_own_copy_of_the_generator():
    "A shuffled shard draws its order from a copy of the generator state; the original generator does not move."
    base = loader(12, 4, seed=5)
    before = base.generator.get_state()
    shard = shard_items(base, 1, 2)  # items 6..11
    assert shard.generator is not base.generator
    got = torch.cat([b[1] for b in shard])
    assert torch.equal(base.generator.get_state(), before)
    g = torch.Generator(); g.set_state(before)
    assert torch.equal(got, 6 + torch.randperm(6, generator=g))


def test_rank_seeds_differ_by_seed_rank_and_epoch_and_repeat():
    "Every (seed, epoch, rank) gets its own 63-bit seed, the same on every call."
    keys = [(s, e, r) for s in (0, 1) for e in range(3) for r in range(4)]
    seeds = [_rank_seed(*k) for k in keys]
    assert len(set(seeds)) == len(keys) and seeds == [_rank_seed(*k) for k in keys]
    assert all(isinstance(x, int) and 0 <= x < 2**63 for x in seeds)


def test_sample_across_ranks_allows_as_many_samples_as_processes():
    "n == world_size (1 here) is allowed; fewer samples than processes is refused."
    assert torch.equal(sample_across_ranks(lambda s, c: torch.full((c, 2), float(s)), 1, bs=4, progress=False), torch.zeros(1, 2))
    with pytest.raises(ValueError, match='`n`'): sample_across_ranks(lambda s, c: torch.zeros(c), 0)


def test_save_and_load_samples_round_trip_and_refuse_bad_input(tmp_path):
    "Half/bfloat16 saved as float32, integers exactly; wrong suffix, empty, NaN/inf, missing or truncated files refused."
    for dt in (torch.float16, torch.bfloat16):
        x = torch.tensor([[0.5, -2.], [3., 0.25]], dtype=dt)
        y = load_samples(save_samples(tmp_path/f'{dt}.npy', x))
        assert y.dtype == torch.float32 and torch.equal(y, x.float())
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert np.array_equal(load_samples(save_samples(tmp_path/'sub'/'i.npy', a)).numpy(), a)
    with pytest.raises(ValueError, match='.npy'): save_samples(tmp_path/'x.pt', a)
    with pytest.raises(ValueError, match='empty'): save_samples(tmp_path/'e.npy', torch.zeros(0, 3))
    for bad in (float('inf'), float('nan')):
        with pytest.raises(ValueError, match='non-finite'): save_samples(tmp_path/'n.npy', torch.tensor([1., bad]))
    assert not (tmp_path/'n.npy').exists()
    assert torch.isinf(load_samples(save_samples(tmp_path/'n.npy', torch.tensor([1., float('inf')]), allow_nonfinite=True))[1])
    with pytest.raises(FileNotFoundError): load_samples(tmp_path/'missing.npy')
    (tmp_path/'cut.npy').write_bytes((tmp_path/'sub'/'i.npy').read_bytes()[:-5])
    with pytest.raises(ValueError, match='not a complete'): load_samples(tmp_path/'cut.npy')
    assert not list(tmp_path.rglob('*.tmp'))


def dead_pid():
    "The id of a process that has exited (and been reaped)."
    p = subprocess.Popen(['true']); p.wait()
    return p.pid


def test_remove_stale_tmp_deletes_only_files_of_dead_writers(tmp_path):
    "Temporary files of exited writers of `path` go; this process's, a live process's, and other files stay."
    path, dead = tmp_path/'ck.pt', dead_pid()
    stale = tmp_path/f'.ck.pt.{dead}.tmp'
    keep = [tmp_path/f'.ck.pt.{os.getpid()}.tmp', tmp_path/f'.ck.pt.{os.getppid()}.tmp', tmp_path/'.ck.pt.x1.tmp',
            tmp_path/f'.other.pt.{dead}.tmp']
    for f in [stale, *keep]: f.write_bytes(b'partial')
    assert remove_stale_tmp(path) == [stale]
    assert not stale.exists() and all(f.exists() for f in keep)


def test_step_checkpoint_saves_every_n_steps_but_not_at_the_end_of_an_epoch(tmp_path, stop_after_step):
    "4 batches an epoch: every 3 steps saves after batch 3; every 2 steps, stopped after batch 4, still holds batch 2."
    with pytest.raises(ValueError, match='every_steps'): StepCheckpointCB(tmp_path/'x.pt', every_steps=0)
    for every, stop, done in ((3, 3, 3), (2, 4, 2)):
        ck = tmp_path/f'ck{every}.pt'
        tiny_learner([StepCheckpointCB(ck, every), stop_after_step(stop)]).fit(2)
        extra = torch.load(ck, weights_only=True)['extra']
        assert extra['mid_epoch'] and extra['batches_done'] == done and extra['metrics']['count'] == 16*done


def test_step_checkpoint_resumes_mid_epoch_like_an_uninterrupted_run(tmp_path, stop_after_step, capsys):
    "Killed after step 3 (saved at step 2), resumed: the same history (epoch sums carried over) and weights as one run."
    ck = tmp_path/'ck.pt'
    tiny_learner([StepCheckpointCB(ck, 2), stop_after_step(3)]).fit(2)
    stale = tmp_path/f'.ck.pt.{dead_pid()}.tmp'
    stale.write_bytes(b'partial')
    capsys.readouterr()
    resumed, straight = tiny_learner([StepCheckpointCB(ck, 2)]), tiny_learner()
    resumed.fit(2); straight.fit(2)
    assert 'in the middle of epoch 1: continuing after its batch 2 of 4' in capsys.readouterr().out
    assert not stale.exists()
    h1, h2 = resumed.metrics.history, straight.metrics.history
    assert [(h['epoch'], h['phase']) for h in h1] == [(h['epoch'], h['phase']) for h in h2]
    assert [h['loss'] for h in h1] == pytest.approx([h['loss'] for h in h2], rel=1e-6)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(resumed.model.parameters(), straight.model.parameters()))


def test_step_checkpoint_resume_after_a_whole_epoch_or_with_other_metrics(tmp_path, stop_after_step, capsys):
    "An end-of-epoch checkpoint is not called mid-epoch; saved sums of other metrics are not forced onto the new ones."
    from torcheval.metrics import MulticlassAccuracy
    ck = tmp_path/'ck.pt'
    tiny_learner([StepCheckpointCB(ck, 100), stop_after_step(5)]).fit(2)  # saved after epoch 1 only
    capsys.readouterr()
    tiny_learner([StepCheckpointCB(ck, 100)]).fit(2)
    out = capsys.readouterr().out
    assert 'resumed' in out and 'middle' not in out
    ck.unlink()
    tiny_learner([StepCheckpointCB(ck, 2), stop_after_step(3)]).fit(2)  # mid-epoch, MetricsCB without metrics
    learn = tiny_learner([StepCheckpointCB(ck, 2)])
    learn.cbs = [MetricsCB(acc=MulticlassAccuracy()) if isinstance(cb, MetricsCB) else cb for cb in learn.cbs]
    learn.fit(2)
    assert [h['epoch'] for h in learn.metrics.history] == [0, 0, 1, 1] and 'acc' in learn.metrics.history[-1]


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


# ---------------------------------------------------------------- two forked gloo processes (in-process speed)

def _rank_main(rank, world, store, fn, done):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world, timeout=timedelta(seconds=30))
    try: fn(rank, world); done[rank] = 1
    finally: dist.destroy_process_group()


def run_ranks(fn, world=2, timeout=180, teardown=15):
    """Run `fn(rank, world)` in `world` forked processes joined in a gloo group; an assertion failing on any rank fails the test.
    Never hangs the run: ranks still running `timeout` s after the start are killed and the test fails. When every rank has
    finished `fn` and only leaving the group hangs (torch's `destroy_process_group` sometimes does, pytorch#75097; seen
    once here on torch 2.4), the ranks are killed after `teardown` s with a warning, and the test stands."""
    done = mp.get_context('fork').Array('b', world)
    with tempfile.TemporaryDirectory() as d:
        ranks = mp.start_processes(_rank_main, args=(world, f'{d}/store', fn, done), nprocs=world, join=False, start_method='fork')
        start, finished = time.monotonic(), None
        while not ranks.join(timeout=0.5):   # True once every rank has exited cleanly; raises if one failed
            now = time.monotonic()
            if finished is None and all(done): finished = now
            if now - start > timeout or (finished is not None and now - finished > teardown):
                for p in ranks.processes: p.kill(); p.join()   # reaped, no zombie left behind
                if finished is None: pytest.fail(f"the gloo ranks were still running after {timeout} s (finished fn: {list(done)})")
                warnings.warn(f"every rank finished, but leaving the gloo group hung for {teardown} s: ranks killed")
                return


def _collectives(rank, world):
    barrier()
    assert (get_rank(), get_world_size(), is_main_process()) == (rank, 2, rank == 0)
    # all_gather_cat: 2 rows on rank 0, 3 on rank 1 -> 5 rows in rank order, no padding rows
    x = torch.arange(10*rank, 10*rank + 2 + rank).reshape(-1, 1).expand(-1, 2)
    assert torch.equal(all_gather_cat(x), torch.tensor([0, 1, 10, 11, 12]).reshape(-1, 1).expand(-1, 2))
    with pytest.raises(ValueError, match='different item shapes'): all_gather_cat(torch.zeros(2, 1 + rank))
    # all_reduce_sum: the sum, and the input left as it was
    y = torch.tensor([1., 2.]) * (rank + 1)
    assert torch.equal(all_reduce_sum(y), torch.tensor([3., 6.])) and torch.equal(y, torch.tensor([1., 2.]) * (rank + 1))
    # sample_across_ranks: 5 samples, rank 0 makes 0..2, rank 1 makes 3..4; all of them on both
    calls = []
    def fn(s, c): calls.append((s, c)); return torch.arange(s, s + c) * 10.
    assert torch.equal(sample_across_ranks(fn, 5, bs=2, progress=False), torch.arange(5) * 10.)
    assert calls == ([(0, 2), (2, 1)] if rank == 0 else [(3, 2)])
    # reduce_metrics: loss sums and counts added, accuracy over the items of both ranks
    from torcheval.metrics import MulticlassAccuracy
    mcb = MetricsCB(acc=MulticlassAccuracy())
    mcb.loss_sum, mcb.count = torch.tensor(3. + rank), 4 + 2*rank  # (3 + 4) / (4 + 6)
    preds = torch.eye(3)[[0, 1, 2, 0]] if rank == 0 else torch.eye(3)[[1, 2]]
    targ = torch.tensor([0, 1, 2, 1]) if rank == 0 else torch.tensor([0, 0])
    mcb.metrics['acc'].update(preds, targ)  # 3 of 4 right on rank 0, 0 of 2 on rank 1: 3 of 6 together
    reduce_metrics(mcb)
    assert float(mcb.loss_sum) == 7. and mcb.count == 10 and float(mcb.metrics['acc'].compute()) == 0.5
    # _check_same: equal values pass, different ones raise on every rank
    _check_same((5, 'a'), 'x')
    with pytest.raises(RuntimeError, match='differs between ranks'): _check_same(rank, 'the rank')
    model = nn.Linear(2, 1)
    assert unwrap_model(DistributedDataParallel(model)) is model and unwrap_model(model) is model


def test_collectives_reductions_and_sampling_on_two_processes():
    "all_gather_cat with unequal parts, all_reduce_sum, sampling, metric reduction and checks on 2 gloo processes."
    run_ranks(_collectives)


class CountCB(Callback):
    "Counts the training batches it sees (a stand-in for a rank-0-only callback such as ProgressCB)."
    def __init__(self): self.n = 0
    def after_batch(self, learn): self.n += learn.training


def _distributed_fit(rank, world):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (67, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (67,), generator=g)
    dls = DataLoaders(DeviceImageLoader(x, y, bs=16, shuffle=True, seed=0, device='cpu'), DeviceImageLoader(x, y, bs=16, device='cpu'))
    dls.train.load_state_dict({'generator': dls.train.generator.get_state(), 'batches_done': 1})
    count = CountCB()
    cbs = [TrainCB(), MetricsCB(), DistributedCB(main_only=(CountCB,)), count]
    learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), dls, F.cross_entropy, cbs=cbs)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        learn.fit(1)
    # 67 items, global batch 32: the last global batch has 3 items, 1 of them is left out (rank 0 warns, once)
    msgs = [str(w.message) for w in ws if 'left out' in str(w.message)]
    assert len(msgs) == (rank == 0) and all('1 item(s)' in m for m in msgs)
    assert learn.dls is dls and learn.dls.train.state_dict()['batches_done'] == 0  # the original loader, starting afresh
    assert count.n == (2 if rank == 0 else 0) and count in learn.cbs  # resumed at global batch 1 of 3; on rank 0 only
    # ranks built with different data refuse to start (on every rank) instead of hanging
    bad = DataLoaders(DeviceImageLoader(x[:64 + rank], y[:64 + rank], bs=16, device='cpu'), dls.valid)
    with pytest.raises(RuntimeError, match='differs between ranks'):
        Learner(nn.Linear(16, 3), bad, F.cross_entropy, cbs=[TrainCB(), DistributedCB()]).fit(1)


def test_distributed_cb_on_two_processes_warns_once_checks_data_and_restores_loaders():
    "DistributedCB on 2 gloo processes: rank-0-only callbacks and warning, mismatched data refused, loaders restored."
    run_ranks(_distributed_fit)


def _accumulated_ddp_fit(rank, world):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (64,), generator=g)
    def fit(bs, cbs):
        set_seed(0)
        dls = DataLoaders(DeviceImageLoader(x, y, bs=bs, shuffle=True, seed=0, device='cpu'), DeviceImageLoader(x, y, bs=16, device='cpu'))
        learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), dls, F.cross_entropy, lr=0.1, cbs=[TrainCB(), *cbs])
        learn.fit(2, valid=False)
        return learn
    dcb, reductions = DistributedCB(), []
    class CountAllReduce(Callback):
        order = -14   # after DistributedCB has wrapped the model
        def before_fit(self, learn):
            dcb.ddp.register_comm_hook(None, lambda state, bucket: (reductions.append(1), allreduce_hook(None, bucket))[1])
    acc = fit(8, [dcb, GradAccumCB(2), CountAllReduce()])   # 2 ranks x 8 items a batch, 2 batches a step: 32 items a step
    assert len(reductions) == 4   # one all-reduce per step (2 epochs of 2 steps), none for the batches that only add up
    ref = fit(32, [])   # one process, batches of 32: the same items in each step
    for p, q in zip(acc.model.parameters(), ref.model.parameters()): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_under_ddp_reduces_once_per_step_and_matches_the_big_batch():
    "GradAccumCB(2) on 2 gloo processes: batches that only add up run in `no_sync`; the weights are those of one process with 4x the batch."
    run_ranks(_accumulated_ddp_fit)


def test_step_checkpoint_never_writes_a_diverged_model_over_the_last_good_one(tmp_path):
    "NaN loss from epoch 1 on, NanGuardCB checking every 50 batches: the mid-epoch save used to write NaN weights first."
    from miniai.accel import NanGuardCB, NonFiniteLossError
    class NanFromEpoch1(Callback):
        order = 5
        def after_predict(self, learn):
            if learn.epoch >= 1 and learn.training: learn.preds = learn.preds*float('nan')
    ck = tmp_path/'ck.pt'
    with pytest.raises(NonFiniteLossError):
        tiny_learner([StepCheckpointCB(ck, 2), NanGuardCB(every=50), NanFromEpoch1()]).fit(3)
    saved = torch.load(ck, weights_only=True)
    assert saved['epoch'] == 1 and not (saved['extra'] or {}).get('mid_epoch')   # the end of epoch 1 (0-based 0), untouched
    assert all(torch.isfinite(v).all() for v in saved['model'].values())


def test_step_checkpoint_makes_no_mid_epoch_save_a_loader_cannot_resume(tmp_path):
    "A loader without state_dict restarts at batch 0: a mid-epoch save would replay batches (OneCycleLR then crashed)."
    class Plain:   # a loader that cannot say where it is
        def __init__(self, dl): self.dl = dl
        def __iter__(self): return iter(self.dl)
        def __len__(self): return len(self.dl)
    learn = tiny_learner()
    learn.dls = DataLoaders(Plain(learn.dls.train), learn.dls.valid)
    learn.cbs.append(StepCheckpointCB(tmp_path/'ck.pt', 1))
    with pytest.warns(UserWarning, match='no state_dict.*epoch ends only'): learn.fit(1)
    assert not torch.load(tmp_path/'ck.pt', weights_only=True)['extra']   # only the end-of-epoch save


def test_step_checkpoint_evaluation_only_fit_says_nothing_about_resuming(tmp_path, stop_after_step, capsys):
    "After a run killed mid-epoch, `fit(train=False)` printed 'continuing after its batch ...' though it resumes nothing."
    ck = tmp_path/'ck.pt'
    tiny_learner([StepCheckpointCB(ck, 2), stop_after_step(3)]).fit(2)
    capsys.readouterr()
    tiny_learner([StepCheckpointCB(ck, 2)]).fit(1, train=False)
    assert 'continuing' not in capsys.readouterr().out


def test_init_distributed_uses_the_backend_asked_for_else_gloo_on_the_cpu(monkeypatch):
    "init_distributed passes an explicit backend through unchanged, and picks gloo on the CPU when none is given."
    seen = []
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, timeout: seen.append(backend))   # no real process group
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    assert init_distributed(backend='mpi') == (0, 1) and init_distributed() == (0, 1)   # still no group: rank 0 of 1
    assert seen == ['mpi', 'gloo']


def _every_rank_takes_rank_0s_shuffle(rank, world):
    dls = DataLoaders(loader(8, 2, seed=10 + rank), loader(4, 2))   # each rank seeded differently
    cb = DistributedCB(); cb.world, cb.rank = world, rank
    cb._shard(dls)
    assert torch.equal(dls.train.generator.get_state(), loader(8, 2, seed=10).generator.get_state())


def test_sharding_gives_every_rank_the_shuffle_of_rank_0():
    "DistributedCB shuffles the training data on every rank with rank 0's loader generator (rank 0 is the one that saves)."
    run_ranks(_every_rank_takes_rank_0s_shuffle)
