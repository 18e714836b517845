#!/usr/bin/python3
"""What a run was made on: machine, kernel, compiler, flags, commit.

The suite runner stores this under context["mpbench"] of every run file.
`fingerprint` is the part that must match for two runs' absolute numbers to
be comparable: the machine (CPU vendor, model name, family/model/stepping,
the flags that change what code runs or how time is read, every cache
level, core count, kernel, hypervisor, transparent huge pages) and the build
(compiler, flags, compilation mode). `machine_id` is a short hash of the
machine part: `compare` warns and `history` draws separate lines when it
differs. Two 2-vCPU VMs of one cloud differ here (an AMD EPYC and an Intel
Xeon host: page faults, wake-ups and memory bandwidth do not scale
together), which is why the regression gate (scripts/gate) measures a
change against its parent on one machine instead of against numbers from
another.

`machine_class` (`<arch>-<N>cpu`, e.g. x86_64-2cpu) is a coarse label for
file names; it says nothing about comparability.

    /usr/bin/python3 scripts/machine.py            # prints the context as JSON
    /usr/bin/python3 scripts/machine.py --class    # prints the machine class
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _cmd(args, cwd=None, timeout=60) -> str | None:
    try:
        r = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def machine_class() -> str:
    return f"{platform.machine() or 'unknown'}-{cpu_count()}cpu"


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "cpu model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or None


def _cpuinfo_field(key: str) -> str | None:
    m = re.search(rf"^{key}\s*:\s*(.+)$", _read("/proc/cpuinfo") or "", re.M)
    return m.group(1).strip() if m else None


def cpu_vendor() -> str | None:
    return _cpuinfo_field("vendor_id") or _cpuinfo_field("CPU implementer")


def cpu_id() -> str | None:
    """"family/model/stepping" (x86), e.g. "6/143/8"."""
    parts = [_cpuinfo_field(k) for k in ("cpu family", "model", "stepping")]
    return "/".join(parts) if all(parts) else None


# CPU flags that change which code runs (vector widths, string-copy
# microcode, transactional memory) or how time is read (TSC behaviour).
RELEVANT_FLAGS = ("sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512vl",
                  "amx_tile", "sha_ni", "erms", "fsrm", "rtm", "constant_tsc",
                  "nonstop_tsc", "tsc_known_freq", "invpcid", "pcid", "pdpe1gb")


def cpu_flags() -> str | None:
    """The RELEVANT_FLAGS this CPU has, space-separated (x86 only)."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    have = set(flags.split())
    return " ".join(f for f in RELEVANT_FLAGS if f in have)


def hypervisor() -> str | None:
    """The hypervisor lscpu reports ("KVM"), "none" on bare metal, None when
    unknown. systemd-detect-virt names only the innermost layer (a container
    inside a VM reads "docker")."""
    out = _cmd(["lscpu"])
    if out is None:
        return None
    m = re.search(r"^Hypervisor vendor:\s*(.+)$", out, re.M)
    return m.group(1).strip() if m else "none"


