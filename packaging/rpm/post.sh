# %systemd_post flowctl.service, expanded: apply the preset on first install, then start it
# (the .deb starts it too; an operator disables it with `systemctl disable --now flowctl`).
mkdir -p /etc/flowctl/pipelines
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload preset flowctl.service >/dev/null 2>&1 || :
        systemctl enable --now flowctl.service >/dev/null 2>&1 || :
    fi
fi
