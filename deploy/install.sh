#!/usr/bin/env bash
# Install stackreflex as a systemd service on Debian/Ubuntu or RHEL/CentOS Stream, as root:
#
#   deploy/install.sh [options] SOURCE
#
# SOURCE is a stackreflex wheel (stackreflex-*.whl) or source tree. The script creates the system
# user `stackreflex` (home /var/lib/stackreflex), a virtualenv in /opt/stackreflex, /etc/stackreflex/
# (config.toml, env, the identity files given below), and installs and enables the units
# stackreflex-worker.service and stackreflex-watcher@STACK.service. Run it again to upgrade: the
# venv is updated, config.toml and env are kept, identity files given again are replaced.
#
# Options:
#   --clouds-yaml FILE   clouds.yaml with the cloud of OS_CLOUD (the undercloud)   -> /etc/stackreflex/clouds.yaml 0600
#   --ssh-key FILE       private key the service logs in to the nodes with          -> /etc/stackreflex/ssh_key 0600
#   --known-hosts FILE   the nodes' host keys (else an empty file to fill with
#                        `stackreflex nodes trust --known-hosts /etc/stackreflex/known_hosts`) -> 0640
#   --inventory FILE     node inventory (YAML)                                       -> /etc/stackreflex/inventory.yaml 0640
#   --env-file FILE      credentials (default: env.example, to edit)                 -> /etc/stackreflex/env 0600
#   --config FILE        settings (default: deploy/config.toml)                      -> /etc/stackreflex/config.toml 0640
#   --watch STACK        also enable a watcher for this Heat stack (repeatable; metrics on 9811, 9812, ...)
#   --python PATH        the Python (3.11 or later) the venv is made with (default: python3)
#   --pip-arg ARG        passed to `pip install` (repeatable), e.g. --pip-arg=--no-index --pip-arg=--find-links=DIR
#   --now                start the units too (default: enable only, so the env file can be edited first)
#   --root DIR           staging: write the whole layout under DIR, and print instead of running
#                        useradd, chown and systemctl (for inspection and tests; a venv is not
#                        relocatable, so a staged tree is not a package)
set -euo pipefail

USER_NAME=stackreflex
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=""
PYTHON=python3
CLOUDS_YAML="" SSH_KEY="" KNOWN_HOSTS="" INVENTORY="" ENV_FILE="" CONFIG=""
WATCH=() PIP_ARGS=()
START=0
SOURCE=""

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --clouds-yaml) need_value "$@"; CLOUDS_YAML=$2; shift 2 ;;
        --ssh-key) need_value "$@"; SSH_KEY=$2; shift 2 ;;
        --known-hosts) need_value "$@"; KNOWN_HOSTS=$2; shift 2 ;;
        --inventory) need_value "$@"; INVENTORY=$2; shift 2 ;;
        --env-file) need_value "$@"; ENV_FILE=$2; shift 2 ;;
        --config) need_value "$@"; CONFIG=$2; shift 2 ;;
        --watch) need_value "$@"; WATCH+=("$2"); shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --pip-arg) need_value "$@"; PIP_ARGS+=("$2"); shift 2 ;;
        --pip-arg=*) PIP_ARGS+=("${1#--pip-arg=}"); shift ;;
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        --now) START=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [[ -z "$SOURCE" ]] || die "one SOURCE only (got $SOURCE and $1)"; SOURCE=$1; shift ;;
    esac
done

