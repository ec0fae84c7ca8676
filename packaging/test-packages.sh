#!/usr/bin/env bash
# The package test: builds the .deb and the .rpm with the README's commands,
# checks their metadata, runs lintian and rpmlint, then installs each one
# into a scratch Debian 12 root made with debootstrap (never onto this
# host) and checks what an admin relies on:
#
#  .deb  apt-get install ./postern_*.deb replaces the distribution's MTA
#        (exim4), creates the postern user and the queue with the owners and
#        modes `postern start` expects, installs the conffiles, the systemd
#        unit (enabled; systemd-analyze verify clean) and the man pages
#        (man postern, man 5 postern.cf, man sendmail ...); postern starts
#        under the unit's CapabilityBoundingSet and NoNewPrivileges;
#        /usr/sbin/sendmail run by an unprivileged user delivers to a fake
#        smart host; postern start-fg speaks sd_notify (READY, RELOADING,
#        STOPPING) as Type=notify expects; an upgrade keeps the queue and an edited main.cf and
#        restarts a running postern; remove stops postern and keeps the
#        queue and the configuration; purge deletes them and leaves nothing
#        else behind.
#  .rpm  rpm -qlp / --scripts / --provides, rpmlint (no errors), then
#        rpm --root into a second scratch root: scriptlets, the "mta"
#        alternative for sendmail/mailq/newaliases, delivery, rpm -V, and
#        rpm -e keeping the queue and the edited configuration (.rpmsave).
#
# Needs root (chroot, mounts), cargo-deb, cargo-generate-rpm, lintian, rpm,
# rpmlint, debootstrap, python3 and a reachable Debian mirror the first time
# (the bootstrapped root is cached as a tarball for later runs).
#
# Environment:
#   POSTERN_PKGTEST_CACHE   cache directory (default /var/cache/postern-pkgtest)
#   POSTERN_PKGTEST_MIRROR  Debian mirror (default: the one apt uses)
#   POSTERN_PKGTEST_NO_BUILD=1  package the binaries already in target/release
#   POSTERN_PKGTEST_KEEP=1  keep the scratch directory for inspection
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$PWD
START=$(date +%s)
CACHE=${POSTERN_PKGTEST_CACHE:-/var/cache/postern-pkgtest}
SUITE=bookworm
# The distribution MTA to be replaced (exim4, Debian's default), what the
# checks run (man-db, systemd for systemd-analyze; systemd is not started)
# and postern's dependencies, so that installs need no network.
INCLUDE=adduser,libssl3,libsqlite3-0,ca-certificates,exim4-daemon-light,man-db,systemd
WORK=""
SINK_PID=""
ROOTS=()

step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
pass() { printf 'ok: %s\n' "$*"; }

# ---------------------------------------------------------------------------
# Scratch roots: processes, mounts, cleanup.

# Runs a command inside root $1 with a clean environment.
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# Pids of the processes whose root directory is $1 (the daemons this test
# started there).
procs_in_root() {
    local root=$1 p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$root" ] && echo "${p#/proc/}"
    done
    return 0
}

kill_root_procs() {
    local root=$1 pids
    pids=$(procs_in_root "$root")
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    sleep 1
    pids=$(procs_in_root "$root")
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    return 0
}

umount_root() {
    local root=$1 m
    for m in dev/pts proc; do
        if mountpoint -q "$root/$m"; then
            umount "$root/$m" || umount -l "$root/$m" || true
        fi
    done
}

cleanup() {
    local rc=$? root
    set +e
    for root in "${ROOTS[@]}"; do
        kill_root_procs "$root"
        umount_root "$root"
    done
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if grep -q " $WORK/" /proc/mounts; then
            echo "not removing $WORK: something is still mounted there" >&2
        elif [ "${POSTERN_PKGTEST_KEEP:-}" = 1 ]; then
            echo "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    echo "package test took $(($(date +%s) - START))s"
    [ "$rc" = 0 ] && echo "PASS: packaging/test-packages.sh" || echo "FAILED (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Debian mirror apt uses here (for debootstrap).
mirror() {
    if [ -n "${POSTERN_PKGTEST_MIRROR:-}" ]; then
        echo "$POSTERN_PKGTEST_MIRROR"
        return
    fi
    local m
    m=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(COMPONENT)' 2>/dev/null |
        awk -v s="$SUITE" '$2 == s && $3 == "main" { print $1; exit }')
    echo "${m:-http://deb.debian.org/debian/}"
}

# A fresh Debian root in $1, from the cached tarball (made on first use).
make_root() {
    local root=$1 key tarball
    key=$(printf '%s %s %s' "$SUITE" minbase "$INCLUDE" | sha256sum | cut -c1-12)
    tarball="$CACHE/$SUITE-minbase-$key.tar.gz"
    if [ ! -s "$tarball" ]; then
        step "debootstrap $SUITE (cached in $tarball for later runs)"
        mkdir -p "$CACHE"
        local boot="$WORK/bootstrap"
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$boot" "$(mirror)" \
            >"$WORK/debootstrap.log" 2>&1 || {
            tail -20 "$WORK/debootstrap.log"
            fail "debootstrap failed (log above)"
        }
        tar --numeric-owner -C "$boot" -czf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$boot"
    fi
    mkdir -p "$root"
    tar --numeric-owner -C "$root" -xzf "$tarball"
    ROOTS+=("$root")
    mount -t proc proc "$root/proc"
    # apt wants a pty for its log; not fatal without one.
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts" 2>/dev/null || true
    # The loopback smart host is on this host's network, which the root shares.
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # The unprivileged user who submits mail.
    in_root "$root" useradd -m alice
}

