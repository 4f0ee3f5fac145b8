#!/usr/bin/env bash
# make binder-check: what Binder (repo2docker) would do with binder/, as far as it can be
# done here without Docker.
#
#   1. repo2docker's own plan: `repo2docker --no-build --debug .` prints the Dockerfile it
#      would build (PyPI jupyter-repo2docker, in a venv of its own); checked for Python
#      3.11 and for running binder/postBuild.
#   2. A replay of binder/ in a fresh venv, with a fresh HOME (so nothing comes from this
#      machine's caches): the base environment repo2docker installs (JupyterLab 4,
#      Notebook 7, ipywidgets 8, from PyPI instead of conda-forge), then apt.txt (checked:
#      it installs as root in a real build), then requirements.txt, then postBuild, run
#      from a copy of the repository's root as Binder runs it.
#   3. The quickstart executed headless (nbclient) on the result, on the kernel it names,
#      which postBuild installed.
#
# 5 minutes here idle (25 under load), most of it compiling llama-cpp-python; not part of `make test`.
# Everything lands in .binder-check/ (BINDER_CHECK_DIR to move it); summary.txt says how
# it went and how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${BINDER_CHECK_DIR:-$ROOT/.binder-check}
PYTHON=${PYTHON:-python3}
rm -rf "$WORK"
mkdir -p "$WORK"
SUMMARY=$WORK/summary.txt
started=$(date +%s)
step_started=$started

say() { printf '[binder-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
done_step() {
    local now
    now=$(date +%s)
    printf '%-34s %5d s\n' "$1" $((now - step_started)) >> "$SUMMARY"
    step_started=$now
}
fail() {
    say "FAILED: $*"
    printf 'FAILED: %s\n' "$*" >> "$SUMMARY"
    exit 1
}

# -- 1. repo2docker's plan ------------------------------------------------------------------
say "repo2docker --no-build --debug . (jupyter-repo2docker from PyPI)"
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install --quiet --disable-pip-version-check "jupyter-repo2docker>=2026.4"
"$WORK/tools/bin/repo2docker" --version
"$WORK/tools/bin/repo2docker" --no-build --debug . > "$WORK/repo2docker.log" 2>&1 \
    || fail "repo2docker --no-build (see $WORK/repo2docker.log)"
grep -q "Building conda environment for python=3.11" "$WORK/repo2docker.log" || fail "repo2docker does not pick Python 3.11"
grep -q "RUN ./binder/postBuild" "$WORK/repo2docker.log" || fail "repo2docker does not run binder/postBuild"
done_step "repo2docker plan"

# -- 2. binder/ replayed ----------------------------------------------------------------------
say "a copy of the repository (tracked and untracked files, less what git ignores)"
mkdir -p "$WORK/repo" "$WORK/home"
git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c '
import os, shutil, sys
dest = sys.argv[1]
for name in sys.stdin.buffer.read().decode().split("\0"):
    if name and os.path.lexists(name):
        os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(name, os.path.join(dest, name), follow_symlinks=False)
' "$WORK/repo"

# As in the image: the environment's bin first on PATH, a HOME of its own, no caches.
ENV_DIR=$WORK/env
export HOME=$WORK/home
export PATH=$ENV_DIR/bin:$HOME/.local/bin:$PATH
export NB_PYTHON_PREFIX=$ENV_DIR
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset WASINN_LAB_CACHE WASINN_LAB_KERNELS JUPYTER_PATH JUPYTER_CONFIG_DIR JUPYTER_DATA_DIR VIRTUAL_ENV PYTHONPATH || true

say "base environment: Python 3.11 venv with repo2docker's Jupyter (JupyterLab 4, Notebook 7, ipywidgets 8)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || fail "binder/runtime.txt asks for Python 3.11; $PYTHON is not"
grep -qx "python-3.11" "$WORK/repo/binder/runtime.txt" || fail "binder/runtime.txt is not python-3.11"
"$PYTHON" -m venv "$ENV_DIR"
python -m pip install --quiet "jupyterlab==4.*" "notebook==7.*" "ipywidgets==8.*" "jupyter_server==2.*" nbclient
done_step "base environment"

cd "$WORK/repo"
if [ -f binder/apt.txt ]; then
    say "binder/apt.txt: checking its packages are installed (a real build installs them as root)"
    while read -r package; do
        case "$package" in ''|'#'*) continue ;; esac
        dpkg -s "$package" >/dev/null 2>&1 || fail "apt.txt package $package is not installed here"
    done < binder/apt.txt
fi
if [ -f binder/requirements.txt ]; then
    say "pip install -r binder/requirements.txt"
    python -m pip install --no-cache-dir -r binder/requirements.txt
    done_step "requirements.txt"
fi
say "binder/postBuild (compiles llama-cpp-python: the long part)"
chmod +x binder/postBuild
./binder/postBuild > "$WORK/postBuild.log" 2>&1 || { tail -30 "$WORK/postBuild.log"; fail "binder/postBuild (see $WORK/postBuild.log)"; }
tail -5 "$WORK/postBuild.log"
done_step "postBuild"

# -- 3. the quickstart on the result -------------------------------------------------------------
say "notebooks/01-quickstart.ipynb, headless, on the kernel it names"
python - <<'PY' || fail "the quickstart did not run on the replayed environment"
import re
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

notebook = nbformat.read("notebooks/01-quickstart.ipynb", as_version=4)
name = notebook.metadata.kernelspec.name
spec = KernelSpecManager().get_kernel_spec(name)
print(f"kernel {name!r} ({spec.display_name}) from {spec.resource_dir}")
NotebookClient(notebook, timeout=600, kernel_name=name, resources={"metadata": {"path": "notebooks"}}).execute()
code = [cell for cell in notebook.cells if cell.cell_type == "code"]
errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
assert not errors, errors
done = [cell for cell in code if cell.source.startswith("%%wasi_nn") and any(
    re.search(r"· (done|waiting for the next turn)\]", o.get("data", {}).get("text/plain", "")) for o in cell.outputs)]
assert done, "no %%wasi_nn cell finished"
print(f"{len(code)} code cells ran, no error; {len(done)} %%wasi_nn cells generated")
PY
nbnote="$(python -c 'import nbclient; print(nbclient.__version__)')"
done_step "quickstart (nbclient $nbnote)"

total=$(( $(date +%s) - started ))
printf '%-34s %5d s\nPASSED\n' "total" "$total" >> "$SUMMARY"
say "passed in ${total} s"
cat "$SUMMARY"
