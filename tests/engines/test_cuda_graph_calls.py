"""CUDA-graph capture through the driver API (cuda_mem.GraphAPI), checked on a machine without a GPU.

pycuda has no graph API, so cuda_mem binds five libcuda entry points with ctypes. A stand-in
shared library with the same C signatures (compiled here with the system C compiler) records
the calls, so these tests check the ABI (handles and out-pointers cross the ctypes boundary
intact), the call order, and that every failing CUresult is raised with the driver's name.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from poserender.engines import cuda_mem

FAKE_LIBCUDA = r"""
#include <stdio.h>
#include <string.h>
typedef int CUresult;
static char calls[4096];
static int fail_code = 0;
static char fail_on[64] = "";
static void note(const char *text) { strncat(calls, text, sizeof(calls) - strlen(calls) - 1); }
static CUresult result(const char *name) { return strcmp(name, fail_on) == 0 ? fail_code : 0; }
void fake_fail(const char *name, int code) { strncpy(fail_on, name, 63); fail_code = code; }
const char *fake_calls(void) { return calls; }
CUresult cuStreamBeginCapture_v2(void *stream, int mode) {
    char line[96]; snprintf(line, sizeof line, "begin(%p,%d);", stream, mode); note(line);
    return result("cuStreamBeginCapture_v2"); }
CUresult cuStreamEndCapture(void *stream, void **graph) {
    char line[96]; snprintf(line, sizeof line, "end(%p);", stream); note(line);
    *graph = (void *)0xa11; return result("cuStreamEndCapture"); }
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long flags) {
    char line[96]; snprintf(line, sizeof line, "instantiate(%p,%llu);", graph, flags); note(line);
    if (result("cuGraphInstantiateWithFlags")) return fail_code;
    *exec = (void *)0xe0e; return 0; }
CUresult cuGraphLaunch(void *exec, void *stream) {
    char line[96]; snprintf(line, sizeof line, "launch(%p,%p);", exec, stream); note(line);
    return result("cuGraphLaunch"); }
CUresult cuGraphExecDestroy(void *exec) {
    char line[96]; snprintf(line, sizeof line, "destroy_exec(%p);", exec); note(line); return 0; }
CUresult cuGraphDestroy(void *graph) {
    char line[96]; snprintf(line, sizeof line, "destroy_graph(%p);", graph); note(line); return 0; }
CUresult cuGetErrorName(int error, const char **name) {
    if (error == 900) { *name = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; return 0; }
    return 1; }
"""


@pytest.fixture
def fake_libcuda(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here to build the stand-in libcuda")
    source, library = tmp_path / "fake_cuda.c", tmp_path / "libfakecuda.so"
    source.write_text(FAKE_LIBCUDA)
    subprocess.run([compiler, "-shared", "-fPIC", "-O0", "-o", str(library), str(source)], check=True)
    lib = ctypes.CDLL(str(library))
    lib.fake_calls.restype = ctypes.c_char_p
    lib.fake_fail.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def _calls(lib) -> str:
    return lib.fake_calls().decode()


STREAM = 0x5eed


def test_capture_instantiate_launch_free_in_order(fake_libcuda):
    api = cuda_mem.GraphAPI(fake_libcuda)
    api.begin_capture(STREAM)
    graph = cuda_mem.CudaGraph(api, STREAM)
    graph.launch()
    graph.launch()
    graph.free()
    graph.free()                                        # idempotent: nothing destroyed twice
    assert _calls(fake_libcuda) == ("begin(0x5eed,1);end(0x5eed);instantiate(0xa11,0);"
                                    "launch(0xe0e,0x5eed);launch(0xe0e,0x5eed);"
                                    "destroy_exec(0xe0e);destroy_graph(0xa11);")


def test_failed_instantiation_frees_the_graph_and_names_the_error(fake_libcuda):
    fake_libcuda.fake_fail(b"cuGraphInstantiateWithFlags", 900)
    api = cuda_mem.GraphAPI(fake_libcuda)
    api.begin_capture(STREAM)
    with pytest.raises(RuntimeError, match=r"cuGraphInstantiateWithFlags failed with "
                                           r"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED \(900\)"):
        cuda_mem.CudaGraph(api, STREAM)
    assert _calls(fake_libcuda).endswith("instantiate(0xa11,0);destroy_graph(0xa11);")


def test_unknown_error_code_is_still_reported(fake_libcuda):
    fake_libcuda.fake_fail(b"cuStreamBeginCapture_v2", 1)
    with pytest.raises(RuntimeError, match=r"cuStreamBeginCapture failed with CUresult \(1\)"):
        cuda_mem.GraphAPI(fake_libcuda).begin_capture(STREAM)


def test_missing_driver_library_is_a_clear_error(monkeypatch):
    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(cuda_mem, "_GRAPH_API", None)
    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(RuntimeError, match=r"CUDA graphs need the CUDA driver library \(libcuda.so.1\)"):
        cuda_mem.graph_api()
