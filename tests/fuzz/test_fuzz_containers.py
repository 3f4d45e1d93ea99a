"""Property-based tests of the container parsers (issue 11) against hostile input: any
/proc/PID/cgroup text, any cgroup path a journal entry carries, any runtime state file (a
container names itself; a planted containers.json, config.json or config.v2.json). The contract:
a container object of the documented shape or None, never an exception; every string clipped."""
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from coredoctor.snapshot import containers as C, targets

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEX = "0123456789abcdef"
ids = st.text(alphabet=HEX, min_size=60, max_size=70)
uids = st.text(alphabet=HEX + "-_", min_size=30, max_size=40)
fragments = st.sampled_from(["/kubepods", "/burstable", "/besteffort", "/pod", "kubepods-", "kubepods.slice",
                             "-pod", ".slice", "/cri-containerd-", "crio-", "crio-conmon-", "docker-", "/docker/",
                             "libpod-", "libpod-conmon-", "/libpod_parent", ".scope", "/machine.slice/machine-",
                             "systemd-nspawn@", ".service", "lxc.payload.", "lxc.monitor.", "/lxc/", "\\x2d",
                             "/", ":", "\n", "0::", "name=systemd", "\x00", "\udcff", "\u202e", "é"])
paths = st.lists(st.one_of(fragments, ids, uids, st.text(max_size=20)), max_size=14).map("".join)
texts = st.lists(st.tuples(st.sampled_from(["0", "1", "9", "12", "x", ""]),
                           st.sampled_from(["", "name=systemd", "memory", "cpu,cpuacct", "::"]), paths),
                 max_size=8).map(lambda rows: "\n".join(f"{a}:{b}:{p}" for a, b, p in rows))


def _shape(c):
    if c is None:
        return
    assert c["runtime"] in C.RUNTIMES + ("cri",)
    for k in C.KEYS:
        assert c[k] is None or (isinstance(c[k], str) and len(c[k]) <= C.MAX_FIELD), k
    assert c["qos"] in (None, "guaranteed", "burstable", "besteffort")
    assert isinstance(C.label(c), str) and len(C.label(c)) < 120
    json.dumps(c)


@FAST
@given(texts)
def test_any_cgroup_text_gives_a_container_or_none(text):
    _shape(C.from_cgroup(text))


@FAST
@given(paths)
def test_any_cgroup_path_gives_a_container_or_none(path):
    c = C.from_path(path)
    _shape(c)
    if c is not None and c["id"] and len(c["id"]) == 64:
        assert all(ch in HEX for ch in c["id"])


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                                     st.floats(allow_nan=False), st.text(max_size=300)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.sampled_from(
                                                       ["Name", "Config", "Image", "names", "metadata", "id",
                                                        "annotations", "process", "rlimits", "type", "soft", "hard",
                                                        "io.kubernetes.cri.container-name", "io.kubernetes.pod.name",
                                                        "image-name", "name"]) | st.text(max_size=8),
                                                       inner, max_size=5)), max_leaves=20)
ID = "e4ecdc9f84391a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819203"


@FEW
@given(json_values, json_values, st.binary(max_size=200))
def test_any_state_file_gives_a_container_or_the_cgroup_identity(a, b, raw):
    with tempfile.TemporaryDirectory() as root:
        files = {
            "var/lib/containers/storage/overlay-containers/containers.json":
                json.dumps([{"id": ID, "names": a, "metadata": json.dumps(b) if b is not None else a}]),
            f"var/lib/containers/storage/overlay-containers/{ID}/userdata/config.json": json.dumps(b),
            f"var/lib/docker/containers/{ID}/config.v2.json": json.dumps(a),
            f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json": raw.decode("latin-1"),
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
        for cgroup in (f"0::/libpod_parent/libpod-{ID}", f"0::/system.slice/docker-{ID}.scope",
                       f"0::/kubepods/pod1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081/{ID}"):
            c = C.identify(cgroup, root=root)
            _shape(c)
            assert c["id"] == ID
            C.oci_rlimits(b)
            C.oci_annotations(b)


@FAST
@given(st.text(max_size=80))
def test_any_selector_word_names_a_container_or_is_a_usage_error(word):
    from coredoctor.errors import UsageError
    found = {"podman:" + ID: {"runtime": "podman", "id": ID, "name": "web"}}
    try:
        got = targets.pick_containers(word, found)
    except UsageError as e:
        assert str(e).startswith(("no container", "--container"))
        return
    assert got == ["podman:" + ID] and (word in ("web", ID) or (len(word) >= 12 and ID.startswith(word)))
