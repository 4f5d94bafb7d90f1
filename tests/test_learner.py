"Tests for miniai.learner: the event loop, cancel levels, metrics, progress output, LR finder and schedulers."
import io, math
from functools import partial
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from types import SimpleNamespace as NS
from miniai.learner import (EVENTS, Callback, CancelBatchException, CancelEpochException, CancelFitException,
                            Learner, TrainCB, TrainLearner, DeviceCB, BatchTransformCB, MetricsCB, ProgressCB,
                            SingleBatchCB, LRFinderCB, BatchSchedCB, EpochSchedCB, OneCycleCB, RecorderCB,
                            batch_size, in_notebook, run_cbs)
from torcheval.metrics import MulticlassAccuracy  # after miniai.learner, which imports it without its warning


def line_dls(n=200, bs=50, n_valid=None, seed=0):
    "y = 3x - 1 + noise, batched in plain lists."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g); y = 3*x - 1 + 0.1*torch.randn(n, 1, generator=g)
    batches = [(x[i:i+bs], y[i:i+bs]) for i in range(0, n, bs)]
    return NS(train=batches, valid=batches[:n_valid or 1])


def blobs_dls(n=240, bs=40, seed=0):
    "Three well separated Gaussian blobs in 2D (a tiny classification problem)."
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[3., 0.], [-3., 0.], [0., 3.]])
    x = centres[y] + 0.5*torch.randn(n, 2, generator=g)
    batches = [(x[i:i+bs], y[i:i+bs]) for i in range(0, n, bs)]
    return NS(train=batches[:-1], valid=batches[-1:])


class EventLog(Callback):
    "Record every event as (event, epoch, iter, training)."
    def __init__(self, order=0): self.order, self.log = order, []
    def names(self): return [e for e, *_ in self.log]
for _ev in EVENTS:
    setattr(EventLog, _ev, (lambda ev: lambda self, learn: self.log.append((ev, learn.epoch, learn.iter, learn.training)))(_ev))


class RaiseAt(Callback):
    "Raise `exc` at event `event` when `when(learn)` is true."
    def __init__(self, event, exc, when=lambda learn: True):
        self.exc, self.when = exc, when
        setattr(self, event, self._maybe_raise)
    def _maybe_raise(self, learn):
        if self.when(learn): raise self.exc()


def _mse(model_seed=0, **kw):
    torch.manual_seed(model_seed)
    return Learner(nn.Linear(1, 1), line_dls(**kw), F.mse_loss, lr=0.1, cbs=[TrainCB()])


# ---------------------------------------------------------------- training works
def test_loss_decreases_and_fits_line():
    learn = _mse()
    mcb = MetricsCB()
    learn.fit(8, cbs=[mcb])
    train = [h['loss'] for h in mcb.history if h['phase'] == 'train']
    assert all(a > b for a, b in zip(train, train[1:])), train
    assert train[-1] < 0.05 * train[0]
    assert abs(learn.model.weight.item() - 3) < 0.1 and abs(learn.model.bias.item() + 1) < 0.1


def test_train_learner_matches_train_cb():
    "TrainLearner (methods) and Learner+TrainCB (callbacks) give identical weights."
    a = _mse()
    torch.manual_seed(0)
    b = TrainLearner(nn.Linear(1, 1), line_dls(), F.mse_loss, lr=0.1)
    a.fit(2); b.fit(2)
    assert torch.equal(a.model.weight, b.model.weight) and torch.equal(a.model.bias, b.model.bias)


def test_classifier_accuracy_metric():
    torch.manual_seed(0)
    learn = Learner(nn.Linear(2, 3), blobs_dls(), F.cross_entropy, lr=0.1, cbs=[TrainCB()])
    mcb = MetricsCB(MulticlassAccuracy())
    learn.fit(3, cbs=[mcb])
    ev = [h for h in mcb.history if h['phase'] == 'eval']
    assert ev[-1]['MulticlassAccuracy'] > 0.95 and ev[-1]['loss'] < ev[0]['loss']
    assert set(mcb.history[0]) == {'epoch', 'phase', 'loss', 'MulticlassAccuracy', 'time'}


def test_validation_has_no_grad_and_eval_mode():
    seen = []
    class Check(Callback):
        order = 1
        def after_predict(self, learn): seen.append((learn.training, learn.model.training, learn.preds.requires_grad))
    _mse().fit(1, cbs=[Check()])
    assert (True, True, True) in seen and (False, False, False) in seen
    assert all(s in {(True, True, True), (False, False, False)} for s in seen)


