"""A core_pattern socket server for the socket lab (tests/crashlab/test_socket_real.py).

``sockserver.py MODE PATH``: binds PATH (an AF_UNIX socket, mode 0666), prints one JSON line per
event on stdout (``listening``, ``accepted``, ``req``, ``mark``, ``done`` with the byte count and
the first 4 bytes), and serves one connection. MODE:

- ``read``: the plain ``@`` protocol -- read the core to EOF.
- ``seqpacket``: listen as SOCK_SEQPACKET (the kernel connects with SOCK_STREAM).
- ``closed``: bind, then close: the socket file stays, nothing listens.
- ``noread``: accept, never read (the dump must stall).
- ``ack:N``: the ``@@`` protocol -- read struct coredump_req, answer struct coredump_ack with
  mask N, read the kernel's 4-byte mark, then read the core to EOF.
- ``silent``: ``@@``, read the request and never answer.
"""
import json
import os
import socket
import struct
import sys
import time

REQ = struct.Struct("=IIQ")   # struct coredump_req: size, size_ack, mask (include/uapi/linux/coredump.h)
ACK = struct.Struct("=IIQ")   # struct coredump_ack: size, spare, mask


def say(**kw):
    print(json.dumps(kw), flush=True)


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            break
        b += x
    return b


def drain(c):
    n, head = 0, b""
    while True:
        b = c.recv(1 << 16)
        if not b:
            return n, head
        if len(head) < 4:
            head += b[:4 - len(head)]
        n += len(b)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    typ = socket.SOCK_SEQPACKET if mode == "seqpacket" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_UNIX, typ)
    s.bind(path)
    os.chmod(path, 0o666)
    if mode == "closed":
        s.close()
        say(event="listening", closed=True)
        time.sleep(3600)
        return
    s.listen(4)
    say(event="listening")
    c, _ = s.accept()
    say(event="accepted")
    if mode == "noread":
        time.sleep(3600)
        return
    if mode == "silent" or mode.startswith("ack:"):
        size, size_ack, mask = REQ.unpack(recv_exact(c, REQ.size))
        say(event="req", size=size, size_ack=size_ack, mask=mask)
        if mode == "silent":
            time.sleep(3600)
            return
        c.sendall(ACK.pack(ACK.size, 0, int(mode.split(":", 1)[1], 0)))
        mark = recv_exact(c, 4)
        say(event="mark", mark=struct.unpack("=I", mark)[0] if len(mark) == 4 else None)
    n, head = drain(c)
    say(event="done", bytes=n, head=head.hex())
    time.sleep(3600)


if __name__ == "__main__":
    main()
