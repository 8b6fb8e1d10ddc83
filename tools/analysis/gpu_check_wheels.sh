#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels gpu_check.py needs on a GPU machine that has only a CUDA torch,
# triton, numpy (and timm): mmengine, which `import vmamba.models` requires, with what mmengine imports, and
# pytest for the ops tests. Pure-Python wheels (py3-none-any) serve Python 3.10-3.12; PyYAML (compiled) is
# fetched per Python version for x86_64 and aarch64 Linux. They go to .whl/ (ignored by git; it travels with a
# copy of the working tree), about 10 MB together; gpu_check.py unpacks them into a temporary folder and never
# touches the network.
#
#   bash tools/analysis/gpu_check_wheels.sh [DIR]        # default DIR: .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.whl}
mkdir -p "$dest"
pure=(mmengine==0.10.7 addict yapf platformdirs tomli termcolor rich markdown-it-py mdurl pygments packaging
      pytest pluggy iniconfig exceptiongroup typing_extensions)
for py in 3.10 3.11 3.12; do
  pip download --quiet --no-deps --only-binary=:all: --python-version "$py" -d "$dest" "${pure[@]}"
  for plat in manylinux2014_x86_64 manylinux2014_aarch64; do
    pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --platform "$plat" -d "$dest" pyyaml
  done
done
du -sh "$dest"
ls "$dest"
