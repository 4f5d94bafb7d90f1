#!/usr/bin/env bash
# One stage of the GPU measurements, run on the device machine (docs/gpu_runbook.md says how to call it, what to
# carry, and what each stage costs). Each stage writes its results files and copies them to $OUT as soon as each
# step ends, so a command stopped by the device's time limit still returns what it finished.
#
#   bash tools/gpu_stage.sh STAGE           # on the GPU: results/*.json, copied to $OUT
#   bash tools/gpu_stage.sh STAGE --quick   # anywhere, a smoke test: tiny sizes, into runs/gpu_quick/ (never results/)
#   bash tools/gpu_stage.sh STAGE --full-nets  # anywhere (karras noise_level unet latent audio): quick data, epochs and
#                                           # samples, but the full-size networks, into runs/gpu_full_nets/ (never results/)
#
# STAGE: check | base | fid_classifier | ema_cost | ddpm | karras | noise_level | unet | latent | audio | ddp   (see the runbook)
#        base = classifier + throughput, ddpm = bench_ddpm + ddpm_fid: the parts run alone too
# MODELS="a b" (ddpm_fid, karras, unet): train and score only these networks of the stage's table in this lease; a
# later lease with the others completes the same table (results/*.json carried back seed it).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"usage: bash tools/gpu_stage.sh STAGE [--quick|--full-nets]"}; quick=${2:-}
case "$stage" in check|base|classifier|fid_classifier|throughput|ema_cost|ddpm|ddpm_fid|karras|noise_level|unet|latent|audio|ddp) ;; *) echo "unknown stage '$stage'" >&2; exit 2;; esac
case "$quick" in ""|--quick) ;;
  --full-nets) case "$stage" in karras|noise_level|unet|latent|audio) ;;   # (the other stages' full-size networks ran on a GPU)
    *) echo "--full-nets: only for stages karras noise_level unet latent audio" >&2; exit 2;; esac ;;
  *) echo "second argument must be --quick or --full-nets" >&2; exit 2;; esac

# The device image lacks some packages: install the carried wheels (tools/gpu_prepare.sh builds .whl/) next to it
# (not where they are installed already, e.g. in a development environment). One install at a time: the stages of a
# group (fid_classifier+ddpm_fid) start together and share the folder. flock(1) holds the lock on an open file, which
# the kernel releases when its installer ends, killed or not; a live installer is waited for (3 minutes at most).
SITE=${GPU_SITE:-/tmp/site}
install_wheels() {
  local pip=(python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl)
  if ! command -v flock >/dev/null; then "${pip[@]}" 2>&1 | grep -v -i warning || true; return 0; fi
  mkdir -p "$(dirname "$SITE")"   # (the lock file's folder; pip makes $SITE itself)
  (
    flock -w "${GPU_SITE_WAIT:-180}" 9 || echo "== $SITE.lock is still held after ${GPU_SITE_WAIT:-180} s: installing beside its holder" >&2
    "${pip[@]}" 2>&1 | grep -v -i warning || true
  ) 9>"$SITE.lock"
}
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import diffusers, fastcore, datasets, torcheval, soundfile" 2>/dev/null; then
  install_wheels
  export PYTHONPATH="$SITE:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# Data and caches inside the checkout (carried folders; git-ignored). The FID classifier trained by `base`, `classifier`
