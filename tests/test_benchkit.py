"bench/benchkit.py: compiled training at one batch shape."
import pytest, torch
from miniai.accel import CompileCB
from miniai.data import DataLoaders, DeviceImageLoader
from bench.benchkit import compile_callbacks


def _dls():
    x = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    return DataLoaders(DeviceImageLoader(x, None, bs=4, device='cpu'), DeviceImageLoader(x, None, bs=4, device='cpu'))


def test_compile_callbacks_only_on_cuda_and_then_one_batch_shape():
    d = _dls()
    assert compile_callbacks('reduce-overhead', d, device='cpu') == [] and not d.train.drop_last
    assert compile_callbacks('none', d, device='cuda') == [] and not d.train.drop_last
    (cb,) = compile_callbacks('reduce-overhead', d, device='cuda')    # nothing is compiled until fitting starts
    assert isinstance(cb, CompileCB) and cb.mode == 'reduce-overhead' and d.train.drop_last and len(d.train) == 2
    assert compile_callbacks('default', _dls(), device='cuda')[0].mode is None
    with pytest.raises(ValueError, match='compile mode'): compile_callbacks('max-speed', _dls(), device='cuda')


def test_compile_mode_is_what_takes_effect():
    from bench.benchkit import compile_mode
    assert compile_mode('reduce-overhead', 'cuda') == 'reduce-overhead' and compile_mode('reduce-overhead', 'cpu') == 'none'
    assert compile_mode(None, 'cuda') == 'none'
    with pytest.raises(ValueError, match='compile mode'): compile_mode('max-speed', 'cpu')
