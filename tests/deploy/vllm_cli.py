"""The model servers' command lines as vLLM itself parses them: `vllm serve`'s own parser from
the release the tests run (scripts/vllm_env.sh builds its virtualenv), so a flag vLLM does not
know, or a value it reads differently, fails the deploy checks instead of a pod's start."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Parses each argument list of stdin's JSON list as `vllm serve ARGS` does, and prints the
# resulting options (values that are not JSON as their str()).
_PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
parsed = []
for argv in json.load(sys.stdin):
    args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(argv)
    validate_parsed_serve_args(args)
    parsed.append(vars(args))
print(json.dumps(parsed, default=str))
"""


@functools.cache
def vllm_python() -> Path:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "vllm_env.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/vllm_env.sh failed:\n{done.stderr}"
    return Path(done.stdout.strip()) / "bin" / "python"


def parse_serve_args(*argvs: list[str]) -> list[dict[str, Any]]:
    """The options `vllm serve` takes from each argument list (one run of vLLM's parser)."""
    done = subprocess.run(
        [str(vllm_python()), "-c", _PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"vllm serve rejects the arguments {argvs}:\n{done.stderr[-3000:]}"
    parsed: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed
