#!/usr/bin/env python3
"""mailq benchmark: postern's `mailq` against Postfix's with the same queue.

Both MTAs get N deferred messages (one recipient each, deferred with the same
"Connection refused" reason): each MTA queues and defers one real message
through its own sendmail and delivery agent, and that queue file is then
cloned N-1 times under new queue IDs (Postfix: the queue file and its defer
logfile, in hashed subdirectories, owner postfix, mode 0700; postern: the
queue file, then `postsuper -s` indexes the clones, timed, and every
recipient gets the original's deferral reason). Cloning makes a queue of
100,000 messages in seconds instead of the half hour Postfix's sendmail
would need, and gives both the same queue contents.

Then `sendmail -bp` (mailq) runs RUNS times for each, alternating, with a
cold page cache (echo 3 > /proc/sys/vm/drop_caches before each run) and
warm (after one unmeasured run). Postfix runs as a separate instance with its
own configuration directory (master running, so mailq asks showq, as in
production; no listener on port 25; qmgr not started so that nothing
touches the queue); postern's daemons are stopped (its mailq reads the index
directly either way). Prints the median, min-max and the postern/Postfix
ratio of the wall-clock times.

Usage: bench/mailq.sh [--messages N] [--runs R] [--keep]
"""
import argparse, os, pwd, shutil, sqlite3, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.environ.get("POSTERN_BIN_DIR", os.path.join(ROOT, "target", "release"))
MESSAGE = b"From: bench@example.com\nTo: nobody@example.net\nSubject: mailq bench\n\n" + b"x" * 1000 + b"\n"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def wait_for(path, needle, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, "rb") as f:
                if needle in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} not in {path} after {timeout}s")


def ids(n, width):
    # Multiplying by an odd constant modulo 16**width is a bijection: unique
    # IDs whose first digits (Postfix's hash subdirectory) are spread out.
    mod = 16 ** width
    return [f"{(i * 2654435761 + 12345) % mod:0{width}X}" for i in range(1, n)]


