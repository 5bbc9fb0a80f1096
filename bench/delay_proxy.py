"""TCP proxy that holds every chunk for DELAY_MS milliseconds in each direction, to try the
server against a database that is farther away (this machine has no netem).

    python3 bench/delay_proxy.py DELAY_MS LISTEN_PORT TARGET_PORT    # e.g. 0.5 5433 5432

It spends CPU per message itself, so it only gives a rough picture."""
import asyncio
import sys
DELAY = float(sys.argv[1]) / 1000.0
LISTEN, TARGET = int(sys.argv[2]), int(sys.argv[3])

async def pipe(reader, writer):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue()
    async def sender():
        while True:
            due, data = await q.get()
            if data is None:
                writer.close(); return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
    task = asyncio.create_task(sender())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            q.put_nowait((loop.time() + DELAY, data))
    finally:
        q.put_nowait((0, None))
        await task

async def handle(cr, cw):
    sr, sw = await asyncio.open_connection('127.0.0.1', TARGET)
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw), return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, '127.0.0.1', LISTEN)
    async with server:
        await server.serve_forever()
asyncio.run(main())
