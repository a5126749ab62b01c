"""``python -m collab.emulator CONFIG.json``: run the link emulator in its own process.

Prints ``LISTEN <proxy port> <control port>`` once ready, then serves until stdin's
parent terminates it (see :class:`collab.emulator.control.EmulatorProcess`).
"""

from __future__ import annotations

import asyncio
import json
import sys

from collab.emulator.control import serve_control
from collab.emulator.proxy import LinkEmulator
from collab.emulator.traces import LinkTrace
from collab.signals import stop_on_signals_async


async def _main(cfg_path: str) -> None:
    with open(cfg_path) as f:
        cfg = json.load(f)
    emu = LinkEmulator(
        upstream=(cfg["upstream"][0], int(cfg["upstream"][1])),
        link=LinkTrace.from_dict(cfg["link"]),
        seed=int(cfg.get("seed", 0)),
        host=cfg.get("host", "127.0.0.1"),
        port=int(cfg.get("port", 0)),
    )
    port = await emu.start()
    ctl = await serve_control(emu)
    stop = stop_on_signals_async()
    print(f"LISTEN {port} {ctl.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[attr-defined]
    await stop.wait()
    ctl.close()
    await emu.close()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()  # idle control connections: end quietly


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
