# The service account, before the files it owns are unpacked.
if [ -x /usr/bin/systemd-sysusers ]; then
    printf 'u flowctl - "flowctl pipeline supervisor" /var/lib/flowctl /usr/sbin/nologin\n' \
        | systemd-sysusers --replace=/usr/lib/sysusers.d/flowctl.conf - || :
else
    getent group flowctl >/dev/null || groupadd -r flowctl
    getent passwd flowctl >/dev/null || useradd -r -g flowctl -d /var/lib/flowctl \
        -s /sbin/nologin -c "flowctl pipeline supervisor" flowctl
fi
