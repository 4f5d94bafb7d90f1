"Fixtures shared by the test files."
import importlib.util
from pathlib import Path
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO/'tools'/'train_ddp_demo.py'


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


@pytest.fixture
def ddp_demo():
    "tools/train_ddp_demo.py as a module (its `main(argv)` trains in this process and returns the learner)."
    spec = importlib.util.spec_from_file_location('train_ddp_demo', DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