# ---------------------------------------------------------------------------
# The fake smart host.

start_sink() {
    rm -rf "$WORK/sink"
    mkdir -p "$WORK/sink/mail"
    python3 "$SRC/packaging/test/smtp-sink.py" "$WORK/sink/port" "$WORK/sink/mail" \
        >"$WORK/sink/log" 2>&1 &
    SINK_PID=$!
    wait_for 10 "the fake smart host to listen" test -s "$WORK/sink/port"
    SINK_PORT=$(cat "$WORK/sink/port")
}

stop_sink() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

# wait_for SECONDS WHAT COMMAND...: polls until COMMAND succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local until=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$until" ] && fail "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# The sink received a message containing $1.
sink_has() { grep -rqs -- "$1" "$WORK/sink/mail"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------
# Checks shared by the .deb and the .rpm roots.

# check_mode ROOT PATH MODE OWNER GROUP
check_mode() {
    local got
    got=$(stat -c '%a %U %G' "$1$2" 2>/dev/null) || fail "$2 is missing"
    # stat's %U/%G resolve with this host's passwd; compare numerically.
    local uid gid
    uid=$(in_root "$1" id -u "$4")
    gid=$(in_root "$1" getent group "$5" | cut -d: -f3)
    got=$(stat -c '%a %u %g' "$1$2")
    [ "$got" = "$3 $uid $gid" ] || fail "$2: mode/owner $got, expected $3 $4($uid) $5($gid)"
}

check_queue() {
    local root=$1 d
    check_mode "$root" /var/spool/postern 755 postern postern
    for d in incoming active deferred hold corrupt private spare; do
        check_mode "$root" "/var/spool/postern/$d" 700 postern postern
    done
    check_mode "$root" /var/spool/postern/maildrop 1733 postern postern
    check_mode "$root" /var/spool/postern/public 755 postern postern
    check_mode "$root" /var/spool/postern/pid 755 postern postern
    check_mode "$root" /var/lib/postern 700 postern postern
    check_mode "$root" /etc/postern/main.cf 644 root root
    check_mode "$root" /etc/postern/master.cf 644 root root
    pass "queue, data directory and configuration have the expected owners and modes"
}

check_account() {
    local root=$1 entry
    entry=$(in_root "$root" getent passwd postern) || fail "no postern user"
    case "$entry" in
        postern:*:/var/spool/postern:*nologin) ;;
        *) fail "postern account: $entry" ;;
    esac
    in_root "$root" getent group postern >/dev/null || fail "no postern group"
    [ "$(in_root "$root" id -u postern)" -lt 1000 ] || fail "postern is not a system account"
    pass "system account: $entry"
}

