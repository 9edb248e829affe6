#!/usr/bin/env bash
# GPU check of issue 15 on a machine without a package registry (see benchmarks/README.md, "GPU check").
#
#   bash benchmarks/gpu_check.sh            # results in $OUT (default out/gpu_check): gpu_check.json, gpu_check.md,
#                                           # gpu_check.log, pytest.txt
#   bash benchmarks/gpu_check.sh --cpu --sizes 160x120 --budget 120    # the plumbing, on a machine without a GPU
#
# 1. installs the wheels carried in .whl/ (kornia, kornia_rs, tqdm) into $GPU_CHECK_SITE with pip --no-index, each
#    only when its module cannot be imported already;
# 2. installs the project without dependencies (pip install --no-deps --no-build-isolation --no-index -e .) unless
#    `import loftr` already finds this tree; src/ is put on PYTHONPATH in any case, so a failed install costs nothing;
# 3. runs benchmarks/gpu_check.py with the arguments given, killed if the whole script would pass $GPU_CHECK_LIMIT s
#    (default 470, setup included; the Python script's own budget is 420 s, each of its parts time-limited).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
LIMIT=${GPU_CHECK_LIMIT:-470}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
export OUT
T0=$(date +%s)

{
    echo "== gpu_check.sh $(date -u +%FT%TZ) on $(hostname), $($PY --version 2>&1), args: $*"
    for whl in .whl/*.whl; do
        [ -e "$whl" ] || { echo "no wheels in .whl/"; break; }
        mod=$(basename "$whl" | cut -d- -f1)
        if "$PY" -c "import $mod" 2>/dev/null; then
            echo "$mod: already importable, $whl not installed"
        else
            timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$whl" \
                && echo "$mod: installed from $whl" || echo "$mod: INSTALL FAILED ($whl)"
        fi
    done
} >>"$LOG" 2>&1
export PYTHONPATH="$ROOT/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"

{
    if PYTHONPATH="${PYTHONPATH#"$ROOT/src:"}" "$PY" -c "import loftr, sys; sys.exit(0 if loftr.__file__.startswith('$ROOT/src') else 1)" 2>/dev/null; then
        echo "loftr: already installed from this tree"
    elif timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e .; then
        echo "loftr: installed (pip install --no-deps -e .)"
    else
        echo "loftr: pip install -e . failed; using PYTHONPATH=src"
    fi
    echo "== setup took $(( $(date +%s) - T0 )) s"
} >>"$LOG" 2>&1

timeout -k 10 $(( LIMIT - ($(date +%s) - T0) )) "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
rc=$?
echo "== gpu_check.sh done: rc $rc after $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
exit $rc