def transparent_hugepages() -> str | None:
    """The bracketed choice of /sys/kernel/mm/transparent_hugepage/enabled."""
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def caches() -> str | None:
    """"L1d:48K,L1i:32K,L2:1024K,L3:32768K" from cpu0's sysfs cache info."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    out = []
    for d in sorted(base.glob("index*")):
        level, kind, size = (_read(str(d / f)) for f in ("level", "type", "size"))
        if not level or not size:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind or "", "")
        out.append(f"L{level}{suffix}:{size}")
    return ",".join(out) or None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def virtualization() -> str | None:
    v = _cmd(["systemd-detect-virt"])
    if v:
        return v  # "none" on bare metal
    flags = _read("/proc/cpuinfo") or ""
    if re.search(r"^flags\s*:.*\bhypervisor\b", flags, re.M):
        product = _read("/sys/class/dmi/id/product_name")
        return f"hypervisor ({product})" if product else "hypervisor"
    return None


def os_release() -> str | None:
    text = _read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else None


def memory_total() -> str | None:
    text = _read("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return f"{int(m.group(1)) // 1024} MiB" if m else None


def git_info(root: Path) -> dict:
    commit = _cmd(["git", "rev-parse", "HEAD"], cwd=root)
    if not commit:
        return {"commit": None, "commit_short": "nocommit", "dirty": None}
    status = _cmd(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {
        "commit": commit,
        "commit_short": commit[:10],
        "dirty": bool(status),
        "branch": _cmd(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=root),
        "commit_date": _cmd(["git", "show", "-s", "--format=%cI", "HEAD"], cwd=root),
    }


_DROP_WITH_VALUE = {"-MF", "-iquote", "-isystem", "-I", "-c", "-o", "-x",
                    "-include", "-MT", "-MQ"}


def compile_flags(bazel: list[str], root: Path, target: str) -> dict:
    """Compiler, its version and the flags Bazel compiles `target`'s own
    sources with (from `bazel aquery`, so .bazelrc and the toolchain are
    both accounted for)."""
    text = _cmd(bazel + ["aquery", f'mnemonic("CppCompile", {target})',
                         "--output=jsonproto"], cwd=root, timeout=300)
    args = None
    if text:
        try:
            actions = json.loads(text).get("actions", [])
        except json.JSONDecodeError:
            actions = []
        # Prefer the non-PIC object, which the binary links.
        actions.sort(key=lambda a: "-fPIC" in a.get("arguments", []))
        if actions:
            args = actions[0].get("arguments")
    if not args:
        cc = os.environ.get("CC") or "gcc"
        return {"compiler": cc, "compiler_version": _first_line(_cmd([cc, "--version"])),
                "flags": None}
    flags, skip = [], False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in _DROP_WITH_VALUE:
            skip = True
            continue
        if (not a.startswith("-") or a.startswith(("-I", "-frandom-seed", "-D__DATE__",
                                                    "-D__TIME__", "-D__TIMESTAMP__"))
                or a in ("-MD", "-MMD")):
            continue
        flags.append(a)
    return {"compiler": args[0],
            "compiler_version": _first_line(_cmd([args[0], "--version"])),
            "flags": " ".join(shlex.quote(f) for f in flags)}


def _first_line(s: str | None) -> str | None:
    return s.splitlines()[0] if s else None


def compilation_mode(bazel_bin: str | None) -> str | None:
    """"opt" from .../bazel-out/k8-opt/bin."""
    if not bazel_bin:
        return None
    m = re.search(r"bazel-out/[^/]*-(opt|dbg|fastbuild)(?:-[^/]*)?/bin", bazel_bin)
    return m.group(1) if m else None


def benchmark_library_version() -> str | None:
    return _cmd(["dpkg-query", "-W", "-f=${Version}", "libbenchmark-dev"])


def collect(root: Path, bazel: list[str] | None = None,
            target: str | None = None, bazel_bin: str | None = None) -> dict:
    """Everything we record about the machine and build. `bazel`, `target`
    and `bazel_bin` add the compiler, flags and compilation mode."""
    info = {
        "machine_class": machine_class(),
        "host": platform.node(),
        "arch": platform.machine(),
        "cpu_vendor": cpu_vendor(),
        "cpu_model": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_flags": cpu_flags(),
        "transparent_hugepages": transparent_hugepages(),
        "hypervisor": hypervisor(),
        "cores": cpu_count(),
        "online_cpus": os.cpu_count(),
        "caches": caches(),
        "memory": memory_total(),
        "kernel": platform.release(),
        "os": os_release(),
        "governor": governor(),
        "virtualization": virtualization(),
        "benchmark_library": benchmark_library_version(),
        "python": sys.version.split()[0],
    }
    info.update(git_info(root))
    if bazel and target:
        info.update(compile_flags(bazel, root, target))
    info["compilation_mode"] = compilation_mode(bazel_bin)
    info["fingerprint"] = fingerprint(info)
    info["machine_id"] = machine_id(info["fingerprint"])
    return info


MACHINE_KEYS = ("cpu_vendor", "cpu_model", "cpu_id", "cpu_flags", "caches",
                "cores", "kernel", "hypervisor", "virtualization",
                "transparent_hugepages")
BUILD_KEYS = ("compiler_version", "flags", "compilation_mode")
FINGERPRINT_KEYS = MACHINE_KEYS + BUILD_KEYS


def fingerprint(info: dict) -> dict:
    return {k: info.get(k) for k in FINGERPRINT_KEYS}


def machine_id(fp: dict) -> str:
    """10 hex digits naming the machine part of a fingerprint. Runs written
    before the finer fingerprint (no cpu_vendor) hash what they have, so they
    group with each other, never with a newer run of another host."""
    part = {k: fp.get(k) for k in MACHINE_KEYS if k in fp}
    return hashlib.sha1(json.dumps(part, sort_keys=True).encode()).hexdigest()[:10]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="machine", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--class", dest="cls", action="store_true",
                   help="print only the machine class (a coarse label used in "
                   "file names), e.g. x86_64-2cpu")
    p.add_argument("--fingerprint", action="store_true",
                   help="print only the machine fingerprint and its id")
    args = p.parse_args(argv)
    if args.cls:
        print(machine_class())
        return 0
    if args.fingerprint:
        info = collect(Path(__file__).resolve().parent.parent)
        fp = {k: info.get(k) for k in MACHINE_KEYS}
        print(json.dumps({"machine_id": info["machine_id"], **fp}, indent=2))
        return 0
    root = Path(__file__).resolve().parent.parent
    print(json.dumps(collect(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
