#!/usr/bin/env python3
"""A fake smart host for packaging/test-packages.sh: accepts every message
on 127.0.0.1 (port 0 = any free port), writes each one to OUTDIR/<n>.eml
(envelope first, as X-Envelope-* lines) and the port it listens on to
PORTFILE. Plain SMTP only (no STARTTLS), which is what postern sends to a
relayhost when smtp_tls_security_level is may or none.

usage: smtp-sink.py PORTFILE OUTDIR
"""

import os
import socketserver
import sys


class Session(socketserver.StreamRequestHandler):
    count = 0

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 sink.test ESMTP fake smart host")
        sender, rcpts = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-sink.test\r\n250-8BITMIME\r\n250 SIZE 10240000")
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].split(" ")[0], []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].split(" ")[0])
                self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                body = []
                while True:
                    l = self.rfile.readline()
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    body.append(l[1:] if l.startswith(b"..") else l)
                Session.count += 1
                name = os.path.join(OUTDIR, "%d.eml" % Session.count)
                with open(name + ".tmp", "wb") as f:
                    f.write(b"X-Envelope-From: " + sender.encode() + b"\r\n")
                    for r in rcpts:
                        f.write(b"X-Envelope-To: " + r.encode() + b"\r\n")
                    f.writelines(body)
                os.rename(name + ".tmp", name)
                self.reply("250 2.0.0 Ok: queued as SINK%d" % Session.count)
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 2.0.0 Ok")
            else:
                self.reply("502 5.5.2 Error: command not recognized")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    PORTFILE, OUTDIR = sys.argv[1], sys.argv[2]
    with Server(("127.0.0.1", 0), Session) as srv:
        with open(PORTFILE + ".tmp", "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(PORTFILE + ".tmp", PORTFILE)
        srv.serve_forever()
