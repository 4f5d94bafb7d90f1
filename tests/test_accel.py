"Tests for miniai.accel: mixed precision fallback, EMA maths, exact checkpoint resume, refused checkpoints, NaN guard, gradient clipping."
import json, os, warnings
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.core import set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import CancelBatchException, Callback, Learner, MetricsCB, OneCycleCB, SingleBatchCB, TrainCB
from miniai.accel import (EMA, ChannelsLastCB, CheckpointCB, CheckpointError, CompileCB, GradClipCB, MixedPrecision, NanGuardCB,
                          NonFiniteLossError, checkpoint_state, fused_opt_func, load_checkpoint, read_checkpoint,
                          save_checkpoint, to_channels_last, train_throughput)



def tiny_dls(seed, n=64, bs=16):
    g = torch.Generator().manual_seed(123)  # the same images every time; `seed` only drives the shuffle
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return DataLoaders(DeviceImageLoader(x, y, bs=bs, shuffle=True, seed=seed, device='cpu'),
                       DeviceImageLoader(x[:32], y[:32], bs=bs, device='cpu'))


def tiny_model(w=4, drop=0.3):
    return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(drop), nn.Linear(w*64, 4))


def tiny_learner(seed=1, cbs=(), w=4, opt_func=torch.optim.AdamW, max_lr=1e-2):
    set_seed(seed)
    return Learner(tiny_model(w), tiny_dls(seed), F.cross_entropy, cbs=[TrainCB(), OneCycleCB(max_lr), *cbs],
                   opt_func=opt_func)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Spy(Callback):
    "Records the dtype of the predictions and whether autocast was on during `after_predict`."
    order = 15
    def __init__(self): self.dtypes, self.autocast = [], []
    def after_predict(self, learn):
        self.dtypes.append(learn.preds.dtype); self.autocast.append(torch.is_autocast_enabled('cpu'))


class Crash(Callback):
    "Raise KeyboardInterrupt at the start of epoch `epoch` (iter None) or in batch `iter` of it."
    order = 95
    def __init__(self, epoch, iter=None): self.epoch, self.iter = epoch, iter
    def before_epoch(self, learn):
        if self.iter is None and learn.epoch == self.epoch: raise KeyboardInterrupt
    def after_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == self.iter: raise KeyboardInterrupt


# ---------------------------------------------------------------- mixed precision

def test_mixed_precision_cpu_autocast_trains():
    spy, mcb = Spy(), MetricsCB()
    learn = tiny_learner(cbs=[MixedPrecision(cpu=True), spy, mcb])
    learn.fit(6, valid=False)
    assert set(spy.dtypes) == {torch.bfloat16} and all(spy.autocast)
    losses = [h['loss'] for h in mcb.history]
    assert losses[-1] < 0.8*losses[0]
    assert not torch.is_autocast_enabled('cpu')  # closed after the last batch


def test_mixed_precision_default_falls_back_to_float32_on_cpu():
    spy, mp = Spy(), MixedPrecision()
    learn = tiny_learner(cbs=[mp, spy])
    with pytest.warns(UserWarning, match='runs in float32'): learn.fit(1)
    assert not mp.enabled and set(spy.dtypes) == {torch.float32}
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='MixedPrecision')  # the note is given once per callback
        learn.fit(1)


def test_float16_on_cpu_never_touches_cuda(monkeypatch):
    def no_scaler(*a, **k): raise AssertionError('GradScaler created on a CPU')
    monkeypatch.setattr(torch.amp, 'GradScaler', no_scaler)
    spy, mp = Spy(), MixedPrecision(torch.float16)
    learn = tiny_learner(cbs=[mp, spy])
    with pytest.warns(UserWarning, match='float16 needs CUDA'): learn.fit(1)
    assert learn.grad_scaler is None and set(spy.dtypes) == {torch.float32}
    with pytest.raises(ValueError, match='bfloat16 or torch.float16'): MixedPrecision(torch.float32)


def test_mixed_precision_with_lr_finder_and_cancelled_batches():
    learn = tiny_learner(cbs=[MixedPrecision(cpu=True)])
    finder = learn.lr_find(max_epochs=4, show_plot=False)
    assert len(finder.lrs) > 3 and finder.lrs[-1] > finder.lrs[0]
    assert not torch.is_autocast_enabled('cpu')

    class Boom(Callback):
        def after_predict(self, learn): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'): tiny_learner(cbs=[MixedPrecision(cpu=True), Boom()]).fit(1)
    assert not torch.is_autocast_enabled('cpu')  # cleanup_batch closed autocast

    class SkipOdd(Callback):   # cancels every other batch after its forward pass: autocast must close each time
        def after_predict(self, learn):
            self.autocast_inside = torch.is_autocast_enabled('cpu')
            if learn.iter % 2: raise CancelBatchException()
    skip, mcb = SkipOdd(), MetricsCB()
    learn = tiny_learner(cbs=[MixedPrecision(cpu=True), skip, mcb])
    learn.fit(1)
    assert skip.autocast_inside and not torch.is_autocast_enabled('cpu') and np.isfinite(mcb.history[0]['loss'])


# ---------------------------------------------------------------- hot-path options

def test_channels_last_compile_and_fused_opt_on_cpu():
    class BatchSpy(Callback):
        order = 8
        def before_fit(self, learn): self.compiled = set()
        def before_batch(self, learn):
            self.cl = learn.batch[0].is_contiguous(memory_format=torch.channels_last)
            self.compiled.add((learn.training, learn.model._compiled_call_impl is not None))
    spy, ccb = BatchSpy(), CompileCB(backend='eager')
    learn = tiny_learner(cbs=[ChannelsLastCB(), ccb, spy])
    keys = list(learn.model.state_dict())
    learn.fit(1)
    assert spy.cl and learn.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert spy.compiled == {(True, True), (False, False)}   # the training step compiled, validation eager
    assert learn.model._compiled_call_impl is None and list(learn.model.state_dict()) == keys   # eager after fit
    first = ccb.compiled
    learn.fit(1, valid=False)
    assert ccb.compiled is first and spy.compiled == {(True, True)}   # a second fit reuses the compiled forward
    learn.model = tiny_model()   # ... of that model only: a new model is compiled for itself, and trained
    w0 = learn.model[0].weight.detach().clone()
    learn.fit(1, valid=False, lr=1e-3)
    assert ccb.model is learn.model and ccb.compiled is not first and learn.model._compiled_call_impl is None
    assert not torch.equal(learn.model[0].weight, w0)
    learn = tiny_learner(cbs=[CompileCB(compile_eval=True, backend='eager'), spy])
    learn.fit(1)
    assert spy.compiled == {(True, True), (False, True)} and learn.model._compiled_call_impl is None
    opt = fused_opt_func(torch.optim.AdamW, eps=1e-5)(tiny_model().parameters(), 1e-3)
    assert opt.defaults['fused'] is None and opt.defaults['eps'] == 1e-5 and opt.defaults['lr'] == 1e-3


def test_compile_cb_drops_the_incomplete_training_batch_during_fit_only():
    class Sizes(Callback):
        order = 8
        def before_fit(self, learn): self.train, self.valid = [], []
        def before_batch(self, learn): (self.train if learn.training else self.valid).append(len(learn.batch[0]))
    def fit(dls, **kw):
        spy = Sizes()
        set_seed(1)
        Learner(tiny_model(), dls, F.cross_entropy, cbs=[TrainCB(), CompileCB(backend='eager', **kw), spy]).fit(1)
        return spy
    dls = tiny_dls(1, n=60)   # 60 images in batches of 16: 16, 16, 16, 12
    spy = fit(dls)
    assert spy.train == [16]*3 and spy.valid == [16, 16] and not dls.train.drop_last   # put back after fit
    assert fit(dls, drop_last=False).train == [16]*3 + [12]                            # asked to keep it
    assert fit(tiny_dls(1, n=10)).train == [10]     # fewer images than a batch: dropping would leave nothing
    x, y = torch.zeros(20, 1, 8, 8), torch.zeros(20, dtype=torch.long)
    tdl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    assert fit(DataLoaders(tdl, tdl)).train == [16, 4]   # a torch DataLoader cannot change after construction: kept


def test_train_throughput_refuses_batches_without_tensors():
    "Images are counted by each batch's first tensor: a batch with none is a clear TypeError, not `int += None`."
    learn = tiny_learner()
    learn.dls.train = [('no', 'tensor')]
    class Const(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(()))
        def forward(self, s): return self.w*len(s)
    learn.model, learn.loss_func = Const(), lambda p, t: p
    with pytest.raises(TypeError, match='holds no tensor: tuple'): train_throughput(learn, epochs=1, warmup=0)


def test_train_throughput_runs():
    ips = train_throughput(tiny_learner(cbs=[EMA()]), epochs=1, warmup=0)
    assert 0 < ips < float('inf')


# ---------------------------------------------------------------- EMA

def test_ema_maths_with_and_without_warmup():
    for warmup in (True, False):
        lin = nn.Linear(3, 2)
        ema = EMA(decay=0.9, warmup=warmup)
        ema.track(lin)
        expect = [p.detach().clone().double() for p in lin.parameters()]
        for n in range(30):
            with torch.no_grad():
                for p in lin.parameters(): p.add_(torch.randn_like(p))
            d = min(0.9, (1 + n)/(10 + n)) if warmup else 0.9
            assert ema.current_decay() == pytest.approx(d)
            ema.update()
            expect = [d*e + (1 - d)*p.detach().double() for e, p in zip(expect, lin.parameters())]
            for s, e in zip(ema.shadow, expect): torch.testing.assert_close(s.double(), e, rtol=1e-5, atol=1e-6)
    assert EMA(0.999).current_decay() == pytest.approx(0.1)  # warm-up: the first update mostly copies the weights
    assert EMA(0.999).current_decay(2949) == 2950/2959 and EMA(0.9, warmup=False).current_decay(3) == 0.9   # after n updates


def test_ema_foreach_update_equals_python_loop():
    torch.manual_seed(0)
    model = tiny_model(w=8)
    ema = EMA(0.99)
    ema.track(model)
    ref = [p.detach().clone() for p in model.parameters()]
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters(): p.mul_(0.9).add_(torch.randn_like(p))
        w = 1 - ema.current_decay()
        for r, p in zip(ref, model.parameters()): r.lerp_(p.detach(), w)  # the per-parameter loop
        ema.update()
    for s, r in zip(ema.shadow, ref): assert torch.equal(s, r)


