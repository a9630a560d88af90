#!/usr/bin/env bash
# Installs the Debian packages cudarts needs to build, test and run its demo, and the Python
# packages from PyPI that the ONNX export test runs the exported models with (onnx,
# onnxruntime, numpy; pinned). Idempotent: checks each package first and installs only what is
# missing (apt-get with sudo only when not root; pip for the current python3). A second run
# changes nothing. Where PyPI cannot be reached the ONNX test is skipped (ctest says so).
set -euo pipefail

python_packages=(numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0)

python_setup() {
  if python3 -c "import numpy, onnx, onnxruntime" 2> /dev/null; then
    echo "setup: python packages present (numpy, onnx, onnxruntime)"
    return 0
  fi
  echo "setup: installing ${python_packages[*]} from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "${python_packages[@]}" ||
    echo "setup: WARNING: pip could not install ${python_packages[*]}; the ONNX Runtime test" \
      "(ctest onnx_runtime) will be skipped" >&2
}

packages=(
  cmake g++ make ccache pkg-config
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev zlib1g-dev
  dataset-fashion-mnist python3-matplotlib graphviz
  clang libclang-rt-14-dev libomp-dev
  libopenmpi-dev openmpi-bin
)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  python_setup
  exit 0
fi

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo > /dev/null; then
    sudo "$@"
  else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
}

echo "setup: installing ${missing[*]}"
as_root apt-get update
as_root env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
python_setup
