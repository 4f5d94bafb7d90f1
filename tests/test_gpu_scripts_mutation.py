"""The GPU scripts' logic (tools/gpu_stage.sh, gpu_pipeline.sh, gpu_prepare.sh), run in a fake checkout.

Each test copies the script into tmp_path and puts fakes first on PATH: `python3` logs its arguments and environment
and writes the `--out` files it is asked for, `sleep` returns at once (logging how long it was asked to wait; FAKE_SLEEP_REAL: after 50 ms),
`git` lists the tracked files; the pipeline gets a fake stage script through GPU_STAGE_SH. Nothing touches the
network, the GPU or the real checkout. (Written while mutation-testing these scripts.)
"""
import os, re, shutil, subprocess, sys, tarfile, time
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
LEAK = ('MINIAI_CACHE', 'MINIAI_DATA', 'MINIAI_GPU_SHARED', 'OUT', 'MODELS', 'SELECT', 'DEADLINE', 'QUICK',
        'MAX_MINUTES', 'TRAIN_MINUTES', 'GPU_STAGE_SH', 'GPU_PIPELINE_DIR', 'PYTHONPATH', 'GPU_SITE')

FAKE_PY = r'''#!/usr/bin/env bash
case "$1" in
  -) cat >/dev/null; [ -z "${FAKE_ENV_FAIL:-}" ] || exit 1; echo "fake python3"; exit 0;;
  -c) PYTHONPATH="$FAKE_STUBS" exec "$FAKE_REAL_PY" "$@";;
esac
marker="$MINIAI_CACHE/models/fid_classifier.done"
echo "CALL $* |CACHE=$MINIAI_CACHE|DATA=$MINIAI_DATA|SHARED=${MINIAI_GPU_SHARED:-}|MARKER=$(cat "$marker" 2>/dev/null || echo none)" >> "$FAKE_LOG"
if [ -n "${FAKE_FAIL_ALWAYS:-}" ] && [[ "$*" == *"$FAKE_FAIL_ALWAYS"* ]]; then exit 1; fi
if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]] && [[ "$*" != *"--compile none"* ]]; then exit 1; fi
prev=
for a in "$@"; do
  if [ "$prev" = --out ] || [ "$prev" = --results ]; then
    mkdir -p "$(dirname "$a")"
    case "$a" in *.json) echo "{\"args\": \"$*\"}" > "$a"; echo md > "${a%.json}.md";; *) echo '{}' > "$a.json"; echo md > "$a.md";; esac
  fi
  prev=$a
done
case "$*" in *bench/train_classifier.py*) mkdir -p "$MINIAI_CACHE/models"; w="$MINIAI_CACHE/models/fashion_classifier.safetensors"
  if [ -n "${FAKE_WEIGHTS_MIB:-}" ]; then head -c $((FAKE_WEIGHTS_MIB << 20)) /dev/urandom > "$w"; else echo w > "$w"; fi;; esac
exit 0
'''
FAKE_SLEEP = '#!/usr/bin/env bash\necho "$1" >> "$FAKE_SLEEP_LOG"; [ -z "${FAKE_SLEEP_REAL:-}" ] || /bin/sleep 0.05\n'
TORCH_STUB = 'class cuda:\n    @staticmethod\n    def device_count(): return 0\n'


def _exe(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text); path.chmod(0o755)
    return path


def _checkout(tmp_path, *scripts):
    "A fake checkout with copies of `scripts` (from tools/), and fakes first on PATH."
    root = tmp_path/'repo'
    for s in scripts: (root/'tools').mkdir(parents=True, exist_ok=True); shutil.copy(REPO/'tools'/s, root/'tools'/s)
    _exe(tmp_path/'bin'/'python3', FAKE_PY)
    _exe(tmp_path/'bin'/'sleep', FAKE_SLEEP)
    (tmp_path/'stubs'/'torch').mkdir(parents=True, exist_ok=True)
    (tmp_path/'stubs'/'torch'/'__init__.py').write_text(TORCH_STUB)
    return root


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in LEAK}
    env.update(PATH=f"{tmp_path/'bin'}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path/'calls.log'),
               FAKE_SLEEP_LOG=str(tmp_path/'sleeps.log'), FAKE_STUBS=str(tmp_path/'stubs'), FAKE_REAL_PY=sys.executable)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _calls(tmp_path):
    "The fake python3's calls: (arguments, environment) pairs, in order."
    log = tmp_path/'calls.log'
    if not log.exists(): return []
    out = []
    for line in log.read_text().splitlines():
        args, *kv = line[len('CALL '):].split(' |')
        out.append((args, dict(x.split('=', 1) for x in kv[0].split('|') if x)))
    return out


def _slept(tmp_path):
    log = tmp_path/'sleeps.log'
    return sum(float(x) for x in log.read_text().split()) if log.exists() else 0