def test_ema_swap_average_and_state_dict():
    model = tiny_model()
    ema = EMA(0.5)
    ema.track(model)
    with torch.no_grad():
        for p in model.parameters(): p.add_(1.)
    ema.update()  # decay 0.1 (warm-up): shadow = 0.1*old + 0.9*new
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    avg = [s.clone() for s in ema.shadow]
    with ema.average() as m:
        assert m is model and all(torch.equal(p, s) for p, s in zip(model.parameters(), avg))
    assert states_equal(model.state_dict(), raw)
    other = EMA(0.5); other.track(tiny_model())
    other.load_state_dict(ema.state_dict())
    assert other.n_updates == 1 and all(torch.equal(a, b) for a, b in zip(other.shadow, avg))
    wrong = EMA(); wrong.track(tiny_model(w=8))
    with pytest.raises(ValueError, match='other shapes'): wrong.load_state_dict(ema.state_dict())


def test_ema_eval_with_averaged_weights():
    ema, mcb = EMA(0.9, eval_ema=True), MetricsCB()
    learn = tiny_learner(cbs=[ema, mcb])
    learn.fit(2)
    raw = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.model.eval()
    valid_loss = lambda: sum(F.cross_entropy(learn.model(xb), yb, reduction='sum') for xb, yb in learn.dls.valid).item()/32
    with torch.no_grad():
        loss_raw = valid_loss()
        with ema.average(): loss_ema = valid_loss()
    assert mcb.history[-1]['phase'] == 'eval' and abs(loss_ema - loss_raw) > 1e-4
    assert mcb.history[-1]['loss'] == pytest.approx(loss_ema, rel=1e-5)
    assert states_equal(learn.model.state_dict(), raw)  # after fit the model holds its raw weights


# ---------------------------------------------------------------- checkpoints

@pytest.mark.parametrize('valid', [True, False])
@pytest.mark.parametrize('crash', [(1, None), (2, 1)], ids=['between-epochs', 'mid-epoch'])
@pytest.mark.filterwarnings('ignore:MixedPrecision')
def test_resume_is_bit_exact(tmp_path, valid, crash):
    cbs = lambda: [MixedPrecision(), EMA(0.9), NanGuardCB(every=3)]
    straight = tiny_learner(seed=1, cbs=cbs())
    straight.fit(3, valid=valid)

    path = tmp_path/'run.pt'
    with pytest.raises(KeyboardInterrupt): tiny_learner(seed=1, cbs=[*cbs(), CheckpointCB(path), Crash(*crash)]).fit(3, valid=valid)
    assert torch.load(path, weights_only=True)['epoch'] == crash[0]
    resumed = tiny_learner(seed=2, cbs=[*cbs(), CheckpointCB(path)])  # another seed: all that matches comes from the file
    resumed.fit(3, valid=valid)

    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())
    ema_a, ema_b = (next(cb for cb in l.cbs if isinstance(cb, EMA)) for l in (straight, resumed))
    assert all(torch.equal(a, b) for a, b in zip(ema_a.shadow, ema_b.shadow)) and ema_a.n_updates == ema_b.n_updates
    sa, sb = straight.opt.state_dict()['state'], resumed.opt.state_dict()['state']
    assert all(states_equal(sa[i], sb[i]) for i in sa)
    assert torch.load(path, weights_only=True)['epoch'] == 3  # the final checkpoint is the last epoch


def test_a_different_seed_without_checkpoint_differs(tmp_path):
    "Guards the resume test: without loading, the seed-2 learner would end with other weights."
    a, b = tiny_learner(seed=1), tiny_learner(seed=2)
    a.fit(1); b.fit(1)
    assert not states_equal(a.model.state_dict(), b.model.state_dict())


def test_checkpoint_contents_weights_only_and_atomic(tmp_path, monkeypatch):
    learn = tiny_learner(cbs=[EMA()])
    learn.fit(1)
    p = save_checkpoint(tmp_path/'sub'/'a.pt', learn, extra={'note': 'hi', 'acc': [0.5]})
    ck = torch.load(p, weights_only=True)
    assert ck['epoch'] == 1 and ck['extra'] == {'note': 'hi', 'acc': [0.5]}
    assert states_equal(ck['model'], learn.model.state_dict())
    assert set(ck['rng']) >= {'python', 'numpy', 'torch'} and 'state' in ck['loaders']['train']
    assert list(ck['scheds']) == ['0.OneCycleCB'] and ck['ema']['n_updates'] == len(learn.dls.train)
    assert os.listdir(p.parent) == ['a.pt']  # no temporary file left
    with pytest.raises(TypeError, match='loading refuses'): save_checkpoint(p, learn, extra={'f': len})

    good = p.read_bytes()
    real_save = torch.save
    def broken_save(obj, f):   # the file write fails (the in-memory round trip of the settings check works)
        if isinstance(f, __import__('io').BytesIO): return real_save(obj, f)
        f.write(b'half a checkpoint'); raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'): save_checkpoint(p, learn)
    assert p.read_bytes() == good and os.listdir(p.parent) == ['a.pt']  # old file intact, temp removed


def _trained_with_state(seed, **kw):
    learn = tiny_learner(seed=seed, cbs=[EMA()], **kw)
    learn.fit(1, cbs=[SingleBatchCB()])  # creates the optimizer state and the scheduler
    return learn


def _snapshot(learn):
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            repr(learn.opt.state_dict()['param_groups']), learn.cbs[1].sched.last_epoch)


