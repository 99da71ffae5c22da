#!/usr/bin/env bash
# A separate venv with neural-tangents 0.6.5, only to regenerate the parity fixtures of this
# folder (never a dependency of ntkscale; CI checks against the committed fixtures).
#
#   bash tests/nt_parity/make_venv.sh [VENV]        # default /tmp/nt-venv
#   VENV/bin/python tests/nt_parity/generate.py
#
# NT 0.6.5 predates the current jax: it runs on jax/jaxlib 0.4.30 with numpy 1.26; its
# `experimental` module (TensorFlow interop) is stubbed by generate.py, nothing else is changed.
set -euo pipefail
VENV="${1:-/tmp/nt-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "jax==0.4.30" "jaxlib==0.4.30" "numpy==1.26.4" "scipy<1.14" frozendict typing_extensions absl-py
"$VENV/bin/pip" install -q --no-deps "neural-tangents==0.6.5"
"$VENV/bin/python" - <<'PY'
import sys, types
sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
import neural_tangents
print("neural-tangents", neural_tangents.__version__, "ready in", sys.prefix)
PY
