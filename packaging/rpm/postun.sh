# %postun ($1 = 0 on erase, 1 on upgrade): what %systemd_postun_with_restart
# does: reload systemd, restart a running service after an upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart postern.service >/dev/null 2>&1 || :
    fi
elif [ "$1" -ge 1 ] && /usr/sbin/postern status >/dev/null 2>&1; then
    # No systemd (a container): restart a supervisor started by hand so
    # that it runs the new programs.
    /usr/sbin/postern stop && /usr/sbin/postern start || :
fi
if [ "$1" -eq 0 ]; then
    # The package cannot own its directories (cargo-generate-rpm); the
    # daemons' one is empty now. /etc/postern keeps *.rpmsave files.
    rmdir /usr/lib/postern 2>/dev/null || :
fi
exit 0
