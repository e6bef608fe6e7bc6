import type { Socket } from 'node:net';

/**
 * Closing a connection while the client is still sending makes the kernel
 * answer with RST, and an RST can discard the refusal the client has not read
 * yet. So after a refusal: half-close (FIN after the response), keep reading
 * and discarding for a bounded time and byte count, then destroy.
 *
 * Node calls `socket.destroySoon()` after a `Connection: close` response;
 * this swaps that one call for a lingering close on this socket only.
 */
export function lingerOnClose(socket: Socket, limits: { maxBytes: number; maxMs: number }): void {
  socket.destroySoon = function lingeringClose(this: Socket) {
    let seen = 0;
    const stop = () => {
      clearTimeout(timer);
      socket.destroy();
    };
    const timer = setTimeout(stop, limits.maxMs);
    timer.unref();
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > limits.maxBytes) stop();
    });
    socket.once('end', stop);
    socket.once('close', () => clearTimeout(timer));
    socket.end();
    socket.resume();
  };
}
