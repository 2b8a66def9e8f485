"""Go executables: recognised by .go.buildinfo, crypto/tls functions found through the symbol table and,
stripped, through .gopclntab, their RETs found by disassembly, and the fd offsets checked against Go's
own reflect on the local toolchain. The Go-built cases use tests/probes/go_tls_peer (built once, cached)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from probes import gotls
from tests.support.go_peers import build_peers, go_binary


@pytest.fixture(scope="module")
def peers() -> tuple[Path, Path, Path, Path]:
    return build_peers()


def go_objdump_rets(binary: Path, symbol: str) -> list[int]:
    """RET addresses of one function by `go tool objdump`: the Go toolchain's own disassembler."""
    go = go_binary()
    assert go is not None
    pattern = "^" + re.escape(symbol) + "$"
    out = subprocess.run([go, "tool", "objdump", "-s", pattern, str(binary)], capture_output=True, text=True,
                         check=True, timeout=120).stdout  # fmt: skip
    return [int(line.split()[1], 16) for line in out.splitlines() if re.search(r"\tRET\b", line)]


def go_nm(binary: Path, symbol: str) -> int:
    go = go_binary()
    assert go is not None
    out = subprocess.run([go, "tool", "nm", str(binary)], capture_output=True, text=True, check=True,
                         timeout=120).stdout  # fmt: skip
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise AssertionError(f"{symbol} not in go tool nm output")


def test_go_versions_parse() -> None:
    assert gotls.parse_go_version("go1.26.8") == (1, 26)
    assert gotls.parse_go_version("go1.22rc1") == (1, 22)
    assert gotls.parse_go_version("go1.17") == (1, 17)
    assert gotls.parse_go_version("devel go1.27-abcdef") == (1, 27)
    with pytest.raises(ValueError):
        gotls.parse_go_version("1.26")


def test_layout_refuses_the_stack_abi_and_covers_newer_releases() -> None:
    with pytest.raises(gotls.GoUnsupported, match="register ABI"):
        gotls.layout_for((1, 16))
    assert gotls.layout_for((1, 17)).values() == (0, 0, 0, 16)
    newer = gotls.layout_for((1, 30))
    assert newer.values() == gotls.LAYOUTS[-1][1].values() and "newer than 1.26" in newer.source


def test_ret_finding_ignores_c3_bytes_inside_other_instructions() -> None:
    code = bytes.fromhex(
        "b8c3c3c3c3"  # mov eax, 0xc3c3c3c3
        "4883c308"  # add rbx, 8 (modrm byte 0xc3)
        "c3"  # ret
        "4883c308"  # add rbx, 8
        "c3"  # ret
        "cc"  # int3 padding
    )
    assert gotls.ret_addresses(code, 0x1000) == [0x1000 + 9, 0x1000 + 14]


def test_non_go_files_are_not_go(tmp_path: Path) -> None:
    assert not gotls.is_go(sys.executable)
    assert not gotls.is_go("/bin/sh")
    (tmp_path / "junk").write_bytes(b"\x7fELF" + b"\xff" * 100)
    assert not gotls.is_go(str(tmp_path / "junk"))
    assert not gotls.is_go(str(tmp_path / "missing"))
    with pytest.raises(gotls.GoUnsupported, match="not a Go executable"):
        gotls.inspect(str(Path(sys.executable).resolve()))


@pytest.mark.slow
def test_symtab_and_pclntab_agree_with_the_go_toolchain(peers: tuple[Path, Path, Path, Path]) -> None:
    peer, stripped, _, pie = peers
    go = go_binary()
    assert go is not None
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout.split()[2]
    full, bare = gotls.inspect(str(peer)), gotls.inspect(str(stripped))
    assert gotls.inspect(str(pie)).functions.keys() == full.functions.keys()  # ELF type DYN: same lookup
    assert gotls.is_go(str(peer)) and gotls.is_go(str(stripped))
    assert full.version == bare.version == version
    assert (full.symbols_from, bare.symbols_from) == ("symtab", "pclntab")
    for name in gotls.PROBED:
        assert full.functions[name].entry == go_nm(peer, name)
        assert bare.functions[name].entry == full.functions[name].entry  # same code, same link
    for name in (gotls.READ, gotls.WRITE):
        rets = go_objdump_rets(peer, name)
        assert len(rets) >= 2, rets
        assert list(full.functions[name].rets) == rets
        assert bare.functions[name].rets == full.functions[name].rets


@pytest.mark.slow
def test_a_go_program_without_crypto_tls_has_nothing_to_probe(peers: tuple[Path, Path, Path, Path]) -> None:
    plain = peers[2]
    assert gotls.is_go(str(plain))
    with pytest.raises(gotls.NoTls):
        gotls.inspect(str(plain))


@pytest.mark.slow
def test_the_layout_table_matches_reflect_on_this_toolchain(peers: tuple[Path, Path, Path, Path]) -> None:
    out = subprocess.run([str(peers[0]), "offsets"], capture_output=True, text=True, check=True, timeout=30)
    got = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())
    layout = gotls.layout_for(gotls.parse_go_version(gotls.inspect(str(peers[0])).version))
    assert (int(got["tls.Conn.conn"]), int(got["net.conn.fd"]), int(got["net.netFD.pfd"]),
            int(got["poll.FD.Sysfd"])) == layout.values()  # fmt: skip


@pytest.mark.slow
def test_offsets_come_from_dwarf_when_present_else_from_the_table(
    peers: tuple[Path, Path, Path, Path],
) -> None:
    peer, stripped, _, pie = peers
    table = gotls.layout_for(gotls.parse_go_version(gotls.inspect(str(peer)).version))
    for with_dwarf in (peer, pie):
        layout = gotls.inspect(str(with_dwarf)).layout
        assert layout.source == "DWARF" and layout.values() == table.values()
    assert gotls.dwarf_layout(gotls.parse_elf(stripped.read_bytes())) is None  # -w: no DWARF
    assert gotls.inspect(str(stripped)).layout == table


@pytest.mark.slow
def test_unreadable_dwarf_falls_back_to_the_table_and_says_why(
    peers: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    data = bytearray(peers[0].read_bytes())
    info = gotls.parse_elf(bytes(data)).sections[".debug_info"]
    assert info.compressed
    data[info.offset : info.offset + 4] = (2).to_bytes(4, "little")  # ELFCOMPRESS_ZSTD: not read here
    copy = tmp_path / "peer"
    copy.write_bytes(bytes(data))
    layout = gotls.inspect(str(copy)).layout
    assert layout.values() == gotls.LAYOUTS[-1][1].values()
    assert "DWARF unreadable: .debug_info: compression type 2" in layout.source
