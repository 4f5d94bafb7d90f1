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


def test_bad_arguments_are_refused():
    for args in (['bogus'], ['base', '--fast'], []):
        r = subprocess.run(['bash', str(STAGE), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr.strip(), (args, r.stderr)
    r = subprocess.run(['bash', str(PREP), 'bogus'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown stage 'bogus'" in r.stderr
