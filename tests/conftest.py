"Fixtures shared by the test files."
import importlib.util
from pathlib import Path
import pytest
import torch
from miniai.learner import Callback, CancelFitException

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO/'tools'/'train_ddp_demo.py'


class StopAfterStep(Callback):
    "Raise `exc` after training step `n` of a fit (order 95: after that step's checkpoint callbacks), as if stopped or killed."
    order = 95
    def __init__(self, n: int, exc: type = CancelFitException): self.n, self.exc, self.steps = n, exc, 0
    def after_batch(self, learn):
        if learn.training:
            self.steps += 1
            if self.steps == self.n: raise self.exc()


@pytest.fixture
def stop_after_step():
    "`stop_after_step(n, exc=CancelFitException)`: a callback that ends a fit after training step n (KeyboardInterrupt: a kill)."
    return StopAfterStep


@pytest.fixture
def host_transfers(monkeypatch):
    """A dict counting the tensor methods that move data to the host (`item`, `cpu`, `tolist`, `numpy`, and `bool`, `float`,
    `int`, index conversions), by name, while the test runs; `.clear()` it between runs. (On a CPU, `.to` cannot be told
    from a no-op, so it is not counted.)"""
    counts = {}
    for name in ('item', 'cpu', 'tolist', 'numpy', '__bool__', '__float__', '__int__', '__index__'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, _name=name, **k): counts[_name] = counts.get(_name, 0) + 1; return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


@pytest.fixture
def one_thread():
    "Tiny models run faster on one thread (no threading overhead, no spin-waiting on a busy 2-core machine)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cpu_one_thread(monkeypatch):
    "In-process runs on the CPU, like the subprocesses (bit-exact comparisons need the same kernels); threads restored after."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _load_script(relpath: str):
    "A script of the repository (e.g. 'bench/train_classifier.py') imported as a module, run from the checkout."
    path = REPO/relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def load_script():
    "`load_script('bench/x.py')`: a repository script as a module (scripts are not part of the miniai package)."
    return _load_script


@pytest.fixture
def ddp_demo():
    "tools/train_ddp_demo.py as a module (its `main(argv)` trains in this process and returns the learner)."
    return _load_script(str(DEMO.relative_to(REPO)))


def _fashion_link_copy(src, dst, corrupt: str | None = None, drop: str | None = None):
    "`dst` holding links to the four Fashion-MNIST files in `src`, except `corrupt` (a copy with a changed byte); `drop` left out."
    from miniai.data import FASHION_SHA256
    dst.mkdir()
    for n in FASHION_SHA256:
        if n == drop: continue
        if n == corrupt:
            b = bytearray((src/n).read_bytes()); b[len(b)//2] ^= 0xFF; (dst/n).write_bytes(bytes(b))
        else: (dst/n).symlink_to(src/n)
    return dst


@pytest.fixture
def fashion_link_copy():
    "`fashion_link_copy(src, dst, corrupt=None, drop=None)`: a cheap copy of the original files, one damaged or missing."
    return _fashion_link_copy