def test_fit_keeps_optimizer_unless_lr_given():
    learn = _mse()
    learn.fit(1); opt = learn.opt
    learn.fit(1); assert learn.opt is opt
    learn.fit(1, lr=0.01); assert learn.opt is not opt and learn.opt.param_groups[0]['lr'] == 0.01


def test_fit_cbs_are_temporary():
    learn = _mse()
    extra = EventLog()
    learn.fit(1, cbs=[extra])
    assert extra not in learn.cbs and len(learn.cbs) == 1
    n = len(extra.log); learn.fit(1); assert len(extra.log) == n


# ---------------------------------------------------------------- events and order
def test_event_sequence_one_train_one_valid_batch():
    learn = Learner(nn.Linear(1, 1), NS(train=line_dls().train[:1], valid=line_dls().valid), cbs=[TrainCB()])
    log = EventLog(); learn.fit(1, cbs=[log])
    batch_train = ['before_batch', 'predict', 'after_predict', 'get_loss', 'after_loss', 'backward', 'after_backward',
                   'step', 'after_step', 'zero_grad', 'after_batch', 'cleanup_batch']
    batch_valid = ['before_batch', 'predict', 'after_predict', 'get_loss', 'after_loss', 'after_batch', 'cleanup_batch']
    expected = (['before_fit', 'before_epoch'] + batch_train + ['after_epoch', 'cleanup_epoch', 'before_epoch']
                + batch_valid + ['after_epoch', 'cleanup_epoch', 'after_fit', 'cleanup_fit'])
    assert log.names() == expected


def test_callbacks_run_sorted_by_order():
    calls = []
    class C(Callback):
        def __init__(self, name, order): self.name, self.order = name, order
        def before_batch(self, learn): calls.append(self.name)
    cbs = [C('late', 70), C('early', -20), C('mid', 0), C('mid2', 0)]
    learn = Learner(nn.Linear(1, 1), NS(train=line_dls().train[:1], valid=[]), cbs=[TrainCB()] + cbs)
    learn.fit(1)
    assert calls == ['early', 'mid', 'mid2', 'late']
    # the built-in orders from the contract
    assert DeviceCB.order < BatchTransformCB.order < TrainCB.order < BatchSchedCB.order < MetricsCB.order \
        < ProgressCB.order < RecorderCB.order < LRFinderCB.order < SingleBatchCB.order


def test_run_cbs_skips_missing_methods():
    out = []
    class A(Callback):
        def after_fit(self, learn): out.append(learn)
    run_cbs([Callback(), A()], 'after_fit', 'L'); run_cbs([A()], 'before_fit', 'L')
    assert out == ['L']


def test_batch_transform_and_device_cb():
    seen = []
    class Look(Callback):
        def predict(self, learn): seen.append((learn.training, learn.batch[0].flatten()[0].item()))
    dls = NS(train=[(torch.zeros(2, 1), torch.zeros(2, 1))], valid=[(torch.zeros(2, 1), torch.zeros(2, 1))])
    tfm = lambda b: (b[0] + 5, b[1])
    learn = Learner(nn.Linear(1, 1), dls, cbs=[TrainCB(), Look(), DeviceCB('cpu'), BatchTransformCB(tfm, on_val=False)])
    learn.fit(1)
    assert seen == [(True, 5.0), (False, 0.0)]


def test_start_epoch_resume_hook():
    class Resume(Callback):
        order = 80
        def before_fit(self, learn): learn.start_epoch = 2
    log = EventLog()
    _mse().fit(4, cbs=[Resume(), log])
    assert sorted({e for ev, e, *_ in log.log if ev == 'before_epoch'}) == [2, 3]


def test_grad_scaler_is_used():
    class FakeScaler:
        def __init__(self): self.calls = []
        def scale(self, loss): self.calls.append('scale'); return loss * 1
        def step(self, opt): self.calls.append('step'); opt.step()
        def update(self): self.calls.append('update')
    for learn in (_mse(), TrainLearner(nn.Linear(1, 1), line_dls(), F.mse_loss)):
        learn.grad_scaler = sc = FakeScaler()
        learn.fit(1, valid=False)
        assert sc.calls == ['scale', 'step', 'update'] * len(line_dls().train)