# Configures postern in ROOT for the fake smart host; smtpd on a free
# loopback port (this host's port 25 is not ours).
configure_postern() {
    local root=$1 smtpd_port
    smtpd_port=$(free_port)
    in_root "$root" postconf -e "relayhost = [127.0.0.1]:$SINK_PORT" \
        'maillog_file = /var/log/postern.log' 'myhostname = pkgtest.example.com' \
        'inet_interfaces = loopback-only' 'minimal_backoff_time = 2s' \
        'maximal_backoff_time = 4s' 'queue_run_delay = 2s'
    sed -i "s/^smtp      inet/127.0.0.1:$smtpd_port inet/" "$root/etc/postern/master.cf"
    grep -q "^127.0.0.1:$smtpd_port inet" "$root/etc/postern/master.cf" ||
        fail "could not move smtpd to port $smtpd_port in master.cf"
    in_root "$root" postconf -h relayhost | grep -qx "\[127.0.0.1\]:$SINK_PORT" ||
        fail "postconf -e did not set relayhost"
    in_root "$root" postern check >"$WORK/check.out" 2>&1 || {
        cat "$WORK/check.out"
        fail "postern check refuses the test configuration"
    }
}

# Starts postern as the systemd unit would confine it: its
# CapabilityBoundingSet and NoNewPrivileges (the rest of the sandbox needs
# systemd as PID 1, which neither this host nor CI has).
start_postern() {
    local root=$1 unit="$1/usr/lib/systemd/system/postern.service" caps
    caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr ' ' '\n' |
        sed -n 's/^CAP_\(.*\)$/+\L\1/p' | paste -sd, -)
    [ -n "$caps" ] || fail "no CapabilityBoundingSet in the unit"
    grep -qx 'NoNewPrivileges=yes' "$unit" || fail "the unit lacks NoNewPrivileges=yes"
    in_root "$root" setpriv --bounding-set="-all,$caps" --no-new-privs postern start ||
        fail "postern start failed with bounding set $caps"
    wait_for 20 "postern status" in_root "$root" postern status
}

running_in_root() { [ -n "$(procs_in_root "$1")" ]; }

# Sends a message as the unprivileged user alice with /usr/sbin/sendmail -t;
# prints its token.
send_as_alice() {
    local root=$1 token
    token="pkgtest-$RANDOM$RANDOM"
    in_root "$root" su -s /bin/sh alice -c \
        "printf 'To: bob@example.com\nSubject: $token\n\nsent by alice\n' | /usr/sbin/sendmail -t" ||
        fail "sendmail -t as alice failed"
    echo "$token"
}

check_delivery() {
    local root=$1 token
    token=$(send_as_alice "$root")
    wait_for 30 "the fake smart host to receive $token" sink_has "$token"
    local f
    f=$(grep -rls -- "$token" "$WORK/sink/mail")
    grep -q '^X-Envelope-From: <alice@pkgtest.example.com>' "$f" ||
        fail "unexpected envelope sender: $(head -1 "$f")"
    grep -q '^X-Envelope-To: <bob@example.com>' "$f" || fail "unexpected envelope recipient"
    grep -q "status=sent" "$root/var/log/postern.log" || fail "no status=sent in the mail log"
    # (mailq as root: an ordinary user cannot read the queue index, mode
    # 0600, so postern's mailq works for root and mail_owner only.)
    wait_for 10 "an empty queue" sh -c "chroot '$root' /usr/bin/mailq | grep -q 'Mail queue is empty'"
    # Local submission: others cannot list maildrop/.
    if in_root "$root" su -s /bin/sh alice -c 'ls /var/spool/postern/maildrop' >/dev/null 2>&1; then
        fail "an ordinary user can list maildrop/"
    fi
    pass "alice's sendmail -t reached the fake smart host (envelope alice@pkgtest.example.com -> bob@example.com)"
}

# Everything below / except virtual and package-manager state, for the
# leftovers check.
snapshot() {
    (cd "$1" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./run \
        -o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg \
        -o -path ./var/log/apt -o -path ./var/lib/rpm \) -prune -o -print | sort)
}

# ---------------------------------------------------------------------------
step "requirements"
[ "$(id -u)" = 0 ] || fail "run as root (chroot, mounts)"
for tool in cargo lintian rpm rpmlint debootstrap python3 dpkg-deb readelf chroot setpriv; do
    command -v "$tool" >/dev/null || fail "$tool is missing (.ci/run installs it)"
done
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is missing: cargo install --locked cargo-deb@3.8.0"
cargo generate-rpm --version >/dev/null 2>&1 ||
    fail "cargo-generate-rpm is missing: cargo install --locked cargo-generate-rpm@0.21.1"
WORK=$(mktemp -d /tmp/postern-pkgtest.XXXXXX)
chmod 755 "$WORK"
pass "tools present; scratch directory $WORK"

