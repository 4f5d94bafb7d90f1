#!/usr/bin/env bash
# Prepare, on the development machine, what one GPU stage needs to carry (docs/gpu_runbook.md):
#   .whl/       wheels of the packages the device image lacks, at the versions of requirements-lock.txt
#   .data/      the data sets the stage reads
#   .gpucache/  kept as is (FID-classifier weights brought back from a lease, 20 MiB, do not fit beside Fashion-MNIST:
#               a second call carries .gpucache/models, and the pipeline's wait_classifier stage waits for them; without
#               them, group stage fid_classifier with the FID stage, docs/gpu_runbook.md)
# The device takes 64 MiB in all (the working tree included), so each stage carries only what it uses.
# Usage: bash tools/gpu_prepare.sh STAGE [DATA_ROOT]   (DATA_ROOT default: $MINIAI_DATA, else ../shared/data)
# The device image (2026-11) has huggingface_hub 1.33 with transformers and peft, which refuse huggingface_hub 2.x:
# diffusers then fails to import. So the hub and its closure do not travel; torcheval (not in the image) does.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"usage: bash tools/gpu_prepare.sh STAGE [DATA_ROOT]"}
src=${2:-${MINIAI_DATA:-../shared/data}}
# The image has torch, numpy, pandas, pyarrow, pillow, requests, pyyaml, tqdm, huggingface_hub...; safetensors 0.8
# (diffusers 0.42 needs it) and the rest below travel.
core=(fastcore torcheval diffusers importlib_metadata zipp lazy-importer regex
      safetensors filelock fsspec)
hfdata=(datasets dill multiprocess xxhash)   # the Fashion-MNIST loader keeps an HF-datasets copy in its cache
# latent's data (rgb64, 43.4 MiB) leaves too little room for all of core: it carries only what the H200 image lacks.
# That image (the device library's KINDS.md, read 2026-11-17) has regex, filelock, fsspec, zipp and safetensors 0.8.0
# (the locked version), which diffusers and importlib_metadata then take from it.
core_lean=(fastcore torcheval diffusers importlib_metadata lazy-importer)
sound=(soundfile cffi pycparser)
case "$stage" in
  base|classifier|fid_classifier|throughput|ema_cost|ddpm|ddpm_fid|karras|noise_level|unet|ddp|check) sets=(fashion_mnist); wheels=("${core[@]}" "${hfdata[@]}");;
  latent) sets=(rgb64); wheels=("${core_lean[@]}");;
  audio) sets=(fsdd); wheels=("${core[@]}" "${hfdata[@]}" "${sound[@]}");;
  *) echo "unknown stage '$stage'" >&2; exit 2;;
esac

rm -rf .whl && mkdir -p .whl
for p in "${wheels[@]}"; do
  spec=$(grep -i "^${p}==" requirements-lock.txt) || { echo "$p is not in requirements-lock.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$spec" 2>&1 | grep -v -i warning || true
done
[ "$(ls .whl | wc -l)" -eq "${#wheels[@]}" ] || { echo "ERROR: expected ${#wheels[@]} wheels, got: $(ls .whl)" >&2; exit 1; }

rm -rf .data && mkdir -p .data .gpucache/models
for d in "${sets[@]}"; do
  [ -d "$src/$d" ] || { echo "no data set $src/$d" >&2; exit 1; }
  cp -r "$src/$d" .data/
done
extra=$(find .gpucache -mindepth 1 -maxdepth 1 ! -name models)
[ -z "$extra" ] || echo "WARNING: .gpucache holds more than models/ ($extra): remove it before carrying" >&2

# What travels: the tracked tree (and untracked files git does not ignore) plus the carried folders, 64 MiB at most,
# counted in bytes (latent's comes within 2 MiB of it); a margin of 256 KiB is kept.
bytes() { du -cb --apparent-size "$@" 2>/dev/null | tail -1 | cut -f1; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb --apparent-size 2>/dev/null | awk '$2 == "total" {s += $1} END {print s+0}')
whl=$(bytes .whl); data=$(bytes .data); cache=$(bytes .gpucache); limit=$(( (64 << 20) - (256 << 10) ))
echo "travels: the working tree ($(mib $tree) MiB), .whl (${#wheels[@]} wheels, $(mib $whl) MiB), .data (${sets[*]}; $(mib $data) MiB): $(mib $(( tree + whl + data ))) MiB of the 64 MiB limit"
[ $(( tree + whl + data )) -le $limit ] || { echo "ERROR: over the device's 64 MiB limit (less a 256 KiB margin); carry less" >&2; exit 1; }
if [ $(( tree + whl + data + cache )) -le $limit ]; then carry="['.whl', '.data', '.gpucache']"
else carry="['.whl', '.data']"   # the FID classifier (20 MiB) travels with the next call
  if [ -f .gpucache/models/fashion_classifier.safetensors ]; then
    echo "note: .gpucache ($(mib $cache) MiB) does not fit as well: start the pipeline with wait_classifier, then carry ['.gpucache/models'] in the next call"
  else echo "note: no FID classifier in .gpucache/models/: the lease trains it (stage fid_classifier, grouped with the FID stage)"; fi
fi
echo "device run: command='bash tools/gpu_stage.sh $stage'  carry=$carry"
case "$stage" in   # fid_classifier trains beside an FID stage on Fashion-MNIST; ema_cost and throughput measure alone
  ddpm|ddpm_fid|karras|noise_level|unet) group=fid_classifier+$stage;;
  fid_classifier) group=fid_classifier+ddpm_fid;;
  *) group=$stage;;
esac
echo "   or, one lease (docs/gpu_runbook.md): command='MODELS=... bash tools/gpu_pipeline.sh start 540 $group'  carry=$carry"