def test_truncated_and_foreign_checkpoints_are_refused_untouched(tmp_path):
    src = _trained_with_state(1)
    p = save_checkpoint(tmp_path/'a.pt', src)
    target = _trained_with_state(2)
    before = _snapshot(target)
    data = p.read_bytes()

    (tmp_path/'cut.pt').write_bytes(data[:len(data)//2])
    with pytest.raises(CheckpointError, match='truncated'): load_checkpoint(tmp_path/'cut.pt', target)
    torch.save({'weights': torch.zeros(2)}, tmp_path/'plain.pt')
    with pytest.raises(CheckpointError, match='not a miniai checkpoint'): load_checkpoint(tmp_path/'plain.pt', target)
    wide = save_checkpoint(tmp_path/'wide.pt', _trained_with_state(1, w=8))
    with pytest.raises(CheckpointError, match=r'another model configuration.*1\.weight'): load_checkpoint(wide, target)
    sgd = save_checkpoint(tmp_path/'sgd.pt', _trained_with_state(1, opt_func=torch.optim.SGD))
    with pytest.raises(CheckpointError, match='the optimizer state of SGD, this learner uses AdamW'): load_checkpoint(sgd, target)  # model fits, optimizer not
    with pytest.raises(FileNotFoundError): load_checkpoint(tmp_path/'missing.pt', target)

    after = _snapshot(target)
    assert states_equal(before[0], after[0]) and before[1:] == after[1:]
    load_checkpoint(p, target)  # a good one still loads
    assert states_equal(target.model.state_dict(), src.model.state_dict())


def test_checkpoint_every_and_resume_flag(tmp_path):
    saved = []
    class Watch(Callback):
        order = 90
        def after_epoch(self, learn):
            if (tmp_path/'c.pt').exists(): saved.append(torch.load(tmp_path/'c.pt', weights_only=True)['epoch'])
    tiny_learner(cbs=[CheckpointCB(tmp_path/'c.pt', every=2), Watch()]).fit(5)
    assert sorted(set(saved)) == [2, 4, 5]
    learn = tiny_learner(cbs=[CheckpointCB(tmp_path/'c.pt', resume=False)])
    learn.fit(1)
    assert torch.load(tmp_path/'c.pt', weights_only=True)['epoch'] == 1  # started over, overwrote


def test_checkpoint_cb_stores_extra_at_each_save(tmp_path):
    seen = []
    def extra(learn):
        seen.append(learn.epochs_done)
        return dict(saves=len(seen), tag='run-a')
    tiny_learner(cbs=[CheckpointCB(tmp_path/'c.pt', every=2, extra=extra)]).fit(3)
    assert len(seen) == 2  # called once per save (epochs 2 and 3), not once per epoch
    assert read_checkpoint(tmp_path/'c.pt')['extra'] == dict(saves=2, tag='run-a')
    tiny_learner(cbs=[CheckpointCB(tmp_path/'d.pt')]).fit(1)
    assert read_checkpoint(tmp_path/'d.pt')['extra'] is None
    with pytest.raises((TypeError, ValueError)):   # only plain values may be stored
        tiny_learner(cbs=[CheckpointCB(tmp_path/'e.pt', extra=lambda learn: dict(model=learn.model))]).fit(1)


def test_evaluation_only_fit_does_not_checkpoint(tmp_path):
    learn = tiny_learner(cbs=[CheckpointCB(tmp_path/'c.pt')])
    learn.fit(1, train=False)
    assert not (tmp_path/'c.pt').exists()


# ---------------------------------------------------------------- NaN guard

class InjectNaN(Callback):
    order = -5
    def __init__(self, at, training=True): self.at, self.training = at, training
    def before_batch(self, learn):
        if learn.training == self.training and learn.iter == self.at:
            learn.batch = (learn.batch[0].float()*float('nan'), *learn.batch[1:])


def test_nan_guard_names_the_batch_without_per_batch_sync(monkeypatch):
    calls = []
    item = torch.Tensor.item
    def counting_item(self): calls.append(1); return item(self)
    monkeypatch.setattr(torch.Tensor, 'item', counting_item)
    learn = Learner(tiny_model(), tiny_dls(1, n=160), F.cross_entropy, cbs=[TrainCB(), NanGuardCB(every=5)])
    learn.fit(1, valid=False)  # 10 finite batches: 2 periodic checks + 1 at the epoch end
    assert len(calls) == 3
    learn = Learner(tiny_model(), tiny_dls(1, n=160), F.cross_entropy, cbs=[TrainCB(), NanGuardCB(every=4), InjectNaN(2)])
    with pytest.raises(NonFiniteLossError, match=r'training loss became nan at epoch 0, batch 2 \(noticed at batch 3\)'):
        learn.fit(1)


def test_nan_guard_in_validation_and_epoch_end_check():
    learn = tiny_learner(cbs=[NanGuardCB(every=100), InjectNaN(1, training=False)])
    with pytest.raises(NonFiniteLossError, match='validation loss became nan at epoch 0, batch 1'): learn.fit(2)


# ---------------------------------------------------------------- gradient clipping

def _linear_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)


def _flat(model): return torch.cat([p.detach().flatten() for p in model.parameters()])


def _sgd_step(max_norm, norm_type=2., scaler=None):
    "One SGD step at lr 1 on one batch through GradClipCB: (gradient by autograd, step taken, callback)."
    torch.manual_seed(0)
    lin, (x, y) = nn.Linear(3, 2), _linear_data()
    g = torch.cat([t.flatten() for t in torch.autograd.grad(F.mse_loss(lin(x), y), list(lin.parameters()))])
    w0, clip = _flat(lin), GradClipCB(max_norm, norm_type)
    learn = Learner(lin, DataLoaders([(x, y)], None), F.mse_loss, lr=1., cbs=[TrainCB(), clip])
    learn.grad_scaler = scaler
    learn.fit(1, valid=False)
    return g, w0 - _flat(lin), clip


@pytest.mark.parametrize('norm_type', [2., 1., float('inf')])
def test_grad_clip_step_is_the_gradient_cut_to_max_norm(norm_type):
    "SGD at lr 1: the step is the autograd gradient times min(1, max_norm/norm), in the chosen p-norm; the norm is recorded."
    g, step, clip = _sgd_step(0.05, norm_type)
    norm = torch.linalg.vector_norm(g, norm_type)
    assert norm > 0.05
    torch.testing.assert_close(step, g*0.05/norm, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.linalg.vector_norm(step, norm_type), torch.tensor(0.05), rtol=1e-5, atol=0)
    torch.testing.assert_close(clip.norms, norm[None], rtol=1e-6, atol=0)
    g, step, clip = _sgd_step(1e3, norm_type)                      # a limit above the norm leaves the gradient alone
    torch.testing.assert_close(step, g, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(clip.norms, norm[None], rtol=1e-6, atol=0)


def test_grad_clip_unscales_the_gradients_of_a_grad_scaler_first():
    "Under a GradScaler (scale 2**10) the clipped step and the recorded norm are those of the true gradients."
    g, plain, clip = _sgd_step(0.05)
    g, scaled, sclip = _sgd_step(0.05, scaler=torch.amp.GradScaler('cpu', init_scale=2.**10))
    torch.testing.assert_close(scaled, plain, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sclip.norms, clip.norms, rtol=1e-6, atol=0)


def test_grad_clip_under_a_grad_scaler_still_skips_an_overflowed_step():
    "An inf loss under a GradScaler: the scaler still skips that step (weights unchanged) and lowers its scale: clipping hides no overflow."
    torch.manual_seed(0)
    lin, (x, y) = nn.Linear(3, 2), _linear_data()
    inf_loss = lambda p, t: F.mse_loss(p, t)*float('inf')
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    learn = Learner(lin, DataLoaders([(x, y)], None), inf_loss, lr=1., cbs=[TrainCB(), GradClipCB(0.05)])
    learn.grad_scaler, w0 = scaler, _flat(lin)
    learn.fit(1, valid=False)
    assert torch.equal(_flat(lin), w0) and scaler.get_scale() == 2.**9


def test_grad_clip_records_every_step_and_syncs_once_per_epoch(host_transfers):
    "One norm per training step over 2 epochs (validation adds none); the only host transfer is one `.cpu()` per epoch."
    counts = host_transfers
    def fit(cbs):
        counts.clear(); learn = tiny_learner(cbs=cbs); learn.fit(2); return dict(counts)
    without, clip = fit([]), GradClipCB(1.)
    with_clip = fit([clip])
    assert len(clip.norms) == 2*4 and clip.norms.dtype == torch.float32 and (clip.norms > 0).all()
    assert with_clip == {**without, 'cpu': without.get('cpu', 0) + 2}
    tiny_learner(cbs=[clip]).fit(1, valid=False)                     # a new fit starts a new record
    assert len(clip.norms) == 4


def test_grad_clip_plot_draws_the_norms_and_the_limit():
    clip = GradClipCB(0.5)
    tiny_learner(cbs=[clip]).fit(1, valid=False)
    ax = clip.plot()
    line, limit = ax.lines
    assert list(line.get_ydata()) == clip.norms.tolist() and list(limit.get_ydata()) == [0.5, 0.5]
    assert ax.get_yscale() == 'log' and 'max_norm = 0.5' in [t.get_text() for t in ax.get_legend().get_texts()]


class CutShort(Callback):
    "After the backward pass of training batch `at` (0 and 2 of each epoch by default), cancel that batch or raise `exc`."
    order = 20
    def __init__(self, exc=CancelBatchException, at=(0, 2)): self.exc, self.at = exc, at
    def after_backward(self, learn):
        if learn.iter in self.at: raise self.exc()


@pytest.mark.parametrize('exc', [CancelBatchException, KeyboardInterrupt])
def test_grad_clip_under_a_grad_scaler_survives_batches_cut_short_after_backward(exc):
    "Steps cut short between backward and step (a cancelled batch, an interrupted fit) leave the scaler ready for the next ones."
    def run(scaler):
        learn = tiny_learner(cbs=[GradClipCB(0.05), CutShort(exc)], opt_func=torch.optim.SGD)
        learn.grad_scaler = scaler
        for _ in range(2):   # an interrupted fit is fitted again
            try: learn.fit(1, valid=False)
            except KeyboardInterrupt: pass
        return _flat(learn.model)
    scaled = run(torch.amp.GradScaler('cpu', init_scale=2.**10))
    torch.testing.assert_close(scaled, run(None), rtol=1e-5, atol=1e-7)   # the same steps as without a scaler


# ---------------------------------------------------------------- the GPU benchmark script

def test_bench_accel_quick_runs(tmp_path, load_script):
    bench = load_script('bench/bench_accel.py')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        bench.main(['--quick', '--grad', '--out', str(tmp_path/'r.json')])
    r = json.loads((tmp_path/'r.json').read_text())
    assert r['quick'] and r['device'] == 'cpu'
    configs = {**bench.CONFIGS, **bench.GRAD_CONFIGS}
    assert set(r['images_per_s']) == set(configs) and all(v > 0 for v in r['images_per_s'].values())
    assert r['rounds'] == 1 and set(r['images_per_s_spread']) == set(configs) and set(r['grad_cost_pct_vs_bfloat16']) == set(bench.GRAD_CONFIGS)
    assert len(r['ema_update_ms']) == 2 and all(v > 0 for v in r['ema_update_ms'].values())
    assert r['optimizer_fused'] is False and 'AdamW, not fused' in r['what']   # CPU parameters: the record says what ran


# ---------------------------------------------------------------- found by an audit of issue 3

def test_fused_opt_func_keeps_generator_param_groups():
    "Groups given as generators (`m.parameters()`) keep their parameters and options."
    m = tiny_model()
    groups = [{'params': m[:2].parameters(), 'lr': 1e-4}, {'params': m[2:].parameters()}]
    opt = fused_opt_func(torch.optim.AdamW)(groups, 1e-3)
    assert [len(g['params']) for g in opt.param_groups] == [4, 2]
    assert [g['lr'] for g in opt.param_groups] == [1e-4, 1e-3]


def test_ema_copy_to_exports_buffers_too():
    "An averaged model exported with `copy_to` behaves as the tracked model under `average()`, BatchNorm included."
    ema = EMA(0.9)
    learn = tiny_learner(cbs=[ema])
    learn.fit(1, valid=False)
    x = next(iter(learn.dls.valid))[0]
    learn.model.eval()
    with ema.average(), torch.no_grad(): want = learn.model(x)
    fresh = tiny_model().eval()
    ema.copy_to(fresh)
    with torch.no_grad(): torch.testing.assert_close(fresh(x), want)
    assert torch.equal(fresh[1].running_mean, learn.model[1].running_mean)
    with pytest.raises(ValueError, match='another architecture'): ema.copy_to(tiny_model(w=8))


def test_ema_copy_to_inside_average_is_refused():
    "Inside `average()` the model holds the average and the shadow the live weights: `copy_to` would export the wrong ones."
    ema = EMA(0.9)
    learn = tiny_learner(cbs=[ema])
    learn.fit(1, valid=False)
    with ema.average():
        with pytest.raises(RuntimeError, match='swap the weights back'): ema.copy_to(tiny_model())
    fresh = tiny_model()
    ema.copy_to(fresh)
    assert all(torch.equal(p, s) for p, s in zip(fresh.parameters(), ema.shadow))


def test_refused_ema_state_leaves_the_ema_as_it_was(tmp_path):
    "A checkpoint whose EMA state does not fit is refused before the EMA is touched (it keeps its model and average)."
    ck = read_checkpoint(save_checkpoint(tmp_path/'a.pt', _trained_with_state(1)))
    ck['ema']['shadow'] = {'x.' + n: t for n, t in ck['ema']['shadow'].items()}   # other parameter names
    torch.save(ck, tmp_path/'b.pt')
    ema, other = EMA(), tiny_model()
    ema.track(other)
    before = [s.clone() for s in ema.shadow]
    target = tiny_learner(seed=2, cbs=[ema])
    with pytest.raises(CheckpointError, match='other parameters'): load_checkpoint(tmp_path/'b.pt', target)
    assert ema.model is other and all(torch.equal(a, b) for a, b in zip(before, ema.shadow))


def test_precision_callbacks():
    "Mixed precision on CUDA only, float16 with its scaler's dtype; a bad value refused on every device."
    from miniai.accel import precision_callbacks
    assert precision_callbacks('bf16', 'cpu') == [] and precision_callbacks(None, 'cuda') == []
    assert [cb.dtype for cb in precision_callbacks('fp16', torch.device('cuda'))] == [torch.float16]
    assert [cb.dtype for cb in precision_callbacks('bf16', 'cuda:0')] == [torch.bfloat16]
    for bad in ('bf61', '', 'fp32', torch.float16):
        with pytest.raises(ValueError, match="must be 'bf16', 'fp16' or None"): precision_callbacks(bad, 'cpu')


def test_resume_into_a_fit_of_another_length_is_refused(tmp_path):
    "A one-cycle schedule planned for 3 epochs cannot continue in a 5-epoch fit: refused before anything loads."
    p = tmp_path/'ck.pt'
    tiny_learner(cbs=[CheckpointCB(p)]).fit(3)
    learn = tiny_learner(seed=2, cbs=[CheckpointCB(p)])
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(CheckpointError, match='3-epoch fit, this one has 5: .*OneCycleCB.* Fit 3 epochs'): learn.fit(5)
    assert states_equal(before, learn.model.state_dict())
    set_seed(0)   # without a schedule the other length is allowed, with a warning
    plain = Learner(tiny_model(), tiny_dls(0), F.cross_entropy, cbs=[TrainCB(), CheckpointCB(tmp_path/'plain.pt')])
    plain.fit(2)
    with pytest.warns(UserWarning, match='2-epoch fit, this one has 3'): plain.fit(3)


def test_resume_over_another_number_of_batches_per_epoch_is_refused(tmp_path, stop_after_step):
    "A compiled run (`CompileCB` drops the incomplete batch) resumed eagerly would overrun its one-cycle schedule: refused."
    p = tmp_path/'ck.pt'
    def learner(drop_last, cbs=()):
        set_seed(1)
        dls = tiny_dls(1, n=60)   # 3 full batches of 16 and one of 12
        dls.train.drop_last = drop_last
        return Learner(tiny_model(), dls, F.cross_entropy, cbs=[TrainCB(), OneCycleCB(1e-2), CheckpointCB(p), *cbs],
                       opt_func=torch.optim.AdamW)
    learner(True, [stop_after_step(4)]).fit(2)   # stopped in epoch 2; the checkpoint holds epoch 1 of 3 steps each
    learn = learner(False)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"planned for 6 steps, this fit's for 8 \(2 epochs of 4 batches\).*drop_last"):
        learn.fit(2)
    assert states_equal(before, learn.model.state_dict())
    resumed = learner(True); resumed.fit(2)   # the same loader as the checkpoint's run finishes it
    assert resumed.cbs[1].sched.last_epoch == 6


def test_save_checkpoint_default_epoch_counts_finished_epochs(tmp_path):
    "By default a checkpoint records the epochs whose phases all finished, not the one in progress."
    learn = tiny_learner()
    assert torch.load(save_checkpoint(tmp_path/'a.pt', learn), weights_only=True)['epoch'] == 0   # never trained
    crashed = tiny_learner(cbs=[Crash(1, iter=1)])
    with pytest.raises(KeyboardInterrupt): crashed.fit(3)
    assert crashed.epoch == 1 and crashed.epochs_done == 1
    assert torch.load(save_checkpoint(tmp_path/'b.pt', crashed), weights_only=True)['epoch'] == 1
    learn.fit(2)
    assert torch.load(save_checkpoint(tmp_path/'c.pt', learn), weights_only=True)['epoch'] == 2


# ---------------------------------------------------------------- found by mutation testing

def test_float16_with_cpu_flag_still_falls_back_to_float32():
    "`cpu=True` enables bfloat16 autocast only: float16 on a CPU has no GradScaler, so it stays float32."
    spy, mp = Spy(), MixedPrecision(torch.float16, cpu=True)
    learn = tiny_learner(cbs=[mp, spy])
    with pytest.warns(UserWarning, match='float16 needs CUDA'): learn.fit(1, valid=False)
    assert not mp.enabled and learn.grad_scaler is None and set(spy.dtypes) == {torch.float32}


def test_grad_scaler_kept_across_fits_and_cleared_without_float16(monkeypatch):
    "On CUDA float16 creates one GradScaler and keeps it (and its scale) for later fits; other settings clear it."
    import miniai.accel as accel
    from types import SimpleNamespace
    made = []
    class FakeScaler:
        def __init__(self, device): made.append(device)
    monkeypatch.setattr(torch.amp, 'GradScaler', FakeScaler)
    monkeypatch.setattr(accel, 'model_device', lambda model: torch.device('cuda'))
    learn = SimpleNamespace(model=nn.Linear(2, 2), grad_scaler=None)
    mp = MixedPrecision(torch.float16)
    mp.before_fit(learn); first = learn.grad_scaler
    mp.before_fit(learn)
    assert isinstance(first, FakeScaler) and learn.grad_scaler is first and made == ['cuda'] and mp.enabled
    MixedPrecision(torch.bfloat16).before_fit(learn)
    assert learn.grad_scaler is None   # bfloat16 needs no scaler: a stale one would keep scaling the loss


def test_autocast_is_closed_before_backward():
    "Autocast covers the forward pass and the loss only; backward runs outside it."
    class BackwardSpy(Callback):
        order = 15
        def __init__(self): self.inside = []
        def after_backward(self, learn): self.inside.append(torch.is_autocast_enabled('cpu'))
    spy = BackwardSpy()
    tiny_learner(cbs=[MixedPrecision(cpu=True), spy]).fit(1, valid=False)
    assert spy.inside and not any(spy.inside)


def test_to_channels_last_converts_only_4d_float_tensors_and_keeps_containers():
    "Integer and non-4-D tensors are left as they are; tuples, lists and dicts keep their types."
    f4, u4, f3 = torch.randn(2, 3, 4, 5), torch.zeros(2, 3, 4, 5, dtype=torch.uint8), torch.randn(3, 4, 5)
    out = to_channels_last((f4, [u4, {'a': f4, 'b': f3}], 7))
    assert type(out) is tuple and type(out[1]) is list and type(out[1][1]) is dict and out[2] == 7
    cl = lambda t: t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    assert cl(out[0]) and cl(out[1][1]['a']) and torch.equal(out[0], f4)
    assert out[1][0].is_contiguous() and not cl(out[1][0]) and out[1][1]['b'] is f3
    from collections import namedtuple
    Batch = namedtuple('Batch', 'images labels')
    nt = to_channels_last(Batch(f4, u4))
    assert type(nt) is Batch and cl(nt.images) and nt.labels is u4   # a namedtuple is rebuilt from its fields


def test_fused_opt_func_default_lr():
    "Called without `lr`, the optimizer gets 1e-3; on the CPU `fused` is not requested."
    opt = fused_opt_func(torch.optim.SGD, momentum=0.9)(tiny_model().parameters())
    assert opt.defaults['lr'] == 1e-3 and opt.defaults['momentum'] == 0.9 and not opt.defaults.get('fused')


def test_fused_opt_func_asks_for_fused_only_when_every_parameter_is_on_cuda():
    "`fused=True` exactly when all parameters (of every group) are CUDA tensors; an explicit `fused` argument wins."
    from types import SimpleNamespace
    on = lambda dev: SimpleNamespace(device=torch.device(dev))   # stand-ins: only `.device` is read
    seen = []
    def opt_cls(params, lr, **kw): seen.append(kw); return params
    cuda, cpu = on('cuda'), on('cpu')
    fused_opt_func(opt_cls, eps=1e-5)([cuda, cuda], 1e-3)
    fused_opt_func(opt_cls)([cuda, cpu], 1e-3)
    fused_opt_func(opt_cls)([{'params': iter([cuda])}, {'params': [cpu]}], 1e-3)
    fused_opt_func(opt_cls)([{'params': iter([cuda])}, {'params': [cuda]}], 1e-3)
    fused_opt_func(opt_cls)([], 1e-3)
    fused_opt_func(opt_cls, fused=False)([cuda], 1e-3)
    assert seen == [dict(fused=True, eps=1e-5), {}, {}, dict(fused=True), {}, dict(fused=False)]


def test_devicecb_warns_when_it_moves_an_unfused_fused_opt_func_model_to_cuda():
    "An optimizer `fused_opt_func` built on CPU parameters is marked; `DeviceCB` warns only when it then moves the model to CUDA."
    from types import SimpleNamespace
    from miniai.learner import DeviceCB
    model = SimpleNamespace(to=lambda dev: None)                    # stands in for a model: CUDA is not needed to move it
    on_cpu = fused_opt_func()(tiny_model().parameters(), 1e-3)
    assert on_cpu.fused_wanted and not on_cpu.defaults.get('fused')
    with pytest.warns(UserWarning, match="not fused: move the model to its device before building the Learner"):
        DeviceCB('cuda').before_fit(SimpleNamespace(model=model, opt=on_cpu))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        DeviceCB('cpu').before_fit(SimpleNamespace(model=model, opt=on_cpu))            # kept on the CPU on purpose
        plain = torch.optim.AdamW(tiny_model().parameters())                            # not asked to fuse
        DeviceCB('cuda').before_fit(SimpleNamespace(model=model, opt=plain))
        chosen = fused_opt_func(fused=False)(tiny_model().parameters(), 1e-3)           # `fused` chosen by the caller
        assert not getattr(chosen, 'fused_wanted', False)
        DeviceCB('cuda').before_fit(SimpleNamespace(model=model, opt=chosen))
        DeviceCB('cuda').before_fit(SimpleNamespace(model=model, opt=None))             # no optimizer yet


def test_ema_matches_float64_reference_over_two_fits():
    "The average continues across fits (warm-up count included): checked against a float64 recomputation."
    class Record(Callback):
        order = 30   # after EMA (20) updated: the weights the average just took in
        def __init__(self): self.ws = []
        def before_fit(self, learn):
            if not self.ws: self.ws.append([p.detach().double().clone() for p in learn.model.parameters()])
        def after_step(self, learn): self.ws.append([p.detach().double().clone() for p in learn.model.parameters()])
    ema, rec = EMA(0.3), Record()   # the warm-up decay passes 0.3 after 3 updates: both branches of the min
    learn = tiny_learner(cbs=[ema, rec])
    learn.fit(1)
    learn.fit(1, valid=False)
    avg = rec.ws[0]
    for n, w in enumerate(rec.ws[1:]):
        d = min(0.3, (1 + n)/(10 + n))
        avg = [d*a + (1 - d)*x for a, x in zip(avg, w)]
    assert ema.n_updates == len(rec.ws) - 1 == 2*len(learn.dls.train)
    for s, a in zip(ema.shadow, avg): torch.testing.assert_close(s.double(), a, rtol=1e-5, atol=1e-6)


def test_ema_decay_range():
    "Decay 0 is allowed (the average is the latest weights); decay 1 would never move and is refused."
    with pytest.raises(ValueError, match=r'\[0, 1\)'): EMA(1.0)
    lin = nn.Linear(2, 2)
    ema = EMA(0.); ema.track(lin)
    with torch.no_grad(): lin.weight.add_(1.)
    ema.update()
    assert torch.equal(ema.shadow[0], lin.weight)


def test_ema_explicit_swap_of_tracked_model_and_foreign_models():
    "`swap(model)` of the tracked model counts as swapped (no saving); `swap` of another model is refused (the shadow would hold it)."
    model = tiny_model()
    ema = EMA(); ema.track(model)
    ema.swap(model)
    with pytest.raises(RuntimeError, match='swap the weights back'): ema.state_dict()
    with pytest.raises(RuntimeError, match='swap the weights back'): ema.load_state_dict({})
    ema.swap(model)
    assert ema.state_dict()['n_updates'] == 0
    shadow = [s.clone() for s in ema.shadow]
    for other in (tiny_model(), tiny_model(w=8)):
        with pytest.raises(ValueError, match="tracked model's weights only"): ema.swap(other)
    assert all(torch.equal(a, b) for a, b in zip(shadow, ema.shadow))
    with pytest.raises(ValueError, match='another architecture'):
        with ema.average(tiny_model(w=8)): pass


def test_ema_average_lends_the_average_to_another_model():
    "`average(other)` puts the average in a model of the same shapes for the block; its weights and the EMA come back unchanged."
    ema = EMA(0.5)
    learn = tiny_learner(cbs=[ema])
    learn.fit(1, valid=False)
    other = tiny_model()
    own, shadow = [p.detach().clone() for p in other.parameters()], [s.clone() for s in ema.shadow]
    with ema.average(other) as m:
        assert m is other and all(torch.equal(p, s) for p, s in zip(other.parameters(), shadow))
        assert not ema._swapped
    assert all(torch.equal(p, w) for p, w in zip(other.parameters(), own))
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, shadow))