def _stage(tmp_path, *args, timeout=30, **env):
    root = tmp_path/'repo'
    if not (root/'tools'/'gpu_stage.sh').exists(): _checkout(tmp_path, 'gpu_stage.sh')
    return subprocess.run(['bash', str(root/'tools'/'gpu_stage.sh'), *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(tmp_path, **env))


def _scripts(tmp_path, name):
    return [a for a, _ in _calls(tmp_path) if name in a]


# ---------------------------------------------------------------- gpu_stage.sh

def test_stage_seeds_device_results_from_committed_ones_without_overwriting(tmp_path):
    "A full run copies results/*.json and *.md into .gpucache/results/, keeping files already there (a resumed lease's)."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'results').mkdir(); (root/'.gpucache'/'results').mkdir(parents=True)
    (root/'results'/'a.json').write_text('committed a'); (root/'results'/'b.json').write_text('committed b')
    (root/'results'/'b.md').write_text('table b')
    (root/'.gpucache'/'results'/'a.json').write_text('device a')
    r = _stage(tmp_path, 'latent', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    dev = root/'.gpucache'/'results'
    assert (dev/'a.json').read_text() == 'device a'
    assert (dev/'b.json').read_text() == 'committed b' and (dev/'b.md').read_text() == 'table b'
    assert (dev/'latent_fid.json').exists() and (tmp_path/'out'/'latent_fid.json').exists()


def test_stage_full_run_defaults_to_checkout_folders(tmp_path):
    "Without OUT, MINIAI_CACHE and MINIAI_DATA a full stage uses runs/gpu_out, .gpucache and .data of the checkout."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    r = _stage(tmp_path, 'latent')
    assert r.returncode == 0, r.stderr
    (args, env), = _calls(tmp_path)
    assert '--quick' not in args and '--out .gpucache/results/latent_fid.json' in args
    assert env['CACHE'] == str(root/'.gpucache') and env['DATA'] == str(root/'.data')
    assert (root/'runs'/'gpu_out'/'latent_fid.json').exists()


def test_stage_keeps_callers_data_and_cache_in_a_full_run(tmp_path):
    "A full stage passes the caller's MINIAI_DATA and MINIAI_CACHE on to its scripts."
    r = _stage(tmp_path, 'audio', MINIAI_DATA=tmp_path/'d', MINIAI_CACHE=tmp_path/'c', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    (args, env), = _calls(tmp_path)
    assert 'bench/audio_eval.py' in args and env['DATA'] == str(tmp_path/'d') and env['CACHE'] == str(tmp_path/'c')
    assert (tmp_path/'out'/'audio.json').exists()


def test_stage_quick_mode_stays_in_runs_gpu_quick(tmp_path):
    "--quick passes --quick on, writes under runs/gpu_quick/ with its own cache (never the caller's), seeds nothing."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'results').mkdir(); (root/'results'/'a.json').write_text('committed')
    r = _stage(tmp_path, 'latent', '--quick', MINIAI_CACHE=tmp_path/'real_cache')
    assert r.returncode == 0, r.stderr
    (args, env), = _calls(tmp_path)
    assert '--quick' in args.split() and '--out runs/gpu_quick/latent_fid.json' in args
    assert env['CACHE'] == str(root/'runs'/'gpu_quick'/'cache')
    assert not (root/'.gpucache').exists() and not (tmp_path/'real_cache').exists()
    assert (root/'runs'/'gpu_quick'/'out'/'latent_fid.json').exists()


def test_stage_quick_mode_ships_to_the_callers_out(tmp_path):
    "A quick stage copies its results to $OUT where the caller sets it (the pipeline and stage check do)."
    r = _stage(tmp_path, 'latent', '--quick', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'out'/'latent_fid.json').exists()



@pytest.mark.parametrize('stage,script', [('latent', 'latent_fid'), ('audio', 'audio_eval')])
def test_stage_caps_training_time_on_the_gpu_only(tmp_path, stage, script):
    "latent and audio pass --train-minutes TRAIN_MINUTES (default 8) in a full run, and no cap in quick mode."
    r = _stage(tmp_path, stage, OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    assert '--train-minutes 8 ' in _scripts(tmp_path, script)[-1] + ' '
    r = _stage(tmp_path, stage, OUT=tmp_path/'out', TRAIN_MINUTES='6.5')
    assert '--train-minutes 6.5 ' in _scripts(tmp_path, script)[-1] + ' '
    r = _stage(tmp_path, stage, '--quick', OUT=tmp_path/'out', TRAIN_MINUTES='6.5')
    assert r.returncode == 0 and '--train-minutes' not in _scripts(tmp_path, script)[-1]


@pytest.mark.parametrize('stage,script', [('karras', 'karras_fid'), ('noise_level', 'noise_level_fid'), ('unet', 'unet_fid'),
                                          ('latent', 'latent_fid'), ('audio', 'audio_eval')])
def test_stage_full_nets_mode(tmp_path, stage, script):
    "--full-nets passes --quick --full-nets to every script of the stage, in runs/gpu_full_nets/ with its own cache."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'results').mkdir(); (root/'results'/'a.json').write_text('committed')
    r = _stage(tmp_path, stage, '--full-nets', MINIAI_CACHE=tmp_path/'real_cache')
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert calls and all(script in a for a, _ in calls)
    for args, env in calls:
        words = args.split()
        assert '--quick' in words and '--full-nets' in words and '--train-minutes' not in words
        assert '--out runs/gpu_full_nets/' in args and env['CACHE'] == str(root/'runs'/'gpu_full_nets'/'cache')
    assert not (root/'.gpucache').exists() and not (tmp_path/'real_cache').exists()


def test_stage_refuses_bad_arguments_before_running_anything(tmp_path):
    "A second argument other than --quick, or ema_cost inside a group, exits 2 without running a script."
    r = _stage(tmp_path, 'base', '--fast')
    assert r.returncode == 2 and '--quick' in r.stderr
    r = _stage(tmp_path, 'ema_cost', MINIAI_GPU_SHARED='ddpm_fid+ema_cost', OUT=tmp_path/'out')
    assert r.returncode == 2 and 'not in a group' in r.stderr
    assert _calls(tmp_path) == []


def test_fid_classifier_stage_marks_its_end_before_the_floor(tmp_path):
    "fid_classifier removes an old marker first, trains 20 epochs without throughput, writes 'ok' before the floor."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'.gpucache'/'models').mkdir(parents=True)
    (root/'.gpucache'/'models'/'fid_classifier.done').write_text('failed\n')
    r = _stage(tmp_path, 'fid_classifier', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    (train, tenv), (floor, fenv) = _calls(tmp_path)
    assert 'bench/train_classifier.py' in train and '--epochs 20' in train and '--no-throughput' in train
    assert '--select' not in train and '--out .gpucache/results/fid_classifier.json' in train
    assert tenv['MARKER'] == 'none'   # the old marker was gone while it trained
    assert 'bench/fid_floor.py' in floor and fenv['MARKER'] == 'ok'
    assert (root/'.gpucache'/'models'/'fid_classifier.done').read_text().strip() == 'ok'
    assert {p.name for p in (tmp_path/'out').iterdir()} >= {'fid_classifier.json', 'fid_floor.json'}


def test_fid_classifier_stage_marks_a_failure(tmp_path):
    "A failed fid_classifier leaves the marker 'failed', which ends the waits of its group."
    r = _stage(tmp_path, 'fid_classifier', OUT=tmp_path/'out', FAKE_FAIL_ALWAYS='train_classifier.py')
    assert r.returncode != 0
    assert (tmp_path/'repo'/'.gpucache'/'models'/'fid_classifier.done').read_text().strip() == 'failed'
    assert not _scripts(tmp_path, 'fid_floor.py')


def test_fid_classifier_failing_its_environment_check_still_marks_a_failure(tmp_path):
    "A fid_classifier stage that fails before training (its environment check) leaves the marker 'failed' too."
    r = _stage(tmp_path, 'fid_classifier', OUT=tmp_path/'out', FAKE_ENV_FAIL=1)
    assert r.returncode != 0
    assert (tmp_path/'repo'/'.gpucache'/'models'/'fid_classifier.done').read_text().strip() == 'failed'


@pytest.mark.parametrize('stage,script', [('ddpm_fid', 'ddpm_fid.py'), ('karras', 'karras_fid.py'),
                                          ('noise_level', 'noise_level_fid.py'), ('unet', 'unet_fid.py')])
def test_fid_stage_in_a_group_trains_then_stops_when_the_classifier_failed(tmp_path, stage, script):
    "Grouped with fid_classifier, each FID stage trains all its networks, then a 'failed' marker stops it before scoring."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'.gpucache'/'models').mkdir(parents=True)
    (root/'.gpucache'/'models'/'fid_classifier.done').write_text('failed\n')
    r = _stage(tmp_path, stage, OUT=tmp_path/'out', MINIAI_GPU_SHARED=f'fid_classifier+{stage}')
    assert r.returncode != 0 and 'gave no FID classifier' in r.stderr, r.stdout + r.stderr
    calls = _scripts(tmp_path, script)
    assert calls and all('--train-only' in a for a in calls), calls


