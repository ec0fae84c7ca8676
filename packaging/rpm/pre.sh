# %pre: the mail_owner account (as Fedora's postfix creates postfix).
getent group postern >/dev/null || groupadd -r postern
getent passwd postern >/dev/null || \
    useradd -r -g postern -d /var/spool/postern -s /sbin/nologin \
        -c "postern mail system" postern
exit 0