# --- check everything before changing anything -------------------------------------------------
[[ -n "$SOURCE" ]] || die "give the stackreflex wheel or source tree to install (see --help)"
[[ -e "$SOURCE" ]] || die "SOURCE $SOURCE does not exist"
for pair in "--clouds-yaml:$CLOUDS_YAML" "--ssh-key:$SSH_KEY" "--known-hosts:$KNOWN_HOSTS" \
    "--inventory:$INVENTORY" "--env-file:$ENV_FILE" "--config:$CONFIG"; do
    option=${pair%%:*} file=${pair#*:}
    [[ -z "$file" || (-f "$file" && -r "$file") ]] || die "$option $file: no such readable file"
done
for stack in "${WATCH[@]}"; do
    [[ "$stack" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--watch $stack: a Heat stack name is letters, digits, _ . -"
done
command -v "$PYTHON" >/dev/null || die "no $PYTHON: pass --python PATH"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is not Python 3.11 or later, which stackreflex needs (RHEL 9: dnf install python3.11, then --python /usr/bin/python3.11)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot make a virtualenv (Debian: apt-get install python3-venv)"
if [[ -n "$ROOT" ]]; then
    mkdir -p "$ROOT" && ROOT=$(cd "$ROOT" && pwd)
    [[ "$ROOT" != / ]] || die "--root / is the real system: leave --root out"
elif [[ $EUID -ne 0 ]]; then
    die "run as root (or stage with --root DIR)"
fi

PREFIX=$ROOT/opt/stackreflex
ETC=$ROOT/etc/stackreflex
STATE=$ROOT/var/lib/stackreflex
UNITS=$ROOT/etc/systemd/system

# Run a command, or, staging, print it: what needs root and a real system.
system() {
    if [[ -n "$ROOT" ]]; then
        printf 'would run:'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# put MODE SRC DEST: a copy owned by the service user (root:root staging, printed chown).
put() {
    local mode=$1 src=$2 dest=$3
    install -m "$mode" "$src" "$dest"
    system chown "$USER_NAME:$USER_NAME" "${dest#"$ROOT"}"
}

# --- the user -------------------------------------------------------------------------------------
nologin=/usr/sbin/nologin
[[ -x $nologin ]] || nologin=/sbin/nologin
if [[ -n "$ROOT" ]] || ! getent passwd "$USER_NAME" >/dev/null; then
    system useradd --system --user-group --home-dir /var/lib/stackreflex --no-create-home \
        --shell "$nologin" --comment "stackreflex service" "$USER_NAME"
fi

# --- directories ----------------------------------------------------------------------------------
install -d -m 0755 "$PREFIX" "$UNITS"
install -d -m 0750 "$ETC" "$STATE" "$STATE/backups"
system chown "root:$USER_NAME" /etc/stackreflex
system chown "$USER_NAME:$USER_NAME" /var/lib/stackreflex /var/lib/stackreflex/backups

# --- the venv -------------------------------------------------------------------------------------
# the caller's PYTHONPATH (a checkout, another venv) must not make pip think stackreflex is there
unset PYTHONPATH PYTHONHOME PIP_TARGET PIP_PREFIX PIP_USER
[[ -x "$PREFIX/bin/python" ]] || "$PYTHON" -m venv "$PREFIX"
say "installing $SOURCE into $PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "${PIP_ARGS[@]}" "$SOURCE[postgresql]"
[[ -x "$PREFIX/bin/stackreflex" ]] || die "$PREFIX/bin/stackreflex was not installed: is $SOURCE stackreflex?"

# --- settings and identity files ------------------------------------------------------------------
[[ -z "$CLOUDS_YAML" ]] || put 0600 "$CLOUDS_YAML" "$ETC/clouds.yaml"
[[ -z "$SSH_KEY" ]] || put 0600 "$SSH_KEY" "$ETC/ssh_key"
[[ -z "$INVENTORY" ]] || put 0640 "$INVENTORY" "$ETC/inventory.yaml"
if [[ -n "$KNOWN_HOSTS" ]]; then
    put 0640 "$KNOWN_HOSTS" "$ETC/known_hosts"
elif [[ ! -e "$ETC/known_hosts" ]]; then
    put 0640 /dev/null "$ETC/known_hosts"
fi
if [[ -n "$ENV_FILE" ]]; then
    put 0600 "$ENV_FILE" "$ETC/env"
elif [[ ! -e "$ETC/env" ]]; then
    put 0600 "$HERE/env.example" "$ETC/env"
    say "edit /etc/stackreflex/env: it holds placeholders (CHANGE_ME)"
fi
if [[ -n "$CONFIG" ]]; then
    put 0640 "$CONFIG" "$ETC/config.toml"
elif [[ ! -e "$ETC/config.toml" ]]; then
    # the example, with the setting of each identity file not given commented out
    config=$(mktemp)
    trap 'rm -f "$config"' EXIT
    cp "$HERE/config.toml" "$config"
    [[ -e "$ETC/ssh_key" ]] || sed -i 's|^ssh_key_file|# ssh_key_file|' "$config"
    [[ -e "$ETC/inventory.yaml" ]] || sed -i 's|^inventory|# inventory|' "$config"
    put 0640 "$config" "$ETC/config.toml"
fi
[[ -e "$ETC/clouds.yaml" ]] || say "no clouds.yaml: give --clouds-yaml, or OS_* variables in /etc/stackreflex/env"

# --- units ----------------------------------------------------------------------------------------
install -m 0644 "$HERE/systemd/stackreflex-worker.service" "$HERE/systemd/stackreflex-watcher@.service" "$UNITS/"
port=9811
for stack in "${WATCH[@]}"; do
    printf '# the metrics port of the watcher of %s (on 127.0.0.1)\nMETRICS_PORT=%s\n' "$stack" "$port" \
        >"$ETC/watcher-$stack.env"
    chmod 0640 "$ETC/watcher-$stack.env"
    system chown "$USER_NAME:$USER_NAME" "/etc/stackreflex/watcher-$stack.env"
    port=$((port + 1))
done
units=(stackreflex-worker.service)
for stack in "${WATCH[@]}"; do units+=("stackreflex-watcher@$stack.service"); done
system systemctl daemon-reload
if [[ $START -eq 1 ]]; then
    system systemctl enable --now "${units[@]}"
else
    system systemctl enable "${units[@]}"
fi

say "installed under ${ROOT:-/}: $PREFIX/bin/stackreflex, $ETC/, units ${units[*]}"
[[ $START -eq 1 ]] || say "next: edit /etc/stackreflex/env, then: systemctl start ${units[*]}"
