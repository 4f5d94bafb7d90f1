"Each GPU stage's carry (the tracked tree, its wheels and its data) fits the device's 64 MiB: the tree grows, the rest was measured."
import subprocess
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = (64 << 20) - (256 << 10)   # tools/gpu_prepare.sh: the device's 64 MiB less a 256 KiB margin
# bytes of .whl and .data after `bash tools/gpu_prepare.sh STAGE` (measured 2026-12-05, requirements-lock.txt's wheels);
# every stage carries one of these three sets (ddpm_fid stands for all Fashion-MNIST stages)
CARRY = {'latent': (6_693_945, 45_487_955), 'audio': (11_424_674, 15_535_313), 'ddpm_fid': (9_824_289, 30_886_837)}


def tracked_bytes() -> int:
    "Bytes of the files git tracks, as they are on disk: what a clean checkout sends to the device."
    names = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True).stdout.split(b'\0')
    return sum((REPO/n.decode()).stat().st_size for n in names if n and (REPO/n.decode()).is_file())


@pytest.mark.skipif(not (REPO/'.git').exists(), reason='not a git checkout')
@pytest.mark.parametrize('stage', CARRY)
def test_each_stage_fits_the_device_carry(stage):
    whl, data = CARRY[stage]
    tree = tracked_bytes()
    total = tree + whl + data
    assert total <= LIMIT, (f"stage {stage} would carry {total/2**20:.2f} MiB (tree {tree/2**20:.2f}, wheels {whl/2**20:.2f}, "
                            f"data {data/2**20:.2f}), over the device's {LIMIT/2**20:.2f} MiB: shrink the tree "
                            f"(`python tools/shrink_pngs.py nbs/*.ipynb` re-encodes the stored figures losslessly; or trim notebook outputs "
                            f"or miniai/assets) or split the carry (docs/gpu_runbook.md)")