def test_n_inp_two_inputs():
    class Add(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(1, 1)
        def forward(self, a, b): return self.lin(a) + b
    x = torch.randn(8, 1)
    dls = NS(train=[(x, x, 3*x + x)], valid=[])
    learn = Learner(Add(), dls, F.mse_loss, lr=0.1, cbs=[TrainCB(n_inp=2)])
    learn.fit(30)
    assert learn.n_inp == 2 and abs(learn.model.lin.weight.item() - 3) < 0.2


def test_batch_size():
    assert batch_size((torch.zeros(5, 3), torch.zeros(5))) == 5
    assert batch_size(((torch.zeros(7, 3), torch.zeros(7)), torch.zeros(7))) == 7
    assert batch_size({'x': torch.zeros(3, 2)}) == 3


# ---------------------------------------------------------------- cancel levels
def _events(log, ev): return [(e, i, t) for name, e, i, t in log.log if name == ev]


def test_cancel_batch_skips_rest_of_that_batch_only():
    log = EventLog(order=50)
    # cancel training batch 1 of epoch 0, after the loss (so no backward/step for it)
    cancel = RaiseAt('after_loss', CancelBatchException, lambda l: l.training and l.epoch == 0 and l.iter == 1)
    learn = _mse(); learn.fit(2, cbs=[cancel, log])
    n = len(line_dls().train)
    assert len(_events(log, 'before_batch')) == 2*n + 2          # every batch started
    assert (0, 1, True) not in _events(log, 'after_loss')         # order 50 > 0: skipped for this batch
    assert (0, 1, True) not in _events(log, 'step') and (0, 1, True) not in _events(log, 'after_batch')
    assert (0, 1, True) in _events(log, 'cleanup_batch')          # cleanup still runs
    assert (0, 2, True) in _events(log, 'step')                   # next batch runs
    assert len(_events(log, 'after_epoch')) == 4 and len(_events(log, 'after_fit')) == 1


def test_cancel_batch_leaves_weights_of_cancelled_step():
    "Cancelling every training batch before backward means no update at all."
    learn = _mse(); w = learn.model.weight.detach().clone()
    learn.fit(2, cbs=[RaiseAt('after_loss', CancelBatchException, lambda l: l.training)])
    assert torch.equal(learn.model.weight, w)


def test_cancel_epoch_skips_rest_of_epoch_only():
    log = EventLog(order=50)
    cancel = RaiseAt('after_batch', CancelEpochException, lambda l: l.training and l.epoch == 0 and l.iter == 0)
    learn = _mse(); learn.fit(2, cbs=[cancel, log])
    n = len(line_dls().train)
    train_batches = [e for e, i, t in _events(log, 'before_batch') if t]
    assert train_batches.count(0) == 1 and train_batches.count(1) == n    # epoch 0 stopped after one batch
    assert (0, 0, True) not in _events(log, 'after_epoch')                  # after_epoch skipped...
    assert [(e, t) for e, _, t in _events(log, 'cleanup_epoch')] == [(0, True), (0, False), (1, True), (1, False)]
    assert any(e == 0 and not t for e, _, t in _events(log, 'after_epoch'))  # ...but validation of epoch 0 ran
    assert len(_events(log, 'after_fit')) == 1


def test_cancel_fit_stops_everything():
    log = EventLog(order=50)
    cancel = RaiseAt('after_step', CancelFitException, lambda l: l.epoch == 1 and l.iter == 1)
    learn = _mse(); learn.fit(5, cbs=[cancel, log])
    assert log.names()[-3:] == ['cleanup_batch', 'cleanup_epoch', 'cleanup_fit']
    assert 'after_fit' not in log.names()
    assert max(e for _, e, *_ in log.log) == 1
    assert len(_events(log, 'before_batch')) == len(line_dls().train) + 1 + 2   # epoch 0 train+valid, 2 of epoch 1


def test_single_batch_cb():
    log = EventLog()
    _mse().fit(3, cbs=[SingleBatchCB(), log])
    assert log.names().count('predict') == 1 and 'after_fit' not in log.names() and log.names()[-1] == 'cleanup_fit'


def test_other_exceptions_propagate_with_cleanup():
    log = EventLog(order=50)
    with pytest.raises(ZeroDivisionError):
        _mse().fit(1, cbs=[RaiseAt('before_batch', ZeroDivisionError), log])
    assert log.names()[-2:] == ['cleanup_epoch', 'cleanup_fit']


# ---------------------------------------------------------------- metrics
def test_metrics_loss_is_sample_weighted_on_uneven_batches():
    "Batch sizes 4, 4, 2 with known per-batch losses 1, 2, 4: weighted mean 1.6, not the batch mean 2.33."
    xs = [torch.full((4,), 1.), torch.full((4,), 2.), torch.full((2,), 4.)]
    dls = NS(train=[(x, torch.zeros_like(x)) for x in xs], valid=[(x, torch.zeros_like(x)) for x in xs])
    mcb = MetricsCB()
    Learner(nn.Identity(), dls, F.l1_loss, cbs=[TrainCB(), mcb]).fit(1, train=False)
    assert mcb.history[-1]['phase'] == 'eval'
    assert mcb.history[-1]['loss'] == pytest.approx((1*4 + 2*4 + 4*2) / 10)


def test_metrics_loss_matches_full_pass_on_trained_model():
    "Eval loss from MetricsCB == loss of the whole validation set computed in one go (uneven last batch)."
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(23, 2, generator=g), torch.randint(0, 3, (23,), generator=g)
    valid = [(x[i:i+10], y[i:i+10]) for i in range(0, 23, 10)]    # 10, 10, 3
    model = nn.Linear(2, 3)
    mcb = MetricsCB(acc=MulticlassAccuracy())
    Learner(model, NS(train=[], valid=valid), F.cross_entropy, cbs=[TrainCB(), mcb]).fit(1, train=False)
    with torch.no_grad(): preds = model(x)
    assert mcb.history[-1]['loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-5)
    assert mcb.history[-1]['acc'] == pytest.approx((preds.argmax(1) == y).float().mean().item())


def test_metrics_do_not_sync_per_batch():
    "The running loss sum stays a tensor during the epoch (no .item() per batch)."
    seen = []
    class Peek(Callback):
        order = 51
        def after_batch(self, learn): seen.append(type(learn.metrics.loss_sum))
    _mse().fit(1, cbs=[MetricsCB(), Peek()])
    assert seen and all(t is torch.Tensor for t in seen)


# ---------------------------------------------------------------- progress
def test_in_notebook_false_in_tests():
    assert in_notebook() is False


def test_in_notebook_detects_kernel(monkeypatch):
    import IPython
    class Shell:
        def __init__(self, config): self.config = config
    class ZMQInteractiveShell: config = {}
    for shell, expected in [(None, False), (Shell({}), False), (Shell({'TerminalIPythonApp': {}}), False),
                            (Shell({'IPKernelApp': {'connection_file': 'x'}}), True), (ZMQInteractiveShell(), True)]:
        monkeypatch.setattr(IPython, 'get_ipython', lambda: shell)
        assert in_notebook() is expected, shell


def test_progress_cb_outside_notebook_prints_lines(capsys):
    learn = _mse()
    prog = ProgressCB(plot=True, plot_every=2)
    learn.fit(2, cbs=[MetricsCB(), prog])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4
    assert out[0].startswith('epoch 0  phase train  loss ') and out[3].startswith('epoch 1  phase eval  loss ')
    n = len(line_dls().train)
    assert len(prog.losses) == 2*n and len(prog.val_losses) == 2
    fig = prog.plot_losses()   # works without a notebook too
    assert len(fig.axes[0].lines) == 2


def test_progress_cb_notebook_mode_renders_table_and_plot(capsys):
    "Forced notebook mode outside Jupyter: IPython's display falls back to printing reprs; the HTML table and PNG are built."
    prog = ProgressCB(plot=True, plot_every=2, notebook=True)
    _mse().fit(2, cbs=[MetricsCB(), prog])
    out = capsys.readouterr().out
    assert '<IPython.core.display.HTML object>' in out and '<IPython.core.display.Image object>' in out
    assert len(prog.rows) == 4


def test_progress_cb_without_metrics_and_file_argument():
    buf = io.StringIO()
    _mse().fit(1, cbs=[ProgressCB(file=buf)])
    assert buf.getvalue() == ''   # nothing to log, but no crash


@pytest.mark.parametrize('notebook', [False, True])
def test_progress_cb_survives_a_phase_cancelled_before_it_starts(notebook, capsys):
    "A callback that runs before ProgressCB cancels a phase in `before_epoch`: no bar was made, cleanup must not fail."
    class SkipTrain(Callback):
        order = 0
        def before_epoch(self, learn):
            if learn.training: raise CancelEpochException()
    elog = EventLog(order=100)
    prog = ProgressCB(notebook=notebook, file=io.StringIO())
    _mse().fit(2, cbs=[SkipTrain(), MetricsCB(), prog, elog])
    assert elog.names().count('before_epoch') == 2 and elog.names().count('cleanup_epoch') == 4   # only the valid phases ran
    assert prog.bar is None and prog.losses == [] and [r['phase'] for r in prog.rows] == ['eval', 'eval']


# ---------------------------------------------------------------- LR finder
def test_lr_find_stops_on_divergence_and_restores():
    torch.manual_seed(0)
    learn = Learner(nn.Linear(1, 1), NS(train=line_dls(2000, 20).train, valid=[]), F.mse_loss, cbs=[TrainCB()])
    w, opt = learn.model.weight.detach().clone(), learn.opt
    finder = learn.lr_find(start_lr=1e-3, gamma=1.2, show_plot=False)
    n = len(finder.losses)
    assert n < 100                                            # stopped early (100 batches available)
    assert finder.losses[-1] > 3*min(finder.losses)           # because the loss diverged
    assert all(l <= 3*min(finder.losses[:i+1]) for i, l in enumerate(finder.losses[:-1]))
    assert finder.lrs[0] == pytest.approx(1e-3) and finder.lrs[1] == pytest.approx(1.2e-3)
    assert torch.equal(learn.model.weight, w) and learn.opt is opt


def test_lr_find_stops_on_nan():
    class NanAfter(Callback):
        order = 1
        def after_loss(self, learn):
            if learn.iter == 3: learn.loss = learn.loss * float('nan')
    learn = _mse(n=400, bs=20); learn.cbs.append(NanAfter())
    finder = learn.lr_find(show_plot=False)
    assert len(finder.losses) == 4 and math.isnan(finder.losses[-1])


def test_lr_find_leaves_out_schedulers_and_metrics():
    learn = _mse(n=400, bs=20)
    mcb, sched = MetricsCB(), BatchSchedCB(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.))
    learn.cbs += [mcb, sched]
    finder = learn.lr_find(show_plot=False)
    assert finder.lrs[1] == pytest.approx(1.3e-5)       # the StepLR (which would zero the lr) was not used
    assert mcb.history == [] and mcb in learn.cbs and sched in learn.cbs


# ---------------------------------------------------------------- schedulers and recorder
class CountSched:
    "A fake scheduler counting its steps."
    def __init__(self, opt): self.n = 0
    def step(self): self.n += 1


def test_batch_sched_steps_once_per_training_batch_not_at_optimizer_step():
    learn = _mse()
    cb = BatchSchedCB(CountSched)
    learn.fit(3, cbs=[cb])
    assert cb.sched.n == 3*len(line_dls().train)     # not doubled by the optimizer `step` event, not in validation
    assert learn.sched is cb.sched
    assert not hasattr(cb, 'step')                    # its helper is `_step_sched`, not an event name


def test_epoch_sched_steps_once_per_training_epoch():
    cb = EpochSchedCB(CountSched)
    _mse().fit(3, cbs=[cb])
    assert cb.sched.n == 3


def test_one_cycle_runs_full_schedule():
    learn = _mse()
    rec = RecorderCB()
    learn.fit(4, cbs=[OneCycleCB(0.3, pct_start=0.25), rec])   # OneCycleLR raises if stepped too often
    lrs = rec.values('lr')
    n = 4*len(line_dls().train)
    assert len(lrs) == n
    assert lrs.max() == pytest.approx(0.3, rel=1e-4) and lrs.argmax() == round(0.25*n) - 1
    assert lrs[0] == pytest.approx(0.3/25) and lrs[-1] < 1e-4 and (lrs[1:] != lrs[:-1]).all()


class _Stream:
    "A loader without len() (a streamed data set): the line batches, one pass per iteration."
    def __init__(self, batches): self.batches = batches
    def __iter__(self): return iter(self.batches)


def _stream_mse():
    torch.manual_seed(0)
    dls = line_dls()
    return Learner(nn.Linear(1, 1), NS(train=_Stream(dls.train), valid=_Stream(dls.valid)), F.mse_loss, lr=0.1, cbs=[TrainCB()])


def test_loader_without_len_trains_with_progress_and_metrics(capsys):
    "The progress bar has no total then, but training, metrics and the log work as with a sized loader."
    learn, rec = _stream_mse(), RecorderCB()
    learn.fit(3, cbs=[MetricsCB(), ProgressCB(), rec])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 6 and out[-1].startswith('epoch 2  phase eval  loss ')
    losses = rec.values('loss')
    assert len(losses) == 3*len(line_dls().train) and losses[-4:].mean() < losses[:4].mean()/10


def test_one_cycle_without_len_needs_total_steps():
    "Without len() the schedule's length is unknown: a clear error, and `total_steps=` makes it run the full cycle."
    with pytest.raises(TypeError, match=r'the training loader has no len\(\): pass `total_steps=`'):
        _stream_mse().fit(2, cbs=[OneCycleCB(0.3)])
    rec = RecorderCB()
    n = 2*len(line_dls().train)
    _stream_mse().fit(2, cbs=[OneCycleCB(0.3, total_steps=n, pct_start=0.25), rec])   # OneCycleLR raises if stepped too often
    lrs = rec.values('lr')
    assert len(lrs) == n and lrs.max() == pytest.approx(0.3, rel=1e-4) and lrs.argmax() == round(0.25*n) - 1 and lrs[-1] < 1e-4


def test_recorder_keeps_losses_on_device_and_plots():
    learn = _mse()
    rec = RecorderCB()
    learn.fit(2, cbs=[rec])
    assert all(isinstance(v, torch.Tensor) for v in rec.recs['loss'])
    assert isinstance(rec.recs['lr'][0], float)
    assert len(rec.values('loss')) == 2*len(line_dls().train)
    fig = rec.plot(); assert len(fig.axes) == 2


# ---------------------------------------------------------------- contract details (found by mutation testing)
def test_fit_resets_start_epoch_and_counts_epochs_done():
    "Every `fit` starts from epoch 0 unless a callback resumes it; `epochs_done` counts only finished epochs."
    class Resume(Callback):
        order = 80
        def before_fit(self, learn): learn.start_epoch = 2
    learn = _mse()
    learn.fit(3, cbs=[Resume()])
    assert learn.epochs_done == 3
    log = EventLog(); learn.fit(2, cbs=[log])                       # no resume this time: epochs 0 and 1
    assert sorted({e for ev, e, *_ in log.log if ev == 'before_epoch'}) == [0, 1] and learn.epochs_done == 2
    learn.fit(3, cbs=[RaiseAt('before_batch', CancelFitException, lambda l: l.epoch == 1)])
    assert learn.epochs_done == 1                                   # epoch 1 was interrupted


def test_fit_checks_its_arguments():
    learn = _mse()
    for bad in (0, -1, 1.5): pytest.raises(ValueError, learn.fit, bad)
    with pytest.raises(ValueError, match='empty'): Learner(nn.Linear(1, 1), NS(train=[], valid=[]), cbs=[TrainCB()]).fit(1)
    with pytest.raises(ValueError, match='dls.valid'): Learner(nn.Linear(1, 1), NS(train=line_dls().train), cbs=[TrainCB()]).fit(1)


def test_device_cb_moves_model_and_batch():
    "DeviceCB('meta') puts the parameters and the batch on the meta device before anything else sees them."
    seen = []
    class Look(Callback):
        def before_batch(self, learn): seen.append(learn.batch[0].device.type); raise CancelFitException()
    model = nn.Linear(1, 1)
    Learner(model, line_dls(), cbs=[Look(), DeviceCB('meta')]).fit(1)
    assert model.weight.device.type == 'meta' and seen == ['meta']


def test_batch_transform_validation_only():
    seen = []
    class Look(Callback):
        def predict(self, learn): seen.append((learn.training, learn.batch[0].flatten()[0].item()))
    dls = NS(train=[(torch.zeros(2, 1), torch.zeros(2, 1))], valid=[(torch.zeros(2, 1), torch.zeros(2, 1))])
    learn = Learner(nn.Linear(1, 1), dls, cbs=[TrainCB(), Look(), BatchTransformCB(lambda b: (b[0] + 5, b[1]), on_train=False)])
    learn.fit(1)
    assert seen == [(True, 0.0), (False, 5.0)]


def test_batch_size_skips_non_tensor_items():
    assert batch_size(('file.png', torch.zeros(4, 2))) == 4 and batch_size([[], {'y': torch.zeros(6)}]) == 6
    assert batch_size(torch.tensor(3.)) == 1 and batch_size(('a', 'b')) is None


def test_metrics_refuse_a_batch_without_tensors_clearly():
    "MetricsCB weights the loss by the batch size: a batch with no tensor is a clear TypeError, not `loss * None`."
    class StrModel(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(1))
        def forward(self, s): return self.w*len(s)
    dls = NS(train=[('ab', 'cd')], valid=[('ab', 'cd')])
    learn = Learner(StrModel(), dls, loss_func=lambda p, t: p.sum(), cbs=[TrainCB(), MetricsCB()])
    with pytest.raises(TypeError, match='holds no tensor: tuple'): learn.fit(1)


def test_metrics_use_target_after_n_inp_inputs():
    "With two model inputs the metric's target is batch[2], not batch[1]."
    from torcheval.metrics import MeanSquaredError
    class First(nn.Module):
        def forward(self, a, b): return a
    y = torch.arange(6.)
    dls = NS(train=[], valid=[(y.clone(), y + 10, y)])            # preds == target exactly, batch[1] is 10 away
    mcb = MetricsCB(mse=MeanSquaredError())
    Learner(First(), dls, F.mse_loss, cbs=[TrainCB(n_inp=2), mcb]).fit(1, train=False)
    assert mcb.history[-1]['mse'] == 0 and mcb.history[-1]['loss'] == 0


def test_metrics_are_reset_every_phase():
    "Training batches are all wrong, validation batches all right: accuracy 0 then 1 every epoch (no carry-over)."
    class PassThrough(nn.Module):
        def __init__(self): super().__init__(); self.p = nn.Parameter(torch.zeros(()))
        def forward(self, x): return x + 0*self.p
    logits = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    y = torch.tensor([0, 1, 2, 0])
    dls = NS(train=[(logits, (y + 1) % 3)], valid=[(logits, y)])
    mcb = MetricsCB(acc=MulticlassAccuracy())
    Learner(PassThrough(), dls, F.cross_entropy, lr=0., cbs=[TrainCB(), mcb]).fit(2)
    assert [(h['phase'], h['acc']) for h in mcb.history] == [('train', 0.), ('eval', 1.)]*2


def test_format_log_known_line():
    from miniai.learner import format_log
    assert format_log(dict(epoch=3, phase='eval', loss=0.123456, time=75.34)) == 'epoch 3  phase eval  loss 0.1235  time 01:15.3'
    assert format_log(dict(time=3599.96)) == 'time 60:00.0'


def test_progress_cb_val_losses_are_eval_losses_at_batch_count():
    "`val_losses` pairs (training batches so far, eval loss of that epoch), as `plot_losses` draws them."
    learn, mcb, prog = _mse(), MetricsCB(), ProgressCB(notebook=False, file=io.StringIO())
    learn.fit(2, cbs=[mcb, prog])
    n, ev = len(line_dls().train), [h['loss'] for h in mcb.history if h['phase'] == 'eval']
    assert prog.val_losses == [(n, ev[0]), (2*n, ev[1])] and ev[0] != ev[1]


def test_lr_find_needs_no_validation_set():
    "The LR finder trains only, so `dls` without `valid` is fine."
    torch.manual_seed(0)
    learn = Learner(nn.Linear(1, 1), NS(train=line_dls(400, 20).train), F.mse_loss, cbs=[TrainCB()])
    finder = learn.lr_find(show_plot=False)
    assert len(finder.losses) > 1


# ---------------------------------------------------------------- properties a mutation review found unpinned
def test_progress_cb_starts_a_new_log_each_fit():
    "A second `fit` shows its own table and curve; only the LR finder keeps the last fit's log."
    learn, prog = _mse(), ProgressCB(notebook=False, file=io.StringIO())
    n = len(line_dls().train)
    learn.fit(1, cbs=[MetricsCB(), prog])
    learn.fit(1, cbs=[MetricsCB(), prog])
    assert len(prog.losses) == n and [r['phase'] for r in prog.rows] == ['train', 'eval']
    assert [x for x, _ in prog.val_losses] == [n]


def test_progress_cb_reads_losses_every_plot_every_batches():
    "The device losses are read once `plot_every` of them are pending, not one batch later."
    class Count(Callback):
        order = 65
        def __init__(self): self.seen = []
        def after_batch(self, learn):
            if learn.training: self.seen.append(len(learn.progress.losses))
    count = Count()
    _mse().fit(1, valid=False, cbs=[ProgressCB(plot_every=2, notebook=False, file=io.StringIO()), count])
    assert count.seen == [0, 2, 2, 4]


def test_lr_finder_cb_cuts_validation_to_one_batch():
    "Used directly in a fit, the finder runs one validation batch per epoch, then cancels the phase."
    class CountValid(Callback):
        def __init__(self): self.n = 0
        def before_batch(self, learn): self.n += not learn.training
    count = CountValid()
    _mse(n_valid=4).fit(2, cbs=[LRFinderCB(show_plot=False), count])
    assert len(line_dls(n_valid=4).valid) == 4 and count.n == 2


def test_lr_find_show_plot_false_draws_nothing():
    "`lr_find(show_plot=False)` records the rates and draws no figure."
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    plt.close('all')
    data = [(torch.randn(8, 2), torch.randn(8, 1))]*3
    learn = Learner(nn.Linear(2, 1), NS(train=data, valid=data), cbs=[TrainCB()])
    finder = learn.lr_find(max_epochs=2, show_plot=False)
    assert finder.lrs and plt.get_fignums() == []


def test_progress_bar_counts_batches(capsys):
    "The progress bar counts one step per batch, in training and in validation."
    class Peek(Callback):
        order = 61   # after ProgressCB.after_epoch (60), before its cleanup_epoch closes the bar
        def __init__(self): self.ns = []
        def after_epoch(self, learn): self.ns.append((learn.progress.bar.n, len(learn.dl)))
    data = [(torch.randn(4, 2), torch.randn(4, 1))]*3
    peek = Peek()
    Learner(nn.Linear(2, 1), NS(train=data, valid=data[:2]), cbs=[TrainCB(), ProgressCB(notebook=True), peek]).fit(1)   # the notebook bar: a terminal bar is off without a TTY
    assert peek.ns == [(3, 3), (2, 2)]


def test_progress_live_plot_redraws_every_plot_every(monkeypatch, capsys):
    "The notebook's live loss plot is redrawn every `plot_every` batches, within the epoch."
    pcb = ProgressCB(plot=True, plot_every=2, notebook=True)
    draws = []
    monkeypatch.setattr(pcb, '_draw', lambda: draws.append(len(pcb.losses)))
    data = [(torch.randn(4, 2), torch.randn(4, 1))]*4
    Learner(nn.Linear(2, 1), NS(train=data, valid=data), cbs=[TrainCB(), pcb]).fit(1, valid=False)
    assert draws[:2] == [2, 4]


def test_metrics_see_predictions_without_autograd_history():
    "The metrics get the training predictions detached, so accumulated states keep no autograd graph alive."
    class Spy:
        device = torch.device('cpu')
        def __init__(self): self.grads = []
        def reset(self): pass
        def to(self, d): return self
        def update(self, preds, targ): self.grads.append(preds.requires_grad)
        def compute(self): return torch.tensor(0.)
    spy = Spy()
    _mse(n=40, bs=20).fit(1, cbs=[MetricsCB(spy=spy)])
    assert spy.grads == [False]*3     # two training batches and one validation batch


def test_fit_trains_on_a_loader_whose_len_raises():
    "A torch DataLoader over an IterableDataset has a __len__ that raises TypeError: `fit` trains on it all the same."
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([(torch.ones(1), torch.ones(1))]*4)
    dl = torch.utils.data.DataLoader(Stream(), batch_size=2)
    with pytest.raises(TypeError): len(dl)
    seen = []
    class Seen(Callback):
        def after_batch(self, learn): seen.append(learn.iter)
    Learner(nn.Linear(1, 1), NS(train=dl, valid=None), F.mse_loss, cbs=[TrainCB(), Seen()]).fit(1, valid=False)
    assert seen == [0, 1]



def test_a_batchnorm_batch_of_one_says_what_to_change():
    "torch's BatchNorm error on a one-item training batch comes back with the batch size and the cure; fits that work are left alone."
    from torch.utils.data import DataLoader, TensorDataset
    x, y = torch.randn(9, 2), torch.randn(9, 2)
    dl = lambda **kw: DataLoader(TensorDataset(x, y), batch_size=4, **kw)
    bn1 = lambda: nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match=r'a training batch of 1 item\(s\) reached a BatchNorm layer, .*drop the last incomplete batch') as e:
        TrainLearner(bn1(), NS(train=dl(), valid=[]), F.mse_loss).fit(1)
    assert 'Expected more than 1 value per channel' in str(e.value.__cause__)
    TrainLearner(bn1(), NS(train=dl(drop_last=True), valid=[]), F.mse_loss).fit(1)
    TrainLearner(bn1(), NS(train=dl(), valid=dl()), F.mse_loss).fit(1, train=False)   # evaluation: BatchNorm uses its running stats
    TrainLearner(bn1(), NS(train=dl(), valid=[]), F.mse_loss, cbs=[SingleBatchCB()]).fit(1)   # never reaches the last batch
    conv = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten())   # 8x8 maps: one image has 64 values per channel
    TrainLearner(conv, NS(train=DataLoader(TensorDataset(torch.randn(9, 2, 8, 8), torch.randn(9, 128)), batch_size=4), valid=[]), F.mse_loss).fit(1)
    class Bare(nn.Module):   # a loader of bare tensors (no tuples): the hint still names the batch size
        def __init__(self): super().__init__(); self.lin, self.bn = nn.Linear(2, 2), nn.BatchNorm1d(2)
        def forward(self, x): return self.bn(self.lin(x))
    class BareTrain(TrainCB):
        def predict(self, learn): learn.preds = learn.model(learn.batch)
        def get_loss(self, learn): learn.loss = learn.preds.pow(2).mean()
    with pytest.raises(ValueError, match=r'a training batch of 1 item\(s\)'):
        Learner(Bare(), NS(train=[torch.randn(4, 2), torch.randn(1, 2)], valid=[]), cbs=[BareTrain()]).fit(1)
    class Other(nn.Linear):
        def forward(self, x): raise ValueError('something else')
    with pytest.raises(ValueError, match='^something else$'): TrainLearner(Other(2, 2), NS(train=dl(), valid=[]), F.mse_loss).fit(1)