def test_ema_validation_fit_inside_average_keeps_the_average_until_the_block_ends():
    "A learner holding the EMA callback, validated inside `average()`: the callback must not swap back what it did not swap."
    ema = EMA(0.9)
    learn = tiny_learner(cbs=[ema])
    learn.fit(2, valid=False)
    live, avg = [p.detach().clone() for p in learn.model.parameters()], [s.clone() for s in ema.shadow]
    with ema.average():
        learn.fit(1, train=False)
        assert all(torch.equal(p, a) for p, a in zip(learn.model.parameters(), avg))   # still the average
    assert not ema._swapped
    assert all(torch.equal(p, w) for p, w in zip(learn.model.parameters(), live))     # the live weights are back
    assert all(torch.equal(s, a) for s, a in zip(ema.shadow, avg))
    with ema.average():
        with pytest.raises(RuntimeError, match='average the average'): learn.fit(1, valid=False)
        with pytest.raises(RuntimeError, match='already holds the average'):
            with ema.average(): pass


def test_ema_state_for_other_parameter_names_is_refused():
    "An EMA state with the right shapes but other parameter names does not load."
    a, b = EMA(), EMA()
    a.track(nn.Sequential(nn.Linear(3, 2)))
    b.track(nn.Sequential(nn.Identity(), nn.Linear(3, 2)))   # same shapes, names '1.weight', '1.bias'
    with pytest.raises(ValueError, match='other parameters'): b.load_state_dict(a.state_dict())


