"""Tests found by a mutation run on the test command (tools/test.sh), the CI entry point (.ci/run) and
tools/make_fashion_sample.py: each checks behaviour that a small planted bug changed without any test failing.

tools/test.sh and .ci/run run in a throw-away fake checkout (a tiny git repository under tmp_path) with fake
`nbdev_export`, `nbdev_test`, `python` (and `python3`) first on PATH, driven by environment variables."""
import gzip, hashlib, json, os, re, shutil, stat, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import REPO, _load_script
from miniai.data import FASHION_FILES, FASHION_SHA256, SAMPLE_MANIFEST, SAMPLE_PREFIX, CorruptDataError, read_idx

pytestmark = pytest.mark.skipif(shutil.which('git') is None or shutil.which('bash') is None, reason='needs git and bash')

# ---------------------------------------------------------------- fakes

_REC = 'for v in MINIAI_QUICK OMP_NUM_THREADS MPLBACKEND PYTHONUNBUFFERED; do echo "$v=${!v-unset}"; done'
FAKES = {
    'nbdev_export': '#!/usr/bin/env bash\necho "cwd=$PWD" > "$FAKE_REC/nbdev_export"\neval "${FAKE_EXPORT_CMD:-}"\n'
                    'exit "${FAKE_EXPORT_RC:-0}"\n',
    # like nbdev 2.4's nbdev_test: "Starting"/"- Completed" lines only with --do_print
    'nbdev_test': '#!/usr/bin/env bash\n{ echo "args=$*"; echo "cwd=$PWD"; ' + _REC + '; } > "$FAKE_REC/nbdev_test"\n'
                  'case " $* " in *" --do_print "*) for i in $(seq 1 "${FAKE_NB_STARTED:-${FAKE_NB_DONE:-0}}"); do\n'
                  '  echo "Starting /x/nbs/$i.ipynb"\n'
                  '  if [ "$i" -le "${FAKE_NB_DONE:-0}" ]; then echo "- Completed /x/nbs/$i.ipynb"; fi; done;; esac\n'
                  'printf "%b" "${FAKE_NB_ERR:-}" >&2\nexit "${FAKE_NB_RC:-0}"\n',
    'python': '#!/usr/bin/env bash\n{ echo "args=$*"; echo "cwd=$PWD"; ' + _REC + '; } > "$FAKE_REC/python"\n'
              'printf "%b" "${FAKE_PY_OUT:-}"\nexit "${FAKE_PY_RC:-0}"\n',
}
TAIL = '\n<<stderr>>\n'   # between the stdout and the stderr of a run
N_NBS = 3   # 00_a, 01_b, sub/02_c; not _private.ipynb nor .ipynb_checkpoints/


def _write_exe(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _git(co, *args):
    subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'commit.gpgsign=false', *args],
                   cwd=co, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    "A fake checkout (tools/test.sh, miniai/core.py committed, nbs/ with 3 counted notebooks), fake tools on PATH."
    co = tmp_path/'co'
    (co/'tools').mkdir(parents=True)
    shutil.copy(REPO/'tools'/'test.sh', co/'tools'/'test.sh')
    (co/'miniai').mkdir(); (co/'miniai'/'core.py').write_text('x = 1\n')
    (co/'tests').mkdir()
    for nb in ('00_a.ipynb', '01_b.ipynb', 'sub/02_c.ipynb', '_private.ipynb', '.ipynb_checkpoints/00_a-checkpoint.ipynb'):
        (co/'nbs'/nb).parent.mkdir(parents=True, exist_ok=True); (co/'nbs'/nb).write_text('{}')
    _git(co, 'init', '-q'); _git(co, 'add', '-A'); _git(co, 'commit', '-q', '-m', 'init')
    for name, text in FAKES.items(): _write_exe(tmp_path/'bin'/name, text)
    (tmp_path/'rec').mkdir(); (tmp_path/'tmp').mkdir(); (tmp_path/'elsewhere').mkdir()
    return co


