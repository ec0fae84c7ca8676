#!/usr/bin/env python3
"""Tiny SMTP peer for capturing Postfix golden output.
mode tempfail: 450 to every RCPT; mode stall: accept TCP, never greet."""
import socket, sys, threading, time
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(50)
def serve(c):
    if mode == "stall":
        time.sleep(3600); return
    f = c.makefile("rwb")
    def w(t): f.write(t.encode() + b"\r\n"); f.flush()
    w("220 fake.test ESMTP")
    for line in f:
        cmd = line.decode("utf-8", "replace").strip().upper()
        if cmd.startswith("EHLO"): w("250-fake.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING")
        elif cmd.startswith("HELO"): w("250 fake.test")
        elif cmd.startswith("MAIL"): w("250 2.1.0 Ok")
        elif cmd.startswith("RCPT"): w("450 4.2.1 Mailbox busy, try again later")
        elif cmd.startswith("RSET"): w("250 2.0.0 Ok")
        elif cmd.startswith("QUIT"): w("221 2.0.0 Bye"); break
        else: w("502 5.5.2 Error: command not recognized")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
