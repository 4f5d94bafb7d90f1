"Tests for gradient accumulation: the Learner's `CancelStepException` and `miniai.accel.GradAccumCB` (alone, with clipping, a GradScaler, EMA, schedules and mid-epoch checkpoints)."
import warnings
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import (CancelEpochException, CancelFitException, CancelStepException, Callback, Learner, MetricsCB,
                            OneCycleCB, RecorderCB, TrainCB, TrainLearner, rec_lr)
from miniai.accel import EMA, GradAccumCB, GradClipCB
from miniai.distributed import StepCheckpointCB


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, (x @ torch.randn(5, 3, generator=g, dtype=torch.float64)).tanh() + 0.1*torch.randn(n, 3, generator=g, dtype=torch.float64)


def _batches(x, y, bs): return [(x[i:i+bs], y[i:i+bs]) for i in range(0, len(x), bs)]


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _flat(model): return torch.cat([p.detach().flatten() for p in model.parameters()])


class CountSteps(Callback):
    "Counts optimizer steps (`after_step`) and batches (`after_batch`) of training."
    def before_fit(self, learn): self.steps = self.batches = 0
    def after_step(self, learn): self.steps += 1
    def after_batch(self, learn): self.batches += learn.training


def _fit(bs, cbs=(), opt_func=torch.optim.AdamW, epochs=2, n=40, lr=1e-2, scaler=None):
    "An MLP (float64) trained `epochs` epochs over `n` items, unshuffled, in batches of `bs`; returns (learner, step counter)."
    x, y = _data(n)
    count = CountSteps()
    learn = Learner(_mlp(), DataLoaders(_batches(x, y, bs), None), F.mse_loss, lr=lr, opt_func=opt_func,
                    cbs=[TrainCB(), count, *cbs])
    learn.grad_scaler = scaler
    learn.fit(epochs, valid=False)
    return learn, count


# ---------------------------------------------------------------- the Learner's CancelStepException

class SkipSteps(Callback):
    "Raise `CancelStepException` at event `at` of every training batch whose index is not in `keep`."
    def __init__(self, at='after_backward', keep=()): self.keep = keep; setattr(self, at, self._skip)
    def _skip(self, learn):
        if learn.iter not in self.keep: raise CancelStepException()


@pytest.mark.parametrize('learner', [Learner, TrainLearner])
def test_cancel_step_skips_the_step_and_zero_grad_but_not_after_batch(learner):
    "Every step cancelled: the weights stay, `after_batch` still sees every batch, and the gradients add up over the batches."
    x, y = _data(40)
    batches, model = _batches(x, y, 10), _mlp()
    w0, params = _flat(model), list(model.parameters())
    summed = [sum(gs) for gs in zip(*(torch.autograd.grad(F.mse_loss(model(xb), yb), params) for xb, yb in batches))]
    count = CountSteps()
    learn = learner(model, DataLoaders(batches, None), F.mse_loss, lr=0.1, cbs=[count, SkipSteps()] + [TrainCB()]*(learner is Learner))
    learn.fit(1, valid=False)
    assert torch.equal(_flat(model), w0) and (count.batches, count.steps) == (4, 0)
    for p, g in zip(params, summed): torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('at', ['after_backward', 'step', 'after_step'])
