#!/usr/bin/env bash
# Several GPU stages in one lease, back to back, without losing the device between commands (docs/gpu_runbook.md).
# A device command may run 10 minutes, a lease (15 minutes of device time per task since 2026-12) longer: the first
# call starts the stages as a detached process (setsid: it outlives the call), later calls only wait and collect.
# Results stay under .gpucache/ on the device.
#
#   bash tools/gpu_pipeline.sh start SECONDS STAGE...   # first call: start the stages in order, then collect
#   bash tools/gpu_pipeline.sh collect SECONDS          # later calls: wait up to SECONDS (less if the stages end)
#
# A group STAGE+STAGE... runs its stages at the same time (one process each, sharing the GPU), then the next group.
# Small models leave an H100 idle between kernel launches and while compiling, which another process can use; the
# price is timing: each shared stage's results record `gpu_shared_with` (MINIAI_GPU_SHARED, see
# miniai.core.run_environment), and their images/s are not throughput figures. Run a stage alone where its timing
# is a result (issue 4's training images/s in ddpm_fid, throughput).
#
# QUICK=1 runs the stages at quick size (a wiring test, anywhere; nothing goes to results/). MODELS and SELECT reach the
# stages (tools/gpu_stage.sh); MAX_MINUTES (default 11) after the pipeline's start is DEADLINE, after which ddpm_fid
# starts no draw that its measured rate says would end later (stages after it, e.g. ema_cost, keep their time). Group fid_classifier with the FID stage of the lease
# (fid_classifier+ddpm_fid): the FID classifier trains beside the diffusion model, which waits for it before scoring.
# The pseudo-stage wait_classifier waits (up to 10 min) for the FID classifier's weights, carried by the next call as
# .gpucache/models (they do not fit in the first call beside Fashion-MNIST and the wheels); it saves retraining them.
# collect writes $OUT/results.tar.gz.part* (join them with cat; .gpucache/results/, every stage's log (stage check's too), and the FID classifier's
# weights when stage classifier or base trained them), so a
# call cut short still returns what is finished. A stage may wait for data that a later call carries: a stage
# named audio waits (up to 10 min) for .data2/fsdd/ and installs the wheels in .whl2/ (gpu_prepare.sh audio builds
# them; move them to .data2/ and .whl2/ so that they do not replace the first call's .data/ and .whl/).
set -uo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?"usage: bash tools/gpu_pipeline.sh start SECONDS STAGE... | collect SECONDS"}; secs=${2:?"SECONDS missing"}
STAGE_SH=${GPU_STAGE_SH:-tools/gpu_stage.sh}   # (another script only in the tests)
P=${GPU_PIPELINE_DIR:-.gpucache/pipeline}; mkdir -p "$P"; P=$(cd "$P" && pwd)   # the pipeline's logs, pid and end marker

collect() {  # wait until the stages end or $1 seconds pass, then pack everything finished so far into $OUT
  local t0; t0=$(date +%s)
  while [ ! -f $P/done ] && [ $(( $(date +%s) - t0 )) -lt "$1" ]; do sleep 5; done
  [ -f $P/done ] && echo "== pipeline finished: $(cat $P/done)" || echo "== pipeline still running after ${1} s"
  tail -n 25 $P/pipeline.log 2>/dev/null
  # the FID classifier's weights only when a stage trained them here (the bench networks in models/ are 64 MiB each)
  local clf=; [ -f $P/classifier.log ] || [ -f $P/base.log ] && clf=.gpucache/models/fashion_classifier.safetensors
  tar czf $P/results.tar.gz $(ls -d .gpucache/results runs/gpu_quick/*.json $clf $P/out/*.log 2>/dev/null) $P/*.log 2>/dev/null
  split -b 15M -d $P/results.tar.gz "${OUT:-$P}/results.tar.gz.part"   # the device returns files of 16 MiB at most
  ls -la .gpucache/results 2>/dev/null || true
}

[[ "$secs" =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number, got '$secs'" >&2; exit 2; }
case "$cmd" in
start)
  shift 2; [ $# -gt 0 ] || { echo "no stages given" >&2; exit 2; }
  known="$(sed -n 's/^case "$stage" in \([a-z_|]*\)) ;;.*/\1/p' tools/gpu_stage.sh)|wait_classifier"
  for s in "$@"; do for part in ${s//+/ }; do   # a group a+b runs its stages at the same time
    [[ "|$known|" == *"|$part|"* ]] || { echo "unknown stage '$part' (stages: $known)" >&2; exit 2; }
    [[ "$s" != *+* || "$part" != wait_classifier ]] || { echo "wait_classifier cannot be part of a group ('$s')" >&2; exit 2; }
  done; done
  [ -f $P/pid ] && kill -0 "$(cat $P/pid)" 2>/dev/null && { echo "a pipeline is running already" >&2; exit 2; }
  rm -f $P/done
  setsid bash -c '
    P=$1; STAGE_SH=$2; shift 2; t=$(date +%s)
    export DEADLINE=$(( t + ${MAX_MINUTES:-11}*60 ))   # ddpm_fid starts no draw that would end after it
    one() {   # one stage, its log in $P/STAGE.log; MINIAI_GPU_SHARED names the group it shares the GPU with
      local s=$1
      if [ "$s" = wait_classifier ]; then   # the weights come with a later call
        f=.gpucache/models/fashion_classifier.safetensors
        for i in $(seq 120); do [ -f $f ] && break; sleep 5; done
        [ -f $f ] && echo "classifier weights: $(sha256sum $f)" > $P/wait_classifier.log || echo "no $f after 10 min: the stages train it" > $P/wait_classifier.log
      elif [ "$s" = audio ]; then   # its data and wheels come with a later call
        for i in $(seq 120); do [ -f .data2/fsdd/fsdd_v1.0.10.npz ] && break; sleep 5; done
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl2/*.whl >>$P/pipeline.log 2>&1
        MINIAI_DATA=$PWD/.data2 OUT=$P/out bash $STAGE_SH audio ${QUICK:+--quick} > $P/audio.log 2>&1
      else OUT=$P/out bash $STAGE_SH "$s" ${QUICK:+--quick} > $P/$s.log 2>&1; fi
      local rc=$?; echo "stage $s: exit $rc at $(( $(date +%s) - t )) s${MINIAI_GPU_SHARED:+ (GPU shared: $MINIAI_GPU_SHARED)}" >> $P/pipeline.log
      return $rc
    }
    for s in "$@"; do
      if [[ "$s" == *+* ]]; then   # the group'"'"'s stages at once; it fails if one of them failed
        pids=(); for part in ${s//+/ }; do MINIAI_GPU_SHARED=$s one $part & pids+=($!); done
        rc=0; for pid in "${pids[@]}"; do wait $pid || rc=1; done
      else one "$s"; rc=$?; fi
      [ $rc -eq 0 ] || { echo "stage $s failed (exit $rc; see its log in $P/)" > $P/done; exit 1; }
    done
    echo "all stages in $(( $(date +%s) - t )) s" > $P/done' _ "$P" "$STAGE_SH" "$@" < /dev/null > $P/daemon.log 2>&1 &
  echo $! > $P/pid; echo "== started stages $* (pid $(cat $P/pid))"
  collect "$secs";;
collect) collect "$secs";;
*) echo "unknown command '$cmd'" >&2; exit 2;;
esac
