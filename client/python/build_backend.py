"""build_backend.py - a PEP 517 build backend for the resil package, with
the standard library only.

pip's build isolation installs a backend's requirements from an index;
setuptools is not reachable offline, so `pip install client/python` would
fail without a network.  The package is pure Python: a wheel is a zip of
resil/*.py plus three metadata files, written here.  Metadata comes from
the constants below (kept equal to pyproject.toml's [project] table, which
tests/test_python_client.py checks).
"""

import base64
import hashlib
import io
import os
import tarfile
import zipfile

NAME = "resil"
VERSION = "0.1.0"
SUMMARY = ("Python client of resild, the resilience sidecar: acquire/report "
           "with deadlines, decorators, asyncio")
REQUIRES_PYTHON = ">=3.11"
REQUIRES = ["msgpack>=1.0"]
HERE = os.path.dirname(os.path.abspath(__file__))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
TAG = "py3-none-any"


def _metadata():
    lines = ["Metadata-Version: 2.1", "Name: " + NAME, "Version: " + VERSION,
             "Summary: " + SUMMARY, "Requires-Python: " + REQUIRES_PYTHON]
    lines += ["Requires-Dist: " + r for r in REQUIRES]
    return ("\n".join(lines) + "\n").encode()


def _wheel_file():
    return ("Wheel-Version: 1.0\nGenerator: resil build_backend\n"
            "Root-Is-Purelib: true\nTag: %s\n" % TAG).encode()


def _sources():
    """(archive name, bytes) of every module of the package, sorted."""
    out = []
    pkg = os.path.join(HERE, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), "rb") as f:
                out.append(("%s/%s" % (NAME, name), f.read()))
    return out


def _hash(data):
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + d.decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory,
                                     config_settings=None):
    d = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "wb") as f:
        f.write(_metadata())
    with open(os.path.join(d, "WHEEL"), "wb") as f:
        f.write(_wheel_file())
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    name = "%s-%s-%s.whl" % (NAME, VERSION, TAG)
    files = _sources() + [(DIST_INFO + "/METADATA", _metadata()),
                          (DIST_INFO + "/WHEEL", _wheel_file())]
    record = "".join("%s,%s,%d\n" % (n, _hash(b), len(b)) for n, b in files)
    record += DIST_INFO + "/RECORD,,\n"
    files.append((DIST_INFO + "/RECORD", record.encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for n, b in files:
            info = zipfile.ZipInfo(n, (1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, b)
    return name


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, VERSION)
    name = base + ".tar.gz"
    pkg_info = _metadata()
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        def add(arc, data):
            ti = tarfile.TarInfo(base + "/" + arc)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
        for arc in ("pyproject.toml", "build_backend.py"):
            with open(os.path.join(HERE, arc), "rb") as f:
                add(arc, f.read())
        for arc, data in _sources():
            add(arc, data)
        add("PKG-INFO", pkg_info)
    return name
