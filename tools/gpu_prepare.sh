#!/usr/bin/env bash
# Prepare, on the development machine, what one GPU stage needs to carry (docs/gpu_runbook.md):
#   .whl/       wheels of the packages the device image lacks, at the versions of requirements-lock.txt
#   .data/      the data sets the stage reads (the device's carry limit is 64 MiB, so only those)
#   .gpucache/  kept as is: put the FID classifier returned by stage `base` in .gpucache/models/
# Usage: bash tools/gpu_prepare.sh STAGE [DATA_ROOT]   (DATA_ROOT default: $MINIAI_DATA, else ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"usage: bash tools/gpu_prepare.sh STAGE [DATA_ROOT]"}
src=${2:-${MINIAI_DATA:-../shared/data}}
case "$stage" in
  base|ddpm|karras|unet|ddp) sets=(fashion_mnist);;
  check) sets=(fashion_mnist fsdd);;
  latent) sets=(rgb64);;
  audio) sets=(fsdd fashion_mnist);;
  *) echo "unknown stage '$stage'" >&2; exit 2;;
esac
pin() { grep -i "^$1==" requirements-lock.txt || { echo "$1 is not in requirements-lock.txt" >&2; exit 1; }; }
pkgs=()
for p in fastcore diffusers importlib_metadata zipp regex torcheval datasets dill multiprocess xxhash fsspec soundfile cffi pycparser; do
  pkgs+=("$(pin $p)")
done
mkdir -p "$(git rev-parse --git-dir)/info"   # device-wheels.sh records .whl/ in .git/info/exclude
bash ../shared/tools/device-wheels.sh "${pkgs[@]}" >/dev/null
rm -rf .data && mkdir -p .data .gpucache/models
for d in "${sets[@]}"; do
  [ -d "$src/$d" ] || { echo "no data set $src/$d" >&2; exit 1; }
  cp -r "$src/$d" .data/
done
total=$(du -scm .whl .data .gpucache | tail -1 | cut -f1)
echo "carry: .whl ($(du -sm .whl | cut -f1) MiB), .data (${sets[*]}; $(du -sm .data | cut -f1) MiB), .gpucache ($(du -sm .gpucache | cut -f1) MiB): ${total} MiB of the 64 MiB limit"
[ "$total" -lt 62 ] || echo "WARNING: over the device's carry limit; carry less" >&2
echo "device run: command='bash tools/gpu_stage.sh $stage'  carry=['.whl', '.data', '.gpucache']"