def test_eval_ema_with_checkpoint_saves_raw_weights(tmp_path):
    "With eval_ema, the weights are swapped back before CheckpointCB saves: the file holds the raw model and the average."
    ema = EMA(0.9, eval_ema=True)
    learn = tiny_learner(cbs=[ema, CheckpointCB(tmp_path/'c.pt')])
    learn.fit(2)
    ck = read_checkpoint(tmp_path/'c.pt')
    assert ck['epoch'] == 2 and states_equal(ck['model'], learn.model.state_dict())
    assert all(torch.equal(ck['ema']['shadow'][n], s) for n, s in zip(ema.names, ema.shadow))
    assert not any(torch.equal(s, p) for s, p in zip(ema.shadow, learn.model.parameters()))


def test_train_throughput_is_training_images_per_second(monkeypatch):
    "Images (not batches) of the timed epochs only, divided by the timed seconds; warm-up epochs train but are not counted."
    import miniai.accel as accel
    from types import SimpleNamespace
    clock = iter([10., 12.])
    monkeypatch.setattr(accel, 'time', SimpleNamespace(perf_counter=lambda: next(clock)))
    class Epochs(Callback):
        def __init__(self): self.phases = []
        def before_epoch(self, learn): self.phases.append(learn.training)
    spy = Epochs()
    ips = train_throughput(tiny_learner(cbs=[spy]), epochs=2, warmup=1)
    assert ips == 2*64/2. and spy.phases == [True]*3   # 64 images an epoch, 2 timed epochs in 2 s


def test_checkpoint_restores_python_numpy_and_torch_random_states(tmp_path):
    "`load_checkpoint` puts back every generator (NumPy's cached Gaussian included); `rng=False` leaves them alone."
    import random
    learn = tiny_learner()
    np.random.seed(0); np.random.randn(1)   # odd count: NumPy keeps the second Gaussian of the pair
    draw = lambda: (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    p = save_checkpoint(tmp_path/'r.pt', learn)
    first = draw()
    load_checkpoint(p, learn)
    assert draw() == first
    load_checkpoint(p, learn)
    draw()
    nxt = draw()
    load_checkpoint(p, learn); draw()
    load_checkpoint(p, learn, rng=False)
    assert draw() == nxt   # not rewound


def test_torch_dataloader_generator_is_checkpointed(tmp_path):
    "A torch DataLoader shuffled by its own `generator` reshuffles the same way after loading a checkpoint."
    x, y = torch.zeros(32, 1, 8, 8), torch.arange(32)
    tdl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True,
                                      generator=torch.Generator().manual_seed(0))
    learn = Learner(tiny_model(), DataLoaders(tdl, tdl), F.cross_entropy, cbs=[TrainCB()])
    order = lambda: torch.cat([yb for _, yb in tdl]).tolist()
    p = save_checkpoint(tmp_path/'g.pt', learn)
    first = order()
    assert order() != first
    load_checkpoint(p, learn, rng=False)
    assert order() == first


def test_optimizer_with_other_parameter_groups_is_refused(tmp_path):
    "Same optimizer class, other parameter groups: refused, nothing loaded."
    def two_groups(params, lr):
        ps = list(params)
        return torch.optim.AdamW([{'params': ps[:2]}, {'params': ps[2:]}], lr=lr)
    p = save_checkpoint(tmp_path/'a.pt', _trained_with_state(1))
    target = _trained_with_state(2, opt_func=two_groups)
    before = _snapshot(target)
    with pytest.raises(CheckpointError, match='parameter groups differ'): load_checkpoint(p, target)
    after = _snapshot(target)
    assert states_equal(before[0], after[0]) and before[1:] == after[1:]


def test_checkpoint_of_a_model_missing_layers_is_refused(tmp_path):
    "A model with a layer the checkpoint lacks is refused with the missing keys named."
    p = save_checkpoint(tmp_path/'a.pt', _trained_with_state(1))
    target = tiny_learner(seed=2)
    target.model.append(nn.Linear(4, 4))
    with pytest.raises(CheckpointError, match=r'missing: 6\.weight, 6\.bias'): load_checkpoint(p, target)


def test_load_checkpoint_into_unfitted_learner_restores_ema(tmp_path):
    "Outside `fit`, an EMA callback that never tracked a model starts tracking this one and takes the saved average."
    src = _trained_with_state(1)
    p = save_checkpoint(tmp_path/'a.pt', src)
    ema = EMA()
    target = tiny_learner(seed=2, cbs=[ema])
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        info = load_checkpoint(p, target)   # no optimizer or scheduler yet: those parts are skipped, with a warning each
    assert {'optimizer', 'scheduler'} <= {w for m in ws for w in ('optimizer', 'scheduler') if w in str(m.message)}
    assert 'ema' in info['loaded'] and ema.model is target.model and ema.n_updates == 1
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, next(cb for cb in src.cbs if isinstance(cb, EMA)).shadow))


def test_resume_is_bit_exact_with_random_work_between_epochs(tmp_path):
    "A callback drawing random numbers at each epoch start: the checkpoint stores the states from the end of training."
    class Jitter(Callback):   # a per-epoch random input scale (drawn before CheckpointCB saves the previous epoch)
        order = 50
        def before_epoch(self, learn): self.scale = 1 + 0.1*torch.randn(())
        def before_batch(self, learn): learn.batch = (learn.batch[0].float()*self.scale, *learn.batch[1:])
    straight = tiny_learner(seed=1, cbs=[Jitter()])
    straight.fit(3, valid=False)
    path = tmp_path/'run.pt'
    with pytest.raises(KeyboardInterrupt): tiny_learner(seed=1, cbs=[Jitter(), CheckpointCB(path), Crash(2, 1)]).fit(3, valid=False)
    resumed = tiny_learner(seed=2, cbs=[Jitter(), CheckpointCB(path)])
    resumed.fit(3, valid=False)
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_nan_guard_names_the_first_bad_batch_and_catches_inf():
    "Several bad batches before a check: the first is named; an infinite loss stops training too."
    learn = Learner(tiny_model(), tiny_dls(1, n=160), F.cross_entropy,
                    cbs=[TrainCB(), NanGuardCB(every=4), InjectNaN(1), InjectNaN(2)])
    with pytest.raises(NonFiniteLossError, match=r'batch 1 \(noticed at batch 3\)'): learn.fit(1, valid=False)
    class InfLoss(Callback):
        order = 30
        def after_loss(self, learn):
            if learn.iter == 1: learn.loss = learn.loss*float('inf')
    learn = Learner(tiny_model(), tiny_dls(1), F.cross_entropy, cbs=[TrainCB(), NanGuardCB(every=2), InfLoss()])
    with pytest.raises(NonFiniteLossError, match=r'loss became inf at epoch 0, batch 1'): learn.fit(1, valid=False)


