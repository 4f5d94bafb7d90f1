"bench/benchkit.py: compiled training at one batch shape."
import pytest
from miniai.accel import CompileCB
from bench.benchkit import compile_callbacks


def test_compile_callbacks_only_on_cuda():
    assert compile_callbacks('reduce-overhead', device='cpu') == [] and compile_callbacks('none', device='cuda') == []
    (cb,) = compile_callbacks('reduce-overhead', device='cuda')    # nothing is compiled until fitting starts
    assert isinstance(cb, CompileCB) and cb.mode == 'reduce-overhead' and cb.drop_last   # one training batch shape
    assert compile_callbacks('default', device='cuda')[0].mode is None
    with pytest.raises(ValueError, match='compile mode'): compile_callbacks('max-speed', device='cuda')


def test_compile_mode_is_what_takes_effect():
    from bench.benchkit import compile_mode
    assert compile_mode('reduce-overhead', 'cuda') == 'reduce-overhead' and compile_mode('reduce-overhead', 'cpu') == 'none'
    assert compile_mode(None, 'cuda') == 'none'
    with pytest.raises(ValueError, match='compile mode'): compile_mode('max-speed', 'cpu')
