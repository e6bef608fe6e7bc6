import type { IncomingMessage } from 'node:http';

/**
 * Closing a connection while the client is still sending makes the kernel
 * answer with RST, and an RST can discard the refusal the client has not read
 * yet. So after a refusal: half-close (FIN after the response), keep reading
 * and discarding the body for a bounded time and byte count, then destroy.
 *
 * Node calls `socket.destroySoon()` after a `Connection: close` response;
 * this swaps that one call for a lingering close on this socket only. The
 * body is counted on the request, never with a socket 'data' listener: that
 * would detach Node's HTTP parser from the socket, which then stops reading
 * if it was paused for backpressure.
 */
export function lingerOnClose(req: IncomingMessage, limits: { maxBytes: number; maxMs: number }): void {
  const socket = req.socket;
  if (socket === null) return;
  let seen = 0;
  let lingering = false;
  let timer: NodeJS.Timeout | undefined;
  const stop = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (lingering && seen > limits.maxBytes) stop();
  });
  req.resume();
  socket.destroySoon = function lingeringClose() {
    lingering = true;
    if (seen > limits.maxBytes) return stop();
    timer = setTimeout(stop, limits.maxMs);
    timer.unref();
    socket.once('end', stop);
    socket.once('close', () => clearTimeout(timer));
    socket.end();
  };
}