def test_model_device_of_buffer_only_and_empty_models(monkeypatch):
    "A model without parameters reports its buffers' device; one with neither, the default device."
    import miniai.accel as accel
    monkeypatch.setattr(accel, 'default_device', lambda: torch.device('meta'))
    assert accel.model_device(nn.BatchNorm1d(3, affine=False)) == torch.device('cpu')
    assert accel.model_device(nn.ReLU()) == torch.device('meta')


def test_checkpoint_of_another_format_version_is_refused(tmp_path):
    "A dict saved with another `format` tag (an older or newer layout) is not read as a checkpoint."
    torch.save({'format': 'miniai-checkpoint-0', 'epoch': 1}, tmp_path/'old.pt')
    with pytest.raises(CheckpointError, match='not a miniai checkpoint'): read_checkpoint(tmp_path/'old.pt')


def test_learner_factories_place_the_model_before_the_optimizer_is_built(monkeypatch):
    "`Learner.fit` builds the optimizer before `DeviceCB` runs: every factory must move the model first, or AdamW is never"
    " fused on CUDA. The 'meta' device stands in for CUDA: the model must be there as the Learner is created."
    import miniai.images as mi
    from miniai.accel import model_device
    from miniai.images import ImageSet, train_image_classifier
    from miniai.latents import conv_vae, conv_vae_learner
    from miniai.models.resnet import fashion_classifier_learner
    meta = torch.device('meta')
    assert model_device(fashion_classifier_learner(device='meta', limit=(20, 10), progress=False).model) == meta
    vae = conv_vae(channels=(8, 16), norm_groups=4, mid_attention=False, image_size=16)
    assert model_device(conv_vae_learner(vae, dls=None, device='meta', progress=False).model) == meta
    seen = []
    class Recorder:
        def __init__(self, model, *a, **k): seen.append(model_device(model))
        def fit(self, *a, **k): pass
    monkeypatch.setattr(mi, 'Learner', Recorder); monkeypatch.setattr(mi, 'classifier_accuracy', lambda *a: 0.)
    x = torch.zeros(8, 3, 16, 16, dtype=torch.uint8); y = torch.arange(8) % 2
    train_image_classifier(ImageSet(x, y, x, y, ['a', 'b'], 'test'), epochs=1, device='meta', progress=False)
    assert seen == [meta]


# ---------------------------------------------------------------- audit mends (session 21)
def test_ema_average_lends_the_tracked_models_buffers_too():
    "`average(other)` gives `other` the tracked model's BatchNorm statistics as `copy_to` does, and its own back on exit."
    ema = EMA(0.5)
    learn = tiny_learner(cbs=[ema])
    learn.fit(1, valid=False)
    other, x = tiny_model().eval(), torch.randn(8, 1, 8, 8)
    own = [b.clone() for b in other.buffers()]
    copied = tiny_model().eval(); ema.copy_to(copied)
    with torch.no_grad(), ema.average(other): out = other(x)
    assert torch.equal(out, copied(x).detach())
    assert all(torch.equal(a, b) for a, b in zip(other.buffers(), own))


def test_checkpoint_is_saved_when_validation_is_cut_short(tmp_path):
    "`CancelEpochException` in validation (its documented use) skipped `after_epoch`, so no checkpoint was ever written."
    from miniai.learner import CancelEpochException
    class ShortValid(Callback):
        def after_batch(self, learn):
            if not learn.training: raise CancelEpochException()
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), ShortValid()]).fit(2)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 2


def test_evaluation_only_fit_ignores_the_checkpoint(tmp_path):
    "`fit(1, train=False)` after training used to resume from the finished run's checkpoint and evaluate nothing."
    learn = tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), MetricsCB()])
    learn.fit(2)
    before = (tmp_path/'ck.pt').stat().st_mtime_ns
    n = len(learn.metrics.history)
    learn.fit(1, train=False)
    assert [h['phase'] for h in learn.metrics.history[n:]] == ['eval']
    assert (tmp_path/'ck.pt').stat().st_mtime_ns == before


def test_checkpoint_extra_must_load_with_weights_only(tmp_path):
    "NumPy numbers passed the isinstance check and wrote files that `weights_only` loading then refused."
    from collections import namedtuple, defaultdict
    learn = tiny_learner(); learn.fit(1, valid=False)
    for x in (np.float64(0.5), {'a': np.int64(1)}, namedtuple('NT', 'a')(1), defaultdict(int), [np.str_('x')]):
        with pytest.raises(TypeError, match='weights_only=True'): save_checkpoint(tmp_path/'ck.pt', learn, extra={'x': x})
    assert not (tmp_path/'ck.pt').exists()
    save_checkpoint(tmp_path/'ck.pt', learn, extra={'acc': 0.5, 'l': [1, 'a'], 'd': {'k': (1.0, None)}})
    assert read_checkpoint(tmp_path/'ck.pt')['extra']['d'] == {'k': (1.0, None)}


def test_nan_guard_checks_a_fit_cut_short():
    "`SingleBatchCB` (or any Cancel exception) skipped `after_epoch`, so a NaN loss in that batch raised nothing."
    learn = tiny_learner(cbs=[NanGuardCB(every=50), SingleBatchCB()])
    learn.loss_func = lambda p, y: F.cross_entropy(p, y)*float('nan')
    with pytest.raises(NonFiniteLossError, match='training loss became nan'): learn.fit(1)


def test_metrics_log_no_row_for_an_empty_phase():
    "An empty valid set gave an eval row of NaNs; the code's comment (and the user) expect none."
    learn = tiny_learner(cbs=[MetricsCB()])
    learn.dls = DataLoaders(learn.dls.train, [])
    learn.fit(1)
    assert [h['phase'] for h in learn.metrics.history] == ['train']


def test_lr_find_puts_back_the_epoch_counters():
    "After `lr_find`, a checkpoint records the learner's own epoch, not the finder's."
    learn = tiny_learner()
    learn.fit(2)
    learn.lr_find(max_epochs=3, show_plot=False)
    assert (learn.n_epochs, learn.epochs_done, learn.fit_train) == (2, 2, True)


def test_bad_miniai_device_names_the_variable(monkeypatch):
    from miniai.core import default_device
    monkeypatch.setenv('MINIAI_DEVICE', 'gpu')
    with pytest.raises(ValueError, match="MINIAI_DEVICE='gpu' is not a device"): default_device()
    monkeypatch.setenv('MINIAI_DEVICE', ' cpu ')
    assert default_device() == torch.device('cpu')


def test_checkpoint_keeps_what_weights_only_loading_accepts(tmp_path):
    "MultiStepLR's state holds a Counter, which loads with weights_only=True: an exact-type check had refused it."
    from functools import partial
    from torch.optim.lr_scheduler import MultiStepLR
    from miniai.learner import EpochSchedCB
    learn = Learner(tiny_model(), tiny_dls(1), F.cross_entropy, cbs=[TrainCB(), EpochSchedCB(partial(MultiStepLR, milestones=[1, 2])),
                                                                     CheckpointCB(tmp_path/'ck.pt')])
    learn.fit(2)
    assert read_checkpoint(tmp_path/'ck.pt')['scheds']['0.EpochSchedCB']['state']['milestones'] == {1: 1, 2: 1}


def test_an_unloadable_optimizer_setting_is_refused_before_training(tmp_path):
    "A NumPy learning rate used to train a whole epoch, then write a checkpoint that could not be read back."
    learn = Learner(tiny_model(), tiny_dls(1), F.cross_entropy, cbs=[TrainCB(), CheckpointCB(tmp_path/'ck.pt')])   # no scheduler
    with pytest.raises(TypeError, match="an optimizer parameter group holds a value that `weights_only=True` loading refuses"):
        learn.fit(1, lr=np.float64(1e-3))
    assert not (tmp_path/'ck.pt').exists() and learn.epochs_done == 0


def test_read_checkpoint_tells_a_refused_object_from_a_damaged_file(tmp_path):
    learn = tiny_learner(); learn.fit(1, valid=False)
    state = checkpoint_state(learn, 1)
    state['extra'] = {'x': np.float64(1.)}   # written around the check, as an old or hand-made file might be
    torch.save(state, tmp_path/'odd.pt')
    with pytest.raises(CheckpointError, match='holds an object that `weights_only=True` loading refuses .*Unsupported global'):
        read_checkpoint(tmp_path/'odd.pt')
    good = save_checkpoint(tmp_path/'ok.pt', learn).read_bytes()
    (tmp_path/'cut.pt').write_bytes(good[:len(good)//2])
    with pytest.raises(CheckpointError, match='truncated, corrupt or not a torch file'): read_checkpoint(tmp_path/'cut.pt')


def test_checkpoint_is_saved_when_training_is_cut_short(tmp_path):
    "`CancelEpochException` in training (its documented use) skipped `after_epoch`, so no checkpoint was written."
    from miniai.learner import CancelEpochException
    class TwoBatches(Callback):
        def after_batch(self, learn):
            if learn.training and learn.iter == 1: raise CancelEpochException()
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), TwoBatches()]).fit(2, valid=False)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 2


def test_cancelled_is_the_level_that_ended_the_phase():
    "`learn.cancelled` at each cleanup: the level whose Cancel exception ended it, None after a normal end."
    from miniai.learner import CancelEpochException
    seen = []
    class Spy(Callback):
        order = 99
        def after_batch(self, learn):
            if learn.training and learn.iter == len(learn.dl) - 1: raise CancelBatchException()   # the last batch
            if not learn.training: raise CancelEpochException()
        def cleanup_epoch(self, learn): seen.append(('epoch', learn.training, learn.cancelled))
        def cleanup_fit(self, learn): seen.append(('fit', learn.cancelled))
    tiny_learner(cbs=[Spy()]).fit(1)
    assert seen == [('epoch', True, None), ('epoch', False, 'epoch'), ('fit', None)]


@pytest.mark.parametrize('how', ['validation cancelled before CheckpointCB.before_epoch',
                                 'cancelled after CheckpointCB.after_epoch', 'training cancelled', 'no cancel'])
