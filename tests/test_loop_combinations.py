"Training-loop features in combination: a mid-epoch resume's batch numbers, EMA across changed models, what lr_find leaves alone."
import contextlib, copy, io, warnings
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import Callback, Learner, MetricsCB, ProgressCB, RecorderCB, TrainCB
from miniai.accel import EMA, NanGuardCB, NonFiniteLossError
from miniai.distributed import StepCheckpointCB


def _dls(bs=8):
    g = torch.Generator().manual_seed(123)
    x, y = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 3, (40,), generator=g)
    xv, yv = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 3, (16,), generator=g)
    return DataLoaders(DeviceImageLoader(x, y, bs=bs, shuffle=True, seed=0, device='cpu'), DeviceImageLoader(xv, yv, bs=bs, device='cpu'))

def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4*64, 3))

class _StopAfter(Callback):
    "Raise `exc` after the n-th training batch of the fit (a killed run)."
    order = 100
    def __init__(self, n, exc=RuntimeError): self.n, self.exc, self.seen = n, exc, 0
    def after_batch(self, learn):
        if learn.training:
            self.seen += 1
            if self.seen == self.n: raise self.exc()

class _Poison(Callback):
    "Make the training loss NaN at (epoch, batch), the batch counted by the loader's own position in the epoch."
    order = 35
    def __init__(self, epoch, batch): self.at = (epoch, batch)
    def after_loss(self, learn):
        if learn.training and (learn.epoch, learn.dl.state_dict()['batches_done'] - 1) == self.at: learn.loss = learn.loss*float('nan')


def test_iter_counts_the_epochs_batches_after_a_mid_epoch_resume(tmp_path):
    "After StepCheckpointCB resumes in the middle of an epoch, `learn.iter` is the batch's index in the epoch, not 0."
    ck = tmp_path/'ck.pt'
    mk = lambda *cbs: Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), StepCheckpointCB(ck, every_steps=3), *cbs])
    set_seed(1)
    with pytest.raises(RuntimeError): mk().fit(2, valid=False, cbs=[_StopAfter(4)])   # saved after the epoch's batch 3 (index 2)
    seen = []
    class Log(Callback):
        def after_batch(self, learn):
            if learn.training: seen.append((learn.epoch, learn.iter, learn.dl.state_dict()['batches_done'] - 1))
    with contextlib.redirect_stdout(io.StringIO()): mk().fit(2, valid=False, cbs=[Log()])
    assert seen[0] == (0, 3, 3) and all(i == b for _, i, b in seen) and len(seen) == 2*5 - 3


def test_nan_guard_names_the_same_batch_after_a_mid_epoch_resume(tmp_path):
    def run(ck, *cbs):
        learn = Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), NanGuardCB(every=1), StepCheckpointCB(ck, every_steps=2)])
        with pytest.raises(NonFiniteLossError) as e, contextlib.redirect_stdout(io.StringIO()): learn.fit(2, cbs=[*cbs, _Poison(1, 4)])
        return str(e.value).split('. Lower')[0]
    set_seed(1); want = run(tmp_path/'ref.pt')
    assert 'epoch 1, batch 4' in want
    set_seed(1)
    learn = Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), NanGuardCB(every=1), StepCheckpointCB(tmp_path/'ck.pt', every_steps=2)])
    with pytest.raises(RuntimeError): learn.fit(2, cbs=[_StopAfter(8)])   # killed; saved after epoch 1's batch 3 (index 2)
    assert torch.load(tmp_path/'ck.pt', weights_only=True)['extra']['batches_done'] == 3
    assert run(tmp_path/'ck.pt') == want


def test_ema_follows_a_model_cast_between_fits():
    ema = EMA(0.9)
    learn = Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), ema])
    learn.fit(1, valid=False)
    learn.model.double(); learn.dls = DataLoaders(*[_Double(dl) for dl in (learn.dls.train, learn.dls.valid)])
    avg = [s.double() for s in ema.shadow]
    learn.fit(1, valid=False, lr=0.05)   # an optimizer over the cast parameters
    assert all(s.dtype == torch.float64 for s in ema.shadow) and ema.n_updates == 10
    assert all(not torch.equal(a, s) for a, s in zip(avg, ema.shadow) if a.numel() > 10)   # the same average, moved on

class _Double:
    "A loader of float64 batches (for a model cast to float64)."
    def __init__(self, dl): self.dl = dl
    def __len__(self): return len(self.dl)
    def __iter__(self): return ((x.double(), y) for x, y in self.dl)


def test_ema_starts_a_new_average_when_the_parameters_were_replaced():
    "A new head with the same names: the old average would follow tensors no longer in the model (and `average()` would swap into them)."
    ema = EMA(0.9)
    learn = Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), ema])
    learn.fit(1, valid=False)
    learn.model[4] = nn.Linear(4*64, 3)
    with pytest.warns(UserWarning, match='parameters were replaced'): learn.fit(1, valid=False, lr=0.05)
    head = learn.model[4].weight
    assert any(p is head for p in ema.params) and ema.n_updates == 5
    avg = ema.shadow[ema.names.index('4.weight')].clone()
    with ema.average() as m: assert torch.equal(m[4].weight, avg)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); learn.fit(1, valid=False)   # unchanged parameters: the average goes on, no warning
    assert ema.n_updates == 10


def test_lr_find_leaves_the_last_fits_logs_the_model_mode_and_the_scaler_alone():
    set_seed(1)
    rec, prog = RecorderCB(), ProgressCB(file=io.StringIO())
    learn = Learner(_model(), _dls(), F.cross_entropy, lr=0.05, cbs=[TrainCB(), MetricsCB(), rec, prog])
    learn.grad_scaler = torch.amp.GradScaler('cpu', init_scale=1024., growth_interval=2)   # as float16 keeps one across fits
    with contextlib.redirect_stderr(io.StringIO()): learn.fit(2)
    before = (copy.deepcopy(rec.recs), list(prog.losses), list(prog.val_losses), list(prog.rows), learn.grad_scaler.state_dict())
    assert not learn.model.training and len(before[1]) == 10 and len(before[2]) == 2
    with contextlib.redirect_stderr(io.StringIO()): finder = learn.lr_find(show_plot=False, max_epochs=3, gamma=3.)
    assert len(finder.losses) > 3
    assert (rec.recs, prog.losses, prog.val_losses, prog.rows, learn.grad_scaler.state_dict()) == before
    assert not learn.model.training
