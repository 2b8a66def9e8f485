"""Go `crypto/tls` executables: recognise them, find `(*tls.Conn).Read/Write` and the RETs to probe.

Go links crypto/tls into each executable, so there is no shared library to probe: every Go program
with TLS is inspected on its own (at start-up, and on exec). Uretprobes cannot be used on Go code
(they replace the return address on the goroutine's stack, which the runtime moves and walks), so
the return side is a uprobe on every RET instruction of the function, found by disassembling it.

Where things come from:
- Go executable and version: the `.go.buildinfo` section (magic "\\xff Go buildinf:").
- Functions: (*tls.Conn).Read, Write (entry and every RET), clientHandshake and serverHandshake (entry)
  in the ELF symbol table, or `.gopclntab` when the executable is stripped (`-ldflags=-s -w`
  removes `.symtab` and DWARF; the pcln table stays, the runtime needs it).
- RET instructions: capstone (a full x86-64 decoder: Go code mixes SSE and integer instructions, and a
  byte 0xC3 inside another instruction must not be taken for a RET).
- Struct offsets from `*tls.Conn` to the socket's fd: DWARF when the executable has it (`dwarf_layout`),
  else `LAYOUTS` below; `Layout.source` says which.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import capstone  # imported with the module: a first Go executable is probed ~150 ms sooner

__all__ = [
    "LAYOUTS",
    "PROBED",
    "GoExecutable",
    "GoUnsupported",
    "Layout",
    "NoTls",
    "inspect",
    "is_go",
    "layout_for",
    "parse_go_version",
]

# The functions probed, by their Go symbol name.
READ = "crypto/tls.(*Conn).Read"
WRITE = "crypto/tls.(*Conn).Write"
# The handshake itself (run once per connection), not handshakeContext, which Read and Write call every
# time (uprobe hits cost ~10-20 us each on the measured VMs). Each is optional: a program that only
# dials (or only serves) has the other one removed by the linker.
CLIENT_HANDSHAKE = "crypto/tls.(*Conn).clientHandshake"
SERVER_HANDSHAKE = "crypto/tls.(*Conn).serverHandshake"
HANDSHAKES = (CLIENT_HANDSHAKE, SERVER_HANDSHAKE)
PROBED = (READ, WRITE, *HANDSHAKES)
MIN_VERSION = (1, 17)  # the register ABI (arguments and results in registers) on amd64
BUILDINFO_MAGIC = b"\xff Go buildinf:"
EM_X86_64 = 62
SHT_SYMTAB = 2


class GoUnsupported(Exception):
    """This executable cannot be probed: the message says why (logged once per executable)."""


class NoTls(GoUnsupported):
    """A Go executable without crypto/tls: nothing to probe, nothing wrong."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets from a `*tls.Conn` to the socket's file descriptor.

    tls.Conn.conn is a net.Conn interface (itab, data); its data is a *net.TCPConn, whose embedded
    net.conn holds fd *netFD; netFD.pfd is an internal/poll.FD whose Sysfd is the descriptor.
    """

    conn: int  # tls.Conn.conn (the interface; its data word is 8 bytes further)
    tcp_fd: int  # net.TCPConn -> conn.fd (*netFD)
    netfd_pfd: int  # netFD.pfd
    pfd_sysfd: int  # poll.FD.Sysfd
    source: str

    def values(self) -> tuple[int, int, int, int]:
        return (self.conn, self.tcp_fd, self.netfd_pfd, self.pfd_sysfd)


# From the Go sources of each release: crypto/tls/conn.go (conn is Conn's first field), net/net.go
# (fd is conn's first field; TCPConn embeds conn first), net/fd_posix.go (pfd is netFD's first field),
# internal/poll/fd_unix.go (FD starts with fdmu fdMutex{state uint64; rsema, wsema uint32}, 16 bytes,
# then Sysfd int). Unchanged from Go 1.17 through 1.26; go1.26.8's values are checked by reflect in
# tests/probes/go_tls_peer (`peer offsets`).
LAYOUTS: tuple[tuple[tuple[int, int], Layout], ...] = (
    ((1, 17), Layout(0, 0, 0, 16, "go1.17-1.26 sources; reflect on go1.26.8")),
)
NEWEST_KNOWN = (1, 26)


def parse_go_version(text: str) -> tuple[int, int]:
    """(major, minor) of "go1.26.8", "go1.22rc1", "devel go1.27-abc": ValueError when it is none of these."""
    word = text.split()[-1] if text.startswith("devel") else text
    rest = word.removeprefix("go")
    parts = []
    for piece in rest.split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if len(parts) < 2 or not word.startswith("go"):
        raise ValueError(f"not a Go version: {text!r}")
    return parts[0], parts[1]


def layout_for(version: tuple[int, int]) -> Layout:
    if version < MIN_VERSION:
        raise GoUnsupported(
            f"Go {version[0]}.{version[1]} passes arguments on the stack (the register ABI came in 1.17)"
        )
    chosen = LAYOUTS[0][1]
    for since, layout in LAYOUTS:
        if version >= since:
            chosen = layout
    if version > NEWEST_KNOWN:  # said in the "probing" log line: a wrong layout reads no fd, nothing else
        newest = f"{NEWEST_KNOWN[0]}.{NEWEST_KNOWN[1]}"
        return replace(chosen, source=f"{chosen.source}; Go {version[0]}.{version[1]} is newer than {newest}")
    return chosen


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    kind: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int
    compressed: bool = False


@dataclass(slots=True)
class Elf:
    data: bytes
    sections: dict[str, Section]
    by_index: list[Section]
    exec_type: int  # ET_EXEC (2) or ET_DYN (3: PIE)

    def section_bytes(self, name: str) -> bytes:
        s = self.sections.get(name)
        if s is None:
            return b""
        return self.data[s.offset : s.offset + s.size]

    def read_at(self, addr: int, size: int) -> bytes:
        """Bytes at a virtual address, through the section that holds it."""
        for s in self.by_index:
            if s.addr and s.addr <= addr and addr + size <= s.addr + s.size and s.kind != 8:  # 8: NOBITS
                off = s.offset + addr - s.addr
                return self.data[off : off + size]
        raise GoUnsupported(f"address {addr:#x} is in no section of the file")


def parse_elf(data: bytes) -> Elf:
    if data[:4] != b"\x7fELF":
        raise GoUnsupported("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise GoUnsupported("not a 64-bit little-endian ELF file")
    (e_type, e_machine) = struct.unpack_from("<HH", data, 16)
    if e_machine != EM_X86_64:
        raise GoUnsupported(f"machine {e_machine}: Go TLS probes handle x86-64 only")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for i in range(shnum):
        name, kind, flags, addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize
        )
        raw.append((name, kind, addr, offset, size, link, entsize, bool(flags & SHF_COMPRESSED)))
    if not raw or shstrndx >= len(raw):
        raise GoUnsupported("no section headers")
    names_at = raw[shstrndx][3]
    sections = []
    for name, kind, addr, offset, size, link, entsize, compressed in raw:
        end = data.index(b"\0", names_at + name)
        label = data[names_at + name : end].decode(errors="replace")
        sections.append(Section(label, kind, addr, offset, size, link, entsize, compressed))
    return Elf(data, {s.name: s for s in sections}, sections, e_type)


def go_version(elf: Elf) -> str:
    """The Go version recorded in `.go.buildinfo`."""
    info = elf.section_bytes(".go.buildinfo")
    if not info.startswith(BUILDINFO_MAGIC):
        raise GoUnsupported("not a Go executable (no .go.buildinfo)")
    ptr_size, flags = info[14], info[15]
    if flags & 2:  # Go >= 1.18: the strings follow the 32-byte header, each a varint length + bytes
        length, pos = _uvarint(info, 32)
        return info[pos : pos + length].decode(errors="replace")
    if ptr_size != 8:
        raise GoUnsupported(f"pointer size {ptr_size}")
    (addr,) = struct.unpack_from("<Q", info, 16)  # Go < 1.18: a pointer to a Go string header
    ptr, length = struct.unpack("<QQ", elf.read_at(addr, 16))
    return elf.read_at(ptr, length).decode(errors="replace")


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def symtab_functions(elf: Elf, wanted: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """name -> (address, size) for the wanted names found in `.symtab`."""
    symtab = elf.sections.get(".symtab")
    if symtab is None or symtab.kind != SHT_SYMTAB:
        return {}
    strtab = elf.by_index[symtab.link]
    names = {n.encode(): n for n in wanted}
    found: dict[str, tuple[int, int]] = {}
    data = elf.data
    for off in range(symtab.offset, symtab.offset + symtab.size, 24):
        st_name, _info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
        start = strtab.offset + st_name
        end = data.index(b"\0", start)
        key = data[start:end]
        if key in names:
            found[names[key]] = (value, size)
            if len(found) == len(names):
                break
    return found


def pclntab_functions(elf: Elf, wanted: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """name -> (address, size) from `.gopclntab` (the Go 1.16-1.17 and 1.18+ layouts); a function's size
    runs to the next function's entry."""
    tab = elf.section_bytes(".gopclntab")
    if len(tab) < 8:
        return {}
    magic = struct.unpack_from("<I", tab, 0)[0]
    if magic in (0xFFFFFFF0, 0xFFFFFFF1):  # Go 1.18-1.19, 1.20+
        header = struct.unpack_from("<8Q", tab, 8)
        nfunc, _nfiles, text_start, funcname_off, _cu, _file, _pc, funcdata_off = header
        entry_size, wide = 8, False
        if text_start == 0 and ".text" in elf.sections:  # left for the runtime to fill in some builds
            text_start = elf.sections[".text"].addr
    elif magic == 0xFFFFFFFA:  # Go 1.16-1.17
        nfunc, _nfiles, funcname_off, _cu, _file, _pc, funcdata_off = struct.unpack_from("<7Q", tab, 8)
        text_start, entry_size, wide = 0, 16, True
    else:
        raise GoUnsupported(f"unknown .gopclntab magic {magic:#x}")
    functab = funcdata_off
    names = {n.encode(): n for n in wanted}
    found: dict[str, tuple[int, int]] = {}

    def entry(i: int) -> tuple[int, int]:
        if wide:
            return struct.unpack_from("<QQ", tab, functab + i * entry_size)
        pc, off = struct.unpack_from("<II", tab, functab + i * entry_size)
        return text_start + pc, off

    for i in range(nfunc):
        pc, off = entry(i)
        fn = functab + off
        name_off = struct.unpack_from("<i", tab, fn + (8 if wide else 4))[0]
        start = funcname_off + name_off
        end = tab.index(b"\0", start)
        key = tab[start:end]
        if key in names:
            found[names[key]] = (pc, entry(i + 1)[0] - pc)
            if len(found) == len(names):
                break
    return found