def run_test_sh(co, **env):
    "Run the checkout's tools/test.sh from another folder; (exit status, stdout+TAIL+stderr, {tool: recorded lines})."
    tmp = co.parent
    e = {k: v for k, v in os.environ.items() if k not in ('MINIAI_QUICK', 'OMP_NUM_THREADS', 'MINIAI_TEST_WORKERS',
                                                           'MPLBACKEND', 'PYTHONUNBUFFERED')}
    e.update(PATH=f"{tmp/'bin'}:{os.environ['PATH']}", FAKE_REC=str(tmp/'rec'), TMPDIR=str(tmp/'tmp'),
             FAKE_NB_DONE=str(N_NBS), FAKE_PY_OUT='.....\n5 passed in 0.1s\n')
    e.update({k: str(v) for k, v in env.items()})
    r = subprocess.run(['bash', str(co/'tools'/'test.sh')], cwd=tmp/'elsewhere', env=e, capture_output=True, text=True,
                       timeout=60)
    rec = {p.name: p.read_text().splitlines() for p in (tmp/'rec').iterdir()}
    return r.returncode, r.stdout + TAIL + r.stderr, rec


def total(out):
    "The (passed, failed) of the final 'total:' line, which must be the last line printed on stdout."
    last = out.split(TAIL)[0].strip().splitlines()[-1]
    m = re.fullmatch(r'total: (-?\d+) passed, (-?\d+) failed', last)
    assert m, f'no final total line: {last!r}'
    return int(m[1]), int(m[2])


# ---------------------------------------------------------------- tools/test.sh: the happy path and the environment

def test_all_green_exits_0_and_totals_notebooks_plus_tests(checkout):
    "In sync, every counted notebook completed, pytest passed: exit 0 and 'total: 3+5 passed, 0 failed'."
    rc, out, rec = run_test_sh(checkout)
    assert rc == 0, out
    assert 'in sync' in out and 'notebooks: 3 passed, 0 failed' in out
    assert total(out) == (8, 0)


def test_tools_run_in_the_checkout_root_with_the_documented_environment(checkout):
    "Run from elsewhere: all tools run in the checkout root; MINIAI_QUICK=1, OMP_NUM_THREADS=1, 2 workers, Agg by default."
    rc, out, rec = run_test_sh(checkout)
    assert rc == 0, out
    for tool in ('nbdev_export', 'nbdev_test', 'python'): assert f'cwd={checkout}' in rec[tool], tool
    nb, py = rec['nbdev_test'], rec['python']
    assert re.search(r'--n_workers 2( |$)', nb[0]) and '--do_print' in nb[0].split()
    assert {'MINIAI_QUICK=1', 'OMP_NUM_THREADS=1', 'MPLBACKEND=Agg', 'PYTHONUNBUFFERED=1'} <= set(nb)
    assert py[0].startswith('args=-m pytest tests')
    assert {'MINIAI_QUICK=1', 'MPLBACKEND=Agg', 'PYTHONUNBUFFERED=1'} <= set(py)


def test_settings_given_by_the_caller_are_respected(checkout):
    "MINIAI_QUICK=0, OMP_NUM_THREADS, MINIAI_TEST_WORKERS and MPLBACKEND set by the caller are passed on unchanged."
    rc, out, rec = run_test_sh(checkout, MINIAI_QUICK=0, OMP_NUM_THREADS=3, MINIAI_TEST_WORKERS=5, MPLBACKEND='svg')
    assert rc == 0, out
    nb, py = rec['nbdev_test'], rec['python']
    assert re.search(r'--n_workers 5( |$)', nb[0])
    assert {'MINIAI_QUICK=0', 'OMP_NUM_THREADS=3', 'MPLBACKEND=svg'} <= set(nb)
    assert {'MINIAI_QUICK=0', 'MPLBACKEND=svg'} <= set(py)


def test_the_temporary_log_is_removed(checkout):
    "The log file made with mktemp is deleted at the end (TMPDIR left empty)."
    run_test_sh(checkout)
    assert list((checkout.parent/'tmp').iterdir()) == []


# ---------------------------------------------------------------- tools/test.sh: step 1, the sync check