def test_each_epoch_is_saved_once(tmp_path, monkeypatch, how):
    "A cancelled phase whose `after_epoch` CheckpointCB had already run (or whose pending save was still set) was saved twice."
    import miniai.accel as A
    from miniai.learner import CancelEpochException
    saved = []
    real = A.save_checkpoint
    monkeypatch.setattr(A, 'save_checkpoint', lambda path, learn, epoch=None, **kw: (saved.append(epoch), real(path, learn, epoch, **kw))[1])
    class SkipValid(Callback):   # "validate only every k epochs", the usual way: order 0 runs first
        def before_epoch(self, learn):
            if not learn.training: raise CancelEpochException()
    class LateStop(Callback):
        order = 85
        def after_epoch(self, learn):
            if not learn.training: raise CancelEpochException()
    class ShortTrain(Callback):
        def after_batch(self, learn):
            if learn.training and learn.iter == 1: raise CancelEpochException()
    extra = {'validation cancelled before CheckpointCB.before_epoch': [SkipValid()], 'cancelled after CheckpointCB.after_epoch': [LateStop()],
             'training cancelled': [ShortTrain()], 'no cancel': []}[how]
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), *extra]).fit(3)
    assert saved == [1, 2, 3] and read_checkpoint(tmp_path/'ck.pt')['epoch'] == 3


def test_a_setting_made_unloadable_during_the_fit_is_refused_at_the_save(tmp_path):
    "A warm-up that set a NumPy learning rate after `before_fit`'s check wrote a checkpoint that could not be read back."
    class NpWarmup(Callback):
        def before_batch(self, learn):
            if learn.training:
                for g in learn.opt.param_groups: g['lr'] = np.interp(learn.iter, [0, 3], [1e-4, 1e-2])
    learn = Learner(tiny_model(), tiny_dls(1), F.cross_entropy, cbs=[TrainCB(), NpWarmup(), CheckpointCB(tmp_path/'ck.pt')])
    with pytest.raises(TypeError, match="an optimizer parameter group holds a value that `weights_only=True` loading refuses"):
        learn.fit(2)
    assert not (tmp_path/'ck.pt').exists()


def test_checkpoint_cb_removes_temporary_files_of_killed_writers(tmp_path):
    "A save killed mid-write left `.ck.pt.PID.tmp` (a checkpoint's size) for good: only StepCheckpointCB swept them."
    import subprocess, sys
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    stale, live = tmp_path/f'.ck.pt.{dead.pid}.tmp', tmp_path/f'.ck.pt.{os.getppid()}.tmp'   # (the parent is alive)
    for f in (stale, live): f.write_bytes(b'half a checkpoint')
    tiny_learner().fit(1, cbs=[CheckpointCB(tmp_path/'ck.pt', resume=False)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['ck.pt', live.name])


@pytest.mark.parametrize('order', [0, 85])
def test_early_stopping_in_validation_still_saves_the_trained_epoch(tmp_path, monkeypatch, order):
    "`CancelFitException` from a callback before CheckpointCB skipped its after_epoch: the last trained epoch was never saved."
    import miniai.accel as A
    from miniai.learner import CancelFitException
    saved, real = [], A.save_checkpoint
    monkeypatch.setattr(A, 'save_checkpoint', lambda path, learn, epoch=None, **kw: (saved.append(epoch), real(path, learn, epoch, **kw))[1])
    class EarlyStop(Callback):
        def after_epoch(self, learn):
            if not learn.training and learn.epoch == 1: raise CancelFitException()
    EarlyStop.order = order
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), EarlyStop()]).fit(4)
    # order 0 stops the phase before the callbacks that end it: the last save stands (a resume from it is exact)
    assert saved == ([1, 2] if order == 85 else [1]) and read_checkpoint(tmp_path/'ck.pt')['epoch'] == len(saved)


def test_a_fit_stopped_inside_a_training_phase_keeps_the_last_whole_epoch(tmp_path):
    "Stopping the fit halfway through an epoch's training saves nothing new: that epoch is not whole."
    from miniai.learner import CancelFitException
    class Stop(Callback):
        def after_batch(self, learn):
            if learn.training and learn.epoch == 1 and learn.iter == 1: raise CancelFitException()
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), Stop()]).fit(4)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 1


def test_only_the_saving_process_sweeps_temporary_files(tmp_path, monkeypatch):
    "Every rank swept: a rank on another machine took rank 0's live writer (a pid it cannot see) for a dead one."
    import subprocess, sys
    import torch.distributed as dist
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    stale = tmp_path/f'.ck.pt.{dead.pid}.tmp'; stale.write_bytes(b'maybe another machine is writing this')
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_rank', lambda *a, **k: 1)
    CheckpointCB(tmp_path/'ck.pt').before_fit(tiny_learner())
    assert stale.exists()
    monkeypatch.setattr(dist, 'get_rank', lambda *a, **k: 0)
    CheckpointCB(tmp_path/'ck.pt').before_fit(tiny_learner())
    assert not stale.exists()


def _stopper(event, when, order=0, exc=None):
    "A callback that raises `exc` (default CancelFitException) at `event` when `when(learn)`."
    from miniai.learner import CancelFitException
    class Stop(Callback):
        pass
    def fire(self, learn):
        if when(learn): raise (exc or CancelFitException)()
    setattr(Stop, event, fire); Stop.order = order
    return Stop()


def test_diverged_weights_are_never_written_over_the_last_good_checkpoint(tmp_path):
    "A last step can leave NaN weights with every loss finite; an early stop before validation then saved them."
    class Diverge(Callback):
        def after_epoch(self, learn):
            if learn.training and learn.epoch == 1:
                with torch.no_grad(): next(learn.model.parameters()).fill_(float('nan'))
    stop = _stopper('after_epoch', lambda l: not l.training and l.epoch == 1, order=85)   # early stopping after validation
    with pytest.raises(FloatingPointError, match="weights hold NaN or inf after epoch 2 .*not written over"):
        tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), Diverge(), stop]).fit(4)
    ck = read_checkpoint(tmp_path/'ck.pt')
    assert ck['epoch'] == 1 and all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())


@pytest.mark.parametrize('order', [0, 85])
def test_an_early_stop_saves_the_fits_last_epoch_whatever_every_says(tmp_path, order):
    "With every=2, a fit stopped after its third epoch kept the second: the last trained epoch was lost."
    stop = _stopper('after_epoch', lambda l: not l.training and l.epoch == 2, order)
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt', every=2), stop]).fit(6)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == (3 if order == 85 else 2)   # order 0: the phase did not end for all


@pytest.mark.parametrize('order', [0, 85])
def test_a_fit_stopped_after_a_whole_training_phase_saves_it(tmp_path, order):
    "fit(valid=False) stopped at the end of epoch 1's training: the pending save was dropped (order 85) or never made."
    stop = _stopper('after_epoch', lambda l: l.training and l.epoch == 1, order)
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), stop]).fit(4, valid=False)
    # order 0 stopped the phase before the callbacks that end it (a scheduler's step): saving then would not resume exactly
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == (2 if order == 85 else 1)


def test_a_fit_ended_by_an_error_saves_nothing_more(tmp_path):
    "An error between an epoch's training and its validation is not an early stop: the pending save is dropped."
    stop = _stopper('before_epoch', lambda l: not l.training and l.epoch == 1, exc=KeyError)
    with pytest.raises(KeyError): tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), stop]).fit(4)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 1


def test_step_checkpoint_refuses_diverged_weights_mid_epoch(tmp_path):
    "StepCheckpointCB's mid-epoch saves check the weights too (its NanGuardCB check reads only the losses)."
    from miniai.distributed import StepCheckpointCB
    class Diverge(Callback):
        order = 70   # after the step, before StepCheckpointCB's after_batch
        def after_batch(self, learn):
            if learn.training and learn.epoch == 1 and learn.iter == 1:
                with torch.no_grad(): next(learn.model.parameters()).fill_(float('inf'))
    with pytest.raises(FloatingPointError, match='weights hold NaN or inf at batch 2 of epoch 1'):
        tiny_learner(cbs=[StepCheckpointCB(tmp_path/'ck.pt', every_steps=2), NanGuardCB(), Diverge()]).fit(3)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 1


def _torch_valid_learner(seed=1, cbs=()):
    "tiny_learner with a shuffled torch DataLoader for validation: each `iter()` draws from the global RNG."
    from torch.utils.data import DataLoader, TensorDataset
    learn = tiny_learner(seed, cbs)
    g = torch.Generator().manual_seed(7)
    valid = TensorDataset(torch.rand(32, 1, 8, 8, generator=g)*255, torch.randint(0, 4, (32,), generator=g))
    learn.dls = DataLoaders(learn.dls.train, DataLoader(valid, batch_size=16, shuffle=True))
    return learn


@pytest.mark.parametrize('where', ['before_epoch', 'after_batch'])
def test_a_fit_stopped_before_or_inside_validation_resumes_exactly(tmp_path, where):
    "A save forced before validation kept the RNG of a run that never validated: the resume drifted from the uninterrupted run."
    straight = _torch_valid_learner(); straight.fit(4)
    stop = _stopper(where, lambda l: not l.training and l.epoch == 1)
    _torch_valid_learner(cbs=[CheckpointCB(tmp_path/'ck.pt'), stop]).fit(4)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 1   # epoch 1's validation did not run whole: the last save stands
    resumed = _torch_valid_learner(seed=99, cbs=[CheckpointCB(tmp_path/'ck.pt')]); resumed.fit(4)
    assert states_equal(resumed.model.state_dict(), straight.model.state_dict())


def test_nonfinite_state_check_covers_float8_sparse_and_complex_tensors():
    "float8 and sparse buffers crashed the weights check (no isfinite kernel); complex NaN slipped through."
    from miniai.accel import _nonfinite
    nan = float('nan')
    assert not _nonfinite(torch.ones(3).to(torch.float8_e4m3fn)) and _nonfinite(torch.tensor([1., nan]).to(torch.float8_e4m3fn))
    assert not _nonfinite(torch.eye(3).to_sparse()) and _nonfinite(torch.tensor([[0., nan]]).to_sparse())
    assert _nonfinite(torch.tensor([1+1j, complex(nan, 0)])) and not _nonfinite(torch.tensor([1+1j]))
    assert not _nonfinite(torch.tensor([1, 2])) and not _nonfinite(torch.empty(0)) and not _nonfinite(torch.tensor([True]))


