# %preun ($1 = 0 on erase, 1 on upgrade): on erase, stop and disable the
# service (or a supervisor started by hand without systemd) and drop the
# sendmail alternative. The queue, postern's data and edited configuration
# stay, as with every RPM MTA.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now postern.service >/dev/null 2>&1 || :
    fi
    if /usr/sbin/postern status >/dev/null 2>&1; then
        /usr/sbin/postern stop || :
    fi
    /usr/sbin/alternatives --remove mta /usr/sbin/sendmail.postern || :
fi
exit 0