# or `fid_classifier` lives in $MINIAI_CACHE/models/, where every later stage looks for it.
# Results are written under .gpucache/results/: an ignored folder that a warm device keeps between calls (a call that
# does not carry .gpucache), so a stage cut short by the time limit resumes there; results/ files carried from the
# development machine seed it. (A quick run keeps everything in runs/gpu_quick/, away from the real cache.)
if [ "$quick" = --full-nets ]; then R=runs/gpu_full_nets; Q=(--quick --full-nets); OUT="${OUT:-$PWD/$R/out}"; cache=$PWD/$R/cache
elif [ -n "$quick" ]; then R=runs/gpu_quick; Q=(--quick); OUT="${OUT:-$PWD/runs/gpu_quick/out}"; cache=$PWD/runs/gpu_quick/cache
else R=.gpucache/results; Q=(); OUT="${OUT:-$PWD/runs/gpu_out}"; cache=$PWD/.gpucache
  mkdir -p $R; for f in results/*.json results/*.md; do [ -f "$f" ] && [ ! -f "$R/$(basename "$f")" ] && cp "$f" $R/; done; true
fi
[ -n "$quick" ] && MINIAI_CACHE=$cache  # never the real cache, even when a caller set it
export MINIAI_DATA="${MINIAI_DATA:-$PWD/.data}" MINIAI_CACHE="${MINIAI_CACHE:-$cache}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
mkdir -p "$R" "$OUT" "$MINIAI_CACHE/models"
PY=python3
CLF_DONE="$MINIAI_CACHE/models/fid_classifier.done"   # holds 'ok' or 'failed' once stage fid_classifier has ended
if [ "$stage" = fid_classifier ]; then   # first of all: the stages of its group must not see an old marker, and any
  rm -f "$CLF_DONE"                      # failure from here on (even the environment check below) ends their wait at once
  trap '[ -f "$CLF_DONE" ] || echo failed > "$CLF_DONE"' EXIT
fi
start=$(date +%s)

ship() {  # copy finished results files to $OUT (the device returns at most 8 files, of 16 MiB each at most)
  for f in "$@"; do [ -f "$f" ] || continue
    if [ "$(stat -c %s "$f")" -gt $((15 << 20)) ]; then   # (the FID classifier's weights: about 20 MiB) in parts: cat them
      split -b 15M -d "$f" "$OUT/$(basename "$f").part"; echo "== $(basename "$f") comes back in parts: cat $(basename "$f").part* > $(basename "$f")"
    else cp "$f" "$OUT/"; fi
  done
  echo "== $(( $(date +%s) - start )) s: shipped $*"
}
step() { echo "== $(( $(date +%s) - start )) s: $*"; "$@"; }
# A training script that fails with torch.compile runs again eagerly (`--compile none`); the scripts resume, so the
# models finished before the failure are kept. (On the H100, torch 2.11: 'CUDA error: misaligned address' inside the
# CUDA graphs of the second model compiled in one process; results/logs/gpu_2026-11-23b_ddpm_fid_failed.log.)
or_eager() { step "$@" || { echo "== $(( $(date +%s) - start )) s: failed; once more without torch.compile"; step "$@" --compile none; }; }
# The FID classifier's weights do not outlive a lease. A stage in a group with fid_classifier (gpu_pipeline.sh sets
# MINIAI_GPU_SHARED) trains its networks meanwhile and waits for the weights only before it scores.
wait_fid_classifier() {
  [[ "+${MINIAI_GPU_SHARED:-}+" == *+fid_classifier+* ]] || return 0
  echo "== $(( $(date +%s) - start )) s: waiting for stage fid_classifier's weights"
  for _ in $(seq 240); do [ -f "$CLF_DONE" ] && break; sleep 5; done
  [ "$(cat "$CLF_DONE" 2>/dev/null)" = ok ] || { echo "stage fid_classifier gave no FID classifier (see its log)" >&2; exit 1; }
}

$PY - <<'EOF'
import torch, miniai, diffusers, fastcore
from miniai.core import run_environment
print('torch', torch.__version__, '| diffusers', diffusers.__version__, '| fastcore', fastcore.__version__,
      '| cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
print(run_environment())
EOF

case "$stage" in
check)  # stages base ddpm karras noise_level unet ddp at quick size (between them every script of the other
  # Fashion-MNIST stages), on the GPU: the CUDA code paths CI never runs; nothing goes to results/
  [ -z "$quick" ] || { echo "stage check is already quick" >&2; exit 2; }
  failed=()
  for s in base ddpm karras noise_level unet ddp; do  # (latent and audio need data sets that do not fit beside Fashion-MNIST)
    echo "== $(( $(date +%s) - start )) s: stage $s --quick (log: $OUT/check_$s.log)"
    OUT=$PWD/runs/gpu_quick/out bash tools/gpu_stage.sh $s --quick > "$OUT/check_$s.log" 2>&1 || failed+=($s)
    tail -n 3 "$OUT/check_$s.log"
  done
  [ ${#failed[@]} -eq 0 ] || { echo "== FAILED at quick size: ${failed[*]} (see $OUT/check_*.log)"; exit 1; }
  ;;
fid_classifier)   # the FID feature network for this lease's FID stages (20 epochs, CLASSIFIER_RECIPES[20]) and its
  # real-image floor; issue 3's accuracy record (classifier.json, with its recipe selection) is left as it is
  # (its marker was removed when this stage started, above; quick mode: the FID stages train tiny classifiers of their own)
  step $PY bench/train_classifier.py "${Q[@]}" --epochs 20 --no-throughput --out $R/fid_classifier.json
  echo ok > "$CLF_DONE"; ship $R/fid_classifier.json
  step $PY bench/fid_floor.py "${Q[@]}" --out $R/fid_floor.json;                   ship $R/fid_floor.json
  ;;
base|classifier|throughput)   # issue 3: classifier (5 and 20 epochs with notebook 04's CLASSIFIER_RECIPES, the latter
  # saved as the FID feature model; SELECT=1 chooses the recipes again on a held-out split) and FID floor; then the
  # training and data-loading throughput
  if [ "$stage" != throughput ]; then
    # classifier.json is issue 3's record: the recipes as selected (tests/test_resnet.py checks it); a run that does not
    # select them again writes classifier_rerun.json, so that it cannot replace the record by mistake
    clf_json=$R/classifier.json; [ -n "${SELECT:-}" ] || clf_json=$R/classifier_rerun.json
    step $PY bench/train_classifier.py "${Q[@]}" ${SELECT:+--select} --epochs 5 20 --out $clf_json
    ship $clf_json "$MINIAI_CACHE/models/fashion_classifier.safetensors"
    step $PY bench/fid_floor.py "${Q[@]}" --out $R/fid_floor.json;                 ship $R/fid_floor.json
  fi
  if [ "$stage" != classifier ]; then
    step $PY bench/bench_accel.py "${Q[@]}" --out $R/accel_throughput.json --compile --grad; ship $R/accel_throughput.json
    step $PY tools/bench_data.py --out $R/data_throughput.json; ship $R/data_throughput.json
  fi
  ;;
ema_cost)   # issue 3: the EMA's cost in training images/s, eagerly (interleaved rounds; about 2 minutes): what stage
  # throughput measures without its compiled configurations, into a file of its own (accel_throughput.json keeps them).
  # Alone on the GPU: not in a group, whose timings are shared
  [ -z "${MINIAI_GPU_SHARED:-}" ] || { echo "stage ema_cost measures throughput: run it alone, not in a group" >&2; exit 2; }
  step $PY bench/bench_accel.py "${Q[@]}" --out $R/ema_cost.json; ship $R/ema_cost.json
  ;;
ddpm|ddpm_fid)   # issue 4: course-style loop vs miniai, then the DDPM/DDIM/cosine FID table (resumable)
  [ "$stage" = ddpm_fid ] || { step $PY bench/bench_ddpm.py "${Q[@]}" --out $R/bench_ddpm.json; ship $R/bench_ddpm.json; }
  models=${MODELS:-linear cosine}
  for m in $models; do   # each model trains in its own process (one set of compiled CUDA graphs per process)
    or_eager $PY bench/ddpm_fid.py "${Q[@]}" --work "$MINIAI_CACHE/ddpm_fid" --out $R/ddpm_fid --models $m --train-only
  done
  wait_fid_classifier
  or_eager $PY bench/ddpm_fid.py "${Q[@]}" --work "$MINIAI_CACHE/ddpm_fid" --out $R/ddpm_fid --models $models ${DEADLINE:+--deadline $DEADLINE}
  ship $R/ddpm_fid.json $R/ddpm_fid.md
  ;;
karras) # issue 5
  models=${MODELS:-karras cosine}
  for k in $models; do or_eager $PY bench/karras_fid.py "${Q[@]}" --out $R/karras_fid.json --train-only $k; done   # one process each
  wait_fid_classifier
  or_eager $PY bench/karras_fid.py "${Q[@]}" --out $R/karras_fid.json --models $models; ship $R/karras_fid.json $R/karras_fid.md
  ;;
noise_level)   # issue 5: a model trained without t, naive DDIM vs DDIM with the noise-level regressor's ᾱ
  for m in no_t regressor; do or_eager $PY bench/noise_level_fid.py "${Q[@]}" --out $R/noise_level_fid.json --train-only $m; done
  wait_fid_classifier
  or_eager $PY bench/noise_level_fid.py "${Q[@]}" --out $R/noise_level_fid.json; ship $R/noise_level_fid.json $R/noise_level_fid.md
  ;;
unet)   # issue 6: MODELS among emb_unet emb_unet_attn diffusers (the models section) and cond (the guidance section)
  models=${MODELS:-emb_unet emb_unet_attn diffusers cond}
  for m in $models; do or_eager $PY bench/unet_fid.py "${Q[@]}" --out $R/unet_fid.json --train-only $m; done   # one process each
  wait_fid_classifier
  or_eager $PY bench/unet_fid.py "${Q[@]}" --models $models --out $R/unet_fid.json; ship $R/unet_fid.json $R/unet_fid.md
  ;;
latent) # issue 7 (needs .data/rgb64). Its configured training (VAE 100 epochs, U-Nets 200: about 35 PFLOPs) may not fit a
  # lease: TRAIN_MINUTES (default 8) caps it; the script times each network first and scales the epochs down if needed
  tm=(); [ -n "$quick" ] || tm=(--train-minutes "${TRAIN_MINUTES:-8}")
  step $PY bench/latent_fid.py "${Q[@]}" "${tm[@]}" --out $R/latent_fid.json --no-progress; ship $R/latent_fid.json
  ;;
audio)  # issue 8 (needs .data/fsdd). Two trainings of 200 epochs (about 14 PFLOPs): TRAIN_MINUTES (default 8) caps them
  tm=(); [ -n "$quick" ] || tm=(--train-minutes "${TRAIN_MINUTES:-8}")
  step $PY bench/audio_eval.py "${Q[@]}" "${tm[@]}" --out $R/audio.json;        ship $R/audio.json
  ;;
ddp)    # issue 9: the data-parallel demo on every GPU of the machine (one process per GPU)
  if [ -n "$quick" ]; then  # one process per GPU, or 2 CPU processes (gloo) where there is none
    n=$($PY -c "import torch; print(torch.cuda.device_count() or 2)")
    step $PY -m torch.distributed.run --standalone --nproc_per_node=$n tools/train_ddp_demo.py --out runs/gpu_quick/ddp --results $R/ddp_demo.json
  else step $PY -m torch.distributed.run --standalone --nproc_per_node=gpu tools/train_ddp_demo.py --full --out runs/ddp --results $R/ddp_demo.json; fi
  ship $R/ddp_demo.json
  ;;
esac
if [ "$stage" = check ]; then echo "== stage check passed in $(( $(date +%s) - start )) s (logs in $OUT/; nothing measured)"
else echo "== stage $stage done in $(( $(date +%s) - start )) s; results in $R/, copies in $OUT/"; fi
