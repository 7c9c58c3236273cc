#!/usr/bin/env bash
# The GPU check: in one command of at most 8 minutes on an NVIDIA H200 machine, jmeta's sinusoid-maml and
# omniglot-maml tasks/s (float32 and bfloat16, XLA convolutions) beside learn2learn and torch.func on the
# same GPU, the memory of one meta-step, the FLOP utilisation against the GPU's measured peak, then MAML
# Omniglot 5-way 1-shot meta-trained for as many of its 60,000 iterations as fit in the minutes left, and
# its test accuracy with the protocol (benchmarks/gpu_check.py does the work; docs/scaling-out.md).
#
# That machine has no network. Its image holds jax (CUDA), torch, flax, optax, chex, orbax-checkpoint,
# numpy, tqdm, matplotlib, pillow, scikit-learn, absl-py, pyyaml, protobuf (../.library/device/KINDS.md);
# of what jmeta imports it lacks ml-collections and tensorboardX. So, once, on a machine with PyPI, in the
# repository root:
#   bash benchmarks/gpu_check.sh --prepare [PEERS_DIR] [OMNIGLOT_DIR]   # defaults: ../shared/bench ../shared/data/omniglot
# fills two folders that git ignores (.git/info/exclude):
#   .whl/  the wheels of ml-collections and tensorboardX (pip download --no-deps for CPython 3.12)
#   .gpu/  learn2learn 0.2.0's sources (pip download --no-binary), the peers' scripts, Omniglot's two zips
# Then on the GPU machine (the device tool: carry [".whl", ".gpu"], timeout_s 540):
#   bash benchmarks/gpu_check.sh
# Try it on a CPU with every part shrunk (peers run only where PEERS_PY has torch):
#   GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh --minutes 5
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --prepare ]]; then
  peers=${2:-../shared/bench} omniglot=${3:-../shared/data/omniglot}
  python=${PYTHON:-python3}
  exclude=$(git rev-parse --git-path info/exclude)
  for folder in /.whl/ /.gpu/; do grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"; done
  mkdir -p .whl .gpu/peers .gpu/omniglot
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl ml-collections==1.1.0 tensorboardX==2.6.5
  if [[ ! -d .gpu/learn2learn-0.2.0 ]]; then
    "$python" -m pip download -q --no-deps --no-binary :all: -d .gpu learn2learn==0.2.0
    tar xzf .gpu/learn2learn-0.2.0.tar.gz -C .gpu && rm .gpu/learn2learn-0.2.0.tar.gz
  fi
  cp "$peers"/peers_sine.py "$peers"/peers_torch.py .gpu/peers/
  cp "$omniglot"/images_background.zip "$omniglot"/images_evaluation.zip .gpu/omniglot/
  du -sh .whl .gpu
  exit 0
fi

python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/jmeta-site .whl/*.whl
  export PYTHONPATH=/tmp/jmeta-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
data=.gpu/omniglot
[[ -f $data/images_background.zip ]] || data=../shared/data/omniglot
exec "$python" benchmarks/gpu_check.py --peers-dir .gpu/peers --l2l-src .gpu/learn2learn-0.2.0 --data-dir "$data" "$@"
