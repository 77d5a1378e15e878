/**
 * Crash-safe file writes: the data goes to a temporary file in the target's directory, is
 * fsynced, then renamed over the target, and the directory is fsynced so the rename itself is
 * durable. rename(2) within one file system is atomic, so a reader (or a run that resumes after
 * a crash or SIGKILL in the middle of a save) sees either the complete old file or the complete
 * new one, never a torn mix. A failed write removes its temporary file and leaves the target as
 * it was. Checkpoints (issue 3: "a crash or kill in the middle of a save never destroys the
 * previous checkpoint") and saveSafetensors write through here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, fail, ResnextError } from '../native/errors';

/** What writeFileAtomic accepts: one buffer or string, or chunks written in order. */
export type AtomicData = string | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface AtomicWriteOptions {
  /** File mode of the new file (default 0o666 before umask). */
  mode?: number;
}

function tempName(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

function ioError(op: string, target: string, e: unknown): ResnextError {
  if (e instanceof ResnextError) return e;
  const err = e as NodeJS.ErrnoException;
  return new ResnextError(`${op}: file "${target}" could not be written: ${err?.message ?? String(e)}`, 'ERR_IO');
}

function checkPath(op: string, target: unknown): string {
  if (typeof target !== 'string' || target.length === 0) fail('ERR_ARG', op, 'path', 'a non-empty file path', describe(target));
  return path.resolve(target);
}

// Directory fsync makes the rename durable on Linux; some platforms (Windows) cannot open a
// directory for fsync, and then the rename is as durable as the OS makes it.
function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // not supported here
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(dir, 'r');
    await fh.sync();
  } catch {
    // not supported here
  } finally {
    await fh?.close();
  }
}

function asChunk(op: string, c: unknown): Uint8Array {
  if (!(c instanceof Uint8Array)) fail('ERR_ARG', op, 'data', 'Uint8Array chunks', describe(c));
  return c;
}

/**
 * Writes data to path atomically (see the file comment). `data` may be a string (UTF-8), a
 * Uint8Array/Buffer, or an iterable / async iterable of Uint8Array chunks (so a large file need
 * not be concatenated in memory). Throws ResnextError ERR_IO naming the file on failure, after
 * removing the temporary file; the previous file at path is untouched.
 */
export async function writeFileAtomic(target: string, data: AtomicData, opts: AtomicWriteOptions = {}): Promise<void> {
  const op = 'writeFileAtomic';
  const file = checkPath(op, target);
  const tmp = tempName(file);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(tmp, 'wx', opts.mode ?? 0o666);
    if (typeof data === 'string' || data instanceof Uint8Array) {
      await fh.writeFile(data);
    } else if (data && (Symbol.asyncIterator in data || Symbol.iterator in data)) {
      for await (const c of data as AsyncIterable<Uint8Array>) {
        const chunk = asChunk(op, c);
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
    } else {
      fail('ERR_ARG', op, 'data', 'a string, a Uint8Array or an iterable of Uint8Array chunks', describe(data));
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, file);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw ioError(op, file, e);
  }
  await fsyncDir(path.dirname(file));
}

/** Synchronous writeFileAtomic (string, Uint8Array or an iterable of chunks). */
export function writeFileAtomicSync(target: string, data: string | Uint8Array | Iterable<Uint8Array>, opts: AtomicWriteOptions = {}): void {
  const op = 'writeFileAtomicSync';
  const file = checkPath(op, target);
  const tmp = tempName(file);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode ?? 0o666);
    const chunks: Iterable<Uint8Array> =
      typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : (data as Iterable<Uint8Array>);
    if (!chunks || !(Symbol.iterator in chunks))
      fail('ERR_ARG', op, 'data', 'a string, a Uint8Array or an iterable of Uint8Array chunks', describe(data));
    for (const c of chunks) {
      const chunk = asChunk(op, c);
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing; the original error is what matters
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      // the temp file may not exist
    }
    throw ioError(op, file, e);
  }
  fsyncDirSync(path.dirname(file));
}