@pytest.mark.parametrize('pre, cmd', [
    (None, "echo 'y = 2' >> miniai/core.py"),                        # export changes a committed file
    (None, "echo 'z = 3' > miniai/new.py"),                          # export adds a new (untracked) file
    ('x = 1\nw = 0\n', "echo 'y = 2' >> miniai/core.py"),            # already-modified file modified further
    ('x = 1\nw = 0\n', "printf 'x = 1\\n' > miniai/core.py"),        # export reverts a local edit
    ('untracked', "rm miniai/old.py"),                                # export removes an untracked file
], ids=['modified', 'new-file', 'modified-further', 'reverted', 'untracked-removed'])
def test_library_out_of_sync_fails(checkout, pre, cmd):
    "When nbdev_export changes miniai/ in any way, the run fails (the later steps still run and report)."
    if pre == 'untracked': (checkout/'miniai'/'old.py').write_text('old = 1\n')
    elif pre is not None: (checkout/'miniai'/'core.py').write_text(pre)
    rc, out, rec = run_test_sh(checkout, FAKE_EXPORT_CMD=cmd)
    assert rc != 0 and 'out of sync' in out
    assert total(out) == (8, 0) and 'python' in rec


def test_uncommitted_library_changes_fail_with_their_own_message(checkout):
    "miniai/ edited but not committed, with an export that changes nothing: a failure that says so, not 'out of sync'."
    (checkout/'miniai'/'core.py').write_text('x = 1\nw = 0\n')
    rc, out, rec = run_test_sh(checkout)
    assert rc != 0 and 'uncommitted changes' in out and 'out of sync' not in out
    assert total(out) == (8, 0) and 'python' in rec


def test_nbdev_export_failure_stops_the_run(checkout):
    "nbdev_export exiting non-zero: a non-zero exit at once, without running notebooks or pytest."
    rc, out, rec = run_test_sh(checkout, FAKE_EXPORT_RC=1)
    assert rc != 0 and 'nbdev_export failed' in out
    assert 'nbdev_test' not in rec and 'python' not in rec


def test_outside_git_exports_without_the_sync_check(checkout):
    "Not a git checkout: export runs, its changes are not judged, the run passes; an export failure still fails."
    shutil.rmtree(checkout/'.git')
    rc, out, rec = run_test_sh(checkout, FAKE_EXPORT_CMD="echo 'y = 2' >> miniai/core.py")
    assert rc == 0 and 'not a git checkout' in out and total(out) == (8, 0)
    rc, out, rec = run_test_sh(checkout, FAKE_EXPORT_RC=1)
    assert rc != 0 and 'nbdev_export failed' in out


# ---------------------------------------------------------------- tools/test.sh: step 2, notebooks

@pytest.mark.parametrize('started, done, nb_rc, counts', [
    (3, 2, 1, (2, 1)),     # one notebook started but its process died, nbdev_test failed
    (2, 2, 0, (2, 1)),     # one notebook missing although nbdev_test exited 0
    (3, 3, 1, (3, 1)),     # all completed but nbdev_test failed: at least one failure
    (0, 0, 1, (0, 3)),     # nbdev_test crashed before running anything
])
def test_notebook_failures_fail_the_run_and_are_counted(checkout, started, done, nb_rc, counts):
    "Fewer '- Completed' lines than counted notebooks, or a non-zero nbdev_test: exit non-zero, failures in the totals."
    err = 'Traceback (most recent call last):\n    print("epoch 1 - Completed")\nRuntimeError: killed\n'
    rc, out, rec = run_test_sh(checkout, FAKE_NB_STARTED=started, FAKE_NB_DONE=done, FAKE_NB_RC=nb_rc, FAKE_NB_ERR=err)
    assert rc != 0, out
    assert f'notebooks: {counts[0]} passed, {counts[1]} failed' in out
    assert total(out) == (counts[0] + 5, counts[1])


def test_notebooks_in_underscore_folders_are_not_counted(checkout):
    "Like nbdev_test, notebooks under a folder starting with '_' (drafts) are not expected to run."
    (checkout/'nbs'/'_drafts').mkdir(); (checkout/'nbs'/'_drafts'/'x.ipynb').write_text('{}')
    rc, out, rec = run_test_sh(checkout)
    assert rc == 0 and total(out) == (8, 0)


