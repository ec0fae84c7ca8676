#!/usr/bin/env python3
"""Relay benchmark: postern against Postfix on the same machine, same load.

Workloads (each MTA relays to the same local smtp-sink, TLS off, fsync on):
  submit-seq   `sendmail` N messages one at a time        -> submissions/s
  submit-par8  `sendmail` N messages, 8 in parallel        -> submissions/s
  relay        N messages queued while the MTA is stopped, then the MTA is
               started; time until every message is delivered -> messages/s,
               CPU time per message (all processes, from /proc/stat)
  smtpd-10     `smtp-source` sends N messages over SMTP to the MTA's smtpd,
  smtpd-100    10 or 100 sessions in parallel, one message per connection
               (as devices do) -> messages accepted/s (the MTA relays them
               to smtp-sink at the same time, as in production)

Each workload runs RUNS times, alternating postern and Postfix; the script
prints the median, min-max and the postern/Postfix ratio. Run as root on a
machine where Postfix may be (re)configured: it installs Debian's postfix
package if missing, writes /etc/postfix/main.cf for the run, and stops
Postfix afterwards. Usage: bench/relay.sh [--messages N] [--runs R] [--size BYTES]
"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def cpu_jiffies():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system = int(parts[0]), int(parts[1]), int(parts[2])
    return user + nice + system


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def message(i, size):
    head = f"From: bench@example.com\nTo: sink@example.net\nSubject: bench {i}\n\n"
    line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return (head + body).encode()


class Sink:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Postern:
    name = "postern"
    extra = []

    def __init__(self, sink_port):
        self.dir = tempfile.mkdtemp(prefix="postern-bench-")
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, "etc")
        os.mkdir(self.etc)
        self.log = os.path.join(self.dir, "maillog")
        owner = "postern"
        if subprocess.run(["id", owner], capture_output=True).returncode != 0:
            sh(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", owner])
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""queue_directory = {self.dir}/spool
data_directory = {self.dir}/data
maillog_file = {self.log}
mail_owner = {owner}
myhostname = bench.example.com
mydestination =
alias_maps =
inet_interfaces = loopback-only
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
daemon_directory = {REL}
command_directory = {REL}
""")
            for p in self.extra:
                f.write(p.replace("=", " = ", 1) + "\n")
        self.smtpd_port = free_port()
        with open(os.path.join(ROOT, "conf", "etc", "master.cf")) as src:
            master = src.read()
        # The bench smtpd listens on a free loopback port instead of 25.
        master = "\n".join(
            f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd" if l.startswith("smtp ") and " inet " in l else l
            for l in master.splitlines()) + "\n"
        with open(os.path.join(self.etc, "master.cf"), "w") as dst:
            dst.write(master)
        self.sendmail = [os.path.join(REL, "sendmail"), "-C", os.path.join(self.etc, "main.cf")]

    def start(self):
        sh([os.path.join(REL, "postern"), "-c", self.etc, "start"], stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([os.path.join(REL, "postern"), "-c", self.etc, "stop"], stderr=subprocess.DEVNULL)

    def ensure_queue(self):
        self.start()
        self.stop()

    def delivered(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().count(b"status=sent")
        except FileNotFoundError:
            return 0

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postfix:
    name = "postfix"

    def __init__(self, sink_port):
        if not shutil.which("postfix"):
            sh("echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections")
            sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix")
        subprocess.run(["postfix", "stop"], capture_output=True)
        self.log = "/var/log/postfix-bench.log"
        if os.path.exists("/etc/postfix/main.cf") and not os.path.exists("/etc/postfix/main.cf.before-bench"):
            shutil.copy("/etc/postfix/main.cf", "/etc/postfix/main.cf.before-bench")
        with open("/etc/postfix/main.cf", "w") as f:
            f.write(f"""compatibility_level = 3.6
myhostname = bench.example.com
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
maillog_file = {self.log}
""")
        if not os.path.exists("/etc/postfix/master.cf"):
            shutil.copy("/usr/share/postfix/master.cf.dist", "/etc/postfix/master.cf")
        sh("postfix check", stderr=subprocess.DEVNULL)
        self.sendmail = ["/usr/sbin/sendmail"]
        self.smtpd_port = 25  # Debian's master.cf: smtp inet n - y - - smtpd

    def start(self):
        sh(["postfix", "start"], stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(["postfix", "stop"], capture_output=True)
        for _ in range(100):
            if subprocess.run(["postfix", "status"], capture_output=True).returncode != 0:
                return
            time.sleep(0.1)

    def ensure_queue(self):
        pass

    def delivered(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().count(b"status=sent")
        except FileNotFoundError:
            return 0

    def cleanup(self):
        self.stop()


def wait_delivered(mta, target, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if mta.delivered() >= target:
            return True
        time.sleep(0.02)
    return False


def submit_all(mta, n, size, parallel):
    msgs = [message(i, size) for i in range(n)]

    def one(m):
        subprocess.run(mta.sendmail + ["-t"], input=m, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t0 = time.time()
    if parallel == 1:
        for m in msgs:
            one(m)
    else:
        with ThreadPoolExecutor(parallel) as ex:
            list(ex.map(one, msgs))
    return time.time() - t0


def run_submit(mta, n, size, parallel):
    mta.start()
    before = mta.delivered()
    dt = submit_all(mta, n, size, parallel)
    wait_delivered(mta, before + n, 600)
    mta.stop()
    return n / dt


def run_relay(mta, n, size):
    mta.ensure_queue()
    mta.stop()
    submit_all(mta, n, size, 8)
    before = mta.delivered()
    c0 = cpu_jiffies()
    t0 = time.time()
    mta.start()
    ok = wait_delivered(mta, before + n, 900)
    dt = time.time() - t0
    c1 = cpu_jiffies()
    mta.stop()
    if not ok:
        raise RuntimeError(f"{mta.name}: only {mta.delivered() - before} of {n} delivered")
    hz = os.sysconf("SC_CLK_TCK")
    return n / dt, (c1 - c0) / hz * 1000.0 / n


def run_smtpd(mta, n, size, sessions):
    mta.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", mta.smtpd_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    before = mta.delivered()
    t0 = time.time()
    sh(["smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size),
        "-f", "bench@example.com", "-t", "sink@example.net", "-M", "client.example.com",
        f"127.0.0.1:{mta.smtpd_port}"], stdout=subprocess.DEVNULL)
    dt = time.time() - t0
    if not wait_delivered(mta, before + n, 600):
        raise RuntimeError(f"{mta.name}: only {mta.delivered() - before} of {n} smtpd messages delivered")
    mta.stop()
    return n / dt


def fmt(vals):
    return f"{statistics.median(vals):9.1f}  ({min(vals):.1f}-{max(vals):.1f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--submit-messages", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--smtpd-messages", type=int, default=2000)
    ap.add_argument("--workloads", default="submit,relay,smtpd",
                    help="comma-separated subset of submit, relay, smtpd")
    ap.add_argument("--only", choices=["postern", "postfix"], default=None)
    ap.add_argument("--postern-param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra main.cf line for postern (repeatable), e.g. tracking_retention_time=0")
    a = ap.parse_args()
    Postern.extra = a.postern_param
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix and the postern queue owner need it)")
    sink = Sink()
    mtas = []
    if a.only != "postfix":
        mtas.append(Postern(sink.port))
    if a.only != "postern":
        mtas.append(Postfix(sink.port))
    names = ["submit-seq", "submit-par8", "relay", "cpu-ms/msg", "smtpd-10", "smtpd-100"]
    results = {m.name: {w: [] for w in names} for m in mtas}
    wanted = set(a.workloads.split(","))
    try:
        for r in range(a.runs):
            for m in (mtas if r % 2 == 0 else list(reversed(mtas))):
                print(f"run {r + 1}/{a.runs}: {m.name}", file=sys.stderr, flush=True)
                if "submit" in wanted:
                    results[m.name]["submit-seq"].append(run_submit(m, a.submit_messages, a.size, 1))
                    results[m.name]["submit-par8"].append(run_submit(m, a.submit_messages, a.size, 8))
                if "relay" in wanted:
                    rate, cpu = run_relay(m, a.messages, a.size)
                    results[m.name]["relay"].append(rate)
                    results[m.name]["cpu-ms/msg"].append(cpu)
                if "smtpd" in wanted:
                    for sessions in (10, 100):
                        results[m.name][f"smtpd-{sessions}"].append(run_smtpd(m, a.smtpd_messages, a.size, sessions))
    finally:
        for m in mtas:
            m.cleanup()
        sink.stop()
    print(f"\n{a.size}-byte messages; relay = {a.messages} queued messages to smtp-sink; "
          f"submit = {a.submit_messages} sendmail calls; smtpd = {a.smtpd_messages} messages by smtp-source; "
          f"median (min-max) of {a.runs} runs; fsync on, TLS off")
    print(f"{'workload':<12} " + "  ".join(f"{m.name:>24}" for m in mtas) + ("    ratio" if len(mtas) == 2 else ""))
    for w in names:
        if not all(results[m.name][w] for m in mtas):
            continue
        row = f"{w:<12} " + "  ".join(f"{fmt(results[m.name][w]):>24}" for m in mtas)
        if len(mtas) == 2:
            p = statistics.median(results["postern"][w])
            q = statistics.median(results["postfix"][w])
            row += f"    {p / q:5.2f}x"
        print(row)
    print("(submit, relay and smtpd in messages/s, higher is better; cpu-ms/msg is CPU time of the whole machine per relayed message, lower is better)")


if __name__ == "__main__":
    main()
