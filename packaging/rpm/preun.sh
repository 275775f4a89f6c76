# %systemd_preun flowctl.service, expanded: on the last erase, stop and disable.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now flowctl.service >/dev/null 2>&1 || :
    systemctl stop 'flowctl@*.service' >/dev/null 2>&1 || :
fi