def test_failed_notebooks_are_counted_as_failed_like_nbdev_reports_them(checkout):
    "nbdev_test (2.4) prints '- Completed' for every notebook and lists the failed ones on stderr: they count as failed."
    err = '\nnbdev Tests Failed On The Following Notebooks:\n' + '=' * 50 + '\n\t00_a.ipynb\n\t01_b.ipynb\n'
    rc, out, rec = run_test_sh(checkout, FAKE_NB_DONE=3, FAKE_NB_RC=1, FAKE_NB_ERR=err)
    assert rc != 0
    assert 'notebooks: 1 passed, 2 failed' in out and total(out) == (6, 2)


# ---------------------------------------------------------------- tools/test.sh: step 3, pytest

@pytest.mark.parametrize('py_out, py_rc, counts', [
    ('..F.\n3 passed, 1 failed in 0.1s\n', 1, (3, 1)),
    ('..E\n2 passed, 1 error in 0.1s\n', 1, (2, 1)),
    ('FF\n2 failed in 0.1s\n', 1, (0, 2)),
    ('F.EE\n1 failed, 3 passed, 2 errors, 1 xfailed, 1 xpassed in 0.1s\n', 1, (3, 3)),
    ("E   AssertionError: expected '10 passed, 2 failed'\n1 failed, 4 passed in 0.2s\n", 1, (4, 1)),
    ('Fatal Python error: Segmentation fault\n', 139, (0, 1)),          # crashed: no summary line
    ('..\nno tests ran in 0.01s\n', 5, (0, 1)),
])
def test_pytest_failures_fail_the_run_and_are_counted(checkout, py_out, py_rc, counts):
    "pytest failures/errors/crash: exit non-zero; passed and failed+errors of the last summary line go into the totals."
    rc, out, rec = run_test_sh(checkout, FAKE_PY_OUT=py_out, FAKE_PY_RC=py_rc)
    assert rc != 0, out
    assert total(out) == (N_NBS + counts[0], counts[1])


def test_collection_errors_only_are_all_counted(checkout):
    "A pytest summary with only errors ('3 errors in 0.2s') counts 3 failures."
    rc, out, rec = run_test_sh(checkout, FAKE_PY_OUT='EEE\n3 errors in 0.2s\n', FAKE_PY_RC=2)
    assert rc != 0 and total(out) == (N_NBS, 3)


# ---------------------------------------------------------------- .ci/run (cheap logic only; no real venv)