# ---------------------------------------------------------------------------
step "build the packages (the README's commands)"
if [ "${POSTERN_PKGTEST_NO_BUILD:-}" = 1 ]; then
    DEB=$(cargo deb -p postern --no-build | tail -1)
else
    DEB=$(cargo deb -p postern | tail -1)
    cargo build --release --workspace --bins
fi
cargo generate-rpm -p postern
VERSION=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "postern"))')
RPM="target/generate-rpm/postern-$VERSION-1.x86_64.rpm"
[ -f "$DEB" ] || fail "cargo deb made no package ($DEB)"
[ -f "$RPM" ] || fail "cargo generate-rpm made no $RPM"
ls -l "$DEB" "$RPM"
pass "built $DEB and $RPM"

# ---------------------------------------------------------------------------
step "the .deb: control fields, files, lintian"
dpkg-deb -I "$DEB" >"$WORK/deb-info"
dpkg-deb -c "$DEB" >"$WORK/deb-contents"
for field in Provides Conflicts Replaces; do
    dpkg-deb -f "$DEB" "$field" | grep -qw mail-transport-agent ||
        fail "$field does not name mail-transport-agent"
done
dpkg-deb -f "$DEB" Depends | grep -q adduser || fail "Depends lacks adduser"
echo "Installed-Size: $(dpkg-deb -f "$DEB" Installed-Size) KiB"
mkdir "$WORK/deb-control"
dpkg-deb -e "$DEB" "$WORK/deb-control"
printf '/etc/postern/main.cf\n/etc/postern/master.cf\n' | cmp -s - <(sort "$WORK/deb-control/conffiles") ||
    fail "conffiles: $(cat "$WORK/deb-control/conffiles")"
for path in ./usr/sbin/postern ./usr/sbin/sendmail ./usr/lib/postern/smtpd ./usr/lib/postern/qmgr \
    ./usr/lib/postern/smtp ./usr/lib/postern/pickup ./usr/lib/systemd/system/postern.service \
    ./usr/share/man/man8/postern.8.gz ./usr/share/man/man5/postern.cf.5.gz \
    ./usr/share/man/man1/sendmail.1.gz ./usr/share/lintian/overrides/postern; do
    grep -q " $path\$" "$WORK/deb-contents" || fail "the .deb lacks $path"
done
for link in usr/sbin/postqueue usr/sbin/postsuper usr/sbin/postconf usr/sbin/postcat \
    usr/sbin/postmap usr/sbin/postalias usr/bin/mailq usr/bin/newaliases usr/lib/sendmail; do
    grep -q " ./$link -> " "$WORK/deb-contents" || fail "the .deb lacks the link $link"
done
mkdir "$WORK/deb-data"
dpkg-deb -x "$DEB" "$WORK/deb-data"
for bin in usr/sbin/postern usr/sbin/sendmail usr/lib/postern/smtpd usr/lib/postern/qmgr \
    usr/lib/postern/smtp usr/lib/postern/pickup; do
    if readelf -S "$WORK/deb-data/$bin" | grep -qE '\.symtab|\.debug_'; then
        fail "$bin is not stripped"
    fi
done
pass "control fields, conffiles, files and links; binaries stripped"
# Overridden tags print as O: (with the comment from
# packaging/lintian-overrides); any E: or W: left fails the test.
lintian --pedantic --show-overrides "$DEB" 2>&1 | tee "$WORK/lintian.out" ||
    fail "lintian did not run"
grep -qE '^(E|W): ' "$WORK/lintian.out" &&
    fail "lintian reports errors or warnings that are not overridden (above)"
pass "lintian: no errors, no warnings that are not overridden"

# ---------------------------------------------------------------------------
step "the .rpm: rpm -qip, -qlvp, --scripts, --provides, --requires, rpmlint"
rpm -qip "$RPM"
rpm -qlvp "$RPM" >"$WORK/rpm-files"
cat "$WORK/rpm-files"
rpm -qp --provides "$RPM" | tee "$WORK/rpm-provides"
for p in MTA smtpdaemon 'server(smtp)' /usr/sbin/sendmail; do
    grep -qxF "$p" "$WORK/rpm-provides" || fail "the .rpm does not provide $p"
