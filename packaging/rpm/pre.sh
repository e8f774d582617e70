# flowlogd %pre: the system user, before the files it owns are installed.
getent group flowlogd >/dev/null || groupadd --system flowlogd
getent passwd flowlogd >/dev/null ||
    useradd --system --gid flowlogd --home-dir /var/lib/flowlogd --no-create-home \
        --shell /sbin/nologin --comment "flowlogd flow log daemon" flowlogd
exit 0
