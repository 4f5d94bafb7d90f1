"""Faults: a run SIGKILLed mid-epoch resumes bit-exactly; bad checkpoints are refused untouched; atomic sample files."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from miniai.accel import CheckpointCB, CheckpointError, read_checkpoint
from miniai.core import remove_stale_tmp
from miniai.distributed import StepCheckpointCB, load_samples, save_samples

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO/'tools'/'train_ddp_demo.py'
# 256 images, batch 16: 16 steps per epoch; Gaussian noise on the inputs makes every step use the random generator
COMMON = ['--epochs', 3, '--n-train', 256, '--n-valid', 128, '--bs', 16, '--noise', 0.1, '--threads', 1]



def start(args):
    "Start the demo script on the CPU in its own process group (so a stuck run can be killed with all its children)."
    env = {**os.environ, 'MINIAI_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    return subprocess.Popen([sys.executable, str(DEMO), *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(p, timeout=240):
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()
        pytest.fail(f"the demo script did not finish within {timeout} s")
    return p.returncode, out, err




def without_time(history): return [{k: v for k, v in h.items() if k != 'time'} for h in history]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path, cpu_one_thread, ddp_demo):
    ck, ready = tmp_path/'ck.pt', tmp_path/'ready'
    p = start([*COMMON, '--checkpoint', ck, '--every-steps', 3, '--stall-at-step', 22, '--ready-file', ready])
    straight = ddp_demo.main([*COMMON])  # the uninterrupted run, here, while the other one trains
    t0 = time.time()
    while not ready.exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.1)
    if not ready.exists():
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"the run never reached step 22:\n{p.communicate()[1][-3000:]}")
    os.killpg(p.pid, signal.SIGKILL)  # no chance to clean up or save
    assert finish(p)[0] == -signal.SIGKILL

    info = read_checkpoint(ck)  # the last save: step 21 = epoch 1 (0-based), 5 of its 16 batches done
    assert info['epoch'] == 1 and info['extra']['mid_epoch'] and info['extra']['batches_done'] == 5

    rc, out, err = finish(start([*COMMON, '--checkpoint', ck, '--every-steps', 3, '--out', tmp_path/'resumed']))
    assert rc == 0, err[-3000:]
    assert 'resumed from' in out and 'epoch 0  phase' not in out  # it did resume, in epoch 1...
    assert 'in the middle of epoch 2: continuing after its batch 5 of 16' in out  # ...after its batch 5
    from safetensors.torch import load_file
    w = load_file(tmp_path/'resumed'/'weights.safetensors')
    sd = straight.model.state_dict()
    assert sorted(w) == sorted(sd) and all(torch.equal(w[k], sd[k]) for k in w)  # bit for bit
    resumed = json.loads((tmp_path/'resumed'/'history.json').read_text())
    assert without_time(resumed) == without_time(straight.metrics.history[2:])  # epoch 1 (train: all 16 batches) onwards
    assert read_checkpoint(ck)['epoch'] == 3


@pytest.mark.parametrize('crash_at,every', [(7, 2), (16, 4), (23, 5), (40, 1)])
def test_step_checkpoints_resume_bit_exactly_in_process(tmp_path, cpu_one_thread, ddp_demo, stop_after_step, crash_at, every):
    demo = ddp_demo
    straight = demo.main(COMMON)
    args = demo.parse_args([*COMMON, '--checkpoint', tmp_path/'ck.pt', '--every-steps', every])
    learn = demo.build(args)
    with pytest.raises(KeyboardInterrupt): learn.fit(3, cbs=[stop_after_step(crash_at, KeyboardInterrupt)])
    resumed = demo.build(demo.parse_args([*COMMON, '--seed', 5, '--checkpoint', tmp_path/'ck.pt', '--every-steps', every]))
    resumed.fit(3)  # another seed: everything that matches comes from the checkpoint
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))
    k = len(resumed.metrics.history)
    assert without_time(resumed.metrics.history) == without_time(straight.metrics.history[-k:])


def test_refused_checkpoints_leave_the_learner_and_the_file_untouched(tmp_path, cpu_one_thread, ddp_demo):
    demo = ddp_demo
    good = tmp_path/'good.pt'
    demo.main([*COMMON, '--checkpoint', good, '--every-steps', 5, '--max-steps', 5])  # a real mid-epoch checkpoint
    data = good.read_bytes()
    (tmp_path/'cut.pt').write_bytes(data[:len(data)//2])
    cases = [(tmp_path/'cut.pt', 32, 'truncated'), (good, 64, 'another model configuration')]
    for path, hidden, msg in cases:
        with pytest.raises(CheckpointError, match=msg):  # the script's resume path, end to end
            demo.main([*COMMON, '--hidden', hidden, '--checkpoint', path, '--every-steps', 5])
        learn = demo.build(demo.parse_args([*COMMON, '--hidden', hidden]))
        before = {k: v.clone() for k, v in learn.model.state_dict().items()}
        gen = learn.dls.train.generator.get_state()
        with pytest.raises(CheckpointError, match=msg): learn.fit(3, cbs=[CheckpointCB(path)])
        assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
        assert torch.equal(gen, learn.dls.train.generator.get_state()) and not learn.opt.state
    assert good.read_bytes() == data and (tmp_path/'cut.pt').stat().st_size == len(data)//2  # nothing overwritten


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    stale, live = tmp_path/f'.ck.pt.{dead.pid}.tmp', tmp_path/f'.ck.pt.{os.getpid()}.tmp'
    other = tmp_path/f'.other.pt.{dead.pid}.tmp'
    for f in (stale, live, other): f.write_bytes(b'half')
    assert remove_stale_tmp(tmp_path/'ck.pt') == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    with pytest.raises(ValueError, match='every_steps'): StepCheckpointCB(tmp_path/'ck.pt', every_steps=0)


def test_save_samples_is_atomic_and_checks_its_input(tmp_path, monkeypatch):
    x = torch.randn(6, 1, 4, 4)
    p = save_samples(tmp_path/'sub'/'s.npy', x)
    assert torch.equal(load_samples(p), x) and os.listdir(p.parent) == ['s.npy']
    assert load_samples(save_samples(tmp_path/'h.npy', x.bfloat16())).dtype == torch.float32
    good = p.read_bytes()
    def broken_save(f, a, **kw): f.write(b'\x93NUMPY half a file'); raise OSError('disk full')
    monkeypatch.setattr(np, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'): save_samples(p, x*2)
    assert p.read_bytes() == good and os.listdir(p.parent) == ['s.npy']  # old file intact, no temporary left
    monkeypatch.undo()
    with pytest.raises(ValueError, match='non-finite'): save_samples(tmp_path/'n.npy', torch.tensor([0., float('inf')]))
    assert not (tmp_path/'n.npy').exists()
    save_samples(tmp_path/'n.npy', torch.tensor([0., float('inf')]), allow_nonfinite=True)
    with pytest.raises(ValueError, match='empty'): save_samples(tmp_path/'e.npy', torch.zeros(0, 3))
    with pytest.raises(ValueError, match='.npy'): save_samples(tmp_path/'s.pt', x)
    (tmp_path/'cut.npy').write_bytes(good[:len(good)//2])
    with pytest.raises(ValueError, match='not a complete'): load_samples(tmp_path/'cut.npy')
    with pytest.raises(FileNotFoundError): load_samples(tmp_path/'missing.npy')
