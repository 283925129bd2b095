#!/bin/sh
# Install smartmeter as a service on Raspberry Pi OS / Debian (Bookworm), idempotent: run it again to
# update. What it makes:
#   user     smartmeter (system user, groups dialout + gpio: the serial port and the relay pins)
#   /opt/smartmeter/venv          the program (pip install of this checkout, or --wheel FILE), with the
#                                 system site-packages visible: python3-lgpio comes from apt
#   /etc/smartmeter/smartmeter.ini   the config (from config.sample.ini, never overwritten), 0640
#   /var/lib/smartmeter/{csv,spool}  the data (CSV day files, InfluxDB spool, history.sqlite)
#   /etc/systemd/system/smartmeter.service   enabled and started (unless --root or --no-start)
#   /etc/logrotate.d/smartmeter   for /var/lib/smartmeter/smartmeter.log, the log of the cron way of running
#                                 it (the service logs to the journal, supervisor rotates its own)
#
# Usage: sudo tools/install.sh [--wheel FILE] [--pip-args "..."] [--no-start]
#        sudo tools/install.sh --uninstall [--purge]     (--purge also removes config, data and the user)
# For packaging and tests: --root DIR installs under DIR (like DESTDIR), --no-users skips useradd/chown.
set -eu

ROOT=""
USERS=yes
START=yes
UNINSTALL=""
PURGE=""
WHEEL=""
PIP_ARGS=""
PYTHON="${PYTHON:-python3}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
SVC_USER=smartmeter

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2%/}"; shift ;;
    --root=*) ROOT="${1#--root=}"; ROOT="${ROOT%/}" ;;
    --no-users) USERS="" ;;
    --no-start) START="" ;;
    --uninstall) UNINSTALL=yes ;;
    --purge) PURGE=yes ;;
    --wheel) WHEEL="$2"; shift ;;
    --pip-args) PIP_ARGS="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[ -n "$ROOT" ] && START=""
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root: sudo $0 $*" >&2
  exit 2
fi

OPT="$ROOT/opt/smartmeter"
ETC="$ROOT/etc/smartmeter"
VAR="$ROOT/var/lib/smartmeter"
UNIT="$ROOT/etc/systemd/system/smartmeter.service"
LOGROTATE="$ROOT/etc/logrotate.d/smartmeter"
SUPERVISOR="$ROOT/etc/supervisor/conf.d/smartmeter.conf"
# Users and groups go into $ROOT/etc/{passwd,group,shadow,gshadow} with --root (shadow's --prefix).
PFX=""
[ -n "$ROOT" ] && PFX="--prefix $ROOT"
user_exists() { grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null || { [ -z "$ROOT" ] && id "$1" >/dev/null 2>&1; }; }
group_exists() { grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null || { [ -z "$ROOT" ] && getent group "$1" >/dev/null; }; }
owner() { awk -F: -v u="$SVC_USER" '$1 == u { print $3 ":" $4 }' "$ROOT/etc/passwd"; }
have_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
say() { echo "install.sh: $*"; }

if [ -n "$UNINSTALL" ]; then
  if have_systemd; then
    systemctl disable --now smartmeter.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$LOGROTATE"
  have_systemd && systemctl daemon-reload || true
  rm -rf "$OPT"
  say "removed the service and $OPT"
  if [ -n "$PURGE" ]; then
    rm -rf "$ETC" "$VAR"
    if [ -n "$USERS" ] && user_exists "$SVC_USER"; then
      # shellcheck disable=SC2086
      userdel $PFX "$SVC_USER" || true
      # shellcheck disable=SC2086
      if group_exists "$SVC_USER"; then groupdel $PFX "$SVC_USER" || true; fi
    fi
    say "purged $ETC, $VAR and the $SVC_USER user"
  else
    say "kept the config $ETC and the data $VAR (--purge removes them)"
  fi
  exit 0
fi

# 1. the user and its groups
if [ -n "$USERS" ]; then
  if ! user_exists "$SVC_USER"; then
    # shellcheck disable=SC2086
    useradd $PFX --system --user-group --home-dir /var/lib/smartmeter --no-create-home \
      --shell /usr/sbin/nologin --comment "smartmeter appliance" "$SVC_USER"
    say "created user $SVC_USER"
  fi
  for g in dialout gpio; do
    # shellcheck disable=SC2086
    if group_exists "$g"; then usermod $PFX -aG "$g" "$SVC_USER"; else say "no group $g on this system (not a Pi?)"; fi
  done
fi

# 2. directories
install -d -m 0755 "$OPT" "$ROOT/etc/systemd/system"
install -d -m 0750 "$ETC" "$VAR" "$VAR/csv" "$VAR/spool"
if [ -n "$USERS" ]; then
  chown "$(owner)" "$VAR" "$VAR/csv" "$VAR/spool"
  chown "0:$(owner | cut -d: -f2)" "$ETC"
fi

# 3. the program, in its own venv (system site-packages: python3-lgpio from apt for the relay pins)
if [ ! -x "$OPT/venv/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$OPT/venv"
  say "created $OPT/venv"
fi
# shellcheck disable=SC2086
"$OPT/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade $PIP_ARGS "${WHEEL:-$SRC}"
say "installed $("$OPT/venv/bin/smartmeter" --version)"

# 4. the config: never overwritten (an update keeps yours); secrets inside, so not world-readable
if [ ! -e "$ETC/smartmeter.ini" ]; then
  cp "$SRC/config.sample.ini" "$ETC/smartmeter.ini"
  chmod 0640 "$ETC/smartmeter.ini"
  [ -n "$USERS" ] && chown "0:$(owner | cut -d: -f2)" "$ETC/smartmeter.ini"
  say "wrote $ETC/smartmeter.ini from config.sample.ini: edit it, then sudo systemctl restart smartmeter"
fi

# 5. the unit (supervisor/smartmeter.service is written for exactly these paths)
install -m 0644 "$SRC/supervisor/smartmeter.service" "$UNIT"
if [ -d "$ROOT/etc/supervisor/conf.d" ]; then
  say "supervisor is installed too: use only one of them (the systemd unit is enabled; $SUPERVISOR is not written)"
fi
if have_systemd; then
  systemctl daemon-reload
  systemctl enable smartmeter.service >/dev/null
  if [ -n "$START" ]; then
    systemctl restart smartmeter.service
    say "started: journalctl -u smartmeter -f"
  fi
else
  say "unit written to $UNIT (not enabled: no systemd here or --root)"
fi
# 6. logrotate for the log file of a cron @reboot line (README: other ways to run it)
install -d -m 0755 "$ROOT/etc/logrotate.d"
cat > "$LOGROTATE.tmp" <<ROTATE
/var/lib/smartmeter/smartmeter.log {
    su $SVC_USER $SVC_USER
    weekly
    rotate 4
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}
ROTATE
chmod 0644 "$LOGROTATE.tmp" && mv "$LOGROTATE.tmp" "$LOGROTATE"

say "check the config with: sudo -u $SVC_USER $OPT/venv/bin/smartmeter -c /etc/smartmeter/smartmeter.ini --check-config"
