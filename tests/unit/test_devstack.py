"""The local vLLM server's weight type: chosen from the CPU's instructions."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.dev import devstack
from streamproc.dev.devstack import VllmServer, cpu_dtype, cpu_flags

#: /proc/cpuinfo lines as CPUs print them (abridged).
AVX512_WITHOUT_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "flags\t\t: avx2 avx512f avx512_bf16\n"
EPYC_AVX2 = "flags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"),
    [
        (AVX512_WITHOUT_BF16, "float32"),
        (EPYC_AVX2, "float32"),
        (COOPER_LAKE, "bfloat16"),
        (SAPPHIRE_RAPIDS, "bfloat16"),
        (GRAVITON3, "bfloat16"),
    ],
)
def test_bfloat16_only_where_the_cpu_has_its_instructions(cpuinfo: str, dtype: str) -> None:
    assert cpu_dtype(cpuinfo) == dtype


def test_a_flag_named_like_bf16_in_another_line_does_not_count() -> None:
    assert cpu_dtype("model name\t: bf16 lab machine\nflags\t\t: avx2\n") == "float32"


def test_the_first_processors_flags_count() -> None:
    assert cpu_flags(AVX512_WITHOUT_BF16 + "processor\t: 1\nflags\t\t: fpu\n") >= {"avx512f", "avx2"}
    assert cpu_flags("") == frozenset()


def _server(tmp_path: Path, *, dtype: str | None = None, pooling: bool = False) -> VllmServer:
    python = tmp_path / "python"
    python.touch()
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return VllmServer(python, model, "m", tmp_path / "vllm.log", dtype=dtype, pooling=pooling)


def _dtype(server: VllmServer) -> str:
    return server.argv[server.argv.index("--dtype") + 1]


@pytest.mark.parametrize(("cpuinfo", "dtype"), [(SAPPHIRE_RAPIDS, "bfloat16"), (EPYC_AVX2, "float32")])
def test_the_server_runs_this_cpus_dtype_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpuinfo: str, dtype: str
) -> None:
    monkeypatch.setattr(devstack, "proc_cpuinfo", lambda: cpuinfo)
    server = _server(tmp_path)
    assert (_dtype(server), server.dtype) == (dtype, dtype)
    assert _dtype(_server(tmp_path, dtype="bfloat16", pooling=True)) == "bfloat16"