done
rpm -qp --requires "$RPM"
rpm -qp --scripts "$RPM" >"$WORK/rpm-scripts"
for s in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$s scriptlet" "$WORK/rpm-scripts" || fail "the .rpm has no $s scriptlet"
done
grep -q 'alternatives' "$WORK/rpm-scripts" || fail "the scriptlets do not register the mta alternative"
[ "$(rpm -qcp "$RPM" | sort | paste -sd' ')" = "/etc/postern/main.cf /etc/postern/master.cf" ] ||
    fail "config files: $(rpm -qcp "$RPM")"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" | grep -q '^cn /etc/postern/main.cf$' ||
    fail "main.cf is not %config(noreplace)"
rpmlint -r packaging/postern.rpmlintrc "$RPM" | tee "$WORK/rpmlint.out" ||
    fail "rpmlint reports errors (above)"
grep -qE '[1-9][0-9]* errors' "$WORK/rpmlint.out" && fail "rpmlint reports errors"
pass "rpm metadata, scriptlets, config files; rpmlint: no errors"

# ---------------------------------------------------------------------------
step "the .deb in a Debian 12 root: apt-get install ./$(basename "$DEB")"
start_sink
R="$WORK/deb-root"
make_root "$R"
mkdir -p "$R/tmp/pkg"
cp "$DEB" "$R/tmp/pkg/"
chmod -R a+rX "$R/tmp/pkg"
DEBNAME=$(basename "$DEB")
snapshot "$R" >"$WORK/before.list"
in_root "$R" dpkg-query -W -f='${Status}' exim4-daemon-light | grep -q 'install ok installed' ||
    fail "the root has no exim4 to replace"
in_root "$R" apt-get install -y "/tmp/pkg/$DEBNAME" >"$WORK/apt-install.log" 2>&1 || {
    cat "$WORK/apt-install.log"
    fail "apt-get install ./$DEBNAME failed"
}
grep -A2 'will be REMOVED' "$WORK/apt-install.log" || true
in_root "$R" dpkg-query -W -f='${Status}' exim4-daemon-light | grep -q 'install ok installed' &&
    fail "exim4-daemon-light is still installed"
in_root "$R" dpkg-query -S /usr/sbin/sendmail | grep -q '^postern:' || fail "/usr/sbin/sendmail is not postern's"
pass "postern replaced exim4-daemon-light (mail-transport-agent) and owns /usr/sbin/sendmail"
check_account "$R"
check_queue "$R"
in_root "$R" dpkg-query -W -f='${Conffiles}\n' postern | grep -q '/etc/postern/main.cf' ||
    fail "main.cf is not a conffile"
[ -L "$R/etc/systemd/system/multi-user.target.wants/postern.service" ] ||
    fail "the unit was not enabled"
pass "conffiles registered; postern.service enabled (deb-systemd-helper)"

for page in postern '5 postern.cf' '5 postern-master.cf' '5 postern-tables' sendmail mailq newaliases \
    postqueue postsuper postconf postcat postmap postalias '8 smtpd' '8 qmgr' '8 smtp' '8 pickup'; do
    # shellcheck disable=SC2086
    in_root "$R" man -w $page >/dev/null 2>&1 || fail "man $page: no page"
    # shellcheck disable=SC2086
    in_root "$R" env MANWIDTH=80 man $page 2>"$WORK/man.err" | grep -q . || fail "man $page shows nothing"
    [ -s "$WORK/man.err" ] && fail "man $page: $(cat "$WORK/man.err")"
done
in_root "$R" env MANWIDTH=80 man postern | grep -q 'MICROSOFT 365' || fail "man postern lacks MICROSOFT 365"
pass "man pages: postern(8), postern.cf(5), sendmail(1) and the rest render"

in_root "$R" systemd-analyze verify /usr/lib/systemd/system/postern.service >"$WORK/verify.out" 2>&1 || {
    cat "$WORK/verify.out"
    fail "systemd-analyze verify failed"
}
[ -s "$WORK/verify.out" ] && {
    cat "$WORK/verify.out"
    fail "systemd-analyze verify printed warnings"
}
pass "systemd-analyze verify postern.service: clean"

# postern check also compares the queue's owners and modes with what the
# code creates, so a warning here means postinst and the code disagree.
in_root "$R" postern check >"$WORK/check.out" 2>&1 || {
    cat "$WORK/check.out"
    fail "postern check refuses the shipped configuration"
}
grep -qi warning "$WORK/check.out" && {
    cat "$WORK/check.out"
    fail "postern check warns about the fresh install"
}
pass "postern check accepts the fresh install without a warning: $(cat "$WORK/check.out")"