def test_a_fit_without_validation_stopped_before_the_next_epoch_saves_the_last_one(tmp_path):
    "fit(valid=False) stopped in the next epoch's before_epoch by an earlier callback: the pending save was dropped."
    stop = _stopper('before_epoch', lambda l: l.training and l.epoch == 2)
    tiny_learner(cbs=[CheckpointCB(tmp_path/'ck.pt', every=3), stop]).fit(5, valid=False)
    assert read_checkpoint(tmp_path/'ck.pt')['epoch'] == 2   # epochs 0 and 1 whole; saved although every=3


@pytest.mark.parametrize('order', [0, 85])
@pytest.mark.parametrize('valid', [True, False])
def test_every_early_stop_resumes_exactly(tmp_path, order, valid):
    "Wherever the stop comes (training or validation end, either order), a resume reproduces the uninterrupted run."
    from functools import partial
    from torch.optim.lr_scheduler import StepLR
    from miniai.learner import EpochSchedCB
    def learner(cbs=(), seed=1):
        learn = _torch_valid_learner(seed, cbs=[EpochSchedCB(partial(StepLR, step_size=1, gamma=0.5)), *cbs])
        learn.cbs = [cb for cb in learn.cbs if type(cb).__name__ != 'OneCycleCB']
        return learn
    straight = learner(); straight.fit(4, valid=valid)
    for i, phase in enumerate([True, False] if valid else [True]):
        path = tmp_path/f'ck{i}.pt'
        stop = _stopper('after_epoch', lambda l, p=phase: l.training == p and l.epoch == 1, order)
        learner(cbs=[CheckpointCB(path), stop]).fit(4, valid=valid)
        resumed = learner(cbs=[CheckpointCB(path)], seed=99); resumed.fit(4, valid=valid)
        assert states_equal(resumed.model.state_dict(), straight.model.state_dict()), (phase, order)


# ---------------------------------------------------------------- properties a mutation review found unpinned

def test_channels_last_cb_converts_weights_with_several_input_channels():
    "A one-input-channel conv weight is channels-last and contiguous at once; with three channels only the conversion makes it so."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 4, (32,), generator=g)
    dls = DataLoaders(DeviceImageLoader(x, y, bs=16, device='cpu'), DeviceImageLoader(x, y, bs=16, device='cpu'))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4*64, 4))
    assert not model[0].weight.is_contiguous(memory_format=torch.channels_last)
    Learner(model, dls, F.cross_entropy, cbs=[TrainCB(), ChannelsLastCB()]).fit(1, valid=False)
    w = model[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def test_scheduler_of_another_class_is_refused_untouched(tmp_path):
    "A StepLR checkpoint is not loaded into an ExponentialLR (their states would mix): refused, nothing changed."
    from functools import partial
    from torch.optim.lr_scheduler import ExponentialLR, StepLR
    from miniai.learner import BatchSchedCB
    def learner(sched_fn, seed):
        set_seed(seed)
        learn = Learner(tiny_model(), tiny_dls(seed), F.cross_entropy, cbs=[TrainCB(), BatchSchedCB(sched_fn)])
        learn.fit(1, cbs=[SingleBatchCB()])
        return learn
    p = save_checkpoint(tmp_path/'step.pt', learner(partial(StepLR, step_size=2, gamma=0.5), 1))
    target = learner(partial(ExponentialLR, gamma=0.9), 2)
    weights, sched = {k: v.clone() for k, v in target.model.state_dict().items()}, target.sched.state_dict()
    with pytest.raises(CheckpointError, match=r'scheduler 0\.BatchSchedCB is StepLR in the checkpoint, ExponentialLR here'):
        load_checkpoint(p, target)
    assert states_equal(weights, target.model.state_dict()) and target.sched.state_dict() == sched


def test_scheduler_of_the_same_class_with_other_fields_is_refused_untouched(tmp_path):
    "A scheduler state with other fields (as another torch version may write) is refused by name, with both field lists."
    from functools import partial
    from torch.optim.lr_scheduler import StepLR
    from miniai.learner import BatchSchedCB
    class NewStepLR(StepLR):   # what a later torch's StepLR could be: one more field in its state
        def __init__(self, *a, **kw): self.warmup = 0; super().__init__(*a, **kw)
    NewStepLR.__name__ = 'StepLR'
    def learner(sched_cls, seed):
        set_seed(seed)
        learn = Learner(tiny_model(), tiny_dls(seed), F.cross_entropy, cbs=[TrainCB(), BatchSchedCB(partial(sched_cls, step_size=2))])
        learn.fit(1, cbs=[SingleBatchCB()])
        return learn
    p = save_checkpoint(tmp_path/'new.pt', learner(NewStepLR, 1))
    target = learner(StepLR, 2)
    weights, sched = {k: v.clone() for k, v in target.model.state_dict().items()}, target.sched.state_dict()
    with pytest.raises(CheckpointError, match=r"scheduler 0\.BatchSchedCB \(StepLR\) was saved with the fields \[.*'warmup'\], "
                                              r"this one has \[(?!.*warmup).*\]"):
        load_checkpoint(p, target)
    assert states_equal(weights, target.model.state_dict()) and target.sched.state_dict() == sched


def test_nan_guard_starts_clean_in_the_next_fit():
    "After a divergence is caught, a second fit at a sane learning rate runs: the guard forgets the bad batch."
    learn = Learner(tiny_model(), tiny_dls(1), F.cross_entropy, cbs=[TrainCB(), NanGuardCB(every=4), InjectNaN(1)])
    w0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match='batch 1'): learn.fit(1, valid=False)
    learn.cbs = [cb for cb in learn.cbs if not isinstance(cb, InjectNaN)]
    learn.model.load_state_dict(w0)
    learn.fit(1, valid=False, lr=1e-3)   # every loss finite
    assert torch.isfinite(learn.loss)


def test_load_checkpoint_moves_the_ema_onto_a_replaced_model(tmp_path):
    "`learn.model` replaced, then `load_checkpoint`: the EMA tracks the new model and lends it the saved average."
    src = _trained_with_state(1)
    ema = next(cb for cb in src.cbs if isinstance(cb, EMA))
    with ema.average(): avg = {k: v.clone() for k, v in src.model.state_dict().items()}
    p = save_checkpoint(tmp_path/'a.pt', src)
    src.model = tiny_model()
    load_checkpoint(p, src)
    assert ema.model is src.model
    with ema.average(): assert states_equal(src.model.state_dict(), avg)
    assert not states_equal(src.model.state_dict(), avg)   # outside, the raw loaded weights


def test_ema_shadow_is_detached():
    "EMA's average is detached from autograd: no shadow tensor requires grad, and its state deep-copies."
    import copy
    m = nn.Linear(3, 2)
    ema = EMA(); ema.track(m)
    assert not any(s.requires_grad for s in ema.shadow)
    copy.deepcopy(ema.state_dict())   # non-leaf tensors cannot be deep-copied


def test_ema_state_refusal_names_unexpected():
    "Loading an EMA state of another model names the missing and the unexpected parameters, each in its own list."
    a, b = EMA(), EMA()
    a.track(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))); b.track(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['1.weight', '1.bias'\]"): b.load_state_dict(a.state_dict())


def test_checkpoint_without_loader_state_warns(tmp_path):
    "A checkpoint without a loader's state (saved from plain lists) warns and skips that part for a loader that has one, not a TypeError."
    from types import SimpleNamespace
    data = [(torch.randn(4, 2), torch.randn(4, 1))]
    a = Learner(nn.Linear(2, 1), SimpleNamespace(train=data, valid=data), cbs=[TrainCB()])
    a.fit(1)
    save_checkpoint(tmp_path/'c.pt', a)
    g = torch.Generator().manual_seed(0)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4,
                                     shuffle=True, generator=g)
    b = Learner(nn.Linear(2, 1), SimpleNamespace(train=dl, valid=data), cbs=[TrainCB()])
    b.fit(1)
    with pytest.warns(UserWarning, match='train loader state not restored'): info = load_checkpoint(tmp_path/'c.pt', b)
    assert 'train loader' not in info['loaded']


def test_synchronize_waits_on_cuda(monkeypatch):
    "`synchronize('cuda:0')` waits on that CUDA device (checked with a stand-in for `torch.cuda.synchronize`)."
    import miniai.accel as A
    calls = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda d=None: calls.append(d))
    A.synchronize('cuda:0')
    assert calls == [torch.device('cuda:0')]


def test_loading_an_ema_checkpoint_without_an_ema_callback_warns(tmp_path):
    "A checkpoint holding an EMA average, loaded into a learner without `EMA`, says the average was not restored."
    learn = tiny_learner(cbs=[EMA(0.9)])
    learn.fit(1, valid=False)
    path = save_checkpoint(tmp_path/'ck.pt', learn, epoch=1)
    plain = tiny_learner()
    plain.fit(1, valid=False)
    with pytest.warns(UserWarning, match='EMA not restored'): info = load_checkpoint(path, plain)
    assert 'ema' not in info['loaded']


def test_checkpoint_state_detaches_tensors_inside_lists_and_tuples():
    "Tensors nested in lists and tuples of a checkpoint are detached CPU copies, and the containers keep their types."
    learn = tiny_learner()
    learn.fit(1, valid=False)
    w = torch.ones(2, requires_grad=True)
    hist = checkpoint_state(learn, 1, extra={'hist': [w, (w,)]})['extra']['hist']
    assert type(hist) is list and type(hist[1]) is tuple
    assert not hist[0].requires_grad and not hist[1][0].requires_grad and hist[1][0].grad_fn is None
    assert torch.equal(hist[0], torch.ones(2))


def test_checkpoint_refuses_a_learner_with_two_ema_callbacks():
    "Two EMA callbacks make the saved average ambiguous: saving refuses."
    learn = tiny_learner(cbs=[EMA(0.9), EMA(0.5)])
    learn.fit(1, valid=False)
    with pytest.raises(CheckpointError, match='more than one EMA'): checkpoint_state(learn, 1)
