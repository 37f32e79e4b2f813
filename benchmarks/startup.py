"""Cold and warm start of `agentlm up` on the embedded model, to the first streamed token.

Cold: a fresh AGENTLM_HOME, so the GGUF is dequantized and the converted copy written. Warm: the
same home again, loading the cached copy. Prints both times and their ratio.

    .venv/bin/python benchmarks/startup.py [--port 8765]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from openai import OpenAI

from agentlm.processes import free_port, stop, wait_healthy


def start_to_first_token(home: str, port: int) -> tuple[float, float]:
    """Seconds from launching `agentlm up --no-ui` to /health, and to the first streamed token."""
    env = {**os.environ, "AGENTLM_HOME": home}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlm.cli", "up", "--no-ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        healthy = wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=900)
        base = f"http://127.0.0.1:{port}"
        client = OpenAI(base_url=f"{base}/v1", api_key="EMPTY")
        model = next(m.id for m in client.models.list() if m.owned_by != "agentlm-agent")
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first_token = time.perf_counter() - t0
                break
        stream.close()
        return healthy, first_token
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentlm-startup-") as home:
        cold_health, cold = start_to_first_token(home, args.port or free_port())
        warm_health, warm = start_to_first_token(home, args.port or free_port())
    print(f"cold start: healthy {cold_health:6.1f} s, first token {cold:6.1f} s")
    print(f"warm start: healthy {warm_health:6.1f} s, first token {warm:6.1f} s")
    print(f"warm / cold (first token): {warm / cold:.2f}")


if __name__ == "__main__":
    main()