@pytest.fixture
def ci(tmp_path):
    "A fake workspace: ws/repo/.ci/run with a recording tools/test.sh, optional ws/shared/data; fake python3/python."
    repo = tmp_path/'ws'/'repo'
    (repo/'.ci').mkdir(parents=True)
    shutil.copy(REPO/'.ci'/'run', repo/'.ci'/'run')
    _write_exe(repo/'tools'/'test.sh', '#!/usr/bin/env bash\n{ echo "cwd=$PWD"; for v in MINIAI_DATA MINIAI_CACHE '
               'HF_HUB_OFFLINE MPLBACKEND; do echo "$v=${!v-unset}"; done; } > "$FAKE_REC"\nexit "${FAKE_RC:-0}"\n')
    _write_exe(tmp_path/'bin'/'python3', '#!/usr/bin/env bash\nif [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
               'echo "# fake" > "$3/bin/activate"; fi\nexit 0\n')
    _write_exe(tmp_path/'bin'/'python', '#!/usr/bin/env bash\nexit 0\n')
    (tmp_path/'elsewhere').mkdir()

    def run(**env):
        e = {k: v for k, v in os.environ.items() if k not in ('MINIAI_DATA', 'MINIAI_CACHE', 'HF_HUB_OFFLINE')}
        e.update(PATH=f"{tmp_path/'bin'}:{os.environ['PATH']}", FAKE_REC=str(tmp_path/'rec'))
        e.update({k: str(v) for k, v in env.items()})
        r = subprocess.run(['bash', str(repo/'.ci'/'run')], cwd=tmp_path/'elsewhere', env=e, capture_output=True,
                           text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr, (tmp_path/'rec').read_text().splitlines()
    return repo, run


def test_ci_sets_data_cache_and_offline_for_the_test_command(ci):
    "With ../shared/data: MINIAI_DATA is its absolute path, MINIAI_CACHE=<repo>/.cache, hub offline, run in the repo."
    repo, run = ci
    (repo.parent/'shared'/'data').mkdir(parents=True)
    rc, out, rec = run()
    assert rc == 0, out
    assert f'cwd={repo}' in rec and f"MINIAI_DATA={repo.parent/'shared'/'data'}" in rec
    assert f"MINIAI_CACHE={repo/'.cache'}" in rec and 'HF_HUB_OFFLINE=1' in rec and 'MPLBACKEND=Agg' in rec


def test_ci_leaves_miniai_data_unset_without_shared_data(ci):
    "Without ../shared/data, MINIAI_DATA stays unset (a data set then comes from elsewhere or the sample)."
    repo, run = ci
    (repo.parent/'shared').mkdir()
    rc, out, rec = run()
    assert rc == 0 and 'MINIAI_DATA=unset' in rec


@pytest.mark.parametrize('code', [0, 1, 3])
def test_ci_exit_status_is_the_test_commands(ci, code):
    "The CI's exit status is the test command's, and the wall time is reported either way."
    repo, run = ci
    rc, out, rec = run(FAKE_RC=code)
    assert rc == code and 'CI wall time' in out


# ---------------------------------------------------------------- tools/make_fashion_sample.py

def _source():
    "The folder holding the 4 verified original files under $MINIAI_DATA, or None."
    d = os.environ.get('MINIAI_DATA')
    f = Path(d)/'fashion_mnist' if d else None
    ok = f and all((f/n).is_file() for n in FASHION_SHA256)
    return f if ok else None

needs_source = pytest.mark.skipif(_source() is None, reason='original Fashion-MNIST not found under $MINIAI_DATA')


def _make(*args):
    "Run tools/make_fashion_sample.py in this process with these arguments; its printed output."
    import contextlib, io
    mod = _load_script('tools/make_fashion_sample.py')
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(sys, 'argv', ['make_fashion_sample.py', *map(str, args)])
        mod.main()
    return buf.getvalue()


SAMPLE_FILES = [SAMPLE_PREFIX + n for split in ('train', 'test') for n in FASHION_FILES[split]]
ALL_FILES = SAMPLE_FILES + [SAMPLE_MANIFEST, 'LICENSE-fashion-mnist.txt']


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "Small runs (3 train / 2 test per class) twice: from the parent folder and from the fashion_mnist folder itself."
    src = _source()
    if src is None: pytest.skip('original Fashion-MNIST not found under $MINIAI_DATA')
    tmp = tmp_path_factory.mktemp('fs')
    outs = [_make(src.parent, '--train-per-class', 3, '--test-per-class', 2, '--out', tmp/'a'),
            _make(src, '--test-per-class', 2, '--train-per-class', 3, '--out', tmp/'b'/'deep')]
    return src, tmp/'a', tmp/'b'/'deep', outs


@needs_source
def test_defaults_reproduce_the_shipped_sample_byte_for_byte(tmp_path):
    "With the default sizes the script rewrites miniai/assets exactly (all sample files, manifest and licence)."
    out = _make(_source().parent, '--out', tmp_path)
    assert 'wrote 2000 train + 1000 test images' in out
    for n in ALL_FILES: assert (tmp_path/n).read_bytes() == (REPO/'miniai'/'assets'/n).read_bytes(), n


def test_small_sample_is_balanced_first_of_each_class_in_file_order(made):
    "Each split: the first k images of each class of the original files, kept in file order, images and labels paired."
    src, a, _, outs = made
    assert 'wrote 30 train + 20 test images' in outs[0]
    for split, k in (('train', 3), ('test', 2)):
        xo, yo = (read_idx(src/n) for n in FASHION_FILES[split])
        want = np.sort(np.concatenate([np.flatnonzero(yo == c)[:k] for c in range(10)]))
        x, y = (read_idx(a/(SAMPLE_PREFIX + n)) for n in FASHION_FILES[split])
        assert x.shape == (10*k, 28, 28) and y.shape == (10*k,) and x.dtype == y.dtype == np.uint8
        assert np.bincount(y, minlength=10).tolist() == [k]*10
        assert np.array_equal(y, yo[want]) and np.array_equal(x, xo[want])


def test_manifest_records_sources_rule_indices_and_file_checksums(made):
    "The manifest: verified source SHA-256s, per-class counts, the chosen indices per split, each written file's SHA-256."
    src, a, _, _ = made
    man = json.loads((a/SAMPLE_MANIFEST).read_text())
    assert man['source_sha256'] == {n: hashlib.sha256((src/n).read_bytes()).hexdigest() for n in FASHION_SHA256}
    assert man['per_class'] == {'train': 3, 'test': 2}
    assert 'MIT' in man['source'] and 'Zalando' in man['source'] and 'file order' in man['rule']
    for split, k in (('train', 3), ('test', 2)):
        yo = read_idx(src/FASHION_FILES[split][1])
        want = np.sort(np.concatenate([np.flatnonzero(yo == c)[:k] for c in range(10)]))
        assert man['indices'][split] == want.tolist()
    assert man['sha256'] == {n: hashlib.sha256((a/n).read_bytes()).hexdigest() for n in SAMPLE_FILES}
    lic = (a/'LICENSE-fashion-mnist.txt').read_text()
    assert 'MIT License' in lic and 'Zalando SE' in lic


def test_output_is_byte_reproducible_and_gzip_readable(made):
    "Two runs (parent folder or fashion_mnist/ itself, --out created with parents) give identical bytes; plain gzip reads them."
    _, a, b, _ = made
    for n in ALL_FILES: assert (a/n).read_bytes() == (b/n).read_bytes(), n
    for n in SAMPLE_FILES: gzip.decompress((a/n).read_bytes())


@needs_source
def test_a_corrupted_original_is_refused_and_nothing_is_written(tmp_path, monkeypatch, fashion_link_copy):
    "A copy with a wrong checksum: CorruptDataError naming the file and SHA-256; the output folder is not written."
    src = _source(); monkeypatch.delenv('MINIAI_DATA')
    d = fashion_link_copy(src, tmp_path/'bad', corrupt='t10k-labels-idx1-ubyte.gz')
    with pytest.raises(CorruptDataError, match=r't10k-labels-idx1-ubyte\.gz: SHA-256'):
        _make(d, '--train-per-class', 1, '--test-per-class', 1, '--out', tmp_path/'out')
    assert not (tmp_path/'out').exists() or not any((tmp_path/'out').iterdir())


@needs_source
def test_missing_files_give_a_clear_error(tmp_path, monkeypatch, fashion_link_copy):
    "A folder without all 4 files (and no $MINIAI_DATA): exit with a message naming the folders tried and the missing file."
    src = _source(); monkeypatch.delenv('MINIAI_DATA')
    d = fashion_link_copy(src, tmp_path/'part', drop='train-labels-idx1-ubyte.gz')
    with pytest.raises(SystemExit) as e:
        _make(d, '--train-per-class', 1, '--test-per-class', 1, '--out', tmp_path/'out')
    msg = str(e.value.code)
    assert msg.startswith('Fashion-MNIST not found') and f'{d}: missing train-labels-idx1-ubyte.gz' in msg
    assert f"{d/'fashion_mnist'}: no such folder" in msg
    assert not (tmp_path/'out').exists() or not any((tmp_path/'out').iterdir())


@needs_source
def test_a_data_dir_without_the_files_is_not_replaced_by_miniai_data(tmp_path):
    "A data_dir (a folder) without the files is an error naming it: never $MINIAI_DATA's copy instead."
    (tmp_path/'nothing').mkdir()
    with pytest.raises(SystemExit) as e:
        _make(tmp_path/'nothing', '--train-per-class', 1, '--test-per-class', 1, '--out', tmp_path/'o')
    assert 'Nothing else was searched' in str(e.value.code) and not (tmp_path/'o').exists()
    with pytest.raises(SystemExit) as e:   # a path that is not a folder: one clean message, no traceback
        _make(tmp_path/'typo', '--train-per-class', 1, '--test-per-class', 1, '--out', tmp_path/'o2')
    assert str(e.value.code).startswith('Fashion-MNIST not found') and 'is not a folder' in str(e.value.code)
