"""Start, wait for and stop a real ``tritonserver`` on repositories written by ``poserender triton``
(``poserender triton-serve``, the tests and ``benchmarks/bench_triton.py``).

Where the server comes from, first found wins: ``--server PATH``; the ``nvidia-pytriton`` wheel
installed in this interpreter (``pip install --no-deps nvidia-pytriton==0.7.0``: tritonserver
2.51 in ``pytriton/tritonserver/bin``, its libraries in ``nvidia_pytriton.libs``, the Python
backend and one backend stub per Python version); ``tritonserver`` on PATH (e.g. in NVIDIA's
container, with the backends installed beside it).

From the wheel, the Python backend is assembled per server in a temporary folder: the backend
library, the stub built for this interpreter's Python version, and ``triton_python_backend_utils``
prefixed with two lines that put this interpreter's packages first on the stub's sys.path (its
interpreter ignores PYTHONPATH, and the module imports numpy before any model code runs). The
libraries are found through LD_LIBRARY_PATH: the wheel's, and this Python's ``libpython``.

The server binds loopback addresses unless told otherwise (tritonserver's own default is
0.0.0.0), runs without metrics unless a metrics port is given, and never with GPU metrics on a
machine where nvidia-smi lists no GPU.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..errors import UserError
from .contract import ENSEMBLE_PLATFORM, PYTHON_BACKEND, PYTHON_PATH_ENV, SERVER_INSTALL
from .python_backend import interpreter_path

NOT_FOUND = (f"no tritonserver found: install the one in the nvidia-pytriton wheel with {SERVER_INSTALL} "
             "(--no-deps: its metadata pins numpy<2, which the server does not need), put tritonserver on "
             "PATH, or pass --server PATH")
STUB_PRELUDE = (f"import os as _os, sys as _sys  # added by poserender: the stub ignores PYTHONPATH\n"
                f"_sys.path[:0] = [_p for _p in _os.environ.get({PYTHON_PATH_ENV!r}, '').split(_os.pathsep) "
                f"if _p and _p not in _sys.path]\n")


class ServerBinary:
    """A tritonserver executable, and for the wheel's server where its libraries and backend are."""

    def __init__(self, executable: Path, source: str, wheel_root: Optional[Path] = None):
        self.executable, self.source, self.wheel_root = executable, source, wheel_root

    @property
    def tritonserver_dir(self) -> Optional[Path]:
        return self.wheel_root / "tritonserver" if self.wheel_root else None

    @property
    def libraries(self) -> Optional[Path]:
        return self.wheel_root.parent / "nvidia_pytriton.libs" if self.wheel_root else None

    def stub(self) -> Path:
        """The Python-backend stub built for this interpreter's Python version."""
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = self.tritonserver_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in (self.tritonserver_dir / "python_backend_stubs").iterdir())
            raise UserError(f"the Python backend of {self.source} has no stub for Python {version} (it has "
                            f"{', '.join(have)}); run poserender with one of those", stub.parent.parent)
        return stub


def wheel_server() -> Optional[ServerBinary]:
    """The server of the nvidia-pytriton wheel, located without importing pytriton (whose imports
    need the client stack its metadata pins)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    executable = root / "tritonserver" / "bin" / "tritonserver"
    if not executable.is_file():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        source = f"nvidia-pytriton {version('nvidia-pytriton')}"
    except PackageNotFoundError:
        source = "nvidia-pytriton"
    return ServerBinary(executable, source, root)


def find_server(explicit: Optional[Union[str, Path]] = None) -> ServerBinary:
    """``explicit``, else the wheel's server, else ``tritonserver`` on PATH; a UserError saying how
    to get one when there is none."""
    if explicit is not None:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UserError("not an executable tritonserver", path)
        wheel = wheel_server()
        if wheel is not None and path.resolve() == wheel.executable.resolve():
            return wheel
        return ServerBinary(path, str(path))
    found = wheel_server()
    if found is not None:
        return found
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path), f"{on_path} (PATH)")
    raise UserError(NOT_FOUND)


def libpython_dir() -> str:
    """The folder holding this interpreter's shared libpython, which the backend stub links to."""
    names = [sysconfig.get_config_var(k) for k in ("INSTSONAME", "LDLIBRARY")]
    folders = [sysconfig.get_config_var(k) for k in ("LIBDIR", "LIBPL")] + ["/usr/lib/x86_64-linux-gnu", "/usr/lib"]
    for folder in filter(None, folders):
        for name in filter(None, names):
            if name.endswith(".so") or ".so." in name:
                if (Path(folder) / name).is_file():
                    return folder
    raise UserError(f"this Python ({sys.executable}) has no shared libpython ({names[0] or 'libpython3.x.so'}), "
                    "which Triton's Python backend stub links to: use a Python built with --enable-shared, or "
                    f"install libpython{sys.version_info[0]}.{sys.version_info[1]}")


