#!/usr/bin/env python3
"""Tables for scripts/bench.sh: medians of its raw results.

    report.py table RAW META      the tables, markdown, for the terminal
    report.py page RAW META       the same as a page (docs/performance.md)
    report.py estimate ROUNDS MODE FS,FS.. CELL... -- EARLIER_RAW...   how long a run takes

RAW is tab separated: kind round fs row value status detail, where kind is
  time    one timed step (value: seconds; status ok, fail, missing or nodata)
  mount   seconds from the mount command to a live mount (row: the cell)
  rss     the daemon's VmHWM in KiB before unmount (row: the cell)
  cell    the whole cell's wall time, mount to unmount (for estimates)
  import  one image import (fs: the tool)
META is tab separated key value lines.
"""
import os
import statistics
import sys
from collections import OrderedDict, defaultdict

FS = ["kernel", "fo2", "fo1", "lfs", "lfsm", "base"]
LABEL = {
    "kernel": "kernel overlayfs",
    "fo2": "fuse-overlayfs 2.0",
    "fo1": "fuse-overlayfs 1.10",
    "lfs": "layerfs-overlay",
    "lfsm": "layerfs mount",
    "lfs-load": "layerfs load",
    "base": "layerfs-overlay baseline",
}
TOOLS = OrderedDict(
    [
        ("lfs-load", "`layerfs load` (into an empty store)"),
        ("umoci", "`umoci unpack` (one rootfs, whiteouts applied)"),
        ("tar", "`tar -x` of each layer into its own directory"),
    ]
)
# Rough seconds per cell and filesystem when no earlier full run exists to go by.
GUESS = {"full": 6.0, "quick": 0.5}
GUESS_IMPORT = {"full": 15.0, "quick": 0.5}


def read_raw(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                parts += [""] * (7 - len(parts))
            kind, rnd, fs, row, value, status, detail = parts[:7]
            v = float(value) if value else None
            rows.append((kind, rnd, fs, row, v, status, detail))
    return rows


def read_meta(path):
    meta = defaultdict(list)
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k].append(v)
    return meta


def secs(v):
    if v >= 100:
        return f"{v:.0f}"
    if v < 0.01:
        return f"{v:.4f}"
    return f"{v:.3g}"


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return "–"
    r = a / b
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


class Cell:
    """All records of one (row, filesystem)."""

    def __init__(self):
        self.values = []
        self.fails = []
        self.other = None  # "missing" or "no data"

    def add(self, v, status, detail):
        if status == "ok":
            self.values.append(v)
        elif status == "fail":
            self.fails.append(detail or "failed")
        elif status == "missing":
            self.other = "missing"
        elif status == "nodata":
            self.other = "no data"

    def median(self):
        if self.fails or not self.values:
            return None
        return statistics.median(self.values)

    def text(self):
        if self.other:
            return self.other
        if self.fails:
            n = len(self.fails) + len(self.values)
            extra = f" ({len(self.fails)}/{n})" if self.values else ""
            return f"**{self.fails[0]}**{extra}"
        if not self.values:
            return "–"
        return secs(statistics.median(self.values))


def table(lines):
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    out = []
    for n, r in enumerate(lines):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append(
                "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
            )
    return "\n".join(out)


