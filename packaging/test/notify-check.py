#!/usr/bin/env python3
"""Checks the Type=notify contract of `postern start-fg` the way systemd
uses it, for packaging/test-packages.sh: runs it in ROOT (chroot) with
NOTIFY_SOCKET pointing at a datagram socket this script listens on, and
expects READY=1 once the services run, RELOADING=1 then READY=1 after
SIGHUP (systemctl reload), STOPPING=1 and exit status 0 after SIGTERM
(systemctl stop).

usage: notify-check.py ROOT
"""

import os
import signal
import socket
import subprocess
import sys
import time

ROOT = sys.argv[1]
INSIDE = "/run/postern-notify.sock"
OUTSIDE = ROOT + INSIDE


def expect(sock, want, deadline):
    sock.settimeout(max(0.1, deadline - time.time()))
    got = []
    while time.time() < deadline:
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg.split("\n"):
            print("notify: %s" % msg.strip().replace("\n", " "))
            return
    sys.exit("FAIL: expected %s from postern start-fg, got %r" % (want, got))


if os.path.exists(OUTSIDE):
    os.unlink(OUTSIDE)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(OUTSIDE)
os.chmod(OUTSIDE, 0o666)
env_in = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
          "NOTIFY_SOCKET=" + INSIDE]
proc = subprocess.Popen(["chroot", ROOT] + env_in + ["postern", "start-fg"])
try:
    expect(sock, "READY=1", time.time() + 30)
    proc.send_signal(signal.SIGHUP)
    expect(sock, "RELOADING=1", time.time() + 30)
    expect(sock, "READY=1", time.time() + 30)
    proc.send_signal(signal.SIGTERM)
    expect(sock, "STOPPING=1", time.time() + 30)
    rc = proc.wait(timeout=60)
    if rc != 0:
        sys.exit("FAIL: postern start-fg exited with %d after SIGTERM" % rc)
    print("notify: start-fg exited 0 after SIGTERM")
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    sock.close()
    os.unlink(OUTSIDE)
