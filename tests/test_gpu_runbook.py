"tools/gpu_stage.sh and docs/gpu_runbook.md agree: the same stages, scripts that exist, bad arguments refused."
import re, subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE, PREP, DOC = REPO/'tools'/'gpu_stage.sh', REPO/'tools'/'gpu_prepare.sh', REPO/'docs'/'gpu_runbook.md'


def _script_stages(path):
    return re.search(r'case "\$stage" in ([\w|]+)\)', path.read_text()).group(1).split('|')


def test_runbook_lists_the_script_stages():
    doc = re.findall(r'^\| `(\w+)` \|', DOC.read_text(), flags=re.M)
    assert doc == _script_stages(STAGE)
    prep = set(sum((m.split('|') for m in re.findall(r'^\s+([\w|]+)\) sets=', PREP.read_text(), flags=re.M)), []))
    assert prep == set(doc)


def test_stage_scripts_exist():
    scripts = set(re.findall(r'((?:bench|tools)/[\w]+\.py)', STAGE.read_text()))
    assert len(scripts) >= 9 and all((REPO/s).is_file() for s in scripts), scripts


def test_bad_arguments_are_refused(tmp_path):
    for args in (['bogus'], ['base', '--fast'], []):
        r = subprocess.run(['bash', str(STAGE), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr.strip(), (args, r.stderr)
    r = subprocess.run(['bash', str(PREP), 'bogus'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown stage 'bogus'" in r.stderr
    import os   # a throughput measurement never shares the GPU with a group
    r = subprocess.run(['bash', str(STAGE), 'ema_cost', '--quick'], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'MINIAI_GPU_SHARED': 'ddpm_fid+ema_cost', 'OUT': str(tmp_path)})
    assert r.returncode == 2 and 'run it alone, not in a group' in r.stderr, r.stderr


PIPE = REPO/'tools'/'gpu_pipeline.sh'


def _pipe(*args, tmp_path, **env):
    import os
    e = {**os.environ, 'GPU_PIPELINE_DIR': str(tmp_path/'pipe'), 'OUT': str(tmp_path/'out'), **env}
    (tmp_path/'out').mkdir(exist_ok=True)
    return subprocess.run(['bash', str(PIPE), *args], capture_output=True, text=True, timeout=300, env=e)


def test_pipeline_refuses_bad_arguments(tmp_path):
    for args in (['start', '10', 'bogus'], ['start', '10'], ['collect', 'soon'], ['stop', '1']):
        r = _pipe(*args, tmp_path=tmp_path)
        assert r.returncode == 2 and r.stderr.strip(), (args, r.stderr)
    assert "unknown stage 'bogus'" in _pipe('start', '10', 'ddp', 'bogus', tmp_path=tmp_path).stderr
    assert "unknown stage 'bogus'" in _pipe('start', '10', 'wait_classifier', 'bogus', tmp_path=tmp_path).stderr  # the pseudo-stage is known
    assert not (tmp_path/'pipe'/'pid').exists()   # nothing was started


def test_pipeline_runs_a_quick_stage_and_packs_its_log(tmp_path):
    "The detached stages outlive `start`; `collect` waits for their end and returns their logs."
    import tarfile
    r = _pipe('start', '0', 'ddp', tmp_path=tmp_path, QUICK='1')
    assert r.returncode == 0 and 'started stages ddp' in r.stdout, r.stderr
    r = _pipe('collect', '240', tmp_path=tmp_path)
    assert 'pipeline finished: all stages' in r.stdout, r.stdout + (tmp_path/'pipe'/'ddp.log').read_text()
    parts = sorted((tmp_path/'out').glob('results.tar.gz.part*'))
    (tmp_path/'all.tgz').write_bytes(b''.join(p.read_bytes() for p in parts))
    names = tarfile.open(tmp_path/'all.tgz').getnames()
    assert any(n.endswith('ddp.log') for n in names) and any(n.endswith('pipeline.log') for n in names), names


def test_pipeline_group_runs_its_stages_at_once_and_fails_with_one_of_them(tmp_path):
    "`a+b` starts both stages together, each told (MINIAI_GPU_SHARED) whom it shares the GPU with; a failed part ends the pipeline."
    fake = tmp_path/'stage.sh'   # stands for tools/gpu_stage.sh: logs when it ran, fails for stage 'latent' if FAIL is set
    fake.write_text('echo "$1 shared=${MINIAI_GPU_SHARED:-none} start=$(date +%s%N)"; sleep 3; echo "end=$(date +%s%N)"\n'
                    '[ "$1" = latent ] && [ -n "${FAIL:-}" ] && exit 3; exit 0\n')
    def run(*stages, **env):
        import shutil
        shutil.rmtree(tmp_path/'pipe', ignore_errors=True)
        r = _pipe('start', '60', *stages, tmp_path=tmp_path, GPU_STAGE_SH=str(fake), **env)
        assert r.returncode == 0, r.stderr
        return r.stdout, (tmp_path/'pipe'/'pipeline.log').read_text()
    out, log = run('ddp+karras', 'unet')
    assert 'pipeline finished: all stages' in out, out
    logs = {s: (tmp_path/'pipe'/f'{s}.log').read_text() for s in ('ddp', 'karras', 'unet')}
    assert 'shared=ddp+karras' in logs['ddp'] and 'shared=ddp+karras' in logs['karras'] and 'shared=none' in logs['unet']
    t = {s: [int(x) for x in re.findall(r'(?:start|end)=(\d+)', v)] for s, v in logs.items()}
    assert t['ddp'][0] < t['karras'][1] and t['karras'][0] < t['ddp'][1]   # the group's stages overlapped
    assert t['unet'][0] >= max(t['ddp'][1], t['karras'][1])               # the next stage waited for both
    assert '(GPU shared: ddp+karras)' in log and 'stage unet: exit 0' in log
    out, log = run('ddp+latent', 'unet', FAIL='1')
    assert 'stage ddp+latent failed' in out and 'stage latent: exit 3' in log and 'stage unet' not in log, out + log
    assert "cannot be part of a group" in _pipe('start', '1', 'wait_classifier+ddp', tmp_path=tmp_path).stderr


def test_a_stage_grouped_with_fid_classifier_stops_when_that_stage_failed(tmp_path):
    "An FID stage beside fid_classifier trains, then waits for its weights; a failed fid_classifier ends the wait with an error."
    import os
    marker = REPO/'runs'/'gpu_quick'/'cache'/'models'/'fid_classifier.done'   # where quick stages keep their cache
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text('failed\n')
    env = {**os.environ, 'MINIAI_GPU_SHARED': 'fid_classifier+ddpm_fid', 'MODELS': 'cosine', 'OUT': str(tmp_path),
           'OMP_NUM_THREADS': '1'}
    try:
        r = subprocess.run(['bash', str(STAGE), 'ddpm_fid', '--quick'], capture_output=True, text=True, timeout=600, env=env)
    finally: marker.unlink(missing_ok=True)
    assert r.returncode != 0 and "stage fid_classifier gave no FID classifier" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert '--train-only' in r.stdout and "waiting for stage fid_classifier's weights" in r.stdout   # trained first, then waited
    assert not [l for l in r.stdout.splitlines() if 'bench/ddpm_fid.py' in l and '--train-only' not in l]   # and never scored
