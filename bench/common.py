"""What the benchmark scripts share: the machine description and the RESULTS.md tables."""
import datetime
import os
import platform
import shlex
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(BENCH_DIR, "RESULTS.md")
CIFAR10_FOLDER = "folder:" + os.path.normpath(
    os.path.join(BENCH_DIR, "..", "..", "shared", "data", "cifar10"))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_info(script):
    """Date, machine and the exact command of this run, for the JSON line and RESULTS.md."""
    return {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": cores(),
            "command": " ".join(["python", script] + [shlex.quote(a) for a in sys.argv[1:]])}


def append_row(path, section, header, cells):
    """Append one table row under `section` of the Markdown file (created when missing)."""
    row = "| " + " | ".join(cells) + " |"
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{header}\n"
    # Insert after the last row of this section's table, before any later section.
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    end = len(text) if end < 0 else end + 1
    body = text[start:end].rstrip("\n") + "\n" + row + "\n"
    text = text[:start] + body + ("\n" + text[end:] if end < len(text) else "")
    with open(path, "w") as f:
        f.write(text)
