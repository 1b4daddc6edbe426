#!/usr/bin/env bash
# Install ReX (pip `rex-xai` 0.4.1) for benchmarks/vs_rex.py only, into benchmarks/.rex/.
#
# rex-xai pins numpy==1.26.4, which jax cannot use, so it never goes into the project's
# environment: it and exactly the packages its import path needs are unpacked with --no-deps into
# a folder that vs_rex.py puts on sys.path, so numpy (2.x), torch, scipy, pandas, pillow,
# matplotlib and tqdm stay the venv's own. torch is pinned by the project's constraints file.
#
# What the path vs_rex.py uses imports (rex_xai.explanation.rex, .explanation, .responsibility):
#   anytree (+ fastcache, used by anytree.cachedsearch), toml, tabulate (input/config.py),
#   sqlalchemy (explanation/rex.py, output/database.py), onnxruntime (input/onnx.py, imported by
#   explanation/rex.py even when no ONNX model is used), scikit-image + lazy_loader
#   (utils/_utils.py, output/visualisation.py). imutils, declared by rex-xai, is never imported.
#
# Usage: bash benchmarks/setup_rex.sh [python]   (default: /work/main/.venv/bin/python, else python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${1:-}"
if [ -z "$py" ]; then
  if [ -x /work/main/.venv/bin/python ]; then py=/work/main/.venv/bin/python; else py=python3; fi
fi
target="$here/.rex"
rm -rf "$target"
"$py" -m pip install --quiet --no-deps --target "$target" -c "$root/constraints.txt" \
  rex-xai==0.4.1 \
  anytree==2.13.0 \
  fastcache==1.1.0 \
  toml==0.10.2 \
  tabulate==0.10.0 \
  sqlalchemy==2.1.9 \
  onnxruntime==1.32.0 \
  scikit-image==0.26.0 \
  lazy_loader==0.6
# check the overlay imports on top of the environment's numpy
PYTHONPATH="$target" "$py" -c "
import numpy, rex_xai.explanation.rex, rex_xai.explanation.explanation
from importlib.metadata import version
print('rex-xai', version('rex-xai'), 'on numpy', numpy.__version__, 'ok')
"
