#!/usr/bin/env bash
# One command for a CUDA machine: the CUDA tests, then the model, training, sampling and likelihood benchmarks at
# H100/H200-class sizes (CIFAR-10 DDPM++ and NCSN++ at batch 128: images/s, peak memory; float32, bf16 autocast and
# torch.compile variants), each step under its own time limit so that the whole stays under 8 minutes. Each step's
# output goes to benchmarks/results/<name>_cuda.txt, after a header (date, GPU, driver, torch and CUDA versions,
# commit, command).
#
#   bash benchmarks/gpu.sh                 # on the CUDA machine, from any directory
#   bash benchmarks/gpu.sh --cpu-smoke     # the same sequence on the CPU at tiny sizes (checks the script itself);
#                                          # output to a temporary folder unless --out DIR is given
#   bash benchmarks/gpu.sh --out DIR       # write the result files to DIR instead
#
# Needs: a Python (``$PYTHON``, else ``python``) with a CUDA build of torch and the toolkit's dependencies (setup.py's
# install_requires, plus pytest); nothing is installed or downloaded. The repository
# need not be installed (``pip install -e .`` or not): its root is put on PYTHONPATH. The digits data come with
# scikit-learn; the CIFAR-10 networks are benchmarked on random images and weights, so no dataset is read.
# The exit status is that of the first failed step (a step that runs out of time: 124); later steps still run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
SMOKE=0
OUT=""
while (($#)); do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "benchmarks/gpu.sh: unknown option $1 (known: --cpu-smoke, --out DIR, --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# one import of torch: its version, its CUDA build and whether a GPU is visible
if ! CHECK="$("$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()))" 2>/dev/null)"; then
  echo "benchmarks/gpu.sh: '$PYTHON' cannot import torch; activate the environment that has the toolkit's dependencies (or set PYTHON=...)" >&2
  exit 1
fi
read -r TORCH_VERSION CUDA_BUILD HAS_CUDA <<<"$CHECK"
if ((SMOKE)); then
  SUFFIX=cpu_smoke
  OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_sh_smoke.XXXXXX")}"
else
  if [[ "$HAS_CUDA" != 1 ]]; then
    echo "benchmarks/gpu.sh: no CUDA device visible to torch $TORCH_VERSION (CUDA build: $CUDA_BUILD); run it on a CUDA machine, or use --cpu-smoke" >&2
    exit 1
  fi
  SUFFIX=cuda
  OUT="${OUT:-$ROOT/benchmarks/results}"
fi
mkdir -p "$OUT"

BUDGET_S=470   # the whole sequence; each step's limit is cut to what is left of it
START_S=$SECONDS
STATUS=0

header() {
  echo "# $*"
  echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host $(hostname); load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/# GPU: /' || true
  else
    echo "# GPU: none (nvidia-smi not found)"
  fi
  echo "# torch $TORCH_VERSION, CUDA build $CUDA_BUILD; $("$PYTHON" --version 2>&1)"
  echo "# commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
}

# step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, what is left of the budget), its output (with the
# header) shown and written to $OUT/NAME_$SUFFIX.txt; a failure is recorded and the sequence goes on
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET_S - (SECONDS - START_S)))
  ((limit > left)) && limit=$left
  local file="$OUT/${name}_${SUFFIX}.txt"
  if ((limit < 10)); then
    echo "== $name: skipped, the ${BUDGET_S} s budget is spent" | tee "$file"
    ((STATUS)) || STATUS=124
    return 0
  fi
  echo "== $name (limit ${limit} s) -> $file"
  local rc=0
  { header "$*"; timeout --kill-after=10 "$limit" "$@" 2>&1 || rc=$?; echo "# exit status $rc after $((SECONDS - START_S)) s of the sequence"; } | tee "$file"
  rc=$(tail -n 1 "$file" | sed -n 's/^# exit status \([0-9]*\).*/\1/p')
  if [[ "${rc:-1}" != 0 ]]; then
    echo "== $name FAILED (exit status ${rc:-?}$([[ "${rc:-}" == 124 ]] && echo ': out of time'))" >&2
    ((STATUS)) || STATUS=${rc:-1}
  fi
}

PY=("$PYTHON")
if ((SMOKE)); then
  step tests 120 "${PY[@]}" -m pytest -q -p no:cacheprovider tests -k cuda
  step models 240 "${PY[@]}" benchmarks/models.py --device cpu --models digits_ddpmpp --batch 4 --repeats 1 \
    --images-per-second --compile --no-backward
  step training 120 "${PY[@]}" benchmarks/training.py --device cpu --experiments digits --digits-steps 2 --warmup 1
  step sampling 120 "${PY[@]}" benchmarks/sampling.py --device cpu --skip-exact --networks digits_ddpmpp --batch 4 \
    --nfe 2 --pc-steps 20
  step likelihood 120 "${PY[@]}" benchmarks/likelihood.py --device cpu --skip-exact --networks digits_ddpmpp \
    --batch 2 --rtol 1e-2
else
  # tests whose names mention cuda (they skip themselves without a GPU); every test module is collected
  step tests 45 "${PY[@]}" -m pytest -q -p no:cacheprovider tests -k cuda
  # forward and forward + backward of both CIFAR-10 nets: float32, then bf16 autocast
  step models 60 bash -c "'$PYTHON' benchmarks/models.py --device cuda --batch 128 --repeats 5 --images-per-second \
    && '$PYTHON' benchmarks/models.py --device cuda --batch 128 --repeats 5 --images-per-second --bf16"
  # torch.compile of DDPM++ beside eager, bf16: compilation time and speed ratio, forward and forward + backward
  step models_compile 150 "${PY[@]}" benchmarks/models.py --device cuda --models ddpmpp_vp --batch 128 --repeats 5 \
    --images-per-second --bf16 --compile
  # the real training step (loss, Adam, clipping, EMA) at batch 128: float32, then bf16
  step training 60 bash -c "'$PYTHON' benchmarks/training.py --device cuda --batch 128 --steps 10 --warmup 2 \
    --experiments ddpmpp_vp ncsnpp_ve --mixed-precision no && '$PYTHON' benchmarks/training.py --device cuda --batch 128 --steps 10 \
    --warmup 2 --experiments ddpmpp_vp ncsnpp_ve --mixed-precision bf16"
  # sampling a batch of 128: DPM-Solver 20 NFE and PC 50 steps (100 NFE); float32, then bf16 (compilation is
  # measured by models_compile; here it would cost the budget a second time)
  step sampling 90 bash -c "'$PYTHON' benchmarks/sampling.py --device cuda --skip-exact --networks ddpmpp_vp \
    ncsnpp_ve --batch 128 --nfe 20 --pc-steps 50 && '$PYTHON' benchmarks/sampling.py --device cuda --skip-exact \
    --networks ddpmpp_vp ncsnpp_ve --batch 128 --nfe 20 --pc-steps 50 --bf16"
  # the probability-flow likelihood (dopri5, Hutchinson) of a batch of 64 under DDPM++
  step likelihood 45 "${PY[@]}" benchmarks/likelihood.py --device cuda --skip-exact --networks ddpmpp_vp \
    --batch 64 --rtol 1e-3
fi

echo "== done in $((SECONDS - START_S)) s; results in $OUT (exit status $STATUS)"
exit "$STATUS"
