#!/usr/bin/env bash
# Installs gaussian-retina and its prerequisites into the active Python, from nothing:
#
#   bash install.sh
#
# 1. torch + torchvision, a matched pair, unless a working pair is already there;
# 2. Detectron2, built from a pinned source, unless it already imports with its compiled ops;
# 3. this add-on, editable, with its test extra.
#
# Each step says what it did. Running it again changes nothing. A failed step stops the script
# with one line naming the step.
#
# Environment:
#   PYTHON              the interpreter to install into (default: python3, the active one)
#   DETECTRON2_SOURCE   a git URL (optionally ending in @<commit>), a local source folder or a
#                       source tarball (default: the official repository at DETECTRON2_COMMIT)
#   TORCH_PIP_ARGS      extra pip arguments for torch/torchvision, e.g. a PyTorch --index-url
#                       for a particular CUDA build (default: none, pip picks the newest pair)
#   FORCE_DETECTRON2=1  rebuild Detectron2 even if one already imports
set -euo pipefail

PYTHON="${PYTHON:-python3}"
DETECTRON2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
DETECTRON2_SOURCE="${DETECTRON2_SOURCE:-git+https://github.com/facebookresearch/detectron2.git@${DETECTRON2_COMMIT}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG="$(mktemp -t gaussian-retina-install.XXXXXX)"

say() { echo "install.sh: $*"; }
fail() {
  echo "install.sh: FAILED: $* (pip's output: $LOG)" >&2
  tail -n 15 "$LOG" >&2 || true
  exit 1
}
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@" >>"$LOG" 2>&1; }

"$PYTHON" -m pip --version >/dev/null 2>&1 || fail "no pip for '$PYTHON'; set PYTHON or install pip"

# Build tools: Detectron2 and the add-on build without isolation, against the installed torch.
if "$PYTHON" -c "import setuptools, wheel" >/dev/null 2>&1; then
  say "setuptools and wheel: present"
else
  pip_install setuptools wheel || fail "could not install setuptools and wheel"
  say "setuptools and wheel: installed"
fi

# 1. torch + torchvision. A pair "works" when torchvision's compiled NMS runs against this torch:
#    a mismatched pair imports but fails there ("operator torchvision::nms does not exist").
torch_pair() {
  "$PYTHON" - <<'PY' 2>/dev/null
import torch, torchvision
from torchvision.ops import nms
nms(torch.zeros(1, 4), torch.ones(1), 0.5)
print(f"torch {torch.__version__} + torchvision {torchvision.__version__}")
PY
}
if pair="$(torch_pair)"; then
  say "$pair: already working, skipped"
else
  say "installing torch + torchvision (a few minutes; a CUDA build is several GB)"
  # shellcheck disable=SC2086
  pip_install ${TORCH_PIP_ARGS:-} --upgrade torch torchvision || fail "pip could not install torch and torchvision"
  pair="$(torch_pair)" || fail "torch and torchvision installed but torchvision.ops.nms does not run"
  say "$pair: installed"
fi

# 2. Detectron2, built against that torch.
detectron2_version() {
  "$PYTHON" -c "import detectron2, detectron2._C; print(detectron2.__version__)" 2>/dev/null
}
if [[ "${FORCE_DETECTRON2:-0}" != "1" ]] && version="$(detectron2_version)"; then
  say "detectron2 $version: already installed, skipped (FORCE_DETECTRON2=1 rebuilds it)"
else
  source="$DETECTRON2_SOURCE"
  if [[ -d "$source" || -f "$source" ]]; then
    source="$(cd "$(dirname "$source")" && pwd)/$(basename "$source")"
  elif [[ "$source" != git+* ]]; then
    source="git+$source"  # a bare https/ssh git URL
  fi
  say "building detectron2 from $source (about 2 minutes on 2 cores)"
  MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
    pip_install --no-build-isolation "$source" || fail "could not build detectron2 from $source"
  version="$(detectron2_version)" || fail "detectron2 built but does not import"
  say "detectron2 $version: installed"
fi

# 3. The add-on, editable, with pytest.
pip_install --no-build-isolation -e "$HERE[test]" || fail "could not install the add-on from $HERE"
"$PYTHON" -c "import gaussian_retina" >>"$LOG" 2>&1 || fail "the add-on installed but 'import gaussian_retina' fails"
say "gaussian_retina (editable, with its test extra): installed from $HERE"
say "done"
rm -f "$LOG"