step "the .deb: postern start, sendmail as an unprivileged user, delivery"
configure_postern "$R"
# A wrong mode is fixed by postern start (with the unit's capabilities).
chmod 0700 "$R/var/spool/postern/maildrop"
start_postern "$R"
check_mode "$R" /var/spool/postern/maildrop 1733 postern postern
check_delivery "$R"

step "the .deb: Type=notify: postern start-fg reports READY, RELOADING, STOPPING"
in_root "$R" postern stop >/dev/null
wait_for 20 "postern to stop" sh -c "! chroot '$R' postern status"
python3 "$SRC/packaging/test/notify-check.py" "$R" || fail "the sd_notify protocol check failed"
running_in_root "$R" && fail "postern start-fg left processes behind after SIGTERM"
pass "postern start-fg speaks sd_notify as the unit's Type=notify expects"

step "the .deb: upgrade keeps the queue and main.cf, restarts postern"
TOKEN=$(send_as_alice "$R")
[ "$(find "$R/var/spool/postern/maildrop" -type f | wc -l)" = 1 ] ||
    fail "the stopped system did not keep the message in maildrop/"
# The upgrade: the same package with a higher version.
mkdir "$WORK/upgrade"
dpkg-deb -R "$DEB" "$WORK/upgrade/pkg"
OLDVER=$(dpkg-deb -f "$DEB" Version)
NEWVER="$OLDVER+pkgtest1"
sed -i "s/^Version: .*/Version: $NEWVER/" "$WORK/upgrade/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -b "$WORK/upgrade/pkg" "$R/tmp/pkg/upgrade.deb" >/dev/null
chmod a+r "$R/tmp/pkg/upgrade.deb"
in_root "$R" dpkg -i /tmp/pkg/upgrade.deb >"$WORK/upgrade.log" 2>&1 || {
    cat "$WORK/upgrade.log"
    fail "upgrade failed"
}
[ "$(in_root "$R" dpkg-query -W -f='${Version}' postern)" = "$NEWVER" ] || fail "the upgrade did not happen"
grep -q "^relayhost = \[127.0.0.1\]:$SINK_PORT" "$R/etc/postern/main.cf" ||
    fail "the upgrade replaced the edited main.cf"
[ "$(find "$R/var/spool/postern/maildrop" -type f | wc -l)" = 1 ] || fail "the upgrade lost the queued message"
check_queue "$R"
pass "upgrade $OLDVER -> $NEWVER kept the queued message and the edited main.cf"
start_postern "$R"
wait_for 30 "the message queued before the upgrade" sink_has "$TOKEN"
pass "the message queued before the upgrade was delivered"
OLDPID=$(cat "$R/var/spool/postern/pid/master.pid")
in_root "$R" dpkg -i /tmp/pkg/upgrade.deb >"$WORK/reinstall.log" 2>&1 || {
    cat "$WORK/reinstall.log"
    fail "reinstall failed"
}
wait_for 20 "postern to run again after the reinstall" in_root "$R" postern status
NEWPID=$(cat "$R/var/spool/postern/pid/master.pid")
[ "$OLDPID" != "$NEWPID" ] || fail "the upgrade did not restart the running postern"
pass "an upgrade of a running postern (no systemd) restarted it (pid $OLDPID -> $NEWPID)"

step "the .deb: remove stops postern, keeps the queue and the configuration"
stop_sink
TOKEN=$(send_as_alice "$R")
wait_for 30 "the message to be deferred" sh -c "ls '$R/var/spool/postern/deferred' | grep -q ."
in_root "$R" apt-get remove -y postern >"$WORK/remove.log" 2>&1 || {
    cat "$WORK/remove.log"
    fail "apt-get remove postern failed"
}
running_in_root "$R" && fail "postern still runs after remove: $(procs_in_root "$R" | paste -sd' ')"
[ "$(in_root "$R" dpkg-query -W -f='${Status}' postern)" = "deinstall ok config-files" ] ||
    fail "postern is not in config-files state"
[ -e "$R/usr/sbin/sendmail" ] && fail "/usr/sbin/sendmail is left after remove"
[ -f "$R/etc/postern/main.cf" ] || fail "remove deleted main.cf"
ls "$R/var/spool/postern/deferred" | grep -q . || fail "remove deleted the queued message"
pass "remove: postern stopped, binaries gone; main.cf and the deferred message kept"