def test_fid_stage_in_a_group_scores_once_the_classifier_is_ok(tmp_path):
    "With the marker 'ok' the grouped stage scores after training, and ships its JSON and Markdown tables."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'.gpucache'/'models').mkdir(parents=True)
    (root/'.gpucache'/'models'/'fid_classifier.done').write_text('ok\n')
    r = _stage(tmp_path, 'karras', OUT=tmp_path/'out', MINIAI_GPU_SHARED='fid_classifier+karras')
    assert r.returncode == 0, r.stderr
    calls = _scripts(tmp_path, 'karras_fid.py')
    assert [a.split('--train-only ')[1] for a in calls[:-1]] == ['karras', 'cosine']
    assert '--train-only' not in calls[-1] and '--models karras cosine' in calls[-1]
    assert {p.name for p in (tmp_path/'out').iterdir()} == {'karras_fid.json', 'karras_fid.md'}


@pytest.mark.parametrize('shared', ['', 'ddpm_fid+ema_cost'])
def test_fid_stage_outside_a_classifier_group_does_not_wait(tmp_path, shared):
    "Alone, or in a group without fid_classifier, an FID stage scores at once (no marker needed, no waiting)."
    r = _stage(tmp_path, 'ddpm_fid', OUT=tmp_path/'out', MODELS='cosine', MINIAI_GPU_SHARED=shared, timeout=20)
    assert r.returncode == 0, r.stderr
    assert _slept(tmp_path) == 0 and "waiting for stage fid_classifier" not in r.stdout
    assert len(_scripts(tmp_path, 'ddpm_fid.py')) == 2


def test_fid_stage_waits_20_minutes_for_a_classifier_that_never_ends(tmp_path):
    "Grouped with fid_classifier and no marker, the stage polls for 20 minutes, then fails without scoring."
    r = _stage(tmp_path, 'ddpm_fid', OUT=tmp_path/'out', MODELS='cosine', MINIAI_GPU_SHARED='fid_classifier+ddpm_fid')
    assert r.returncode == 1 and 'gave no FID classifier' in r.stderr
    assert _slept(tmp_path) == 1200
    assert len(_scripts(tmp_path, 'ddpm_fid.py')) == 1


def test_ddpm_fid_trains_each_model_in_its_own_process_then_scores(tmp_path):
    "ddpm_fid (default MODELS 'linear cosine') trains one model per call, scores all with the deadline, skips bench_ddpm."
    r = _stage(tmp_path, 'ddpm_fid', OUT=tmp_path/'out', DEADLINE=12345)
    assert r.returncode == 0, r.stderr
    calls = [a for a, _ in _calls(tmp_path)]
    assert not [a for a in calls if 'bench_ddpm.py' in a]
    assert len(calls) == 3
    assert '--models linear --train-only' in calls[0] and '--models cosine --train-only' in calls[1]
    assert '--models linear cosine --deadline 12345' in calls[2] and '--train-only' not in calls[2]
    assert all('--work ' + str(tmp_path/'repo'/'.gpucache'/'ddpm_fid') in a for a in calls)
    assert {p.name for p in (tmp_path/'out').iterdir()} == {'ddpm_fid.json', 'ddpm_fid.md'}


def test_ddpm_stage_runs_bench_ddpm_first_and_models_selects(tmp_path):
    "ddpm runs bench_ddpm, then ddpm_fid for the MODELS given only; without DEADLINE no --deadline."
    r = _stage(tmp_path, 'ddpm', OUT=tmp_path/'out', MODELS='cosine')
    assert r.returncode == 0, r.stderr
    calls = [a for a, _ in _calls(tmp_path)]
    assert 'bench/bench_ddpm.py' in calls[0] and '--out .gpucache/results/bench_ddpm.json' in calls[0]
    assert len(calls) == 3 and all('--models cosine' in a and 'linear' not in a for a in calls[1:])
    assert '--deadline' not in calls[2]
    assert (tmp_path/'out'/'bench_ddpm.json').exists()


def test_a_training_script_that_fails_compiled_runs_again_eagerly(tmp_path):
    "or_eager: a failed training or scoring call runs once more with `--compile none`, and the stage succeeds."
    r = _stage(tmp_path, 'ddpm_fid', OUT=tmp_path/'out', MODELS='cosine', FAKE_FAIL='ddpm_fid.py')
    assert r.returncode == 0, r.stderr
    calls = _scripts(tmp_path, 'ddpm_fid.py')
    assert len(calls) == 4
    assert [c.endswith('--compile none') for c in calls] == [False, True, False, True]
    assert calls[1] == calls[0] + ' --compile none'


def test_a_script_that_fails_eagerly_too_fails_the_stage(tmp_path):
    "A training script that fails with `--compile none` as well ends the stage with an error, before scoring."
    r = _stage(tmp_path, 'unet', OUT=tmp_path/'out', MODELS='cond', FAKE_FAIL_ALWAYS='unet_fid.py')
    assert r.returncode != 0
    calls = _scripts(tmp_path, 'unet_fid.py')
    assert len(calls) == 2 and all('--train-only cond' in c for c in calls)