def write_clone(path, data, mode, uid, gid):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class Postfix:
    name = "Postfix"

    def __init__(self, work):
        self.dir = os.path.join(work, "postfix")
        self.etc = os.path.join(self.dir, "etc")
        self.spool = os.path.join(self.dir, "spool")
        self.log = os.path.join(self.dir, "maillog")
        for d in (self.etc, self.spool, os.path.join(self.dir, "data")):
            os.makedirs(d)
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        with open("/etc/postfix/master.cf") as f:
            master = f.read().splitlines()
        out = []
        for l in master:
            f = l.split()
            if l.startswith("smtp ") and len(f) > 1 and f[1] == "inet":
                continue  # no listener on port 25
            if l and not l[0].isspace() and not l.startswith("#") and len(f) >= 8 and f[4] == "y":
                f[4] = "n"  # no chroot: the queue is not under /var/spool/postfix
                l = "  ".join(f)
            out.append(l)
        self.master_cf = "\n".join(out) + "\n"
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(self.master_cf)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.dir}/data
myhostname = bench.example.com
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
maillog_file = {self.log}
maillog_file_prefixes = {self.dir}
relayhost = [127.0.0.1]:1
smtp_tls_security_level = none
minimal_backoff_time = 100000s
maximal_backoff_time = 100000s
queue_run_delay = 100000s
""")
        # postlogd (as postfix) appends to it.
        open(self.log, "w").close()
        shutil.chown(self.log, "postfix")
        self.env = dict(os.environ, MAIL_CONFIG=self.etc)
        sh(["postfix", "-c", self.etc, "check"], env=self.env)

    def start(self):
        sh(["postfix", "-c", self.etc, "start"], env=self.env, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fill(self, n):
        self.start()
        sh(["sendmail", "-C", self.etc, "-f", "bench@example.com", "nobody@example.net"], input=MESSAGE, env=self.env)
        wait_for(self.log, b"status=deferred")
        self.stop()
        found = []
        for sub, _, files in os.walk(os.path.join(self.spool, "deferred")):
            found += [os.path.join(sub, f) for f in files]
        assert len(found) == 1, found
        qf = found[0]
        orig = os.path.basename(qf)
        with open(qf, "rb") as f:
            data = f.read()
        with open(os.path.join(self.spool, "defer", orig[0], orig), "rb") as f:
            defer = f.read()
        pw = pwd.getpwnam("postfix")
        # A short Postfix queue ID is 5 hex digits of microseconds and the
        # file's inode number in hex; `postfix start` renames files whose
        # name does not match their inode. So each clone is written under a
        # temporary name and renamed after its inode.
        tmp = os.path.join(self.spool, "deferred", "clone.tmp")
        for i, usec in enumerate(ids(n, 5)):
            write_clone(tmp, data, 0o700, pw.pw_uid, pw.pw_gid)
            new = f"{usec}{os.stat(tmp).st_ino:X}"
            for q in ("deferred", "defer"):
                d = os.path.join(self.spool, q, new[0])
                if not os.path.isdir(d):
                    os.mkdir(d, 0o700)
                    os.chown(d, pw.pw_uid, pw.pw_gid)
            os.rename(tmp, os.path.join(self.spool, "deferred", new[0], new))
            write_clone(os.path.join(self.spool, "defer", new[0], new), defer, 0o600, pw.pw_uid, pw.pw_gid)
        # Run master for showq, without the queue manager and pickup, so
        # that nothing moves the queue while it is listed.
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("".join(
                l + "\n" for l in self.master_cf.splitlines()
                if not (l.startswith("qmgr ") or l.startswith("pickup "))))
        self.start()

    def mailq(self):
        return ["sendmail", "-C", self.etc, "-bp"]

    def cleanup(self):
        self.stop()


class Postern:
    name = "postern"

    def __init__(self, work):
        self.dir = os.path.join(work, "postern")
        self.etc = os.path.join(self.dir, "etc")
        self.spool = os.path.join(self.dir, "spool")
        self.log = os.path.join(self.dir, "maillog")
        os.makedirs(self.etc)
        for d in (work, self.dir, self.etc):
            os.chmod(d, 0o755)
        if subprocess.run(["id", "postern"], capture_output=True).returncode != 0:
            sh(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "postern"])
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""queue_directory = {self.spool}
data_directory = {self.dir}/data
maillog_file = {self.log}
mail_owner = postern
myhostname = bench.example.com
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [127.0.0.1]:1
smtp_tls_security_level = none
minimal_backoff_time = 100000s
maximal_backoff_time = 100000s
queue_run_delay = 100000s
daemon_directory = {REL}
command_directory = {REL}
""")
        with open(os.path.join(ROOT, "conf", "etc", "master.cf")) as src:
            master = [l for l in src.read().splitlines() if not (l.startswith("smtp ") and " inet " in l)]
        with open(os.path.join(self.etc, "master.cf"), "w") as dst:
            dst.write("\n".join(master) + "\n")
        open(self.log, "w").close()
        shutil.chown(self.log, "postern")
        self.postern = os.path.join(REL, "postern")

    def fill(self, n):
        sh([self.postern, "-c", self.etc, "start"], stderr=subprocess.DEVNULL)
        sh([os.path.join(REL, "sendmail"), "-C", os.path.join(self.etc, "main.cf"),
            "-f", "bench@example.com", "nobody@example.net"], input=MESSAGE)
        wait_for(self.log, b"status=deferred")
        subprocess.run([self.postern, "-c", self.etc, "stop"], stderr=subprocess.DEVNULL)
        deferred = os.path.join(self.spool, "deferred")
        names = [f for f in os.listdir(deferred) if not f.startswith(".")]
        assert len(names) == 1, names
        orig = names[0]
        qf = os.path.join(deferred, orig)
        st = os.stat(qf)
        with open(qf, "rb") as f:
            data = f.read()
        for new in ids(n, len(orig)):
            write_clone(os.path.join(deferred, new), data, st.st_mode & 0o7777, st.st_uid, st.st_gid)
        t0 = time.monotonic()
        sh([self.postern, "postsuper", "-c", self.etc, "-s"])
        self.index_seconds = time.monotonic() - t0
        # postsuper -s has no per-recipient reasons to give the clones (the
        # files do not hold them); give them the original's, as Postfix's
        # cloned defer logfiles do.
        index = os.path.join(self.spool, "index.sqlite")
        db = sqlite3.connect(index)
        (reason,) = db.execute("SELECT reason FROM recipients WHERE id = ?", (orig,)).fetchone()
        db.execute("UPDATE recipients SET reason = ?", (reason,))
        db.commit()
        db.close()
        for f in os.listdir(self.spool):
            if f.startswith("index.sqlite"):
                os.chown(os.path.join(self.spool, f), st.st_uid, st.st_gid)

    def mailq(self):
        return [os.path.join(REL, "sendmail"), "-C", os.path.join(self.etc, "main.cf"), "-bp"]

    def cleanup(self):
        subprocess.run([self.postern, "-c", self.etc, "stop"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(mta, n):
    t0 = time.monotonic()
    p = subprocess.run(mta.mailq(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    dt = time.monotonic() - t0
    tail = p.stdout[-80:].decode(errors="replace")
    want = f"in {n} Requests."
    if want not in tail:
        raise RuntimeError(f"{mta.name} mailq did not list {n} messages: ...{tail!r} {p.stderr!r}")
    return dt, len(p.stdout)


def fmt(v):
    return f"{statistics.median(v):.3f} s ({min(v):.3f}–{max(v):.3f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mailq-bench-")
    os.chmod(work, 0o755)
    mtas = [Postern(work), Postfix(work)]
    try:
        for m in mtas:
            t0 = time.monotonic()
            m.fill(a.messages)
            print(f"{m.name}: {a.messages} messages queued in {time.monotonic() - t0:.1f} s", flush=True)
        print(f"postern: postsuper -s indexed them in {mtas[0].index_seconds:.1f} s", flush=True)
        res = {(m.name, c): [] for m in mtas for c in ("cold", "warm")}
        size = {}
        for r in range(a.runs):
            for m in mtas:
                drop_caches()
                dt, size[m.name] = timed(m, a.messages)
                res[(m.name, "cold")].append(dt)
        for m in mtas:
            timed(m, a.messages)  # warm the cache
        for r in range(a.runs):
            for m in mtas:
                dt, _ = timed(m, a.messages)
                res[(m.name, "warm")].append(dt)
        print()
        print(f"mailq with {a.messages:,} deferred messages, median of {a.runs} runs (min–max); "
              f"output {size['postern']:,} bytes (postern), {size['Postfix']:,} bytes (Postfix)")
        print(f"{'cache':<6} {'postern':<28} {'Postfix 3.7':<28} Postfix/postern")
        for c in ("cold", "warm"):
            pn, pf = res[("postern", c)], res[("Postfix", c)]
            print(f"{c:<6} {fmt(pn):<28} {fmt(pf):<28} {statistics.median(pf) / statistics.median(pn):.1f}×")
    finally:
        for m in mtas:
            m.cleanup()
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
