"""snapshot/daemonconf.py on files the test writes: includes followed in place and bounded, a
symlink in a directory others can write is not followed, big files are cut and said so, and
what cannot be read is counted."""
import os

from coredoctor.origin import daemons as D
from coredoctor.snapshot import daemonconf as C


def test_nginx_includes_in_order_and_bounded(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("worker_rlimit_core 0;\n")
    (tmp_path / "conf.d" / "a.conf").write_text("include extra/*.conf;\n")   # from the conf prefix
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "x.conf").write_text("working_directory /w;\n")
    (tmp_path / "conf.d" / "c.txt").write_text("user root;\n")
    main = tmp_path / "nginx.conf"
    main.write_text(f"user www-data;\ninclude {tmp_path}/conf.d/*.conf;\nevents {{}}\n")
    rd = C._Reader()
    files = C._files_for(D.by_program("nginx"), ["nginx", "-c", str(main)], "/", "", rd)
    assert [(os.path.relpath(f["path"], tmp_path), f["how"], f["line"]) for f in files] == [
        ("nginx.conf", "argv", None), ("conf.d/a.conf", "include", 2), ("extra/x.conf", "include", 1),
        ("conf.d/b.conf", "include", 2)]
    # an include of itself is read once
    main.write_text(f"include {main};\n" * 3)
    assert len(C._files_for(D.by_program("nginx"), ["nginx", "-c", str(main)], "/", "", C._Reader())) == 1
    # a thousand files: at most MAX_FILES
    for i in range(40):
        (tmp_path / "conf.d" / f"n{i:02}.conf").write_text("")
    main.write_text(f"include {tmp_path}/conf.d/*.conf;\n")
    assert len(C._files_for(D.by_program("nginx"), ["nginx", "-c", str(main)], "/", "", C._Reader())) == C.MAX_FILES


def test_untrusted_directory_symlink_and_size(tmp_path):
    os.chmod(tmp_path, 0o1777)
    secret = tmp_path / "secret"
    secret.write_text("x\n")
    (tmp_path / "link.conf").symlink_to(secret)
    assert C._read_file(str(tmp_path / "link.conf"))["error"] == "ELOOP"
    big = tmp_path / "big.conf"
    big.write_bytes(b"a" * (C.MAX_TEXT + 10))
    r = C._read_file(str(big))
    assert r["truncated"] is True and len(r["text"]) == C.MAX_TEXT
    assert C._read_file(str(tmp_path))["error"] == "EISDIR"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert C._read_file(str(fifo))["error"] == "ENOTREG"       # never blocks on a fifo
    rd = C._Reader()
    rd.get(str(tmp_path / "link.conf"))
    rd.get(str(tmp_path / "missing"))
    assert rd.skipped == 1                                     # ENOENT is not a skip, ELOOP is


def test_dnsmasq_conf_dir_from_argv(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("user=nobody\n")
    (d / "a.dpkg-old").write_text("user=root\n")
    files = C._files_for(D.by_program("dnsmasq"), ["dnsmasq", "-C", str(tmp_path / "none"), "-7", f"{d},.dpkg-old"],
                         "/", "", C._Reader())
    assert [os.path.basename(f["path"]) for f in files] == ["none", "a"]


def test_nginx_master_title_is_split():
    assert C.split_title(["nginx: master process /usr/sbin/nginx -c /x/n.conf -p /x"]) == [
        "nginx", "-c", "/x/n.conf", "-p", "/x"]
    assert C.split_title(["nginx: worker process"]) == ["nginx: worker process"]
    assert C.split_title(["/usr/sbin/dnsmasq", "-k"]) == ["/usr/sbin/dnsmasq", "-k"]
