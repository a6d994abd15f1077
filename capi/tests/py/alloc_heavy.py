"""Allocation-heavy Python workload with a deterministic digest.

Run with PYTHONMALLOC=malloc so that every object allocation goes through
the C allocator (librulloc under LD_PRELOAD). The output (one digest line
per section and a final digest) must be byte-identical with and without
the library; PYTHONHASHSEED is fixed by the harness, and nothing printed
depends on addresses, timing or set iteration order.
"""

import collections
import gc
import hashlib
import json
import random
import re
import sys
import threading

SCALE = int(sys.argv[1]) if len(sys.argv) > 1 else 1
TOTAL = hashlib.sha256()


def section(name, value):
    digest = hashlib.sha256(repr(value).encode()).hexdigest()[:16]
    TOTAL.update(f"{name}:{digest}".encode())
    print(f"{name:<12} {digest}")


def dicts(rng):
    """Big dicts of strings and lists: growth, deletion, rebuild."""
    table = {}
    for i in range(60_000 * SCALE):
        key = f"key{i:07d}-{rng.randrange(10**9)}"
        table[key] = [i, str(i) * (i % 9), (i, -i)]
    for key in list(table)[::2]:
        del table[key]
    rebuilt = {k[::-1]: len(v[1]) for k, v in table.items()}
    counts = collections.Counter(len(k) % 17 for k in rebuilt)
    return len(table), sum(rebuilt.values()), sorted(counts.items())


class Node:
    def __init__(self, value, parent=None):
        self.value = value
        self.parent = parent
        self.children = []


class Slotted:
    __slots__ = ("a", "b", "c")

    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c


def objects(rng):
    """Many small objects, a tree with parent cycles, gc."""
    root = Node(0)
    nodes = [root]
    for i in range(1, 80_000 * SCALE):
        parent = nodes[rng.randrange(len(nodes))]
        child = Node(i, parent)
        parent.children.append(child)
        nodes.append(child)
    depth_sum = 0
    for node in nodes[::97]:
        while node.parent is not None:
            node = node.parent
            depth_sum += 1
    slotted = [Slotted(i, str(i), float(i) / 3) for i in range(50_000 * SCALE)]
    total = sum(s.a for s in slotted) + len("".join(s.b for s in slotted[::50]))
    fanout = sorted(collections.Counter(len(n.children) for n in nodes).items())
    del nodes, root, slotted
    collected = gc.collect()
    return depth_sum, total, fanout, collected >= 0


def strings(rng):
    """Concatenation, join, split, replace, regex, formatting."""
    words = ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(1, 12))) for _ in range(25_000 * SCALE)]
    text = " ".join(words)
    grown = ""
    for w in words[:20_000]:
        grown += w[::-1] + ","
    parts = text.split(" ")
    replaced = text.replace("a", "AAAA").replace("e", "")
    found = re.findall(r"\b([b-d]\w{3,})\b", text)
    formatted = [f"{i:>8}|{w:<12}|{len(w):03d}" for i, w in enumerate(words[:30_000])]
    upper = text.upper().encode("utf-8")
    return len(grown), len(parts), len(replaced), len(found), found[:20], hashlib.md5("\n".join(formatted).encode()).hexdigest(), len(upper)


def containers(rng):
    """Lists, tuples, sets, deques, sorting, bytes/bytearray growth."""
    pairs = [(rng.randrange(1000), rng.random(), str(rng.randrange(10**6))) for _ in range(80_000 * SCALE)]
    pairs.sort()
    sets = [frozenset(rng.randrange(200) for _ in range(rng.randrange(30))) for _ in range(20_000)]
    union = set().union(*sets)
    inter = sorted(len(a & b) for a, b in zip(sets, sets[1:]))[-10:]
    dq = collections.deque(maxlen=5000)
    for i in range(100_000):
        dq.append((i, i * i))
    buf = bytearray()
    for i in range(30_000 * SCALE):
        buf += i.to_bytes(4, "little") * (i % 5)
    blob = bytes(buf)
    return pairs[0], pairs[-1], len(union), inter, dq[0], len(blob), hashlib.sha1(blob).hexdigest()


def json_roundtrip(rng):
    """Nested structures through json (many temporary strings)."""
    doc = [
        {"id": i, "name": f"item-{i}", "tags": [f"t{rng.randrange(50)}" for _ in range(rng.randrange(8))], "score": i * 0.25, "nested": {"a": [i] * (i % 6), "b": None}}
        for i in range(15_000 * SCALE)
    ]
    encoded = json.dumps(doc, sort_keys=True)
    decoded = json.loads(encoded)
    again = json.dumps(decoded, sort_keys=True)
    return len(encoded), encoded == again, hashlib.sha256(again.encode()).hexdigest()


def threaded(rng):
    """Threads allocating at the same time (the GIL switches between them
    every few milliseconds); each result is deterministic and collected in
    thread order."""
    seeds = [rng.randrange(10**9) for _ in range(4)]
    results = [None] * len(seeds)

    def work(index):
        local = random.Random(seeds[index])
        acc = {}
        for i in range(30_000 * SCALE):
            key = local.randrange(5000)
            acc.setdefault(key, []).append(str(i))
            if len(acc[key]) > 8:
                acc[key] = acc[key][-3:]
        results[index] = sorted((k, tuple(v)) for k, v in acc.items())[:50]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    rng = random.Random(20240611)
    for name, fn in [("dicts", dicts), ("objects", objects), ("strings", strings), ("containers", containers), ("json", json_roundtrip), ("threads", threaded)]:
        section(name, fn(rng))
    print(f"{'total':<12} {TOTAL.hexdigest()}")


if __name__ == "__main__":
    main()
