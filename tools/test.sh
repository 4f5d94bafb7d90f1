#!/usr/bin/env bash
# miniai's test command (the one in README.md; .ci/run calls it).
# 1. the library must be in sync with the notebooks (nbdev_export changes nothing; in a git checkout, miniai/ must
#    also have no uncommitted changes),
# 2. every notebook runs top to bottom (nbdev_test, quick mode unless MINIAI_QUICK is set otherwise),
# 3. pytest,
# and a final line "total: N passed, N failed" covering notebooks and tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export MINIAI_QUICK="${MINIAI_QUICK:-1}" MPLBACKEND="${MPLBACKEND:-Agg}" PYTHONUNBUFFERED=1
workers="${MINIAI_TEST_WORKERS:-2}"
status=0

echo "== 1/3 nbdev_export: is miniai/ in sync with nbs/?"
if git rev-parse --git-dir >/dev/null 2>&1; then
  state() { git status --porcelain -- miniai; git --no-pager diff HEAD -- miniai; }   # files and their contents
  before=$(state)
  nbdev_export || { echo "nbdev_export failed"; exit 1; }
  after=$(state)
  if [ "$before" != "$after" ]; then
    echo "FAIL: nbdev_export changed miniai/ -- the library is out of sync with the notebooks:"
    git status --porcelain -- miniai; git --no-pager diff --stat -- miniai
    status=1
  elif [ -n "$after" ]; then
    echo "FAIL: miniai/ has uncommitted changes (the export matches the notebooks; commit both):"
    git status --porcelain -- miniai; git --no-pager diff --stat -- miniai
    status=1
  else echo "in sync"; fi
else
  nbdev_export || { echo "nbdev_export failed"; exit 1; }
  echo "(not a git checkout: exported without the sync check)"
fi

echo "== 2/3 notebooks (nbdev_test, MINIAI_QUICK=$MINIAI_QUICK, $workers workers)"
log=$(mktemp)
nbs=$(find nbs -name '*.ipynb' ! -path '*/_*' ! -path '*/.*' | wc -l)   # what nbdev_test runs (it skips names and folders '_*', '.*')
# one thread per notebook process: $workers notebooks share the cores, more threads only contend
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" nbdev_test --n_workers "$workers" --do_print --timing 2>&1 | tee "$log"
nb_rc=${PIPESTATUS[0]}
# nbdev_test prints "- Completed" for every notebook it ran, failed ones too, and lists the failed ones after this header
nb_ran=$(grep -c '^- Completed' "$log" || true)
nb_fail=$(awk '/^nbdev Tests Failed On The Following Notebooks:/ {f=1; next} f && /^\t/ {n++} END {print n+0}' "$log")
nb_pass=$((nb_ran - nb_fail))
[ "$nb_ran" -lt "$nbs" ] && { echo "$((nbs - nb_ran)) of $nbs notebooks did not run"; nb_fail=$((nbs - nb_pass)); }
[ "$nb_rc" -ne 0 ] && [ "$nb_fail" -eq 0 ] && nb_fail=1
echo "notebooks: $nb_pass passed, $nb_fail failed"
[ "$nb_fail" -ne 0 ] && status=1

echo "== 3/3 pytest"
python -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$log"
py_rc=${PIPESTATUS[0]}
last=$(grep -E '[0-9]+ (passed|failed|errors?)' "$log" | tail -1)   # the summary line (errors only: collection errors)
py_pass=$(echo "$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
py_fail=$(echo "$last" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s+=$1} END {print s+0}')
[ "$py_rc" -ne 0 ] && [ "$py_fail" -eq 0 ] && py_fail=1
[ "$py_rc" -ne 0 ] && status=1
rm -f "$log"

echo "total: $((nb_pass + py_pass)) passed, $((nb_fail + py_fail)) failed"
exit $status
