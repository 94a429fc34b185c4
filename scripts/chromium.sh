#!/usr/bin/env bash
# Chromium for the browser tests (the HTML run report), from Debian's own `chromium` package.
#
#   scripts/chromium.sh        installs it when /usr/bin/chromium is missing, then prints its path
#
# Non-interactive and idempotent: a second call only prints the path. Playwright is pointed at
# this executable, so it never downloads a browser build of its own. Needs root (or password-less
# sudo) for apt-get. The apt log is .cache/chromium/apt.log; on failure one line goes to stderr
# and the exit status is 1.
set -euo pipefail
cd "$(dirname "$0")/.."

EXE=/usr/bin/chromium
DIR=.cache/chromium
LOG=$DIR/apt.log
# Another apt-get (CI installing other services) may hold the dpkg lock for a while.
LOCK_TIMEOUT=${CHROMIUM_APT_LOCK_TIMEOUT:-600}

die() { echo "chromium.sh: $*" >&2; exit 1; }

# True when the executable is there and answers --version (a broken install does not).
works() { [[ -x $EXE ]] && "$EXE" --version >/dev/null 2>&1; }

if works; then
    echo "$EXE"
    exit 0
fi

command -v apt-get >/dev/null || die "no apt-get on this machine: install Chromium by hand so that $EXE exists"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null \
        || die "installing chromium needs root (or password-less sudo) for apt-get"
    SUDO=(sudo -n)
fi

mkdir -p "$DIR"
apt() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$LOCK_TIMEOUT" -y -q "$@" \
        </dev/null >>"$LOG" 2>&1
}
: >"$LOG"
# Try the cached package lists first; refresh them only when that fails (stale or never fetched).
if ! apt install --no-install-recommends chromium; then
    apt update || die "apt-get update failed; see $LOG: $(tail -n 1 "$LOG")"
    apt install --no-install-recommends chromium \
        || die "apt-get install chromium failed; see $LOG: $(tail -n 1 "$LOG")"
fi
works || die "chromium was installed but $EXE --version does not run; see $LOG"
echo "$EXE"
