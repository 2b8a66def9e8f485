"""Kernel headers for bcc: the distribution's build tree, or a directory generated from BTF.

bcc compiles C at run time against `BCC_KERNEL_SOURCE`. Kernels without installed headers (and
distribution headers of another version, whose struct offsets are wrong) get a directory built from
the running kernel's BTF: `vmlinux.h`, `autoconf.h` from /proc/config.gz, a forced-include
`kconfig.h` and empty stubs for the headers bcc's own helpers include.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from probes.errors import CaptureUnavailable

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
CONFIG_GZ = Path("/proc/config.gz")
STAMP = ".complete"
# Bump when the generated layout changes so cached directories are rebuilt.
LAYOUT_VERSION = "2"

# Headers that bcc's built-in helpers.h / bpf_workaround.h include (found by test-compiling):
# vmlinux.h already defines everything they would provide.
STUB_HEADERS = (
    "asm/page.h",
    "linux/bpf_common.h",
    "linux/log2.h",
    "linux/types.h",
    "linux/version.h",
    "uapi/linux/bpf.h",
    "uapi/linux/if_ether.h",
    "uapi/linux/if_packet.h",
    "uapi/linux/ptrace.h",
)

KCONFIG_H = """\
/* Forced include (bcc passes -include include/linux/kconfig.h): config macros, then all types. */
#ifndef L7SCOPE_KCONFIG_H
#define L7SCOPE_KCONFIG_H
#include <generated/autoconf.h>
#define __ARG_PLACEHOLDER_1 0,
#define __take_second_arg(__ignored, val, ...) val
#define __is_defined(x) ___is_defined(x)
#define ___is_defined(val) ____is_defined(__ARG_PLACEHOLDER_##val)
#define ____is_defined(arg1_or_junk) __take_second_arg(arg1_or_junk 1, 0)
#define IS_BUILTIN(option) __is_defined(option)
#define IS_MODULE(option) __is_defined(option##_MODULE)
#define IS_ENABLED(option) (IS_BUILTIN(option) || IS_MODULE(option))
/* bcc reads struct fields through probe reads; CO-RE relocations would only confuse its loader. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include <vmlinux.h>
/* vmlinux.h already holds the uapi bpf enums: skip bcc's built-in copy of uapi/linux/bpf.h. */
#define _UAPI__LINUX_BPF_H__
%(extra)s
#endif
"""

# Macros that the stubbed uapi headers would have defined and bcc's helpers use.
EXTRA_MACROS = """\
#ifndef PAGE_SHIFT
#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#endif
#ifndef LINUX_VERSION_CODE
#define LINUX_VERSION_CODE %(version_code)d
#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))
#endif
"""


def build_tree(release: str | None = None) -> Path:
    """The distribution's kernel build directory for this kernel."""
    return Path("/lib/modules") / (release or platform.release()) / "build"


def prepare_headers(cache_dir: Path) -> Path:
    """Return the directory to pass as BCC_KERNEL_SOURCE, generating it from BTF when needed."""
    release = platform.release()
    installed = build_tree(release)
    if (installed / "include").is_dir():
        return installed
    target = Path(cache_dir) / release
    if (target / STAMP).is_file() and (target / STAMP).read_text() == LAYOUT_VERSION:
        return target
    if not BTF_PATH.is_file():
        raise CaptureUnavailable(
            f"no kernel headers in {installed} and no BTF at {BTF_PATH}: install this kernel's "
            "headers package or run a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )
    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None
    )
    if bpftool is None:
        raise CaptureUnavailable("bpftool is missing: install it (Debian/Ubuntu: apt-get install bpftool)")
    return _generate(target, bpftool, release)


def _generate(target: Path, bpftool: str, release: str) -> Path:
    """Build the header tree in a temporary sibling, then rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=target.parent))
    try:
        vmlinux = subprocess.run(
            [bpftool, "btf", "dump", "file", str(BTF_PATH), "format", "c"],
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
        (work / "include").mkdir()
        (work / "include" / "vmlinux.h").write_bytes(vmlinux)
        _write(work / "include/generated/autoconf.h", autoconf_h(_read_config()))
        _write(
            work / "include/linux/kconfig.h",
            KCONFIG_H % {"extra": EXTRA_MACROS % {"version_code": version_code(release)}},
        )
        for stub in STUB_HEADERS:
            _write(work / "include" / stub, "/* empty: vmlinux.h provides these definitions */\n")
        _write(work / STAMP, LAYOUT_VERSION)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(work, ignore_errors=True)
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CaptureUnavailable(f"bpftool could not dump the kernel BTF ({detail[0]}): run as root") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _read_config() -> str:
    """The running kernel's config, or an empty one (autoconf.h is then empty, which bcc tolerates)."""
    try:
        return gzip.decompress(CONFIG_GZ.read_bytes()).decode()
    except OSError:
        boot = Path("/boot") / f"config-{platform.release()}"
        return boot.read_text() if boot.is_file() else ""


def autoconf_h(config: str) -> str:
    """Translate `.config` lines into the `#define CONFIG_*` form of include/generated/autoconf.h."""
    out = ["/* generated from the running kernel's config */"]
    for line in config.splitlines():
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if value == "y":
            out.append(f"#define {name} 1")
        elif value == "m":
            out.append(f"#define {name}_MODULE 1")
        elif value != "n":
            out.append(f"#define {name} {value}")
    return "\n".join(out) + "\n"


def version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a release string such as '6.18.44-fc-v669'."""
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in release.split("-")[0].split(".")[:3]]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return (major << 16) + (minor << 8) + min(patch, 255)
