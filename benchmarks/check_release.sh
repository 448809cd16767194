#!/usr/bin/env bash
# The release check (issue 35): build the sdist and the wheel, check them with twine, install the wheel into a fresh
# virtual environment with nothing from this checkout (torch==2.13.0 first, then the wheel with its napari extra and
# npe2), and from a folder outside the checkout: print the version, validate the plugin's manifest with npe2, segment
# the sample the wheel ships (napari_plugin/sample_data, with its reference mask: a Dice report) with the bundled
# model, and open the napari sample in a real viewer (under xvfb). Prints each step; exits non-zero at the first
# failure. Slow (minutes: the environment is installed from the package index), so it is a script, not a test.
#
#   benchmarks/check_release.sh [WORK_DIR]        (default: a new temporary folder, removed at the end)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3.11}"
step() { printf '\n== %s\n' "$*"; }

step "build: sdist and wheel into $work/dist"
(cd "$repo" && "$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1) || { tail -20 "$work/build.log"; exit 1; }
ls -l "$work/dist"
step "twine check"
"$python" -m twine check --strict "$work"/dist/*
wheel="$(ls "$work"/dist/medfcn-*.whl)"
unzip -l "$wheel" | grep -E "default.safetensors|napari.yaml|colin27_t1" || { echo "wheel lacks the model or the plugin"; exit 1; }

step "fresh venv $work/venv: torch==2.13.0, then the wheel with [napari] and npe2"
"$python" -m venv "$work/venv"
v="$work/venv/bin"
"$v/pip" install -q torch==2.13.0
"$v/pip" install -q "$wheel[napari]" npe2
cd "$work"  # nothing from the checkout below: PYTHONPATH cleared, the working directory outside it
export PYTHONPATH=
"$v/python" -c "import medfcn, sys; assert '$repo' not in medfcn.__file__, medfcn.__file__; print(medfcn.__file__)"

step "medfcn --version"
"$v/medfcn" --version
step "npe2 validate medfcn"
"$v/npe2" validate medfcn
step "medfcn segment: the wheel's sample with the bundled model, scored against its reference"
sample="$("$v/python" -c "import napari_plugin, pathlib; print(pathlib.Path(napari_plugin.__file__).parent / 'sample_data')")"
mkdir -p "$work/images" "$work/labels"
cp "$sample/colin27_t1.nii.gz" "$work/images/colin27.nii.gz"
cp "$sample/colin27_brain_mask.nii.gz" "$work/labels/colin27.nii.gz"
"$v/medfcn" segment "$work/images" -o "$work/out" --reference "$work/labels" --masked-image --statistics --quiet
"$v/python" -c "import json; m = json.load(open('$work/out/manifest.json')); print('manifest version', m['medfcn_version'], 'model', m['model']['sha256'][:12])"
grep -o "medfcn [0-9][0-9.]*" "$work/out/evaluation/report.html" | head -1
step "napari: open the sample in a real viewer"
xvfb-run -a -s "-screen 0 1280x1024x24" "$v/python" - <<'EOF'
import napari

viewer = napari.Viewer(show=False)
layers = viewer.open_sample("medfcn", "colin27")
print("napari sample:", [(layer.name, layer.data.shape) for layer in viewer.layers])
assert viewer.layers, "no layer opened"
viewer.close()
EOF
step "release check passed"
