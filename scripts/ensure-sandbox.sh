#!/usr/bin/env bash
# Make sure agent code can run sandboxed here: bubblewrap must work (Linux), or
# the operator chose Docker (LOSSGYM_RUNNER=docker) or, explicitly, no isolation
# (LOSSGYM_ISOLATION=none). Installs bubblewrap with the platform's package
# manager when it can (root, or sudo without a password).
# Usage: scripts/ensure-sandbox.sh [--optional]   (--optional: warn instead of failing)
set -uo pipefail
optional=${1:-}

works() { command -v bwrap >/dev/null && bwrap --unshare-all --ro-bind / / true 2>/dev/null; }

if [ "${LOSSGYM_RUNNER:-local}" = docker ] || [ "${LOSSGYM_ISOLATION:-auto}" = none ] || works; then
    exit 0
fi
if [ "$(uname -s)" = Linux ] && ! command -v bwrap >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    for pm in "apt-get install -y -qq" "dnf install -y -q" "yum install -y -q" "zypper -q install -y" "pacman -S --noconfirm" "apk add -q"; do
        command -v "${pm%% *}" >/dev/null || continue
        echo "== installing bubblewrap (${pm%% *}): agent code runs in it"
        [ "${pm%% *}" = apt-get ] && $sudo apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive $sudo $pm bubblewrap >/dev/null 2>&1 && break
    done
fi
works && exit 0

reason="bubblewrap is not installed"
command -v bwrap >/dev/null && reason="bubblewrap cannot create namespaces here: $(bwrap --unshare-all --ro-bind / / true 2>&1 | head -1)"
[ "$(uname -s)" != Linux ] && reason="bubblewrap needs Linux; this is $(uname -s)"
cat >&2 <<MSG
== $reason.
   LossGym runs agent code only in a sandbox. Either install bubblewrap
   (e.g. sudo apt-get install bubblewrap), or use Docker (LOSSGYM_RUNNER=docker),
   or opt in to running agent code unisolated, for trusted agents only:
   LOSSGYM_ISOLATION=none make demo
MSG
[ "$optional" = --optional ] && { echo "== the sandbox tests will skip" >&2; exit 0; }
exit 1
