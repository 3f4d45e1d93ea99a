"""examples/kubernetes/coredoctor-daemonset.json: a manifest Kubernetes takes (JSON), whose
command is a coredoctor command line this parser accepts with those flags, and whose read-only
mounts hold every runtime state path snapshot/containers.py reads (under COREDOCTOR_HOSTROOT)."""
import json
import os
import shlex

from coredoctor import cli
from coredoctor.snapshot import containers as C

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(REPO, "examples", "kubernetes", "coredoctor-daemonset.json")


def _load():
    with open(MANIFEST) as f:
        return json.load(f)


def _container(ds):
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


def test_the_manifest_is_a_daemonset_of_the_node():
    ds = _load()
    assert (ds["apiVersion"], ds["kind"]) == ("apps/v1", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True                     # the node's /proc
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    c = _container(ds)
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0 and sc["readOnlyRootFilesystem"] is True and "privileged" not in sc
    vols = {v["name"]: v for v in spec["volumes"]}
    for m in c["volumeMounts"]:
        assert m["readOnly"] is True, m
        assert m["mountPath"] == "/host" + vols[m["name"]]["hostPath"]["path"]


def test_its_command_runs_check_all_json_as_this_parser_reads_it():
    c = _container(_load())
    assert c["command"][:2] == ["sh", "-c"]
    words = shlex.split(c["command"][2])
    i = words.index("coredoctor")
    run = []
    for w in words[i + 1:]:          # up to the end of that shell command (";")
        run.append(w.rstrip(";"))
        if w.endswith(";"):
            break
    args = cli._parser().parse_args(run)
    assert (args.cmd, args.all, args.json, args.target) == ("check", True, True, [])
    assert cli.COMMANDS[args.cmd] is cli.cmd_check


def test_every_state_path_the_code_reads_is_mounted():
    c = _container(_load())
    env = {e["name"]: e["value"] for e in c["env"]}
    root = env["COREDOCTOR_HOSTROOT"]
    mounts = [m["mountPath"][len(root):] for m in c["volumeMounts"] if m["mountPath"].startswith(root + "/")]
    ident = "0" * 64
    paths = [p.format(id=ident, ns="k8s.io") for ps in C.BUNDLES.values() for p in ps]
    paths += [f"/var/lib/docker/containers/{ident}/config.v2.json",
              "/var/lib/containers/storage/overlay-containers/containers.json", "/run/systemd/machines/x"]
    for p in paths:
        assert any(p.startswith(m + "/") for m in mounts), f"{p} is not under a mount of the DaemonSet"
