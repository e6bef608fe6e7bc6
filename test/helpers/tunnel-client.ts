import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';

/** Clients of the forward proxy's CONNECT, on raw sockets (what HTTPS_PROXY clients send, byte for byte). */

/** The CONNECT request head for `authority`, with extra header lines (e.g. Proxy-Authorization). */
export function connectHead(authority: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`;
}

/** Send a CONNECT and return the whole answer (the proxy closes refused tunnels). */
export async function rawConnect(port: number, authority: string, headers: Record<string, string> = {}): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(connectHead(authority, headers));
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (t: string) => (text += t));
  await once(socket, 'close');
  return text;
}

/** A CONNECT answered 200: the raw socket, ready for the client's TLS hello. Rejects with the answer otherwise. */
export async function connectTunnel(proxyPort: number, authority: string, headers: Record<string, string> = {}): Promise<Socket> {
  const raw = connect(proxyPort, '127.0.0.1');
  raw.write(connectHead(authority, headers));
  const [head] = (await once(raw, 'data')) as [Buffer];
  if (!head.toString('latin1').startsWith('HTTP/1.1 200')) {
    raw.destroy();
    throw new Error(`tunnel refused: ${head.toString('latin1')}`);
  }
  return raw;
}

/** A TLS connection through a tunnel to `host:port`, trusting `ca`. */
export async function openTunnel(proxyPort: number, host: string, port: number, ca: string, headers: Record<string, string> = {}): Promise<tls.TLSSocket> {
  const raw = await connectTunnel(proxyPort, `${host}:${port}`, headers);
  const secure = tls.connect({ socket: raw, servername: host, ca });
  try {
    await once(secure, 'secureConnect');
  } catch (err) {
    secure.destroy();
    throw err;
  }
  return secure;
}

/** The TLS ClientHello a Node client sends for `servername` (captured from a real handshake, so fault tests can cut it anywhere). */
export async function captureClientHello(servername: string): Promise<Buffer> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = tls.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', servername });
  client.on('error', () => {});
  const [socket] = await accepted;
  const [hello] = (await once(socket, 'data')) as [Buffer];
  client.destroy();
  socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return hello;
}
