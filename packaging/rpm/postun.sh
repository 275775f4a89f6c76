# %systemd_postun_with_restart flowctl.service, expanded: on upgrade, restart the new daemon.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart flowctl.service >/dev/null 2>&1 || :
    fi
fi