def tables(raw, meta):
    times = OrderedDict()
    mounts = defaultdict(list)
    rss = OrderedDict()
    imports = defaultdict(Cell)
    for kind, _rnd, fs, row, v, status, detail in raw:
        if kind == "time":
            times.setdefault(row, defaultdict(Cell))[fs].add(v, status, detail)
        elif kind == "mount":
            mounts[fs].append(v)
        elif kind == "rss":
            rss.setdefault(row, defaultdict(list))[fs].append(v / 1024)
        elif kind == "import":
            imports[fs].add(v, status, detail)
    missing = {k.split(":", 1)[1]: v[0] for k, v in meta.items() if k.startswith("missing:")}
    have_lfsm = any(c["lfsm"].values for c in times.values())
    have_base = any(c["base"].values for c in times.values())
    shown = [f for f in FS if f != "base" or have_base]

    head = ["workload (median s)"] + [LABEL[f] for f in shown]
    head += ["layerfs-overlay / kernel", "layerfs-overlay / fo 2.0"]
    if have_lfsm:
        head += ["layerfs mount / kernel", "layerfs mount / fo 2.0"]
    if have_base:
        head += ["layerfs-overlay / baseline"]
    lines = [head]
    for row, cells in times.items():
        med = {f: cells[f].median() for f in FS}
        line = [row] + [cells[f].text() for f in shown]
        line += [ratio(med["lfs"], med["kernel"]), ratio(med["lfs"], med["fo2"])]
        if have_lfsm:
            line += [ratio(med["lfsm"], med["kernel"]), ratio(med["lfsm"], med["fo2"])]
        if have_base:
            line += [ratio(med["lfs"], med["base"])]
        lines.append(line)
    # mount latency and peak RSS, as rows of the same table
    med = {f: (statistics.median(mounts[f]) if mounts[f] else None) for f in FS}
    line = ["mount (command to live mount)"] + [
        secs(med[f]) if med[f] is not None else ("missing" if f in missing else "–") for f in shown
    ]
    line += [ratio(med["lfs"], med["kernel"]), ratio(med["lfs"], med["fo2"])]
    if have_lfsm:
        line += [ratio(med["lfsm"], med["kernel"]), ratio(med["lfsm"], med["fo2"])]
    if have_base:
        line += [ratio(med["lfs"], med["base"])]
    lines.append(line)
    peak = {f: max((max(v[f]) for v in rss.values() if v[f]), default=None) for f in FS}
    line = ["peak RSS of the daemon, MiB (max)"] + [
        f"{peak[f]:.0f}" if peak[f] is not None
        else ("missing" if f in missing else ("no daemon" if f == "kernel" else "–"))
        for f in shown
    ]
    line += ["–", ratio(peak["lfs"], peak["fo2"])]
    if have_lfsm:
        line += ["–", ratio(peak["lfsm"], peak["fo2"])]
    if have_base:
        line += [ratio(peak["lfs"], peak["base"])]
    lines.append(line)
    out = [table(lines)] if times else []

    if rss:
        fuse = [f for f in shown if f != "kernel"]
        lines = [["peak RSS by cell (VmHWM, MiB, median)"] + [LABEL[f] for f in fuse]]
        for row, by_fs in rss.items():
            lines.append(
                [row] + [f"{statistics.median(by_fs[f]):.1f}" if by_fs[f] else "–" for f in fuse]
            )
        out.append(table(lines))

    if imports:
        name = meta.get("import", ["image"])[0]
        lines = [[f"import of the {name}", "median s", "/ umoci unpack"]]
        um = imports["umoci"].median() if "umoci" in imports else None
        for tool, label in TOOLS.items():
            c = imports.get(tool)
            if c is None or (not c.values and not c.fails):
                text = "missing" if tool in missing else "–"
                lines.append([label, text, "–"])
                continue
            lines.append([label, c.text(), ratio(c.median(), um)])
        out.append(table(lines))

    notes = []
    for f, why in missing.items():
        if f == "base" and not have_base:
            continue
        # clap's "unexpected argument '<a long path>'": the subcommand is not there yet
        why = why.split(" '")[0]
        notes.append(f"- {LABEL.get(f, f)}: missing — {why}")
    for k, v in meta.items():
        if k.startswith("nodata:"):
            notes.append(f"- {k.split(':', 1)[1]} rows: no data — {v[0]}")
    if notes:
        out.append("\n".join(notes))
    return "\n\n".join(out)