def check_backends(repositories: Sequence[Path], binary: ServerBinary) -> None:
    """The wheel's server has the Python backend only: refuse, before starting it, a repository
    whose models need another one (it would fail to load them and exit)."""
    if binary.wheel_root is None:
        return
    from .validate import load_config, model_kind

    for repo in repositories:
        for folder in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
            kind = model_kind(load_config(folder / "config.pbtxt"))
            if kind not in (PYTHON_BACKEND, ENSEMBLE_PLATFORM):
                raise UserError(f"model {folder.name!r} needs Triton's {kind} backend, which the server of "
                                f"{binary.source} does not have (it has the Python backend): write the repository "
                                "with `poserender triton --backend python`, or serve it with NVIDIA's container "
                                "(--server PATH)", repo)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gpus_visible() -> bool:
    from ..engines.machine import nvidia_smi

    return bool(nvidia_smi()["gpus"])


class TritonServer:
    """One tritonserver process over ``repositories``; a context manager that always stops it.

    ``metrics_port`` None: metrics off. ``log`` receives the server's stdout and stderr (a file
    path; default: a file in the server's temporary folder, removed on stop). The last lines of
    the log go into the error raised when the server does not come up."""

    def __init__(self, repositories: Sequence[Union[str, Path]], *, address: str = "127.0.0.1",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: Optional[int] = None,
                 server: Optional[Union[str, Path]] = None, log: Optional[Union[str, Path]] = None,
                 extra_args: Sequence[str] = ()):
        self.repositories = [Path(r) for r in repositories]
        for repo in self.repositories:
            if not repo.is_dir():
                raise UserError("not a folder; expected a repository written by `poserender triton`", repo)
        self.address, self.http_port, self.grpc_port, self.metrics_port = address, http_port, grpc_port, metrics_port
        self.binary = find_server(server)
        check_backends(self.repositories, self.binary)
        self.extra_args = list(extra_args)
        self.log_path = Path(log) if log else None
        self.process: Optional[subprocess.Popen] = None
        self._workdir: Optional[Path] = None

    # --- addresses ------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self._host()}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._host()}:{self.http_port}"

    def _host(self) -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else ("localhost" if self.address == "::" else self.address)
        return f"[{host}]" if ":" in host else host

    # --- the command ----------------------------------------------------------------------------
    def command(self) -> List[str]:
        cmd = [str(self.binary.executable)] + [f"--model-repository={r.resolve()}" for r in self.repositories]
        cmd += [f"--http-address={self.address}", f"--http-port={self.http_port}",
                f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}"]
        if self.metrics_port is None:
            cmd += ["--allow-metrics=false", "--allow-gpu-metrics=false"]
        else:
            cmd += [f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}"]
            if not gpus_visible():
                cmd += ["--allow-gpu-metrics=false"]
        if self._workdir is not None:
            cmd += [f"--backend-directory={self._workdir / 'backends'}",
                    f"--cache-directory={self.binary.tritonserver_dir / 'caches'}"]
        return cmd + self.extra_args

    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env[PYTHON_PATH_ENV] = os.pathsep.join(interpreter_path())
        if self.binary.libraries is not None:
            paths = [str(self.binary.libraries), libpython_dir()]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(paths + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        return env

    def _prepare_backends(self) -> None:
        """The wheel's Python backend with this Python's stub, in a folder of this server's own."""
        self._workdir = Path(tempfile.mkdtemp(prefix="poserender-triton-"))
        python = self._workdir / "backends" / "python"
        python.mkdir(parents=True)
        source = self.binary.tritonserver_dir / "backends" / "python"
        shutil.copyfile(source / "libtriton_python.so", python / "libtriton_python.so")
        shutil.copyfile(self.binary.stub(), python / "triton_python_backend_stub")
        os.chmod(python / "triton_python_backend_stub", 0o755)
        utils = (source / "triton_python_backend_utils.py").read_text()
        (python / "triton_python_backend_utils.py").write_text(STUB_PRELUDE + utils)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "TritonServer":
        if self.process is not None:
            raise RuntimeError("this server was already started")
        env = None
        try:
            if self.binary.wheel_root is not None:
                self._prepare_backends()
            env = self._environment()
            if self.log_path is None:
                self.log_path = (self._workdir or Path(tempfile.mkdtemp(prefix="poserender-triton-"))) / "server.log"
                self._workdir = self._workdir or self.log_path.parent
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except BaseException:
            self._cleanup()
            raise
        return self

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> "TritonServer":
        """Until ``/v2/health/ready`` answers 200 (every model loaded); a UserError with the end of
        the server's log when it exits first (a model that fails to load stops it) or the time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, tail = self.process.returncode, self.log_tail()
                self.stop()
                raise UserError(f"tritonserver exited with code {code} before it was ready: {tail}")
            if self.is_ready():
                return self
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise UserError(f"tritonserver was not ready within {timeout_s:g} s: {tail}")

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 20.0) -> Optional[int]:
        """SIGTERM (Triton finishes in-flight requests and unloads), SIGKILL after ``timeout_s``;
        the exit code. Safe to call more than once."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.kill()
                except ProcessLookupError:
                    pass
            code = self.process.returncode
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        """Remove this server's folder (its backend copy and, when no log path was given, its log)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()