def test_cancel_step_from_later_events_skips_what_is_left_of_the_step(at):
    "Raised in `step` (a callback ordered before TrainCB's) no step is taken; in `after_step` the step stands but zero_grad is skipped."
    x, y = _data(40)
    model = _mlp()
    skip = SkipSteps(at, keep=(3,))
    skip.order = -1
    learn = Learner(model, DataLoaders(_batches(x, y, 10), None), F.mse_loss, lr=0.1, opt_func=torch.optim.SGD, cbs=[TrainCB(), skip])
    w0 = _flat(model)
    learn.fit(1, valid=False)
    if at == 'after_step':   # four steps, each with the sum of all gradients so far (never zeroed until batch 3's)
        assert not torch.equal(_flat(model), w0) and all(p.grad is None or not p.grad.any() for p in model.parameters())
    else:   # one step, at batch 3, with the sum of the four batches' gradients
        ref, _ = _fit(40, opt_func=torch.optim.SGD, epochs=1, lr=0.4)   # lr*4 x the mean gradient = lr x the sum
        torch.testing.assert_close(_flat(model), _flat(ref.model), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- GradAccumCB: the big batch's steps

@pytest.mark.parametrize('n_acc,opt_func', [(1, torch.optim.AdamW), (2, torch.optim.AdamW), (4, torch.optim.AdamW),
                                            (4, torch.optim.SGD)])
def test_accumulated_steps_are_the_big_batch_steps(n_acc, opt_func):
    "10 batches of 4 with GradAccumCB(n) take the steps of batches of 4n (n=4: 16, 16 and a last step over 8), epoch after epoch."
    big, big_count = _fit(4*n_acc, opt_func=opt_func)
    acc, acc_count = _fit(4, [GradAccumCB(n_acc)], opt_func=opt_func)
    torch.testing.assert_close(_flat(acc.model), _flat(big.model), rtol=1e-10, atol=1e-12)
    assert acc_count.steps == big_count.steps == 2*len(_batches(*_data(40), 4*n_acc)) and acc_count.batches == 20


def test_a_short_last_group_steps_with_the_mean_of_its_batches():
    "SGD, 10 batches, n=4: the last step takes batches 9 and 10, divided by 2 (not by 4: that would be a half step)."
    acc, count = _fit(4, [GradAccumCB(4)], opt_func=torch.optim.SGD, epochs=1)
    ref, _ = _fit(16, opt_func=torch.optim.SGD, epochs=1)   # batches of 16, 16 and 8
    torch.testing.assert_close(_flat(acc.model), _flat(ref.model), rtol=1e-10, atol=1e-12)
    assert count.steps == 3


def test_clipping_and_a_grad_scaler_see_the_mean_gradient():
    "GradClipCB clips the mean of the summed gradients (the norms are the big batch's), also under a GradScaler (scale 2**10)."
    clip_big, clip_acc, clip_scaled = GradClipCB(0.05), GradClipCB(0.05), GradClipCB(0.05)
    big, _ = _fit(16, [clip_big], opt_func=torch.optim.SGD, lr=0.5)
    acc, _ = _fit(4, [GradAccumCB(4), clip_acc], opt_func=torch.optim.SGD, lr=0.5)
    scaled, _ = _fit(4, [GradAccumCB(4), clip_scaled], opt_func=torch.optim.SGD, lr=0.5,
                     scaler=torch.amp.GradScaler('cpu', init_scale=2.**10))
    assert len(clip_big.norms) == 6 and (clip_big.norms > 0.05).all()   # every step was clipped
    for learn, clip in ((acc, clip_acc), (scaled, clip_scaled)):
        torch.testing.assert_close(_flat(learn.model), _flat(big.model), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(clip.norms, clip_big.norms, rtol=1e-10, atol=0)


def test_ema_and_recorder_count_steps_and_the_schedule_counts_batches():
    "EMA updates and RecorderCB rows once per step; OneCycleCB plans over every batch and each step takes the value at its batch."
    ema, rec, lrs = EMA(0.9), RecorderCB(lr=rec_lr), []
    class LRAtStep(Callback):
        def step(self, learn): lrs.append(learn.opt.param_groups[0]['lr'])
    acc, count = _fit(4, [GradAccumCB(4), ema, rec, OneCycleCB(1e-2), LRAtStep()], epochs=2)
    assert count.steps == ema.n_updates == len(rec.recs['lr']) == 6 and count.batches == 20
    sched = acc.sched
    assert sched.total_steps == 20 and sched.last_epoch == 20
    _fit(4, [OneCycleCB(1e-2), rec], epochs=2)   # the same curve, read at every batch
    curve = rec.recs['lr']
    assert lrs == [curve[i] for i in (3, 7, 9, 13, 17, 19)]


def test_no_host_sync_is_added(host_transfers):
    "GradAccumCB reads nothing from the device: the same count of host transfers with and without it."
    counts = host_transfers
    def transfers(cbs):
        counts.clear(); _fit(4, cbs, opt_func=torch.optim.SGD); return dict(counts)
    assert transfers([GradAccumCB(4)]) == transfers([])


def test_a_fit_interrupted_mid_group_leaves_nothing_for_the_next_fit(stop_after_step):
    "Interrupted after 2 of 4 summed batches (no step yet): the half sum is dropped, and a new fit starts from zero gradients."
    x, y = _data(40)
    model = _mlp()
    learn = Learner(model, DataLoaders(_batches(x, y, 4), None), F.mse_loss, lr=1e-2, opt_func=torch.optim.SGD,
                    cbs=[TrainCB(), GradAccumCB(4), stop_after_step(2, KeyboardInterrupt)])   # (only at its 2nd step: the next fit runs through)
    with pytest.warns(UserWarning, match='ended with the gradients of 2 batch'), pytest.raises(KeyboardInterrupt): learn.fit(1, valid=False)
    for p in model.parameters(): p.grad = torch.ones_like(p)   # whatever else left gradients behind
    learn.fit(1, valid=False)
    ref, _ = _fit(4, [GradAccumCB(4)], opt_func=torch.optim.SGD, epochs=1)
    assert torch.equal(_flat(model), _flat(ref.model))


def test_refuses_bad_n_loaders_without_len_and_cuda_graphs():
    import numpy as np
    from miniai.accel import CompileCB
    for bad in (0, -1):
        with pytest.raises(ValueError, match='`GradAccumCB n` must be >= 1'): GradAccumCB(bad)
    for bad in (1.5, True, '2', None):
        with pytest.raises(TypeError, match='`GradAccumCB n` must be an int'): GradAccumCB(bad)
    assert GradAccumCB(np.int64(4)).n == 4
    x, y = _data(8)
    class Stream:   # like a torch DataLoader over an IterableDataset: __len__ exists and raises
        def __iter__(self): return iter(_batches(x, y, 4))
        def __len__(self): raise TypeError("object of type 'Stream' has no len()")
    for dl in (iter(_batches(x, y, 4)), Stream()):
        learn = Learner(_mlp(), DataLoaders(dl, None), F.mse_loss, cbs=[TrainCB(), GradAccumCB(2)])
        with pytest.raises(TypeError, match='GradAccumCB steps at the last batch of each epoch'): learn.fit(1, valid=False)
    for mode in ('reduce-overhead', 'max-autotune'):   # refused before anything is compiled
        learn = Learner(_mlp(), DataLoaders(_batches(x, y, 4), None), F.mse_loss, cbs=[TrainCB(), GradAccumCB(2), CompileCB(mode)])
        with pytest.raises(ValueError, match='CUDA graphs reuse the buffers'): learn.fit(1, valid=False)
        assert getattr(learn.model, '_compiled_call_impl', None) is None


def test_a_compiled_model_accumulates_like_an_eager_one():
    "CompileCB in its default mode (no CUDA graphs; the eager backend here) takes the same accumulated steps as no compiling."
    from miniai.accel import CompileCB
    compiled, _ = _fit(4, [GradAccumCB(4), CompileCB(backend='eager')], epochs=1)
    eager, _ = _fit(4, [GradAccumCB(4)], epochs=1)
    torch.testing.assert_close(_flat(compiled.model), _flat(eager.model), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('exc', [CancelEpochException, CancelFitException])
def test_an_epoch_cut_mid_group_drops_its_half_sum(exc, stop_after_step):
    "Cut after 2 of 4 summed batches: no step, the gradients are zeroed for the next epoch; a warning unless the whole fit stopped."
    x, y = _data(40)
    model, acc = _mlp(), GradAccumCB(4)
    w0 = _flat(model)
    learn = Learner(model, DataLoaders(_batches(x, y, 4), None), F.mse_loss, lr=0.1, opt_func=torch.optim.SGD,
                    cbs=[TrainCB(), acc, stop_after_step(2, exc)])
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        learn.fit(1, valid=False)
    msgs = [str(w.message) for w in ws if 'GradAccumCB' in str(w.message)]
    assert msgs == (['GradAccumCB: epoch 0 ended with the gradients of 2 batch(es) summed but not stepped (the epoch was cut short '
                     'or its last batch skipped): dropped, so that none crosses into the next'] if exc is CancelEpochException else [])
    assert torch.equal(_flat(model), w0) and acc.count == 0 and all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_warnings_shown_once_stay_shown_once():
    "A warning raised at every batch shows once under Python's default filter, with a scheduler (and at most twice with GradAccumCB)."
    x, y = _data(40)
    def noisy_loss(p, t): warnings.warn('a note from the loss'); return F.mse_loss(p, t)
    def shown(cbs):
        learn = Learner(_mlp(), DataLoaders(_batches(x, y, 4), None), noisy_loss, opt_func=torch.optim.SGD,
                        cbs=[TrainCB(), OneCycleCB(1e-2), *cbs])
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('default')
            learn.fit(1, valid=False)
        return sum('a note from the loss' in str(w.message) for w in ws), [str(w.message) for w in ws if 'lr_scheduler' in str(w.message)]
    assert shown([]) == (1, [])
    n, sched = shown([GradAccumCB(4)])
    assert n <= 2 and sched == []   # (the one step whose torch warning is silenced may show one again)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # no warning at all from the schedule under accumulation
        _fit(4, [GradAccumCB(4), OneCycleCB(1e-2)])


def test_validation_is_untouched_and_the_lr_finder_leaves_it_out():
    "Validation batches never cancel anything; `lr_find` steps at every batch (the finder's own rule)."
    x, y = _data(40)
    dls = DataLoaders(_batches(x, y, 4), _batches(x, y, 4))
    count, m = CountSteps(), MetricsCB()
    learn = Learner(_mlp(), dls, F.mse_loss, lr=1e-3, cbs=[TrainCB(), GradAccumCB(4), count, m])
    learn.fit(1)
    assert count.steps == 3 and [h['phase'] for h in m.history] == ['train', 'eval']
    finder = learn.lr_find(max_epochs=1, show_plot=False)
    assert count.steps == len(finder.lrs) > 3


# ---------------------------------------------------------------- mid-epoch checkpoints wait for the step

def _tiny(cbs=(), seed=1):
    set_seed(seed)
    g = torch.Generator().manual_seed(123)
    x, y = torch.randint(0, 256, (128, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 4, (128,), generator=g)
    dls = DataLoaders(DeviceImageLoader(x, y, bs=16, shuffle=True, seed=seed, device='cpu'),
                      DeviceImageLoader(x[:32], y[:32], bs=16, device='cpu'))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))
    return Learner(model, dls, F.cross_entropy, cbs=[TrainCB(), OneCycleCB(1e-2), GradAccumCB(2), *cbs], opt_func=torch.optim.AdamW)


def test_step_checkpoint_saves_between_steps_and_resumes_exactly(tmp_path, stop_after_step, capsys):
    "A save due after batch 3 (mid-group) waits for batch 4's step; killed after batch 5, the resumed run is bit-exact."
    ck = tmp_path/'ck.pt'
    with pytest.warns(UserWarning, match='ended with the gradients of 1 batch'), pytest.raises(KeyboardInterrupt):
        _tiny([StepCheckpointCB(ck, 3), stop_after_step(5, KeyboardInterrupt)]).fit(2)
    assert torch.load(ck, weights_only=True)['extra']['batches_done'] == 4
    capsys.readouterr()
    resumed = _tiny([StepCheckpointCB(ck, 3)]); resumed.fit(2)   # (each learner is fitted before the next is built:
    straight = _tiny(); straight.fit(2)                            # `_tiny` seeds the dropout's generator)
    assert 'continuing after its batch 4 of 8' in capsys.readouterr().out
    assert all(torch.equal(p, q) for p, q in zip(resumed.model.parameters(), straight.model.parameters()))
