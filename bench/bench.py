#!/usr/bin/env python3
"""postern against Postfix 3.7 on this machine: every workload of issue 7.

Run it through bench/run (which installs what it needs and builds postern).
Both MTAs run side by side in the same run, configured alike: separate
instances under one work directory on the same file system (Postfix with its
own configuration and queue directories, `postfix -c DIR`; /etc/postfix and
the system's Postfix are not touched), relaying to the same local smtp-sink
through [127.0.0.1]:port as smart host, fsync on (both fsync every accepted
message before acknowledging it, neither can turn that off; postern also
fsyncs the queue directory, Postfix does not), the same
destination concurrency (initial 5, limit 20), delays logged to the
millisecond. Every workload runs RUNS times per MTA, alternating which MTA
goes first, and prints the median, min-max and the postern/Postfix ratio.

Workloads (--only takes a comma-separated list of these names):

  relay      smtp-source -> MTA smtpd -> MTA smtp client -> smtp-sink, one
             message per connection, for every message size x sessions x TLS
             combination: end-to-end messages/s (all N delivered), accept
             rate, p50/p99 of the delay= field of the MTA's status=sent log
             lines (arrival to delivery), CPU seconds per 1,000 messages of
             the MTA's own process tree.
             TLS on = both legs encrypted: smtp-source talks to a local
             stunnel client that does STARTTLS with the MTA's smtpd (every
             connection a full handshake, session resumption off), and the
             MTA delivers with TLS (level encrypt, implicit TLS) to a stunnel
             server in front of the same smtp-sink.
  footprint  PSS and RSS summed over all of the MTA's processes: idle after
             start, peak during the 4 KiB / 10 sessions / TLS off relay run
             (sampled every 0.25 s), and 3 s after it. Runs with `relay`
             (that cell) or alone.
  submit     `sendmail -t`, N messages one at a time and 8 in parallel while
             the MTA runs and relays them: submissions/s, p50 latency of one
             sendmail call.
  queue      N deferred messages (cloned, as bench/mailq.py does): mailq time
             (cold and warm page cache), then the smart host comes back: time
             from the start command until the first delivery, drain rate
             (messages/s from the first delivery until the last), CPU per
             1,000 drained messages.
  fsync      the disk's floor: a durable new file (create, write 4 KiB,
             fsync, rename, fsync the directory) done serially, without
             the directory fsync (what Postfix does), and in group commits
             (64 files fsynced by 8 threads, one directory fsync); compared
             with what each MTA reaches.

Writes RESULTS.json and RESULTS.md (default bench/results/<time>.*).
"""
import argparse, datetime, json, os, pwd, re, shutil, socket, sqlite3, statistics, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.environ.get("POSTERN_BIN_DIR", os.path.join(ROOT, "target", "release"))
HZ = os.sysconf("SC_CLK_TCK")
MTAS = ("postern", "postfix")
LABEL = {"postern": "postern", "postfix": "Postfix 3.7"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def message(i, size):
    head = f"From: bench@example.com\nTo: sink@example.net\nSubject: bench {i}\n\n"
    line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return (head + body).encode()


def percentile(vals, p):
    s = sorted(vals)
    if not s:
        return None
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- per-process accounting ---------------------------------------------------

def proc_stats():
    """pid -> (ppid, CPU ticks: utime+stime+cutime+cstime, command name)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            rest = tail.split()
            comm = head.split("(", 1)[1]
        except (OSError, IndexError):
            continue
        # rest[0] is the state; ppid is field 4, utime..cstime fields 14-17.
        out[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]), comm)
    return out


def tree_pids(root, stats=None):
    stats = stats if stats is not None else proc_stats()
    children = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    if root not in stats:
        return [], stats
    pids, todo = [], [root]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children.get(p, [])
    return pids, stats


def tree_cpu(root):
    """CPU seconds of root and all its descendants, including the children
    they have reaped (cutime/cstime), so exited workers count too."""
    pids, stats = tree_pids(root)
    return sum(stats[p][1] for p in pids) / HZ


def tree_cpu_by_command(root):
    """CPU seconds per command name in the tree (children a process has
    reaped count under its own name)."""
    pids, stats = tree_pids(root)
    by = {}
    for p in pids:
        by[stats[p][2]] = by.get(stats[p][2], 0) + stats[p][1] / HZ
    return by


def tree_mem(root):
    """(PSS kB, RSS kB, processes) summed over root and its descendants."""
    pids, _ = tree_pids(root)
    pss = rss = n = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
            n += 1
        except OSError:
            pass
    return pss, rss, n


class MemSampler(threading.Thread):
    def __init__(self, root, interval=0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_pss = self.peak_rss = self.peak_procs = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pss, rss, n = tree_mem(self.root)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_procs = max(self.peak_procs, n)
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()


# --- the MTA's log ------------------------------------------------------------

DELAY = re.compile(rb"\bdelay=([0-9.]+)")


class LogTail:
    """Reads the status=sent lines an MTA appends to its maillog_file from
    the moment the tail is made: exactly the messages of one run."""

    def __init__(self, path):
        self.path = path
        try:
            self.off = os.path.getsize(path)
        except FileNotFoundError:
            self.off = 0
        self.partial = b""
        self.delays = []
        self.deferred = 0
        self.first_sent = None

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return len(self.delays)
        self.off += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for l in lines:
            if b" status=sent " in l:
                m = DELAY.search(l)
                if m:
                    if self.first_sent is None:
                        self.first_sent = time.monotonic()
                    self.delays.append(float(m.group(1)))
            elif b" status=deferred " in l or b" status=bounced " in l:
                self.deferred += 1
        return len(self.delays)

    def wait(self, n, timeout, poll=0.02):
        end = time.monotonic() + timeout
        while self.poll() < n:
            if time.monotonic() > end:
                raise RuntimeError(f"{self.path}: {len(self.delays)} of {n} delivered after {timeout:.0f} s "
                                   f"({self.deferred} deferred or bounced)")
            time.sleep(poll)
        return time.monotonic()


# --- the sink, TLS ------------------------------------------------------------

class Sink:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def make_cert(d, key_type):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ec" else ["-newkey", "rsa:2048"]
    sh(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert, "-days", "30",
        "-subj", "/CN=bench.example.com"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o600)  # both MTAs load it as root (postern insists on 0600)
    return cert, key


class Stunnel:
    """One stunnel process: a TLS server in front of the sink (the MTAs'
    TLS smart host) and, per MTA, a STARTTLS client in front of its smtpd."""

    def __init__(self, d, cert, key, sink_port, mta_ports):
        self.out_port = free_port()
        self.in_port = {name: free_port() for name in mta_ports}
        conf = os.path.join(d, "stunnel.conf")
        with open(conf, "w") as f:
            # TCP_NODELAY: without it each STARTTLS connection waits for
            # delayed ACKs (about 50 ms per message).
            f.write(f"foreground = yes\npid =\nsyslog = no\ndebug = err\noutput = {d}/stunnel.log\n\n")
            nodelay = "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
            f.write(f"[sink]\naccept = 127.0.0.1:{self.out_port}\nconnect = 127.0.0.1:{sink_port}\n"
                    f"cert = {cert}\nkey = {key}\n{nodelay}\n")
            for name, port in mta_ports.items():
                f.write(f"[{name}]\nclient = yes\naccept = 127.0.0.1:{self.in_port[name]}\n"
                        f"connect = 127.0.0.1:{port}\nprotocol = smtp\nsessionResume = no\n{nodelay}\n")
        self.proc = subprocess.Popen(["stunnel4" if shutil.which("stunnel4") else "stunnel", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.out_port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


# --- the two MTAs -------------------------------------------------------------

COMMON = """myhostname = bench.example.com
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
default_destination_concurrency_limit = 20
initial_destination_concurrency = 5
delay_logging_resolution_limit = 3
"""

QUEUE_MODE = """minimal_backoff_time = 100000s
maximal_backoff_time = 100000s
queue_run_delay = 100000s
"""


def tls_params(mode, cert, key):
    """TLS off: no STARTTLS offered, plain delivery. On: STARTTLS offered,
    delivery with TLS required (implicit TLS: the stunnel server)."""
    if mode == "on":
        return (f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
                "smtp_tls_security_level = encrypt\nsmtp_tls_wrappermode = yes\n")
    return "smtpd_tls_security_level = none\nsmtp_tls_security_level = none\n"


def write_clone(path, data, mode, uid, gid):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def clone_ids(n, width):
    # Multiplying by an odd constant modulo 16**width is a bijection: unique
    # IDs whose first digits (Postfix's hash subdirectory) are spread out.
    mod = 16 ** width
    return [f"{(i * 2654435761 + 12345) % mod:0{width}X}" for i in range(1, n)]


QUEUE_MSG = b"From: bench@example.com\nTo: nobody@example.net\nSubject: queue bench\n\n" + b"x" * 1000 + b"\n"


class Mta:
    name = ""

    def __init__(self, work, cert=None, key=None):
        self.dir = os.path.join(work, self.name)
        self.etc = os.path.join(self.dir, "etc")
        self.spool = os.path.join(self.dir, "spool")
        self.log = os.path.join(self.dir, "maillog")
        self.cert, self.key = cert, key
        self.smtpd_port = free_port()
        os.makedirs(self.etc)
        for d in (work, self.dir, self.etc):
            os.chmod(d, 0o755)

    def root_pid(self):
        try:
            with open(os.path.join(self.spool, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_log(self, needle, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(self.log, "rb") as f:
                    if needle in f.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{needle!r} not in {self.log} after {timeout}s")


class Postern(Mta):
    name = "postern"

    def __init__(self, work, cert=None, key=None):
        super().__init__(work, cert, key)
        if subprocess.run(["id", "postern"], capture_output=True).returncode != 0:
            sh(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "postern"])
        self.bin = os.path.join(REL, "postern")
        self.main_cf = os.path.join(self.etc, "main.cf")
        self.sendmail = [os.path.join(REL, "sendmail"), "-C", self.main_cf]
        open(self.log, "w").close()
        shutil.chown(self.log, "postern")

    def configure(self, relay_port, tls="off", queue_mode=False, listener=True, extra=()):
        with open(self.main_cf, "w") as f:
            f.write(f"queue_directory = {self.spool}\ndata_directory = {self.dir}/data\n"
                    f"maillog_file = {self.log}\nmail_owner = postern\n"
                    f"daemon_directory = {REL}\ncommand_directory = {REL}\n")
            f.write(COMMON)
            f.write(f"relayhost = [127.0.0.1]:{relay_port}\n")
            f.write(tls_params(tls, self.cert, self.key))
            if queue_mode:
                f.write(QUEUE_MODE)
            for p in extra:
                f.write(p.replace("=", " = ", 1) + "\n")
        with open(os.path.join(ROOT, "conf", "etc", "master.cf")) as src:
            lines = src.read().splitlines()
        out = []
        for l in lines:
            if l.startswith("smtp ") and " inet " in l:
                if not listener:
                    continue
                l = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd"
            out.append(l)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")

    def start(self):
        sh([self.bin, "-c", self.etc, "start"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([self.bin, "-c", self.etc, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.root_pid() is None or not os.path.exists(f"/proc/{self.root_pid()}"):
                return
            time.sleep(0.05)

    def mailq(self):
        return [os.path.join(REL, "sendmail"), "-C", self.main_cf, "-bp"]

    def fill(self, n):
        """n deferred messages: one real, n-1 clones indexed by postsuper -s."""
        self.configure(1, queue_mode=True, listener=False)
        self.start()
        sh(self.sendmail + ["-f", "bench@example.com", "nobody@example.net"], input=QUEUE_MSG)
        self.wait_log(b"status=deferred")
        self.stop()
        deferred = os.path.join(self.spool, "deferred")
        names = [f for f in os.listdir(deferred) if not f.startswith(".")]
        assert len(names) == 1, names
        orig = names[0]
        st = os.stat(os.path.join(deferred, orig))
        with open(os.path.join(deferred, orig), "rb") as f:
            data = f.read()
        for new in clone_ids(n, len(orig)):
            write_clone(os.path.join(deferred, new), data, st.st_mode & 0o7777, st.st_uid, st.st_gid)
        sh([self.bin, "postsuper", "-c", self.etc, "-s"], stdout=subprocess.DEVNULL)
        # The clones get the original's deferral reason, as Postfix's cloned
        # defer logfiles do.
        db = sqlite3.connect(os.path.join(self.spool, "index.sqlite"))
        (reason,) = db.execute("SELECT reason FROM recipients WHERE id = ?", (orig,)).fetchone()
        db.execute("UPDATE recipients SET reason = ?", (reason,))
        db.commit()
        db.close()
        for f in os.listdir(self.spool):
            if f.startswith("index.sqlite"):
                os.chown(os.path.join(self.spool, f), st.st_uid, st.st_gid)

    def make_due(self):
        now = int(time.time() * 1_000_000)
        db = sqlite3.connect(os.path.join(self.spool, "index.sqlite"))
        db.execute("UPDATE messages SET next_attempt = ? WHERE queue = 'deferred'", (now,))
        db.commit()
        db.close()


class Postfix(Mta):
    name = "postfix"

    def __init__(self, work, cert=None, key=None):
        super().__init__(work, cert, key)
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        os.makedirs(self.spool)
        shutil.chown(data, "postfix")
        # postlogd (running as postfix) appends to it.
        open(self.log, "w").close()
        shutil.chown(self.log, "postfix")
        self.env = dict(os.environ, MAIL_CONFIG=self.etc)
        self.sendmail = ["/usr/sbin/sendmail", "-C", self.etc]
        src = "/usr/share/postfix/master.cf.dist"
        if not os.path.exists(src):
            src = "/etc/postfix/master.cf"
        with open(src) as f:
            self.master_src = f.read().splitlines()

    def configure(self, relay_port, tls="off", queue_mode=False, listener=True, extra=(), no_qmgr=False):
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"compatibility_level = 3.6\nqueue_directory = {self.spool}\ndata_directory = {self.dir}/data\n"
                    f"maillog_file = {self.log}\nmaillog_file_prefixes = {self.dir}\n")
            f.write(COMMON)
            f.write(f"relayhost = [127.0.0.1]:{relay_port}\n")
            f.write(tls_params(tls, self.cert, self.key))
            if tls == "on":
                # postern keeps TLS sessions to the smart host open for
                # reuse; this is Postfix's way (through tlsproxy).
                f.write("smtp_tls_connection_reuse = yes\n")
            if queue_mode:
                f.write(QUEUE_MODE)
            for p in extra:
                f.write(p.replace("=", " = ", 1) + "\n")
        out = []
        for l in self.master_src:
            f = l.split()
            if l.startswith("smtp ") and len(f) > 1 and f[1] == "inet":
                if not listener:
                    continue
                l = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd"
            elif no_qmgr and (l.startswith("qmgr ") or l.startswith("pickup ")):
                continue
            elif l and not l[0].isspace() and not l.startswith("#") and len(f) >= 8 and f[4] == "y":
                f[4] = "n"  # no chroot: the queue is not under /var/spool/postfix
                l = "  ".join(f)
            out.append(l)
        if not any(l.startswith("tlsproxy ") for l in out):
            out.append("tlsproxy  unix  -       -       n       -       0       tlsproxy")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")
        sh(["postfix", "-c", self.etc, "check"], env=self.env, stdout=subprocess.DEVNULL)

    def start(self):
        sh(["postfix", "-c", self.etc, "start"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        for _ in range(200):
            if subprocess.run(["postfix", "-c", self.etc, "status"], env=self.env,
                              capture_output=True).returncode != 0:
                return
            time.sleep(0.05)

    def mailq(self):
        return ["/usr/sbin/sendmail", "-C", self.etc, "-bp"]

    def fill(self, n):
        """n deferred messages: one real, n-1 clones of its queue file and
        defer logfile (IDs matching the inode numbers, as postfix start
        insists); then master runs for showq without qmgr and pickup."""
        self.configure(1, queue_mode=True, listener=False)
        self.start()
        sh(self.sendmail + ["-f", "bench@example.com", "nobody@example.net"], input=QUEUE_MSG, env=self.env)
        self.wait_log(b"status=deferred")
        self.stop()
        found = []
        for sub, _, files in os.walk(os.path.join(self.spool, "deferred")):
            found += [os.path.join(sub, f) for f in files]
        assert len(found) == 1, found
        qf = found[0]
        self.orig = qf
        orig = os.path.basename(qf)
        with open(qf, "rb") as f:
            data = f.read()
        with open(os.path.join(self.spool, "defer", orig[0], orig), "rb") as f:
            defer = f.read()
        pw = pwd.getpwnam("postfix")
        tmp = os.path.join(self.spool, "deferred", "clone.tmp")
        for usec in clone_ids(n, 5):
            write_clone(tmp, data, 0o700, pw.pw_uid, pw.pw_gid)
            new = f"{usec}{os.stat(tmp).st_ino:X}"
            for q in ("deferred", "defer"):
                d = os.path.join(self.spool, q, new[0])
                if not os.path.isdir(d):
                    os.mkdir(d, 0o700)
                    os.chown(d, pw.pw_uid, pw.pw_gid)
            os.rename(tmp, os.path.join(self.spool, "deferred", new[0], new))
            write_clone(os.path.join(self.spool, "defer", new[0], new), defer, 0o600, pw.pw_uid, pw.pw_gid)
        self.configure(1, queue_mode=True, listener=False, no_qmgr=True)

    def make_due(self):
        # Postfix keeps a deferred message's next attempt time as the queue
        # file's mtime; the clones' is their creation, the original's is
        # 100000 s ahead.
        if os.path.exists(self.orig):
            os.utime(self.orig)


# --- workloads ------------------------------------------------------------------

class Results:
    def __init__(self):
        self.rows = {}  # (workload, metric) -> dict
        self.details = []  # per run: CPU by process, counts

    def add(self, workload, metric, unit, better, mta, value):
        key = (workload, metric)
        r = self.rows.setdefault(key, {"workload": workload, "metric": metric, "unit": unit, "better": better,
                                       "postern": [], "postfix": []})
        if value is not None:
            r[mta].append(value)

    def summary(self, r):
        out = {}
        for m in MTAS:
            v = r[m]
            out[m] = {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} if v else None
        if out["postern"] and out["postfix"] and out["postfix"]["median"]:
            out["ratio"] = out["postern"]["median"] / out["postfix"]["median"]
        else:
            out["ratio"] = None
        return out


def relay_run(mta, r_port, in_port, n, size, sessions, tls, res, cell, footprint):
    mta.configure(r_port, tls)
    mta.start()
    try:
        wait_port(mta.smtpd_port)
        root = mta.root_pid()
        if footprint:
            time.sleep(2)
            pss, rss, procs = tree_mem(root)
            res.add("footprint", "PSS idle after start (MiB)", "MiB", "lower", mta.name, pss / 1024)
            res.add("footprint", "RSS sum idle after start (MiB)", "MiB", "lower", mta.name, rss / 1024)
            res.add("footprint", "processes idle", "", "lower", mta.name, procs)
        tail = LogTail(mta.log)
        by0 = tree_cpu_by_command(root)
        cpu0 = tree_cpu(root)
        sampler = MemSampler(root) if footprint else None
        if sampler:
            sampler.start()
        t0 = time.monotonic()
        p = subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size),
                            "-f", "bench@example.com", "-t", "sink@example.net", "-M", "client.example.com",
                            f"127.0.0.1:{in_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t_acc = time.monotonic()
        if p.returncode != 0:
            raise RuntimeError(f"smtp-source failed: {p.stderr.decode(errors='replace')[-300:]}")
        t_end = tail.wait(n, 120 + n / 20)
        cpu1 = tree_cpu(root)
        by1 = tree_cpu_by_command(root)
        res.details.append({"workload": "relay", "cell": cell, "mta": mta.name, "messages": n,
                            "seconds": round(t_end - t0, 3), "cpu_s": round(cpu1 - cpu0, 3),
                            "cpu_s_by_command": {k: round(v - by0.get(k, 0), 3) for k, v in sorted(by1.items())}})
        if sampler:
            sampler.stop()
            res.add("footprint", "PSS peak, 10 sessions (MiB)", "MiB", "lower", mta.name, sampler.peak_pss / 1024)
            res.add("footprint", "RSS sum peak, 10 sessions (MiB)", "MiB", "lower", mta.name, sampler.peak_rss / 1024)
            res.add("footprint", "processes peak", "", "lower", mta.name, sampler.peak_procs)
            time.sleep(3)
            pss, _, _ = tree_mem(root)
            res.add("footprint", "PSS 3 s after the run (MiB)", "MiB", "lower", mta.name, pss / 1024)
            res.add("footprint", "CPU s per 1,000 messages (MTA processes)", "s", "lower", mta.name,
                    (cpu1 - cpu0) * 1000 / n)
    finally:
        mta.stop()
    rate = n / (t_end - t0)
    res.add("relay", f"{cell}: messages/s end to end", "msg/s", "higher", mta.name, rate)
    res.add("relay", f"{cell}: accepted/s", "msg/s", "higher", mta.name, n / (t_acc - t0))
    res.add("relay", f"{cell}: p50 delay (ms)", "ms", "lower", mta.name, 1000 * statistics.median(tail.delays))
    res.add("relay", f"{cell}: p99 delay (ms)", "ms", "lower", mta.name, 1000 * percentile(tail.delays, 99))
    res.add("relay", f"{cell}: CPU s per 1,000 messages", "s", "lower", mta.name, (cpu1 - cpu0) * 1000 / n)
    return rate


def submit_run(mta, sink_port, n, size, parallel, res):
    mta.configure(sink_port, "off")
    mta.start()
    try:
        tail = LogTail(mta.log)
        msgs = [message(i, size) for i in range(n)]
        env = getattr(mta, "env", None)
        lat = []

        def one(m):
            t = time.monotonic()
            subprocess.run(mta.sendmail + ["-t"], input=m, check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lat.append(time.monotonic() - t)

        t0 = time.monotonic()
        if parallel == 1:
            for m in msgs:
                one(m)
        else:
            with ThreadPoolExecutor(parallel) as ex:
                list(ex.map(one, msgs))
        dt = time.monotonic() - t0
        tail.wait(n, 120 + n / 10)
    finally:
        mta.stop()
    what = "one at a time" if parallel == 1 else f"{parallel} in parallel"
    res.add("submit", f"sendmail -t, {what}: submissions/s", "1/s", "higher", mta.name, n / dt)
    res.add("submit", f"sendmail -t, {what}: p50 latency (ms)", "ms", "lower", mta.name, 1000 * statistics.median(lat))
    return n / dt


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed_mailq(mta, n):
    t0 = time.monotonic()
    p = subprocess.run(mta.mailq(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
                       env=getattr(mta, "env", None))
    dt = time.monotonic() - t0
    tail = p.stdout[-80:].decode(errors="replace")
    if f"in {n} Request" not in tail:
        raise RuntimeError(f"{mta.name} mailq did not list {n} messages: ...{tail!r} {p.stderr[-200:]!r}")
    return dt


def queue_run(cls, work, sink_port, n, res):
    d = tempfile.mkdtemp(prefix="queue-", dir=work)
    mta = cls(d)
    try:
        t0 = time.monotonic()
        mta.fill(n)
        log(f"  {mta.name}: {n} deferred messages queued in {time.monotonic() - t0:.1f} s")
        if mta.name == "postfix":
            mta.start()  # showq, without qmgr and pickup
        drop_caches()
        cold = timed_mailq(mta, n)
        timed_mailq(mta, n)
        warm = timed_mailq(mta, n)
        mta.stop()
        res.add("queue", f"mailq, {n:,} messages, cold cache (s)", "s", "lower", mta.name, cold)
        res.add("queue", f"mailq, {n:,} messages, warm cache (s)", "s", "lower", mta.name, warm)
        # The smart host is back: the MTA starts with the sink as relayhost
        # and every message due.
        mta.configure(sink_port, "off", listener=False)
        mta.make_due()
        tail = LogTail(mta.log)
        t0 = time.monotonic()
        mta.start()
        t_end = tail.wait(n, 300 + n / 20, poll=0.01)
        cpu = tree_cpu(mta.root_pid())
        res.details.append({"workload": "queue", "mta": mta.name, "messages": n,
                            "cpu_s_by_command": {k: round(v, 3) for k, v in
                                                 sorted(tree_cpu_by_command(mta.root_pid()).items())}})
        restart = tail.first_sent - t0
        drain = n / max(t_end - tail.first_sent, 1e-3)
        res.add("queue", "restart: start until the first delivery (s)", "s", "lower", mta.name, restart)
        res.add("queue", f"drain {n:,} messages: messages/s", "msg/s", "higher", mta.name, drain)
        res.add("queue", "drain: CPU s per 1,000 messages (MTA processes)", "s", "lower", mta.name, cpu * 1000 / n)
        log(f"  {mta.name}: mailq {cold:.2f} s cold, {warm:.2f} s warm; first delivery {restart:.2f} s "
            f"after start, drained at {drain:.0f}/s")
    finally:
        mta.stop()
        shutil.rmtree(d, ignore_errors=True)


def fsync_floor(d, n, res, batch=64, threads=8):
    """A durable new file, as an MTA makes one per accepted message."""
    d = tempfile.mkdtemp(prefix="fsync-", dir=d)
    data = b"x" * 4096
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)

    def write(i):
        tmp = os.path.join(d, f"t{i}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        return tmp

    try:
        lat = []
        t0 = time.monotonic()
        for i in range(n):
            t = time.monotonic()
            os.rename(write(i), os.path.join(d, f"f{i}"))
            os.fsync(dfd)
            lat.append(time.monotonic() - t)
        serial = n / (time.monotonic() - t0)
        # What Postfix's cleanup does: fsync the file, no directory fsync
        # (on ext4 without a journal the new name itself is not durable).
        nodir = []
        for i in range(n):
            t = time.monotonic()
            os.rename(write(i), os.path.join(d, f"n{i}"))
            nodir.append(time.monotonic() - t)
        # No unlinks before the group phase: on ext4 without a journal,
        # recently freed inodes slow down the next allocations.
        t0 = time.monotonic()
        with ThreadPoolExecutor(threads) as ex:
            for b in range(0, n, batch):
                tmps = list(ex.map(write, range(b, min(n, b + batch))))
                for i, tmp in zip(range(b, b + len(tmps)), tmps):
                    os.rename(tmp, os.path.join(d, f"g{i}"))
                os.fsync(dfd)
        group = n / (time.monotonic() - t0)
    finally:
        os.close(dfd)
        shutil.rmtree(d, ignore_errors=True)
    for m in MTAS:  # a property of the disk: the same figure for both columns
        res.add("fsync", "durable new file, p50 latency (ms)", "ms", "lower", m, 1000 * statistics.median(lat))
        res.add("fsync", "durable new file, p99 latency (ms)", "ms", "lower", m, 1000 * percentile(lat, 99))
        res.add("fsync", "new file, file fsync only (no directory fsync), p50 latency (ms)", "ms", "lower", m,
                1000 * statistics.median(nodir))
        res.add("fsync", "one serial writer: files/s (1 / p50 latency)", "1/s", "higher", m,
                1 / statistics.median(lat))
        res.add("fsync", "one serial writer: files/s (measured)", "1/s", "higher", m, serial)
        res.add("fsync", f"group commit ({batch} files, {threads} threads): files/s", "1/s", "higher", m, group)
    return statistics.median(lat), serial, group


# --- output ----------------------------------------------------------------------

def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1000:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell_text(s):
    if not s:
        return "–"
    if len(s["runs"]) == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


WORKLOAD_TITLES = {
    "relay": "End-to-end relay: smtp-source → MTA → smtp-sink",
    "footprint": "Footprint (all the MTA's processes)",
    "submit": "Local submission: sendmail -t",
    "queue": "Queue scale",
    "fsync": "The physical floor (the disk, not an MTA)",
}


def targets(res):
    """Issue 7's targets, checked against the medians."""
    def ratios(workload, pred):
        got = []
        for r in res.rows.values():
            if r["workload"] == workload and pred(r["metric"]):
                x = res.summary(r)["ratio"]
                if x is not None:
                    got.append((r["metric"].split(":")[0].split(" (")[0], x))
        return got

    def relay_cell(suffix):
        return lambda m: m.endswith(suffix) and (" 10 sessions" in m or " 100 sessions" in m)

    rows = []
    spec = [
        ("relay throughput, 10 and 100 sessions (end to end)", "≥ 3×", lambda x: x >= 3,
         ratios("relay", relay_cell("messages/s end to end")), "×"),
        ("CPU per relayed message, 10 and 100 sessions", "≤ 0.25×", lambda x: x <= 0.25,
         ratios("relay", relay_cell("CPU s per 1,000 messages")), "×"),
        ("sendmail -t submissions/s", "≥ 3×", lambda x: x >= 3,
         ratios("submit", lambda m: m.endswith("submissions/s")), "×"),
        ("mailq time (Postfix/postern)", "≥ 10×", lambda x: x >= 10,
         [(k, 1 / x) for k, x in ratios("queue", lambda m: m.startswith("mailq")) if x], "×"),
        ("PSS of all processes at 10 sessions (peak)", "≤ 0.5×", lambda x: x <= 0.5,
         ratios("footprint", lambda m: m.startswith("PSS peak")), "×"),
    ]
    for name, want, ok, got, unit in spec:
        if not got:
            continue
        met = sum(1 for _, x in got if ok(x))
        detail = "; ".join(f"{k} {x:.2f}{unit}" for k, x in got)
        rows.append(f"| {name} | {want} | {detail} | {met} of {len(got)} |")
    if not rows:
        return ""
    return ("### Targets of issue 7 (postern/Postfix of the medians)\n\n"
            "| target | wanted | measured | met |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")


def markdown(res, floor_rows):
    out = [targets(res)]
    for w in WORKLOAD_TITLES:
        rows = [r for r in res.rows.values() if r["workload"] == w]
        if not rows:
            continue
        out.append(f"### {WORKLOAD_TITLES[w]}\n")
        if w == "fsync":
            out.append("| measurement | this disk |\n|---|---|")
            for r in rows:
                out.append(f"| {r['metric']} | {cell_text(res.summary(r)['postern'])} |")
            for label, vals in floor_rows:
                out.append(f"| {label} | {vals} |")
            out.append("")
            continue
        out.append("| workload | postern | Postfix 3.7 | postern/Postfix |\n|---|---|---|---|")
        for r in rows:
            s = res.summary(r)
            ratio = f"{s['ratio']:.2f}×" if s["ratio"] is not None else "–"
            out.append(f"| {r['metric']} | {cell_text(s['postern'])} | {cell_text(s['postfix'])} | {ratio} |")
        out.append("")
    return "\n".join(out)


def machine():
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True, shell=True).stdout.strip()
        except OSError:
            return ""
    return {
        "cpu": cmd("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "cpus": os.cpu_count(),
        "memory": cmd("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
        "kernel": os.uname().release,
        "os": cmd(". /etc/os-release && echo $PRETTY_NAME"),
        "postfix": cmd("postconf -d -h mail_version"),
        "postern_commit": cmd(f"git -C {ROOT} rev-parse --short HEAD") + (
            "+changes" if cmd(f"git -C {ROOT} status --porcelain --untracked-files=no") else ""),
        "postern_binaries": cmd(f"date -u -r {REL}/postern +%Y-%m-%dT%H:%M:%SZ"),
        "stunnel": cmd("stunnel4 -version 2>&1 | head -1 || stunnel -version 2>&1 | head -1"),
        "openssl": cmd("openssl version"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="fsync,relay,footprint,submit,queue",
                    help="comma-separated workloads: fsync, relay, footprint, submit, queue (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 run, small counts (numbers are not comparable)")
    ap.add_argument("--runs", type=int, help="runs per workload and MTA (default 3)")
    ap.add_argument("--messages", type=int, help="relay: messages per run (default 5000)")
    ap.add_argument("--messages-single", type=int,
                    help="relay: messages per run with 1 session (default 1000: one at a time, 5,000 would "
                         "take Postfix over 4 minutes per run with TLS)")
    ap.add_argument("--sizes", help="relay: message sizes in bytes (default 4096,102400)")
    ap.add_argument("--sessions", help="relay: parallel sessions (default 1,10,100)")
    ap.add_argument("--tls", help="relay: off, on or off,on (default off,on)")
    ap.add_argument("--submit-messages", type=int, help="submit: sendmail calls per run (default 1000)")
    ap.add_argument("--queue-messages", type=int, help="queue: deferred messages (default 100000)")
    ap.add_argument("--fsync-files", type=int, help="fsync: durable new files per run (default 2000)")
    ap.add_argument("--tls-key", choices=["ec", "rsa"], default="ec",
                    help="key of the MTAs' and the TLS sink's certificate: ECDSA P-256 (default) or RSA 2048")
    ap.add_argument("--mta", choices=["both", "postern", "postfix"], default="both")
    ap.add_argument("--out", help="results file prefix (default bench/results/<UTC time>)")
    ap.add_argument("--work-dir", default="/var/tmp",
                    help="where the queues live (default /var/tmp; it should be on the disk the MTA would use)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--report", metavar="RESULTS.json", help="only print the Markdown of an earlier run's results")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            info = json.load(f)
        res = Results()
        for r in info["results"]:
            for m in MTAS:
                for v in (r[m] or {}).get("runs", []):
                    res.add(r["workload"], r["metric"], r["unit"], r["better"], m, v)
        print(markdown(res, info.get("floor_comparison", [])))
        return 0
    q = a.quick
    runs = a.runs or (1 if q else 3)
    n = a.messages or (300 if q else 5000)
    n1 = a.messages_single or (100 if q else min(n, 1000))
    sizes = [int(x) for x in (a.sizes or "4096,102400").split(",")]
    sessions = [int(x) for x in (a.sessions or "1,10,100").split(",")]
    tlss = (a.tls or "off,on").split(",")
    submit_n = a.submit_messages or (100 if q else 1000)
    queue_n = a.queue_messages or (2000 if q else 100_000)
    fsync_n = a.fsync_files or (500 if q else 2000)
    wanted = set(a.only.split(","))
    unknown = wanted - {"fsync", "relay", "footprint", "submit", "queue"}
    if unknown:
        sys.exit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        sys.exit("run as root (bench/run): the MTAs start as root and mailq's cold runs drop the page cache")
    for b in ("postern", "sendmail"):
        if not os.access(os.path.join(REL, b), os.X_OK):
            sys.exit(f"{REL}/{b} missing: cargo build --release --workspace --bins")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = a.out or os.path.join(ROOT, "bench", "results", stamp)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    classes = [c for c in (Postern, Postfix) if a.mta in ("both", c.name)]
    res = Results()
    errors = []
    info = {"started": stamp, "machine": machine(), "loadavg_start": os.getloadavg(),
            "params": {"runs": runs, "messages": n, "messages_single_session": n1, "sizes": sizes, "sessions": sessions, "tls": tlss,
                       "submit_messages": submit_n, "queue_messages": queue_n, "fsync_files": fsync_n,
                       "tls_key": a.tls_key, "quick": q, "workloads": sorted(wanted)},
            "command": " ".join(["bench/run"] + sys.argv[1:])}
    work = tempfile.mkdtemp(prefix="postern-bench-", dir=a.work_dir)
    os.chmod(work, 0o755)
    info["work_fs"] = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS,SOURCE", "-T", work],
                                     capture_output=True, text=True).stdout.strip()
    t_start = time.monotonic()
    sink = stunnel = None
    mtas = []
    floor = None
    rates = {}
    try:
        sink = Sink()
        cert, key = make_cert(work, a.tls_key)
        order = lambda r: classes if r % 2 == 0 else list(reversed(classes))

        if "fsync" in wanted:
            log(f"fsync floor: {fsync_n} durable new files x {runs}")
            fl = [fsync_floor(work, fsync_n, res) for _ in range(runs)]
            floor = tuple(statistics.median(x[i] for x in fl) for i in range(3))

        if wanted & {"relay", "footprint", "submit"}:
            mtas = [c(os.path.join(work, "relay"), cert, key) for c in classes]
        if "relay" in wanted or "footprint" in wanted:
            cells = [(size, s, t) for t in tlss for size in sizes for s in sessions] if "relay" in wanted \
                else [(4096, 10, "off")]
            if "footprint" in wanted and (4096, 10, "off") not in cells:
                cells.insert(0, (4096, 10, "off"))
            if "on" in tlss and "relay" in wanted:
                stunnel = Stunnel(work, cert, key, sink.port, {m.name: m.smtpd_port for m in mtas})
            for size, s, tls in cells:
                cell = f"{size // 1024} KiB, {s} session{'s' if s > 1 else ''}, TLS {tls}"
                if s == 1 and n1 != n:
                    cell += f" ({n1:,} messages)"
                fp = "footprint" in wanted and (size, s, tls) == (4096, 10, "off")
                for r in range(runs):
                    for c in order(r):
                        m = next(x for x in mtas if x.name == c.name)
                        r_port = stunnel.out_port if tls == "on" else sink.port
                        in_port = stunnel.in_port[m.name] if tls == "on" else m.smtpd_port
                        try:
                            rate = relay_run(m, r_port, in_port, n1 if s == 1 else n, size, s, tls, res, cell, fp)
                            rates.setdefault((m.name, size, s, tls), []).append(rate)
                            log(f"relay {cell}, run {r + 1}/{runs}: {m.name} {rate:.0f} msg/s")
                        except Exception as e:  # keep going: one failed run is reported, not fatal
                            errors.append(f"relay {cell} run {r + 1} {m.name}: {e}")
                            log(f"ERROR {errors[-1]}")

        if "submit" in wanted:
            for par in (1, 8):
                for r in range(runs):
                    for c in order(r):
                        m = next(x for x in mtas if x.name == c.name)
                        try:
                            rate = submit_run(m, sink.port, submit_n, 4096, par, res)
                            rates.setdefault((m.name, "submit", par), []).append(rate)
                            log(f"sendmail -t x{par}, run {r + 1}/{runs}: {m.name} {rate:.0f}/s")
                        except Exception as e:
                            errors.append(f"submit x{par} run {r + 1} {m.name}: {e}")
                            log(f"ERROR {errors[-1]}")

        if "queue" in wanted:
            for r in range(runs):
                for c in order(r):
                    log(f"queue run {r + 1}/{runs}: {c.name}, {queue_n} messages")
                    try:
                        queue_run(c, work, sink.port, queue_n, res)
                    except Exception as e:
                        errors.append(f"queue run {r + 1} {c.name}: {e}")
                        log(f"ERROR {errors[-1]}")
    finally:
        for m in mtas:
            m.stop()
        if stunnel:
            stunnel.stop()
        if sink:
            sink.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # How close each MTA gets to the disk's floor.
    floor_rows = []
    if floor:
        med = lambda k: statistics.median(rates[k]) if rates.get(k) else None
        for m in classes:
            v = med((m.name, "submit", 1))
            if v:
                floor_rows.append((f"{LABEL[m.name]}: sendmail -t one at a time, share of the measured serial floor",
                                   f"{100 * v / floor[1]:.0f} % ({v:.0f}/s)"))
            for s in sessions:
                v = med((m.name, 4096, s, "off"))
                if v:
                    floor_rows.append((f"{LABEL[m.name]}: relay 4 KiB, {s} session{'s' if s > 1 else ''}, TLS off, share of the "
                                       f"group-commit floor", f"{100 * v / floor[2]:.0f} % ({v:.0f}/s)"))
    info["elapsed_s"] = round(time.monotonic() - t_start)
    info["loadavg_end"] = os.getloadavg()
    info["errors"] = errors
    info["results"] = [dict(r, **res.summary(r)) for r in res.rows.values()]
    info["floor_comparison"] = floor_rows
    info["runs"] = res.details
    md = markdown(res, floor_rows)
    head = (f"Results of `{info['command']}` ({stamp}, {info['elapsed_s'] // 60} min): "
            f"median of {runs} run{'s' if runs > 1 else ''} (min–max), postern/Postfix of the medians; "
            f"relay {n:,} messages per run ({n1:,} with 1 session), submit {submit_n:,}, queue {queue_n:,}. "
            f"Load average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f}.\n")
    with open(out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(head + "\n" + md + "\n")
    print()
    print(head)
    print(md)
    if errors:
        print("ERRORS:\n  " + "\n  ".join(errors))
    print(f"wrote {out}.json and {out}.md")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