def test_unet_and_noise_level_default_networks(tmp_path):
    "unet trains emb_unet, emb_unet_attn, diffusers and cond by default; noise_level trains no_t and regressor."
    r = _stage(tmp_path, 'unet', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    calls = _scripts(tmp_path, 'unet_fid.py')
    assert [c.split('--train-only ')[1] for c in calls[:-1]] == ['emb_unet', 'emb_unet_attn', 'diffusers', 'cond']
    assert '--models emb_unet emb_unet_attn diffusers cond' in calls[-1]
    (tmp_path/'calls.log').unlink()
    r = _stage(tmp_path, 'noise_level', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    calls = _scripts(tmp_path, 'noise_level_fid.py')
    assert [c.split('--train-only ')[1] for c in calls[:-1]] == ['no_t', 'regressor'] and '--train-only' not in calls[-1]
    assert (tmp_path/'out'/'noise_level_fid.md').exists()


def test_classifier_record_is_written_only_with_select(tmp_path):
    "Without SELECT the classifier stage writes classifier_rerun.json (the record stays); SELECT=1 selects and writes classifier.json."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    (root/'results').mkdir(); (root/'results'/'classifier.json').write_text('record')
    r = _stage(tmp_path, 'classifier', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    calls = [a for a, _ in _calls(tmp_path)]
    assert len(calls) == 2 and 'bench/train_classifier.py' in calls[0] and 'bench/fid_floor.py' in calls[1]
    assert '--select' not in calls[0] and '--epochs 5 20 --out .gpucache/results/classifier_rerun.json' in calls[0]
    assert (root/'.gpucache'/'results'/'classifier.json').read_text() == 'record'
    assert {p.name for p in (tmp_path/'out').iterdir()} == {'classifier_rerun.json', 'fashion_classifier.safetensors', 'fid_floor.json'}
    (tmp_path/'calls.log').unlink()
    r = _stage(tmp_path, 'classifier', OUT=tmp_path/'out2', SELECT=1)
    assert r.returncode == 0, r.stderr
    train = _calls(tmp_path)[0][0]
    assert '--select --epochs 5 20 --out .gpucache/results/classifier.json' in train
    assert (tmp_path/'out2'/'classifier.json').exists()


def test_weights_over_the_devices_file_limit_are_shipped_in_parts(tmp_path):
    "A 20 MiB weights file reaches $OUT as 15 MiB parts (the device returns 16 MiB per file at most) that cat back to it."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    r = _stage(tmp_path, 'classifier', OUT=tmp_path/'out', FAKE_WEIGHTS_MIB='20')
    assert r.returncode == 0, r.stderr
    parts = sorted((tmp_path/'out').glob('fashion_classifier.safetensors.part*'))
    assert [p.name[-6:] for p in parts] == ['part00', 'part01'] and max(p.stat().st_size for p in parts) <= 15 << 20
    w = root/'.gpucache'/'models'/'fashion_classifier.safetensors'
    assert b''.join(p.read_bytes() for p in parts) == w.read_bytes() and not (tmp_path/'out'/w.name).exists()
    assert 'cat fashion_classifier.safetensors.part* > fashion_classifier.safetensors' in r.stdout


def test_throughput_and_ema_cost_stages(tmp_path):
    "throughput measures only throughput (compiled, clipping and accumulation configurations included); ema_cost alone runs bench_accel eagerly."
    r = _stage(tmp_path, 'throughput', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    calls = [a for a, _ in _calls(tmp_path)]
    assert len(calls) == 2 and 'bench/bench_accel.py' in calls[0] and calls[0].endswith('--compile --grad')
    assert 'tools/bench_data.py --out .gpucache/results/data_throughput.json' in calls[1]
    assert {p.name for p in (tmp_path/'out').iterdir()} == {'accel_throughput.json', 'data_throughput.json'}
    (tmp_path/'calls.log').unlink()
    r = _stage(tmp_path, 'ema_cost', OUT=tmp_path/'out2')
    assert r.returncode == 0, r.stderr
    (args, _), = _calls(tmp_path)
    assert 'bench/bench_accel.py' in args and args.endswith('--out .gpucache/results/ema_cost.json')
    assert (tmp_path/'out2'/'ema_cost.json').exists()


def test_base_runs_classifier_then_throughput(tmp_path):
    "base = classifier (with its floor) then throughput: four scripts in that order."
    r = _stage(tmp_path, 'base', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    calls = [a.split()[0] for a, _ in _calls(tmp_path)]
    assert calls == ['bench/train_classifier.py', 'bench/fid_floor.py', 'bench/bench_accel.py', 'tools/bench_data.py']


def test_check_runs_every_fashion_stage_quick_and_reports_failures(tmp_path):
    "check runs base ddpm karras noise_level unet ddp with --quick (a log each in $OUT); a failed one fails it, named."
    root = _checkout(tmp_path, 'gpu_stage.sh')
    r = _stage(tmp_path, 'check', OUT=tmp_path/'out', timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.name for p in (tmp_path/'out').glob('check_*.log')} == {
        f'check_{s}.log' for s in ('base', 'ddpm', 'karras', 'noise_level', 'unet', 'ddp')}
    calls = [a for a, _ in _calls(tmp_path)]
    assert calls and all('--quick' in a.split() for a in calls if 'torch.distributed.run' not in a and 'bench_data.py' not in a)
    assert not (root/'.gpucache'/'results').exists() or not any((root/'.gpucache'/'results').iterdir())
    r = _stage(tmp_path, 'check', OUT=tmp_path/'out', FAKE_FAIL_ALWAYS='karras_fid.py', timeout=60)
    assert r.returncode == 1 and re.search(r'FAILED at quick size: (.*) \(see', r.stdout).group(1) == 'karras', r.stdout
    assert _stage(tmp_path, 'check', '--quick', OUT=tmp_path/'out').returncode == 2


def test_ddp_stage_quick_and_full(tmp_path):
    "ddp --quick runs 2 processes without a GPU, into runs/gpu_quick/; the full run uses every GPU, into runs/ddp."
    r = _stage(tmp_path, 'ddp', '--quick')
    assert r.returncode == 0, r.stderr
    (args, _), = _calls(tmp_path)
    assert '--nproc_per_node=2 tools/train_ddp_demo.py --out runs/gpu_quick/ddp --results runs/gpu_quick/ddp_demo.json' in args
    (tmp_path/'calls.log').unlink()
    r = _stage(tmp_path, 'ddp', OUT=tmp_path/'out')
    assert r.returncode == 0, r.stderr
    (args, _), = _calls(tmp_path)
    assert '--nproc_per_node=gpu tools/train_ddp_demo.py --full --out runs/ddp --results .gpucache/results/ddp_demo.json' in args
    assert (tmp_path/'out'/'ddp_demo.json').exists()


def _fake_packages(tmp_path, *packages, importable=True):
    "Stub `packages` on the fake device: empty ones, or ones whose import fails (whatever this machine has installed)."
    for name in packages:
        (tmp_path/'stubs'/name).mkdir(parents=True, exist_ok=True)
        (tmp_path/'stubs'/name/'__init__.py').write_text('' if importable else f'raise ImportError("no {name} on the fake device")')


def _pip_installs(tmp_path): return [a for a, _ in _calls(tmp_path) if a.startswith('-m pip install')]


def _checkout_with_a_wheel(tmp_path):
    "A fake checkout of gpu_stage.sh that carries one wheel in .whl/."
    root = _checkout(tmp_path, 'gpu_stage.sh'); (root/'.whl').mkdir(); (root/'.whl'/'x-1-py3-none-any.whl').write_text('w')
    return root


def _wheels_stage(tmp_path, wait=180):
    "Run stage latent with one carried wheel; returns the run and its seconds (GPU_SITE_WAIT: how long it may wait for the lock)."
    if not (tmp_path/'repo'/'.whl').exists():
        _checkout_with_a_wheel(tmp_path)
        _fake_packages(tmp_path, 'diffusers', importable=False)   # else whether the wheels install depended on this machine's packages
    t0 = time.monotonic()
    r = _stage(tmp_path, 'latent', OUT=tmp_path/'out', GPU_SITE=tmp_path/'site', GPU_SITE_WAIT=wait)
    assert r.returncode == 0, r.stderr
    installs = _pip_installs(tmp_path)
    assert len(installs) >= 1 and f"--target {tmp_path/'site'} " in installs[-1]
    return r, time.monotonic() - t0


@pytest.mark.parametrize('lacking', [(), ('soundfile',)])
def test_wheels_install_only_where_the_device_lacks_a_package(tmp_path, lacking):
    "The carried wheels go in only if one of the packages they carry does not import on the device."
    _checkout_with_a_wheel(tmp_path)
    _fake_packages(tmp_path, 'diffusers', 'fastcore', 'datasets', 'torcheval', 'soundfile')   # the device has them all
    _fake_packages(tmp_path, *lacking, importable=False)                                   # but maybe one
    r = _stage(tmp_path, 'latent', OUT=tmp_path/'out', GPU_SITE=tmp_path/'site')
    assert r.returncode == 0, r.stderr
    assert len(_pip_installs(tmp_path)) == (1 if lacking else 0)


def _hold(path):
    "Take the install lock (flock) on `path` from this process, as a running installer would."
    import fcntl
    f = open(path, 'w'); fcntl.flock(f, fcntl.LOCK_EX)
    return f


def test_wheels_install_waits_while_another_stage_installs(tmp_path):
    "The stages of a group ran pip into one folder at once; now the second waits for the first's lock."
    import threading
    if not shutil.which('flock'): pytest.skip('no flock(1) here')
    lock = _hold(tmp_path/'site.lock')
    threading.Timer(1.0, lock.close).start()   # the other installer ends after a second
    r, dt = _wheels_stage(tmp_path, wait=20)
    assert dt >= 1.0 and 'still held' not in r.stderr


def test_wheels_install_gives_up_waiting_without_touching_the_holders_lock(tmp_path):
    "A waiter that gave up used to delete the live holder's lock, letting a third stage in."
    import fcntl
    if not shutil.which('flock'): pytest.skip('no flock(1) here')
    lock = _hold(tmp_path/'site.lock')
    r, dt = _wheels_stage(tmp_path, wait=1)
    assert dt >= 1.0 and 'still held after 1 s: installing beside its holder' in r.stderr
    with pytest.raises(BlockingIOError):   # the holder still holds it
        fcntl.flock(open(tmp_path/'site.lock'), fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.close()


def test_wheels_install_is_not_blocked_by_a_killed_installer(tmp_path):
    "A stage killed while installing left its lock behind: the next stage waited 3 minutes of the lease for nobody."
    if not shutil.which('flock'): pytest.skip('no flock(1) here')
    holder = (f"import fcntl, sys, time; f = open({str(tmp_path/'site.lock')!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
              "print('held', flush=True); time.sleep(60)")
    killed = subprocess.Popen([sys.executable, '-c', holder], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline() == 'held\n'
    killed.kill(); killed.wait()
    r, dt = _wheels_stage(tmp_path, wait=20)
    assert dt < 10 and 'still held' not in r.stderr


# ---------------------------------------------------------------- gpu_pipeline.sh

FAKE_STAGE = r'''echo "$1 ${2:-} |DEADLINE=${DEADLINE:-}|SHARED=${MINIAI_GPU_SHARED:-}|OUT=${OUT:-}|DATA=${MINIAI_DATA:-}|T=$(date +%s)" >> "$FAKE_STAGE_LOG"
/bin/sleep "${FAKE_STAGE_SLEEP:-0}"
mkdir -p .gpucache/results "$OUT"; echo "{}" > .gpucache/results/$1.json; echo "log of $1" > "$OUT/check_$1.log"
[ "${2:-}" = --quick ] && mkdir -p runs/gpu_quick && echo "{}" > runs/gpu_quick/$1.json
case "$1" in base|classifier|ddpm_fid) mkdir -p .gpucache/models; echo w > .gpucache/models/fashion_classifier.safetensors;; esac
[ "$1" = "${FAKE_FAIL:-}" ] && exit 3; exit 0
'''


def _pipe(tmp_path, *args, **env):
    root = tmp_path/'repo'
    if not (tmp_path/'stage.sh').exists():
        _checkout(tmp_path, 'gpu_pipeline.sh', 'gpu_stage.sh')
        (tmp_path/'stage.sh').write_text(FAKE_STAGE); (tmp_path/'out').mkdir()
    e = _env(tmp_path, GPU_STAGE_SH=tmp_path/'stage.sh', FAKE_STAGE_LOG=tmp_path/'stages.log', OUT=tmp_path/'out', **env)
    return subprocess.run(['bash', str(root/'tools'/'gpu_pipeline.sh'), *args], capture_output=True, text=True,
                          timeout=60, env=e)


def _run_pipeline(tmp_path, *stages, **env):
    "start (collecting 0 s), wait for the end marker, then collect: the collect's stdout."
    r = _pipe(tmp_path, 'start', '0', *stages, **env)
    assert r.returncode == 0, r.stderr
    done = tmp_path/'repo'/'.gpucache'/'pipeline'/'done'
    for _ in range(400):
        if done.exists(): break
        time.sleep(0.05)
    assert done.exists(), r.stdout
    _wait_for_exit(int((tmp_path/'repo'/'.gpucache'/'pipeline'/'pid').read_text()))
    return _pipe(tmp_path, 'collect', '0').stdout


def _wait_for_exit(pid, timeout=20):
    "Until the detached pipeline process has ended (gone, or a zombie nobody reaps)."
    stat = Path(f'/proc/{pid}/stat')
    for _ in range(int(timeout/0.05)):
        try:
            if stat.read_text().rsplit(')', 1)[1].split()[0] == 'Z': return
        except OSError: return
        time.sleep(0.05)


def _stage_runs(tmp_path):
    log = tmp_path/'stages.log'
    return [(l.split(' |')[0].strip(), dict(x.split('=', 1) for x in l.split(' |')[1].split('|')))
            for l in log.read_text().splitlines()] if log.exists() else []


def _packed(tmp_path):
    parts = sorted((tmp_path/'out').glob('results.tar.gz.part*'))
    assert parts
    (tmp_path/'all.tgz').write_bytes(b''.join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path/'all.tgz') as t: return t.getnames()


def test_pipeline_deadline_is_max_minutes_after_its_start(tmp_path):
    "Every stage sees DEADLINE = the pipeline's start + MAX_MINUTES (default 11) minutes."
    _run_pipeline(tmp_path, 'latent', MAX_MINUTES=3)
    (_, env), = _stage_runs(tmp_path)
    assert 178 <= int(env['DEADLINE']) - int(env['T']) <= 180
    shutil.rmtree(tmp_path/'repo'/'.gpucache'); (tmp_path/'stages.log').unlink()
    _run_pipeline(tmp_path, 'latent')
    (_, env), = _stage_runs(tmp_path)
    assert 658 <= int(env['DEADLINE']) - int(env['T']) <= 660


def test_pipeline_group_shares_and_a_failure_stops_the_pipeline(tmp_path):
    "Each stage of a group sees the whole group in MINIAI_GPU_SHARED; a failed stage ends the pipeline, later stages never run."
    out = _run_pipeline(tmp_path, 'ddp+karras', 'latent', 'audio', FAKE_FAIL='latent')
    runs = dict(_stage_runs(tmp_path))
    assert runs['ddp']['SHARED'] == runs['karras']['SHARED'] == 'ddp+karras' and runs['latent']['SHARED'] == ''
    assert 'stage latent failed (exit 3' in out and 'audio' not in runs
    assert _pipe(tmp_path, 'collect', 'soon').returncode == 2


def test_pipeline_refuses_a_second_pipeline_while_one_runs(tmp_path):
    "start while the previous pipeline's process lives fails with exit 2 and starts nothing."
    r = _pipe(tmp_path, 'start', '0', 'latent', FAKE_STAGE_SLEEP=2)
    assert r.returncode == 0, r.stderr
    r2 = _pipe(tmp_path, 'start', '0', 'audio')
    done = tmp_path/'repo'/'.gpucache'/'pipeline'/'done'
    for _ in range(100):
        if done.exists(): break
        time.sleep(0.05)
    assert r2.returncode == 2 and 'running already' in r2.stderr
    assert [s for s, _ in _stage_runs(tmp_path)] == ['latent']


def test_pipeline_start_forgets_an_old_end_marker(tmp_path):
    "A new pipeline removes the previous one's done marker: its first collect does not report the old end."
    root = _checkout(tmp_path, 'gpu_pipeline.sh', 'gpu_stage.sh')
    (tmp_path/'stage.sh').write_text(FAKE_STAGE); (tmp_path/'out').mkdir()
    (root/'.gpucache'/'pipeline').mkdir(parents=True); (root/'.gpucache'/'pipeline'/'done').write_text('old pipeline\n')
    r = _pipe(tmp_path, 'start', '0', 'latent', FAKE_STAGE_SLEEP=1)
    assert 'still running' in r.stdout and 'old pipeline' not in r.stdout, r.stdout
    time.sleep(1.5)
    r = _pipe(tmp_path, 'collect', '20', FAKE_SLEEP_REAL=1)
    assert 'pipeline finished: all stages' in r.stdout


def test_pipeline_collect_waits_for_the_end(tmp_path):
    "collect SECONDS returns as soon as the stages end, reporting the end."
    r = _pipe(tmp_path, 'start', '0', 'latent', FAKE_STAGE_SLEEP=1)
    r = _pipe(tmp_path, 'collect', '30', FAKE_SLEEP_REAL=1)
    assert 'pipeline finished: all stages' in r.stdout, r.stdout


def test_wait_classifier_uses_carried_weights(tmp_path):
    "wait_classifier with the weights there logs their hash, and the next stage runs at once."
    _checkout(tmp_path, 'gpu_pipeline.sh', 'gpu_stage.sh')
    w = tmp_path/'repo'/'.gpucache'/'models'/'fashion_classifier.safetensors'
    w.parent.mkdir(parents=True); w.write_text('weights')
    out = _run_pipeline(tmp_path, 'wait_classifier', 'latent')
    assert 'all stages' in out
    log = (tmp_path/'repo'/'.gpucache'/'pipeline'/'wait_classifier.log').read_text()
    assert 'classifier weights:' in log and __import__('hashlib').sha256(b'weights').hexdigest() in log
    assert [s for s, _ in _stage_runs(tmp_path)] == ['latent'] and _slept(tmp_path) == 0


def test_wait_classifier_gives_up_after_10_minutes(tmp_path):
    "Without the weights wait_classifier polls for 10 minutes, says so, and the stages go on (they train it)."
    out = _run_pipeline(tmp_path, 'wait_classifier', 'latent')
    assert 'all stages' in out
    log = (tmp_path/'repo'/'.gpucache'/'pipeline'/'wait_classifier.log').read_text()
    assert 'after 10 min' in log and 'classifier weights' not in log
    assert _slept(tmp_path) == 600 and [s for s, _ in _stage_runs(tmp_path)] == ['latent']


def test_pipeline_audio_waits_for_its_data_and_reads_data2(tmp_path):
    "A stage named audio waits up to 10 minutes for .data2/fsdd/, then runs with MINIAI_DATA=.data2 (and --quick if QUICK)."
    _run_pipeline(tmp_path, 'audio', QUICK=1)
    (s, env), = _stage_runs(tmp_path)
    assert s == 'audio --quick' and env['DATA'] == str(tmp_path/'repo'/'.data2')
    assert _slept(tmp_path) == 600
    shutil.rmtree(tmp_path/'repo'/'.gpucache'); (tmp_path/'stages.log').unlink(); (tmp_path/'sleeps.log').unlink()
    npz = tmp_path/'repo'/'.data2'/'fsdd'/'fsdd_v1.0.10.npz'
    npz.parent.mkdir(parents=True); npz.write_text('x')
    _run_pipeline(tmp_path, 'audio')
    assert [s for s, _ in _stage_runs(tmp_path)] == ['audio'] and _slept(tmp_path) == 0
    assert any('.whl2' in a for a, _ in _calls(tmp_path))   # its wheels were installed


def test_pipeline_stages_write_their_out_into_the_pipeline_folder(tmp_path):
    "Stages run with OUT=the pipeline's out/ (their check logs are packed), not the call's $OUT."
    _run_pipeline(tmp_path, 'latent', QUICK=1)
    (s, env), = _stage_runs(tmp_path)
    assert s == 'latent --quick' and env['OUT'] == str(tmp_path/'repo'/'.gpucache'/'pipeline'/'out')
    names = _packed(tmp_path)
    assert any(n.endswith('pipeline/out/check_latent.log') for n in names), names
    assert '.gpucache/results/latent.json' in names and 'runs/gpu_quick/latent.json' in names
    assert any(n.endswith('pipeline/latent.log') for n in names) and any(n.endswith('pipeline/pipeline.log') for n in names)


@pytest.mark.parametrize('stages,packed', [(['base'], True), (['classifier'], True), (['ddpm_fid'], False)])
def test_pipeline_packs_classifier_weights_only_when_trained_here(tmp_path, stages, packed):
    "The FID classifier's weights are packed after stage base or classifier, not after other stages that leave them."
    _run_pipeline(tmp_path, *stages)
    names = _packed(tmp_path)
    assert ('.gpucache/models/fashion_classifier.safetensors' in names) == packed, names
    assert f'.gpucache/results/{stages[0]}.json' in names


def test_pipeline_splits_the_archive_into_16_mib_parts(tmp_path):
    "Large results come back in parts of at most 16 MiB that join to the archive."
    root = _checkout(tmp_path, 'gpu_pipeline.sh', 'gpu_stage.sh')
    (tmp_path/'stage.sh').write_text(FAKE_STAGE); (tmp_path/'out').mkdir()
    (root/'.gpucache'/'results').mkdir(parents=True)
    (root/'.gpucache'/'results'/'big.bin').write_bytes(os.urandom(17 << 20))
    _run_pipeline(tmp_path, 'latent')
    parts = sorted((tmp_path/'out').glob('results.tar.gz.part*'))
    assert len(parts) >= 2 and all(p.stat().st_size <= 16 << 20 for p in parts)
    assert '.gpucache/results/big.bin' in _packed(tmp_path)


# ---------------------------------------------------------------- gpu_prepare.sh

FAKE_PIP = r'''#!/usr/bin/env bash
[ "$1 $2" = "-m pip" ] || { echo "unexpected python3 $*" >&2; exit 1; }
spec=${@: -1}; echo "$spec" >> "$FAKE_PIP_LOG"
[[ -n "${FAKE_PIP_SKIP:-}" && "$spec" == "$FAKE_PIP_SKIP"* ]] && exit 0
name=${spec%%==*}; [[ "$spec" == *$'\n'* ]] && name=multi$RANDOM
mkdir -p .whl; head -c "${FAKE_WHEEL_BYTES:-1000}" /dev/zero > ".whl/${name}-1-py3-none-any.whl"
'''
FAKE_GIT = r'''#!/usr/bin/env bash
[[ "$*" == *--others* ]] && exit 0
printf '%s\0' $(cat "$FAKE_TRACKED")
'''
LOCK = ['fastcore', 'torcheval', 'diffusers', 'importlib_metadata', 'zipp', 'lazy-importer', 'regex', 'safetensors',
        'filelock', 'fsspec', 'datasets', 'dill', 'multiprocess', 'xxhash', 'soundfile', 'cffi', 'pycparser']
FASHION = {'fastcore', 'torcheval', 'diffusers', 'importlib_metadata', 'zipp', 'lazy-importer', 'regex', 'safetensors',
           'filelock', 'fsspec', 'datasets', 'dill', 'multiprocess', 'xxhash'}


def _prepare(tmp_path, *args, data_mib=0, tracked_mib=0, **env):
    root = tmp_path/'repo'
    if not (tmp_path/'tracked').exists():
        _checkout(tmp_path, 'gpu_prepare.sh')
        _exe(tmp_path/'bin'/'python3', FAKE_PIP); _exe(tmp_path/'bin'/'git', FAKE_GIT)
        (root/'requirements-lock.txt').write_text(''.join(f'{p}==1.0\n' for p in LOCK) + 'pyzipp-extra==9.9\n')
        for d in ('fashion_mnist', 'rgb64', 'fsdd'):
            (tmp_path/'data'/d).mkdir(parents=True); (tmp_path/'data'/d/'x.bin').write_bytes(b'\1' * (data_mib << 20))
        (root/'big.bin').write_bytes(b'\1' * (tracked_mib << 20))
        (tmp_path/'tracked').write_text('tools/gpu_prepare.sh requirements-lock.txt big.bin')
    e = _env(tmp_path, FAKE_PIP_LOG=tmp_path/'pip.log', FAKE_TRACKED=tmp_path/'tracked', MINIAI_DATA=tmp_path/'data', **env)
    r = subprocess.run(['bash', str(root/'tools'/'gpu_prepare.sh'), *args], capture_output=True, text=True, timeout=60,
                       cwd=root, env=e)
    return r, root


def _wheels(root): return {p.name.split('-1-py3')[0] for p in (root/'.whl').glob('*.whl')}


def test_prepare_fashion_stage(tmp_path):
    "A Fashion-MNIST stage gets the core and HF-datasets wheels, only fashion_mnist, and the commands to run."
    r, root = _prepare(tmp_path, 'ddpm_fid')
    assert r.returncode == 0, r.stderr
    assert _wheels(root) == FASHION and [p.name for p in (root/'.data').iterdir()] == ['fashion_mnist']
    assert all(re.fullmatch(r'[\w-]+==1\.0', s) for s in (tmp_path/'pip.log').read_text().split('\n') if s)
    assert "command='bash tools/gpu_stage.sh ddpm_fid'  carry=['.whl', '.data', '.gpucache']" in r.stdout
    assert "gpu_pipeline.sh start 540 fid_classifier+ddpm_fid'" in r.stdout
    r, root = _prepare(tmp_path, 'fid_classifier')
    assert "gpu_pipeline.sh start 540 fid_classifier+ddpm_fid'" in r.stdout and 'gpu_stage.sh fid_classifier' in r.stdout


def test_prepare_latent_and_audio_stages(tmp_path):
    "latent carries rgb64 and only the core wheels the H200 image lacks; audio carries fsdd and the sound wheels as well."
    r, root = _prepare(tmp_path, 'latent')
    assert r.returncode == 0, r.stderr
    assert _wheels(root) == {'fastcore', 'torcheval', 'diffusers', 'importlib_metadata', 'lazy-importer'}
    assert [p.name for p in (root/'.data').iterdir()] == ['rgb64']
    r, root = _prepare(tmp_path, 'audio')
    assert r.returncode == 0, r.stderr
    assert _wheels(root) == FASHION | {'soundfile', 'cffi', 'pycparser'}   # latent's data and wheels are gone
    assert [p.name for p in (root/'.data').iterdir()] == ['fsdd']


def test_prepare_replaces_stale_wheels_and_data(tmp_path):
    "Wheels and data sets left from an earlier preparation are removed (the count of wheels is checked)."
    _checkout(tmp_path, 'gpu_prepare.sh')
    root = tmp_path/'repo'
    (root/'.whl').mkdir(); (root/'.whl'/'old-0-py3-none-any.whl').write_text('x')
    (root/'.data'/'rgb64').mkdir(parents=True)
    r, root = _prepare(tmp_path, 'ddp')
    assert r.returncode == 0, r.stderr
    assert 'old' not in _wheels(root) and [p.name for p in (root/'.data').iterdir()] == ['fashion_mnist']


def test_prepare_fails_on_a_missing_wheel_or_data_set(tmp_path):
    "A wheel that did not download, or a data set missing from DATA_ROOT, is an error."
    r, root = _prepare(tmp_path, 'karras', FAKE_PIP_SKIP='dill')
    assert r.returncode == 1 and 'expected 14 wheels' in r.stderr
    shutil.rmtree(tmp_path/'data'/'rgb64')
    r, root = _prepare(tmp_path, 'latent')
    assert r.returncode == 1 and 'no data set' in r.stderr and 'rgb64' in r.stderr


def test_prepare_data_root_argument_wins_over_miniai_data(tmp_path):
    "DATA_ROOT (second argument) is where the data sets come from, before $MINIAI_DATA."
    (tmp_path/'other'/'rgb64').mkdir(parents=True); (tmp_path/'other'/'rgb64'/'mine').write_text('x')
    r, root = _prepare(tmp_path, 'latent', str(tmp_path/'other'))
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (root/'.data'/'rgb64').iterdir()] == ['mine']


def test_prepare_refuses_more_than_the_device_limit(tmp_path):
    "The working tree plus .whl and .data must stay under the 64 MiB limit (less a 256 KiB margin)."
    r, root = _prepare(tmp_path, 'latent', data_mib=26, tracked_mib=40)
    assert r.returncode == 1 and "over the device's 64 MiB limit" in r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize('wheel_kib,ok', [(100, True), (200, False)])
def test_prepare_counts_the_limit_in_bytes(tmp_path, wheel_kib, ok):
    "63 MiB of tree and data plus 5 wheels: 0.5 MiB of wheels fits under 64 MiB less 256 KiB, 1 MiB does not (MiB rounding refused both)."
    r, root = _prepare(tmp_path, 'latent', data_mib=43, tracked_mib=20, FAKE_WHEEL_BYTES=wheel_kib << 10)
    assert (r.returncode == 0) is ok, r.stdout + r.stderr
    assert ('63.' in r.stdout and 'MiB of the 64 MiB limit' in r.stdout) if ok else "over the device's 64 MiB limit" in r.stderr


def test_prepare_leaves_the_classifier_weights_for_a_second_call_when_they_do_not_fit(tmp_path):
    "When .gpucache does not fit beside the rest, carry is .whl and .data only, with the wait_classifier advice."
    _checkout(tmp_path, 'gpu_prepare.sh')
    w = tmp_path/'repo'/'.gpucache'/'models'/'fashion_classifier.safetensors'
    w.parent.mkdir(parents=True); w.write_bytes(b'\1' * (20 << 20))
    r, root = _prepare(tmp_path, 'unet', data_mib=45)
    assert r.returncode == 0, r.stderr
    assert "carry=['.whl', '.data']" in r.stdout and 'wait_classifier' in r.stdout
    w.unlink()
    (tmp_path/'repo'/'.gpucache'/'results').mkdir()
    (tmp_path/'repo'/'.gpucache'/'results'/'x.bin').write_bytes(b'\1' * (40 << 20))
    r, root = _prepare(tmp_path, 'unet')
    assert "carry=['.whl', '.data']" in r.stdout and 'no FID classifier' in r.stdout
    assert 'WARNING: .gpucache holds more than models/' in r.stderr


@pytest.mark.parametrize('stage', ['ema_cost', 'latent'])
def test_prepare_suggests_a_classifier_group_only_for_fid_stages(tmp_path, stage):
    "The suggested one-lease command groups fid_classifier only with a stage that can run beside it."
    r, root = _prepare(tmp_path, stage)
    assert r.returncode == 0, r.stderr
    assert f'fid_classifier+{stage}' not in r.stdout, r.stdout
