# %post ($1 = 1 on install, 2 on upgrade): the queue with the owners and
# modes `postern start` expects (the same as the .deb's postinst), the
# sendmail alternative as Fedora's MTAs register it, systemd.

param() {
    value=$(/usr/sbin/postconf -c /etc/postern -xh "$1" 2>/dev/null || true)
    if [ -n "$value" ]; then echo "$value"; else echo "$2"; fi
}
queue=$(param queue_directory /var/spool/postern)
data=$(param data_directory /var/lib/postern)
owner=$(param mail_owner postern)
if getent passwd "$owner" >/dev/null; then
    group=$(id -gn "$owner")
    install -d -o "$owner" -g "$group" -m 0755 "$queue"
    for d in incoming active deferred hold corrupt private spare; do
        install -d -o "$owner" -g "$group" -m 0700 "$queue/$d"
    done
    install -d -o "$owner" -g "$group" -m 1733 "$queue/maildrop"
    install -d -o "$owner" -g "$group" -m 0755 "$queue/public" "$queue/pid"
    install -d -o "$owner" -g "$group" -m 0700 "$data"
else
    echo "postern: mail_owner $owner does not exist; the queue was not created" >&2
fi

if [ ! -e /etc/aliases ]; then
    printf '%s\n' '# /etc/aliases: see man 5 postern-tables (ALIAS FORMAT); run newaliases after editing.' \
        'postmaster:    root' > /etc/aliases
    chmod 0644 /etc/aliases
fi

# /usr/sbin/sendmail, mailq, newaliases and /usr/lib/sendmail through the
# "mta" alternative, as Fedora's postfix, sendmail and exim register them.
# The links keep their names, so the one binary knows what it is to be.
/usr/sbin/alternatives --install /usr/sbin/sendmail mta /usr/sbin/sendmail.postern 30 \
    --slave /usr/bin/mailq mta-mailq /usr/sbin/sendmail.postern \
    --slave /usr/bin/newaliases mta-newaliases /usr/sbin/sendmail.postern \
    --slave /usr/lib/sendmail mta-sendmail /usr/sbin/sendmail.postern ||
    echo "postern: alternatives failed: /usr/sbin/sendmail is not postern's" >&2

# What %systemd_post does: a new install follows the preset policy.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset postern.service >/dev/null 2>&1 || :
fi
exit 0
