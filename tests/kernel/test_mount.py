"""Where the kernel's tracefs is: found where mounted, mounted where not, and
a clear error where it cannot be used.

The "not mounted" cases run in a child in its own mount namespace (``unshare
-m``, private propagation), where the tracefs mounts are taken away: the
machine's mounts are never touched.  Skipped, with the reason, where the
user is not root or the namespace cannot be made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import env

from fentry.errors import TraceError
from fentry.kernel import mount

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="tracefs is root's: these tests need root")


def _in_namespace(code: str, **kw) -> subprocess.CompletedProcess:
    """``code`` run by python in a new mount namespace without any tracefs mount."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a mount namespace")
    script = ("import subprocess\n"
              "for line in reversed(open('/proc/self/mounts').read().splitlines()):\n"
              "    f = line.split()\n"
              "    if f[2] == 'tracefs' or (f[2] == 'debugfs'):\n"
              "        subprocess.run(['umount', '-l', f[1]], check=True)\n" + code)
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, env=env(), timeout=60, **kw)
    if "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a mount namespace: {done.stderr.strip()}")
    return done


@ROOT_ONLY
def test_finds_the_mounted_tracefs():
    path = mount.find_tracefs(mount=False)
    assert path in mount.mounted_tracefs()
    assert os.path.isfile(os.path.join(path, "trace_marker"))


@ROOT_ONLY
def test_mounts_tracefs_where_it_is_missing():
    done = _in_namespace("from fentry.kernel import mount\n"
                         "print(mount.mounted_tracefs())\n"
                         "print(mount.find_tracefs())\n"
                         "print(mount.mounted_tracefs())\n")
    assert done.returncode == 0, done.stderr
    before, found, after = done.stdout.splitlines()
    assert before == "[]"
    assert found == "/sys/kernel/tracing"
    assert after == "['/sys/kernel/tracing']"


@ROOT_ONLY
def test_not_mounted_and_not_to_mount_is_an_error():
    done = _in_namespace("from fentry.kernel import mount\n"
                         "mount.find_tracefs(mount=False)\n")
    assert done.returncode == 1
    assert "fentry tracefs: error: No such file or directory: tracefs is not mounted" in done.stderr


@ROOT_ONLY
def test_mount_failure_says_the_errno(tmp_path):
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(TraceError) as e:
        mount.mount_tracefs(str(file))      # mkdir of an existing file: refused before mount(2)
    assert e.value.code == "TRACEFS_MOUNT"
    assert "File exists" in str(e.value) and str(file) in str(e.value)
    with pytest.raises(TraceError) as e:
        mount.mount_tracefs(str(file / "below"))
    assert "Not a directory" in str(e.value)


@ROOT_ONLY
def test_mount_and_find_in_a_directory_of_ones_own(tmp_path):
    # mount(2) itself, on a directory it makes; found there once mounted
    target = str(tmp_path / "made" / "tracing")
    done = _in_namespace("from fentry.kernel import mount\n"
                         f"print(mount.mount_tracefs({target!r}))\n"
                         "print(mount.find_tracefs(mount=False))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [target, target]


@ROOT_ONLY
def test_not_root_is_told_why():
    # fentry is imported as root (its python is under root's home), then the child becomes nobody
    code = ("import os\n"
            "from fentry.kernel import mount\n"
            "from fentry.errors import TraceError\n"
            "os.chdir('/')\n"
            "os.setgid(65534)\n"
            "os.setuid(65534)\n"
            "try:\n"
            "    mount.find_tracefs()\n"
            "except TraceError as e:\n"
            "    print(e.code, e.message)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 0, done.stderr
    # tracefs is mounted here (the machine's), root's: not usable
    assert done.stdout.strip() == ("TRACEFS_NOT_ROOT Permission denied: the kernel's tracefs is root's"
                                   " (run fentry as root)")
    # none mounted: not mountable
    done = _in_namespace(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("TRACEFS_NOT_ROOT ")


def test_mount_points_are_unescaped():
    assert mount._unescape(r"/tmp/a\040b\134c") == "/tmp/a b\\c"