def ret_addresses(code: bytes, addr: int) -> list[int]:
    """Addresses of the RET instructions of one function's machine code (x86-64)."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = True  # padding (int3) and data between functions do not stop the walk
    return [address for address, _size, mnemonic, _ops in md.disasm_lite(code, addr) if mnemonic == "ret"]


# DWARF: the struct offsets of the Go types on the way from *tls.Conn to the fd, when the executable
# has DWARF (not stripped with -w). Go's compiler writes type names inline (DW_FORM_string), so each
# struct is found by its name's bytes and checked to be a structure_type DIE before it is read.
SHF_COMPRESSED = 0x800
DW_TAG_STRUCTURE, DW_TAG_MEMBER = 0x13, 0x0D
DW_AT_NAME, DW_AT_MEMBER_LOCATION = 0x03, 0x38
DW_FORM_STRING, DW_FORM_IMPLICIT_CONST = 0x08, 0x21
# form -> fixed size (DWARF 32-bit, 8-byte addresses); -1: ULEB128, -2: SLEB128, -3: string, -4: block1,
# -5: ULEB-sized block
_FORM_SIZE = {
    0x01: 8, 0x05: 2, 0x06: 4, 0x07: 8, 0x08: -3, 0x09: -5, 0x0A: -4, 0x0B: 1, 0x0C: 1, 0x0D: -2,
    0x0E: 4, 0x0F: -1, 0x10: 4, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x15: -1, 0x17: 4, 0x18: -5,
    0x19: 0, 0x1A: -1, 0x1B: -1, 0x1E: 16, 0x1F: 4, 0x21: 0, 0x25: 1, 0x26: 2, 0x29: 1, 0x2A: 2,
}  # fmt: skip
# (struct, member) pairs whose offsets make a Layout; net.TCPConn embeds net.conn as its field "conn".
DWARF_MEMBERS = (
    ("crypto/tls.Conn", "conn"), ("net.TCPConn", "conn"), ("net.conn", "fd"), ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
)  # fmt: skip


def debug_section(elf: Elf, name: str) -> bytes:
    """A .debug_* section, decompressed (SHF_COMPRESSED with zlib, or the older .zdebug_* form)."""
    s = elf.sections.get(name)
    if s is not None:
        raw = elf.data[s.offset : s.offset + s.size]
        if s.compressed:
            ch_type = struct.unpack_from("<I", raw, 0)[0]
            if ch_type != 1:  # ELFCOMPRESS_ZLIB
                raise GoUnsupported(f"{name}: compression type {ch_type}")
            return zlib.decompress(raw[24:])
        return raw
    z = elf.section_bytes(".z" + name[1:])
    if z.startswith(b"ZLIB"):
        return zlib.decompress(z[12:])
    return b""


def _uleb(buf: bytes, pos: int) -> tuple[int, int]:
    return _uvarint(buf, pos)


def _sleb(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                value -= 1 << shift
            return value, pos


Abbrev = tuple[int, bool, tuple[tuple[int, int, int], ...]]  # tag, has children, (attr, form, implicit)


def parse_abbrevs(data: bytes, offset: int) -> dict[int, Abbrev]:
    table: dict[int, Abbrev] = {}
    pos = offset
    while True:
        code, pos = _uleb(data, pos)
        if code == 0:
            return table
        tag, pos = _uleb(data, pos)
        children = data[pos] == 1
        pos += 1
        attrs = []
        while True:
            attr, pos = _uleb(data, pos)
            form, pos = _uleb(data, pos)
            implicit = 0
            if form == DW_FORM_IMPLICIT_CONST:
                implicit, pos = _sleb(data, pos)
            if attr == 0 and form == 0:
                break
            attrs.append((attr, form, implicit))
        table[code] = (tag, children, tuple(attrs))


def _read_die(
    info: bytes, pos: int, abbrevs: dict[int, Abbrev]
) -> tuple[int, Abbrev | None, dict[int, object]]:
    """(position after the DIE, its abbrev or None for a null entry, its name and member-location values)."""
    code, pos = _uleb(info, pos)
    if code == 0:
        return pos, None, {}
    abbrev = abbrevs.get(code)
    if abbrev is None:
        raise GoUnsupported(f"DWARF: unknown abbrev {code}")
    values: dict[int, object] = {}
    for attr, form, implicit in abbrev[2]:
        size = _FORM_SIZE.get(form)
        if size is None:
            raise GoUnsupported(f"DWARF: form {form:#x} not handled")
        start = pos
        value: object = None
        if size >= 0:
            pos += size
            if size in (1, 2, 4, 8):
                value = int.from_bytes(info[start:pos], "little")
        elif size == -1:
            value, pos = _uleb(info, pos)
        elif size == -2:
            value, pos = _sleb(info, pos)
        elif size == -3:
            end = info.index(b"\0", pos)
            value, pos = info[pos:end].decode(errors="replace"), end + 1
        elif size == -4:
            pos += 1 + info[pos]
        else:
            length, pos = _uleb(info, pos)
            pos += length
        if form == DW_FORM_IMPLICIT_CONST:
            value = implicit
        if attr in (DW_AT_NAME, DW_AT_MEMBER_LOCATION):
            values[attr] = value
    return pos, abbrev, values


def _unit_abbrev_offset(info: bytes, target: int) -> int:
    """The abbrev table offset of the unit that holds `target` (DWARF 4 and 5, 32-bit)."""
    pos = 0
    while pos < len(info):
        length, version = struct.unpack_from("<IH", info, pos)
        end = pos + 4 + length
        if pos <= target < end:
            (offset,) = struct.unpack_from("<I", info, pos + (8 if version >= 5 else 6))
            return int(offset)
        pos = end
    raise GoUnsupported("DWARF: offset outside every unit")


def struct_members(info: bytes, abbrev_data: bytes, name: str) -> dict[str, int]:
    """member name -> offset of the Go struct type `name`, from its structure_type DIE."""
    needle = name.encode() + b"\0"
    start = 0
    tables: dict[int, dict[int, Abbrev]] = {}
    while True:
        at = info.find(needle, start)
        if at < 0:
            raise GoUnsupported(f"DWARF: no struct {name}")
        start = at + 1
        if at == 0 or info[at - 1] >= 0x80:  # the abbrev code before the name: one byte in Go's tables
            continue
        offset = _unit_abbrev_offset(info, at)
        abbrevs = tables.get(offset) or tables.setdefault(offset, parse_abbrevs(abbrev_data, offset))
        abbrev = abbrevs.get(info[at - 1])
        if abbrev is None or abbrev[0] != DW_TAG_STRUCTURE or not abbrev[1]:
            continue
        if not abbrev[2] or abbrev[2][0][:2] != (DW_AT_NAME, DW_FORM_STRING):
            continue
        pos, _, _ = _read_die(info, at - 1, abbrevs)
        members: dict[str, int] = {}
        depth = 1
        while depth:
            pos, child, values = _read_die(info, pos, abbrevs)
            if child is None:
                depth -= 1
                continue
            if depth == 1 and child[0] == DW_TAG_MEMBER:
                member, location = values.get(DW_AT_NAME), values.get(DW_AT_MEMBER_LOCATION)
                if isinstance(member, str) and isinstance(location, int):
                    members[member] = location
            if child[1]:
                depth += 1
        return members


def dwarf_layout(elf: Elf) -> Layout | None:
    """The Layout read from DWARF, or None when the executable has none (stripped with -w)."""
    info = debug_section(elf, ".debug_info")
    if not info:
        return None
    abbrev_data = debug_section(elf, ".debug_abbrev")
    found = []
    for struct_name, member in DWARF_MEMBERS:
        members = struct_members(info, abbrev_data, struct_name)
        if member not in members:
            raise GoUnsupported(f"DWARF: {struct_name} has no member {member}")
        found.append(members[member])
    conn, tcp_conn, conn_fd, pfd, sysfd = found
    return Layout(conn, tcp_conn + conn_fd, pfd, sysfd, "DWARF")


@dataclass(frozen=True, slots=True)
class GoFunction:
    name: str
    entry: int
    rets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GoExecutable:
    path: str
    version: str
    symbols_from: str  # "symtab" or "pclntab"
    layout: Layout
    functions: dict[str, GoFunction] = field(default_factory=dict)

    def uprobe_count(self) -> int:
        return sum(1 + len(f.rets) for f in self.functions.values())


def is_go(path: str) -> bool:
    """A quick look at the section headers only: does this file have `.go.buildinfo`?"""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return False
            shoff = struct.unpack_from("<Q", head, 0x28)[0]
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            if not shoff or shnum == 0 or shstrndx >= shnum or shentsize < 64 or shnum > 4096:
                return False
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            str_off, str_size = struct.unpack_from("<QQ", table, shstrndx * shentsize + 24)
            f.seek(str_off)
            names = f.read(min(str_size, 1 << 16))
    except (OSError, struct.error):
        return False
    return b".go.buildinfo\0" in names


def inspect(path: str) -> GoExecutable:
    """Everything needed to probe one Go executable, or GoUnsupported saying why it cannot be."""
    data = Path(path).read_bytes()
    elf = parse_elf(data)
    version = go_version(elf)
    try:
        parsed = parse_go_version(version)
    except ValueError as exc:
        raise GoUnsupported(str(exc)) from None
    layout = layout_for(parsed)
    try:
        layout = dwarf_layout(elf) or layout
    except (GoUnsupported, IndexError, ValueError, struct.error, zlib.error) as exc:
        layout = replace(layout, source=f"{layout.source} (DWARF unreadable: {exc})")
    found = symtab_functions(elf, PROBED)
    source = "symtab"
    if READ not in found or WRITE not in found:
        found = pclntab_functions(elf, PROBED)
        source = "pclntab"
    if READ not in found or WRITE not in found:
        raise NoTls(f"{version}: no crypto/tls.(*Conn).Read/Write (the program does not use crypto/tls)")
    functions = {}
    for name, (addr, size) in found.items():
        rets = tuple(ret_addresses(elf.read_at(addr, size), addr)) if name in (READ, WRITE) else ()
        if name in (READ, WRITE) and not rets:
            raise GoUnsupported(f"{version}: no RET instruction found in {name}")
        functions[name] = GoFunction(name, addr, rets)
    return GoExecutable(path, version, source, layout, functions)
