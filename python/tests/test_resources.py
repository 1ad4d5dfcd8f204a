"""What repeated and concurrent use costs: buffers and plans reused, memory flat over 1,000
calls, two contexts on two threads at once."""
import os
import threading

import numpy as np

import ssmax

from conftest import GPU_SPECS, assert_close, qkv


# Under AddressSanitizer (the library built with it, its runtime preloaded) freed memory waits in
# a quarantine of up to 256 MiB, so RSS measures the sanitizer, not us: the counts still apply.
SANITIZED = "asan" in os.environ.get("LD_PRELOAD", "")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_no_leak_over_1000_calls(ctx):
    q, k, v = qkv(seed=10, B=1, Hq=2, Hkv=1, Lq=4, Lk=32, D=8)
    c = ssmax.Context(ctx.device.spec)  # its own context, so the counts start at zero
    try:
        for _ in range(50):  # warm: first plan, buffers, allocator pools
            o, lse = c.attention(q, k, v, causal=True, lse=True)
        st0, rss0 = c.stats(), rss_bytes()
        assert st0["buffers_created"] == 5 and st0["plans_created"] == 1
        for i in range(1000):
            q[0, 0, 0, 0] = i * 1e-3  # new data every call: written, not re-planned
            o, lse = c.attention(q, k, v, causal=True, lse=True)
        st1, grew = c.stats(), rss_bytes() - rss0
        assert st1["buffers_created"] == st0["buffers_created"], st1
        assert st1["plans_created"] == st0["plans_created"], st1
        assert st1["calls"] == st0["calls"] + 1000
        assert SANITIZED or grew < 4 << 20, "RSS grew %d KiB over 1,000 calls" % (grew >> 10)
        assert_close(ssmax.reference(q, k, v, causal=True).o, o, np.float32)
    finally:
        c.close()
    assert c.stats()["buffers_destroyed"] == c.stats()["buffers_created"]
    assert c.stats()["plans_destroyed"] == c.stats()["plans_created"]


def test_caches_are_bounded():
    with ssmax.Context("cpu") as c:
        q, k, v = qkv(seed=11)
        c.attention(q, k, v, s=0.4)
        c.attention(q, k, v, s=0.4, causal=True)  # another plan, the same buffers
        assert c.stats()["plans_created"] == 2 and c.stats()["buffers_created"] == 4
        c.attention(q, k, v, s=np.array([0.1, 0.2, 0.3, 0.4]))  # per-head s: another plan
        c.attention(q, k, v, s=np.array([0.1, 0.2, 0.3, 0.5]))  # other values: another
        assert c.stats()["plans_created"] == 4
        for lk in range(20, 30):  # ten sizes: at most a few buffer sets alive
            q2, k2, v2 = qkv(seed=lk, Lk=lk)
            c.attention(q2, k2, v2)
        st = c.stats()
        alive = st["buffers_created"] - st["buffers_destroyed"]
        assert alive <= 4 * ssmax.Context._MAX_BUFFER_SETS, st
        assert st["plans_created"] - st["plans_destroyed"] <= ssmax.Context._MAX_PLANS, st


def test_two_threads_two_contexts():
    specs = ["cpu", GPU_SPECS[0] if GPU_SPECS else "cpu"]
    errors, done = [], []

    def work(spec, seed):
        try:
            with ssmax.Context(spec) as c:
                for i in range(20):
                    q, k, v = qkv(seed=seed + i, D=16)
                    o = c.attention(q, k, v, causal=True, s=0.3 + 0.01 * i)
                    ref = ssmax.reference(q, k, v, causal=True, s=0.3 + 0.01 * i)
                    assert_close(ref.o, o, np.float32, "%s call %d" % (spec, i))
            done.append(spec)
        except BaseException as e:  # reported by the main thread
            errors.append((spec, e))

    threads = [threading.Thread(target=work, args=(s, 100 * n)) for n, s in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(done) == sorted(specs)


def test_one_context_shared_by_threads():
    """A Context takes a lock per call: two threads may share it."""
    c = ssmax.Context("cpu")
    q, k, v = qkv(seed=12)
    want = ssmax.reference(q, k, v).o
    bad = []

    def work():
        for _ in range(50):
            o = c.attention(q, k, v)
            if ssmax.compare(want, o).nmse > 1e-8:
                bad.append(o)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    c.close()
    assert not bad and c.stats()["calls"] == 100
