"""A TCP forwarder that adds a fixed delay each way: a backend one network round trip away.

    python benchmarks/latency_proxy.py TARGET_PORT ONE_WAY_MS      # prints the port it listens on

Every chunk read from either side is written to the other ``ONE_WAY_MS`` after it arrived, in
order, so a request/response pair gains twice that. It runs in its own process (the benchmark
starts it), so forwarding costs the measured process nothing. Loopback only; stdlib asyncio, since
the kernel's own delay tool (``tc netem``) needs a module that is not always there.
"""

from __future__ import annotations

import asyncio
import sys

CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    try:
        await delivering
    except ConnectionError:
        pass


async def _serve(target_port: int, delay: float) -> None:
    async def forward(client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pump(client_reader, upstream_writer, delay),
                                 _pump(upstream_reader, client_writer, delay))
        except OSError:  # one side went away mid-write: the connection is over either way
            pass
        finally:
            client_writer.close()
            upstream_writer.close()

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), float(sys.argv[2]) / 1000))
