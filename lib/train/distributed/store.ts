/**
 * The rendezvous store: a small TCP key-value server that rank 0 runs (like torchrun's TCPStore),
 * and the presence channel that names a rank that died.
 *
 * Protocol (native/gloo/collective.cc is the gloo-side client), integers little-endian u32:
 *   request  = op (1 byte), key length, key, value length, value
 *   op 1 SET   -> one 0 byte
 *   op 2 GET   -> value length, value; answered once the key exists (the client times out)
 *   op 3 HELLO -> key is the rank; the connection stays open as that rank's presence. When it
 *                 closes before a BYE, the server marks the rank dead and sends "dead <rank>\n" to
 *                 every other presence connection; a rank whose presence connection to rank 0
 *                 closes learns that rank 0 died.
 *   op 4 BYE   -> the rank is shutting down cleanly (its close is not a death)
 * Keys live for the life of the server (one process group).
 */
import * as net from 'node:net';

export class StoreServer {
  private readonly data = new Map<string, Buffer>();
  private readonly waiters = new Map<string, ((v: Buffer) => void)[]>();
  private readonly presence = new Map<number, net.Socket>();
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | null = null;
  /** Called when a rank's presence connection closes without BYE. */
  onDeath: ((rank: number) => void) | null = null;

  /** Listens on host:port (port 0: any free port); resolves with the port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer((s) => this.serve(s));
      srv.once('error', reject);
      srv.listen({ host, port, exclusive: true }, () => {
        this.server = srv;
        srv.unref();
        resolve((srv.address() as net.AddressInfo).port);
      });
    });
  }

  private set(key: string, v: Buffer): void {
    this.data.set(key, v);
    for (const w of this.waiters.get(key) ?? []) w(v);
    this.waiters.delete(key);
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    s.setNoDelay(true);
    s.unref(); // the store never keeps a finished process alive
    let buf = Buffer.alloc(0);
    let rank = -1;
    let bye = false;
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const op = buf[0];
        const kl = buf.readUInt32LE(1);
        if (buf.length < 9 + kl) return;
        const vl = buf.readUInt32LE(5 + kl);
        if (buf.length < 9 + kl + vl) return;
        const key = buf.subarray(5, 5 + kl).toString('utf8');
        const value = Buffer.from(buf.subarray(9 + kl, 9 + kl + vl));
        buf = buf.subarray(9 + kl + vl);
        if (op === 1) {
          this.set(key, value);
          s.write(Buffer.from([0]));
        } else if (op === 2) {
          const reply = (v: Buffer) => {
            const h = Buffer.alloc(4);
            h.writeUInt32LE(v.length);
            if (!s.destroyed) s.write(Buffer.concat([h, v]));
          };
          const v = this.data.get(key);
          if (v) reply(v);
          else this.waiters.set(key, [...(this.waiters.get(key) ?? []), reply]);
        } else if (op === 3) {
          rank = Number(key);
          this.presence.set(rank, s);
        } else if (op === 4) {
          bye = true;
        } else {
          s.destroy();
        }
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.sockets.delete(s);
      if (rank >= 0 && this.presence.get(rank) === s) {
        this.presence.delete(rank);
        if (!bye) this.markDead(rank);
      }
    });
  }

  private markDead(rank: number): void {
    for (const [, p] of this.presence) if (!p.destroyed) p.write(`dead ${rank}\n`);
    this.onDeath?.(rank);
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.server?.close();
    this.server = null;
  }
}

/** Encodes one store request (see the protocol above). */
export function storeRequest(op: number, key: string, value: Buffer = Buffer.alloc(0)): Buffer {
  const k = Buffer.from(key, 'utf8');
  const h = Buffer.alloc(5);
  h[0] = op;
  h.writeUInt32LE(k.length, 1);
  const v = Buffer.alloc(4);
  v.writeUInt32LE(value.length);
  return Buffer.concat([h, k, v, value]);
}

/**
 * A rank's presence connection to rank 0's store: reports `dead <rank>` messages, and rank 0's
 * own death when the connection closes before close() was called.
 */
export class Presence {
  private socket: net.Socket | null = null;
  private closing = false;
  onDeath: ((rank: number) => void) | null = null;

  connect(host: string, port: number, rank: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const attempt = () => {
        const s = net.connect({ host, port });
        s.once('connect', () => {
          s.setNoDelay(true);
          s.unref();
          s.write(storeRequest(3, String(rank)));
          this.socket = s;
          let text = '';
          s.on('data', (d) => {
            text += d.toString('utf8');
            let i: number;
            while ((i = text.indexOf('\n')) >= 0) {
              const m = /^dead (\d+)$/.exec(text.slice(0, i));
              text = text.slice(i + 1);
              if (m) this.onDeath?.(Number(m[1]));
            }
          });
          s.on('close', () => {
            if (!this.closing) this.onDeath?.(0);
          });
          resolve();
        });
        s.once('error', (e) => {
          s.destroy();
          if (this.socket === s) return;
          if (Date.now() > deadline) reject(e);
          else setTimeout(attempt, 50);
        });
      };
      attempt();
    });
  }

  close(): void {
    this.closing = true;
    if (this.socket && !this.socket.destroyed) {
      this.socket.write(storeRequest(4, ''));
      this.socket.end();
    }
    this.socket = null;
  }
}
