"""The `miniai sample` and `miniai fid` commands (the `train` command is tested in test_diffusion.py)."""
import json
import pytest
import torch
from safetensors.torch import save_file
from miniai.cli import load_trained, main, recipe, sample_to_files, save_trained
from miniai.diffusion.ddpm import diffusers_unet, init_ddpm
from miniai.distributed import load_samples


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    r = recipe('cosine', quick=True)
    model = init_ddpm(diffusers_unet(**r['unet']))
    return save_trained(model, tmp_path/'run'/'model.safetensors', dict(schedule='cosine', quick=True, unet=r['unet'],
                        value_range=r['value_range'], linear=None)), model


def test_load_trained_round_trip(checkpoint):
    path, model = checkpoint
    loaded, cfg = load_trained(path.parent, device='cpu')  # a folder works too
    assert cfg['schedule'] == 'cosine' and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_load_trained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no weights file'): load_trained(tmp_path/'missing.safetensors')
    save_file({'w': torch.zeros(1)}, str(tmp_path/'plain.safetensors'))
    with pytest.raises(ValueError, match='no miniai model config'): load_trained(tmp_path/'plain.safetensors')


def test_sample_is_seeded_and_in_range(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')
    path, _ = checkpoint
    r = sample_to_files(path, tmp_path/'a', n=3, steps=3, seed=5, progress=False)
    main(['sample', str(path), '--out', str(tmp_path/'b'), '-n', '3', '--steps', '3', '--seed', '5', '--no-progress'])
    a, b = load_samples(tmp_path/'a'/'samples.npy'), load_samples(tmp_path/'b'/'samples.npy')
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
    assert r['nfe'] == 2 and (tmp_path/'a'/'samples.png').is_file()
    c = sample_to_files(path, tmp_path/'c', n=3, steps=3, seed=6, progress=False)
    assert not torch.equal(a, load_samples(tmp_path/'c'/'samples.npy'))


def test_sample_and_fid_bad_arguments(checkpoint, tmp_path):
    path, _ = checkpoint
    for bad in (['sample', str(path), '--eta', '-1'], ['sample', str(path), '--steps', '0'], ['sample', str(path), '-n', '0']):
        with pytest.raises(SystemExit) as e: main(bad)
        assert e.value.code == 2
    with pytest.raises(FileNotFoundError, match='no sample file'): main(['fid', str(tmp_path/'none.npy'), '--quick'])