def page(raw, meta):
    m = {k: v[0] for k, v in meta.items()}
    rounds = m.get("rounds", "?")
    dur = int(m.get("duration", "0"))
    parts = [
        "# Performance",
        "<!-- Generated by `scripts/bench.sh --out docs/performance.md`; do not edit by hand, rerun it. -->",
        "layerfs beside kernel overlayfs and fuse-overlayfs on the same layer directories "
        "(and `layerfs mount` on the same image from a layer store). Made by "
        "`scripts/bench.sh` (issue 10); rerun it to refresh this page.",
        f"- **Date:** {m.get('date', '?')}; {m.get('mode', '?')} run, {rounds} rounds, "
        f"{dur // 60} min {dur % 60} s",
        f"- **Machine:** {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), {m.get('ram', '?')} RAM, "
        f"Linux {m.get('kernel', '?')}, layers and uppers on {m.get('fs_disk', '?')}; "
        "a shared VM, so trust ratios more than absolute numbers",
        f"- **Versions:** layerfs {m.get('layerfs', '?')}; fuse-overlayfs 2.0: {m.get('fo2') or 'missing'}; "
        f"1.10: {m.get('fo1') or 'missing'}; kernel overlayfs options: {m.get('kernel_opts', '?')}",
        f"- **Data:** generated image: {m.get('gen', '?')}; Debian image: {m.get('debian', 'missing')}",
        "",
        "Each cell is the median over rounds of: a fresh mount (empty upper and work "
        "directories), caches dropped (`echo 3 > /proc/sys/vm/drop_caches`), the step timed "
        "cold, then (rows marked warm) again on the same mount. Filesystems take turns cell "
        "by cell, in an order that rotates every round. A failed step shows its error; "
        "**bold** marks failures. Ratios are medians divided (below 1 means layerfs is faster).",
        "",
        tables(raw, meta),
        "",
        "## What the rows do",
        "",
        "- `find`, `ls -lR`, `du -s`: over the whole mount; `find` also checks the entry count "
        "against the merged view computed from the layer directories.",
        "- `stat of N paths`: `stat` (via `xargs`) of up to 10k merged paths in a shuffled order.",
        "- `tar c`: `tar -cf - . | cat > /dev/null` of the mount, without `big/` on the generated "
        "image (GNU tar reads nothing when it writes to /dev/null itself).",
        "- read: `dd bs=1M` of a big file; 4 parallel readers each read a quarter of the other one.",
        "- copy-up: `printf x >> big1`; chmod: `chmod 600 big2` (a full copy-up without metacopy).",
        "- create: 50 files of 1 KiB per directory (Python), then `rm -rf` of them on the same mount.",
        "- rm -rf / rename / mv of directories that exist only in the lower layers; "
        "`rename(2)` fails with EXDEV where the filesystem cannot rename such a directory, "
        "and `mv` then falls back to copying.",
        "- import: the image from its OCI layout into a store or a rootfs, caches dropped before.",
        "- lookups of missing names: 2000 `stat`s (Python) of names that no layer has, in "
        "`usr/lib/python3` of an image of N layers that each add a file there, after one listing "
        "of it: what `PATH` searches, the dynamic linker and imports do. Kernel overlayfs cannot "
        "mount stacks deeper than its option page holds.",
        "",
        "Kernel overlayfs runs with the machine's module defaults (above): without "
        "`redirect_dir` it answers EXDEV to the rename of a lower directory, and without "
        "`metacopy` a chmod copies the whole file up. `KERNEL_OVL_OPTS=redirect_dir=on,metacopy=on` "
        "measures it with them. fuse-overlayfs 2.0 runs as root, so with FUSE passthrough for "
        "file data; layerfs-overlay with its default options.",
        "",
        "Run it (as root): `scripts/bench.sh` (full: says how long it will take, starts 10 s "
        "later), `scripts/bench.sh --quick` (CI: one round on small data), `--only REGEX`, "
        "`--fs kernel,lfs`, `--rounds N`, `--out docs/performance.md` to write this page, "
        "`--report RAW` to redo the tables of an earlier run; see the header of "
        "`scripts/bench.sh`. Micro-benchmarks of the union core: `cargo bench --bench union`.",
    ]
    return "\n".join(parts) + "\n"


def estimate(earlier, rounds, mode, filesystems, cells):
    """From earlier raw files (oldest first): each cell's times in the latest run that
    has it; a rough guess for cells no run has."""
    per = {}
    imp = {}
    for path in earlier:
        run_per = defaultdict(list)
        run_imp = defaultdict(list)
        for kind, _rnd, fs, row, v, _status, _d in read_raw(path):
            if kind == "cell":
                run_per[(row, fs)].append(v)
            elif kind == "import":
                run_imp[fs].append(v)
        per.update(run_per)
        imp.update(run_imp)
    guessed = not per
    total = 0.0
    for c in cells:
        if c == "import":
            total += sum(statistics.median(v) for v in imp.values()) if imp else 3 * GUESS_IMPORT[mode]
            continue
        for f in filesystems:
            v = per.get((c, f))
            total += statistics.median(v) if v else GUESS[mode]
    total *= rounds
    m, s = divmod(int(total), 60)
    how = (
        f"a rough guess, no earlier {mode} run to go by"
        if guessed
        else f"going by the earlier {mode} runs in {os.path.dirname(earlier[-1])}"
    )
    return f"this will take about {m} min {s} s ({how})"


def main():
    cmd = sys.argv[1]
    if cmd == "estimate":
        args = sys.argv[2:]
        sep = args.index("--")
        fs = [f for f in args[2].split(",") if f]
        print(estimate(args[sep + 1 :], int(args[0]), args[1], fs, args[3:sep]))
        return
    raw = read_raw(sys.argv[2])
    meta = read_meta(sys.argv[3])
    if cmd == "table":
        print(tables(raw, meta))
    elif cmd == "page":
        print(page(raw, meta), end="")
    else:
        sys.exit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
