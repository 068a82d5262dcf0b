#!/usr/bin/env bash
# GPU check (issue "Keep the accelerator fed", item 3): one stage on one GPU (Ray Train, NCCL, bf16
# autocast) on generated 256x256 tiles, GPU utilisation and memory sampled by nvidia-smi during the
# epochs, then GPU batch inference. Under 8 minutes on one H100/H200 with the defaults.
#
#   bash benchmarks/gpu_check.sh [FLAGS]        # flags: bash benchmarks/gpu_check.sh --help
#   bash benchmarks/gpu_check.sh --cpu-smoke    # the same Python path on CPU, tiny sizes
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh   # use that environment as it is
#
# Raw JSON: $OUT/gpu_check.json when OUT is set, else ./gpu_check.json (or --json PATH).
# No GPU (no nvidia-smi, or it lists none): one line saying so, {"gpu": false, ...}, exit 0, and
# neither Ray nor the tile generator is started. Exit 3: a GPU but no usable Python environment.
#
# Environment, in order: $PYTHON if set (only that one); else .venv/bin/python, then python3, the
# first that has torch, ray and raypipe's other imports; else wheels in .whl/ installed offline
# for python3; else `make setup` when a package registry answers; else a clear error, at once.
set -uo pipefail

CALLER_PWD="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER=benchmarks/gpu_check.py
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # raypipe from this checkout, whatever is installed
export PYTHONUNBUFFERED=1

ARGS=("$@")
smoke=0
json_path="${OUT:+$OUT/gpu_check.json}"
json_path="${json_path:-gpu_check.json}"
prev=""
for a in "$@"; do
  case "$a" in
    --cpu-smoke) smoke=1 ;;
    --json=*) json_path="${a#--json=}" ;;
    -h|--help) exec "${PYTHON:-python3}" "$HELPER" --help ;;
  esac
  [ "$prev" = "--json" ] && json_path="$a"
  prev="$a"
done
case "$json_path" in /*) ;; *) json_path="$CALLER_PWD/$json_path" ;; esac  # relative to where it was run
cd "$ROOT" || exit 1

boot_python="${PYTHON:-python3}"  # for the reports that need only the standard library

# Last resort when no Python runs at all: the report by hand.
write_json_by_hand() {  # $1 gpu (true/false), $2 key, $3 message
  mkdir -p "$(dirname "$json_path")"
  printf '{"benchmark": "gpu_check", "gpu": %s, "%s": "%s"}\n' "$1" "$2" "$(printf '%s' "$3" | tr -d '"\\')" >"$json_path"
}

# --- 1. Is there a GPU? ----------------------------------------------------------------------
if [ "$smoke" = 0 ]; then
  reason=""
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    reason="nvidia-smi not found"
  elif ! listing="$(nvidia-smi -L 2>&1)"; then
    reason="nvidia-smi -L failed: $(printf '%s' "$listing" | head -n 1)"
  elif ! printf '%s\n' "$listing" | grep -q '^GPU [0-9]'; then
    reason="nvidia-smi -L lists no GPU"
  fi
  if [ -n "$reason" ]; then
    if ! "$boot_python" "$HELPER" --report-no-gpu "$reason" "$@" --json "$json_path" 2>/dev/null; then
      write_json_by_hand false reason "$reason"
      echo "gpu_check: no GPU on this machine ($reason); nothing measured, wrote $json_path"
    fi
    exit 0
  fi
  echo "gpu_check: $(printf '%s\n' "$listing" | grep '^GPU [0-9]' | head -n 1)"
fi

# --- 2. A Python environment with torch, ray and raypipe's imports ----------------------------
MODULES="torch ray pyarrow pandas numpy scipy yaml fsspec botocore rasterio psutil"
probe() {  # $1 python: prints what is missing (nothing when all is there); status 0 when complete
  "$1" - $MODULES <<'EOF' 2>&1
import importlib.util, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print(" ".join(missing))
sys.exit(1 if missing else 0)
EOF
}
tried=()
pick() {  # sets py to the first complete candidate
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1 && [ ! -x "$c" ]; then
      tried+=("$c: not found"); continue
    fi
    if missing="$(probe "$c")"; then py="$c"; return 0; fi
    tried+=("$c ($(command -v "$c" || echo "$c")): missing ${missing:-?}")
  done
  return 1
}

fail_env() {
  msg="no usable Python environment: ${tried[*]:-none tried}. $1"
  if ! "$boot_python" "$HELPER" --report-env-error "$msg" "${ARGS[@]}" --json "$json_path" 2>/dev/null; then
    write_json_by_hand true error "$msg"
    echo "gpu_check: ERROR: $msg" >&2
  fi
  exit 3
}

py=""
if [ -n "${PYTHON:-}" ]; then
  pick "$PYTHON" || fail_env "PYTHON=$PYTHON was given, so no other environment is tried."
else
  if ! pick .venv/bin/python python3; then
    # Wheels carried in .whl/ (the device tool's way to bring packages): install them offline.
    if ls .whl/*.whl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
      site="${GPU_CHECK_SITE:-/tmp/gpu-check-site}"
      echo "gpu_check: installing the wheels in .whl/ into $site (offline)"
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:$site" && pick python3
    fi
  fi
  if [ -z "$py" ]; then
    # Build .venv with `make setup` only if a package registry answers (fail fast where none does).
    if command -v make >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 \
        && timeout 30 python3 -m pip index versions pip --timeout 5 --retries 0 >/dev/null 2>&1; then
      echo "gpu_check: building .venv with make setup (this takes minutes)"
      if [ "$smoke" = 1 ]; then
        make setup PYTHON=python3 || fail_env "make setup failed."
      else
        # GPU: the registry's default torch wheel for Linux x86-64 is the CUDA build; the CPU index
        # that TORCH_PIP_ARGS may name on CPU machines must not be used here.
        make setup PYTHON=python3 TORCH_PIP_ARGS= || fail_env "make setup failed."
      fi
      pick .venv/bin/python || fail_env "make setup finished but .venv/bin/python still lacks modules."
    else
      fail_env "No package registry answers here, so .venv cannot be built (make setup). On the lent GPU \
machine nothing can be fetched, and a .venv cannot be carried (64 MiB per call; torch alone is over 1 GiB, \
the ray 2.60.0 wheel for Python 3.12 is 76 MiB): run where pip reaches the registry, or set PYTHON to a \
Python that has torch (CUDA build), ray[train,data] and raypipe's dependencies (docs/benchmarks-gpu.md)."
    fi
  fi
fi
echo "gpu_check: python $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"

# --- 3. The check ------------------------------------------------------------------------------
exec "$py" "$HELPER" "$@" --json "$json_path"
