#!/usr/bin/env python3
"""What message tracking costs the queue manager: the relay workload of
bench/relay.py (N queued messages to smtp-sink, postern started, time until
all are sent) with tracking_retention_time = 0 (off) and 90d (on),
alternating; prints qmgr's own CPU time per relayed message (from
/proc/<pid>/stat just before the stop) and the relay rate, with medians.
Run as root after `cargo build --release --bins`, with smtp-sink installed
(Debian's postfix package). Usage: bench/track_cost.py [N] [RUNS]
"""
import importlib.util, os, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("relay", os.path.join(HERE, "relay.py"))
relay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(relay)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
HZ = os.sysconf("SC_CLK_TCK")


def qmgr_pid(m):
    with open(os.path.join(m.dir, "spool", "pid", "status")) as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "qmgr":
                return int(fields[3])
    raise RuntimeError("no qmgr in pid/status")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def main():
    sink = relay.Sink()
    cpu = {"0": [], "90d": []}
    rate = {"0": [], "90d": []}
    try:
        for r in range(RUNS):
            for t in (["0", "90d"] if r % 2 == 0 else ["90d", "0"]):
                relay.Postern.extra = [f"tracking_retention_time={t}"]
                m = relay.Postern(sink.port)
                try:
                    m.ensure_queue()
                    m.stop()
                    relay.submit_all(m, N, 4096, 8)
                    t0 = time.time()
                    m.start()
                    if not relay.wait_delivered(m, N, 600):
                        raise RuntimeError("not all delivered")
                    dt = time.time() - t0
                    c = cpu_seconds(qmgr_pid(m))
                finally:
                    m.cleanup()
                cpu[t].append(c * 1e6 / N)
                rate[t].append(N / dt)
                print(f"run {r + 1}: tracking_retention_time={t}: qmgr {c * 1e6 / N:.0f} us/msg, {N / dt:.0f} msg/s", flush=True)
    finally:
        sink.stop()
    for t in cpu:
        print(f"tracking_retention_time={t}: qmgr CPU median {statistics.median(cpu[t]):.0f} us/msg, "
              f"relay median {statistics.median(rate[t]):.0f} msg/s")


if __name__ == "__main__":
    main()
