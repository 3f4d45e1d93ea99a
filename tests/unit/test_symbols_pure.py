"""The pure parts of coredoctor.trace.symbols on recorded data: a user stack as tracefs printed
it on 6.18 (options/userstacktrace, then with options/sym-userobj), and the maps of that process."""
from coredoctor.trace.symbols import format_frame, parse_maps, parse_userobj, symbolize_maps, userobj_address

RAW = """\
            prog-5738    [001] .....   397.905725: sys_setresuid(ruid: 0, euid: 0, suid: 0)
            prog-5738    [001] .....   397.905726: <user stack trace>
 =>  <00007f437d113884>
 =>  <000056410cd6e29f>
 =>  <00007f437d06524a>
"""
USEROBJ = """\
 => /usr/lib/x86_64-linux-gnu/libc.so.6[+0xaf884]
 => /tmp/cdsym/prog[+0x29f]
 => /usr/lib/x86_64-linux-gnu/libc.so.6[+0x124a] <00007f437d06524a>
 => ??
"""
MAPS = """\
56410cd6d000-56410cd6e000 r--p 00000000 fe:00 2146753                    /tmp/cdsym/prog
56410cd6e000-56410cd6f000 r-xp 00001000 fe:00 2146753                    /tmp/cdsym/prog
56410cd6f000-56410cd70000 r--p 00002000 fe:00 2146753                    /tmp/cdsym/prog
56410cd70000-56410cd71000 r--p 00002000 fe:00 2146753                    /tmp/cdsym/prog
56410cd71000-56410cd72000 rw-p 00003000 fe:00 2146753                    /tmp/cdsym/prog
56410e2a1000-56410e2c2000 rw-p 00000000 00:00 0                          [heap]
7f437d03e000-7f437d064000 r--p 00000000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f437d064000-7f437d1ba000 r-xp 00026000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f437d1ba000-7f437d20d000 r--p 0017c000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f437d20d000-7f437d211000 r--p 001cf000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f437d211000-7f437d213000 rw-p 001d3000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f437d213000-7f437d220000 rw-p 00000000 00:00 0 
7ffd2b1e0000-7ffd2b201000 rw-p 00000000 00:00 0                          [stack]
garbage line
"""
ADDRS = [0x7f437d113884, 0x56410cd6e29f, 0x7f437d06524a]


def test_parse_maps():
    maps = parse_maps(MAPS.encode())
    assert len(maps) == 13
    assert maps[1] == {"start": 0x56410cd6e000, "end": 0x56410cd6f000, "perms": "r-xp", "pgoff": 0x1000,
                       "dev": "fe:00", "inode": 2146753, "path": "/tmp/cdsym/prog"}
    assert maps[11]["path"] is None and maps[12]["path"] == "[stack]"


def test_raw_userstack_lines():
    got = [parse_userobj(ln) for ln in RAW.splitlines() if ln.startswith(" => ")]
    assert [g["addr"] for g in got] == ADDRS
    assert all(g["path"] is None and g["vma_offset"] is None for g in got)


def test_userobj_lines_map_back_to_the_raw_addresses():
    maps = parse_maps(MAPS)
    got = [parse_userobj(ln) for ln in USEROBJ.splitlines()]
    assert got[0] == {"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "vma_offset": 0xaf884, "addr": None}
    assert got[3] is None
    assert [userobj_address(g, maps) for g in got[:3]] == ADDRS
    assert userobj_address({"path": "/not/mapped", "vma_offset": 1, "addr": None}, maps) is None


def test_recorded_maps_without_elf_files():
    frames = symbolize_maps(parse_maps(MAPS), ADDRS + [0x56410e2a1010, 0x10])
    assert frames[0]["module"] == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert frames[0]["offset"] == hex(0x7f437d113884 - 0x7f437d064000 + 0x26000)
    assert frames[1]["offset"] == "0x129f" and frames[1]["symbol"] is None and frames[1]["vaddr"] is None
    assert format_frame(frames[1]) == "0x56410cd6e29f (prog+0x129f)"
    assert frames[3]["module"] == "[heap]" and frames[4]["module"] is None
    assert format_frame(frames[4]) == "0x10"


def test_format_frame():
    f = {"addr": "0x7f437d113884", "module": "/usr/lib/x86_64-linux-gnu/libc.so.6", "offset": "0xd5884",
         "vaddr": "0xd5884", "symbol": "setresuid", "symoff": "0x24", "build_id": "93ac"}
    assert format_frame(f) == "setresuid+0x24 (libc.so.6)"
    f["module"] = "/opt/app/bin/server (deleted)"
    assert format_frame(f) == "setresuid+0x24 (server (deleted))"