step "the .deb: purge deletes the configuration, the queue and the data"
in_root "$R" dpkg --purge postern >"$WORK/purge.log" 2>&1 || {
    cat "$WORK/purge.log"
    fail "dpkg --purge postern failed"
}
for gone in /etc/postern /var/spool/postern /var/lib/postern /usr/lib/postern \
    /usr/lib/systemd/system/postern.service /etc/systemd/system/multi-user.target.wants/postern.service; do
    [ -e "$R$gone" ] && fail "$gone is left after purge"
done
snapshot "$R" >"$WORK/after.list"
comm -13 "$WORK/before.list" "$WORK/after.list" >"$WORK/left.list"
echo "left after purge (paths that were not there before the install):"
sed 's/^/  /' "$WORK/left.list"
# The mail log is the admin's (maillog_file was set by this test); the
# account stays, as with Debian's other MTAs (in /etc/passwd, not a path).
grep -vxE '\./var/log/postern\.log' "$WORK/left.list" | grep -q . &&
    fail "purge left unexpected files (above)"
in_root "$R" getent passwd postern >/dev/null && echo "  (the postern account stays, as Debian's MTAs leave theirs)"
pass "purge: /etc/postern, the queue and /var/lib/postern are gone"
kill_root_procs "$R"
umount_root "$R"

# ---------------------------------------------------------------------------
step "the .rpm: rpm --root into a second scratch root"
start_sink
R2="$WORK/rpm-root"
make_root "$R2"
# An RPM system without an MTA yet: take exim4 out of the way.
in_root "$R2" dpkg --purge exim4-daemon-light exim4-base exim4-config >/dev/null 2>&1 ||
    in_root "$R2" dpkg --purge --force-depends exim4-daemon-light exim4-base exim4-config >/dev/null
[ -e "$R2/usr/sbin/sendmail" ] && fail "could not clear /usr/sbin/sendmail in the RPM root"
# The scriptlets call Fedora's /usr/sbin/alternatives; Debian's
# update-alternatives takes the same --install/--slave/--remove arguments
# and stands in for it here.
ln -s /usr/bin/update-alternatives "$R2/usr/sbin/alternatives"
RPMFLAGS=(--root "$R2" --nodeps)
rpm --help 2>/dev/null | grep -q -- --force-debian && RPMFLAGS+=(--force-debian)
rpm --root "$R2" --initdb
rpm "${RPMFLAGS[@]}" -ivh "$RPM" >"$WORK/rpm-install.log" 2>&1 || {
    cat "$WORK/rpm-install.log"
    fail "rpm -i failed"
}
cat "$WORK/rpm-install.log"
check_account "$R2"
check_queue "$R2"
for l in /usr/sbin/sendmail /usr/bin/mailq /usr/bin/newaliases /usr/lib/sendmail; do
    [ "$(in_root "$R2" readlink -f "$l")" = /usr/sbin/sendmail.postern ] ||
        fail "$l is not the postern alternative: $(in_root "$R2" readlink -f "$l")"
done
pass "the mta alternative: /usr/sbin/sendmail, mailq, newaliases, /usr/lib/sendmail -> sendmail.postern"
rpm --root "$R2" -V --nodeps postern || fail "rpm -V postern reports changes right after the install"
configure_postern "$R2"
start_postern "$R2"
check_delivery "$R2"
in_root "$R2" postqueue -p | grep -q 'Mail queue is empty' || fail "postqueue (wrapper) does not work"
in_root "$R2" newaliases || fail "newaliases (alternative link) failed"
rpm "${RPMFLAGS[@]}" -e postern >"$WORK/rpm-erase.log" 2>&1 || {
    cat "$WORK/rpm-erase.log"
    fail "rpm -e failed"
}
cat "$WORK/rpm-erase.log"
running_in_root "$R2" && fail "postern still runs after rpm -e"
[ -e "$R2/usr/sbin/sendmail" ] && fail "the mta alternative is left after rpm -e"
[ -d "$R2/var/spool/postern/maildrop" ] || fail "rpm -e deleted the queue"
[ -f "$R2/etc/postern/main.cf.rpmsave" ] || fail "rpm -e did not keep the edited main.cf as main.cf.rpmsave"
pass "rpm -e: postern stopped, alternative removed; the queue and main.cf.rpmsave kept"
stop_sink
